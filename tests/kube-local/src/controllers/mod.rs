//! The controllers a cluster would run for the operator's sake, as stand-ins: KServe's
//! (`kserve` for InferenceServices, with `kserve_standard` for its Standard mode, `llm` for
//! LLMInferenceServices), the Deployment and StatefulSet controllers (`workloads`), and
//! Kubeflow's profile controller (`profiles`). A stand-in follows the kinds it reacts to through the
//! store's history ([`Watching`]), looks objects up through the store's indexes, and writes through the store
//! like any client, so its work costs in proportion to the changes it sees, never to the size of
//! the store. A new stand-in: a module with a `run_*` task started in `lib.rs`, built on
//! [`Watching`].

mod kserve;
mod kserve_standard;
mod llm;
mod profiles;
mod workloads;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::store::{Event, Follower, Store, WriteOptions};
use crate::util;

pub use kserve::{KserveSettings, UrlStyle, run_kserve};
pub use llm::run_llm;
pub use profiles::{OWNER_ANNOTATION as PROFILE_OWNER_ANNOTATION, PROFILE_LABEL, run_profiles};
pub use workloads::run_workloads;

/// Replaces the status of the object `name` of resource `(group, version, plural)`, as
/// `manager`, through the status subresource.
fn write_status(
    store: &Store,
    (group, version, plural): (&str, &str, &str),
    ns: &str,
    name: &str,
    status: Value,
    manager: &str,
) {
    let rt = store.lock().registry.get(group, version, plural);
    let Some(rt) = rt else { return };
    let opts = WriteOptions {
        field_manager: Some(manager.into()),
        ..Default::default()
    };
    let body = json!({ "status": status });
    let _ = store
        .lock()
        .update(&rt, ns, name, body, Some("status"), &opts);
}

/// Creates `pod` and reports it Running and Ready at once, as a kubelet would once it started
/// (nothing runs: see the README).
fn run_pod(store: &Store, ns: &str, pod: Value, manager: &str) {
    let rt = store.lock().registry.get("", "v1", "pods");
    let Some(rt) = rt else { return };
    let opts = WriteOptions {
        field_manager: Some(manager.into()),
        ..Default::default()
    };
    let created = store.lock().create(&rt, ns, pod, &opts);
    let Ok(p) = created else { return };
    let now = util::now_rfc3339();
    let containers: Vec<Value> = p["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"name": c["name"], "ready": true, "restartCount": 0, "image": c["image"], "started": true, "state": {"running": {"startedAt": now}}}))
        .collect();
    let status = json!({"status": {
        "phase": "Running", "startTime": now,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        "containerStatuses": containers,
    }});
    let name = p["metadata"]["name"].as_str().unwrap_or_default();
    let _ = store
        .lock()
        .update(&rt, ns, name, status, Some("status"), &opts);
}

/// What the followed kinds did next.
pub enum Change {
    /// Changes of one followed kind (its storage key), in order.
    Events(String, Vec<Arc<Event>>),
    /// A position in the history was lost (compaction, or far behind): look at everything
    /// again. Following continues from now.
    Resync,
}

/// The kinds one controller follows (storage keys), read as they change.
pub struct Watching {
    store: Store,
    keys: Vec<String>,
    followers: Vec<Follower>,
}

impl Watching {
    /// Follows `keys` from now. Look at what is stored after this (a first resync), so nothing
    /// changed in between is missed.
    pub fn start(store: &Store, keys: &[&str]) -> Self {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        Self {
            followers: Self::follow(store, &keys),
            store: store.clone(),
            keys,
        }
    }

    fn follow(store: &Store, keys: &[String]) -> Vec<Follower> {
        keys.iter().map(|k| store.follow_now(k, |_| ()).1).collect()
    }

    /// The next changes of any followed kind. Cancel-safe.
    pub async fn next(&mut self) -> Change {
        let reads = self.followers.iter_mut().map(|f| Box::pin(f.next()));
        let (result, i, _) = futures::future::select_all(reads).await;
        match result {
            Ok(events) => Change::Events(self.keys[i].clone(), events),
            Err(_) => {
                self.followers = Self::follow(&self.store, &self.keys);
                Change::Resync
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn watching_resyncs_when_its_position_is_lost_and_follows_on() {
        let store = Store::with_history(3);
        store
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}))
            .unwrap();
        let mut watching = Watching::start(&store, &["configmaps", "pods"]);
        let cm = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "n"}});
        store.create(cm("first")).unwrap();
        match watching.next().await {
            Change::Events(key, events) if key == "configmaps" => {
                assert_eq!(events[0].object.name(), "first")
            }
            _ => panic!("the first configmap"),
        }
        for i in 0..10 {
            store.create(cm(&format!("c{i}"))).unwrap();
        }
        assert!(matches!(watching.next().await, Change::Resync));
        store.create(cm("after")).unwrap();
        match watching.next().await {
            Change::Events(key, events) if key == "configmaps" => {
                assert_eq!(events[0].object.name(), "after")
            }
            _ => panic!("the configmap after the resync"),
        }
    }
}
