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

pub struct Inputs<'a> {
    pub endpoint: &'a Endpoint,
    pub credential: &'a Credential,
    /// This reconcile wrote the Secret (a new credential or endpoint).
    pub changed: bool,
    /// The last published `EndpointVerified` was True for this generation.
    pub last_succeeded: bool,
}

pub async fn run(
    gateway: Option<&GatewayClient>,
    failures: &Counter,
    plan: &Plan,
    inputs: Inputs<'_>,
) -> VerifyOutcome {
    if !plan.verification {
        return VerifyOutcome::Disabled;
    }
    if inputs.last_succeeded && !inputs.changed {
        return VerifyOutcome::NotDue;
    }
    let diagnosis = match gateway {
        Some(client) => probe::verify(client, inputs.endpoint, inputs.credential).await,
        None => Diagnosis::GatewayUnreachable {
            error: "no HTTP client could be built".into(),
        },
    };
    let failed = failures.record(&plan.access.key(), !diagnosis.is_reachable());
    VerifyOutcome::Probed {
        diagnosis,
        endpoint: inputs.endpoint.clone(),
        retry_in: (failed > 0).then(|| backoff(VERIFY_BACKOFF_BASE, failed)),
    }
}
