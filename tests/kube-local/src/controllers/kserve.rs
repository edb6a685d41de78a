//! The KServe stand-in: makes InferenceServices ready (URL, address, conditions, a predictor
//! pod), as KServe's controller would: Knative-style (a revision's predictor pod) by default,
//! or in Standard mode when the InferenceService asks for it (`kserve_standard`).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::kserve_standard as standard;
use super::{Change, Watching, run_pod, write_status};
use crate::selectors::{FieldSelector, Filter, LabelSelector};
use crate::store::{EventType, Store};
use crate::util;

const ISVC_KEY: &str = "inferenceservices.serving.kserve.io";
const PODS_KEY: &str = "pods";
const DEPLOYMENTS_KEY: &str = "deployments.apps";
pub(super) const MANAGER: &str = "kserve-controller";
/// The label that ties a predictor pod (and in Standard mode its Deployment) to its
/// InferenceService.
pub(super) const ISVC_LABEL: &str = "serving.kserve.io/inferenceservice";

/// How the KServe stand-in builds `status.url` (KServe's ingress `urlScheme`/`pathTemplate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UrlStyle {
    /// `http://<name>.<namespace>.<domain>` (Knative's default domain template).
    #[default]
    Knative,
    /// `http://<name>-<namespace>.<domain>` (raw deployment / standard mode).
    Standard,
    /// `http://<domain>/serving/<namespace>/<name>` (ingress `pathTemplate`).
    PathTemplate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KserveSettings {
    pub ready_delay: Duration,
    pub domain: String,
    pub url_style: UrlStyle,
    /// Istio's sidecar injector runs: predictor pods get its status annotation where Istio
    /// would inject (see `injects`).
    pub istio_injection: bool,
    /// KServe's `enableGatewayApi`: a Standard-mode InferenceService gets an HTTPRoute on the
    /// Gateway `kserve/kserve-ingress-gateway` (when the HTTPRoute kind is served).
    pub gateway_api: bool,
}

impl Default for KserveSettings {
    fn default() -> Self {
        Self {
            ready_delay: Duration::from_millis(200),
            domain: "example.com".into(),
            url_style: UrlStyle::Knative,
            istio_injection: true,
            gateway_api: false,
        }
    }
}

impl KserveSettings {
    /// The host of KServe's default domain template, `{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}`.
    pub fn standard_host(&self, ns: &str, name: &str) -> String {
        format!("{name}-{ns}.{}", self.domain)
    }

    /// `status.url` of an InferenceService: in Standard mode from the domain template (or the
    /// path template, when that style is chosen), else in the chosen style.
    fn url_of(&self, isvc: &Value) -> String {
        let (ns, name) = (meta(isvc, "namespace"), meta(isvc, "name"));
        match standard::is_standard(isvc) && self.url_style != UrlStyle::PathTemplate {
            true => format!("http://{}", self.standard_host(ns, name)),
            false => self.url(ns, name),
        }
    }

    pub fn url(&self, ns: &str, name: &str) -> String {
        let d = &self.domain;
        match self.url_style {
            UrlStyle::Knative => format!("http://{name}.{ns}.{d}"),
            UrlStyle::Standard => format!("http://{name}-{ns}.{d}"),
            UrlStyle::PathTemplate => format!("http://{d}/serving/{ns}/{name}"),
        }
    }
}

pub(super) fn meta<'a>(o: &'a Value, k: &str) -> &'a str {
    o["metadata"][k].as_str().unwrap_or_default()
}

/// The annotations a predictor pod inherits (everything but kubectl's bookkeeping).
fn inherited_annotations(isvc: &Value) -> Value {
    let mut a = isvc["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    a.remove("kubectl.kubernetes.io/last-applied-configuration");
    Value::Object(a)
}

/// The injector's record on a pod it gave a sidecar (what `kubectl get pod -o yaml` shows).
const SIDECAR_STATUS: &str = "sidecar.istio.io/status";

fn label_or_annotation<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o["metadata"]["labels"][key]
        .as_str()
        .or_else(|| o["metadata"]["annotations"][key].as_str())
}

/// Whether Istio's injector gives the InferenceService's predictor pods a sidecar, decided as
/// tests/mesh-local decides a pod's dataplane: never when it opts out; in an ambient namespace
/// only when asked for; elsewhere always (Kubeflow's profile namespaces inject).
fn injects(store: &Store, ns: &str, isvc: &Value) -> bool {
    let inject = label_or_annotation(isvc, "sidecar.istio.io/inject");
    if inject == Some("false") {
        return false;
    }
    let namespace = store.get("v1", "namespaces", None, ns).unwrap_or_default();
    let ambient = namespace["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient";
    !ambient
        || inject == Some("true")
        || namespace["metadata"]["labels"]["istio-injection"] == "enabled"
}

/// The annotations the predictor pod gets: the InferenceService's, plus the injector's.
fn desired_annotations(store: &Store, settings: &KserveSettings, isvc: &Value) -> Value {
    let mut annotations = inherited_annotations(isvc);
    if settings.istio_injection && injects(store, meta(isvc, "namespace"), isvc) {
        annotations[SIDECAR_STATUS] = json!(
            "{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"],\"volumes\":[\"istio-envoy\"]}"
        );
    }
    annotations
}

fn pod_annotations(pod: &Value) -> Value {
    Value::Object(
        pod["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
}

/// The predictor pods of one InferenceService, through the store's label index.
fn predictor_pods(store: &Store, ns: &str, name: &str) -> Vec<Value> {
    let filter = Filter {
        namespace: Some(ns.to_string()),
        labels: LabelSelector::equals(ISVC_LABEL, name),
        fields: FieldSelector::default(),
    };
    store
        .lock()
        .select(PODS_KEY, &filter)
        .into_iter()
        .map(|p| p.value())
        .collect()
}

fn desired_status(settings: &KserveSettings, isvc: &Value) -> Value {
    let (ns, name) = (meta(isvc, "namespace"), meta(isvc, "name"));
    let now = util::now_rfc3339();
    let old = &isvc["status"]["conditions"];
    let condition = |t: &str| {
        let kept = old
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == t && c["status"] == "True")
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map(str::to_string);
        json!({"type": t, "status": "True", "lastTransitionTime": kept.unwrap_or_else(|| now.clone())})
    };
    let mut status = json!({
        "url": settings.url_of(isvc),
        "address": {"url": format!("http://{name}-predictor.{ns}.svc.cluster.local")},
        "components": {"predictor": {"url": format!("http://{name}-predictor-{ns}.{}", settings.domain), "latestReadyRevision": format!("{name}-predictor-00001"), "latestCreatedRevision": format!("{name}-predictor-00001")}},
        "conditions": [condition("IngressReady"), condition("PredictorReady"), condition("Ready")],
        "observedGeneration": isvc["metadata"]["generation"],
        "modelStatus": {"states": {"activeModelState": "Loaded", "targetModelState": "Loaded"}, "transitionStatus": "UpToDate"},
    });
    if standard::is_standard(isvc) {
        // No Knative revisions in Standard mode.
        status["components"] = json!({"predictor": {}});
        status["deploymentMode"] = json!("Standard");
    }
    status
}

fn needs_work(store: &Store, settings: &KserveSettings, isvc: &Value) -> bool {
    if isvc["metadata"]["deletionTimestamp"].is_string() {
        return false;
    }
    let status_ok = {
        let want = desired_status(settings, isvc);
        isvc["status"]["url"] == want["url"]
            && isvc["status"]["observedGeneration"] == want["observedGeneration"]
            && isvc["status"]["address"] == want["address"]
    };
    let annotations = desired_annotations(store, settings, isvc);
    if standard::is_standard(isvc) {
        return !status_ok || !standard::settled(store, settings, isvc, &annotations);
    }
    let pods = predictor_pods(store, meta(isvc, "namespace"), meta(isvc, "name"));
    !status_ok || pods.len() != 1 || pods.iter().any(|p| pod_annotations(p) != annotations)
}

/// Brings one InferenceService to the ready state the stand-in reports.
fn reconcile(store: &Store, settings: &KserveSettings, ns: &str, name: &str) {
    let Ok(isvc) = store.get(
        "serving.kserve.io/v1beta1",
        "inferenceservices",
        Some(ns),
        name,
    ) else {
        return;
    };
    if isvc["metadata"]["deletionTimestamp"].is_string() {
        return;
    }
    let annotations = desired_annotations(store, settings, &isvc);
    if standard::is_standard(&isvc) {
        standard::reconcile(store, settings, &isvc, &annotations);
    } else {
        standard::remove(store, &isvc);
        run_revision(store, ns, name, &isvc, annotations);
    }
    let want = desired_status(settings, &isvc);
    if isvc["status"] != want {
        let gvr = ("serving.kserve.io", "v1beta1", "inferenceservices");
        write_status(store, gvr, ns, name, want, MANAGER);
    }
}

/// Knative-style: one predictor pod of the current revision, owned by the InferenceService.
fn run_revision(store: &Store, ns: &str, name: &str, isvc: &Value, annotations: Value) {
    let pods = predictor_pods(store, ns, name);
    let current = pods
        .iter()
        .filter(|p| pod_annotations(p) == annotations)
        .count();
    if current != 1 || pods.len() != 1 {
        // A changed template rolls out a new predictor pod, as a new revision would.
        for p in &pods {
            let _ = store.delete("v1", "pods", Some(ns), meta(p, "name"));
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": format!("{name}-predictor-00001-deployment-"),
                "namespace": ns,
                "labels": {"serving.kserve.io/inferenceservice": name, "component": "predictor", "serving.kserve.io/component": "predictor"},
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": name, "uid": isvc["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {"containers": [{"name": "kserve-container", "image": "kserve-local/predictor:stand-in"}]},
        });
        run_pod(store, ns, pod, MANAGER);
    }
}

/// Runs the KServe stand-in until `shutdown` flips.
pub async fn run_kserve(
    store: Store,
    mut settings_rx: watch::Receiver<KserveSettings>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut watching = Watching::start(&store, &[ISVC_KEY, PODS_KEY, DEPLOYMENTS_KEY]);
    let mut pending: HashSet<(String, String)> = HashSet::new();
    let mut timers: JoinSet<(String, String)> = JoinSet::new();
    // Everything is looked at once at start, and again only when the settings change or the
    // history position was lost.
    let mut rescan = true;
    loop {
        let settings = settings_rx.borrow().clone();
        if rescan {
            rescan = false;
            let all = store.lock().objects_of(ISVC_KEY);
            for isvc in all {
                schedule(&store, &settings, &isvc.value(), &mut pending, &mut timers);
            }
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = settings_rx.changed() => {
                if changed.is_err() { break; }
                rescan = true;
            }
            change = watching.next() => match change {
                Change::Events(key, events) if key == ISVC_KEY => {
                    for ev in events.iter().filter(|e| e.kind != EventType::Deleted) {
                        schedule(&store, &settings, &ev.object.value(), &mut pending, &mut timers);
                    }
                }
                Change::Events(_pods_or_deployments, events) => {
                    // A deleted predictor pod or (Standard mode) Deployment: its
                    // InferenceService needs a new one.
                    for ev in events.iter().filter(|e| e.kind == EventType::Deleted) {
                        if let Some(owner) = ev.object.label(ISVC_LABEL)
                            && let Ok(isvc) = store.get("serving.kserve.io/v1beta1", "inferenceservices", Some(ev.object.namespace()), owner) {
                                schedule(&store, &settings, &isvc, &mut pending, &mut timers);
                            }
                    }
                }
                Change::Resync => rescan = true,
            },
            Some(done) = timers.join_next(), if !timers.is_empty() => {
                if let Ok((ns, name)) = done {
                    pending.remove(&(ns.clone(), name.clone()));
                    reconcile(&store, &settings, &ns, &name);
                }
            }
        }
    }
    timers.abort_all();
}

fn schedule(
    store: &Store,
    settings: &KserveSettings,
    isvc: &Value,
    pending: &mut HashSet<(String, String)>,
    timers: &mut JoinSet<(String, String)>,
) {
    let key = (
        meta(isvc, "namespace").to_string(),
        meta(isvc, "name").to_string(),
    );
    if pending.contains(&key) || !needs_work(store, settings, isvc) {
        return;
    }
    pending.insert(key.clone());
    let delay = settings.ready_delay;
    timers.spawn(async move {
        tokio::time::sleep(delay).await;
        key
    });
}
