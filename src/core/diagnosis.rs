//! What an answer from the gateway means, mapped onto the KServe sample's FAQ, the failures users
//! report (issue threads: 302 to Dex, `NR route_not_found`, 401 issuer or audience, 403 from which
//! hop) and the fix.
//!
//! The operator turns a [`Diagnosis`] into the `EndpointVerified` condition; `predict` and
//! `doctor` print the same message when the gateway refuses a request, so all say the same thing.

use super::endpoint::Endpoint;

/// The parts of a gateway answer that tell what happened (built from an HTTP response by
/// `gateway::probe::answer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answer<'a> {
    pub status: u16,
    pub body: &'a str,
    /// `Location` of a redirect.
    pub location: Option<&'a str>,
    /// Envoy adds `x-envoy-upstream-service-time` to every answer it proxied: present, something
    /// behind the gateway answered (the predictor's sidecar, a waypoint, the model server);
    /// absent, the gateway answered itself (its routing, jwt_authn, RBAC, ext_authz).
    pub from_upstream: bool,
}

/// Where a 403 came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedAt {
    /// A policy at the ingress gateway (attached to a Gateway API Gateway, or selecting the
    /// ingress gateway's pods).
    Gateway,
    /// A policy behind it: the predictor's sidecar or the ambient waypoint.
    BehindGateway,
}

/// Why a gateway's jwt_authn refused a token (Envoy's 401 body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// `Jwt is expired`.
    Expired,
    /// `Jwt issuer is not configured`, or no key in the JWKS for the token (another issuer's
    /// signing key).
    Issuer,
    /// `Audiences in Jwt are not allowed`.
    Audience,
    /// Anything else (`Jwt verification fails`, a malformed token).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnosis {
    Reachable,
    /// 200 with a login form: the front end (oauth2-proxy, Dex) answered, not the model.
    SignInPage,
    /// A 30x into the login: the gateway found no credential it verifies.
    RedirectedToLogin {
        status: u16,
        /// Where it points, without the query (state parameters).
        location: String,
    },
    /// 404 from the gateway itself: no route for the Host (Envoy's `NR route_not_found`; sample
    /// FAQ 1).
    HostNotFound {
        host: String,
    },
    /// 404 from behind the gateway: the route exists, the model server does not know the model.
    ModelNotFound,
    /// 401 from the gateway's jwt_authn.
    TokenRejected {
        problem: TokenProblem,
    },
    /// 403 `RBAC: access denied` (sample FAQ 2), and which hop answered.
    AccessDenied {
        at: DeniedAt,
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

/// Whether a 200 body is a login page rather than a model's answer (Dex's password form,
/// oauth2-proxy's sign-in page).
fn is_sign_in_page(body: &str) -> bool {
    let start: String = body.trim_start().chars().take(512).collect();
    let start = start.to_ascii_lowercase();
    if !(start.starts_with("<!doctype html") || start.starts_with("<html")) {
        return false;
    }
    let lower = body.to_ascii_lowercase();
    ["type=\"password\"", "sign in", "log in to"]
        .iter()
        .any(|needle| lower.contains(needle))
}

fn token_problem(body: &str) -> TokenProblem {
    if body.contains("Jwt is expired") {
        TokenProblem::Expired
    } else if body.contains("Jwt issuer is not configured")
        || body.contains("Jwks doesn't have key to match kid")
    {
        TokenProblem::Issuer
    } else if body.contains("Audiences in Jwt are not allowed") {
        TokenProblem::Audience
    } else {
        TokenProblem::Other
    }
}

/// What an answer from the gateway means. Pure: the table in the tests is the specification.
pub fn diagnose(answer: &Answer<'_>, host: &str) -> Diagnosis {
    match answer.status {
        200 if is_sign_in_page(answer.body) => Diagnosis::SignInPage,
        200..=299 => Diagnosis::Reachable,
        404 if answer.from_upstream => Diagnosis::ModelNotFound,
        404 => Diagnosis::HostNotFound {
            host: host.to_owned(),
        },
        403 if answer.body.contains(RBAC_DENIED) => Diagnosis::AccessDenied {
            at: if answer.from_upstream {
                DeniedAt::BehindGateway
            } else {
                DeniedAt::Gateway
            },
        },
        301 | 302 | 303 | 307 | 308 => Diagnosis::RedirectedToLogin {
            status: answer.status,
            location: answer
                .location
                .map(|l| l.split(['?', '#']).next().unwrap_or_default().to_owned())
                .unwrap_or_default(),
        },
        401 => Diagnosis::TokenRejected {
            problem: token_problem(answer.body),
        },
        status => Diagnosis::Unexpected { status },
    }
}

impl Diagnosis {
    /// The condition reason (`EndpointVerified`), bounded.
    pub fn reason(&self) -> &'static str {
        match self {
            Diagnosis::Reachable => "EndpointReachable",
            Diagnosis::SignInPage => "SignInPage",
            Diagnosis::RedirectedToLogin { .. } => "RedirectedToLogin",
            Diagnosis::HostNotFound { .. } => "HostNotFound",
            Diagnosis::ModelNotFound => "ModelNotFound",
            Diagnosis::TokenRejected { problem } => match problem {
                TokenProblem::Expired => "TokenExpired",
                TokenProblem::Issuer => "IssuerNotAccepted",
                TokenProblem::Audience => "AudienceNotAccepted",
                TokenProblem::Other => "Unauthenticated",
            },
            Diagnosis::AccessDenied {
                at: DeniedAt::Gateway,
            } => "GatewayAccessDenied",
            Diagnosis::AccessDenied {
                at: DeniedAt::BehindGateway,
            } => "AccessDenied",
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
            Diagnosis::SignInPage => format!(
                "GET {url} answered 200 with a sign-in page, not the model: the gateway found no \
                 credential it verifies and its login front end (oauth2-proxy, Dex) answered; \
                 send the Secret's authorization header (Bearer token), or renew an expired Dex \
                 session with `inference-access renew`"
            ),
            Diagnosis::RedirectedToLogin { status, location } => format!(
                "the gateway did not accept the credential and redirected to the login \
                 ({status} to {location} from GET {url}): the request carried no credential the \
                 gateway verifies (no or a stripped Authorization header, or an expired Dex \
                 session); renew with `inference-access renew`"
            ),
            Diagnosis::HostNotFound { host } => format!(
                "the gateway has no route for Host {host} (404 from the gateway itself, Envoy's \
                 NR route_not_found, for GET {url}): check that the InferenceService's \
                 status.url ({}) uses the domain the gateway serves, and that its HTTPRoute or \
                 VirtualService exists; a host ending in svc.cluster.local or the default \
                 example.com means Knative's domain (config-domain in knative-serving) is not \
                 configured for external requests",
                endpoint.url
            ),
            Diagnosis::ModelNotFound => format!(
                "the route exists but the model server behind it answered 404 for GET {url}: \
                 it does not serve a model named {}; check the InferenceService's name and \
                 predictor",
                endpoint.model_name
            ),
            Diagnosis::TokenRejected { problem } => token_message(*problem, &url),
            Diagnosis::AccessDenied {
                at: DeniedAt::Gateway,
            } => format!(
                "an AuthorizationPolicy at the gateway refused the request (403 RBAC: access \
                 denied, answered by the gateway itself, for GET {url}): a DENY or ALLOW policy \
                 attached to the Gateway (targetRefs) or selecting its pods does not admit this \
                 identity; `inference-access doctor` lists them"
            ),
            Diagnosis::AccessDenied {
                at: DeniedAt::BehindGateway,
            } => format!(
                "the predictor's Istio sidecar or the namespace's waypoint refused the request \
                 (403 RBAC: access denied from behind the gateway, for GET {url}): no \
                 AuthorizationPolicy allows this identity; set spec.mesh.mode to Auto or \
                 AuthorizationPolicy so the operator creates one, or to DisableSidecarInjection \
                 (the InferenceService gets sidecar.istio.io/inject: \"false\")"
            ),
            Diagnosis::GatewayUnreachable { error } => format!(
                "no answer from the gateway at {}: {error}; check spec.gateway.url and that the \
                 ingress gateway is reachable from here",
                endpoint.gateway_url
            ),
            Diagnosis::Unexpected { status } if *status >= 500 => format!(
                "the gateway answered {status} for GET {url}: the route exists but the model \
                 server behind it is not serving; check the InferenceService's predictor pods \
                 (in an ambient namespace, a 503 connection termination is ztunnel refusing)"
            ),
            Diagnosis::Unexpected { status } => {
                format!("the gateway answered {status} for GET {url}")
            }
        }
    }
}

fn token_message(problem: TokenProblem, url: &str) -> String {
    let (what, fix) = match problem {
        TokenProblem::Expired => (
            "the token has expired (Jwt is expired)",
            "the client uses an old copy: mount the Secret as a volume and re-read it, or run \
             `inference-access renew` for a new one",
        ),
        TokenProblem::Issuer => (
            "the token's issuer is not one the gateway trusts (Jwt issuer is not configured)",
            "the RequestAuthentication's jwtRules[].issuer must be the cluster's service account \
             issuer (its /.well-known/openid-configuration; on EKS, AKS and GKE the provider's \
             OIDC URL), with jwksUri pointing at its keys",
        ),
        TokenProblem::Audience => (
            "the token's audience is not one the gateway accepts (Audiences in Jwt are not \
             allowed)",
            "set spec.token.audiences to one of the RequestAuthentication's jwtRules[].audiences",
        ),
        TokenProblem::Other => (
            "the gateway did not accept the credential",
            "the token's audience must match the gateway's RequestAuthentication \
             (spec.token.audiences), its issuer must be the cluster's, and it must not have \
             expired; run `inference-access renew` to issue a new one",
        ),
    };
    format!("{what} (401 from GET {url}): {fix}")
}

#[cfg(test)]
#[path = "diagnosis_tests.rs"]
mod tests;
