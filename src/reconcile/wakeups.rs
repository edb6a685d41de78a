//! When each access is to be reconciled again if nothing it watches changes first: its renewal,
//! a probe's retry, a recheck of something outside the watches.
//!
//! Kept here rather than as a requeue in kube's scheduler, which keeps a reference to the access
//! (name, namespace, reason) in a map and another in its timer queue for every requeue: about
//! 500 bytes an access, 5 MB at 10,000. This keeps the `namespace/name` and a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::api::AccessMeta;

/// Due wakeups are gathered at most this often: a scan of every access's time each time one
/// falls due would be 10,000 comparisons per renewal in a storm. Renewals are spread over
/// seconds by their jitter and retries wait at least a second, so this delays none noticeably.
const GATHER_EVERY: Duration = Duration::from_millis(200);

#[derive(Default)]
pub struct Wakeups {
    due: Mutex<HashMap<Box<str>, Instant>>,
    /// Wakes the stream when a wakeup is set, which may be earlier than the one it waits for.
    set: Notify,
}

impl Wakeups {
    fn due(&self) -> MutexGuard<'_, HashMap<Box<str>, Instant>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wake the access with key `namespace/name` after `after`, or never (`None`), replacing
    /// what was set before: the newest reconcile knows best.
    pub fn set(&self, key: &str, after: Option<Duration>) {
        let mut due = self.due();
        match after {
            Some(after) => {
                let at = Instant::now() + after;
                match due.get_mut(key) {
                    Some(when) => *when = at,
                    None => {
                        due.insert(key.into(), at);
                    }
                }
                drop(due);
                self.set.notify_one();
            }
            None => {
                due.remove(key);
            }
        }
    }

    /// How long until the access is woken, if it is to be.
    pub fn pending(&self, key: &str) -> Option<Duration> {
        let at = *self.due().get(key)?;
        Some(at.saturating_duration_since(Instant::now()))
    }

    /// Removes and returns the wakeups due at `now`, and when the next one is.
    fn take_due(&self, now: Instant) -> (Vec<Box<str>>, Option<Instant>) {
        let mut due = self.due();
        let mut taken = Vec::new();
        let mut next: Option<Instant> = None;
        due.retain(|key, at| {
            if *at <= now {
                taken.push(key.clone());
                return false;
            }
            next = Some(next.map_or(*at, |next| next.min(*at)));
            true
        });
        // A storm's table is given back once it has passed.
        if due.capacity() > 2 * due.len() + 64 {
            due.shrink_to_fit();
        }
        (taken, next)
    }

    /// The accesses to reconcile, each when its wakeup falls due.
    pub fn stream(self: Arc<Self>) -> impl Stream<Item = ObjectRef<AccessMeta>> + Send + 'static {
        let start = (self, Instant::now());
        futures::stream::unfold(start, |(wakeups, mut gathered)| async move {
            loop {
                let (taken, next) = wakeups.take_due(Instant::now());
                if !taken.is_empty() {
                    let refs: Vec<ObjectRef<AccessMeta>> = taken
                        .iter()
                        .map(|key| {
                            let (namespace, name) = key.split_once('/').unwrap_or(("", key));
                            ObjectRef::new(name).within(namespace)
                        })
                        .collect();
                    return Some((futures::stream::iter(refs), (wakeups, gathered)));
                }
                let earliest = gathered + GATHER_EVERY;
                let sleep = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at.max(earliest)).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = sleep => {}
                    () = wakeups.set.notified() => {
                        // A new wakeup may be earlier than `next`; not sooner than the gather
                        // interval, though, or a burst of reconciles would rescan for each.
                        tokio::time::sleep_until(earliest).await;
                    }
                }
                gathered = Instant::now();
            }
        })
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_wakeups_are_taken_once_and_the_next_is_reported() {
        let wakeups = Wakeups::default();
        wakeups.set("ns/soon", Some(Duration::ZERO));
        wakeups.set("ns/later", Some(Duration::from_secs(3600)));
        wakeups.set("ns/never", Some(Duration::ZERO));
        wakeups.set("ns/never", None);
        let now = Instant::now();
        let (taken, next) = wakeups.take_due(now);
        assert_eq!(taken, vec![Box::<str>::from("ns/soon")]);
        let next = next.expect("the later one is next");
        assert!(next > now + Duration::from_secs(3590));
        assert!(wakeups.take_due(now).0.is_empty(), "taken once");
        assert!(wakeups.pending("ns/later").is_some());
        assert!(wakeups.pending("ns/never").is_none());
        // A newer reconcile's wakeup replaces the older one.
        wakeups.set("ns/later", Some(Duration::ZERO));
        assert_eq!(wakeups.take_due(Instant::now()).0.len(), 1);
        assert_eq!(
            wakeups
                .take_due(Instant::now() + Duration::from_secs(7200))
                .1,
            None
        );
    }

    #[tokio::test]
    async fn the_stream_yields_an_access_when_its_wakeup_is_set_due() {
        let wakeups = Arc::new(Wakeups::default());
        let mut stream = Box::pin(wakeups.clone().stream());
        wakeups.set("team-a/client", Some(Duration::from_secs(3600)));
        wakeups.set("team-b/model-client", Some(Duration::from_millis(50)));
        // A guard against a hang, not a timing assertion.
        let woken = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("woken")
            .expect("the stream goes on");
        assert_eq!(woken, ObjectRef::new("model-client").within("team-b"));
        assert!(wakeups.pending("team-a/client").is_some());
    }
}
