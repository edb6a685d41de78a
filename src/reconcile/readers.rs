//! Which workloads read which Secret: kept from the Deployment and StatefulSet watches, so
//! that a reconcile finds its Secret's readers, and a changed workload its accesses, by lookup
//! rather than by a scan of every workload.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use kube::runtime::watcher;

use crate::api::workload::{Workload, WorkloadKind, workload_reads};

/// A workload: its kind, namespace and name.
pub type WorkloadKey = (WorkloadKind, String, String);

/// Secrets and their readers, both ways.
#[derive(Default)]
pub struct Readers {
    inner: Mutex<ReadersInner>,
}

#[derive(Default)]
struct ReadersInner {
    /// (namespace, Secret name) → the workloads that read it.
    by_secret: HashMap<(String, String), BTreeSet<WorkloadKey>>,
    /// workload → the Secrets it reads, and a fingerprint of what the consumers step reads
    /// of it.
    of_workload: HashMap<WorkloadKey, (Vec<String>, u64)>,
}

/// What the consumers step reads of a workload: its annotations (consent, the record), whether
/// it is being deleted, and how its template reads Secrets. A change elsewhere (its status
/// during a rollout, above all) concerns no access.
fn fingerprint<W: Workload>(workload: &W) -> u64 {
    let mut hasher = DefaultHasher::new();
    workload.meta().annotations.hash(&mut hasher);
    workload
        .meta()
        .deletion_timestamp
        .is_some()
        .hash(&mut hasher);
    workload_reads(workload).hash(&mut hasher);
    hasher.finish()
}

impl Readers {
    fn inner(&self) -> std::sync::MutexGuard<'_, ReadersInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows a workload watch. Returns the Secrets the changed workload read before and
    /// reads now, whose accesses it concerns: none when nothing the consumers step reads
    /// changed.
    pub fn observe<W: Workload>(&self, event: &watcher::Event<W>) -> Vec<String> {
        match event {
            watcher::Event::Apply(w) | watcher::Event::InitApply(w) => {
                let reads = workload_reads(w).into_keys().collect();
                self.set(w, reads, fingerprint(w))
            }
            watcher::Event::Delete(w) => self.set(w, Vec::new(), 0),
            // A relist replays every workload of this kind.
            watcher::Event::Init => {
                let mut inner = self.inner();
                inner.of_workload.retain(|key, _| key.0 != W::KIND);
                for readers in inner.by_secret.values_mut() {
                    readers.retain(|key| key.0 != W::KIND);
                }
                inner.by_secret.retain(|_, readers| !readers.is_empty());
                Vec::new()
            }
            watcher::Event::InitDone => Vec::new(),
        }
    }

    fn set<W: Workload>(&self, workload: &W, reads: Vec<String>, print: u64) -> Vec<String> {
        let namespace = workload.meta().namespace.clone().unwrap_or_default();
        let name = workload.meta().name.clone().unwrap_or_default();
        let key = (W::KIND, namespace.clone(), name);
        let mut inner = self.inner();
        if !reads.is_empty() && inner.of_workload.get(&key) == Some(&(reads.clone(), print)) {
            return Vec::new();
        }
        let (before, _) = inner.of_workload.remove(&key).unwrap_or_default();
        for secret in &before {
            let at = (namespace.clone(), secret.clone());
            if let Some(readers) = inner.by_secret.get_mut(&at) {
                readers.remove(&key);
                if readers.is_empty() {
                    inner.by_secret.remove(&at);
                }
            }
        }
        for secret in &reads {
            inner
                .by_secret
                .entry((namespace.clone(), secret.clone()))
                .or_default()
                .insert(key.clone());
        }
        let mut touched = before;
        touched.extend(reads.iter().cloned());
        touched.sort();
        touched.dedup();
        if !reads.is_empty() {
            inner.of_workload.insert(key, (reads, print));
        }
        touched
    }

    /// The workloads that read the Secret `name` in `namespace`.
    pub fn of_secret(&self, namespace: &str, name: &str) -> Vec<WorkloadKey> {
        self.inner()
            .by_secret
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|readers| readers.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use serde_json::json;

    fn reading<W: serde::de::DeserializeOwned>(name: &str, secrets: &[&str]) -> W {
        let env: Vec<_> = secrets
            .iter()
            .map(|s| json!({"name": "T", "valueFrom": {"secretKeyRef": {"name": s, "key": "token"}}}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "env": env}]}}},
        }))
        .unwrap()
    }

    fn names(readers: &Readers, secret: &str) -> Vec<String> {
        readers
            .of_secret("ns", secret)
            .into_iter()
            .map(|(kind, _, name)| format!("{}/{name}", kind.as_str()))
            .collect()
    }

    #[test]
    fn follows_what_each_workload_reads() {
        let readers = Readers::default();
        let web: Deployment = reading("web", &["a", "b"]);
        let touched = readers.observe(&watcher::Event::Apply(web));
        assert_eq!(touched, ["a", "b"]);
        let db: StatefulSet = reading("web", &["a"]);
        readers.observe(&watcher::Event::Apply(db));
        assert_eq!(names(&readers, "a"), ["Deployment/web", "StatefulSet/web"]);
        // Its status, or anything else the consumers step does not read, changed: no trigger.
        let mut rolled: Deployment = reading("web", &["a", "b"]);
        rolled.metadata.resource_version = Some("9".into());
        assert!(
            readers
                .observe(&watcher::Event::Apply(rolled.clone()))
                .is_empty()
        );
        // Consent given: its Secrets' accesses hear of it.
        rolled.metadata.annotations = Some(
            [(
                "inference-access.io/restart-on-renewal".to_owned(),
                "true".to_owned(),
            )]
            .into(),
        );
        assert_eq!(readers.observe(&watcher::Event::Apply(rolled)), ["a", "b"]);
        // It stopped reading a: both Secrets' accesses hear of it.
        let moved: Deployment = reading("web", &["b"]);
        assert_eq!(
            readers.observe(&watcher::Event::Apply(moved.clone())),
            ["a", "b"]
        );
        assert_eq!(names(&readers, "a"), ["StatefulSet/web"]);
        assert_eq!(readers.observe(&watcher::Event::Delete(moved)), ["b"]);
        assert!(names(&readers, "b").is_empty());
        assert!(readers.of_secret("elsewhere", "a").is_empty());
        // A relist of Deployments forgets none of the StatefulSets.
        readers.observe(&watcher::Event::<Deployment>::Init);
        assert_eq!(names(&readers, "a"), ["StatefulSet/web"]);
    }
}
