//! The controllers a cluster would run for the operator's sake, as stand-ins: today KServe's
//! (`kserve` for InferenceServices, `llm` for LLMInferenceServices). A stand-in follows the
//! kinds it reacts to through the store's history ([`Watching`]), looks objects up through the store's indexes, and writes through the store
//! like any client, so its work costs in proportion to the changes it sees, never to the size of
//! the store. A new stand-in: a module with a `run_*` task started in `lib.rs`, built on
//! [`Watching`].

mod kserve;
mod llm;

use std::sync::Arc;

use crate::store::{Event, Follower, Store};

pub use kserve::{KserveSettings, UrlStyle, run_kserve};
pub use llm::run_llm;

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
