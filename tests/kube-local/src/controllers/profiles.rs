//! The Kubeflow profile controller stand-in: a profile namespace gets its owner's
//! `ns-owner-access-istio` AuthorizationPolicy, as kubeflow/dashboard's profile controller
//! builds it (no selector, so every workload of the namespace: the owner's requests through the
//! ingress gateway or the pipelines UI, the namespace's own workloads, Knative's probe paths, the
//! notebook controller's kernel probe).
//!
//! Kubeflow starts from a `Profile` (spec.owner) and makes the namespace; this stand-in starts
//! from the namespace as that controller leaves it: labelled `app.kubernetes.io/part-of:
//! kubeflow-profile` and annotated `owner: <email>`. A deleted policy is created again, as the
//! profile controller's next reconcile would; a changed one is left as it is (the real
//! controller would overwrite it). Active when Istio's CRDs are served.

use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Change, Watching};
use crate::store::{EventType, Store, WriteOptions};

const NAMESPACES_KEY: &str = "namespaces";
const POLICIES_KEY: &str = "authorizationpolicies.security.istio.io";
const MANAGER: &str = "profile-controller";
/// The label Kubeflow's profile controller puts on every profile namespace.
pub const PROFILE_LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "kubeflow-profile");
/// The namespace annotation that names the profile's owner.
pub const OWNER_ANNOTATION: &str = "owner";
pub const POLICY_NAME: &str = "ns-owner-access-istio";
const GATEWAY_PRINCIPAL: &str =
    "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";

/// The policy for the profile `namespace` owned by `owner` (Kubeflow's user-id header
/// `kubeflow-userid`, no prefix).
fn ns_owner_access_istio(namespace: &str, owner: &str) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {
            "name": POLICY_NAME,
            "namespace": namespace,
            "annotations": {"role": "admin", "user": owner},
        },
        "spec": {
            "action": "ALLOW",
            "rules": [
                {"from": [{"source": {"principals": [GATEWAY_PRINCIPAL, "cluster.local/ns/kubeflow/sa/ml-pipeline-ui"]}}],
                 "when": [{"key": "request.headers[kubeflow-userid]", "values": [owner]}]},
                {"when": [{"key": "source.namespace", "values": [namespace]}]},
                {"to": [{"operation": {"paths": ["/healthz", "/metrics", "/wait-for-drain"]}}]},
                {"from": [{"source": {"principals": ["cluster.local/ns/kubeflow/sa/notebook-controller-service-account"]}}],
                 "to": [{"operation": {"methods": ["GET"], "paths": ["*/api/kernels"]}}]}
            ]
        }
    })
}

/// The owner of a profile namespace, if it is one.
fn profile_owner(namespace: &Value) -> Option<&str> {
    let meta = &namespace["metadata"];
    if meta["deletionTimestamp"].is_string() || meta["labels"][PROFILE_LABEL.0] != PROFILE_LABEL.1 {
        return None;
    }
    meta["annotations"][OWNER_ANNOTATION]
        .as_str()
        .filter(|o| !o.is_empty())
}

fn ensure(store: &Store, namespace: &str) {
    let (policies, namespaces) = {
        let stored = store.lock();
        (
            stored
                .registry
                .get("security.istio.io", "v1", "authorizationpolicies"),
            stored.registry.get("", "v1", "namespaces"),
        )
    };
    let (Some(rt), Some(namespaces)) = (policies, namespaces) else {
        return;
    };
    let stored = store.lock().get_stored(&namespaces, "", namespace).ok();
    let value = stored.map(|ns| ns.value());
    let Some(owner) = value.as_ref().and_then(|ns| profile_owner(ns)) else {
        return;
    };
    if store.lock().exists(POLICIES_KEY, namespace, POLICY_NAME) {
        return;
    }
    let opts = WriteOptions {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    let policy = ns_owner_access_istio(namespace, owner);
    let _ = store.lock().create(&rt, namespace, policy, &opts);
}

/// Runs the profile controller stand-in until `shutdown` flips.
pub async fn run_profiles(store: Store, mut shutdown: watch::Receiver<bool>) {
    let mut watching = Watching::start(&store, &[NAMESPACES_KEY, POLICIES_KEY]);
    let mut rescan = true;
    loop {
        if rescan {
            rescan = false;
            let all = store.lock().objects_of(NAMESPACES_KEY);
            for namespace in all {
                let value = namespace.value();
                if let Some(name) = value["metadata"]["name"].as_str() {
                    ensure(&store, name);
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            change = watching.next() => match change {
                Change::Events(key, events) => {
                    for event in events.iter() {
                        let object = event.object.value();
                        let meta = &object["metadata"];
                        match key.as_str() {
                            NAMESPACES_KEY if event.kind != EventType::Deleted => {
                                ensure(&store, meta["name"].as_str().unwrap_or_default());
                            }
                            POLICIES_KEY if event.kind == EventType::Deleted && meta["name"] == POLICY_NAME => {
                                ensure(&store, meta["namespace"].as_str().unwrap_or_default());
                            }
                            _ => {}
                        }
                    }
                }
                Change::Resync => rescan = true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_labelled_namespace_with_an_owner_is_a_profile() {
        let ns = |labels: Value, annotations: Value| json!({"metadata": {"name": "p", "labels": labels, "annotations": annotations}});
        let label = json!({"app.kubernetes.io/part-of": "kubeflow-profile"});
        let owner = json!({"owner": "user@example.com"});
        assert_eq!(
            profile_owner(&ns(label.clone(), owner.clone())),
            Some("user@example.com")
        );
        assert_eq!(profile_owner(&ns(json!({}), owner.clone())), None);
        assert_eq!(profile_owner(&ns(label.clone(), json!({}))), None);
        let mut going = ns(label, owner);
        going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(profile_owner(&going), None);
    }
}
