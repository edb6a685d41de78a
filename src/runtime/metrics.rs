//! Prometheus metrics. Labels are bounded: error categories and issue reasons are fixed sets;
//! the per-access series (expiry, issue and renewal time, conditions) have one series per
//! existing access, read from the controller's cache at scrape time, so a deleted access never
//! leaves a stale series behind. `config/prometheus/rules.yaml` alerts on them and
//! `config/grafana/inference-access.json` charts them; a test keeps both to the names here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::InferenceAccess;
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

    /// Reports the expiry, renewal time and conditions of every access a controller has in its
    /// cache.
    pub fn watch_expiry(&self, store: Store<InferenceAccess>) {
        self.accesses
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(store);
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
            .insert(
                (namespace.to_owned(), name.to_owned()),
                (issued_at, expires_at),
            );
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
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

type AccessKey = (String, String);

#[derive(Default, Debug)]
struct AccessCollector {
    stores: Mutex<Vec<Store<InferenceAccess>>>,
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

/// One per-access gauge family, written at scrape time.
fn gauge_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, i64)],
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, None, ConstGauge::new(0_i64).metric_type())?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for AccessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stores = self
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let accesses: Vec<_> = stores.iter().flat_map(|store| store.state()).collect();
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let cached: HashSet<AccessKey> = accesses
            .iter()
            .map(|a| (a.namespace().unwrap_or_default(), a.name_any()))
            .collect();
        // A deleted access's record goes once its credential has expired: never while a cache
        // that is still filling could miss an access that exists.
        let now = Timestamp::now();
        issued.retain(|key, (_, expires)| cached.contains(key) || *expires > now);

        let (mut expiry, mut issue, mut renewal, mut conditions) = (vec![], vec![], vec![], vec![]);
        for access in &accesses {
            let (namespace, name) = (access.namespace().unwrap_or_default(), access.name_any());
            let labels = AccessLabels {
                namespace: namespace.clone(),
                name: name.clone(),
                secret_name: crate::reconcile::plan::secret_name(access),
            };
            let status = access.status.as_ref();
            let expires = status.and_then(|s| s.token_expiration_time.as_ref());
            if let Some(at) = expires {
                expiry.push((labels.clone(), at.0.as_second()));
            }
            if let Some(at) = status.and_then(|s| s.renewal_time.as_ref()) {
                renewal.push((labels.clone(), at.0.as_second()));
            }
            // Only the issue time of the credential the status shows: a lifetime from the issue
            // time of one credential and the expiry of another would mean nothing.
            if let Some((at, held_expiry)) = issued.get(&(namespace.clone(), name.clone()))
                && expires.is_some_and(|e| e.0 == *held_expiry)
            {
                issue.push((labels, at.as_second()));
            }
            for r#type in CONDITION_TYPES {
                let current = status
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == r#type))
                    .map(|c| c.status.as_str());
                // No Ready condition yet is Ready Unknown; the others may not apply at all.
                let current = match current {
                    None if r#type == READY => "Unknown",
                    None => continue,
                    Some(current) => current,
                };
                for status in CONDITION_STATUSES {
                    let labels = ConditionLabels {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        r#type,
                        status,
                    };
                    conditions.push((labels, i64::from(status == current)));
                }
            }
        }
        drop(issued);
        gauge_family(
            &mut encoder,
            "credential_expiration_timestamp_seconds",
            "When the credential of each access expires (Unix time), as cert-manager's certificate_expiration_timestamp_seconds",
            &expiry,
        )?;
        gauge_family(
            &mut encoder,
            "credential_issued_timestamp_seconds",
            "When the credential of each access was issued (Unix time); with the expiry, its lifetime",
            &issue,
        )?;
        gauge_family(
            &mut encoder,
            "credential_renewal_timestamp_seconds",
            "When the operator renews the credential of each access (Unix time), as cert-manager's certificate_renewal_timestamp_seconds",
            &renewal,
        )?;
        gauge_family(
            &mut encoder,
            "status_condition",
            "Each access's conditions: 1 for the status a condition has, 0 for the others (a missing Ready counts as Unknown)",
            &conditions,
        )
    }
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;
    use kube::runtime::reflector::store::{Writer, store};
    use kube::runtime::watcher::Event;

    use super::*;
    use crate::fixtures::{access, ts};

    #[test]
    fn exposition_has_every_metric_with_bounded_labels() {
        let metrics = Metrics::default();
        metrics.reconciled(Duration::from_millis(3), None);
        metrics.reconciled(Duration::from_millis(5), Some("token_request"));
        metrics.credential_minted(false);
        metrics.credential_minted(true);
        metrics.credential_minted(true);
        let text = metrics.encode().unwrap();
        for line in [
            "inference_access_reconciles_total 2",
            "inference_access_reconcile_errors_total{category=\"token_request\"} 1",
            "inference_access_reconcile_duration_seconds_count 2",
            "inference_access_credentials_total{reason=\"issued\"} 1",
            "inference_access_credentials_total{reason=\"renewed\"} 2",
            "inference_access_leader 0",
            "# TYPE inference_access_credential_expiration_timestamp_seconds gauge",
            "# TYPE inference_access_credential_issued_timestamp_seconds gauge",
            "# TYPE inference_access_credential_renewal_timestamp_seconds gauge",
            "# TYPE inference_access_status_condition gauge",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        metrics.leading(true);
        assert!(
            metrics
                .encode()
                .unwrap()
                .contains("inference_access_leader 1\n")
        );
        metrics.leading(false);
        assert!(
            metrics
                .encode()
                .unwrap()
                .contains("inference_access_leader 0\n")
        );
    }

    /// `client` in `ns`, with `status`.
    fn cached_access(status: serde_json::Value) -> InferenceAccess {
        let mut access = access(serde_json::json!({"inferenceService": {"name": "m"}})).build();
        access.status = serde_json::from_value(status).unwrap();
        access
    }

    /// Metrics watching a cache, and the cache's writer.
    fn watching() -> (Metrics, Writer<InferenceAccess>) {
        let metrics = Metrics::default();
        let (reader, writer) = store::<InferenceAccess>();
        metrics.watch_expiry(reader);
        (metrics, writer)
    }

    #[test]
    fn per_access_series_come_from_the_cache_and_leave_with_the_access() {
        let (metrics, mut writer) = watching();
        let condition = |type_: &str, status: &str| serde_json::json!({"type": type_, "status": status, "reason": "R", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"});
        let access = cached_access(serde_json::json!({
            "tokenExpirationTime": "2026-01-01T01:00:00Z",
            "renewalTime": "2026-01-01T00:40:00Z",
            "conditions": [
                condition("Ready", "False"),
                condition("CredentialIssued", "True"),
                condition("Invented", "True"),
            ]
        }));
        writer.apply_watcher_event(&Event::Apply(access.clone()));
        let labels = "namespace=\"ns\",name=\"client\",secret_name=\"client-credential\"";
        // The issue time only once a reconcile reported the credential the status shows.
        let issued = format!("inference_access_credential_issued_timestamp_seconds{{{labels}}}");
        assert!(!metrics.encode().unwrap().contains(&issued));
        let (issued_at, expires_at) = (ts("2026-01-01T00:00:00Z"), ts("2026-01-01T01:00:00Z"));
        metrics.credential_held(
            "ns",
            "client",
            issued_at,
            expires_at - SignedDuration::from_secs(1),
        );
        assert!(
            !metrics.encode().unwrap().contains(&issued),
            "another credential's issue time"
        );
        metrics.credential_held("ns", "client", issued_at, expires_at);
        let text = metrics.encode().unwrap();
        let condition = |type_: &str, status: &str, value: u8| {
            format!(
                "inference_access_status_condition{{namespace=\"ns\",name=\"client\",type=\"{type_}\",status=\"{status}\"}} {value}"
            )
        };
        for series in [
            format!(
                "inference_access_credential_expiration_timestamp_seconds{{{labels}}} 1767229200"
            ),
            format!("{issued} 1767225600"),
            format!("inference_access_credential_renewal_timestamp_seconds{{{labels}}} 1767228000"),
            condition("Ready", "True", 0),
            condition("Ready", "False", 1),
            condition("Ready", "Unknown", 0),
            condition("CredentialIssued", "True", 1),
        ] {
            assert!(text.contains(&series), "missing {series:?} in:\n{text}");
        }
        // Unknown condition types never become label values; absent ones are not invented.
        assert!(!text.contains("Invented"), "{text}");
        assert!(!text.contains("type=\"EndpointVerified\""), "{text}");

        writer.apply_watcher_event(&Event::Delete(access));
        assert!(!metrics.encode().unwrap().contains("name=\"client\""));
    }

    #[test]
    fn an_access_without_a_status_is_ready_unknown() {
        let (metrics, mut writer) = watching();
        writer.apply_watcher_event(&Event::Apply(cached_access(serde_json::Value::Null)));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("inference_access_status_condition{namespace=\"ns\",name=\"client\",type=\"Ready\",status=\"Unknown\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("inference_access_credential_expiration_timestamp_seconds{"),
            "{text}"
        );
    }

    #[test]
    fn a_deleted_access_record_goes_once_its_credential_expired() {
        let metrics = Metrics::default();
        let past = Timestamp::now() - SignedDuration::from_secs(60);
        let future = Timestamp::now() + SignedDuration::from_secs(3600);
        metrics.credential_held("ns", "expired", past - SignedDuration::from_secs(600), past);
        metrics.credential_held("ns", "valid", past, future);
        metrics.encode().unwrap();
        let held = metrics.accesses.issued.lock().unwrap();
        let names: Vec<&str> = held.keys().map(|(_, name)| name.as_str()).collect();
        assert_eq!(names, ["valid"]);
    }

    /// Every name the exposition can hold: sample names, and for families without samples yet
    /// (per-access gauges before any access) the names their type gives their samples.
    fn exported_names(metrics: &Metrics) -> HashSet<String> {
        let text = metrics.encode().unwrap();
        let mut names = HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (family, kind) = rest.split_once(' ').unwrap();
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total"],
                    "histogram" => &["_bucket", "_sum", "_count"],
                    _ => &[""],
                };
                names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
            } else if !line.starts_with('#') {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                names.insert(line[..end].to_owned());
            }
        }
        names
    }

    /// The metric names a PromQL expression selects: identifiers that are not functions or
    /// aggregations, keywords, label names (in `{}` or the label lists of `by`, `on` and the
    /// like), strings, range durations or Grafana variables (`$job`, `$__rate_interval`).
    fn metric_names(expr: &str) -> Vec<String> {
        const LABEL_LIST: [&str; 6] = [
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        ];
        // Aggregations may put their `by (...)` before the parenthesis.
        const KEYWORDS: [&str; 16] = [
            "and", "or", "unless", "bool", "offset", "sum", "min", "max", "avg", "count", "group",
            "stddev", "stdvar", "topk", "bottomk", "quantile",
        ];
        let chars: Vec<char> = expr.chars().collect();
        let mut names = Vec::new();
        let mut i = 0;
        let skip_group = |i: &mut usize, open: char, close: char| {
            let mut depth = 0;
            while *i < chars.len() {
                if chars[*i] == open {
                    depth += 1;
                } else if chars[*i] == close {
                    depth -= 1;
                    if depth == 0 {
                        *i += 1;
                        return;
                    }
                }
                *i += 1;
            }
        };
        while i < chars.len() {
            let c = chars[i];
            match c {
                '{' => skip_group(&mut i, '{', '}'),
                '[' => skip_group(&mut i, '[', ']'),
                '"' | '\'' | '`' => {
                    i += 1;
                    while i < chars.len() && chars[i] != c {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                '$' => {
                    i += 1;
                    while i < chars.len()
                        && (chars[i].is_alphanumeric() || "_{}".contains(chars[i]))
                    {
                        i += 1;
                    }
                }
                c if c.is_ascii_digit() || c == '.' => {
                    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                        i += 1;
                    }
                }
                c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                    let start = i;
                    while i < chars.len()
                        && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i]))
                    {
                        i += 1;
                    }
                    let word: String = chars[start..i].iter().collect();
                    let mut next = i;
                    while next < chars.len() && chars[next].is_whitespace() {
                        next += 1;
                    }
                    let call = chars.get(next) == Some(&'(');
                    if LABEL_LIST.contains(&word.as_str()) {
                        if call {
                            i = next;
                            skip_group(&mut i, '(', ')');
                        }
                    } else if !call && !KEYWORDS.contains(&word.as_str()) {
                        names.push(word);
                    }
                }
                _ => i += 1,
            }
        }
        names
    }

    #[test]
    fn metric_names_are_read_out_of_promql() {
        let expr = r#"histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{job=~"$job",x="b c"}[$__rate_interval]))) > on(job) group_left(pod) (b - time()) and c:recorded offset 5m unless d{le="1"} / 2e3"#;
        assert_eq!(metric_names(expr), ["a_bucket", "b", "c:recorded", "d"]);
    }

    /// A query of the dashboard or an expression of an alert rule.
    fn queries() -> Vec<(String, String)> {
        let root = env!("CARGO_MANIFEST_DIR");
        let read = |path: &str| {
            std::fs::read_to_string(format!("{root}/{path}"))
                .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
        };
        let mut queries = Vec::new();
        let rules: serde_json::Value =
            serde_yaml::from_str(&read("config/prometheus/rules.yaml")).unwrap();
        for rule in rules["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
        {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
            queries.push((
                format!("rule {name}"),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
        let dashboard: serde_json::Value =
            serde_json::from_str(&read("config/grafana/inference-access.json")).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let title = panel["title"].as_str().unwrap();
                queries.push((
                    format!("panel {title:?}"),
                    target["expr"].as_str().unwrap().to_owned(),
                ));
            }
        }
        for variable in dashboard["templating"]["list"].as_array().unwrap() {
            // Grafana's label_values(<selector>, <label>): only the selector is PromQL.
            if let Some(query) = variable["query"]["query"].as_str() {
                let selector = query
                    .strip_prefix("label_values(")
                    .and_then(|inner| inner.rsplit_once(','))
                    .map(|(selector, _)| selector)
                    .unwrap_or(query);
                let name = variable["name"].as_str().unwrap();
                queries.push((format!("variable {name}"), selector.to_owned()));
            }
        }
        queries
    }

    #[test]
    fn alerts_and_dashboard_query_only_metrics_the_operator_exports() {
        // Labelled counters appear once they have a series.
        let metrics = Metrics::default();
        metrics.reconciled(Duration::from_millis(1), Some("token_request"));
        metrics.credential_minted(true);
        let exported = exported_names(&metrics);
        let queries = queries();
        assert!(queries.len() > 20, "{queries:?}");
        for (what, expr) in &queries {
            let names = metric_names(expr);
            let (ours, theirs): (Vec<&String>, Vec<&String>) = names
                .iter()
                .partition(|n| n.starts_with("inference_access_"));
            assert!(
                !ours.is_empty(),
                "{what} queries none of the operator's metrics: {expr}"
            );
            assert!(
                theirs.is_empty(),
                "{what} queries metrics of someone else: {theirs:?}"
            );
            for name in ours {
                assert!(
                    exported.contains(name),
                    "{what}: {name} is not exported; the operator exports {exported:?}"
                );
            }
        }
    }
}
