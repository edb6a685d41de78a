//! Prometheus metrics. Labels are bounded: error categories and issue reasons are fixed sets;
//! the per-access expiry gauge has one series per existing access, read from the controller's
//! cache at scrape time, so a deleted access never leaves a stale series behind.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::InferenceAccess;

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
    expiry: Arc<ExpiryCollector>,
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
        let expiry = Arc::new(ExpiryCollector::default());
        registry.register_collector(Box::new(expiry.clone()));
        Self {
            registry,
            reconciles,
            errors,
            duration,
            credentials,
            expiry,
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

    /// Reports the expiry of every access a controller has in its cache.
    pub fn watch_expiry(&self, store: Store<InferenceAccess>) {
        self.expiry
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(store);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[derive(Default, Debug)]
struct ExpiryCollector {
    stores: Mutex<Vec<Store<InferenceAccess>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccessLabels {
    namespace: String,
    name: String,
    secret_name: String,
}

impl Collector for ExpiryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stores = self
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let series: Vec<(AccessLabels, i64)> = stores
            .iter()
            .flat_map(|store| store.state())
            .filter_map(|access| {
                let expires = access
                    .status
                    .as_ref()?
                    .token_expiration_time
                    .as_ref()?
                    .0
                    .as_second();
                let labels = AccessLabels {
                    namespace: access.namespace().unwrap_or_default(),
                    name: access.name_any(),
                    secret_name: crate::reconcile::plan::secret_name(&access),
                };
                Some((labels, expires))
            })
            .collect();
        let gauge = ConstGauge::new(0_i64);
        let mut family = encoder.encode_descriptor(
            "credential_expiration_timestamp_seconds",
            "When the credential of each access expires (Unix time), as cert-manager's certificate_expiration_timestamp_seconds",
            None,
            gauge.metric_type(),
        )?;
        for (labels, expires) in &series {
            ConstGauge::new(*expires).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "# TYPE inference_access_credential_expiration_timestamp_seconds gauge",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn expiry_comes_from_the_cache_and_leaves_with_the_access() {
        use kube::runtime::reflector::store;
        use kube::runtime::watcher::Event;
        let metrics = Metrics::default();
        let (reader, mut writer) = store::<InferenceAccess>();
        metrics.watch_expiry(reader);
        let access: InferenceAccess = serde_json::from_value(serde_json::json!({
            "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
            "metadata": {"name": "client", "namespace": "ns"},
            "spec": {"inferenceService": {"name": "m"}},
            "status": {"tokenExpirationTime": "2026-01-01T01:00:00Z"}
        }))
        .unwrap();
        writer.apply_watcher_event(&Event::Apply(access.clone()));
        let series = "inference_access_credential_expiration_timestamp_seconds{namespace=\"ns\",name=\"client\",secret_name=\"client-credential\"} 1767229200";
        assert!(
            metrics.encode().unwrap().contains(series),
            "{}",
            metrics.encode().unwrap()
        );
        writer.apply_watcher_event(&Event::Delete(access));
        assert!(!metrics.encode().unwrap().contains("name=\"client\""));
    }
}
