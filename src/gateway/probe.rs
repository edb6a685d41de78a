//! Does a credential reach the model through the gateway? One `GET <gateway>/v1/models/<name>`
//! with the right Host header, and a diagnosis that maps the KServe sample's FAQ onto actions.
//!
//! The operator turns a [`Diagnosis`] into the `EndpointVerified` condition; `predict` prints the
//! same message when the gateway refuses a request, so both say the same thing.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;

use crate::api::keys::{self, KEY_COOKIE, KEY_COOKIE_NAME};
use crate::core::endpoint::Endpoint;
use crate::gateway::client::GatewayClient;

/// How long the probe waits for the gateway: it runs inside a reconcile.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request to the gateway carries to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A ServiceAccount token, sent as `Authorization: Bearer <token>`.
    Bearer(String),
    /// A Dex session cookie (oauth2-proxy's `oauth2_proxy_kubeflow` or authservice's
    /// `authservice_session`), sent as `Cookie: <name>=<value>`.
    Cookie { name: String, value: String },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credential::Cookie { name, .. } => write!(f, "Cookie({name}=<redacted>)"),
        }
    }
}

impl Credential {
    /// The header that carries the credential.
    pub fn header(&self) -> (&'static str, String) {
        match self {
            Credential::Bearer(token) => ("authorization", format!("Bearer {token}")),
            Credential::Cookie { name, value } => ("cookie", format!("{name}={value}")),
        }
    }

    /// The credential an operator-written Secret holds: the Dex session cookie when there is one
    /// (DexSession mode), otherwise the token.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let text = |key: &str| {
            secret
                .data
                .as_ref()?
                .get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| !v.is_empty())
        };
        if let Some(cookie) = text(KEY_COOKIE) {
            let (name, value) = match cookie.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => (text(KEY_COOKIE_NAME)?, cookie),
            };
            return Some(Credential::Cookie { name, value });
        }
        if let Some(token) = text(keys::KEY_TOKEN) {
            return Some(Credential::Bearer(token));
        }
        text(keys::KEY_AUTHORIZATION)
            .and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned))
            .map(Credential::Bearer)
    }
}

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

/// Asks the gateway for the model with the credential, as a client would.
pub async fn verify(
    client: &GatewayClient,
    endpoint: &Endpoint,
    credential: &Credential,
) -> Diagnosis {
    let client = client
        .clone()
        .with_timeout(client.timeout().min(PROBE_TIMEOUT));
    let (name, value) = credential.header();
    let headers = [("host", endpoint.host.as_str()), (name, value.as_str())];
    match client.get(&endpoint.model_url(), &headers).await {
        Ok(response) => diagnose(response.status, &response.text(), &endpoint.host),
        // A bad URL or header lands here too: either way nothing reached the gateway.
        Err(error) => Diagnosis::GatewayUnreachable {
            error: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

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

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn credential_from_the_operator_secret() {
        assert_eq!(
            Credential::from_secret(&secret(&[
                ("token", "t0k"),
                ("authorization", "Bearer t0k")
            ])),
            Some(Credential::Bearer("t0k".into()))
        );
        assert_eq!(
            Credential::from_secret(&secret(&[("authorization", "Bearer t0k")])),
            Some(Credential::Bearer("t0k".into()))
        );
        assert_eq!(
            Credential::from_secret(&secret(&[
                ("cookie", "oauth2_proxy_kubeflow=abc=="),
                ("cookie-name", "oauth2_proxy_kubeflow")
            ])),
            Some(Credential::Cookie {
                name: "oauth2_proxy_kubeflow".into(),
                value: "abc==".into()
            })
        );
        assert_eq!(
            Credential::from_secret(&secret(&[("url", "http://x")])),
            None
        );
        assert_eq!(Credential::from_secret(&Secret::default()), None);
    }

    #[test]
    fn debug_never_shows_the_secret_part() {
        let bearer = format!("{:?}", Credential::Bearer("t0k-value".into()));
        let cookie = format!(
            "{:?}",
            Credential::Cookie {
                name: "authservice_session".into(),
                value: "c00kie".into()
            }
        );
        assert!(!bearer.contains("t0k-value"), "{bearer}");
        assert!(
            !cookie.contains("c00kie") && cookie.contains("authservice_session"),
            "{cookie}"
        );
        assert_eq!(
            Credential::Cookie {
                name: "n".into(),
                value: "v".into()
            }
            .header(),
            ("cookie", "n=v".to_owned())
        );
    }

    #[tokio::test]
    async fn verify_without_a_gateway_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gateway = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let e = Endpoint::resolve(&format!("http://{HOST}"), &gateway, "sklearn-iris").unwrap();
        let client = GatewayClient::new().unwrap();
        let diagnosis = verify(&client, &e, &Credential::Bearer("t0k".into())).await;
        assert_eq!(diagnosis.reason(), "GatewayUnreachable", "{diagnosis:?}");
        assert!(!diagnosis.message(&e).contains("t0k"));
    }
}
