//! Prometheus metrics. Labels are bounded: error categories and issue reasons are fixed sets;
//! the per-access series (expiry, issue and renewal time, conditions) have one series per
//! existing access, kept from the controller's access watch, so a deleted access never leaves a
//! stale series behind. `config/prometheus/rules.yaml` alerts on them and
//! `config/grafana/inference-access.json` charts them; a test keeps both to the names here.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use hyper::body::Bytes;
use jiff::Timestamp;
use kube::runtime::watcher;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tracing::debug;

use crate::api::InferenceAccess;
use crate::core::packed_name;
use crate::reconcile::cache::packed_key;
use crate::reconcile::conditions::{
    ACCESS_POLICY_READY, CREDENTIAL_ISSUED, ENDPOINT_VERIFIED, INFERENCE_SERVICE_READY, READY,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssueLabels {
    reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<CategoryLabels, Counter>,
    duration: Histogram,
    credentials: Family<IssueLabels, Counter>,
    leader: Gauge,
    accesses: Arc<AccessCollector>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("inference_access");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let errors = Family::<CategoryLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error category",
            errors.clone(),
        );
        // 1 ms to ~16 s.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        let credentials = Family::<IssueLabels, Counter>::default();
        registry.register(
            "credentials",
            "Tokens minted, by reason: issued (first) or renewed",
            credentials.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controllers (it holds the leader Lease, or leader election is off), 0 while it waits",
            leader.clone(),
        );
        let accesses = Arc::new(AccessCollector::default());
        registry.register_collector(Box::new(accesses.clone()));
        Self {
            registry,
            reconciles,
            errors,
            duration,
            credentials,
            leader,
            accesses,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, took: Duration, error_category: Option<&'static str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(category) = error_category {
            self.errors
                .get_or_create(&CategoryLabels { category })
                .inc();
        }
    }

    pub fn credential_minted(&self, renewed: bool) {
        let reason = if renewed { "renewed" } else { "issued" };
        self.credentials
            .get_or_create(&IssueLabels { reason })
            .inc();
    }

    /// Whether this replica runs the controllers now.
    pub fn leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Reports the expiry, renewal time and conditions of every access a controller watches:
    /// the controller applies its access watch's events to the writer returned.
    pub fn watch_accesses(&self) -> AccessSeriesWriter {
        let writer = AccessSeriesWriter::default();
        self.accesses
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(writer.series.clone());
        writer
    }

    /// The credential an access holds now: when it was issued and when it expires. The status
    /// carries only the expiry; the issue time gives the lifetime, which the expiry alert's
    /// threshold (a third of it) needs. Call it whenever a reconcile reads or writes the
    /// credential.
    pub fn credential_held(
        &self,
        namespace: &str,
        name: &str,
        issued_at: Timestamp,
        expires_at: Timestamp,
    ) {
        self.accesses
            .issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(packed_name(namespace, name), (issued_at, expires_at));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The exposition, handed to the reader in chunks as it is written: at 10,000 accesses the
    /// text is about 16 MB, which a scrape held whole (in a String of 32 MiB) until it was sent.
    pub fn stream(self: Arc<Self>) -> impl Stream<Item = Bytes> + Send + 'static {
        let (sender, receiver) = mpsc::channel(1);
        tokio::task::spawn_blocking(move || {
            let mut chunks = Chunks {
                text: String::with_capacity(CHUNK),
                sender,
            };
            let written = prometheus_client::encoding::text::encode(&mut chunks, &self.registry)
                .and_then(|()| chunks.hand_over());
            if written.is_err() {
                debug!("a metrics scrape ended before its text did (the reader went away)");
            }
        });
        futures::stream::unfold(receiver, |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((chunk, receiver))
        })
    }
}

/// How much text a scrape gathers before it hands it to the reader.
const CHUNK: usize = 64 * 1024;

thread_local! {
    /// Set while the per-access families are written: the registry's own families hold their
    /// lock while they write (a reconcile counting would wait on it), the per-access ones hold
    /// none, so only they may wait for a slow reader.
    static MAY_HAND_OVER: Cell<bool> = const { Cell::new(false) };
}

/// Sets [`MAY_HAND_OVER`] while it lives.
struct HandOverAllowed;

impl HandOverAllowed {
    fn new() -> Self {
        MAY_HAND_OVER.set(true);
        Self
    }
}

impl Drop for HandOverAllowed {
    fn drop(&mut self) {
        MAY_HAND_OVER.set(false);
    }
}

/// The text of one scrape, handed over a chunk at a time.
struct Chunks {
    text: String,
    sender: mpsc::Sender<Bytes>,
}

impl Chunks {
    fn hand_over(&mut self) -> fmt::Result {
        let chunk = std::mem::replace(&mut self.text, String::with_capacity(CHUNK));
        self.sender
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| fmt::Error)
    }
}

impl fmt::Write for Chunks {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.text.push_str(s);
        if self.text.len() >= CHUNK && MAY_HAND_OVER.get() {
            self.hand_over()
        } else {
            Ok(())
        }
    }
}

/// The condition types exported per access (a fixed set: the status is the operator's own, but
/// a label must never take arbitrary values from an object).
const CONDITION_TYPES: [&str; 5] = [
    READY,
    INFERENCE_SERVICE_READY,
    CREDENTIAL_ISSUED,
    ACCESS_POLICY_READY,
    ENDPOINT_VERIFIED,
];
const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];
/// `Unknown`'s index in [`CONDITION_STATUSES`].
const UNKNOWN: usize = 2;

/// `namespace/name` ([`packed_name`]).
type AccessKey = Box<str>;

/// What an access's series are made of, kept from the access watch: a scrape decodes nothing.
/// Small, as there is one per access: about 70 bytes in its table.
#[derive(Clone, Debug)]
struct AccessSeries {
    secret_name: Box<str>,
    /// Unix seconds.
    expiry: Option<i64>,
    renewal: Option<i64>,
    conditions: [ConditionHeld; CONDITION_TYPES.len()],
}

/// An access's condition of one of [`CONDITION_TYPES`]: absent, or with one of
/// [`CONDITION_STATUSES`] (by index), or with any other status.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ConditionHeld {
    Absent,
    Status(u8),
    Other,
}

impl AccessSeries {
    fn of(access: &InferenceAccess) -> Self {
        let status = access.status.as_ref();
        let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
        Self {
            secret_name: crate::reconcile::plan::secret_name(access).into(),
            expiry: status.and_then(|s| Some(s.token_expiration_time.as_ref()?.0.as_second())),
            renewal: status.and_then(|s| Some(s.renewal_time.as_ref()?.0.as_second())),
            conditions: CONDITION_TYPES.map(|r#type| {
                let Some(current) = conditions.iter().find(|c| c.type_ == r#type) else {
                    return ConditionHeld::Absent;
                };
                CONDITION_STATUSES
                    .iter()
                    .position(|s| *s == current.status)
                    .and_then(|at| u8::try_from(at).ok())
                    .map_or(ConditionHeld::Other, ConditionHeld::Status)
            }),
        }
    }
}

type SeriesByAccess = HashMap<AccessKey, AccessSeries>;

/// Keeps one controller's [`AccessSeries`] from its access watch, as a reflector keeps a store:
/// a (re)list replaces them when it is complete.
#[derive(Default)]
pub struct AccessSeriesWriter {
    series: Arc<Mutex<SeriesByAccess>>,
    listing: Option<SeriesByAccess>,
}

impl AccessSeriesWriter {
    pub fn apply_watcher_event(&mut self, event: &watcher::Event<InferenceAccess>) {
        let key = packed_key::<InferenceAccess>;
        let series = || self.series.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(access) => {
                series().insert(key(access), AccessSeries::of(access));
            }
            watcher::Event::Delete(access) => {
                series().remove(&key(access));
            }
            watcher::Event::Init => self.listing = Some(SeriesByAccess::new()),
            watcher::Event::InitApply(access) => {
                self.listing
                    .get_or_insert_default()
                    .insert(key(access), AccessSeries::of(access));
            }
            watcher::Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                *series() = listed;
            }
        }
    }
}

#[derive(Default, Debug)]
struct AccessCollector {
    /// Each controller's accesses.
    watched: Mutex<Vec<Arc<Mutex<SeriesByAccess>>>>,
    /// Issue and expiry time of each access's credential, by (namespace, name), as the last
    /// reconcile saw them.
    issued: Mutex<HashMap<AccessKey, (Timestamp, Timestamp)>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccessLabels {
    namespace: String,
    name: String,
    secret_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    namespace: String,
    name: String,
    r#type: &'static str,
    status: &'static str,
}

/// One per-access gauge family, written at scrape time. The series are made one at a time as
/// they are written: a list of every access's series first took about 2 KiB per access on
/// every scrape, on top of the text.
fn gauge_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, None, ConstGauge::new(0_i64).metric_type())?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn namespace_and_name(key: &AccessKey) -> (String, String) {
    let (namespace, name) = key.split_once('/').unwrap_or_default();
    (namespace.to_owned(), name.to_owned())
}

fn access_labels(key: &AccessKey, series: &AccessSeries) -> AccessLabels {
    let (namespace, name) = namespace_and_name(key);
    AccessLabels {
        namespace,
        name,
        secret_name: series.secret_name.to_string(),
    }
}

/// An access's condition series: for each condition it has (and Ready, Unknown when missing),
/// 1 for its status and 0 for the others.
fn condition_series<'a>(
    key: &'a AccessKey,
    series: &'a AccessSeries,
) -> impl Iterator<Item = (ConditionLabels, i64)> + 'a {
    CONDITION_TYPES
        .into_iter()
        .zip(series.conditions)
        .flat_map(move |(r#type, held)| {
            let current = match held {
                ConditionHeld::Status(at) => Some(Some(usize::from(at))),
                ConditionHeld::Other => Some(None),
                // No Ready condition yet is Ready Unknown; the others may not apply at all.
                ConditionHeld::Absent if r#type == READY => Some(Some(UNKNOWN)),
                ConditionHeld::Absent => None,
            };
            current.into_iter().flat_map(move |current| {
                CONDITION_STATUSES
                    .into_iter()
                    .enumerate()
                    .map(move |(at, status)| {
                        let (namespace, name) = namespace_and_name(key);
                        let labels = ConditionLabels {
                            namespace,
                            name,
                            r#type,
                            status,
                        };
                        (labels, i64::from(current == Some(at)))
                    })
            })
        })
}

impl Collector for AccessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A copy: the families below may wait for a slow reader, and neither a watch nor a
        // reconcile may wait for a scrape.
        let watched = self
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let accesses: Vec<(AccessKey, AccessSeries)> = watched
            .iter()
            .flat_map(|series| {
                let series = series.lock().unwrap_or_else(|p| p.into_inner());
                series
                    .iter()
                    .map(|(k, s)| (k.clone(), s.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let issued = {
            let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
            let cached: HashSet<&AccessKey> = accesses.iter().map(|(key, _)| key).collect();
            // A deleted access's record goes once its credential has expired: never while a
            // cache that is still filling could miss an access that exists.
            let now = Timestamp::now();
            issued.retain(|key, (_, expires)| cached.contains(key) || *expires > now);
            issued.clone()
        };
        let _hand_over = HandOverAllowed::new();
        gauge_family(
            &mut encoder,
            "credential_expiration_timestamp_seconds",
            "When the credential of each access expires (Unix time), as cert-manager's certificate_expiration_timestamp_seconds",
            accesses
                .iter()
                .filter_map(|(k, s)| Some((access_labels(k, s), s.expiry?))),
        )?;
        {
            // Only the issue time of the credential the status shows: a lifetime from the issue
            // time of one credential and the expiry of another would mean nothing.
            let issue = |(key, series): &(AccessKey, AccessSeries)| {
                let (at, held_expiry) = issued.get(key)?;
                (series.expiry? == held_expiry.as_second())
                    .then(|| (access_labels(key, series), at.as_second()))
            };
            gauge_family(
                &mut encoder,
                "credential_issued_timestamp_seconds",
                "When the credential of each access was issued (Unix time); with the expiry, its lifetime",
                accesses.iter().filter_map(issue),
            )?;
        }
        gauge_family(
            &mut encoder,
            "credential_renewal_timestamp_seconds",
            "When the operator renews the credential of each access (Unix time), as cert-manager's certificate_renewal_timestamp_seconds",
            accesses
                .iter()
                .filter_map(|(k, s)| Some((access_labels(k, s), s.renewal?))),
        )?;
        gauge_family(
            &mut encoder,
            "status_condition",
            "Each access's conditions: 1 for the status a condition has, 0 for the others (a missing Ready counts as Unknown)",
            accesses.iter().flat_map(|(k, s)| condition_series(k, s)),
        )
    }
}

#[cfg(test)]
mod tests;
