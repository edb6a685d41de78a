//! The workload stand-in: Deployments run their pod template through a ReplicaSet per template
//! (`<name>-<pod-template-hash>`), ReplicaSets and StatefulSets run Pods, as the deployment,
//! replicaset and statefulset controllers would, minus ControllerRevisions. A changed Deployment
//! template gets a new ReplicaSet at once and the old one is deleted (its Pods with it); Pods are
//! owned by their ReplicaSet or StatefulSet, ReplicaSets by their Deployment, so the garbage
//! collector removes everything with the workload.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Change, Watching, run_pod, write_status};
use crate::store::{EventType, Obj, Store, WriteOptions};

pub(super) const DEPLOYMENTS_KEY: &str = "deployments.apps";
pub(super) const STATEFULSETS_KEY: &str = "statefulsets.apps";
const REPLICASETS_KEY: &str = "replicasets.apps";
const PODS_KEY: &str = "pods";
const MANAGER: &str = "kube-controller-manager";
/// The Deployment revision a ReplicaSet runs, as the deployment controller records it.
const REVISION: &str = "deployment.kubernetes.io/revision";

/// The kinds, and what tells their Pods' template apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Deployment,
    StatefulSet,
    ReplicaSet,
}

impl Kind {
    fn of_key(key: &str) -> Option<Self> {
        match key {
            DEPLOYMENTS_KEY => Some(Kind::Deployment),
            STATEFULSETS_KEY => Some(Kind::StatefulSet),
            REPLICASETS_KEY => Some(Kind::ReplicaSet),
            _ => None,
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::ReplicaSet => "replicasets",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::ReplicaSet => "ReplicaSet",
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

fn owned_by(store: &Store, key: &str, uid: &str) -> Vec<Value> {
    store
        .lock()
        .dependents_of(key, uid)
        .iter()
        .map(|o| Obj::value(o))
        .collect()
}

fn controller_ref(kind: Kind, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": "apps/v1", "kind": kind.name(), "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}])
}

fn reconcile(store: &Store, kind: Kind, ns: &str, name: &str) {
    match kind {
        Kind::Deployment => reconcile_deployment(store, ns, name),
        Kind::StatefulSet | Kind::ReplicaSet => reconcile_pods(store, kind, ns, name),
    }
}

/// A Deployment: one ReplicaSet for its current template, scaled to its replicas; the
/// ReplicaSets of earlier templates deleted; its status from that ReplicaSet's.
fn reconcile_deployment(store: &Store, ns: &str, name: &str) {
    let Ok(deployment) = store.get("apps/v1", "deployments", Some(ns), name) else {
        return;
    };
    if deployment["metadata"]["deletionTimestamp"].is_string() {
        return;
    }
    let uid = meta(&deployment, "uid").to_owned();
    let hash = template_hash(&deployment["spec"]["template"]);
    let rs_name = format!("{name}-{hash}");
    let replicas = deployment["spec"]["replicas"].clone();
    let owned = owned_by(store, REPLICASETS_KEY, &uid);
    let mut newest_revision = 0;
    for rs in &owned {
        let revision = rs["metadata"]["annotations"][REVISION]
            .as_str()
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or_default();
        newest_revision = newest_revision.max(revision);
        if meta(rs, "name") != rs_name {
            let _ = store.delete("apps/v1", "replicasets", Some(ns), meta(rs, "name"));
        }
    }
    match owned.iter().find(|rs| meta(rs, "name") == rs_name) {
        Some(rs) if rs["spec"]["replicas"] != replicas => {
            let scale = json!({"spec": {"replicas": replicas}});
            let _ = store.merge_patch("apps/v1", "replicasets", Some(ns), &rs_name, scale, false);
        }
        Some(_) => {}
        None => {
            let mut template = deployment["spec"]["template"].clone();
            template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut selector = deployment["spec"]["selector"].clone();
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let rs = json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name, "namespace": ns,
                    "labels": template["metadata"]["labels"],
                    "annotations": {REVISION: (newest_revision + 1).to_string()},
                    "ownerReferences": controller_ref(Kind::Deployment, name, &uid),
                },
                "spec": {"replicas": replicas, "selector": selector, "template": template},
            });
            let rt = store.lock().registry.get("apps", "v1", "replicasets");
            let opts = WriteOptions {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            };
            if let Some(rt) = rt {
                let _ = store.lock().create(&rt, ns, rs, &opts);
            }
        }
    }
    // Its Pods at once, so the Deployment's status below is the rolled-out one.
    reconcile_pods(store, Kind::ReplicaSet, ns, &rs_name);
    let running = store
        .get("apps/v1", "replicasets", Some(ns), &rs_name)
        .map(|rs| rs["status"]["replicas"].as_u64().unwrap_or_default())
        .unwrap_or_default() as usize;
    let want = desired_status(Kind::Deployment, &deployment, running, &hash);
    if deployment["status"] != want {
        write_status(
            store,
            ("apps", "v1", "deployments"),
            ns,
            name,
            want,
            MANAGER,
        );
    }
}

/// A ReplicaSet or StatefulSet: `spec.replicas` Pods of its template. A StatefulSet replaces
/// Pods of an earlier template (its `controller-revision-hash`); a ReplicaSet, as the real
/// one, never looks at its Pods' template.
fn reconcile_pods(store: &Store, kind: Kind, ns: &str, name: &str) {
    let Ok(workload) = store.get("apps/v1", kind.plural(), Some(ns), name) else {
        return;
    };
    if workload["metadata"]["deletionTimestamp"].is_string() {
        return;
    }
    let uid = meta(&workload, "uid").to_owned();
    let template = &workload["spec"]["template"];
    let revision = format!("{name}-{}", template_hash(template));
    let replicas = workload["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let pods = owned_by(store, PODS_KEY, &uid);
    let current = |p: &Value| {
        kind == Kind::ReplicaSet
            || p["metadata"]["labels"]["controller-revision-hash"] == revision.as_str()
    };
    let mut kept = 0;
    for pod in &pods {
        let wanted = match kind {
            Kind::StatefulSet => current(pod) && ordinal(name, meta(pod, "name")) < Some(replicas),
            _ => kept < replicas,
        };
        if wanted {
            kept += 1;
        } else {
            let _ = store.delete("v1", "pods", Some(ns), meta(pod, "name"));
        }
    }
    let new_pod = |pod_name: Option<String>| {
        let mut labels = template["metadata"]["labels"].clone();
        if kind == Kind::StatefulSet {
            labels["controller-revision-hash"] = json!(revision);
        }
        let mut metadata = json!({
            "namespace": ns,
            "labels": labels,
            "annotations": template["metadata"]["annotations"].as_object().cloned().unwrap_or_default(),
            "ownerReferences": controller_ref(kind, name, &uid),
        });
        match pod_name {
            Some(n) => metadata["name"] = json!(n),
            None => metadata["generateName"] = json!(format!("{name}-")),
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
    };
    match kind {
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
        _ => {
            for _ in kept..replicas {
                run_pod(store, ns, new_pod(None), MANAGER);
            }
        }
    }
    let running = owned_by(store, PODS_KEY, &uid)
        .iter()
        .filter(|p| current(p))
        .count();
    let want = desired_status(kind, &workload, running, &revision);
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
        "readyReplicas": updated,
        "availableReplicas": updated,
    });
    match kind {
        Kind::Deployment => {
            status["updatedReplicas"] = json!(updated);
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
            status["updatedReplicas"] = json!(updated);
            status["currentReplicas"] = json!(updated);
            status["currentRevision"] = json!(revision);
            status["updateRevision"] = json!(revision);
            status["collisionCount"] = json!(0);
        }
        Kind::ReplicaSet => status["fullyLabeledReplicas"] = json!(updated),
    }
    status
}

/// Runs the workload stand-in until `shutdown` flips.
pub async fn run_workloads(store: Store, mut shutdown: watch::Receiver<bool>) {
    let mut watching = Watching::start(
        &store,
        &[DEPLOYMENTS_KEY, STATEFULSETS_KEY, REPLICASETS_KEY, PODS_KEY],
    );
    let mut rescan = true;
    loop {
        if rescan {
            rescan = false;
            for key in [DEPLOYMENTS_KEY, STATEFULSETS_KEY, REPLICASETS_KEY] {
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
                        for ev in events.iter() {
                            if ev.kind != EventType::Deleted {
                                reconcile(&store, kind, ev.object.namespace(), ev.object.name());
                            }
                            // A ReplicaSet's status or deletion is its Deployment's news.
                            if kind == Kind::ReplicaSet {
                                reconcile_owners(&store, &ev.object);
                            }
                        }
                    }
                    None => {
                        // A deleted Pod: its workload runs a new one.
                        for ev in events.iter().filter(|e| e.kind == EventType::Deleted) {
                            reconcile_owners(&store, &ev.object);
                        }
                    }
                },
                Change::Resync => rescan = true,
            },
        }
    }
}

/// Reconciles the workloads that own `object`.
fn reconcile_owners(store: &Store, object: &Obj) {
    for owner in object.owners() {
        let at = store.lock().locate(&owner.uid);
        if let Some(at) = at
            && let Some(kind) = Kind::of_key(&at.key)
        {
            reconcile(store, kind, &at.ns, &at.name);
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
