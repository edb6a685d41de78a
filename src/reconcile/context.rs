//! What every reconcile shares: the API client, the event recorder, the clock, metrics, the
//! gateway client, the per-access failure counts and when each access is looked at again.

use std::sync::Arc;

use jiff::Timestamp;
use kube::Client;

use super::backoff::Counter;
use super::cache::Caches;
use super::limits::Limits;
use super::report::HeldEvents;
use super::wakeups::Wakeups;
use crate::gateway::client::GatewayClient;
use crate::runtime::metrics::Metrics;
use crate::runtime::recorder::Recorder;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub clock: fn() -> Timestamp,
    pub metrics: Arc<Metrics>,
    /// For endpoint verification and Dex logins; `None` if no HTTP client could be built
    /// (reported as such).
    pub gateway: Option<GatewayClient>,
    /// Consecutive reconcile failures per access, for exponential backoff.
    pub failures: Counter,
    /// Consecutive failed endpoint probes per access, likewise.
    pub verify_failures: Counter,
    /// What the cluster admin allows a spec to ask for.
    pub limits: Limits,
    /// What reconciles read: the watch caches of this scope.
    pub caches: Caches,
    /// When each access is reconciled again.
    pub wakeups: Arc<Wakeups>,
    /// The Events of first reports held back while KServe is about to answer.
    pub held_events: HeldEvents,
}

impl Context {
    /// A context whose caches are empty and fed by no watch: tests fill them by hand.
    pub fn new(client: Client, recorder: Recorder, clock: fn() -> Timestamp) -> Self {
        let caches = Caches::detached().0;
        caches.mark_synced();
        Self::with_caches(client, recorder, clock, caches)
    }

    pub fn with_caches(
        client: Client,
        recorder: Recorder,
        clock: fn() -> Timestamp,
        caches: Caches,
    ) -> Self {
        Self {
            client,
            recorder,
            clock,
            metrics: Arc::default(),
            gateway: GatewayClient::new().ok(),
            failures: Counter::default(),
            verify_failures: Counter::default(),
            limits: Limits::default(),
            caches,
            wakeups: Arc::default(),
            held_events: HeldEvents::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Drops the counts of an access that is gone.
    pub fn forget(&self, namespace: Option<&str>, name: &str) {
        let key = super::backoff::key(namespace, name);
        self.failures.forget(&key);
        self.verify_failures.forget(&key);
        self.wakeups.set(&key, None);
        self.held_events.forget(&key);
    }
}
