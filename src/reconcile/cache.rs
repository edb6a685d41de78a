//! What a reconcile reads: watch caches (compressed JSON, [`encoded`]) with the operator's own
//! writes laid over them until the watch delivers them.
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
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::workload::Workload;
use crate::api::{AuthorizationPolicy, InferenceAccess, InferenceService};
use crate::core::packed_name;

pub mod encoded;

/// A store and the writes it has not seen yet.
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    objects: encoded::Shelf<K>,
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

/// An object's `namespace/name` ([`packed_name`]): the key of the maps kept per object.
pub fn packed_key<K: Resource>(object: &K) -> Box<str> {
    let meta = object.meta();
    packed_name(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn version<K: Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + 'static,
{
    fn new(objects: encoded::Shelf<K>) -> Self {
        Self {
            objects,
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

    /// An empty cache of encoded objects that no watch feeds, and the writer that fills it.
    pub fn encoded() -> (Self, encoded::Writer<K>) {
        let (shelf, writer) = encoded::shelf();
        (Self::new(shelf), writer)
    }

    pub fn objects(&self) -> &encoded::Shelf<K> {
        &self.objects
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<K>, Written<K>>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest state the operator knows of.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let key = ObjectRef::new(name).within(namespace);
        let stored = self.objects.get(namespace, name);
        let mut written = self.written();
        if let Some(mine) = written.get(&key) {
            // The watch may have delivered this write, and a newer change, before the write's
            // response was recorded: then no later event removes the override, and the store
            // (e.g. KServe's status on the InferenceService just applied) must win here.
            let stored_version = stored.as_ref().and_then(encoded::Entry::version);
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
        drop(written);
        stored.and_then(|entry| entry.decode()).map(Arc::new)
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
                    let namespace = key.namespace.as_deref().unwrap_or_default();
                    let listed = self.objects.get(namespace, &key.name);
                    match (listed, written.version) {
                        (Some(listed), Some(mine)) => listed.version().is_some_and(|v| v < mine),
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
    pub accesses: encoded::Writer<InferenceAccess>,
    pub inference_services: encoded::Writer<InferenceService>,
    pub service_accounts: encoded::Writer<ServiceAccount>,
    pub secrets: encoded::Writer<PartialObjectMeta<Secret>>,
    pub policies: encoded::Writer<AuthorizationPolicy>,
    pub deployments: encoded::Writer<Deployment>,
    pub stateful_sets: encoded::Writer<StatefulSet>,
}

impl Caches {
    pub fn detached() -> (Self, Writers) {
        let (accesses, a) = Cache::encoded();
        let (inference_services, i) = Cache::encoded();
        let (service_accounts, s) = Cache::encoded();
        let (secrets, m) = Cache::encoded();
        let (policies, p) = Cache::encoded();
        let (deployments, d) = Cache::encoded();
        let (stateful_sets, t) = Cache::encoded();
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
pub trait Cached:
    Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Sized + 'static
{
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
    /// only the URL, address and `Ready` condition are read (KServe reports up to eight); the
    /// spec only of one an access controls (compared with its template): others keep metadata
    /// and that status, about a third of the memory.
    fn trim(&mut self) {
        trim(self);
        if let Some(status) = self.status.as_mut() {
            status.rest.clear();
            status.conditions.retain(|c| c.type_ == "Ready");
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
mod tests;
