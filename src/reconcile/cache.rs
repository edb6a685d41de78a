//! What a reconcile reads: watch caches (reflector stores) with the operator's own writes laid
//! over them until the watch delivers them.
//!
//! A reconcile reads no object from the API server in the steady state: every kind it reads on
//! each pass has a cache fed by a watch (label-selected where the objects are the operator's own,
//! metadata-only for Secrets). A watch lags behind the writes that cause its events, and a
//! reconcile triggered by one watch may run before another watch delivers the write it made a
//! moment ago; acting on that stale view would write again or, for a credential, mint twice. So
//! every write is recorded here and wins over the store until the store has caught up with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::watcher;

use crate::api::workload::Workload;
use crate::api::{AuthorizationPolicy, InferenceAccess, InferenceService};

/// A store and the writes it has not seen yet.
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    written: Mutex<HashMap<ObjectRef<K>, Written<K>>>,
    /// True once the first full list is in. (A channel any number of reconciles may wait on:
    /// a reflector store's own readiness wakes only one waiter.)
    synced: tokio::sync::watch::Sender<bool>,
}

struct Written<K> {
    /// `None`: deleted by the operator.
    object: Option<Arc<K>>,
    /// The resourceVersion the write produced (or the deleted object had).
    version: Option<u64>,
}

fn version<K: Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Cache<K> {
    pub fn new(store: Store<K>) -> Self {
        Self {
            store,
            written: Mutex::default(),
            synced: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Marks a cache that no watch will fill as complete.
    pub fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    /// Waits for the first full list.
    pub async fn synced(&self) {
        let mut synced = self.synced.subscribe();
        // An error means the cache is gone, and the process with it.
        let _ = synced.wait_for(|synced| *synced).await;
    }

    /// An empty cache that no watch feeds, and the writer that fills it (tests, and kinds
    /// that are not served).
    pub fn detached() -> (Self, Writer<K>) {
        let (store, writer) = kube::runtime::reflector::store();
        (Self::new(store), writer)
    }

    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<K>, Written<K>>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest state the operator knows of.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let key = ObjectRef::new(name).within(namespace);
        let stored = self.store.get(&key);
        let mut written = self.written();
        if let Some(mine) = written.get(&key) {
            // The watch may have delivered this write, and a newer change, before the write's
            // response was recorded: then no later event removes the override, and the store
            // (e.g. KServe's status on the InferenceService just applied) must win here.
            let stored_version = stored.as_deref().and_then(version);
            let store_is_newer = match (stored_version, mine.version, &mine.object) {
                (Some(theirs), Some(ours), Some(_)) => theirs >= ours,
                // Deleted by the operator: only a recreation is newer.
                (Some(theirs), Some(ours), None) => theirs > ours,
                _ => false,
            };
            if !store_is_newer {
                return mine.object.clone();
            }
            written.remove(&key);
        }
        stored
    }

    /// Records an object the operator just wrote (as the API server returned it).
    pub fn wrote(&self, object: K) -> Arc<K> {
        let object = Arc::new(object);
        let key = ObjectRef::from_obj(&*object);
        let version = version(&*object);
        self.written().insert(
            key,
            Written {
                object: Some(object.clone()),
                version,
            },
        );
        object
    }

    /// Records that the operator deleted `object`.
    pub fn removed(&self, object: &K) {
        self.written().insert(
            ObjectRef::from_obj(object),
            Written {
                object: None,
                version: version(object),
            },
        );
    }

    /// Called for each watch event after the store applied it: a write the store has caught up
    /// with stops overriding it.
    pub fn observe(&self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                let key = ObjectRef::from_obj(object);
                let seen = version(object);
                let mut written = self.written();
                let caught_up = written.get(&key).is_some_and(|w| match (w.version, seen) {
                    (Some(mine), Some(seen)) => seen >= mine,
                    // Versions that are not numbers: the newest event is the truth.
                    _ => true,
                });
                if caught_up {
                    written.remove(&key);
                }
            }
            watcher::Event::Delete(object) => {
                self.written().remove(&ObjectRef::from_obj(object));
            }
            // A relist: keep only the writes its list did not include yet.
            watcher::Event::InitDone => {
                self.written().retain(|key, written| {
                    match (self.store.get(key), written.version) {
                        (Some(listed), Some(mine)) => version(&*listed).is_some_and(|v| v < mine),
                        (None, _) => written.object.is_some(),
                        (Some(_), None) => false,
                    }
                });
                self.mark_synced();
            }
            watcher::Event::Init => {}
        }
    }
}

/// The caches of one watch scope (a namespace, or the cluster).
pub struct Caches {
    pub accesses: Cache<InferenceAccess>,
    pub inference_services: Cache<InferenceService>,
    pub service_accounts: Cache<ServiceAccount>,
    /// Metadata only: the credential record is in the annotations, the value is fetched only
    /// when a request must carry it.
    pub secrets: Cache<PartialObjectMeta<Secret>>,
    pub policies: Cache<AuthorizationPolicy>,
    pub deployments: Cache<Deployment>,
    pub stateful_sets: Cache<StatefulSet>,
    /// Which workloads read which Secret, from the two caches above.
    pub readers: super::readers::Readers,
    /// Whether AuthorizationPolicies are served here (Istio installed).
    pub policies_served: bool,
}

impl Caches {
    /// Waits until every cache holds the first full list: before that, a reconcile would take
    /// objects that exist for absent ones. A cache no watch feeds counts as ready.
    pub async fn ready(&self) {
        futures::join!(
            self.accesses.synced(),
            self.inference_services.synced(),
            self.service_accounts.synced(),
            self.secrets.synced(),
            self.policies.synced(),
            self.deployments.synced(),
            self.stateful_sets.synced(),
        );
    }

    /// Marks every cache complete: for caches filled by hand.
    pub fn mark_synced(&self) {
        self.accesses.mark_synced();
        self.inference_services.mark_synced();
        self.service_accounts.mark_synced();
        self.secrets.mark_synced();
        self.policies.mark_synced();
        self.deployments.mark_synced();
        self.stateful_sets.mark_synced();
    }
}

/// The writers of detached caches, to fill them by hand.
pub struct Writers {
    pub accesses: Writer<InferenceAccess>,
    pub inference_services: Writer<InferenceService>,
    pub service_accounts: Writer<ServiceAccount>,
    pub secrets: Writer<PartialObjectMeta<Secret>>,
    pub policies: Writer<AuthorizationPolicy>,
    pub deployments: Writer<Deployment>,
    pub stateful_sets: Writer<StatefulSet>,
}

impl Caches {
    pub fn detached() -> (Self, Writers) {
        let (accesses, a) = Cache::detached();
        let (inference_services, i) = Cache::detached();
        let (service_accounts, s) = Cache::detached();
        let (secrets, m) = Cache::detached();
        let (policies, p) = Cache::detached();
        let (deployments, d) = Cache::detached();
        let (stateful_sets, t) = Cache::detached();
        (
            Self {
                accesses,
                inference_services,
                service_accounts,
                secrets,
                policies,
                deployments,
                stateful_sets,
                readers: Default::default(),
                policies_served: true,
            },
            Writers {
                accesses: a,
                inference_services: i,
                service_accounts: s,
                secrets: m,
                policies: p,
                deployments: d,
                stateful_sets: t,
            },
        )
    }
}

/// A kind with a cache.
pub trait Cached: Resource<DynamicType = ()> + Clone + Sized + 'static {
    /// Whether the cache sees every object of the kind in its scope. When it sees only the
    /// operator's own (label-selected), an object it does not show may still exist, someone
    /// else's: it is created, never applied, so such an object is never taken over.
    const COMPLETE: bool;

    fn cache(caches: &Caches) -> &Cache<Self>;

    /// Drops what no reconcile reads before the object is cached.
    fn trim(&mut self) {
        trim(self);
    }
}

impl Cached for InferenceService {
    // Referenced InferenceServices are read too.
    const COMPLETE: bool = true;

    fn cache(caches: &Caches) -> &Cache<Self> {
        &caches.inference_services
    }

    /// Every InferenceService in scope is cached, most of them no access's. Of KServe's status
    /// only the URL, address and conditions are read; the spec only of one an access controls
    /// (compared with its template): others keep metadata and that status, about a third of
    /// the memory.
    fn trim(&mut self) {
        trim(self);
        if let Some(status) = self.status.as_mut() {
            status.rest.clear();
        }
        let controlled = self
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && r.kind == InferenceAccess::kind(&()));
        if !controlled {
            self.spec = serde_json::Value::Null;
        }
    }
}

impl Cached for ServiceAccount {
    // Named ServiceAccounts are read too.
    const COMPLETE: bool = true;

    fn cache(caches: &Caches) -> &Cache<Self> {
        &caches.service_accounts
    }
}

impl Cached for AuthorizationPolicy {
    const COMPLETE: bool = false;

    fn cache(caches: &Caches) -> &Cache<Self> {
        &caches.policies
    }
}

impl Cached for PartialObjectMeta<Secret> {
    const COMPLETE: bool = false;

    fn cache(caches: &Caches) -> &Cache<Self> {
        &caches.secrets
    }
}

impl Cached for Deployment {
    const COMPLETE: bool = true;

    fn cache(caches: &Caches) -> &Cache<Self> {
        &caches.deployments
    }

    fn trim(&mut self) {
        trim(self);
        self.keep_secret_references();
    }
}

impl Cached for StatefulSet {
    const COMPLETE: bool = true;

    fn cache(caches: &Caches) -> &Cache<Self> {
        &caches.stateful_sets
    }

    fn trim(&mut self) {
        trim(self);
        self.keep_secret_references();
    }
}

impl Cached for InferenceAccess {
    const COMPLETE: bool = true;

    fn cache(caches: &Caches) -> &Cache<Self> {
        &caches.accesses
    }
}

/// Drops what no reconcile reads before an object is cached: managedFields are often larger
/// than the rest of the object, and `kubectl apply` (and GitOps tools applying client-side)
/// keep a whole copy of what was applied in an annotation.
pub fn trim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sa(rv: &str, label: &str) -> ServiceAccount {
        serde_json::from_value(json!({
            "metadata": {"name": "client", "namespace": "ns", "resourceVersion": rv, "labels": {"v": label}}
        }))
        .unwrap()
    }

    #[test]
    fn trimming_keeps_every_annotation_but_kubectls_copy() {
        let mut account: ServiceAccount = serde_json::from_value(json!({"metadata": {
            "name": "client", "namespace": "ns",
            "annotations": {LAST_APPLIED: "{\"kind\":\"ServiceAccount\"}", "team": "a"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        }}))
        .unwrap();
        trim(&mut account);
        assert_eq!(
            serde_json::to_value(&account.metadata).unwrap(),
            json!({"name": "client", "namespace": "ns", "annotations": {"team": "a"}})
        );
    }

    #[test]
    fn a_write_wins_until_the_watch_catches_up() {
        let (cache, mut writer) = Cache::<ServiceAccount>::detached();
        writer.apply_watcher_event(&watcher::Event::Apply(sa("5", "old")));
        cache.wrote(sa("7", "mine"));
        let label = |c: &Cache<ServiceAccount>| {
            c.get("ns", "client")
                .and_then(|s| s.metadata.labels.clone())
                .map(|l| l["v"].clone())
        };
        assert_eq!(label(&cache).as_deref(), Some("mine"));
        // An older event arrives late: still ours.
        let late = watcher::Event::Apply(sa("6", "older"));
        writer.apply_watcher_event(&late);
        cache.observe(&late);
        assert_eq!(label(&cache).as_deref(), Some("mine"));
        // The watch delivers our write (or anything newer): the store is the truth again.
        let ours = watcher::Event::Apply(sa("7", "mine"));
        writer.apply_watcher_event(&ours);
        cache.observe(&ours);
        let newer = watcher::Event::Apply(sa("9", "theirs"));
        writer.apply_watcher_event(&newer);
        cache.observe(&newer);
        assert_eq!(label(&cache).as_deref(), Some("theirs"));
    }

    #[test]
    fn a_write_recorded_after_the_watch_delivered_newer_changes_does_not_hide_them() {
        let (cache, mut writer) = Cache::<ServiceAccount>::detached();
        // The watch delivers the write (7) and a change made right after it (8) before the
        // write's response is recorded.
        for event in [
            watcher::Event::Apply(sa("7", "mine")),
            watcher::Event::Apply(sa("8", "theirs")),
        ] {
            writer.apply_watcher_event(&event);
            cache.observe(&event);
        }
        cache.wrote(sa("7", "mine"));
        let label = cache
            .get("ns", "client")
            .and_then(|s| s.metadata.labels.clone())
            .map(|l| l["v"].clone());
        assert_eq!(label.as_deref(), Some("theirs"));
    }

    #[test]
    fn an_inference_service_no_access_controls_is_cached_without_its_spec() {
        let isvc = |owners: serde_json::Value| -> InferenceService {
            serde_json::from_value(json!({
                "metadata": {"name": "m", "namespace": "ns", "ownerReferences": owners,
                    "managedFields": [{"manager": "kserve"}]},
                "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}},
                "status": {"url": "http://m.ns.example.com", "components": {"predictor": {}},
                    "conditions": [{"type": "Ready", "status": "True"}]},
            }))
            .unwrap()
        };
        let mut theirs = isvc(json!([]));
        Cached::trim(&mut theirs);
        let mut ours = isvc(json!([{"apiVersion": "inference-access.io/v1alpha1",
            "kind": "InferenceAccess", "name": "a", "uid": "u", "controller": true}]));
        Cached::trim(&mut ours);
        for trimmed in [&theirs, &ours] {
            let status = trimmed.status.as_ref().unwrap();
            assert_eq!(status.url.as_deref(), Some("http://m.ns.example.com"));
            assert_eq!(status.conditions.len(), 1);
            assert!(status.rest.is_empty() && trimmed.metadata.managed_fields.is_none());
        }
        assert!(theirs.spec.is_null());
        assert_eq!(
            ours.spec["predictor"]["model"]["modelFormat"]["name"],
            "sklearn"
        );
    }

    #[test]
    fn a_delete_is_seen_at_once_and_a_recreation_after() {
        let (cache, mut writer) = Cache::<ServiceAccount>::detached();
        writer.apply_watcher_event(&watcher::Event::Apply(sa("5", "old")));
        cache.removed(&sa("5", "old"));
        assert!(cache.get("ns", "client").is_none());
        let gone = watcher::Event::Delete(sa("5", "old"));
        writer.apply_watcher_event(&gone);
        cache.observe(&gone);
        assert!(cache.get("ns", "client").is_none());
        let again = watcher::Event::Apply(sa("8", "new"));
        writer.apply_watcher_event(&again);
        cache.observe(&again);
        assert!(cache.get("ns", "client").is_some());
    }
}
