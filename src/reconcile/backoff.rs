//! Consecutive failures per access and the exponential backoff they give.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// `base` doubled per consecutive failure, capped at five minutes.
pub fn backoff(base: Duration, failures: u32) -> Duration {
    base.saturating_mul(2_u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(BACKOFF_MAX)
}

/// The key counts are kept under: `namespace/name`, as `AccessRef::key` gives it.
pub fn key(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or_default())
}

/// Consecutive failures, by access key (`namespace/name`); a success resets the count.
#[derive(Debug, Default)]
pub struct Counter(Mutex<HashMap<String, u32>>);

impl Counter {
    /// Records one outcome and returns the count after it (0 after a success).
    pub fn record(&self, key: &str, failed: bool) -> u32 {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if failed {
            let count = counts.entry(key.to_owned()).or_default();
            *count = count.saturating_add(1);
            *count
        } else {
            counts.remove(key);
            0
        }
    }

    /// The current count, at least 1: the error policy runs after a failure was recorded.
    pub fn failures(&self, key: &str) -> u32 {
        let counts = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.get(key).copied().unwrap_or(1)
    }

    /// Drops the count of an access that is gone, so failing accesses deleted over time do
    /// not accumulate.
    pub fn forget(&self, key: &str) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(key);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.0.lock().map(|c| c.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_up_reset_on_success_and_back_off_to_a_cap() {
        let counts = Counter::default();
        assert_eq!(counts.record("ns/client", true), 1);
        assert_eq!(counts.record("ns/client", true), 2);
        assert_eq!(counts.failures("ns/client"), 2);
        assert_eq!(counts.record("ns/client", false), 0);
        assert_eq!(counts.tracked(), 0);
        counts.record("ns/gone", true);
        counts.forget("ns/gone");
        assert_eq!(counts.tracked(), 0);
        let delays: Vec<_> = [1, 2, 3, 9, 40]
            .into_iter()
            .map(|n| backoff(Duration::from_secs(2), n).as_secs())
            .collect();
        assert_eq!(delays, [2, 4, 8, 300, 300]);
    }
}
