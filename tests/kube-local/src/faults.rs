//! Fault injection: failing requests, latency, dropped watches, compaction, refused connections.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::store::Store;

/// Fail the next `count` requests that match `verb` and `resource` with `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// Kubernetes verb (get, list, watch, create, update, patch, delete, deletecollection); None = any.
    #[serde(default)]
    pub verb: Option<String>,
    /// Plural resource, optionally with a subresource (`serviceaccounts/token`); None = any.
    #[serde(default)]
    pub resource: Option<String>,
    pub count: u32,
    /// 429, 500, 503 or 409.
    pub status: u16,
    /// Seconds for the Retry-After header (and Status details.retryAfterSeconds).
    #[serde(default)]
    pub retry_after: Option<u32>,
}

impl FaultRule {
    pub fn new(verb: &str, resource: &str, count: u32, status: u16) -> Self {
        Self {
            verb: Some(verb.to_string()),
            resource: Some(resource.to_string()),
            count,
            status,
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    fn matches(&self, verb: &str, resource: &str, subresource: Option<&str>) -> bool {
        let full = match subresource {
            Some(s) => format!("{resource}/{s}"),
            None => resource.to_string(),
        };
        self.verb.as_deref().is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == full)
    }

    fn error(&self) -> ApiError {
        let (reason, message) = match self.status {
            429 => (
                "TooManyRequests",
                "Too many requests, please try again later.",
            ),
            409 => (
                "Conflict",
                "Operation cannot be fulfilled: injected conflict (kube-local fault)",
            ),
            503 => (
                "ServiceUnavailable",
                "The server is currently unable to handle the request (kube-local fault)",
            ),
            500 => (
                "InternalError",
                "Internal error occurred: injected failure (kube-local fault)",
            ),
            _ => ("InternalError", "injected failure (kube-local fault)"),
        };
        let mut e = ApiError::new(self.status, reason, message);
        e.retry_after = self.retry_after;
        e
    }
}

pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    latency: Mutex<Duration>,
    store: Store,
    /// Bumped to end every open watch.
    pub(crate) drop_watches: watch::Sender<u64>,
    /// How long the listener should stop accepting (the server loop acts on each change).
    pub(crate) refuse: watch::Sender<Option<Duration>>,
}

impl Faults {
    pub(crate) fn new(store: Store) -> Self {
        Self {
            rules: Mutex::new(Vec::new()),
            latency: Mutex::new(Duration::ZERO),
            store,
            drop_watches: watch::channel(0).0,
            refuse: watch::channel(None).0,
        }
    }

    /// Fails the next `rule.count` matching requests.
    pub fn fail_next(&self, rule: FaultRule) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rule);
    }

    /// Adds this latency to every API request (zero to stop).
    pub fn latency(&self, latency: Duration) {
        *self.latency.lock().unwrap_or_else(|p| p.into_inner()) = latency;
    }

    /// Ends every open watch (the response stream closes, as when an API server restarts).
    pub fn drop_watches(&self) {
        self.drop_watches.send_modify(|g| *g += 1);
    }

    /// Compacts the watch history: resuming from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        self.store.compact();
    }

    /// Closes the listener and every open connection, and accepts again after `duration`
    /// on the same port with all state intact.
    pub fn refuse_connections_for(&self, duration: Duration) {
        self.refuse.send_replace(Some(duration));
    }

    /// Removes pending fail-next rules and latency.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.latency(Duration::ZERO);
    }

    pub(crate) fn current_latency(&self) -> Duration {
        *self.latency.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The injected error for this request, if a rule matches (consuming one of its count).
    pub(crate) fn take(
        &self,
        verb: &str,
        resource: &str,
        subresource: Option<&str>,
    ) -> Option<ApiError> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let i = rules
            .iter()
            .position(|r| r.count > 0 && r.matches(verb, resource, subresource))?;
        rules[i].count -= 1;
        let err = rules[i].error();
        if rules[i].count == 0 {
            rules.remove(i);
        }
        Some(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_count_down() {
        let f = Faults::new(Store::new());
        f.fail_next(FaultRule::new("create", "serviceaccounts/token", 2, 429).retry_after(1));
        assert!(f.take("create", "serviceaccounts", None).is_none());
        let e = f.take("create", "serviceaccounts", Some("token"));
        assert_eq!(
            e.as_ref().map(|e| (e.code, e.retry_after)),
            Some((429, Some(1)))
        );
        assert!(f.take("create", "serviceaccounts", Some("token")).is_some());
        assert!(f.take("create", "serviceaccounts", Some("token")).is_none());
    }
}
