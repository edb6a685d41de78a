//! The watches that keep the caches: each applies its events to its cache, then yields what
//! the controller's triggers map to accesses.

use std::marker::PhantomData;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tracing::warn;

use crate::api::workload::Workload;
use crate::api::{AccessMeta, InferenceAccess};
use crate::reconcile::Context;
use crate::reconcile::cache::{Cache, Cached, Caches, encoded};
use crate::runtime::index::ReferenceIndex;

/// A watch of `K` that keeps `cache` (through `writer`) and yields the objects it changed, for
/// the controller's triggers: each changed one, and after a relist what the relist changed.
pub fn cached<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    mut writer: encoded::Writer<K>,
    ctx: Arc<Context>,
    cache: fn(&Caches) -> &Cache<K>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Cached + std::fmt::Debug + Send + Sync + 'static,
{
    events
        .default_backoff()
        .modify(K::trim)
        .flat_map(move |event| {
            let changed: Vec<Result<K, watcher::Error>> = match event {
                Ok(event) => {
                    let relisted = writer.apply_watcher_event(&event);
                    cache(&ctx.caches).observe(&event);
                    match event {
                        watcher::Event::Apply(object) | watcher::Event::Delete(object) => {
                            vec![Ok(object)]
                        }
                        _ => relisted
                            .iter()
                            .filter_map(encoded::Entry::decode)
                            .map(Ok)
                            .collect(),
                    }
                }
                Err(err) => vec![Err(err)],
            };
            futures::stream::iter(changed)
        })
}

/// A watch of every workload of kind `W` (their pod specs say which Secrets they read, which no
/// label can select) that keeps its cache and the Secret-readers index, and yields the accesses
/// whose Secret a changed workload read before or reads now. After a (re)list, those of every
/// listed workload, once the cache holds the list.
pub fn workload_triggers<W>(
    events: impl Stream<Item = Result<watcher::Event<W>, watcher::Error>> + Send + 'static,
    mut writer: encoded::Writer<W>,
    ctx: Arc<Context>,
    credentials: Arc<ReferenceIndex>,
) -> impl Stream<Item = ObjectRef<AccessMeta>> + Send + 'static
where
    W: Workload + Cached + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned,
{
    let mut listed: Vec<ObjectRef<AccessMeta>> = Vec::new();
    events
        .default_backoff()
        .modify(W::trim)
        .flat_map(move |event| {
            let event = match event {
                Ok(event) => {
                    writer.apply_watcher_event(&event);
                    event
                }
                Err(err) => {
                    warn!(kind = W::KIND.as_str(), error = %err, "workload watch");
                    return futures::stream::iter(Vec::new());
                }
            };
            W::cache(&ctx.caches).observe(&event);
            let touched = ctx.caches.readers.observe(&event);
            let accesses = |object: &W| -> Vec<ObjectRef<AccessMeta>> {
                let namespace = object.meta().namespace.clone().unwrap_or_default();
                touched
                    .iter()
                    .flat_map(|secret| credentials.accesses_named(&namespace, secret))
                    .collect()
            };
            let ready = match &event {
                watcher::Event::Apply(object) | watcher::Event::Delete(object) => accesses(object),
                watcher::Event::InitApply(object) => {
                    listed.extend(accesses(object));
                    Vec::new()
                }
                watcher::Event::Init => {
                    listed.clear();
                    Vec::new()
                }
                watcher::Event::InitDone => std::mem::take(&mut listed),
            };
            futures::stream::iter(ready)
        })
}

/// What the controller keeps of an access: its name, namespace and uid (the reconcile reads
/// the access from the access cache, and only if the uid matches) and what its predicates
/// compare (generation, annotations). No resourceVersion: every reference to it would copy it.
pub fn access_meta(event: watcher::Event<InferenceAccess>) -> watcher::Event<AccessMeta> {
    let meta = |access: InferenceAccess| {
        let full = access.metadata;
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: full.name,
                namespace: full.namespace,
                uid: full.uid,
                generation: full.generation,
                annotations: full.annotations,
                ..ObjectMeta::default()
            },
            _phantom: PhantomData,
        }
    };
    match event {
        watcher::Event::Apply(access) => watcher::Event::Apply(meta(access)),
        watcher::Event::Delete(access) => watcher::Event::Delete(meta(access)),
        watcher::Event::InitApply(access) => watcher::Event::InitApply(meta(access)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// The accesses to reconcile for: each one changed, and after a (re)list every access, once the
/// store holds the list. (A list's accesses are not in the store until it is complete: a
/// reconcile triggered by one of them earlier could read the state before the list.)
pub fn changed(
    events: impl Stream<Item = Result<watcher::Event<AccessMeta>, watcher::Error>> + Send + 'static,
    accesses: Store<AccessMeta>,
) -> impl Stream<Item = Result<AccessMeta, watcher::Error>> + Send + 'static {
    events.flat_map(move |event| {
        let changed: Vec<Result<Arc<AccessMeta>, watcher::Error>> = match event {
            Ok(watcher::Event::Apply(access) | watcher::Event::Delete(access)) => {
                vec![Ok(Arc::new(access))]
            }
            // The store's own, each copied only when the controller takes it.
            Ok(watcher::Event::InitDone) => accesses.state().into_iter().map(Ok).collect(),
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Vec::new(),
            Err(err) => vec![Err(err)],
        };
        futures::stream::iter(changed).map(|access| access.map(Arc::unwrap_or_clone))
    })
}
