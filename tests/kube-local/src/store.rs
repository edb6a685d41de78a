//! The object store: resource versions, watch history, and every write's API semantics
//! (admission, generation, managedFields, finalizers, garbage collection).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::{ApiError, FieldError};
use crate::fields::{self, Scope};
use crate::patch::{self, PatchType};
use crate::resources::{self, Registry, ResourceType};
use crate::selectors::{FieldSelector, Filter, LabelSelector};
use crate::util;
use crate::validation;

/// How many watch events are kept for resuming watches (older ones are compacted away).
const HISTORY_LIMIT: usize = 200_000;
const BROADCAST_CAPACITY: usize = 65_536;
/// The finalizer that holds a CRD until its instances are gone.
const CRD_CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it. `old` lets selector-filtered watches turn a change that leaves
/// the selection into DELETED and one that enters it into ADDED, as the API server does.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub key: String,
    pub kind: EventType,
    pub object: Arc<Value>,
    pub old: Option<Arc<Value>>,
}

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

/// How a write's managedFields come about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracking {
    /// Changed fields move to the writer (create, update, non-apply patch).
    Update,
    /// Server-side apply already computed them.
    DoneByApply,
}

/// Result of a list call.
#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<Value>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

pub struct State {
    pub rv: u64,
    pub registry: Registry,
    objects: HashMap<String, BTreeMap<(String, String), Arc<Value>>>,
    uids: HashMap<String, (String, String, String)>,
    history: VecDeque<Arc<Event>>,
    pub compacted_rv: u64,
    pending: Vec<Arc<Event>>,
}

/// Shared handle to the object store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Event>>,
}

/// A locked store; events are published when it is dropped, in commit order.
pub struct Txn<'a> {
    guard: MutexGuard<'a, State>,
    events: &'a broadcast::Sender<Arc<Event>>,
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
        for e in self.guard.pending.drain(..) {
            // No receivers is fine: nobody watches yet.
            let _ = self.events.send(e);
        }
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let state = State {
            rv: 1,
            registry: Registry::with_builtins(),
            objects: HashMap::new(),
            uids: HashMap::new(),
            history: VecDeque::new(),
            compacted_rv: 0,
            pending: Vec::new(),
        };
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                events,
            }),
        }
    }

    pub(crate) fn lock(&self) -> Txn<'_> {
        Txn {
            guard: self.inner.state.lock().unwrap_or_else(|p| p.into_inner()),
            events: &self.inner.events,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.events.subscribe()
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
        Ok(self.lock().list(&rt, &filter, None, None)?.items)
    }

    /// Creates an object (apiVersion and kind taken from it), as the admin would.
    pub fn create(&self, obj: Value) -> Result<Value, ApiError> {
        let rt = self.resolve(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        )?;
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
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
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
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
        st.compacted_rv = st.rv;
        st.history.clear();
    }

    /// Events after `from` for one storage key, plus a receiver for what follows; 410 if compacted.
    pub(crate) fn watch_from(&self, key: &str, from: u64) -> Result<WatchStart, ApiError> {
        let st = self.lock();
        if from < st.compacted_rv {
            return Err(too_old(from, st.compacted_rv));
        }
        let rx = self.inner.events.subscribe();
        let backlog = st
            .history
            .iter()
            .filter(|e| e.rv > from && e.key == key)
            .cloned()
            .collect();
        Ok((backlog, st.rv.max(from), rx))
    }

    /// Synthetic ADDED events for every current object of a storage key (a watch's initial
    /// state), the version they are at, and a receiver for what follows.
    pub(crate) fn watch_now(
        &self,
        key: &str,
    ) -> (Vec<Arc<Event>>, u64, broadcast::Receiver<Arc<Event>>) {
        let st = self.lock();
        let rx = self.inner.events.subscribe();
        let initial = st
            .objects
            .get(key)
            .map(|m| {
                m.values()
                    .map(|o| {
                        Arc::new(Event {
                            rv: object_rv(o),
                            key: key.to_string(),
                            kind: EventType::Added,
                            object: o.clone(),
                            old: None,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        (initial, st.rv, rx)
    }
}

/// Events to replay, the version they bring the watch to, and the live feed that follows.
pub type WatchStart = (Vec<Arc<Event>>, u64, broadcast::Receiver<Arc<Event>>);

type Entries<'a> = Box<dyn Iterator<Item = (&'a (String, String), &'a Arc<Value>)> + 'a>;

pub fn too_old(from: u64, compacted: u64) -> ApiError {
    ApiError::gone(format!("too old resource version: {from} ({compacted})"))
}

fn object_rv(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The object as a given version of its resource presents it (versions share one schema here).
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

pub fn present(rt: &ResourceType, obj: &Value) -> Value {
    let mut out = obj.clone();
    if rt.is_new_event() {
        rename_fields(&mut out, false);
    }
    out["apiVersion"] = json!(rt.api_version());
    out["kind"] = json!(rt.kind);
    out
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

/// Everything but server-owned bookkeeping, for "did this write change anything".
fn without_rv(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    o
}

/// The part of an object whose change bumps metadata.generation.
fn generation_basis(obj: &Value, status_separate: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if status_separate {
            m.remove("status");
        }
    }
    o
}

fn continue_token(rv: u64, after: &(String, String)) -> String {
    let raw = json!({"rv": rv, "ns": after.0, "name": after.1}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn parse_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    Ok((
        rv,
        (
            v["ns"].as_str().unwrap_or_default().to_string(),
            v["name"].as_str().unwrap_or_default().to_string(),
        ),
    ))
}

fn default_manager(opts: &WriteOptions) -> String {
    opts.field_manager
        .clone()
        .unwrap_or_else(|| "unknown".to_string())
}

impl State {
    fn bucket(&self, key: &str) -> Option<&BTreeMap<(String, String), Arc<Value>>> {
        self.objects.get(key)
    }

    pub fn raw(&self, key: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.bucket(key)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        self.raw(&rt.storage_key(), ns, name)
            .map(|o| present(rt, &o))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    pub fn list(
        &self,
        rt: &ResourceType,
        filter: &Filter,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> Result<ListResult, ApiError> {
        let (list_rv, start) = match cont {
            Some(token) if !token.is_empty() => {
                let (rv, after) = parse_continue(token)?;
                if rv < self.compacted_rv {
                    return Err(ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ));
                }
                (rv, Some(after))
            }
            _ => (self.rv, None),
        };
        let mut items = Vec::new();
        let mut last_key = None;
        let mut remaining = 0;
        if let Some(bucket) = self.bucket(&rt.storage_key()) {
            let range: Entries<'_> = match &start {
                Some(after) => Box::new(bucket.range::<(String, String), _>((
                    std::ops::Bound::Excluded(after.clone()),
                    std::ops::Bound::Unbounded,
                ))),
                None => Box::new(bucket.iter()),
            };
            for (k, obj) in range {
                if !filter.matches(obj) {
                    continue;
                }
                if limit.is_some_and(|l| l > 0 && items.len() >= l) {
                    remaining += 1;
                    continue;
                }
                items.push(present(rt, obj));
                last_key = Some(k.clone());
            }
        }
        let continue_token = (remaining > 0)
            .then(|| last_key.map(|k| continue_token(list_rv, &k)))
            .flatten();
        Ok(ListResult {
            items,
            resource_version: list_rv.max(self.rv),
            continue_token,
            remaining: (remaining > 0).then_some(remaining),
        })
    }

    fn commit(
        &mut self,
        key: &str,
        ns: &str,
        name: &str,
        new: Option<Value>,
        kind: EventType,
    ) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        let id = (ns.to_string(), name.to_string());
        let old = self.objects.get(key).and_then(|b| b.get(&id)).cloned();
        let object = match new {
            Some(mut obj) => {
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                let obj = Arc::new(obj);
                let uid = meta_str(&obj, "uid").to_string();
                self.uids
                    .insert(uid, (key.to_string(), ns.to_string(), name.to_string()));
                self.objects
                    .entry(key.to_string())
                    .or_default()
                    .insert(id, obj.clone());
                obj
            }
            None => {
                let removed = self.objects.get_mut(key).and_then(|b| b.remove(&id));
                let mut gone = removed.map(|o| (*o).clone()).unwrap_or(Value::Null);
                self.uids.remove(meta_str(&gone, "uid"));
                // The DELETED event carries the final state at a new resourceVersion.
                gone["metadata"]["resourceVersion"] = json!(rv.to_string());
                Arc::new(gone)
            }
        };
        let event = Arc::new(Event {
            rv,
            key: key.to_string(),
            kind,
            object: object.clone(),
            old,
        });
        self.history.push_back(event.clone());
        if self.history.len() > HISTORY_LIMIT
            && let Some(dropped) = self.history.pop_front()
        {
            self.compacted_rv = dropped.rv;
        }
        self.pending.push(event);
        object
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.raw("namespaces", "", ns).is_some()
    }

    /// POST: creates an object.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut obj = to_storage(rt, obj);
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        if let Some(av) = obj["apiVersion"].as_str() {
            let (g, _) = resources::split_api_version(av);
            if g != rt.group || obj["kind"].as_str().is_some_and(|k| k != rt.kind) {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    rt.api_version()
                )));
            }
        }
        obj["apiVersion"] = json!(resource_api_version(rt));
        obj["kind"] = json!(rt.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let meta_ns = meta_str(&obj, "namespace").to_string();
        let ns = if rt.namespaced {
            let ns = if ns.is_empty() {
                meta_ns.clone()
            } else {
                ns.to_string()
            };
            if !meta_ns.is_empty() && meta_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if ns.is_empty() {
                return Err(ApiError::bad_request(
                    "the namespace of the object must be set",
                ));
            }
            obj["metadata"]["namespace"] = json!(ns);
            ns
        } else {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            String::new()
        };
        if meta_str(&obj, "name").is_empty() {
            let prefix = meta_str(&obj, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    "",
                    &[FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ));
            }
            obj["metadata"]["name"] = json!(format!("{prefix}{}", util::random_suffix()));
        }
        let name = meta_str(&obj, "name").to_string();
        if rt.namespaced && !self.namespace_exists(&ns) {
            return Err(ApiError::not_found("", "namespaces", &ns));
        }
        if rt.namespaced
            && let Some(nso) = self.raw("namespaces", "", &ns)
            && nso["metadata"]["deletionTimestamp"].is_string()
        {
            return Err(ApiError::forbidden(format!("{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", crate::error::qualified(&rt.group, &rt.plural))).with_details(json!({"name": name, "kind": rt.plural})));
        }
        if self.raw(&rt.storage_key(), &ns, &name).is_some() {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        if rt.status_subresource
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        let now = util::now_rfc3339();
        if let Some(m) = obj["metadata"].as_object_mut() {
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "managedFields",
                "selfLink",
            ] {
                m.remove(k);
            }
        }
        self.admit_kind(rt, None, &mut obj)?;
        self.admit_custom(rt, None, &mut obj, opts.strict)?;
        obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        obj["metadata"]["creationTimestamp"] = json!(now);
        if rt.custom.is_some() {
            obj["metadata"]["generation"] = json!(1);
        }
        let manager = default_manager(opts);
        let api_version = rt.api_version();
        let writer = fields::Writer {
            manager: &manager,
            api_version: &api_version,
            now: &now,
            schema: schema_of(rt),
        };
        fields::track_update(
            None,
            &mut obj,
            &writer,
            Scope::Main {
                status_separate: rt.status_subresource,
            },
        );
        if opts.dry_run {
            return Ok(present(rt, &obj));
        }
        let stored = self.commit(&rt.storage_key(), &ns, &name, Some(obj), EventType::Added);
        let out = present(rt, &stored);
        self.after_create(rt, &out)?;
        // An object whose owners are all gone is collected at once, as the collector would.
        if stored["metadata"]["ownerReferences"].is_array() {
            self.collect_garbage();
        }
        Ok(out)
    }

    /// Kind-specific defaulting and checks for built-ins.
    fn admit_kind(
        &self,
        rt: &ResourceType,
        old: Option<&Value>,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        let name = meta_str(obj, "name").to_string();
        decodes(rt, obj)?;
        let mut errs = validation::validate_metadata(obj, rt.plural == "namespaces");
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "secrets") => {
                if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                    for (k, v) in sd.as_object().into_iter().flatten() {
                        let text = v.as_str().unwrap_or_default();
                        obj["data"][k] =
                            json!(base64::engine::general_purpose::STANDARD.encode(text));
                    }
                }
                if let Some(data) = obj["data"].as_object() {
                    for (k, v) in data {
                        if v.as_str().is_none_or(|s| {
                            base64::engine::general_purpose::STANDARD.decode(s).is_err()
                        }) {
                            return Err(ApiError::bad_request(format!(
                                "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at key {k:?}"
                            )));
                        }
                    }
                }
                if obj["type"].is_null() {
                    obj["type"] = json!("Opaque");
                }
                if let Some(o) = old
                    && o["type"] != obj["type"]
                {
                    errs.push(FieldError::invalid(
                        "type",
                        &obj["type"],
                        "field is immutable",
                    ));
                }
            }
            ("", "namespaces") if old.is_none() => {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
                obj["status"] = json!({"phase": "Active"});
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            }
            ("", "pods") => {
                if old.is_none() && obj["status"].is_null() {
                    obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
                }
                if obj["spec"]["containers"]
                    .as_array()
                    .is_none_or(|c| c.is_empty())
                {
                    errs.push(FieldError::required("spec.containers", ""));
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let spec = &obj["spec"];
                let group = spec["group"].as_str().unwrap_or_default();
                let plural = spec["names"]["plural"].as_str().unwrap_or_default();
                if name != format!("{plural}.{group}") {
                    errs.push(FieldError::invalid(
                        "metadata.name",
                        &json!(name),
                        "must be spec.names.plural+\".\"+spec.group",
                    ));
                }
                if spec["versions"].as_array().is_none_or(|v| v.is_empty()) {
                    errs.push(FieldError::required(
                        "spec.versions",
                        "must have exactly one version marked as storage version",
                    ));
                }
                if spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
                    errs.push(FieldError::required("spec.names.kind", ""));
                }
            }
            _ => {}
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(&rt.group, &rt.kind, &name, &errs))
        }
    }

    /// Schema pruning, defaulting, structural validation and CEL for custom resources.
    fn admit_custom(
        &self,
        rt: &ResourceType,
        old: Option<&Value>,
        obj: &mut Value,
        strict: bool,
    ) -> Result<(), ApiError> {
        let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.as_ref()) else {
            return Ok(());
        };
        let name = meta_str(obj, "name").to_string();
        let pruned = validation::prune_and_default(schema, obj);
        let mut errs: Vec<FieldError> = Vec::new();
        if strict && !pruned.is_empty() {
            let unknown: Vec<String> = pruned
                .iter()
                .map(|p| format!("unknown field \"{p}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                unknown.join(", "),
                kind = rt.kind,
                version = rt.version
            )));
        }
        errs.extend(validation::validate_schema(schema, obj));
        if errs.is_empty() && rt.custom.as_ref().is_some_and(|c| c.has_cel) {
            errs.extend(validation::validate_cel(schema, obj, old));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(&rt.group, &rt.kind, &name, &errs))
        }
    }

    fn after_create(&mut self, rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "namespaces") => {
                let ns = meta_str(obj, "name").to_string();
                if let Some(sa_rt) = self.registry.get("", "v1", "serviceaccounts") {
                    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
                    let opts = WriteOptions {
                        field_manager: Some("kube-controller-manager".into()),
                        ..Default::default()
                    };
                    match self.create(&sa_rt, &ns, sa, &opts) {
                        Ok(_) | Err(ApiError { code: 409, .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => self.establish_crd(obj),
            _ => {}
        }
        Ok(())
    }

    /// Serves the CRD's versions and reports it Established, as the apiextensions controllers do.
    fn establish_crd(&mut self, crd: &Value) {
        let name = meta_str(crd, "name").to_string();
        self.registry.remove_crd(&name);
        for rt in resources::from_crd(crd) {
            self.registry.insert(rt);
        }
        let Some(mut stored) = self
            .raw("customresourcedefinitions.apiextensions.k8s.io", "", &name)
            .map(|o| (*o).clone())
        else {
            return;
        };
        let now = util::now_rfc3339();
        let names = stored["spec"]["names"].clone();
        let storage: Vec<Value> = stored["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["storage"].as_bool() == Some(true))
            .map(|v| v["name"].clone())
            .collect();
        let keep_time = |t: &str| -> String {
            stored["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == t)
                .and_then(|c| c["lastTransitionTime"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| now.clone())
        };
        let status = json!({
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": keep_time("NamesAccepted")},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": keep_time("Established")}
            ],
            "acceptedNames": names,
            "storedVersions": storage,
        });
        if stored["status"] == status {
            return;
        }
        stored["status"] = status;
        self.commit(
            "customresourcedefinitions.apiextensions.k8s.io",
            "",
            &name,
            Some(stored),
            EventType::Modified,
        );
    }

    /// PUT (main resource or `status`).
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        obj: Value,
        sub: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let obj = to_storage(rt, obj);
        let old = self
            .raw(&rt.storage_key(), ns, name)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        let new = self.merge_scope(rt, &old, obj, sub);
        self.finish_write(rt, &old, new, sub, opts, Tracking::Update)
    }

    /// Builds the full new object of a write to `sub` (or the main resource): the status
    /// subresource only changes status; the main resource never changes status.
    fn merge_scope(&self, rt: &ResourceType, old: &Value, new: Value, sub: Option<&str>) -> Value {
        match sub {
            Some("status") => {
                let mut merged = old.clone();
                merged["status"] = new["status"].clone();
                if merged["status"].is_null()
                    && let Some(m) = merged.as_object_mut()
                {
                    m.remove("status");
                }
                merged
            }
            _ => {
                let mut merged = new;
                if rt.status_subresource {
                    match old.get("status") {
                        Some(s) => merged["status"] = s.clone(),
                        None => {
                            if let Some(m) = merged.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                merged
            }
        }
    }

    fn finish_write(
        &mut self,
        rt: &ResourceType,
        old: &Arc<Value>,
        mut new: Value,
        sub: Option<&str>,
        opts: &WriteOptions,
        tracking: Tracking,
    ) -> Result<Value, ApiError> {
        let (ns, name) = (
            meta_str(old, "namespace").to_string(),
            meta_str(old, "name").to_string(),
        );
        new["apiVersion"] = json!(resource_api_version(rt));
        new["kind"] = json!(rt.kind);
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        // Server-owned metadata never changes through a write.
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        if old["metadata"]["deletionTimestamp"].is_string() {
            // A terminating object may only lose finalizers.
            let before = finalizers(old);
            let after = finalizers(&new);
            if after.iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    &name,
                    &[FieldError::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        self.admit_kind(rt, Some(old), &mut new)?;
        if sub.is_none() || rt.custom.is_some() {
            self.admit_custom(rt, Some(old), &mut new, opts.strict)?;
        }
        let now = util::now_rfc3339();
        if tracking == Tracking::Update {
            let scope = if sub == Some("status") {
                Scope::Status
            } else {
                Scope::Main {
                    status_separate: rt.status_subresource,
                }
            };
            let manager = default_manager(opts);
            let api_version = rt.api_version();
            let writer = fields::Writer {
                manager: &manager,
                api_version: &api_version,
                now: &now,
                schema: schema_of(rt),
            };
            fields::track_update(Some(old), &mut new, &writer, scope);
        }
        if rt.custom.is_some()
            && generation_basis(old, rt.status_subresource)
                != generation_basis(&new, rt.status_subresource)
        {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        if without_rv(&new) == without_rv(old) {
            return Ok(present(rt, old));
        }
        if opts.dry_run {
            return Ok(present(rt, &new));
        }
        if new["metadata"]["deletionTimestamp"].is_string() && finalizers(&new).is_empty() {
            let gone = self.commit(&rt.storage_key(), &ns, &name, None, EventType::Deleted);
            self.after_remove(&gone);
            return Ok(present(rt, &gone));
        }
        let stored = self.commit(
            &rt.storage_key(),
            &ns,
            &name,
            Some(new),
            EventType::Modified,
        );
        let out = present(rt, &stored);
        if rt.plural == "customresourcedefinitions" && sub.is_none() {
            self.establish_crd(&out);
        }
        if old["metadata"]["deletionTimestamp"].is_string()
            || stored["metadata"]["ownerReferences"] != old["metadata"]["ownerReferences"]
        {
            self.collect_garbage();
        }
        Ok(out)
    }

    /// PATCH in any of the four formats. Returns the object and whether apply created it.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &Value,
        sub: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let current = self.raw(&rt.storage_key(), ns, name);
        if ptype == PatchType::Strategic && rt.custom.is_some() {
            return Err(ApiError::unsupported_media_type(
                "application/strategic-merge-patch+json",
            ));
        }
        if ptype == PatchType::Apply {
            let converted = to_storage(rt, body.clone());
            let body = &converted;
            let Some(manager) = opts.field_manager.as_deref().filter(|m| !m.is_empty()) else {
                return Err(ApiError::bad_request(
                    "PATCH, application/apply-patch+yaml requests require a fieldManager",
                ));
            };
            if !body.is_object() {
                return Err(ApiError::bad_request(
                    "the body of an apply request must be an object",
                ));
            }
            let body_name = meta_str(body, "name");
            if !body_name.is_empty() && body_name != name {
                return Err(ApiError::bad_request(
                    "the name of the object in the apply request does not match the name on the URL",
                ));
            }
            let now = util::now_rfc3339();
            let scope = if sub == Some("status") {
                Scope::Status
            } else {
                Scope::Main {
                    status_separate: rt.status_subresource,
                }
            };
            let Some(current) = current else {
                if sub.is_some() {
                    return Err(ApiError::not_found(&rt.group, &rt.plural, name));
                }
                // Apply to a missing object creates it, owned by this manager.
                let mut skeleton = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": name}});
                if rt.namespaced {
                    skeleton["metadata"]["namespace"] = json!(ns);
                }
                let api_version = rt.api_version();
                let writer = fields::Writer {
                    manager,
                    api_version: &api_version,
                    now: &now,
                    schema: schema_of(rt),
                };
                let merged = fields::apply(&skeleton, body, &writer, opts.force, scope)
                    .map_err(|c| conflict_error(rt, name, &c))?;
                let entries = fields::read_entries(&merged);
                let created = self.create(
                    rt,
                    ns,
                    merged,
                    &WriteOptions {
                        field_manager: Some(manager.to_string()),
                        ..opts.clone()
                    },
                )?;
                if opts.dry_run {
                    return Ok((created, true));
                }
                // Start from what is stored now: create hooks (a CRD's Established status) may
                // have written the object again after `created` was taken.
                let stored_now = self
                    .raw(&rt.storage_key(), ns, name)
                    .map(|o| (*o).clone())
                    .unwrap_or_else(|| created.clone());
                let mut fixed = stored_now.clone();
                fields::write_entries(&mut fixed, &entries);
                if fixed != stored_now {
                    let stored = self.commit(
                        &rt.storage_key(),
                        ns,
                        name,
                        Some(fixed),
                        EventType::Modified,
                    );
                    return Ok((present(rt, &stored), true));
                }
                return Ok((created, true));
            };
            if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
                && rv != meta_str(&current, "resourceVersion")
            {
                return Err(ApiError::stale(&rt.group, &rt.plural, name));
            }
            let api_version = rt.api_version();
            let writer = fields::Writer {
                manager,
                api_version: &api_version,
                now: &now,
                schema: schema_of(rt),
            };
            let merged = fields::apply(&current, body, &writer, opts.force, scope)
                .map_err(|c| conflict_error(rt, name, &c))?;
            return self
                .finish_write(rt, &current, merged, sub, opts, Tracking::DoneByApply)
                .map(|v| (v, false));
        }
        let current = current.ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        let mut doc = present(rt, &current);
        match ptype {
            PatchType::Json => patch::json_patch(&mut doc, body)?,
            PatchType::Merge => patch::merge_patch(&mut doc, body),
            PatchType::Strategic => patch::strategic_merge(&mut doc, body),
            PatchType::Apply => {}
        }
        if !doc.is_object() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "the patch did not produce an object",
            ));
        }
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
            && rv != meta_str(&current, "resourceVersion")
        {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        let new = self.merge_scope(rt, &current, to_storage(rt, doc), sub);
        self.finish_write(rt, &current, new, sub, opts, Tracking::Update)
            .map(|v| (v, false))
    }

    /// DELETE: removes the object now, or marks it terminating while finalizers remain.
    /// Returns the object and whether it is gone.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let current = self
            .raw(&rt.storage_key(), ns, name)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if rt.group.is_empty()
            && rt.plural == "namespaces"
            && matches!(name, "default" | "kube-system" | "kube-public")
        {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ))
            .with_details(json!({"name": name, "kind": "namespaces"})));
        }
        if let Some(uid) = &opts.precondition_uid
            && uid != meta_str(&current, "uid")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&current, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && rv != meta_str(&current, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&current, "resourceVersion")
                ),
            ));
        }
        let mut fin = finalizers(&current);
        match opts.propagation.as_deref() {
            Some("Foreground") if !fin.iter().any(|f| f == "foregroundDeletion") => {
                fin.push("foregroundDeletion".into())
            }
            Some("Orphan") if !fin.iter().any(|f| f == "orphan") => fin.push("orphan".into()),
            Some("Foreground" | "Orphan" | "Background") | None => {}
            Some(other) => {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "DeleteOptions",
                    "",
                    &[FieldError::not_supported(
                        "propagationPolicy",
                        &json!(other),
                        &[json!("Foreground"), json!("Background"), json!("Orphan")],
                    )],
                ));
            }
        }
        if rt.plural == "namespaces" && rt.group.is_empty() {
            fin.push("kubernetes".into());
        }
        if rt.plural == "customresourcedefinitions" && !fin.iter().any(|f| f == CRD_CLEANUP) {
            fin.push(CRD_CLEANUP.into());
        }
        if opts.dry_run {
            return Ok((present(rt, &current), fin.is_empty()));
        }
        if current["metadata"]["deletionTimestamp"].is_string() {
            return Ok((present(rt, &current), false));
        }
        if fin.is_empty() {
            let gone = self.commit(&rt.storage_key(), ns, name, None, EventType::Deleted);
            self.after_remove(&gone);
            return Ok((present(rt, &gone), true));
        }
        let mut marked = (*current).clone();
        marked["metadata"]["deletionTimestamp"] = json!(util::now_rfc3339());
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if rt.custom.is_some() {
            let g = current["metadata"]["generation"].as_i64().unwrap_or(1);
            marked["metadata"]["generation"] = json!(g + 1);
        }
        if rt.plural == "namespaces" && rt.group.is_empty() {
            marked["status"]["phase"] = json!("Terminating");
            fin.retain(|f| f != "kubernetes");
        }
        if fin.is_empty() {
            if let Some(m) = marked["metadata"].as_object_mut() {
                m.remove("finalizers");
            }
        } else {
            marked["metadata"]["finalizers"] = json!(fin);
        }
        let stored = self.commit(
            &rt.storage_key(),
            ns,
            name,
            Some(marked),
            EventType::Modified,
        );
        self.collect_garbage();
        let still = self.raw(&rt.storage_key(), ns, name);
        Ok((
            present(rt, still.as_deref().unwrap_or(&stored)),
            still.is_none(),
        ))
    }

    /// DELETE on a collection: deletes every matching object, returns them.
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        filter: &Filter,
        opts: &DeleteOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let items = self.list(rt, filter, None, None)?.items;
        let mut out = Vec::new();
        for item in items {
            match self.delete(
                rt,
                meta_str(&item, "namespace"),
                meta_str(&item, "name"),
                opts,
            ) {
                Ok((v, _)) => out.push(v),
                Err(ApiError { code: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn after_remove(&mut self, gone: &Value) {
        if gone["kind"] == "CustomResourceDefinition" {
            self.registry.remove_crd(meta_str(gone, "name"));
        }
        self.collect_garbage();
    }

    /// Marks an object for deletion the way the garbage collector or namespace controller does.
    fn delete_key(&mut self, key: &str, ns: &str, name: &str, propagation: Option<&str>) {
        let Some(rt) = self
            .registry
            .by_storage_key(key)
            .or_else(|| self.registry.all().find(|r| r.storage_key() == key))
        else {
            // Kind no longer served (its CRD is gone): drop the object.
            let gone = self.commit(key, ns, name, None, EventType::Deleted);
            self.after_remove(&gone);
            return;
        };
        let opts = DeleteOptions {
            propagation: propagation.map(str::to_string),
            ..Default::default()
        };
        let _ = self.delete(&rt, ns, name, &opts);
    }

    fn all_objects(&self) -> Vec<(String, Arc<Value>)> {
        self.objects
            .iter()
            .flat_map(|(k, b)| b.values().map(move |o| (k.clone(), o.clone())))
            .collect()
    }

    /// The garbage collector, namespace controller and CRD finalizer, run to a fixed point.
    pub fn collect_garbage(&mut self) {
        for _round in 0..64 {
            let mut changed = false;
            for (key, obj) in self.all_objects() {
                // The object may have gone earlier in this round.
                let Some(obj) = self.raw(&key, meta_str(&obj, "namespace"), meta_str(&obj, "name"))
                else {
                    continue;
                };
                let (ns, name) = (
                    meta_str(&obj, "namespace").to_string(),
                    meta_str(&obj, "name").to_string(),
                );
                let uid = meta_str(&obj, "uid").to_string();
                let terminating = obj["metadata"]["deletionTimestamp"].is_string();
                let fin = finalizers(&obj);
                if terminating && fin.iter().any(|f| f == "orphan") {
                    for (dk, dep) in self.dependents(&uid) {
                        let mut d = (*dep).clone();
                        if let Some(refs) = d["metadata"]["ownerReferences"].as_array_mut() {
                            refs.retain(|r| r["uid"].as_str() != Some(&uid));
                        }
                        self.commit(
                            &dk,
                            meta_str(&dep, "namespace"),
                            meta_str(&dep, "name"),
                            Some(d),
                            EventType::Modified,
                        );
                    }
                    self.drop_finalizer(&key, &obj, "orphan");
                    changed = true;
                    continue;
                }
                if terminating && fin.iter().any(|f| f == "foregroundDeletion") {
                    let deps = self.dependents(&uid);
                    for (dk, dep) in &deps {
                        if !dep["metadata"]["deletionTimestamp"].is_string() {
                            self.delete_key(
                                dk,
                                meta_str(dep, "namespace"),
                                meta_str(dep, "name"),
                                Some("Foreground"),
                            );
                            changed = true;
                        }
                    }
                    let blocking = self.dependents(&uid).iter().any(|(_, d)| {
                        d["metadata"]["ownerReferences"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|r| {
                                r["uid"].as_str() == Some(&uid)
                                    && r["blockOwnerDeletion"].as_bool() == Some(true)
                            })
                    });
                    if !blocking {
                        self.drop_finalizer(&key, &obj, "foregroundDeletion");
                        changed = true;
                    }
                    continue;
                }
                if key == "namespaces" && terminating {
                    let contents: Vec<(String, Arc<Value>)> = self
                        .all_objects()
                        .into_iter()
                        .filter(|(_, o)| meta_str(o, "namespace") == name)
                        .collect();
                    for (ck, c) in &contents {
                        if !c["metadata"]["deletionTimestamp"].is_string() {
                            self.delete_key(ck, &name, meta_str(c, "name"), None);
                            changed = true;
                        }
                    }
                    if contents.is_empty()
                        || self
                            .all_objects()
                            .iter()
                            .all(|(_, o)| meta_str(o, "namespace") != name)
                    {
                        let gone = self.commit("namespaces", "", &name, None, EventType::Deleted);
                        self.after_remove(&gone);
                        changed = true;
                    }
                    continue;
                }
                if key == "customresourcedefinitions.apiextensions.k8s.io" && terminating {
                    let served_key = crate::error::qualified(
                        obj["spec"]["group"].as_str().unwrap_or_default(),
                        obj["spec"]["names"]["plural"].as_str().unwrap_or_default(),
                    );
                    let instances: Vec<(String, Arc<Value>)> = self
                        .all_objects()
                        .into_iter()
                        .filter(|(k, _)| *k == served_key)
                        .collect();
                    for (ik, i) in &instances {
                        if !i["metadata"]["deletionTimestamp"].is_string() {
                            self.delete_key(
                                ik,
                                meta_str(i, "namespace"),
                                meta_str(i, "name"),
                                None,
                            );
                            changed = true;
                        }
                    }
                    if self.objects.get(&served_key).is_none_or(BTreeMap::is_empty) {
                        self.drop_finalizer(&key, &obj, CRD_CLEANUP);
                        changed = true;
                    }
                    continue;
                }
                let refs: Vec<String> = obj["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["uid"].as_str().map(str::to_string))
                    .collect();
                if refs.is_empty() {
                    continue;
                }
                let live: Vec<&String> =
                    refs.iter().filter(|u| self.uids.contains_key(*u)).collect();
                if live.is_empty() {
                    if !terminating {
                        self.delete_key(&key, &ns, &name, None);
                        changed = true;
                    }
                } else if live.len() < refs.len() {
                    let mut d = (*obj).clone();
                    if let Some(list) = d["metadata"]["ownerReferences"].as_array_mut() {
                        list.retain(|r| {
                            r["uid"].as_str().is_some_and(|u| self.uids.contains_key(u))
                        });
                    }
                    self.commit(&key, &ns, &name, Some(d), EventType::Modified);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn dependents(&self, owner_uid: &str) -> Vec<(String, Arc<Value>)> {
        self.all_objects()
            .into_iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["uid"].as_str() == Some(owner_uid))
            })
            .collect()
    }

    fn drop_finalizer(&mut self, key: &str, obj: &Value, finalizer: &str) {
        let (ns, name) = (
            meta_str(obj, "namespace").to_string(),
            meta_str(obj, "name").to_string(),
        );
        let mut o = obj.clone();
        let fin: Vec<String> = finalizers(obj)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        if fin.is_empty() {
            if let Some(m) = o["metadata"].as_object_mut() {
                m.remove("finalizers");
            }
            if o["metadata"]["deletionTimestamp"].is_string() {
                let gone = self.commit(key, &ns, &name, None, EventType::Deleted);
                self.after_remove(&gone);
                return;
            }
        } else {
            o["metadata"]["finalizers"] = json!(fin);
        }
        self.commit(key, &ns, &name, Some(o), EventType::Modified);
    }

    /// Every stored object of a storage key (for controllers).
    pub fn objects_of(&self, key: &str) -> Vec<Arc<Value>> {
        self.bucket(key)
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// The type checks the API server's JSON decoding makes before anything else (400 when a field
/// has the wrong JSON type): string maps in metadata, Secret data, object-valued spec/status.
fn decodes(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let string_map = |v: &Value| {
        v.is_null()
            || v.as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
    };
    let object = |v: &Value| v.is_null() || v.is_object();
    let bad = |field: &str| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: json: cannot unmarshal {field}",
            rt.kind, rt.version, rt.kind
        ))
    };
    let meta = &obj["metadata"];
    for field in ["labels", "annotations"] {
        if !string_map(&meta[field]) {
            return Err(bad(&format!("metadata.{field} (must be a map of strings)")));
        }
    }
    if rt.custom.is_none() {
        if !object(&obj["spec"]) || !object(&obj["status"]) {
            return Err(bad("spec/status (must be objects)"));
        }
        if matches!(rt.plural.as_str(), "secrets" | "configmaps")
            && !(string_map(&obj["data"])
                && string_map(&obj["stringData"])
                && string_map(&obj["binaryData"]))
        {
            return Err(bad("data (must be a map of strings)"));
        }
    }
    Ok(())
}

/// The structural schema managedFields follow (list-maps merge by key); built-ins have none here.
fn schema_of(rt: &ResourceType) -> Option<&Value> {
    rt.custom.as_ref().and_then(|c| c.schema.as_ref())
}

fn resource_api_version(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.storage_version.clone()
    } else {
        format!("{}/{}", rt.group, rt.storage_version)
    }
}

fn conflict_error(rt: &ResourceType, name: &str, conflicts: &[fields::Conflict]) -> ApiError {
    let n = conflicts.len();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\": {}",
                c.manager,
                fields::dotted(&c.path)
            )
        })
        .collect();
    let message = if n == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": fields::dotted(&c.path)}))
        .collect();
    let mut details = json!({"name": name, "kind": rt.plural, "causes": causes});
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    ApiError::new(409, "Conflict", message).with_details(details)
}
