//! Every file in `examples/`, applied with the real kubectl while the operator runs, creates
//! exactly what `inference-access render` printed for it: the InferenceService spec, the
//! ServiceAccount or its absence, the policy spec and the Secret's key set.

use std::collections::BTreeSet;

use inference_access::api::{AuthorizationPolicy, InferenceAccess, InferenceService};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use serde_json::Value;

use crate::harness::*;

/// The example files, the sample's first: the others reference its InferenceService.
fn example_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort_by_key(|path| (!path.ends_with("sklearn-iris.yaml"), path.clone()));
    files
}

/// The example as a user would apply it here: only `spec.gateway.url` changes, to the gateway
/// double, because the in-cluster gateway's name does not resolve on this machine.
fn localized(text: &str, gateway: &str) -> String {
    let mut out = String::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let mut value: Value = serde::Deserialize::deserialize(document).unwrap();
        if value.is_null() {
            continue;
        }
        if value["kind"] == "InferenceAccess" {
            value["spec"]["gateway"] = serde_json::json!({"url": gateway});
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&value).unwrap());
    }
    out
}

async fn render(path: &std::path::Path, gateway: &str) -> Vec<Value> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_inference-access"))
        .args(["render", "-o", "json", "--allowed-gateways", gateway, "-f"])
        .arg(path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"].as_array().unwrap().clone()
}

fn rendered<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

#[tokio::test]
async fn every_example_creates_what_render_prints() {
    if skip_on_real_cluster("every_example_creates_what_render_prints") {
        return;
    }
    let data = DataPath::start(kube_local::ControlPlane::builder()).await;
    let env = &data.env;
    for file in example_files() {
        let text = localized(
            &std::fs::read_to_string(&file).unwrap(),
            &data.gateway.url(),
        );
        let local = env.dir.path().join(file.file_name().unwrap());
        std::fs::write(&local, &text).unwrap();
        let objects = render(&local, &data.gateway.url()).await;
        env.kubectl(vec![
            "apply".into(),
            "-f".into(),
            local.display().to_string(),
        ])
        .await;
        let accesses = objects
            .iter()
            .filter_map(|o| o["metadata"]["ownerReferences"][0]["name"].as_str())
            .collect::<BTreeSet<_>>();
        assert!(
            !accesses.is_empty(),
            "{}: render printed nothing",
            file.display()
        );
        for access in accesses {
            let live = env.wait_ready(access).await;
            assert_matches_render(env, &objects, &live, &file).await;
        }
    }
}

async fn assert_matches_render(
    env: &Env,
    objects: &[Value],
    access: &InferenceAccess,
    file: &std::path::Path,
) {
    let name = access.metadata.name.clone().unwrap();
    let spec = &access.spec;
    let what = format!("{} ({name})", file.display());
    // The InferenceService: the templated spec as applied.
    if let Some(isvc) = rendered(objects, "InferenceService", &spec.inference_service.name) {
        let live = env
            .api::<InferenceService>()
            .get(&spec.inference_service.name)
            .await
            .unwrap();
        if !isvc["spec"].is_null() {
            assert_eq!(live.spec, isvc["spec"], "{what}: InferenceService spec");
        }
        for (key, value) in isvc["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let annotations = live.metadata.annotations.clone().unwrap_or_default();
            assert_eq!(
                annotations.get(key).map(String::as_str),
                value.as_str(),
                "{what}: {key}"
            );
        }
    }
    // The ServiceAccount exists exactly when render prints one.
    let live_sa = env.api::<ServiceAccount>().get_opt(&name).await.unwrap();
    let owned_sa = live_sa.filter(|sa| {
        sa.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.name == name)
    });
    assert_eq!(
        owned_sa.is_some(),
        rendered(objects, "ServiceAccount", &name).is_some(),
        "{what}: ServiceAccount"
    );
    // The policy spec, as rendered.
    let live_policy = env
        .api::<AuthorizationPolicy>()
        .get_opt(&name)
        .await
        .unwrap();
    match rendered(objects, "AuthorizationPolicy", &name) {
        Some(policy) => assert_eq!(
            serde_json::to_value(&live_policy.expect("a policy").spec).unwrap(),
            policy["spec"],
            "{what}: AuthorizationPolicy spec"
        ),
        None => assert!(live_policy.is_none(), "{what}: no policy expected"),
    }
    // The Secret's keys, values aside.
    let secret_name = access
        .status
        .as_ref()
        .and_then(|s| s.secret_name.clone())
        .unwrap();
    let printed = rendered(objects, "Secret", &secret_name).expect("a rendered Secret");
    let printed_keys: BTreeSet<&str> = printed["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let live_secret = env.api::<Secret>().get(&secret_name).await.unwrap();
    let live_keys: BTreeSet<&str> = live_secret
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(live_keys, printed_keys, "{what}: Secret keys");
}
