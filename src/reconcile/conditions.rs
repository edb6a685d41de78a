//! Conditions: the readiness chain and how it becomes the published status. Pure.
//!
//! Readiness is a chain of three checks (InferenceService, credential, access policy), each
//! mapping onto one condition with a reason a person can act on; `Ready` is the first check
//! that is not satisfied, or all of them.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::issue::LoginRefusals;
use crate::api::{InferenceAccess, InferenceAccessStatus};

pub const READY: &str = "Ready";
pub const INFERENCE_SERVICE_READY: &str = "InferenceServiceReady";
pub const CREDENTIAL_ISSUED: &str = "CredentialIssued";
pub const ACCESS_POLICY_READY: &str = "AccessPolicyReady";
/// Diagnostic, outside the readiness chain: whether a request with the credential reached the
/// model through the gateway (the operator may not see the gateway clients use).
pub const ENDPOINT_VERIFIED: &str = "EndpointVerified";

/// Every condition reason the operator writes: the README documents each.
pub mod reason {
    pub const READY: &str = "Ready";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    // Refusals of what the cluster admin's limits (or the owner of the object) do not allow.
    pub const AUDIENCE_NOT_ALLOWED: &str = "AudienceNotAllowed";
    pub const GATEWAY_NOT_ALLOWED: &str = "GatewayNotAllowed";
    pub const MESH_SETTING_NOT_ALLOWED: &str = "MeshSettingNotAllowed";
    pub const TEMPLATE_NOT_ALLOWED: &str = "TemplateNotAllowed";
    pub const SERVICE_ACCOUNT_NOT_ALLOWED: &str = "ServiceAccountNotAllowed";
    pub const CREDENTIALS_SECRET_NOT_ALLOWED: &str = "CredentialsSecretNotAllowed";
    pub const DEX_LOGIN_STOPPED: &str = "DexLoginStopped";
    pub const INFERENCE_SERVICE_NOT_FOUND: &str = "InferenceServiceNotFound";
    pub const INFERENCE_SERVICE_NOT_READY: &str = "InferenceServiceNotReady";
    pub const INFERENCE_SERVICE_FAILED: &str = "InferenceServiceApplyFailed";
    pub const TEMPLATE_CONFLICT: &str = "TemplateConflict";
    pub const INVALID_TEMPLATE: &str = "InvalidTemplate";
    pub const WAITING_FOR_URL: &str = "WaitingForURL";
    pub const SERVICE_ACCOUNT_NOT_FOUND: &str = "ServiceAccountNotFound";
    pub const SERVICE_ACCOUNT_CONFLICT: &str = "ServiceAccountConflict";
    pub const SERVICE_ACCOUNT_FAILED: &str = "ServiceAccountFailed";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    pub const SECRET_WRITE_FAILED: &str = "SecretWriteFailed";
    pub const ISSUED: &str = "Issued";
    pub const TOKEN_REQUEST_FAILED: &str = "TokenRequestFailed";
    pub const DEX_LOGIN_FAILED: &str = "DexLoginFailed";
    pub const CREDENTIALS_SECRET_INVALID: &str = "CredentialsSecretInvalid";
    pub const POLICY_APPLIED: &str = "PolicyApplied";
    pub const NO_SIDECAR: &str = "NoSidecar";
    pub const SIDECAR_DISABLED: &str = "SidecarDisabled";
    pub const UNMANAGED: &str = "Unmanaged";
    pub const ISTIO_NOT_INSTALLED: &str = "IstioNotInstalled";
    pub const POLICY_CONFLICT: &str = "PolicyConflict";
    pub const POLICY_FAILED: &str = "PolicyApplyFailed";
    // mesh.mode Auto.
    pub const WAYPOINT_POLICY_APPLIED: &str = "WaypointPolicyApplied";
    pub const GATEWAY_POLICY_APPLIED: &str = "GatewayPolicyApplied";
    pub const INGRESS_BYPASSES_WAYPOINT: &str = "IngressBypassesWaypoint";
    pub const NO_WAYPOINT: &str = "NoWaypoint";
    pub const NO_ENFORCEMENT: &str = "NoEnforcement";
    pub const GATEWAY_POLICY_NOT_ALLOWED: &str = "GatewayPolicyNotAllowed";
    pub const GATEWAY_NOT_AUTHENTICATING: &str = "GatewayNotAuthenticating";
    pub const SESSION_AT_GATEWAY: &str = "SessionAtGateway";
    pub const DATA_PATH_FORBIDDEN: &str = "DataPathForbidden";
    pub const PENDING: &str = "Pending";
    pub const VERIFICATION_DISABLED: &str = "VerificationDisabled";
    /// The model is in another namespace and no ReferenceGrant there admits this access.
    pub const CONSENT_PENDING: &str = "ConsentPending";
    /// The operator watches listed namespaces only: it cannot follow a consent elsewhere.
    pub const CROSS_NAMESPACE_NOT_AVAILABLE: &str = "CrossNamespaceNotAvailable";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    True,
    False,
    Unknown,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::True => "True",
            State::False => "False",
            State::Unknown => "Unknown",
        }
    }
}

/// One link of the readiness chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub state: State,
    pub reason: String,
    pub message: String,
}

impl Check {
    pub fn ok(reason: &str, message: impl Into<String>) -> Self {
        Self {
            state: State::True,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    pub fn failed(reason: &str, message: impl Into<String>) -> Self {
        Self {
            state: State::False,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    pub fn unknown(reason: &str, message: impl Into<String>) -> Self {
        Self {
            state: State::Unknown,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    pub fn pending(message: impl Into<String>) -> Self {
        Self::unknown(reason::PENDING, message)
    }

    /// The check a published condition recorded, to carry it forward unchanged.
    pub fn from_condition(condition: &Condition) -> Self {
        let state = match condition.status.as_str() {
            "True" => State::True,
            "False" => State::False,
            _ => State::Unknown,
        };
        Self {
            state,
            reason: condition.reason.clone(),
            message: condition.message.clone(),
        }
    }
}

/// What one reconcile found, check by check, and the values the status shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Checks {
    pub inference_service: Check,
    pub credential: Check,
    pub access_policy: Check,
    /// `None` when this reconcile did not probe the gateway: the last result stands.
    pub endpoint: Option<Check>,
    pub url: Option<String>,
    pub host: Option<String>,
    pub secret_name: Option<String>,
    pub service_account_name: Option<String>,
    pub token_expiration_time: Option<Timestamp>,
    pub renewal_time: Option<Timestamp>,
    pub last_renew_request: Option<String>,
    pub login_refusals: Option<LoginRefusals>,
    /// mesh.mode Auto: the path found (`status.meshPath`).
    pub mesh_path: Option<String>,
    /// `None` when this reconcile did not look: the last list stands.
    pub consumers: Option<Vec<crate::api::Consumer>>,
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            inference_service: Check::pending("the InferenceService has not been checked yet"),
            credential: Check::pending("no credential has been issued yet"),
            access_policy: Check::pending("the access policy has not been checked yet"),
            endpoint: None,
            url: None,
            host: None,
            secret_name: None,
            service_account_name: None,
            token_expiration_time: None,
            renewal_time: None,
            last_renew_request: None,
            login_refusals: None,
            mesh_path: None,
            consumers: None,
        }
    }
}

impl Checks {
    /// The first unsatisfied check decides `Ready`. `EndpointVerified` never gates it (the
    /// operator may not see the gateway clients use) but the message never claims more than it
    /// showed.
    pub fn ready(&self, endpoint: Option<&Check>) -> Check {
        if let Some(unsatisfied) = [
            &self.inference_service,
            &self.credential,
            &self.access_policy,
        ]
        .into_iter()
        .find(|check| check.state != State::True)
        {
            return unsatisfied.clone();
        }
        let message = match endpoint {
            Some(check) if check.state == State::True => {
                "the credential in the Secret reaches the InferenceService".to_owned()
            }
            Some(check) if check.state == State::False => format!(
                "the credential is issued and the access policy is in place, but a request with it through the gateway failed ({}): see EndpointVerified",
                check.reason
            ),
            _ => "the credential is issued and the access policy is in place (not verified through the gateway)".to_owned(),
        };
        Check::ok(reason::READY, message)
    }
}

/// The status to publish: conditions keep their `lastTransitionTime` unless their status flipped.
pub fn build_status(
    checks: &Checks,
    previous: Option<&InferenceAccessStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> InferenceAccessStatus {
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    // Not probed this time: the last result stands.
    let endpoint = checks
        .endpoint
        .clone()
        .or_else(|| last_endpoint_check(previous).map(Check::from_condition));
    let conditions = [
        (READY, checks.ready(endpoint.as_ref())),
        (INFERENCE_SERVICE_READY, checks.inference_service.clone()),
        (CREDENTIAL_ISSUED, checks.credential.clone()),
        (ACCESS_POLICY_READY, checks.access_policy.clone()),
    ]
    .into_iter()
    .chain(endpoint.map(|check| (ENDPOINT_VERIFIED, check)))
    .map(|(type_, check)| condition(type_, &check, previous_conditions, generation, now))
    .collect();
    InferenceAccessStatus {
        observed_generation: generation,
        url: checks.url.clone(),
        host: checks.host.clone(),
        secret_name: checks.secret_name.clone(),
        service_account_name: checks.service_account_name.clone(),
        token_expiration_time: checks.token_expiration_time.map(api_time),
        renewal_time: checks.renewal_time.map(api_time),
        last_renew_request: checks.last_renew_request.clone(),
        login_refusals: checks.login_refusals.as_ref().map(|r| r.count),
        login_refused_secret_version: checks
            .login_refusals
            .as_ref()
            .map(|r| r.secret_version.clone()),
        mesh_path: checks.mesh_path.clone(),
        conditions,
        consumers: checks
            .consumers
            .clone()
            .or_else(|| previous.map(|p| p.consumers.clone()))
            .unwrap_or_default(),
    }
}

/// A time as the API keeps it: `metav1.Time` holds whole seconds. A status built with finer
/// times never equals the one read back, so it would be written again on every reconcile
/// (and after every restart).
fn api_time(time: Timestamp) -> Time {
    Time(Timestamp::from_second(time.as_second()).unwrap_or(time))
}

/// The last published `EndpointVerified`, if any.
fn last_endpoint_check(previous: Option<&InferenceAccessStatus>) -> Option<&Condition> {
    previous?
        .conditions
        .iter()
        .find(|c| c.type_ == ENDPOINT_VERIFIED)
}

/// Whether the last probe succeeded for the access's current generation: no need to probe
/// again until something changes.
pub fn endpoint_verified(access: &InferenceAccess) -> bool {
    last_endpoint_check(access.status.as_ref())
        .is_some_and(|c| c.status == "True" && c.observed_generation == access.metadata.generation)
}

fn condition(
    type_: &str,
    check: &Check,
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = check.state.as_str();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| api_time(now));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: check.reason.to_owned(),
        message: check.message.clone(),
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
#[path = "conditions_tests.rs"]
mod tests;
