//! Which accesses name a given object: the InferenceService they reach (in any namespace), the
//! namespace whose consent they need, the Dex Secret they log in with, the credential Secret
//! they write. Kept up to date from the access watch, so an event on such an object finds its
//! accesses by lookup, never by a scan of every access.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::api::{AccessMeta, InferenceAccess};
use crate::core::packed_name;

type Key = (String, String);
/// What an access refers to, as `(namespace, name)`.
type Reference = Box<dyn Fn(&InferenceAccess) -> Option<Key> + Send + Sync>;

/// Accesses by the object they refer to: by name in their own namespace ([`Self::new`]), or by
/// namespace and name anywhere ([`Self::across`]).
pub struct ReferenceIndex {
    reference: Reference,
    inner: Mutex<Inner>,
}

/// `namespace/name` ([`packed_name`]): a pair of Strings and a set per entry took about 1 KiB
/// each.
type Packed = Arc<str>;

fn pack(namespace: &str, name: &str) -> Packed {
    packed_name(namespace, name)
}

#[derive(Default)]
struct Inner {
    /// Referenced object → the accesses that refer to it, sorted (most often one).
    by_reference: HashMap<Packed, Vec<Packed>>,
    /// Access → the object it refers to.
    of_access: HashMap<Packed, Packed>,
}

impl ReferenceIndex {
    /// An object in the access's namespace, by name.
    pub fn new(reference: fn(&InferenceAccess) -> Option<String>) -> Self {
        Self::across_with(Box::new(move |access| {
            reference(access).map(|name| (access.namespace().unwrap_or_default(), name))
        }))
    }

    /// An object in any namespace: `(namespace, name)`.
    pub fn across(reference: fn(&InferenceAccess) -> Option<Key>) -> Self {
        Self::across_with(Box::new(reference))
    }

    fn across_with(reference: Reference) -> Self {
        Self {
            reference,
            inner: Mutex::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the access watch.
    pub fn observe(&self, event: &watcher::Event<InferenceAccess>) {
        match event {
            watcher::Event::Apply(access) | watcher::Event::InitApply(access) => {
                let referenced = (self.reference)(access);
                self.set(access, referenced);
            }
            watcher::Event::Delete(access) => self.set(access, None),
            // A relist: what was there before is replayed as InitApply.
            watcher::Event::Init => *self.inner() = Inner::default(),
            watcher::Event::InitDone => self.inner().shrink(),
        }
    }

    fn set(&self, access: &InferenceAccess, referenced: Option<Key>) {
        let access_key = pack(&access.namespace().unwrap_or_default(), &access.name_any());
        let referenced = referenced.map(|(namespace, name)| pack(&namespace, &name));
        let mut inner = self.inner();
        if inner.of_access.get(&access_key) == referenced.as_ref() {
            return;
        }
        if let Some(old) = inner.of_access.remove(&access_key)
            && let Some(accesses) = inner.by_reference.get_mut(&old)
        {
            accesses.retain(|a| *a != access_key);
            if accesses.is_empty() {
                inner.by_reference.remove(&old);
            }
        }
        if let Some(referenced) = referenced {
            let accesses = inner.by_reference.entry(referenced.clone()).or_default();
            if let Err(at) = accesses.binary_search(&access_key) {
                accesses.insert(at, access_key.clone());
                accesses.shrink_to_fit();
            }
            inner.of_access.insert(access_key, referenced);
        }
    }

    /// The accesses that refer to `object`.
    pub fn accesses_of<K: Resource>(&self, object: &K) -> Vec<ObjectRef<AccessMeta>> {
        let meta = object.meta();
        self.accesses_named(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    /// The accesses that refer to the object `name` in `namespace`.
    pub fn accesses_named(&self, namespace: &str, name: &str) -> Vec<ObjectRef<AccessMeta>> {
        self.inner()
            .by_reference
            .get(&*pack(namespace, name))
            .into_iter()
            .flatten()
            .filter_map(|access| access.split_once('/'))
            .map(|(namespace, name)| ObjectRef::new(name).within(namespace))
            .collect()
    }
}

impl Inner {
    /// After a relist: the tables sized for what is there.
    fn shrink(&mut self) {
        self.by_reference.shrink_to_fit();
        self.of_access.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InferenceService;
    use crate::fixtures::{access, inference_service};
    use serde_json::json;

    fn model(access: &InferenceAccess) -> Option<String> {
        Some(access.spec.inference_service.name.clone())
    }

    #[test]
    fn follows_creation_changes_and_deletion() {
        let index = ReferenceIndex::new(model);
        let a = access(json!({"inferenceService": {"name": "sklearn-iris"}}))
            .name("a")
            .namespace("kubeflow-user-example-com")
            .build();
        let b = access(json!({"inferenceService": {"name": "sklearn-iris"}}))
            .name("b")
            .namespace("kubeflow-user-example-com")
            .build();
        index.observe(&watcher::Event::Apply(a.clone()));
        index.observe(&watcher::Event::Apply(b.clone()));
        let isvc: InferenceService = inference_service("sklearn-iris", None);
        let names = |index: &ReferenceIndex| -> Vec<String> {
            index
                .accesses_of(&isvc)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names(&index), ["a", "b"]);
        // b now reaches another model.
        let mut moved = b.clone();
        moved.spec.inference_service.name = "other".into();
        index.observe(&watcher::Event::Apply(moved));
        assert_eq!(names(&index), ["a"]);
        index.observe(&watcher::Event::Delete(a));
        assert!(names(&index).is_empty());
        // Another namespace's model of the same name is another object.
        index.observe(&watcher::Event::Apply(b.clone()));
        let mut elsewhere = isvc.clone();
        elsewhere.metadata.namespace = Some("team-b".into());
        assert!(index.accesses_of(&elsewhere).is_empty());
    }

    #[test]
    fn an_access_is_found_from_the_namespace_it_refers_to() {
        let index = ReferenceIndex::across(|a| {
            let target = &a.spec.inference_service;
            Some((target.namespace.clone()?, target.name.clone()))
        });
        let b = access(json!({"inferenceService": {"name": "m", "namespace": "team-a"}}))
            .name("client")
            .namespace("team-b")
            .build();
        let local = access(json!({"inferenceService": {"name": "m"}}))
            .name("local")
            .namespace("team-b")
            .build();
        index.observe(&watcher::Event::Apply(b.clone()));
        index.observe(&watcher::Event::Apply(local));
        let found = index.accesses_named("team-a", "m");
        assert_eq!(found, [ObjectRef::new("client").within("team-b")]);
        assert!(index.accesses_named("team-b", "m").is_empty());
        index.observe(&watcher::Event::Delete(b));
        assert!(index.accesses_named("team-a", "m").is_empty());
    }
}
