//! Watch history: the recent changes of each kind, for watches that resume from a
//! resourceVersion and for followers (watch streams, the stand-in controllers) that read on
//! from where they are.
//!
//! Each kind keeps its own window of changes, as the API server's watch cache does per resource:
//! changes of one kind never push another kind's out, and following a kind costs nothing when
//! other kinds change. A follower holds only a position; it is woken when its kind changes and
//! reads the new events under the store lock. One that falls so far behind that its next event
//! left the window is told so (a watch then ends, and its client's resume gets 410).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::watch;

use super::Store;
use super::objects::Obj;
use crate::error::ApiError;

/// Changes kept per kind by default; older resumes get 410 Gone.
pub const DEFAULT_LIMIT: usize = 10_000;
/// Most events a follower takes in one read (bounds how long it holds the store lock).
const BATCH: usize = 1_000;

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
    pub kind: EventType,
    pub object: Arc<Obj>,
    pub old: Option<Arc<Obj>>,
}

pub fn too_old(from: u64, compacted: u64) -> ApiError {
    ApiError::gone(format!("too old resource version: {from} ({compacted})"))
}

#[derive(Debug)]
struct KindLog {
    events: VecDeque<Arc<Event>>,
    /// The newest resourceVersion that left the window (0: none did).
    dropped: u64,
    /// The resourceVersion of this kind's newest event, for waking its followers.
    notify: watch::Sender<u64>,
}

impl KindLog {
    fn new() -> Self {
        Self {
            events: VecDeque::new(),
            dropped: 0,
            notify: watch::channel(0).0,
        }
    }

    /// Events after `rv`, at most `max`.
    fn after(&self, rv: u64, max: usize) -> Vec<Arc<Event>> {
        let start = self.events.partition_point(|e| e.rv <= rv);
        self.events.range(start..).take(max).cloned().collect()
    }
}

#[derive(Debug)]
pub struct History {
    limit: usize,
    /// Set by `compact`: every version below it is refused to new watches and continue tokens.
    floor: u64,
    kinds: HashMap<String, KindLog>,
    /// Kinds changed since the last `notify_changed`.
    changed: Vec<String>,
}

impl History {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            floor: 0,
            kinds: HashMap::new(),
            changed: Vec::new(),
        }
    }

    fn log(&mut self, key: &str) -> &mut KindLog {
        self.kinds
            .entry(key.to_string())
            .or_insert_with(KindLog::new)
    }

    pub fn push(&mut self, key: &str, event: Arc<Event>) {
        let limit = self.limit;
        let log = self.log(key);
        log.events.push_back(event);
        while log.events.len() > limit {
            if let Some(gone) = log.events.pop_front() {
                log.dropped = gone.rv;
            }
        }
        if !self.changed.iter().any(|k| k == key) {
            self.changed.push(key.to_string());
        }
    }

    /// Wakes the followers of every kind changed since the last call (called with the store
    /// still locked, so a follower woken reads the whole transaction).
    pub fn notify_changed(&mut self, rv: u64) {
        for key in std::mem::take(&mut self.changed) {
            if let Some(log) = self.kinds.get(&key) {
                log.notify.send_replace(rv);
            }
        }
    }

    /// The oldest resourceVersion a new watch of `key` may resume from.
    pub fn oldest(&self, key: &str) -> u64 {
        self.floor.max(self.kinds.get(key).map_or(0, |l| l.dropped))
    }

    /// Forgets every change; versions before `rv` are refused from now on.
    pub fn compact(&mut self, rv: u64) {
        self.floor = rv;
        for log in self.kinds.values_mut() {
            if let Some(newest) = log.events.back() {
                log.dropped = newest.rv;
            }
            log.events.clear();
        }
    }

    /// Events of `key` after `from`, at most `max`, or the version that was lost when an event
    /// after `from` already left the window.
    fn after(&self, key: &str, from: u64, max: usize) -> Result<Vec<Arc<Event>>, u64> {
        let Some(log) = self.kinds.get(key) else {
            return Ok(Vec::new());
        };
        if from < log.dropped {
            return Err(log.dropped);
        }
        Ok(log.after(from, max))
    }

    fn subscribe(&mut self, key: &str) -> watch::Receiver<u64> {
        self.log(key).notify.subscribe()
    }
}

/// A position in one kind's history that reads on as the kind changes.
pub struct Follower {
    store: Store,
    key: String,
    /// The resourceVersion of the last event taken.
    cursor: u64,
    wake: watch::Receiver<u64>,
}

impl Follower {
    pub(super) fn new(store: Store, key: &str, cursor: u64, wake: watch::Receiver<u64>) -> Self {
        Self {
            store,
            key: key.to_string(),
            cursor,
            wake,
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Events after the cursor, as many as are there (in bounded batches), waiting for one if
    /// there are none. Cancel-safe. `Err` carries a 410 when the next event left the window.
    pub async fn next(&mut self) -> Result<Vec<Arc<Event>>, ApiError> {
        loop {
            let (events, _) = self.poll()?;
            if !events.is_empty() {
                return Ok(events);
            }
            // Marked seen under the lock in `poll`, so a change after it wakes this. The sender
            // lives in the store this follower holds, so it is never dropped before it.
            if self.wake.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// What is there now, without waiting, and the store's newest resourceVersion: every change
    /// of this kind up to it is in the events returned or was returned before.
    pub fn poll(&mut self) -> Result<(Vec<Arc<Event>>, u64), ApiError> {
        let st = self.store.lock();
        self.wake.borrow_and_update();
        let events = st
            .history
            .after(&self.key, self.cursor, BATCH)
            .map_err(|lost| too_old(self.cursor, lost))?;
        if let Some(last) = events.last() {
            self.cursor = last.rv;
        }
        let newest = if events.len() == BATCH {
            self.cursor
        } else {
            st.rv
        };
        Ok((events, newest))
    }
}

impl Store {
    /// Follows `key` from `from`: the first read returns the events after it. 410 if some have
    /// left the window already.
    pub(crate) fn follow_from(&self, key: &str, from: u64) -> Result<Follower, ApiError> {
        let mut st = self.lock();
        let oldest = st.history.oldest(key);
        if from < oldest {
            return Err(too_old(from, oldest));
        }
        let wake = st.history.subscribe(key);
        let cursor = from.min(st.rv);
        Ok(Follower::new(self.clone(), key, cursor, wake))
    }

    /// Follows `key` from the current version, returning the objects `select` picks from what
    /// is stored now (a watch's initial state, a controller's resync) in the same lock.
    pub(crate) fn follow_now<T>(
        &self,
        key: &str,
        select: impl FnOnce(&super::State) -> T,
    ) -> (T, Follower) {
        let mut st = self.lock();
        let wake = st.history.subscribe(key);
        let now = select(&st);
        let rv = st.rv;
        (now, Follower::new(self.clone(), key, rv, wake))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn configmap(i: usize) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}"), "namespace": "n"}})
    }

    #[tokio::test]
    async fn a_follower_reads_on_until_its_next_change_leaves_the_window() {
        let store = Store::with_history(5);
        store
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}))
            .unwrap();
        let now = store.resource_version();
        let mut keeping_up = store.follow_from("configmaps", now).unwrap();
        let mut behind = store.follow_from("configmaps", now).unwrap();
        let mut other_kind = store.follow_from("secrets", now).unwrap();
        for i in 0..20 {
            store.create(configmap(i)).unwrap();
            let events = keeping_up.next().await.unwrap();
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].object.name(), format!("c{i}"));
        }
        assert_eq!(
            behind.next().await.map(|e| e.len()).map_err(|e| e.code),
            Err(410)
        );
        // Nothing of its kind happened: nothing to read, nothing lost.
        assert_eq!(
            other_kind.poll().map(|(e, _)| e.len()).map_err(|e| e.code),
            Ok(0)
        );
        // Compaction refuses old versions to new watches but loses nothing for a follower that
        // had read everything.
        store.compact();
        assert_eq!(
            store.follow_from("configmaps", now).err().map(|e| e.code),
            Some(410)
        );
        store.create(configmap(99)).unwrap();
        let events = keeping_up.next().await.unwrap();
        assert_eq!(events[0].object.name(), "c99");
    }

    fn ev(rv: u64) -> Arc<Event> {
        Arc::new(Event {
            rv,
            kind: EventType::Added,
            object: Arc::new(Obj::new(&json!({}))),
            old: None,
        })
    }

    #[test]
    fn each_kind_keeps_its_own_window() {
        let mut h = History::new(3);
        for rv in 1..=10 {
            h.push("busy", ev(rv));
        }
        h.push("quiet", ev(11));
        assert_eq!(h.oldest("busy"), 7);
        assert_eq!(h.oldest("quiet"), 0);
        assert_eq!(h.after("busy", 7, 10).map(|v| v.len()), Ok(3));
        assert_eq!(h.after("busy", 6, 10).map(|v| v.len()), Err(7));
        assert_eq!(h.after("quiet", 1, 10).map(|v| v.len()), Ok(1));
        // Compaction refuses every older version to new watches, but a follower that had read
        // everything of its kind has lost nothing.
        h.compact(12);
        assert_eq!(h.oldest("quiet"), 12);
        assert_eq!(h.after("quiet", 11, 10).map(|v| v.len()), Ok(0));
        assert_eq!(h.after("quiet", 10, 10).map(|v| v.len()), Err(11));
    }
}
