//! What an answer from the gateway means, mapped onto the KServe sample's FAQ and the fix.
//!
//! The operator turns a [`Diagnosis`] into the `EndpointVerified` condition; `predict` prints the
//! same message when the gateway refuses a request, so both say the same thing.

use super::endpoint::Endpoint;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    Reachable,
    /// 404: the gateway has no route for the Host (sample FAQ 1).
    HostNotFound {
        host: String,
    },
    /// 403 `RBAC: access denied`: the predictor's sidecar refused the identity (sample FAQ 2).
    AccessDenied,
    /// 302 (redirect to Dex) or 401: the gateway did not accept the credential.
    Unauthenticated {
        status: u16,
    },
    /// No HTTP answer at all.
    GatewayUnreachable {
        error: String,
    },
    Unexpected {
        status: u16,
    },
}

/// Envoy's body when an AuthorizationPolicy denies a request.
const RBAC_DENIED: &str = "RBAC: access denied";

/// What an answer from the gateway means. Pure: the table in the tests is the specification.
pub fn diagnose(status: u16, body: &str, host: &str) -> Diagnosis {
    match status {
        200..=299 => Diagnosis::Reachable,
        404 => Diagnosis::HostNotFound {
            host: host.to_owned(),
        },
        403 if body.contains(RBAC_DENIED) => Diagnosis::AccessDenied,
        301 | 302 | 303 | 307 | 308 | 401 => Diagnosis::Unauthenticated { status },
        _ => Diagnosis::Unexpected { status },
    }
}

impl Diagnosis {
    /// The condition reason (`EndpointVerified`), bounded.
    pub fn reason(&self) -> &'static str {
        match self {
            Diagnosis::Reachable => "EndpointReachable",
            Diagnosis::HostNotFound { .. } => "HostNotFound",
            Diagnosis::AccessDenied => "AccessDenied",
            Diagnosis::Unauthenticated { .. } => "Unauthenticated",
            Diagnosis::GatewayUnreachable { .. } => "GatewayUnreachable",
            Diagnosis::Unexpected { .. } => "UnexpectedResponse",
        }
    }

    pub fn is_reachable(&self) -> bool {
        *self == Diagnosis::Reachable
    }

    /// What happened and what to change. Never contains the credential: nothing here has it.
    pub fn message(&self, endpoint: &Endpoint) -> String {
        let url = endpoint.model_url();
        let host = &endpoint.host;
        match self {
            Diagnosis::Reachable => {
                format!("GET {url} with Host {host} answered: the credential reaches the model")
            }
            Diagnosis::HostNotFound { host } => format!(
                "the gateway has no route for Host {host} (404 from GET {url}): check that the \
                 InferenceService's status.url ({}) uses the domain the gateway serves; a host \
                 ending in svc.cluster.local or the default example.com means Knative's domain \
                 (config-domain in knative-serving) is not configured for external requests",
                endpoint.url
            ),
            Diagnosis::AccessDenied => format!(
                "the predictor's Istio sidecar refused the request (403 RBAC: access denied from \
                 GET {url}): no AuthorizationPolicy allows this identity; set spec.mesh.mode to \
                 AuthorizationPolicy so the operator creates one, or to DisableSidecarInjection \
                 (the InferenceService gets sidecar.istio.io/inject: \"false\")"
            ),
            Diagnosis::Unauthenticated { status: 401 } => format!(
                "the gateway did not accept the credential (401 from GET {url}): the token's \
                 audience must match the gateway's RequestAuthentication (spec.token.audiences), \
                 its issuer must be the cluster's, and it must not have expired; run \
                 `inference-access renew` to issue a new one"
            ),
            Diagnosis::Unauthenticated { status } => format!(
                "the gateway did not accept the credential and redirected to the Dex login \
                 ({status} from GET {url}): the request carried no credential the gateway \
                 verifies (wrong audience, expired token, or an expired Dex session)"
            ),
            Diagnosis::GatewayUnreachable { error } => format!(
                "no answer from the gateway at {}: {error}; check spec.gateway.url and that the \
                 ingress gateway is reachable from here",
                endpoint.gateway_url
            ),
            Diagnosis::Unexpected { status } if *status >= 500 => format!(
                "the gateway answered {status} for GET {url}: the route exists but the model \
                 server behind it is not serving; check the InferenceService's predictor pods"
            ),
            Diagnosis::Unexpected { status } => {
                format!("the gateway answered {status} for GET {url}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn diagnosis_table() {
        let host = || HOST.to_owned();
        let cases = [
            (
                200,
                "{\"name\":\"sklearn-iris\",\"ready\":true}",
                Diagnosis::Reachable,
            ),
            (204, "", Diagnosis::Reachable),
            (404, "", Diagnosis::HostNotFound { host: host() }),
            (403, "RBAC: access denied", Diagnosis::AccessDenied),
            (403, "Forbidden", Diagnosis::Unexpected { status: 403 }),
            (
                302,
                "<a href=\"/dex/auth\">Found</a>",
                Diagnosis::Unauthenticated { status: 302 },
            ),
            (303, "", Diagnosis::Unauthenticated { status: 303 }),
            (307, "", Diagnosis::Unauthenticated { status: 307 }),
            (
                401,
                "Jwt is expired",
                Diagnosis::Unauthenticated { status: 401 },
            ),
            (
                503,
                "no healthy upstream",
                Diagnosis::Unexpected { status: 503 },
            ),
            (500, "", Diagnosis::Unexpected { status: 500 }),
            (400, "", Diagnosis::Unexpected { status: 400 }),
        ];
        for (status, body, expected) in cases {
            assert_eq!(diagnose(status, body, HOST), expected, "{status} {body:?}");
        }
    }

    #[test]
    fn reasons_are_the_documented_ones() {
        let cases = [
            (Diagnosis::Reachable, "EndpointReachable"),
            (Diagnosis::HostNotFound { host: "h".into() }, "HostNotFound"),
            (Diagnosis::AccessDenied, "AccessDenied"),
            (
                Diagnosis::Unauthenticated { status: 302 },
                "Unauthenticated",
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
        let cases = [
            (
                Diagnosis::HostNotFound { host: HOST.into() },
                vec![HOST, "404", "Knative", "config-domain"],
            ),
            (
                Diagnosis::AccessDenied,
                vec![
                    "RBAC: access denied",
                    "AuthorizationPolicy",
                    "DisableSidecarInjection",
                    "sidecar.istio.io/inject: \"false\"",
                ],
            ),
            (
                Diagnosis::Unauthenticated { status: 302 },
                vec!["did not accept the credential", "Dex", "302"],
            ),
            (
                Diagnosis::Unauthenticated { status: 401 },
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
                vec!["503", "predictor"],
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
}
