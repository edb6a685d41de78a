//! Step 5: a request with the credential through the gateway, after an issue or a change, and
//! again with backoff while it fails. Never blocks the credential. Runs after the mesh step, so
//! a fresh policy is in place before the first probe.

use std::time::Duration;

use super::backoff::{Counter, backoff};
use super::plan::Plan;
use crate::core::credential::Credential;
use crate::core::diagnosis::Diagnosis;
use crate::core::endpoint::Endpoint;
use crate::gateway::client::GatewayClient;
use crate::gateway::probe;

/// A fresh policy takes Istio a moment to push to the sidecar: probe again soon, then back off.
const VERIFY_BACKOFF_BASE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub enum VerifyOutcome {
    /// `spec.verification.enabled` is false.
    Disabled,
    /// The last probe succeeded and nothing changed since: its result stands.
    NotDue,
    Probed {
        diagnosis: Diagnosis,
        endpoint: Endpoint,
        /// When to probe again after a failure.
        retry_in: Option<Duration>,
    },
}

/// The outcome when no probe is due; `None` when one is.
pub fn skipped(plan: &Plan, changed: bool, last_succeeded: bool) -> Option<VerifyOutcome> {
    if !plan.verification {
        return Some(VerifyOutcome::Disabled);
    }
    (last_succeeded && !changed).then_some(VerifyOutcome::NotDue)
}

/// Probes the gateway with the credential, as a client would.
pub async fn run(
    gateway: Option<&GatewayClient>,
    failures: &Counter,
    plan: &Plan,
    endpoint: &Endpoint,
    credential: &Credential,
) -> VerifyOutcome {
    let diagnosis = match gateway {
        Some(client) => probe::verify(client, endpoint, credential).await,
        None => Diagnosis::GatewayUnreachable {
            error: "no HTTP client could be built".into(),
        },
    };
    let failed = failures.record(&plan.access.key(), !diagnosis.is_reachable());
    VerifyOutcome::Probed {
        diagnosis,
        endpoint: endpoint.clone(),
        retry_in: (failed > 0).then(|| backoff(VERIFY_BACKOFF_BASE, failed)),
    }
}
