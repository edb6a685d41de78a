//! The workload stand-in: Deployments and StatefulSets run their pod template as Pods, as the
//! deployment and statefulset controllers would, minus ReplicaSets and ControllerRevisions.
//! A changed template (a new `pod-template-hash`) replaces every Pod at once; Pods are owned
//! by the workload itself, so the garbage collector removes them with it.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Change, Watching, run_pod, write_status};
use crate::store::{EventType, Obj, Store};

pub(super) const DEPLOYMENTS_KEY: &str = "deployments.apps";
pub(super) const STATEFULSETS_KEY: &str = "statefulsets.apps";
const PODS_KEY: &str = "pods";
const MANAGER: &str = "kube-controller-manager";

/// The two kinds, and what tells their Pods' template apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Deployment,
    StatefulSet,
}

impl Kind {
    fn of_key(key: &str) -> Option<Self> {
        match key {
            DEPLOYMENTS_KEY => Some(Kind::Deployment),
            STATEFULSETS_KEY => Some(Kind::StatefulSet),
            _ => None,
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
        }
    }

    /// The label that carries the template's revision, and its value.
    fn revision_label(self, workload: &str, hash: &str) -> (&'static str, String) {
        match self {
            Kind::Deployment => ("pod-template-hash", hash.to_owned()),
            Kind::StatefulSet => ("controller-revision-hash", format!("{workload}-{hash}")),
        }
    }
}

/// A stable short hash of the pod template (its JSON text: maps are ordered).
fn template_hash(template: &Value) -> String {
    let mut hasher = DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    format!("{:010x}", hasher.finish() & 0xff_ffff_ffff)
}

fn meta<'a>(o: &'a Value, k: &str) -> &'a str {
    o["metadata"][k].as_str().unwrap_or_default()
}

/// Brings one workload's Pods and status to its spec.
fn reconcile(store: &Store, kind: Kind, ns: &str, name: &str) {
    let Ok(workload) = store.get("apps/v1", kind.plural(), Some(ns), name) else {
        return;
    };
    if workload["metadata"]["deletionTimestamp"].is_string() {
        return;
    }
    let uid = meta(&workload, "uid").to_owned();
    let template = &workload["spec"]["template"];
    let (label, revision) = kind.revision_label(name, &template_hash(template));
    let replicas = workload["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let pods: Vec<Value> = store
        .lock()
        .dependents_of(PODS_KEY, &uid)
        .iter()
        .map(|p| Obj::value(p))
        .collect();
    let current = |p: &&Value| p["metadata"]["labels"][label] == revision.as_str();
    // A new template replaces every Pod (a rollout with maxSurge = replicas, minus the wait).
    let mut kept = 0;
    for pod in &pods {
        let wanted = match kind {
            Kind::Deployment => current(&pod) && kept < replicas,
            Kind::StatefulSet => current(&pod) && ordinal(name, meta(pod, "name")) < Some(replicas),
        };
        if wanted {
            kept += 1;
        } else {
            let _ = store.delete("v1", "pods", Some(ns), meta(pod, "name"));
        }
    }
    let new_pod = |pod_name: Option<String>| {
        let mut labels = template["metadata"]["labels"].clone();
        labels[label] = json!(revision);
        let mut metadata = json!({
            "namespace": ns,
            "labels": labels,
            "annotations": template["metadata"]["annotations"].as_object().cloned().unwrap_or_default(),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind.name(), "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
        });
        match pod_name {
            Some(n) => metadata["name"] = json!(n),
            None => metadata["generateName"] = json!(format!("{name}-{revision}-")),
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
    };
    match kind {
        Kind::Deployment => {
            for _ in kept..replicas {
                run_pod(store, ns, new_pod(None), MANAGER);
            }
        }
        Kind::StatefulSet => {
            let stored = store.lock();
            let missing: Vec<String> = (0..replicas)
                .map(|i| format!("{name}-{i}"))
                .filter(|n| !stored.exists(PODS_KEY, ns, n))
                .collect();
            drop(stored);
            for n in missing {
                run_pod(store, ns, new_pod(Some(n)), MANAGER);
            }
        }
    }
    let updated = store
        .lock()
        .dependents_of(PODS_KEY, &uid)
        .iter()
        .filter(|p| p.label(label) == Some(revision.as_str()))
        .count();
    let want = desired_status(kind, &workload, updated, &revision);
    if workload["status"] != want {
        write_status(
            store,
            ("apps", "v1", kind.plural()),
            ns,
            name,
            want,
            MANAGER,
        );
    }
}

/// The ordinal of a StatefulSet Pod (`<name>-<n>`).
fn ordinal(workload: &str, pod: &str) -> Option<usize> {
    pod.strip_prefix(workload)?.strip_prefix('-')?.parse().ok()
}

/// Every Pod runs at once, so every updated Pod is ready and available.
fn desired_status(kind: Kind, workload: &Value, updated: usize, revision: &str) -> Value {
    let mut status = json!({
        "observedGeneration": workload["metadata"]["generation"],
        "replicas": updated,
        "updatedReplicas": updated,
        "readyReplicas": updated,
        "availableReplicas": updated,
    });
    match kind {
        Kind::Deployment => {
            let old = &workload["status"]["conditions"];
            let condition = |t: &str, reason: &str, message: String| {
                let kept = old
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == t && c["reason"] == reason)
                    .cloned();
                kept.unwrap_or_else(|| {
                    let now = crate::util::now_rfc3339();
                    json!({"type": t, "status": "True", "reason": reason, "message": message, "lastUpdateTime": now, "lastTransitionTime": now})
                })
            };
            let name = meta(workload, "name");
            status["conditions"] = json!([
                condition(
                    "Available",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into()
                ),
                condition(
                    "Progressing",
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{name}-{revision}\" has successfully progressed.")
                ),
            ]);
        }
        Kind::StatefulSet => {
            status["currentReplicas"] = json!(updated);
            status["currentRevision"] = json!(revision);
            status["updateRevision"] = json!(revision);
            status["collisionCount"] = json!(0);
        }
    }
    status
}

/// Runs the workload stand-in until `shutdown` flips.
pub async fn run_workloads(store: Store, mut shutdown: watch::Receiver<bool>) {
    let mut watching = Watching::start(&store, &[DEPLOYMENTS_KEY, STATEFULSETS_KEY, PODS_KEY]);
    let mut rescan = true;
    loop {
        if rescan {
            rescan = false;
            for key in [DEPLOYMENTS_KEY, STATEFULSETS_KEY] {
                let all = store.lock().objects_of(key);
                for o in all {
                    if let Some(kind) = Kind::of_key(key) {
                        reconcile(&store, kind, o.namespace(), o.name());
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            change = watching.next() => match change {
                Change::Events(key, events) => match Kind::of_key(&key) {
                    Some(kind) => {
                        for ev in events.iter().filter(|e| e.kind != EventType::Deleted) {
                            reconcile(&store, kind, ev.object.namespace(), ev.object.name());
                        }
                    }
                    None => {
                        // A deleted Pod: its workload runs a new one.
                        for ev in events.iter().filter(|e| e.kind == EventType::Deleted) {
                            for owner in ev.object.owners() {
                                let at = store.lock().locate(&owner.uid);
                                if let Some(at) = at
                                    && let Some(kind) = Kind::of_key(&at.key)
                                {
                                    reconcile(&store, kind, &at.ns, &at.name);
                                }
                            }
                        }
                    }
                },
                Change::Resync => rescan = true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_follows_the_template_only() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}});
        let mut b = a.clone();
        assert_eq!(template_hash(&a), template_hash(&b));
        b["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/restartedAt": "now"});
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 10);
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "webby-1"), None);
    }
}
