//! The object store: every write's API semantics over indexed objects and a per-kind watch
//! history, behind one lock.
//!
//! - `objects`: the stored objects and their indexes (namespace, label, uid, owner).
//! - `history`: per-kind windows of changes and the followers that read them (watches, the
//!   stand-in controllers).
//! - `writes`: create, update, patch (four formats, server-side apply), delete; resource
//!   versions, generation, managedFields, finalizers.
//! - `admission`: kind-specific defaulting and checks for built-ins, schema work for custom
//!   resources.
//! - `gc`: the garbage collector, namespace and CRD cleanup, driven by a work queue that each
//!   change feeds.
//! - `list`: lists with selectors and continue tokens, through the indexes.

mod admission;
mod gc;
mod history;
mod list;
mod objects;
mod writes;

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::patch::PatchType;
use crate::resources::{Registry, ResourceType};
use crate::selectors::{FieldSelector, Filter, LabelSelector};

pub use history::{DEFAULT_LIMIT as DEFAULT_HISTORY, Event, EventType, Follower};
pub use objects::{Obj, ObjRef};

use history::History;
use objects::Objects;

/// The finalizer that holds a CRD until its instances are gone.
const CRD_CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Options of a write that come from the request (query parameters and caller).
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub field_manager: Option<String>,
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields are errors instead of being pruned.
    pub strict: bool,
    pub force: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

pub struct State {
    pub rv: u64,
    pub registry: Registry,
    objects: Objects,
    history: History,
    gc: gc::Queue,
}

/// Shared handle to the object store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<State>>,
}

/// A locked store; followers of the kinds it changed are woken when it is dropped.
pub struct Txn<'a> {
    guard: MutexGuard<'a, State>,
}

impl std::ops::Deref for Txn<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Txn<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        // Still locked: a follower woken now reads the whole transaction.
        let rv = self.guard.rv;
        self.guard.history.notify_changed(rv);
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }

    /// A store that keeps `per_kind` changes of each kind for resuming watches.
    pub fn with_history(per_kind: usize) -> Self {
        let state = State {
            rv: 1,
            registry: Registry::with_builtins(),
            objects: Objects::default(),
            history: History::new(per_kind),
            gc: gc::Queue::default(),
        };
        Self {
            inner: Arc::new(Mutex::new(state)),
        }
    }

    pub(crate) fn lock(&self) -> Txn<'_> {
        Txn {
            guard: self.inner.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    fn resolve(
        &self,
        api_version: &str,
        kind_or_plural: &str,
    ) -> Result<Arc<ResourceType>, ApiError> {
        self.lock()
            .registry
            .find(api_version, kind_or_plural)
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("the server could not find the requested resource ({api_version} {kind_or_plural})")))
    }

    /// Reads one object (`namespace` None for cluster-scoped kinds).
    pub fn get(
        &self,
        api_version: &str,
        kind_or_plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let rt = self.resolve(api_version, kind_or_plural)?;
        self.lock().get(&rt, namespace.unwrap_or_default(), name)
    }

    /// Lists objects, optionally in one namespace and filtered by a label selector.
    pub fn list(
        &self,
        api_version: &str,
        kind_or_plural: &str,
        namespace: Option<&str>,
        label_selector: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let rt = self.resolve(api_version, kind_or_plural)?;
        let filter = Filter {
            namespace: namespace.map(str::to_string),
            labels: LabelSelector::parse(label_selector)?,
            fields: FieldSelector::default(),
        };
        let items = self.lock().list(&rt, &filter, None, None)?.items;
        Ok(items
            .iter()
            .map(|o| present_owned(&rt, o.value()))
            .collect())
    }

    /// Creates an object (apiVersion and kind taken from it), as the admin would.
    pub fn create(&self, obj: Value) -> Result<Value, ApiError> {
        let rt = self.resolve(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )?;
        let ns = meta_str(&obj, "namespace").to_string();
        let opts = WriteOptions {
            field_manager: Some("kube-local-test".into()),
            ..Default::default()
        };
        self.lock().create(&rt, &ns, obj, &opts)
    }

    /// Server-side applies an object with `force`, as `field_manager`.
    pub fn apply(&self, obj: Value, field_manager: &str) -> Result<Value, ApiError> {
        self.apply_to(obj, field_manager, None)
    }

    /// Server-side applies the status of an object, as `field_manager`.
    pub fn apply_status(&self, obj: Value, field_manager: &str) -> Result<Value, ApiError> {
        self.apply_to(obj, field_manager, Some("status"))
    }

    fn apply_to(
        &self,
        obj: Value,
        field_manager: &str,
        sub: Option<&str>,
    ) -> Result<Value, ApiError> {
        let rt = self.resolve(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )?;
        let ns = meta_str(&obj, "namespace").to_string();
        let name = meta_str(&obj, "name").to_string();
        let opts = WriteOptions {
            field_manager: Some(field_manager.into()),
            force: true,
            ..Default::default()
        };
        self.lock()
            .patch(&rt, &ns, &name, PatchType::Apply, &obj, sub, &opts)
            .map(|(v, _)| v)
    }

    /// JSON-merge-patches an object (`status` patches the status subresource).
    pub fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let rt = self.resolve(api_version, kind)?;
        let opts = WriteOptions {
            field_manager: Some("kube-local-test".into()),
            ..Default::default()
        };
        let sub = status.then_some("status");
        self.lock()
            .patch(
                &rt,
                namespace.unwrap_or_default(),
                name,
                PatchType::Merge,
                &patch,
                sub,
                &opts,
            )
            .map(|(v, _)| v)
    }

    /// Deletes an object with background propagation.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), ApiError> {
        let rt = self.resolve(api_version, kind)?;
        self.lock()
            .delete(
                &rt,
                namespace.unwrap_or_default(),
                name,
                &DeleteOptions::default(),
            )
            .map(|_| ())
    }

    /// The newest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Drops the watch history: resuming a watch or list from an older version gets 410 Gone.
    pub fn compact(&self) {
        // Compaction also moves the revision on, so every version a client holds is now too old
        // (etcd would only refuse versions below the compacted one; this forces the 410 path).
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        st.history.compact(rv);
    }
}

pub fn object_rv(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// events.k8s.io/v1 field names and their core/v1 Event counterparts.
const EVENT_FIELDS: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename_fields(obj: &mut Value, to_core: bool) {
    let Some(m) = obj.as_object_mut() else { return };
    for (new, core) in EVENT_FIELDS {
        let (from, to) = if to_core { (new, core) } else { (core, new) };
        if let Some(v) = m.remove(from) {
            m.insert(to.to_string(), v);
        }
    }
}

/// A request body in the shape storage keeps (only events.k8s.io Events differ).
pub fn to_storage(rt: &ResourceType, mut obj: Value) -> Value {
    if rt.is_new_event() {
        rename_fields(&mut obj, true);
    }
    obj
}

/// Whether objects of `rt` as stored look different in the request's version: apiVersion (a
/// CRD's other served versions share one storage) or events.k8s.io field names.
fn converts(rt: &ResourceType, stored_api_version: &str) -> bool {
    rt.is_new_event() || stored_api_version != rt.api_version()
}

/// The object as a given version of its resource presents it (versions share one schema
/// here). Borrowed when storage already has that shape, which is the common case.
pub fn present<'a>(rt: &ResourceType, obj: &'a Value) -> Cow<'a, Value> {
    if !converts(rt, obj["apiVersion"].as_str().unwrap_or_default()) {
        return Cow::Borrowed(obj);
    }
    Cow::Owned(present_owned(rt, obj.clone()))
}

/// [`present`] for an object the caller owns, converted in place.
pub fn present_owned(rt: &ResourceType, mut obj: Value) -> Value {
    if converts(rt, obj["apiVersion"].as_str().unwrap_or_default()) {
        if rt.is_new_event() {
            rename_fields(&mut obj, false);
        }
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
    }
    obj
}

/// [`present`] for a stored object, as JSON text: the stored text itself unless converted.
pub fn present_json<'a>(rt: &ResourceType, obj: &'a Obj) -> Cow<'a, str> {
    if !converts(rt, obj.api_version()) {
        return Cow::Borrowed(obj.json());
    }
    Cow::Owned(present_owned(rt, obj.value()).to_string())
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn is_terminating(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

impl State {
    /// The stored object, parsed.
    pub fn raw(&self, key: &str, ns: &str, name: &str) -> Option<Value> {
        self.objects.get(key, ns, name).map(|o| o.value())
    }

    pub fn exists(&self, key: &str, ns: &str, name: &str) -> bool {
        self.objects.get(key, ns, name).is_some()
    }

    /// The uid of a stored object, without parsing it.
    pub fn uid_of(&self, key: &str, ns: &str, name: &str) -> Option<&str> {
        self.objects.get(key, ns, name).map(|o| o.uid())
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.get_stored(rt, ns, name)
            .map(|o| present_owned(rt, o.value()))
    }

    /// The stored object (present it with [`present_json`], outside the lock).
    pub fn get_stored(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
    ) -> Result<Arc<Obj>, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        self.objects
            .get(&rt.storage_key(), ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// The stored objects of a storage key that `filter` selects, through the indexes.
    pub fn select(&self, key: &str, filter: &Filter) -> Vec<Arc<Obj>> {
        self.objects
            .select(key, filter, None)
            .map(|(_, _, o)| o.clone())
            .collect()
    }

    /// The stored objects of a storage key whose ownerReferences name `owner_uid`, through the
    /// owner index.
    pub fn dependents_of(&self, key: &str, owner_uid: &str) -> Vec<Arc<Obj>> {
        self.objects
            .dependents(owner_uid)
            .into_iter()
            .filter(|at| at.key == key)
            .filter_map(|at| self.objects.get(&at.key, &at.ns, &at.name).cloned())
            .collect()
    }

    /// Where the object with `uid` is stored, if it is.
    pub fn locate(&self, uid: &str) -> Option<ObjRef> {
        self.objects.by_uid(uid).cloned()
    }

    /// Every stored object of a storage key (for controllers' resyncs).
    pub fn objects_of(&self, key: &str) -> Vec<Arc<Obj>> {
        self.objects
            .iter(key, None, None)
            .map(|(_, _, o)| o.clone())
            .collect()
    }

    /// Stored objects of a storage key in one namespace.
    pub fn objects_in(&self, key: &str, ns: &str) -> Vec<Arc<Obj>> {
        self.objects
            .iter(key, Some(ns), None)
            .map(|(_, _, o)| o.clone())
            .collect()
    }

    /// Records a change: the object (or its removal) at a new resourceVersion, the event for
    /// watches, and the garbage collector's follow-up work. Returns the object as stored (for a
    /// removal: its final state, which the DELETED event carries).
    fn commit(
        &mut self,
        key: &str,
        ns: &str,
        name: &str,
        new: Option<Value>,
        kind: EventType,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let at = ObjRef {
            key: key.to_string(),
            ns: ns.to_string(),
            name: name.to_string(),
        };
        let (value, object, old) = match new {
            Some(mut obj) => {
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                let stored = Arc::new(Obj::new(&obj));
                let old = self.objects.put(&at, stored.clone());
                self.note_for_gc(&at, old.as_deref(), Some((&obj, &stored)));
                (obj, stored, old)
            }
            None => {
                let old = self.objects.remove(&at);
                let mut gone = old.as_ref().map_or(Value::Null, |o| o.value());
                // The DELETED event carries the final state at a new resourceVersion.
                gone["metadata"]["resourceVersion"] = json!(rv.to_string());
                let stored = Arc::new(Obj::new(&gone));
                self.note_for_gc(&at, old.as_deref(), None);
                (gone, stored, old)
            }
        };
        self.history.push(
            key,
            Arc::new(Event {
                rv,
                kind,
                object,
                old,
            }),
        );
        value
    }
}
