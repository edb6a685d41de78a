//! A watch cache that keeps each object as its JSON bytes and decodes it when read.
//!
//! A typed Kubernetes object takes several times its JSON size in memory: every string and
//! every map (a B-tree node of hundreds of bytes even for one label) is an allocation of its
//! own. The operator keeps one InferenceService, ServiceAccount, policy and Secret's metadata
//! per access and reads each a few times per reconcile, so it keeps the bytes and pays a
//! decode per read instead.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use kube::Resource;
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::error;

use crate::core::packed_name;

/// One object: its resourceVersion (to compare with the operator's writes without decoding)
/// and its JSON, LZ4-compressed against its kind's dictionary.
#[derive(Clone)]
pub struct Entry {
    pub version: Option<u64>,
    /// The JSON's length, then its LZ4 block.
    packed: Arc<[u8]>,
    dictionary: Arc<[u8]>,
}

impl Entry {
    #[cfg(test)]
    pub fn packed_len(&self) -> usize {
        self.packed.len()
    }

    pub fn decode<K: DeserializeOwned>(&self) -> Option<K> {
        UNPACKED.with_borrow_mut(|json| {
            let (size, block) = self.packed.split_at_checked(4)?;
            let size = u32::from_le_bytes(size.try_into().ok()?) as usize;
            json.clear();
            json.resize(size, 0);
            if let Err(err) =
                lz4_flex::block::decompress_into_with_dict(block, json, &self.dictionary)
            {
                // Bytes this module packed: a bug, not bad input.
                error!(error = %err, "cannot unpack a cached object");
                return None;
            }
            match serde_json::from_slice(json) {
                Ok(object) => Some(object),
                Err(err) => {
                    // Bytes this module encoded from the same type: a bug, not bad input.
                    error!(error = %err, "cannot decode a cached object");
                    None
                }
            }
        })
    }
}

thread_local! {
    /// Each thread unpacks into one buffer: a fresh one per read, thousands a second, left
    /// the heap in pieces between the objects that stay.
    static UNPACKED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

type Objects = HashMap<Box<str>, Entry>;

/// The objects, shared between the cache that reads them and the writer the watch feeds.
pub struct Shelf<K> {
    objects: Arc<Mutex<Objects>>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Shelf<K> {
    fn clone(&self) -> Self {
        Self {
            objects: self.objects.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> Shelf<K> {
    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Entry> {
        self.objects()
            .get(&*packed_name::<Box<str>>(namespace, name))
            .cloned()
    }

    /// Every object (their bytes shared, not copied), to decode one at a time.
    pub fn entries(&self) -> Vec<Entry> {
        self.objects().values().cloned().collect()
    }
}

/// Applies a watch's events to a [`Shelf`], as a reflector's writer does to its store: a
/// (re)list is gathered aside and replaces the objects when it is complete.
pub struct Writer<K> {
    shelf: Shelf<K>,
    /// The JSON of an object of its kind: what the others repeat of it is packed as references
    /// to it. A fuller one (a quarter larger) replaces it for the objects packed from then on:
    /// the first access seen is often one just created, without the status every other
    /// carries. Each entry keeps the dictionary it was packed with; growing by a quarter up to
    /// the limit, there are never more than about twenty.
    dictionary: Option<Arc<[u8]>>,
    json: Vec<u8>,
    packed: Vec<u8>,
    listing: Option<Objects>,
    /// Whether a list has completed: the first one fills an empty shelf.
    filled: bool,
}

/// An object larger than this is not a dictionary: most of it would be its own content.
const DICTIONARY_LIMIT: usize = 8 * 1024;

impl<K: Resource<DynamicType = ()> + Serialize> Writer<K> {
    /// Packs `object` through the writer's two buffers, so that the only allocation that
    /// outlives the call is the packed bytes, of their exact size: building and dropping
    /// growing vectors for each of 10,000 objects left the heap in pieces.
    fn pack(&mut self, object: &K) -> Option<Entry> {
        let Self { json, packed, .. } = self;
        json.clear();
        if let Err(err) = serde_json::to_writer(&mut *json, object) {
            error!(kind = %K::kind(&()), error = %err, "cannot encode a watched object");
            return None;
        }
        let current = self.dictionary.as_ref().map_or(0, |d| d.len());
        if json.len() >= current + current / 4 && json.len() <= DICTIONARY_LIMIT {
            self.dictionary = Some(json.as_slice().into());
        }
        let dictionary = self.dictionary.clone().unwrap_or_else(|| Arc::from([]));
        let size = u32::try_from(json.len()).ok()?;
        packed.clear();
        packed.extend_from_slice(&size.to_le_bytes());
        packed.resize(4 + lz4_flex::block::get_maximum_output_size(json.len()), 0);
        let written =
            match lz4_flex::block::compress_into_with_dict(json, &mut packed[4..], &dictionary) {
                Ok(written) => written,
                Err(err) => {
                    error!(kind = %K::kind(&()), error = %err, "cannot pack a watched object");
                    return None;
                }
            };
        Some(Entry {
            version: super::version(object),
            packed: Arc::from(&packed[..4 + written]),
            dictionary,
        })
    }

    /// Applies one event. A completed relist returns what it changed: the objects that are new
    /// or at another resourceVersion, and those it no longer holds (as they were). The first
    /// list returns nothing: every access is reconciled after its own first list, and no
    /// reconcile runs before every cache holds its first list, so triggering each access again
    /// for each of its objects would only decode every object once more while the operator
    /// starts.
    pub fn apply_watcher_event(&mut self, event: &watcher::Event<K>) -> Vec<Entry> {
        match event {
            watcher::Event::Apply(object) => {
                if let Some(entry) = self.pack(object) {
                    self.shelf
                        .objects()
                        .insert(super::packed_key(object), entry);
                }
            }
            watcher::Event::Delete(object) => {
                self.shelf.objects().remove(&super::packed_key(object));
            }
            watcher::Event::Init => self.listing = Some(Objects::new()),
            watcher::Event::InitApply(object) => {
                if let Some(entry) = self.pack(object) {
                    self.listing
                        .get_or_insert_default()
                        .insert(super::packed_key(object), entry);
                }
            }
            watcher::Event::InitDone => {
                let mut listed = self.listing.take().unwrap_or_default();
                listed.shrink_to_fit();
                let mut objects = self.shelf.objects();
                let before = std::mem::replace(&mut *objects, listed);
                if !std::mem::replace(&mut self.filled, true) {
                    return Vec::new();
                }
                let mut changed: Vec<Entry> = objects
                    .iter()
                    .filter(|(key, entry)| {
                        before
                            .get(*key)
                            .is_none_or(|was| was.version.is_none() || was.version != entry.version)
                    })
                    .map(|(_, entry)| entry.clone())
                    .collect();
                changed.extend(
                    before
                        .into_iter()
                        .filter(|(key, _)| !objects.contains_key(key))
                        .map(|(_, entry)| entry),
                );
                return changed;
            }
        }
        Vec::new()
    }
}

/// An empty shelf and the writer that fills it.
pub fn shelf<K>() -> (Shelf<K>, Writer<K>) {
    let shelf = Shelf {
        objects: Arc::default(),
        kind: PhantomData,
    };
    let writer = Writer {
        shelf: shelf.clone(),
        dictionary: None,
        json: Vec::new(),
        packed: Vec::new(),
        listing: None,
        filled: false,
    };
    (shelf, writer)
}
