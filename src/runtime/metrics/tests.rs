use jiff::SignedDuration;
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

/// Metrics watching accesses, and the writer their watch feeds.
fn watching() -> (Metrics, AccessSeriesWriter) {
    let metrics = Metrics::default();
    let writer = metrics.watch_accesses();
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
        format!("inference_access_credential_expiration_timestamp_seconds{{{labels}}} 1767229200"),
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
fn a_relist_replaces_the_series_when_it_is_complete() {
    let (metrics, mut writer) = watching();
    let named = |name: &str| {
        let mut access = cached_access(serde_json::Value::Null);
        access.metadata.name = Some(name.into());
        access
    };
    writer.apply_watcher_event(&Event::Apply(named("gone")));
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitApply(named("listed")));
    let text = metrics.encode().unwrap();
    assert!(
        text.contains("name=\"gone\"") && !text.contains("name=\"listed\""),
        "{text}"
    );
    writer.apply_watcher_event(&Event::InitDone);
    let text = metrics.encode().unwrap();
    assert!(
        !text.contains("name=\"gone\"") && text.contains("name=\"listed\""),
        "{text}"
    );
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
    let names: Vec<&str> = held.keys().map(|key| &**key).collect();
    assert_eq!(names, ["ns/valid"]);
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
                while i < chars.len() && (chars[i].is_alphanumeric() || "_{}".contains(chars[i])) {
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

/// `count` accesses with a credential and four conditions each, in one cache.
fn many_accesses(count: usize) -> (Arc<Metrics>, AccessSeriesWriter) {
    let (metrics, mut writer) = watching();
    let condition = |type_: &str| serde_json::json!({"type": type_, "status": "True", "reason": "R", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    for i in 0..count {
        let mut access = cached_access(serde_json::json!({
            "tokenExpirationTime": "2026-01-01T01:00:00Z",
            "renewalTime": "2026-01-01T00:40:00Z",
            "conditions": [condition("Ready"), condition("CredentialIssued"),
                condition("InferenceServiceReady"), condition("AccessPolicyReady")]
        }));
        access.metadata.name = Some(format!("a-{i}"));
        writer.apply_watcher_event(&Event::Apply(access));
        metrics.credential_held(
            "ns",
            &format!("a-{i}"),
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-01T01:00:00Z"),
        );
    }
    (Arc::new(metrics), writer)
}

#[tokio::test]
async fn a_streamed_scrape_is_the_exposition_in_chunks() {
    use futures::StreamExt;
    let (metrics, _writer) = many_accesses(500);
    let whole = metrics.encode().unwrap();
    let chunks: Vec<_> = metrics.clone().stream().collect().await;
    assert!(
        chunks.len() > 5,
        "{} chunks for {} bytes",
        chunks.len(),
        whole.len()
    );
    assert!(chunks.iter().all(|c| c.len() < 2 * CHUNK));
    let streamed: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(streamed).unwrap(), whole);
    assert!(whole.ends_with("# EOF\n"));
}

/// A scrape whose reader stops reading holds no lock a reconcile takes: here it waits in the
/// middle of the issue-time family, whose records a reconcile writes, and counting and recording
/// a credential go on.
#[tokio::test]
async fn a_scrape_nobody_reads_blocks_no_reconcile() {
    use futures::StreamExt;
    let (metrics, _writer) = many_accesses(3_000);
    let whole = metrics.encode().unwrap();
    let family = |name: &str| {
        whole
            .find(&format!("# HELP inference_access_{name}"))
            .unwrap()
    };
    let (issued, renewal) = (
        family("credential_issued_timestamp_seconds"),
        family("credential_renewal_timestamp_seconds"),
    );
    // The writer waits to hand over the chunk after the one the channel holds: the one that
    // ends (read + 2) chunks in, for `read` chunks read.
    let read = (issued / CHUNK).saturating_sub(1);
    assert!(
        (read + 2) * CHUNK > issued && (read + 3) * CHUNK < renewal,
        "the issue-time family spans {issued}..{renewal}: too short to wait in"
    );
    let mut scrape = Box::pin(metrics.clone().stream());
    for _ in 0..read {
        assert!(!scrape.next().await.unwrap().is_empty());
    }
    let counting = {
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..100 {
                metrics.reconciled(Duration::from_millis(1), Some("token_request"));
                metrics.credential_minted(i % 2 == 0);
                metrics.credential_held(
                    "ns",
                    &format!("new-{i}"),
                    ts("2026-01-01T00:00:00Z"),
                    ts("2026-01-01T01:00:00Z"),
                );
            }
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), counting)
        .await
        .expect("a reconcile waited for the scrape")
        .unwrap();
    drop(scrape);
    assert!(
        metrics
            .encode()
            .unwrap()
            .contains("inference_access_reconciles_total 100\n")
    );
}
