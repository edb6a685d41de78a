//! `EndpointVerified`'s reasons for each way the gateway refuses (README's status table): which
//! hop answered a 403, the login (302, a 200 sign-in page), 404 from the model, and why a token
//! was refused.

use super::checks;
use super::tests::{token_plan, with_probe};
use crate::core::diagnosis::{DeniedAt, Diagnosis, TokenProblem};
use crate::fixtures::ts;
use crate::reconcile::conditions::State;

#[test]
fn each_refusal_has_its_reason() {
    let token = |problem| Diagnosis::TokenRejected { problem };
    let cases = [
        (
            Diagnosis::AccessDenied {
                at: DeniedAt::Gateway,
            },
            "GatewayAccessDenied",
        ),
        (
            Diagnosis::RedirectedToLogin {
                status: 302,
                location: "http://gw/dex/auth".into(),
            },
            "RedirectedToLogin",
        ),
        (Diagnosis::SignInPage, "SignInPage"),
        (Diagnosis::ModelNotFound, "ModelNotFound"),
        (token(TokenProblem::Expired), "TokenExpired"),
        (token(TokenProblem::Issuer), "IssuerNotAccepted"),
        (token(TokenProblem::Audience), "AudienceNotAccepted"),
        (token(TokenProblem::Other), "Unauthenticated"),
    ];
    let plan = token_plan();
    for (diagnosis, reason) in cases {
        let checks = checks(
            &plan,
            &with_probe(diagnosis.clone()),
            ts("2026-01-01T00:00:00Z"),
        );
        let check = checks.endpoint.expect("a probe result");
        assert_eq!(
            (check.reason.as_str(), check.state),
            (reason, State::False),
            "{diagnosis:?}"
        );
        assert!(!check.message.is_empty(), "{reason}: no message");
    }
}
