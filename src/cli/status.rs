//! `status`: everything about one access on one screen, as `cmctl status certificate` does.

use std::fmt::Write as _;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use super::access::{Cluster, api_error, secret_name};
use super::output::{age, relative, table};
use super::{Output, Target};
use crate::api::inference_service::Readiness;
use crate::api::{AuthorizationPolicy, InferenceService};
use crate::api::{InferenceAccess, MeshMode};

/// How many of the most recent events are shown.
const EVENTS_SHOWN: usize = 10;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the InferenceAccess.
    pub name: String,
    /// Output format: human text, or json/yaml for scripts.
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub name: String,
    pub namespace: String,
    pub conditions: Vec<ConditionView>,
    pub inference_service: InferenceServiceView,
    pub credential: CredentialView,
    pub policy: PolicyView,
    /// The workloads that read the Secret, as the operator last saw them (from the status:
    /// no rights on workloads needed).
    pub consumers: Vec<crate::api::Consumer>,
    pub events: Vec<EventView>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: Timestamp,
}

#[derive(Serialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InferenceServiceView {
    pub name: String,
    pub found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CredentialView {
    pub secret_name: String,
    pub secret_found: bool,
    /// The Secret's keys; values are never read into the report.
    pub keys: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub mode: String,
    /// The AuthorizationPolicy the operator keeps (AuthorizationPolicy mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    pub from: String,
    pub note: String,
}

pub async fn run(args: Args) -> Result<(), String> {
    let cluster = Cluster::connect(&args.target).await?;
    let access = cluster.access(&args.name).await?;
    let report = gather(&cluster, &access).await;
    let text = match args.output.render(&report)? {
        Some(text) => text,
        None => human(&report, Timestamp::now()),
    };
    print!("{text}");
    Ok(())
}

/// Reads what the report needs; a part that cannot be read is reported, not fatal.
async fn gather(cluster: &Cluster, access: &InferenceAccess) -> Report {
    let ns = &cluster.namespace;
    let name = access.metadata.name.clone().unwrap_or_default();
    let status = access.status.clone().unwrap_or_default();
    let isvc_name = access.spec.inference_service.name.clone();
    // A model in another namespace is read there (what the user's own rights show them).
    let model_ns = access
        .spec
        .inference_service
        .namespace
        .as_ref()
        .unwrap_or(ns);

    let mut inference_service = InferenceServiceView {
        name: isvc_name.clone(),
        ..Default::default()
    };
    match Api::<InferenceService>::namespaced(cluster.client.clone(), model_ns)
        .get_opt(&isvc_name)
        .await
    {
        Ok(Some(isvc)) => {
            inference_service.found = true;
            inference_service.url = isvc.url().map(str::to_owned);
            match isvc.readiness() {
                Readiness::Ready => inference_service.ready = Some(true),
                Readiness::NotReady { reason, .. } => {
                    inference_service.ready = Some(false);
                    inference_service.reason = Some(reason);
                }
            }
        }
        Ok(None) => {}
        Err(e) => inference_service.error = Some(api_error("reading the InferenceService", &e)),
    }

    let secret = secret_name(access);
    let mut credential = CredentialView {
        secret_name: secret.clone(),
        service_account: status.service_account_name.clone(),
        expires_at: status.token_expiration_time.as_ref().map(|t| t.0),
        renewal_time: status.renewal_time.as_ref().map(|t| t.0),
        ..Default::default()
    };
    match Api::<Secret>::namespaced(cluster.client.clone(), ns)
        .get_opt(&secret)
        .await
    {
        Ok(Some(s)) => {
            credential.secret_found = true;
            credential.keys = s.data.iter().flatten().map(|(k, _)| k.clone()).collect();
        }
        Ok(None) => {}
        Err(e) => credential.error = Some(api_error("reading the Secret", &e)),
    }

    let mut policy = PolicyView {
        mode: format!("{:?}", access.spec.mesh.mode),
        ..Default::default()
    };
    if access.spec.mesh.mode == MeshMode::AuthorizationPolicy {
        // Named after the access, as plan::policy_name says; in the model's namespace after
        // its consumer (gateway_policy::consumer_policy_name).
        let policy_name = if model_ns == ns {
            name.clone()
        } else {
            format!("from-{ns}.{name}")
        };
        match Api::<AuthorizationPolicy>::namespaced(cluster.client.clone(), model_ns)
            .get_opt(&policy_name)
            .await
        {
            Ok(found) => policy.found = Some(found.is_some()),
            Err(e) => policy.error = Some(api_error("reading the AuthorizationPolicy", &e)),
        }
        policy.authorization_policy = Some(policy_name);
    }

    let events = match recent_events(cluster, access).await {
        Ok(events) => events,
        Err(e) => vec![EventView {
            type_: "Unknown".into(),
            reason: "EventsUnavailable".into(),
            time: None,
            from: "inference-access status".into(),
            note: e,
        }],
    };

    Report {
        name,
        namespace: ns.clone(),
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.0,
            })
            .collect(),
        inference_service,
        credential,
        policy,
        consumers: status.consumers.clone(),
        events,
    }
}

/// events.k8s.io/v1 Events regarding this access, newest last.
async fn recent_events(
    cluster: &Cluster,
    access: &InferenceAccess,
) -> Result<Vec<EventView>, String> {
    let name = access.metadata.name.as_deref().unwrap_or_default();
    let uid = access.metadata.uid.as_deref();
    // Filtered here rather than with a `regarding.*` field selector: not every API server (or
    // stand-in) converts those field labels for events.k8s.io, and an unconverted selector
    // silently matches nothing. Events live about an hour, so a namespace's list stays small.
    let list = Api::<Event>::namespaced(cluster.client.clone(), &cluster.namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error("listing events", &e))?;
    let mut events: Vec<EventView> = list
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("InferenceAccess")
                    && r.name.as_deref() == Some(name)
                    // A deleted and recreated access of the same name has another uid.
                    && (uid.is_none() || r.uid.is_none() || r.uid.as_deref() == uid)
            })
        })
        .map(|e| EventView {
            type_: e.type_.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            time: e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            from: e.reporting_controller.unwrap_or_default(),
            note: e.note.unwrap_or_default(),
        })
        .collect();
    events.sort_by_key(|e| e.time);
    let skip = events.len().saturating_sub(EVENTS_SHOWN);
    Ok(events.split_off(skip))
}

fn when(at: Option<Timestamp>, now: Timestamp) -> String {
    match at {
        Some(at) => format!("{at} ({})", relative(at, now)),
        None => "-".into(),
    }
}

/// The report for people.
pub fn human(report: &Report, now: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Name:       {}", report.name);
    let _ = writeln!(out, "Namespace:  {}", report.namespace);

    let _ = writeln!(out, "Conditions:");
    if report.conditions.is_empty() {
        let _ = writeln!(
            out,
            "  none yet: the operator has not reconciled this access (is it running?)"
        );
    }
    for c in &report.conditions {
        let _ = writeln!(
            out,
            "  {}: {}, Reason: {}, Message: {}",
            c.type_, c.status, c.reason, c.message
        );
    }

    let isvc = &report.inference_service;
    let _ = writeln!(out, "InferenceService: {}", isvc.name);
    if let Some(error) = &isvc.error {
        let _ = writeln!(out, "  Error: {error}");
    } else if !isvc.found {
        let _ = writeln!(out, "  Not found");
    } else {
        let ready = match (isvc.ready, &isvc.reason) {
            (Some(true), _) => "True".to_owned(),
            (_, Some(reason)) => format!("False ({reason})"),
            _ => "False".to_owned(),
        };
        let _ = writeln!(out, "  Ready:  {ready}");
        let _ = writeln!(out, "  URL:    {}", isvc.url.as_deref().unwrap_or("-"));
    }

    let cred = &report.credential;
    let _ = writeln!(out, "Credential:");
    let _ = writeln!(
        out,
        "  ServiceAccount:  {}",
        cred.service_account.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "  Expires:         {}", when(cred.expires_at, now));
    let _ = writeln!(out, "  Renewal:         {}", when(cred.renewal_time, now));
    let secret_state = match (&cred.error, cred.secret_found) {
        (Some(error), _) => format!(" ({error})"),
        (None, false) => " (not found)".to_owned(),
        (None, true) => String::new(),
    };
    let _ = writeln!(out, "  Secret:          {}{secret_state}", cred.secret_name);
    if cred.secret_found {
        let _ = writeln!(out, "  Keys (values hidden): {}", cred.keys.join(", "));
    }

    let policy = &report.policy;
    let _ = writeln!(out, "Access policy:");
    let _ = writeln!(out, "  Mode:  {}", policy.mode);
    if let Some(name) = &policy.authorization_policy {
        let state = match (&policy.error, policy.found) {
            (Some(error), _) => error.clone(),
            (None, Some(true)) => "exists".to_owned(),
            _ => "not found".to_owned(),
        };
        let _ = writeln!(out, "  AuthorizationPolicy:  {name} ({state})");
    }

    let _ = writeln!(out, "Consumers (workloads reading the Secret):");
    if report.consumers.is_empty() {
        let _ = writeln!(out, "  <none>");
    }
    for c in &report.consumers {
        let restart = match (c.restart_on_renewal, &c.started_with) {
            (true, Some(at)) => format!("; restarted on renewal, runs the credential of {}", at.0),
            (true, None) => "; restarted on renewal".to_owned(),
            (false, _) => String::new(),
        };
        let _ = writeln!(
            out,
            "  {} {} (via {}{restart})",
            c.kind,
            c.name,
            c.via.join(", ")
        );
    }

    let _ = writeln!(out, "Events:");
    if report.events.is_empty() {
        let _ = writeln!(out, "  <none>");
    } else {
        let rows: Vec<Vec<String>> = report
            .events
            .iter()
            .map(|e| {
                // As kubectl: "<unknown>" without a time.
                let age = e.time.map_or_else(|| "<unknown>".into(), |t| age(t, now));
                vec![
                    e.type_.clone(),
                    e.reason.clone(),
                    age,
                    e.from.clone(),
                    e.note.clone(),
                ]
            })
            .collect();
        for line in table(&["TYPE", "REASON", "AGE", "FROM", "MESSAGE"], &rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
