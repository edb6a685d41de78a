//! Every reason the README's status table documents, from the outcome that produces it.

use serde_json::json;

use super::auto_tests::{ambient, applied, auto, gateway, sidecar, unprotected, waypoint};
use super::*;
use crate::core::diagnosis::{DeniedAt, Diagnosis};
use crate::core::endpoint::Endpoint;
use crate::fixtures::{access, api_error, inference_service, token_record, ts};
use crate::reconcile::conditions::State;
use crate::reconcile::error::Kind;
use crate::reconcile::identity::Identity;
use crate::reconcile::limits::Limits;
use crate::reconcile::plan::validate;

const URL: &str = "http://m.ns.example.com";

fn plan(spec: serde_json::Value) -> Plan {
    validate(&access(spec).build(), &Limits::default()).unwrap()
}

pub(super) fn token_plan() -> Plan {
    plan(json!({"inferenceService": {"name": "m"}}))
}

fn dex_plan() -> Plan {
    plan(
        json!({"inferenceService": {"name": "m"}, "auth": {"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "dex-user"}}}}),
    )
}

fn failed(kind: Kind) -> Error {
    Error::Api {
        kind,
        source: api_error(500, "InternalError", "etcd is down"),
    }
}

fn found(url: Option<&str>) -> TargetOutcome {
    TargetOutcome::Found {
        isvc: std::sync::Arc::new(inference_service("m", url)),
        applied: false,
    }
}

fn ready_identity(plan: &Plan) -> IdentityOutcome {
    let IdentityPlan::ServiceAccount { request, .. } = &plan.identity else {
        panic!("a token plan")
    };
    IdentityOutcome::Ready {
        identity: Identity::ServiceAccount(request.clone()),
        applied: false,
    }
}

fn endpoint() -> Endpoint {
    Endpoint::resolve(URL, "http://gw", "m").unwrap()
}

fn issue(result: IssueResult) -> IssueOutcome {
    IssueOutcome {
        endpoint: Some(endpoint()),
        secret_seen: true,
        held: Some(token_record(
            "client",
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00Z",
        )),
        credential: None,
        login_refusals: None,
        result,
    }
}

fn ready_issue() -> IssueOutcome {
    issue(IssueResult::Ready {
        minted: None,
        written: false,
    })
}

fn policy_ready() -> MeshOutcome {
    MeshOutcome::PolicyReady {
        user_id: "system:serviceaccount:ns:client".into(),
        applied: false,
        no_sidecar: false,
    }
}

/// A whole pipeline that went through, with one part replaced.
pub(super) fn all_ready(plan: &Plan) -> Outcomes {
    Outcomes {
        target: found(Some(URL)),
        identity: Some(ready_identity(plan)),
        issue: Some(ready_issue()),
        consumers: Some(Default::default()),
        mesh: Some(policy_ready()),
        verify: Some(VerifyOutcome::NotDue),
    }
}

fn probed(diagnosis: Diagnosis) -> Option<VerifyOutcome> {
    Some(VerifyOutcome::Probed {
        diagnosis,
        endpoint: endpoint(),
        retry_in: None,
    })
}

/// (condition, reason, state) of the check each case is about.
type Expect = (&'static str, &'static str, State);

fn with_identity(outcome: IdentityOutcome) -> Outcomes {
    Outcomes {
        identity: Some(outcome),
        issue: None,
        mesh: None,
        ..all_ready(&token_plan())
    }
}

fn with_issue(result: IssueResult) -> Outcomes {
    Outcomes {
        issue: Some(issue(result)),
        ..all_ready(&token_plan())
    }
}

pub(super) fn with_mesh(outcome: MeshOutcome) -> Outcomes {
    Outcomes {
        mesh: Some(outcome),
        ..all_ready(&token_plan())
    }
}

pub(super) fn with_probe(diagnosis: Diagnosis) -> Outcomes {
    Outcomes {
        verify: probed(diagnosis),
        ..all_ready(&token_plan())
    }
}

const IS: &str = "InferenceServiceReady";
const CRED: &str = "CredentialIssued";
const AP: &str = "AccessPolicyReady";
const EV: &str = "EndpointVerified";

#[test]
fn every_documented_reason() {
    use MeshOutcome as M;
    use State::{False, True, Unknown};
    use TargetOutcome as T;
    let (token, dex) = (token_plan(), dex_plan());
    let now = ts("2026-01-01T00:30:00Z");
    let refused = || Error::DexLogin {
        message: "the login was refused".into(),
        refused: true,
    };
    let conflict = T::TemplateConflict {
        owner: Some("InferenceAccess/other".into()),
    };
    let no_sidecar = M::PolicyReady {
        user_id: "u".into(),
        applied: false,
        no_sidecar: true,
    };
    let cases: Vec<(&Plan, Outcomes, Expect)> = vec![
        (&token, all_ready(&token), ("Ready", "Ready", True)),
        (&token, all_ready(&token), (IS, "Ready", True)),
        (
            &token,
            Outcomes::new(T::NotFound),
            (IS, "InferenceServiceNotFound", False),
        ),
        (
            &token,
            Outcomes::new(T::NotServed),
            (IS, "InferenceServiceNotFound", False),
        ),
        (
            &token,
            Outcomes::new(found(None)),
            (IS, "InferenceServiceNotReady", False),
        ),
        (
            &token,
            Outcomes::new(conflict),
            (IS, "TemplateConflict", False),
        ),
        (
            &token,
            Outcomes::new(T::InvalidTemplate {
                message: "KServe refused".into(),
            }),
            (IS, "InvalidTemplate", False),
        ),
        (
            &token,
            Outcomes::new(T::Failed(failed(Kind::InferenceService))),
            (IS, "InferenceServiceApplyFailed", False),
        ),
        (
            &token,
            Outcomes::new(T::NotFound),
            (CRED, "Pending", Unknown),
        ),
        (&token, all_ready(&token), (CRED, "Issued", True)),
        (
            &token,
            with_issue(IssueResult::WaitingForUrl {
                message: "waiting".into(),
            }),
            (CRED, "WaitingForURL", False),
        ),
        (
            &token,
            with_identity(IdentityOutcome::ServiceAccountNotFound),
            (CRED, "ServiceAccountNotFound", False),
        ),
        (
            &token,
            with_identity(IdentityOutcome::ServiceAccountConflict),
            (CRED, "ServiceAccountConflict", False),
        ),
        (
            &token,
            with_identity(IdentityOutcome::Failed(failed(Kind::ServiceAccount))),
            (CRED, "ServiceAccountFailed", False),
        ),
        (
            &token,
            with_issue(IssueResult::SecretConflict),
            (CRED, "SecretConflict", False),
        ),
        (
            &token,
            with_issue(IssueResult::Failed(failed(Kind::Secret))),
            (CRED, "SecretWriteFailed", False),
        ),
        (
            &token,
            with_issue(IssueResult::ObtainFailed(failed(Kind::TokenRequest))),
            (CRED, "TokenRequestFailed", False),
        ),
        (
            &dex,
            with_identity(IdentityOutcome::CredentialsSecretInvalid {
                problem: "lacks a non-empty username or password key",
            }),
            (CRED, "CredentialsSecretInvalid", False),
        ),
        (
            &dex,
            with_identity(IdentityOutcome::Failed(failed(Kind::CredentialsSecret))),
            (CRED, "CredentialsSecretInvalid", False),
        ),
        (
            &dex,
            with_issue(IssueResult::ObtainFailed(refused())),
            (CRED, "DexLoginFailed", False),
        ),
        (&token, all_ready(&token), (AP, "PolicyApplied", True)),
        (
            &token,
            with_mesh(auto(sidecar(), applied())),
            (AP, "PolicyApplied", True),
        ),
        (
            &token,
            with_mesh(auto(waypoint(true), applied())),
            (AP, "WaypointPolicyApplied", True),
        ),
        (
            &token,
            with_mesh(auto(waypoint(false), applied())),
            (AP, "IngressBypassesWaypoint", False),
        ),
        (
            &token,
            with_mesh(auto(gateway(), applied())),
            (AP, "GatewayPolicyApplied", True),
        ),
        (
            &token,
            with_mesh(auto(ambient(), AutoResult::NoWaypoint)),
            (AP, "NoWaypoint", False),
        ),
        (
            &token,
            with_mesh(auto(unprotected(), AutoResult::Unprotected)),
            (AP, "NoEnforcement", False),
        ),
        (
            &token,
            with_mesh(auto(gateway(), AutoResult::GatewayNotAllowed)),
            (AP, "GatewayPolicyNotAllowed", False),
        ),
        (
            &token,
            with_mesh(auto(gateway(), AutoResult::GatewayNotAuthenticating)),
            (AP, "GatewayNotAuthenticating", False),
        ),
        (
            &dex,
            with_mesh(auto(gateway(), AutoResult::SessionAtGateway)),
            (AP, "SessionAtGateway", False),
        ),
        (
            &token,
            with_mesh(auto(gateway(), AutoResult::Conflict { owner: None })),
            (AP, "PolicyConflict", False),
        ),
        (
            &token,
            with_mesh(auto(unprotected(), AutoResult::IstioNotInstalled)),
            (AP, "IstioNotInstalled", False),
        ),
        (
            &token,
            with_mesh(M::SidecarDisabled {
                deleted_policy: false,
            }),
            (AP, "SidecarDisabled", True),
        ),
        (
            &token,
            with_mesh(M::Unmanaged {
                deleted_policy: false,
            }),
            (AP, "Unmanaged", True),
        ),
        (&token, with_mesh(no_sidecar), (AP, "NoSidecar", False)),
        (
            &token,
            with_mesh(M::IstioNotInstalled),
            (AP, "IstioNotInstalled", False),
        ),
        (
            &token,
            with_mesh(M::PolicyConflict),
            (AP, "PolicyConflict", False),
        ),
        (
            &token,
            with_mesh(M::Failed(failed(Kind::AuthorizationPolicy))),
            (AP, "PolicyApplyFailed", False),
        ),
        (
            &token,
            with_mesh(M::IstioNotInstalled),
            ("Ready", "IstioNotInstalled", False),
        ),
        (
            &token,
            with_probe(Diagnosis::Reachable),
            (EV, "EndpointReachable", True),
        ),
        (
            &token,
            with_probe(Diagnosis::HostNotFound { host: "h".into() }),
            (EV, "HostNotFound", False),
        ),
        (
            &token,
            with_probe(Diagnosis::AccessDenied {
                at: DeniedAt::BehindGateway,
            }),
            (EV, "AccessDenied", False),
        ),
        (
            &token,
            with_probe(Diagnosis::GatewayUnreachable {
                error: "refused".into(),
            }),
            (EV, "GatewayUnreachable", False),
        ),
        (
            &token,
            with_probe(Diagnosis::Unexpected { status: 503 }),
            (EV, "UnexpectedResponse", False),
        ),
        (
            &token,
            Outcomes {
                verify: Some(VerifyOutcome::Disabled),
                ..all_ready(&token)
            },
            (EV, "VerificationDisabled", Unknown),
        ),
    ];
    for (plan, outcomes, (condition, expected, state)) in cases {
        let checks = checks(plan, &outcomes, now);
        let check = match condition {
            "Ready" => checks.ready(checks.endpoint.as_ref()),
            "InferenceServiceReady" => checks.inference_service.clone(),
            "CredentialIssued" => checks.credential.clone(),
            "AccessPolicyReady" => checks.access_policy.clone(),
            "EndpointVerified" => checks.endpoint.clone().expect("a probe result"),
            other => panic!("{other}"),
        };
        assert_eq!(
            (check.reason.as_str(), check.state),
            (expected, state),
            "{condition} for {outcomes:?}: {}",
            check.message
        );
        assert!(
            !check.message.is_empty(),
            "{condition} {expected}: no message"
        );
    }
    let invalid = invalid(&SpecError {
        reason: "InvalidSpec",
        message: "spec.token.duration is below 10m".into(),
    });
    for check in [
        &invalid.inference_service,
        &invalid.credential,
        &invalid.access_policy,
    ] {
        assert_eq!(
            (check.reason.as_str(), check.state),
            ("InvalidSpec", State::False)
        );
    }
}

#[test]
fn a_failed_renewal_says_until_when_the_current_token_holds() {
    let plan = token_plan();
    let outcomes = Outcomes {
        issue: Some(issue(IssueResult::ObtainFailed(failed(Kind::TokenRequest)))),
        ..all_ready(&plan)
    };
    let checks = checks(&plan, &outcomes, ts("2026-01-01T00:45:00Z"));
    assert_eq!(
        checks.credential.message,
        "TokenRequest for ServiceAccount client failed: TokenRequest: etcd is down (HTTP 500 InternalError); the current token stays valid until 2026-01-01T01:00:00Z"
    );
    assert_eq!(
        checks.token_expiration_time,
        Some(ts("2026-01-01T01:00:00Z"))
    );
    assert_eq!(checks.renewal_time, Some(ts("2026-01-01T00:40:00Z")));
}

#[test]
fn the_status_values_come_from_the_steps_that_ran() {
    let plan = token_plan();
    let checks = checks(&plan, &all_ready(&plan), ts("2026-01-01T00:30:00Z"));
    assert_eq!(checks.url.as_deref(), Some(URL));
    assert_eq!(checks.host.as_deref(), Some("m.ns.example.com"));
    assert_eq!(checks.secret_name.as_deref(), Some("client-credential"));
    assert_eq!(checks.service_account_name.as_deref(), Some("client"));
    assert_eq!(checks.endpoint, None, "not probed: the last result stands");
    let blocked = checks_for_blocked(&plan);
    assert_eq!(
        (
            blocked.url,
            blocked.secret_name,
            blocked.service_account_name
        ),
        (None, None, None)
    );
}

fn checks_for_blocked(plan: &Plan) -> Checks {
    checks(
        plan,
        &Outcomes::new(TargetOutcome::NotFound),
        ts("2026-01-01T00:30:00Z"),
    )
}

#[test]
fn the_first_failure_in_pipeline_order_is_the_error() {
    let plan = token_plan();
    let outcomes = Outcomes {
        issue: Some(issue(IssueResult::Failed(failed(Kind::Secret)))),
        mesh: Some(MeshOutcome::Failed(failed(Kind::AuthorizationPolicy))),
        ..all_ready(&plan)
    };
    assert_eq!(outcomes.into_error().map(|e| e.category()), Some("secret"));
    assert!(all_ready(&plan).into_error().is_none());
}
