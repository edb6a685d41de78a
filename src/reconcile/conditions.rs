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
mod tests {
    use super::*;
    use crate::fixtures::ts;

    fn all_ok() -> Checks {
        Checks {
            inference_service: Check::ok(reason::READY, "ready"),
            credential: Check::ok(reason::ISSUED, "issued"),
            access_policy: Check::ok(reason::POLICY_APPLIED, "applied"),
            ..Checks::default()
        }
    }

    #[test]
    fn ready_is_the_first_unsatisfied_check() {
        let cases = [
            (all_ok(), State::True, reason::READY),
            (
                Checks {
                    inference_service: Check::failed(reason::INFERENCE_SERVICE_NOT_FOUND, "x"),
                    ..all_ok()
                },
                State::False,
                reason::INFERENCE_SERVICE_NOT_FOUND,
            ),
            (
                Checks {
                    credential: Check::failed(reason::TOKEN_REQUEST_FAILED, "x"),
                    access_policy: Check::failed(reason::ISTIO_NOT_INSTALLED, "y"),
                    ..all_ok()
                },
                State::False,
                reason::TOKEN_REQUEST_FAILED,
            ),
            (
                Checks {
                    access_policy: Check::failed(reason::NO_SIDECAR, "x"),
                    ..all_ok()
                },
                State::False,
                reason::NO_SIDECAR,
            ),
            (Checks::default(), State::Unknown, reason::PENDING),
        ];
        for (checks, state, reason) in cases {
            let ready = checks.ready(None);
            assert_eq!(
                (ready.state, ready.reason.as_str()),
                (state, reason),
                "{checks:?}"
            );
        }
    }

    #[test]
    fn the_whole_status_is_built_from_the_checks() {
        let checks = Checks {
            url: Some("http://m.ns.example.com".into()),
            host: Some("m.ns.example.com".into()),
            secret_name: Some("client-credential".into()),
            service_account_name: Some("client".into()),
            token_expiration_time: Some(ts("2026-01-01T01:00:00Z")),
            renewal_time: Some(ts("2026-01-01T00:40:00Z")),
            ..all_ok()
        };
        let status = build_status(&checks, None, Some(3), ts("2026-01-01T00:00:00Z"));
        let condition = |t: &str, s: &str, r: &str, m: &str| {
            serde_json::json!({"type": t, "status": s, "reason": r, "message": m,
                "observedGeneration": 3, "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::json!({
                "observedGeneration": 3,
                "url": "http://m.ns.example.com",
                "host": "m.ns.example.com",
                "secretName": "client-credential",
                "serviceAccountName": "client",
                "tokenExpirationTime": "2026-01-01T01:00:00Z",
                "renewalTime": "2026-01-01T00:40:00Z",
                "conditions": [
                    condition("Ready", "True", "Ready", "the credential is issued and the access policy is in place (not verified through the gateway)"),
                    condition("InferenceServiceReady", "True", "Ready", "ready"),
                    condition("CredentialIssued", "True", "Issued", "issued"),
                    condition("AccessPolicyReady", "True", "PolicyApplied", "applied"),
                ]
            })
        );
    }

    #[test]
    fn a_status_with_sub_second_times_equals_itself_read_back() {
        let checks = Checks {
            token_expiration_time: Some(ts("2026-01-01T01:00:00.25Z")),
            renewal_time: Some(ts("2026-01-01T00:40:00.123456789Z")),
            ..all_ok()
        };
        let now = ts("2026-01-01T00:00:00.5Z");
        let first = build_status(&checks, None, Some(1), now);
        let read_back: InferenceAccessStatus =
            serde_json::from_value(serde_json::to_value(&first).unwrap()).unwrap();
        assert_eq!(read_back, first);
        // The next reconcile, from what the API server returned, builds the same status.
        assert_eq!(
            build_status(&checks, Some(&read_back), Some(1), now),
            read_back
        );
    }

    #[test]
    fn last_transition_time_moves_only_when_a_condition_flips() {
        let first = build_status(&all_ok(), None, Some(1), ts("2026-01-01T00:00:00Z"));
        // Same states an hour later, new messages: times stay.
        let mut later = all_ok();
        later.credential = Check::ok(reason::ISSUED, "renewed");
        let second = build_status(&later, Some(&first), Some(1), ts("2026-01-01T01:00:00Z"));
        assert!(
            second
                .conditions
                .iter()
                .all(|c| c.last_transition_time.0 == ts("2026-01-01T00:00:00Z"))
        );
        // The policy breaks: it and Ready flip, the others keep their time.
        let mut broken = all_ok();
        broken.access_policy = Check::failed(reason::POLICY_FAILED, "x");
        let third = build_status(&broken, Some(&second), Some(2), ts("2026-01-01T02:00:00Z"));
        let times: Vec<_> = third
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.last_transition_time.0.to_string()))
            .collect();
        assert_eq!(
            times,
            [
                ("Ready", "2026-01-01T02:00:00Z".to_owned()),
                ("InferenceServiceReady", "2026-01-01T00:00:00Z".to_owned()),
                ("CredentialIssued", "2026-01-01T00:00:00Z".to_owned()),
                ("AccessPolicyReady", "2026-01-01T02:00:00Z".to_owned()),
            ]
        );
        assert!(
            third
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(2))
        );
    }

    #[test]
    fn an_unchanged_checks_builds_an_equal_status() {
        let first = build_status(&all_ok(), None, Some(1), ts("2026-01-01T00:00:00Z"));
        let again = build_status(&all_ok(), Some(&first), Some(1), ts("2026-01-01T05:00:00Z"));
        assert_eq!(first, again);
    }
}

#[cfg(test)]
#[path = "conditions_endpoint_tests.rs"]
mod endpoint_tests;
