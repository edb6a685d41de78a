//! The table that specifies `diagnose`, the reasons and what each message tells.

use super::*;

const HOST: &str = "sklearn-iris.kubeflow-user-example-com.example.com";

fn endpoint() -> Endpoint {
    Endpoint::resolve(
        &format!("http://{HOST}"),
        "http://127.0.0.1:8080",
        "sklearn-iris",
    )
    .unwrap()
}

fn gateway(status: u16, body: &str) -> Answer<'_> {
    Answer {
        status,
        body,
        ..Answer::default()
    }
}

fn upstream(status: u16, body: &str) -> Answer<'_> {
    Answer {
        from_upstream: true,
        ..gateway(status, body)
    }
}

const DEX_PAGE: &str = "<!DOCTYPE html><html><head><title>dex</title></head><body>\
    <h2>Log in to Your Account</h2><form method=\"post\"><input type=\"password\" \
    name=\"password\"></form></body></html>";
const OAUTH2_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><body><form action=\"/oauth2/start\">\
    <button type=\"submit\">Sign in with Dex</button></form></body></html>";

#[test]
fn diagnosis_table() {
    let host = || HOST.to_owned();
    let redirect = |status, location: &'static str| Answer {
        location: Some(location),
        ..gateway(status, "")
    };
    let cases = [
        (
            upstream(200, "{\"name\":\"sklearn-iris\",\"ready\":true}"),
            Diagnosis::Reachable,
        ),
        (upstream(204, ""), Diagnosis::Reachable),
        (gateway(200, DEX_PAGE), Diagnosis::SignInPage),
        (gateway(200, OAUTH2_PAGE), Diagnosis::SignInPage),
        // The dashboard signs people in elsewhere: HTML, but no login form.
        (
            gateway(
                200,
                "<html><body>signed in as user@example.com</body></html>",
            ),
            Diagnosis::Reachable,
        ),
        (gateway(404, ""), Diagnosis::HostNotFound { host: host() }),
        (
            upstream(404, "{\"error\":\"Model with name x does not exist.\"}"),
            Diagnosis::ModelNotFound,
        ),
        (
            gateway(403, "RBAC: access denied"),
            Diagnosis::AccessDenied {
                at: DeniedAt::Gateway,
            },
        ),
        (
            upstream(403, "RBAC: access denied"),
            Diagnosis::AccessDenied {
                at: DeniedAt::BehindGateway,
            },
        ),
        (
            gateway(403, "Forbidden"),
            Diagnosis::Unexpected { status: 403 },
        ),
        (
            redirect(302, "http://gw/dex/auth?client_id=kubeflow&state=s3cr3t"),
            Diagnosis::RedirectedToLogin {
                status: 302,
                location: "http://gw/dex/auth".into(),
            },
        ),
        (
            redirect(303, "/oauth2/start?rd=%2Fv1"),
            Diagnosis::RedirectedToLogin {
                status: 303,
                location: "/oauth2/start".into(),
            },
        ),
        (
            gateway(307, ""),
            Diagnosis::RedirectedToLogin {
                status: 307,
                location: String::new(),
            },
        ),
        (
            gateway(401, "Jwt is expired"),
            Diagnosis::TokenRejected {
                problem: TokenProblem::Expired,
            },
        ),
        (
            gateway(401, "Jwt issuer is not configured"),
            Diagnosis::TokenRejected {
                problem: TokenProblem::Issuer,
            },
        ),
        (
            gateway(401, "Jwks doesn't have key to match kid or alg from Jwt"),
            Diagnosis::TokenRejected {
                problem: TokenProblem::Issuer,
            },
        ),
        (
            gateway(401, "Audiences in Jwt are not allowed"),
            Diagnosis::TokenRejected {
                problem: TokenProblem::Audience,
            },
        ),
        (
            gateway(401, "Jwt verification fails"),
            Diagnosis::TokenRejected {
                problem: TokenProblem::Other,
            },
        ),
        (
            gateway(503, "no healthy upstream"),
            Diagnosis::Unexpected { status: 503 },
        ),
        (gateway(500, ""), Diagnosis::Unexpected { status: 500 }),
        (upstream(400, ""), Diagnosis::Unexpected { status: 400 }),
    ];
    for (answer, expected) in cases {
        assert_eq!(diagnose(&answer, HOST), expected, "{answer:?}");
    }
}

#[test]
fn reasons_are_the_documented_ones() {
    let token = |problem| Diagnosis::TokenRejected { problem };
    let cases = [
        (Diagnosis::Reachable, "EndpointReachable"),
        (Diagnosis::SignInPage, "SignInPage"),
        (
            Diagnosis::RedirectedToLogin {
                status: 302,
                location: String::new(),
            },
            "RedirectedToLogin",
        ),
        (Diagnosis::HostNotFound { host: "h".into() }, "HostNotFound"),
        (Diagnosis::ModelNotFound, "ModelNotFound"),
        (token(TokenProblem::Expired), "TokenExpired"),
        (token(TokenProblem::Issuer), "IssuerNotAccepted"),
        (token(TokenProblem::Audience), "AudienceNotAccepted"),
        (token(TokenProblem::Other), "Unauthenticated"),
        (
            Diagnosis::AccessDenied {
                at: DeniedAt::Gateway,
            },
            "GatewayAccessDenied",
        ),
        (
            Diagnosis::AccessDenied {
                at: DeniedAt::BehindGateway,
            },
            "AccessDenied",
        ),
        (
            Diagnosis::GatewayUnreachable { error: "x".into() },
            "GatewayUnreachable",
        ),
        (Diagnosis::Unexpected { status: 500 }, "UnexpectedResponse"),
    ];
    for (diagnosis, reason) in cases {
        assert_eq!(diagnosis.reason(), reason);
    }
}

#[test]
fn messages_name_the_fix() {
    let e = endpoint();
    let token = |problem| Diagnosis::TokenRejected { problem };
    let cases = [
        (
            Diagnosis::HostNotFound { host: HOST.into() },
            vec![HOST, "404", "route_not_found", "Knative", "config-domain"],
        ),
        (Diagnosis::ModelNotFound, vec!["404", "sklearn-iris"]),
        (
            Diagnosis::AccessDenied {
                at: DeniedAt::BehindGateway,
            },
            vec![
                "RBAC: access denied",
                "sidecar",
                "waypoint",
                "DisableSidecarInjection",
                "sidecar.istio.io/inject: \"false\"",
            ],
        ),
        (
            Diagnosis::AccessDenied {
                at: DeniedAt::Gateway,
            },
            vec!["at the gateway", "targetRefs", "doctor"],
        ),
        (
            Diagnosis::RedirectedToLogin {
                status: 302,
                location: "http://gw/dex/auth".into(),
            },
            vec!["did not accept the credential", "http://gw/dex/auth", "302"],
        ),
        (Diagnosis::SignInPage, vec!["sign-in page", "Bearer"]),
        (token(TokenProblem::Expired), vec!["expired", "renew"]),
        (token(TokenProblem::Issuer), vec!["issuer", "jwksUri"]),
        (
            token(TokenProblem::Audience),
            vec!["audience", "spec.token.audiences"],
        ),
        (
            token(TokenProblem::Other),
            vec!["did not accept the credential", "audience", "expired"],
        ),
        (
            Diagnosis::GatewayUnreachable {
                error: "connection refused".into(),
            },
            vec![
                "http://127.0.0.1:8080",
                "connection refused",
                "spec.gateway.url",
            ],
        ),
        (
            Diagnosis::Unexpected { status: 503 },
            vec!["503", "predictor", "ztunnel"],
        ),
        (Diagnosis::Reachable, vec!["reaches the model", HOST]),
    ];
    for (diagnosis, needles) in cases {
        let message = diagnosis.message(&e);
        for needle in needles {
            assert!(
                message.contains(needle),
                "{diagnosis:?}: {message:?} lacks {needle:?}"
            );
        }
    }
}
