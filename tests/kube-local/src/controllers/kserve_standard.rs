//! KServe's Standard deployment mode (formerly RawDeployment; KServe 0.17's default) for the
//! KServe stand-in: an InferenceService annotated `serving.kserve.io/deploymentMode: Standard`
//! (or `RawDeployment`) gets what KServe makes for it instead of a Knative revision: the
//! Deployment `NAME-predictor` (whose Pods the workload stand-in runs), the Service
//! `NAME-predictor`, and with Gateway API on (`enableGatewayApi`) one HTTPRoute `NAME` on the
//! Gateway `kserve/kserve-ingress-gateway` for the host of the domain template
//! (`{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}`), all owned by the InferenceService.

use serde_json::{Value, json};

use super::kserve::{ISVC_LABEL, KserveSettings, MANAGER, meta};
use crate::store::Store;

const MODE_ANNOTATION: &str = "serving.kserve.io/deploymentMode";
/// KServe's default Gateway when `enableGatewayApi` is on (its `ingress` config).
pub const GATEWAY_NAMESPACE: &str = "kserve";
pub const GATEWAY_NAME: &str = "kserve-ingress-gateway";
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Whether KServe serves this InferenceService in Standard mode.
pub fn is_standard(isvc: &Value) -> bool {
    matches!(
        isvc["metadata"]["annotations"][MODE_ANNOTATION].as_str(),
        Some("Standard" | "RawDeployment")
    )
}

fn owner(isvc: &Value) -> Value {
    json!([{"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "name": meta(isvc, "name"), "uid": meta(isvc, "uid"), "controller": true, "blockOwnerDeletion": true}])
}

/// The objects KServe makes for the InferenceService, with `pod_annotations` on the
/// predictor's pod template (its own, and the injector's where Istio would inject).
fn desired(settings: &KserveSettings, isvc: &Value, pod_annotations: &Value) -> Vec<Value> {
    let (ns, name) = (meta(isvc, "namespace"), meta(isvc, "name"));
    let predictor = format!("{name}-predictor");
    let app = format!("isvc.{predictor}");
    let labels = json!({"app": app, ISVC_LABEL: name, "component": "predictor"});
    let mut objects = vec![
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": predictor, "namespace": ns, "labels": labels, "ownerReferences": owner(isvc)},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": app}},
                "template": {
                    "metadata": {"labels": labels, "annotations": pod_annotations},
                    "spec": {"containers": [{"name": "kserve-container", "image": "kserve-local/predictor:stand-in",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]},
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": predictor, "namespace": ns, "labels": labels, "ownerReferences": owner(isvc)},
            "spec": {"selector": {"app": app},
                     "ports": [{"name": predictor, "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
        }),
    ];
    if settings.gateway_api {
        let host = settings.standard_host(ns, name);
        objects.push(json!({
            "apiVersion": format!("{GATEWAY_GROUP}/v1"), "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owner(isvc)},
            "spec": {
                "parentRefs": [{"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": GATEWAY_NAMESPACE, "name": GATEWAY_NAME}],
                "hostnames": [host],
                "rules": [{
                    "matches": [{"path": {"type": "RegularExpression", "value": "^/.*"}}],
                    "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [
                        {"name": "KServe-Isvc-Name", "value": name}, {"name": "KServe-Isvc-Namespace", "value": ns}]}}],
                    "backendRefs": [{"group": "", "kind": "Service", "name": predictor, "namespace": ns, "port": 80, "weight": 1}],
                    "timeouts": {"request": "60s"},
                }],
            },
        }));
    }
    objects
}

/// Whether the HTTPRoute kind is served (Gateway API's CRDs installed).
fn routes_served(store: &Store) -> bool {
    store
        .lock()
        .registry
        .get(GATEWAY_GROUP, "v1", "httproutes")
        .is_some()
}

/// Whether every object KServe makes exists as wanted.
pub fn settled(
    store: &Store,
    settings: &KserveSettings,
    isvc: &Value,
    pod_annotations: &Value,
) -> bool {
    let ns = meta(isvc, "namespace");
    desired(settings, isvc, pod_annotations).iter().all(|want| {
        let kind = want["kind"].as_str().unwrap_or_default();
        if kind == "HTTPRoute" && !routes_served(store) {
            return true;
        }
        let api_version = want["apiVersion"].as_str().unwrap_or_default();
        let namespace = Some(ns);
        match store.get(api_version, kind, namespace, meta(want, "name")) {
            Ok(have) => {
                have["spec"]["template"]["metadata"] == want["spec"]["template"]["metadata"]
            }
            Err(_) => false,
        }
    })
}

/// Applies the objects KServe makes; the Pods of a Knative-style rollout before (owned by the
/// InferenceService itself) go.
pub fn reconcile(store: &Store, settings: &KserveSettings, isvc: &Value, pod_annotations: &Value) {
    let ns = meta(isvc, "namespace");
    let earlier: Vec<String> = store
        .lock()
        .dependents_of("pods", meta(isvc, "uid"))
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    for pod in earlier {
        let _ = store.delete("v1", "pods", Some(ns), &pod);
    }
    for object in desired(settings, isvc, pod_annotations) {
        if object["kind"] == "HTTPRoute" && !routes_served(store) {
            continue;
        }
        let _ = store.apply(object, MANAGER);
    }
}

/// Removes what Standard mode made when the InferenceService is no longer in it.
pub fn remove(store: &Store, isvc: &Value) {
    let (ns, name) = (meta(isvc, "namespace"), meta(isvc, "name"));
    let uid = meta(isvc, "uid");
    let predictor = format!("{name}-predictor");
    for (api_version, kind, object) in [
        ("apps/v1", "deployments", predictor.as_str()),
        ("v1", "services", predictor.as_str()),
        ("gateway.networking.k8s.io/v1", "httproutes", name),
    ] {
        let ours = store
            .get(api_version, kind, Some(ns), object)
            .is_ok_and(|o| o["metadata"]["ownerReferences"][0]["uid"] == uid);
        if ours {
            let _ = store.delete(api_version, kind, Some(ns), object);
        }
    }
}
