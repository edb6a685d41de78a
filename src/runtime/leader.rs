//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it:
//! take the Lease when it is free or expired, renew it well inside its duration, and treat a
//! renewal that cannot succeed before the Lease would expire as lost leadership.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::reconcile::error::describe;

#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's name (the pod name in a cluster).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews, and candidates retry.
    pub retry_period: Duration,
}

/// What to do with the Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, held by us.
    Create,
    /// Free, expired, or already ours: write it as ours. `transitions` counts holder changes.
    Acquire { transitions: i32 },
    /// Someone else holds a live Lease.
    Wait { holder: String },
}

/// Pure: the decision for `me` at `now`.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let transitions = spec.lease_transitions.unwrap_or(0);
    if holder == me {
        return Decision::Acquire { transitions };
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let expired = spec
        .renew_time
        .as_ref()
        .is_none_or(|renewed| renewed.0 + duration <= now);
    if holder.is_empty() || expired {
        Decision::Acquire {
            transitions: transitions.saturating_add(1),
        }
    } else {
        Decision::Wait { holder }
    }
}

pub struct Elector {
    api: Api<Lease>,
    settings: Settings,
}

impl Elector {
    pub fn new(client: kube::Client, settings: Settings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(
                self.settings
                    .lease_duration
                    .as_secs()
                    .try_into()
                    .unwrap_or(i32::MAX),
            ),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to take or renew the Lease. `Ok(true)` when we hold it now.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.settings.lease_name).await?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.settings.identity,
            now,
        );
        let result = match (decision, current) {
            (Decision::Wait { .. }, _) => return Ok(false),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.lease_name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Acquire { transitions }, Some(mut lease)) => {
                let ours = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    == Some(self.settings.identity.as_str());
                let acquired = if ours {
                    lease.spec.as_ref().and_then(|s| s.acquire_time.clone())
                } else {
                    None
                };
                lease.spec = Some(self.spec(now, acquired, transitions));
                // The resourceVersion in `lease` makes this a compare-and-swap: two candidates
                // taking an expired Lease at once cannot both win.
                self.api
                    .replace(&self.settings.lease_name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::Acquire { .. }, None) => return Ok(false),
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Waits until this replica leads. `false` when shutdown came first.
    pub async fn acquire(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut tick = tokio::time::interval(self.settings.retry_period);
        let mut waiting_logged = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return false,
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.settings.lease_name, identity = %self.settings.identity, "acquired leadership");
                    return true;
                }
                Ok(false) if !waiting_logged => {
                    info!(lease = %self.settings.lease_name, "another replica leads; standing by");
                    waiting_logged = true;
                }
                Ok(false) => {}
                Err(err) => {
                    warn!(lease = %self.settings.lease_name, error = %describe(&err), "cannot read or take the leader Lease")
                }
            }
        }
    }

    /// Renews until a renewal cannot succeed before the Lease would expire; returns then.
    pub async fn hold(&self) {
        let mut tick = tokio::time::interval(self.settings.retry_period);
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.settings.lease_name, "another replica took the leader Lease");
                    return;
                }
                Err(err) => {
                    warn!(lease = %self.settings.lease_name, error = %describe(&err), "cannot renew the leader Lease")
                }
            }
            if last_renewal.elapsed() >= self.settings.lease_duration {
                warn!(lease = %self.settings.lease_name, "leader Lease expired without renewal");
                return;
            }
        }
    }

    /// Hands the Lease over at shutdown so a standby takes over at once, not after expiry.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.lease_name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.settings.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.settings.lease_name, "released leadership"),
            Err(err) => {
                warn!(lease = %self.settings.lease_name, error = %describe(&err), "cannot release the leader Lease")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ts;

    fn lease(holder: Option<&str>, renewed: Option<&str>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: Some(15),
            renew_time: renewed.map(|r| MicroTime(ts(r))),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decision_table() {
        let now = ts("2026-01-01T00:00:20Z");
        let cases = [
            (None, Decision::Create),
            (
                Some(lease(Some("me"), Some("2026-01-01T00:00:19Z"), 3)),
                Decision::Acquire { transitions: 3 },
            ),
            // Ours even when expired: renewing keeps the count.
            (
                Some(lease(Some("me"), Some("2026-01-01T00:00:00Z"), 3)),
                Decision::Acquire { transitions: 3 },
            ),
            (
                Some(lease(Some("other"), Some("2026-01-01T00:00:10Z"), 3)),
                Decision::Wait {
                    holder: "other".into(),
                },
            ),
            // Expired exactly at renew + 15 s.
            (
                Some(lease(Some("other"), Some("2026-01-01T00:00:05Z"), 3)),
                Decision::Acquire { transitions: 4 },
            ),
            (
                Some(lease(None, Some("2026-01-01T00:00:19Z"), 3)),
                Decision::Acquire { transitions: 4 },
            ),
            (
                Some(lease(Some("other"), None, 0)),
                Decision::Acquire { transitions: 1 },
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(decide(spec.as_ref(), "me", now), expected, "{spec:?}");
        }
    }
}
