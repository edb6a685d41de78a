//! `renew`: ask the operator for a new credential now (as `cmctl renew` / ESO force-sync).

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::wait::await_condition;

use super::Target;
use super::access::{Cluster, api_error};
use crate::api::InferenceAccess;
use crate::api::keys;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the InferenceAccess.
    pub name: String,
    /// Wait until the operator has issued the new credential (its status names this request
    /// in lastRenewRequest).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    #[command(flatten)]
    pub target: Target,
}

fn expiry(access: Option<&InferenceAccess>) -> Option<String> {
    let time = access?.status.as_ref()?.token_expiration_time.as_ref()?;
    Some(time.0.to_string())
}

/// Whether the operator served this request: compared as text, so neither clock precision nor
/// clock skew between this machine and the operator matters.
fn served(access: Option<&InferenceAccess>, request: &str) -> bool {
    access
        .and_then(|a| a.status.as_ref())
        .and_then(|s| s.last_renew_request.as_deref())
        == Some(request)
}

/// The merge patch that asks for a renewal: a time later than the token's issue time.
pub fn renew_patch(now: jiff::Timestamp) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"annotations": {keys::ANNOTATION_RENEW_REQUESTED_AT: now.to_string()}}
    })
}

pub async fn run(args: Args) -> Result<(), String> {
    let cluster = Cluster::connect(&args.target).await?;
    let api = cluster.accesses();
    let ns = &cluster.namespace;
    let name = &args.name;
    cluster.access(name).await?;
    let now = jiff::Timestamp::now();
    let request = now.to_string();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(renew_patch(now)),
    )
    .await
    .map_err(|e| api_error(&format!("annotating InferenceAccess {ns}/{name}"), &e))?;
    println!("renewal of InferenceAccess {ns}/{name} requested at {now}");
    if !args.wait {
        return Ok(());
    }
    let renewed = move |access: Option<&InferenceAccess>| served(access, &request);
    let waited = tokio::time::timeout(
        Duration::from_secs(args.timeout),
        await_condition(api, name, renewed),
    )
    .await
    .map_err(|_| {
        format!(
            "the operator did not renew the credential within {}s; see `inference-access status \
             {name} -n {ns}` for why (is the operator running?)",
            args.timeout
        )
    })?
    .map_err(|e| format!("watching InferenceAccess {ns}/{name}: {e}"))?;
    match expiry(waited.as_ref()) {
        Some(expires) => println!("new credential issued; it expires at {expires}"),
        None => println!("new credential issued"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ts;

    #[test]
    fn a_request_is_served_when_the_status_names_it() {
        let access = |last: Option<&str>| -> InferenceAccess {
            let mut access =
                crate::fixtures::access(serde_json::json!({"inferenceService": {"name": "m"}}))
                    .build();
            access.status = Some(crate::api::InferenceAccessStatus {
                last_renew_request: last.map(str::to_owned),
                ..Default::default()
            });
            access
        };
        let request = "2026-11-27T20:00:00.5Z";
        assert!(served(Some(&access(Some(request))), request));
        // Issued in the same second, by an earlier request: not this one.
        assert!(!served(
            Some(&access(Some("2026-11-27T20:00:00.1Z"))),
            request
        ));
        assert!(!served(Some(&access(None)), request));
        assert!(!served(None, request));
    }

    #[test]
    fn patch_sets_the_annotation_the_operator_honors() {
        let now = ts("2026-11-27T20:00:00.5Z");
        let patch = renew_patch(now);
        let value = patch["metadata"]["annotations"][keys::ANNOTATION_RENEW_REQUESTED_AT]
            .as_str()
            .unwrap();
        assert_eq!(value.parse::<jiff::Timestamp>().unwrap(), now);
    }
}
