//! Publishes the reconcile's Events (events.k8s.io/v1), a repeat within six minutes as a series
//! on the first one, as kube's `Recorder` does, but remembering only what a repeat needs.
//!
//! kube's `Recorder` keeps every Event it sent for six minutes, whole, with a copy of its
//! ObjectReference as the key (about 2 KiB each in a table that never shrinks), and scans them
//! all on every publish: at 10,000 accesses (two Events each on first issuance) that table was
//! the largest thing in the operator. Here a repeat needs when the first Event was sent (its
//! name is built from it) and its count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};

/// How long a repeat joins the series of the first Event (kube's and client-go's figure).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// How often expired series are dropped: a scan per publish was quadratic over a burst.
const SWEEP_EVERY: SignedDuration = SignedDuration::from_secs(30);

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    recent: Arc<Mutex<Recent>>,
}

/// What makes two Events one series: the object (by uid, which also tells a recreated object
/// of the same name apart) and which Event it is (its type, reason and action, numbered in
/// [`Recent::events`]). Two Events per access on first issuance are 20,000 series at 10,000
/// accesses, so a series keeps only this key and what a repeat needs.
#[derive(Hash, PartialEq, Eq)]
struct Key {
    object: Object,
    event: usize,
}

/// An object as a series key: the API server's uids are UUIDs, kept as their 16 bytes (a
/// string of 36 was an allocation of 48 per series); any other uid, or a namespace and name
/// where there is no uid, as text.
#[derive(Hash, PartialEq, Eq)]
enum Object {
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl Object {
    fn new(text: &str) -> Self {
        let hex = text.as_bytes();
        let dashes_where_a_uuid_has_them =
            hex.len() == 36 && [8, 13, 18, 23].iter().all(|&at| hex[at] == b'-');
        // Lowercase only, as the API server writes them: "A" and "a" are other uids.
        let digits = hex.iter().filter(|b| **b != b'-').map(|b| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        });
        let mut bytes = [0u8; 16];
        let mut count = 0;
        for (index, digit) in digits.enumerate() {
            let (Some(digit), Some(byte)) = (digit, bytes.get_mut(index / 2)) else {
                return Self::Text(text.into());
            };
            *byte |= digit << if index % 2 == 0 { 4 } else { 0 };
            count += 1;
        }
        if dashes_where_a_uuid_has_them && count == 32 {
            Self::Uuid(bytes)
        } else {
            Self::Text(text.into())
        }
    }
}

struct Sent {
    /// When the first Event was created: its name is built from it.
    created: Timestamp,
    count: i32,
    last: Timestamp,
}

#[derive(Default)]
struct Recent {
    series: HashMap<Key, Sent>,
    /// Each (warning, reason, action) seen, in the order first seen: a handful.
    events: Vec<(bool, String, String)>,
    swept: Option<Timestamp>,
}

impl Recent {
    fn sweep(&mut self, now: Timestamp) {
        if self.swept.is_some_and(|at| at + SWEEP_EVERY > now) {
            return;
        }
        self.swept = Some(now);
        self.series
            .retain(|_, sent| sent.last + SERIES_WINDOW > now);
        // A burst's table is given back once its series have expired.
        if self.series.capacity() > 2 * self.series.len() + 64 {
            self.series.shrink_to_fit();
        }
    }

    fn key(&mut self, event: &Event, regarding: &ObjectReference) -> Key {
        let object = match (&regarding.uid, &regarding.name) {
            (Some(uid), _) => Object::new(uid),
            (None, name) => Object::Text(crate::core::packed_name(
                regarding.namespace.as_deref().unwrap_or_default(),
                name.as_deref().unwrap_or_default(),
            )),
        };
        let warning = matches!(event.type_, EventType::Warning);
        let which = |(w, reason, action): &(bool, String, String)| {
            *w == warning && *reason == event.reason && *action == event.action
        };
        let index = match self.events.iter().position(which) {
            Some(index) => index,
            None => {
                self.events
                    .push((warning, event.reason.clone(), event.action.clone()));
                self.events.len() - 1
            }
        };
        Key {
            object,
            event: index,
        }
    }
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        let instance = reporter
            .instance
            .clone()
            .unwrap_or_else(|| reporter.controller.clone());
        Self {
            client,
            controller: reporter.controller,
            instance,
            recent: Arc::default(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the Event, or counts it on the series of the same Event sent less than six
    /// minutes ago.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let (key, repeat) = {
            let mut recent = self.recent();
            recent.sweep(now);
            let key = recent.key(event, regarding);
            let repeat = recent
                .series
                .get(&key)
                .filter(|sent| sent.last + SERIES_WINDOW > now)
                .map(|sent| (sent.created, sent.count + 1));
            (key, repeat)
        };
        let api = Api::<K8sEvent>::namespaced(self.client.clone(), &namespace);
        let (created, count) = match repeat {
            Some((created, count)) => {
                let series = serde_json::json!({
                    "reason": event.reason,
                    "series": EventSeries { count, last_observed_time: MicroTime(now) },
                });
                let name = self.event_name(regarding, created);
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                    .await
                {
                    Ok(_) => (created, count),
                    // Deleted meanwhile (its TTL, or by hand): a new one starts a new series.
                    Err(err) if crate::reconcile::error::api_status(&err) == Some(404) => {
                        self.create(&api, event, regarding, now).await?;
                        (now, 1)
                    }
                    Err(err) => return Err(err),
                }
            }
            None => {
                self.create(&api, event, regarding, now).await?;
                (now, 1)
            }
        };
        self.recent().series.insert(
            key,
            Sent {
                created,
                count,
                last: now,
            },
        );
        Ok(())
    }

    /// The name of the Event about `regarding` first sent at `created`.
    fn event_name(&self, regarding: &ObjectReference, created: Timestamp) -> String {
        format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            created.as_nanosecond()
        )
    }

    async fn create(
        &self,
        api: &Api<K8sEvent>,
        event: &Event,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let name = self.event_name(regarding, now);
        let body = K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(name),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..K8sEvent::default()
        };
        api.create(&PostParams::default(), &body).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(object: &str) -> Key {
        Key {
            object: Object::Text(object.into()),
            event: 0,
        }
    }

    fn sent(last: Timestamp) -> Sent {
        Sent {
            created: last,
            count: 1,
            last,
        }
    }

    fn event(type_: EventType, reason: &str) -> Event {
        Event {
            type_,
            reason: reason.into(),
            note: None,
            action: "Issue".into(),
            secondary: None,
        }
    }

    fn regarding(uid: Option<&str>, name: &str) -> ObjectReference {
        ObjectReference {
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: uid.map(Into::into),
            ..ObjectReference::default()
        }
    }

    #[test]
    fn one_series_per_object_and_event() {
        let mut recent = Recent::default();
        let issued = event(EventType::Normal, "Issued");
        let a = regarding(Some("uid-a"), "a");
        let first = recent.key(&issued, &a);
        assert!(first == recent.key(&issued, &a));
        assert!(first != recent.key(&event(EventType::Warning, "Issued"), &a));
        assert!(first != recent.key(&event(EventType::Normal, "Renewed"), &a));
        // A recreated object of the same name starts its own series.
        assert!(first != recent.key(&issued, &regarding(Some("uid-b"), "a")));
        // Without a uid, the namespace and name tell objects apart.
        let named = recent.key(&issued, &regarding(None, "a"));
        assert!(named == recent.key(&issued, &regarding(None, "a")));
        assert!(named != recent.key(&issued, &regarding(None, "b")));
        assert_eq!(recent.events.len(), 3, "each distinct Event numbered once");
    }

    #[test]
    fn uuids_are_kept_as_bytes_and_told_apart_by_every_digit() {
        let uid = "4b3c0e1f-2a5d-4000-8000-00000000001f";
        let Object::Uuid(bytes) = Object::new(uid) else {
            panic!("{uid} kept as text");
        };
        assert_eq!(bytes[..4], [0x4b, 0x3c, 0x0e, 0x1f]);
        assert_eq!(bytes[15], 0x1f);
        assert!(Object::new(uid) != Object::new("4b3c0e1f-2a5d-4000-8000-00000000002f"));
        assert!(Object::new(uid) != Object::new("4b3c0e1f-2a5d-4000-8000-00000000001e"));
        // Not UUIDs: kept as they are.
        for other in [
            "uid-a",
            "4b3c0e1f2a5d40008000000000000000001f",
            "4b3c0e1f-2a5d-4000-8000-00000000001g",
            "4b3c0e1f-2a5d-4000-8000-00000000001",
            "4b3c0e1f-2a5d-4000-8000-00000000001ff",
            "4B3C0E1F-2A5D-4000-8000-00000000001F",
        ] {
            assert!(Object::new(other) == Object::Text(other.into()), "{other}");
        }
    }

    #[test]
    fn expired_series_are_dropped_and_their_table_given_back() {
        let start = Timestamp::UNIX_EPOCH;
        let mut recent = Recent::default();
        for i in 0..1_000 {
            recent.series.insert(key(&format!("R{i}")), sent(start));
        }
        recent
            .series
            .insert(key("late"), sent(start + SERIES_WINDOW));
        let full = recent.series.capacity();
        // Within the window nothing goes, and a second sweep right after does not scan.
        recent.sweep(start + SERIES_WINDOW - SignedDuration::from_secs(10));
        assert_eq!(recent.series.len(), 1_001);
        recent.sweep(start + SERIES_WINDOW + SignedDuration::from_secs(1));
        assert_eq!(
            recent.series.len(),
            1_001,
            "swept again within {SWEEP_EVERY:?}"
        );
        recent.sweep(start + SERIES_WINDOW + SWEEP_EVERY + SignedDuration::from_mins(1));
        assert_eq!(recent.series.len(), 1);
        assert!(recent.series.contains_key(&key("late")));
        assert!(recent.series.capacity() < full / 10);
    }
}
