//! Publishes the reconcile's Events (events.k8s.io/v1), a repeat within six minutes as a series
//! on the first one, as kube's `Recorder` does, but remembering only what a repeat needs.
//!
//! kube's `Recorder` keeps every Event it sent for six minutes, whole, with a copy of its
//! ObjectReference as the key (about 2 KiB each in a table that never shrinks), and scans them
//! all on every publish: at 10,000 accesses (two Events each on first issuance) that table was
//! the largest thing in the operator. Here a repeat needs the Event's name and its count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Client, Resource};

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
/// of the same name apart), and the Event's type, reason and action.
#[derive(Hash, PartialEq, Eq)]
struct Key {
    namespace: String,
    uid: String,
    warning: bool,
    reason: String,
    action: String,
}

struct Sent {
    name: String,
    count: i32,
    last: Timestamp,
}

#[derive(Default)]
struct Recent {
    series: HashMap<Key, Sent>,
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
        let key = Key {
            namespace: namespace.clone(),
            uid: regarding
                .uid
                .clone()
                .or_else(|| regarding.name.clone())
                .unwrap_or_default(),
            warning: matches!(event.type_, EventType::Warning),
            reason: event.reason.clone(),
            action: event.action.clone(),
        };
        let repeat = {
            let mut recent = self.recent();
            recent.sweep(now);
            recent
                .series
                .get(&key)
                .filter(|sent| sent.last + SERIES_WINDOW > now)
                .map(|sent| (sent.name.clone(), sent.count + 1))
        };
        let api = Api::<K8sEvent>::namespaced(self.client.clone(), &namespace);
        let (name, count) = match repeat {
            Some((name, count)) => {
                let series = serde_json::json!({
                    "reason": event.reason,
                    "series": EventSeries { count, last_observed_time: MicroTime(now) },
                });
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                    .await
                {
                    Ok(_) => (name, count),
                    // Deleted meanwhile (its TTL, or by hand): a new one starts a new series.
                    Err(err) if crate::reconcile::error::api_status(&err) == Some(404) => {
                        (self.create(&api, event, regarding, now).await?, 1)
                    }
                    Err(err) => return Err(err),
                }
            }
            None => (self.create(&api, event, regarding, now).await?, 1),
        };
        self.recent().series.insert(
            key,
            Sent {
                name,
                count,
                last: now,
            },
        );
        Ok(())
    }

    async fn create(
        &self,
        api: &Api<K8sEvent>,
        event: &Event,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Result<String, kube::Error> {
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
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
        let created = api.create(&PostParams::default(), &body).await?;
        Ok(created.meta().name.clone().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> Key {
        Key {
            namespace: "ns".into(),
            uid: "u".into(),
            warning: false,
            reason: reason.into(),
            action: "Issue".into(),
        }
    }

    fn sent(last: Timestamp) -> Sent {
        Sent {
            name: "a.1".into(),
            count: 1,
            last,
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
