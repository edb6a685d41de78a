//! A watch cache that keeps each object as its JSON bytes and decodes it when read.
//!
//! A typed Kubernetes object takes several times its JSON size in memory: every string and
//! every map (a B-tree node of hundreds of bytes even for one label) is an allocation of its
//! own. The operator keeps one InferenceService, ServiceAccount, policy and Secret's metadata
//! per access and reads each a few times per reconcile, so it keeps the bytes and pays a
//! decode per read instead.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as Slot;
use kube::Resource;
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::error;

/// The bytes before an object's key: its resourceVersion (u64) and its JSON's length (u32).
const HEADER: usize = 12;
/// Stands for a resourceVersion that is not a number: an etcd revision is an int64, so no real
/// one is this.
const NO_VERSION: u64 = u64::MAX;

/// One object as a shelf keeps it: key, resourceVersion and packed JSON in one allocation, and
/// which of the shelf's dictionaries it was packed against. At 10,000 objects a kind, separate
/// keys and a slot of 64 bytes took about a megabyte more per kind than this slot of 24.
struct Stored {
    /// `[resourceVersion: u64 LE][JSON length: u32 LE][namespace/name][LZ4 block]`
    bytes: Arc<[u8]>,
    key_len: u16,
    dictionary: u16,
}

impl Stored {
    fn key(&self) -> &[u8] {
        &self.bytes[HEADER..HEADER + usize::from(self.key_len)]
    }

    fn version(&self) -> Option<u64> {
        version_of(&self.bytes)
    }
}

fn version_of(bytes: &[u8]) -> Option<u64> {
    let version = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    (version != NO_VERSION).then_some(version)
}

/// A key's hash from its two parts, so a lookup needs no `namespace/name` string built.
fn hash_key(hasher: &RandomState, namespace: &[u8], name: &[u8]) -> u64 {
    let mut state = hasher.build_hasher();
    state.write(namespace);
    state.write_u8(b'/');
    state.write(name);
    state.finish()
}

/// An object's namespace and name, its key's two parts.
fn names<K: Resource>(object: &K) -> (&str, &str) {
    let meta = object.meta();
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn key_is(key: &[u8], namespace: &str, name: &str) -> bool {
    key.len() == namespace.len() + 1 + name.len()
        && key.starts_with(namespace.as_bytes())
        && key.get(namespace.len()) == Some(&b'/')
        && key.ends_with(name.as_bytes())
}

fn hash_stored(hasher: &RandomState, stored: &Stored) -> u64 {
    // A namespace holds no '/': the first one ends it.
    let key = stored.key();
    let split = key.iter().position(|b| *b == b'/').unwrap_or(key.len());
    let (namespace, name) = key.split_at(split);
    hash_key(hasher, namespace, name.get(1..).unwrap_or_default())
}

/// The object in `table` with `stored`'s key.
fn same_key<'a>(
    table: &'a HashTable<Stored>,
    hasher: &RandomState,
    stored: &Stored,
) -> Option<&'a Stored> {
    let hash = hash_stored(hasher, stored);
    table.find(hash, |other| other.key() == stored.key())
}

fn insert(table: &mut HashTable<Stored>, hasher: &RandomState, stored: Stored) {
    let hash = hash_stored(hasher, &stored);
    match table.entry(
        hash,
        |other| other.key() == stored.key(),
        |other| hash_stored(hasher, other),
    ) {
        Slot::Occupied(mut slot) => *slot.get_mut() = stored,
        Slot::Vacant(slot) => {
            slot.insert(stored);
        }
    }
}

/// An object read from a shelf: its bytes and its dictionary shared, not copied.
#[derive(Clone)]
pub struct Entry {
    bytes: Arc<[u8]>,
    key_len: u16,
    dictionary: Arc<[u8]>,
}

impl Entry {
    /// The object's resourceVersion, when it is a number.
    pub fn version(&self) -> Option<u64> {
        version_of(&self.bytes)
    }

    #[cfg(test)]
    pub fn packed_len(&self) -> usize {
        self.bytes.len() - HEADER - usize::from(self.key_len)
    }

    pub fn decode<K: DeserializeOwned>(&self) -> Option<K> {
        UNPACKED.with_borrow_mut(|json| {
            let size = self.bytes.get(8..HEADER)?;
            let size = u32::from_le_bytes(size.try_into().ok()?) as usize;
            let block = self.bytes.get(HEADER + usize::from(self.key_len)..)?;
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

struct Objects {
    table: HashTable<Stored>,
    /// Every dictionary the kind's objects were packed against, in the order chosen (an
    /// object names its own by index). Each is at least an eighth larger than the one before
    /// and at most [`DICTIONARY_LIMIT`], so together they never exceed nine times that.
    dictionaries: Vec<Arc<[u8]>>,
    hasher: RandomState,
}

impl Objects {
    fn entry(&self, stored: &Stored) -> Entry {
        let dictionary = self.dictionaries.get(usize::from(stored.dictionary));
        Entry {
            bytes: stored.bytes.clone(),
            key_len: stored.key_len,
            dictionary: dictionary.cloned().unwrap_or_else(|| Arc::from([])),
        }
    }
}

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
        let objects = self.objects();
        let hash = hash_key(&objects.hasher, namespace.as_bytes(), name.as_bytes());
        let found = objects
            .table
            .find(hash, |stored| key_is(stored.key(), namespace, name))?;
        Some(objects.entry(found))
    }

    /// Every object, to decode one at a time.
    pub fn entries(&self) -> Vec<Entry> {
        let objects = self.objects();
        objects.table.iter().map(|s| objects.entry(s)).collect()
    }
}

/// Applies a watch's events to a [`Shelf`], as a reflector's writer does to its store: a
/// (re)list is gathered aside and replaces the objects when it is complete.
pub struct Writer<K> {
    shelf: Shelf<K>,
    hasher: RandomState,
    /// The JSON of an object of its kind, and its index on the shelf: what the others repeat
    /// of it is packed as references to it. A fuller one (an eighth larger) replaces it for the
    /// objects packed from then on: the first access seen is often one just created, and the
    /// next fuller one waits for KServe's URL; one that is Ready repeats a Ready one best.
    dictionary: Option<(u16, Arc<[u8]>)>,
    json: Vec<u8>,
    packed: Vec<u8>,
    listing: Option<HashTable<Stored>>,
    /// Whether a list has completed: the first one fills an empty shelf.
    filled: bool,
}

/// An object larger than this is not a dictionary: most of it would be its own content.
const DICTIONARY_LIMIT: usize = 8 * 1024;

impl<K: Resource<DynamicType = ()> + Serialize> Writer<K> {
    /// Packs `object` through the writer's two buffers, so that the only allocation that
    /// outlives the call is the stored bytes, of their exact size: building and dropping
    /// growing vectors for each of 10,000 objects left the heap in pieces.
    fn pack(&mut self, object: &K) -> Option<Stored> {
        let Self { json, packed, .. } = self;
        json.clear();
        if let Err(err) = serde_json::to_writer(&mut *json, object) {
            error!(kind = %K::kind(&()), error = %err, "cannot encode a watched object");
            return None;
        }
        let (namespace, name) = names(object);
        let (Ok(size), Ok(key_len)) = (
            u32::try_from(json.len()),
            u16::try_from(namespace.len() + 1 + name.len()),
        ) else {
            error!(kind = %K::kind(&()), "a watched object too large to cache");
            return None;
        };
        let current = self.dictionary.as_ref().map_or(0, |(_, d)| d.len());
        if json.len() >= current + current / 8 && json.len() <= DICTIONARY_LIMIT {
            let dictionary: Arc<[u8]> = json.as_slice().into();
            let mut objects = self.shelf.objects();
            if let Ok(index) = u16::try_from(objects.dictionaries.len()) {
                objects.dictionaries.push(dictionary.clone());
                self.dictionary = Some((index, dictionary));
            }
        }
        let (index, dictionary) = self
            .dictionary
            .clone()
            .unwrap_or_else(|| (0, Arc::from([])));
        packed.clear();
        packed.extend_from_slice(&super::version(object).unwrap_or(NO_VERSION).to_le_bytes());
        packed.extend_from_slice(&size.to_le_bytes());
        packed.extend_from_slice(namespace.as_bytes());
        packed.push(b'/');
        packed.extend_from_slice(name.as_bytes());
        let block = packed.len();
        packed.resize(
            block + lz4_flex::block::get_maximum_output_size(json.len()),
            0,
        );
        let written =
            match lz4_flex::block::compress_into_with_dict(json, &mut packed[block..], &dictionary)
            {
                Ok(written) => written,
                Err(err) => {
                    error!(kind = %K::kind(&()), error = %err, "cannot pack a watched object");
                    return None;
                }
            };
        Some(Stored {
            bytes: Arc::from(&packed[..block + written]),
            key_len,
            dictionary: index,
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
                if let Some(stored) = self.pack(object) {
                    insert(&mut self.shelf.objects().table, &self.hasher, stored);
                }
            }
            watcher::Event::Delete(object) => {
                let (namespace, name) = names(object);
                let mut objects = self.shelf.objects();
                let hash = hash_key(&self.hasher, namespace.as_bytes(), name.as_bytes());
                if let Ok(slot) = objects
                    .table
                    .find_entry(hash, |stored| key_is(stored.key(), namespace, name))
                {
                    slot.remove();
                }
            }
            watcher::Event::Init => self.listing = Some(HashTable::new()),
            watcher::Event::InitApply(object) => {
                if let Some(stored) = self.pack(object) {
                    let listing = self.listing.get_or_insert_default();
                    insert(listing, &self.hasher, stored);
                }
            }
            watcher::Event::InitDone => {
                let mut listed = self.listing.take().unwrap_or_default();
                listed.shrink_to_fit(|stored| hash_stored(&self.hasher, stored));
                let mut objects = self.shelf.objects();
                let before = std::mem::replace(&mut objects.table, listed);
                if !std::mem::replace(&mut self.filled, true) {
                    return Vec::new();
                }
                let unchanged = |stored: &Stored| {
                    same_key(&before, &self.hasher, stored).is_some_and(|was| {
                        was.version().is_some() && was.version() == stored.version()
                    })
                };
                let mut changed: Vec<Entry> = objects
                    .table
                    .iter()
                    .filter(|stored| !unchanged(stored))
                    .map(|stored| objects.entry(stored))
                    .collect();
                changed.extend(
                    before
                        .iter()
                        .filter(|was| same_key(&objects.table, &self.hasher, was).is_none())
                        .map(|was| objects.entry(was)),
                );
                return changed;
            }
        }
        Vec::new()
    }
}

/// An empty shelf and the writer that fills it.
pub fn shelf<K>() -> (Shelf<K>, Writer<K>) {
    let hasher = RandomState::new();
    let shelf = Shelf {
        objects: Arc::new(Mutex::new(Objects {
            table: HashTable::new(),
            dictionaries: Vec::new(),
            hasher: hasher.clone(),
        })),
        kind: PhantomData,
    };
    let writer = Writer {
        shelf: shelf.clone(),
        hasher,
        dictionary: None,
        json: Vec::new(),
        packed: Vec::new(),
        listing: None,
        filled: false,
    };
    (shelf, writer)
}
