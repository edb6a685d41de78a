//! `doctor`'s judgement, pure: which AuthorizationPolicies and RequestAuthentications bind each
//! hop (Istio's attachment rules, as tests/mesh-local enforces them), what they say about this
//! identity, the token's claims against them, and which hop a gateway answer points at.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use crate::core::diagnosis::{DeniedAt, Diagnosis, TokenProblem};

/// Istio's root namespace: policies there without targetRefs bind the whole mesh.
pub const ROOT_NAMESPACE: &str = "istio-system";

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
    /// Not on this model's path.
    Skip,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hop {
    pub hop: &'static str,
    pub verdict: Verdict,
    pub finding: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Hop {
    pub fn new(hop: &'static str, verdict: Verdict, finding: impl Into<String>) -> Self {
        Self {
            hop,
            verdict,
            finding: finding.into(),
            fix: None,
        }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The claims doctor reads from a JWT, decoded without verification (the gateway verifies;
/// doctor only compares). The token itself is never kept or printed.
#[derive(Serialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub audiences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
}

pub fn claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let text = |key: &str| value[key].as_str().map(str::to_owned);
    let audiences = match &value["aud"] {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    Some(Claims {
        issuer: text("iss"),
        subject: text("sub"),
        audiences,
        expires: value["exp"].as_i64(),
    })
}

/// An enforcement point on the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Workloads with these labels (a sidecar, ztunnel, or a gateway's pods).
    Pods {
        namespace: String,
        labels: BTreeMap<String, String>,
    },
    /// A Gateway API Gateway (its Envoy: targetRefs to it, or selectors on its pods).
    Gateway { namespace: String, name: String },
    /// An ambient waypoint in front of `service` (targetRefs only).
    Waypoint {
        namespace: String,
        service: String,
        waypoint: String,
    },
}

impl Place {
    /// Kubeflow's ingress gateway pods.
    pub fn kubeflow_gateway() -> Self {
        Place::Pods {
            namespace: ROOT_NAMESPACE.into(),
            labels: [("istio", "ingressgateway"), ("app", "istio-ingressgateway")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }
}

fn target_refs(spec: &Value) -> Vec<&Value> {
    let mut refs: Vec<&Value> = spec["targetRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if spec["targetRef"].is_object() {
        refs.push(&spec["targetRef"]);
    }
    refs
}

fn selector_matches(spec: &Value, labels: &BTreeMap<String, String>) -> bool {
    spec["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
}

/// How a policy (or RequestAuthentication) in `namespace` binds `place`, if it does.
pub fn binds(namespace: &str, spec: &Value, place: &Place) -> Option<&'static str> {
    let refs = target_refs(spec);
    let names = |kind: &str, name: &str| {
        refs.iter().any(|r| {
            r["kind"] == kind
                && r["name"] == name
                && r["namespace"].as_str().is_none_or(|n| n == namespace)
        })
    };
    let scope = |ns: &str| {
        if namespace == ns {
            Some(if spec["selector"].is_object() {
                "selector"
            } else {
                "namespace-wide"
            })
        } else if namespace == ROOT_NAMESPACE {
            Some("mesh-wide")
        } else {
            None
        }
    };
    match place {
        Place::Gateway {
            namespace: ns,
            name,
        } if !refs.is_empty() => {
            (namespace == ns && names("Gateway", name)).then_some("targetRefs Gateway")
        }
        Place::Waypoint {
            namespace: ns,
            service,
            waypoint,
        } => {
            if namespace != ns {
                return None;
            }
            if names("Service", service) {
                Some("targetRefs Service")
            } else if names("Gateway", waypoint) {
                Some("targetRefs waypoint")
            } else {
                None
            }
        }
        Place::Gateway {
            namespace: ns,
            name,
        } => {
            let labels = BTreeMap::from([(
                "gateway.networking.k8s.io/gateway-name".to_owned(),
                name.clone(),
            )]);
            selector_matches(spec, &labels).then(|| scope(ns)).flatten()
        }
        Place::Pods { .. } if !refs.is_empty() => None,
        Place::Pods {
            namespace: ns,
            labels,
        } => selector_matches(spec, labels).then(|| scope(ns)).flatten(),
    }
}

/// The strings that name this caller in a policy: the `kubeflow-userid` value and the request
/// principal the gateway derives from the token.
pub fn identity_names(claims: &Claims) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(sub) = &claims.subject {
        names.push(sub.clone());
        if let Some(iss) = &claims.issuer {
            names.push(format!("{iss}/{sub}"));
        }
    }
    names
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub hop: &'static str,
    /// `namespace/name`.
    pub name: String,
    pub action: String,
    pub attached: &'static str,
    /// Whether its rules name this identity (a DENY that names it exempts it, as the operator's
    /// own DENY at a Gateway does with `notRequestPrincipals`).
    pub names_identity: bool,
}

/// The ALLOW and DENY policies (`(namespace, name, spec)`) binding `place`, seen as `hop`.
pub fn policies_at(
    hop: &'static str,
    place: &Place,
    policies: &[(String, String, Value)],
    identity: &[String],
) -> Vec<PolicyView> {
    policies
        .iter()
        .filter_map(|(ns, name, spec)| {
            let attached = binds(ns, spec, place)?;
            let action = spec["action"].as_str().unwrap_or("ALLOW").to_owned();
            if action != "ALLOW" && action != "DENY" {
                return None;
            }
            let rules = spec["rules"].to_string();
            Some(PolicyView {
                hop,
                name: format!("{ns}/{name}"),
                action,
                attached,
                names_identity: identity.iter().any(|i| rules.contains(i.as_str())),
            })
        })
        .collect()
}

/// What the policies at one hop mean for this identity.
pub fn judge_policies(hop: &'static str, views: &[PolicyView]) -> Hop {
    let here: Vec<&PolicyView> = views.iter().filter(|v| v.hop == hop).collect();
    let list = |f: &dyn Fn(&&PolicyView) -> bool| {
        here.iter()
            .filter(|v| f(v))
            .map(|v| format!("{} {} ({})", v.action, v.name, v.attached))
            .collect::<Vec<_>>()
    };
    let denying = list(&|v| v.action == "DENY" && !v.names_identity);
    let allows = list(&|v| v.action == "ALLOW");
    let admitting = list(&|v| v.action == "ALLOW" && v.names_identity);
    if here.is_empty() {
        return Hop::new(
            hop,
            Verdict::Ok,
            "no ALLOW or DENY AuthorizationPolicy binds it",
        );
    }
    let all = list(&|_| true).join(", ");
    if !denying.is_empty() {
        return Hop::new(
            hop,
            Verdict::Warn,
            format!(
                "policies: {all}; DENY that does not exempt this identity: {}",
                denying.join(", ")
            ),
        )
        .fix("check the DENY's rules: a request that matches them is refused here");
    }
    if !allows.is_empty() && admitting.is_empty() {
        return Hop::new(
            hop,
            Verdict::Warn,
            format!("policies: {all}; no ALLOW names this identity, so it is refused here"),
        )
        .fix("set spec.mesh.mode to Auto (or AuthorizationPolicy on a sidecar) so the operator writes the ALLOW for this identity");
    }
    Hop::new(
        hop,
        Verdict::Ok,
        format!("policies: {all}; this identity is admitted"),
    )
}

/// A RequestAuthentication's jwtRule, as doctor shows it.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JwtRuleView {
    pub policy: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
}

/// The jwtRules of the RequestAuthentications binding `place`.
pub fn jwt_rules_at(place: &Place, requests: &[(String, String, Value)]) -> Vec<JwtRuleView> {
    requests
        .iter()
        .filter(|(ns, _, spec)| binds(ns, spec, place).is_some())
        .flat_map(|(ns, name, spec)| {
            spec["jwtRules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |rule| JwtRuleView {
                    policy: format!("{ns}/{name}"),
                    issuer: rule["issuer"].as_str().unwrap_or_default().to_owned(),
                    audiences: rule["audiences"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str().map(str::to_owned))
                        .collect(),
                    jwks_uri: rule["jwksUri"].as_str().map(str::to_owned),
                })
        })
        .collect()
}

/// The token's `iss` and `aud` against the gateway's jwtRules.
pub fn judge_authentication(rules: &[JwtRuleView], claims: &Claims) -> (Verdict, String) {
    let iss = claims.issuer.as_deref().unwrap_or("(none)");
    let aud = claims.audiences.join(", ");
    if rules.is_empty() {
        return (
            Verdict::Warn,
            format!(
                "no RequestAuthentication object binds the gateway (token iss {iss}, aud {aud}); \
                 Kubeflow's m2m-token-issuer lives in istio-system"
            ),
        );
    }
    let trusted: Vec<&str> = rules.iter().map(|r| r.issuer.as_str()).collect();
    let Some(rule) = rules.iter().find(|r| r.issuer == iss) else {
        return (
            Verdict::Fail,
            format!(
                "the token's iss {iss} is not an issuer the gateway trusts ({}): set the \
                 RequestAuthentication's issuer to the cluster's service account issuer (its \
                 /.well-known/openid-configuration)",
                trusted.join(", ")
            ),
        );
    };
    if !rule.audiences.is_empty() && !claims.audiences.iter().any(|a| rule.audiences.contains(a)) {
        return (
            Verdict::Fail,
            format!(
                "{} trusts iss {iss} but only audiences {}; the token has {aud}: set \
                 spec.token.audiences to one of them",
                rule.policy,
                rule.audiences.join(", ")
            ),
        );
    }
    (
        Verdict::Ok,
        format!(
            "{} verifies iss {iss} (JWKS {}), audience {aud} accepted",
            rule.policy,
            rule.jwks_uri.as_deref().unwrap_or("from the issuer")
        ),
    )
}

/// The hop a gateway answer points at; `pod_hop` is the hop behind the gateway on this path
/// (`sidecar`, `waypoint`, ...).
pub fn failing_hop(diagnosis: &Diagnosis, pod_hop: &'static str) -> Option<&'static str> {
    Some(match diagnosis {
        Diagnosis::Reachable => return None,
        Diagnosis::TokenRejected {
            problem: TokenProblem::Expired,
        } => "token",
        Diagnosis::TokenRejected { .. }
        | Diagnosis::RedirectedToLogin { .. }
        | Diagnosis::SignInPage
        | Diagnosis::GatewayUnreachable { .. }
        | Diagnosis::AccessDenied {
            at: DeniedAt::Gateway,
        } => "gateway",
        Diagnosis::HostNotFound { .. } => "route",
        Diagnosis::AccessDenied {
            at: DeniedAt::BehindGateway,
        } => pod_hop,
        Diagnosis::ModelNotFound | Diagnosis::Unexpected { .. } => "target",
    })
}

#[cfg(test)]
#[path = "doctor_checks_tests.rs"]
mod tests;
