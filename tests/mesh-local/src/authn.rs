//! Istio RequestAuthentication at an Envoy (gateway, waypoint, sidecar), as pure functions: which
//! jwtRules bind the proxy, where a token is taken from, which rule verifies it, and what the proxy
//! does with a verified token. Envoy's jwt_authn as Istio configures it: a request without a token
//! passes unauthenticated; a token whose issuer no rule (for that location) names is refused with
//! `Jwt issuer is not configured`; otherwise the rule's checks run (`jwt::verify`). The JWKS is
//! fetched by the caller from [`JwtRuleSpec::jwks_source`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde::Deserialize;

use crate::jwt::{self, JwtError, JwtRule, VerifiedClaims};
use crate::policy::{Attachment, Enforcer};

/// One stored RequestAuthentication.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRequestAuthentication {
    pub namespace: String,
    pub name: String,
    pub spec: RequestAuthenticationSpec,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthenticationSpec {
    #[serde(flatten)]
    pub attachment: Attachment,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRuleSpec>,
}

/// A `jwtRules` entry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JwtRuleSpec {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, alias = "jwks_uri")]
    pub jwks_uri: Option<String>,
    /// Inline JWKS document (JSON text).
    #[serde(default)]
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct JwtHeader {
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

/// Where a token was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenLocation {
    Header { name: String, prefix: String },
    Param(String),
    Cookie(String),
}

/// Where the JWKS of a rule comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// `jwks`: the document itself.
    Inline(String),
    /// A `jwksUri` on the in-cluster API server (`https://kubernetes.default.svc…/openid/v1/jwks`),
    /// or the Kubernetes issuer without a `jwksUri`: read through the API client at this path.
    ApiServer(String),
    /// Any other `jwksUri`.
    Url(String),
    /// No `jwksUri`: OIDC discovery at `<issuer>/.well-known/openid-configuration`.
    Discovery(String),
}

/// Host names of the API server inside a cluster.
const API_SERVER_HOSTS: [&str; 4] = [
    "kubernetes.default.svc.cluster.local",
    "kubernetes.default.svc",
    "kubernetes.default",
    "kubernetes",
];

impl JwtRuleSpec {
    /// Where Envoy looks for this rule's token: the configured places, or by default the
    /// `Authorization: Bearer` header and the `access_token` query parameter.
    pub fn locations(&self) -> Vec<TokenLocation> {
        let mut locations: Vec<TokenLocation> = self
            .from_headers
            .iter()
            .map(|h| TokenLocation::Header {
                name: h.name.to_ascii_lowercase(),
                prefix: h.prefix.clone(),
            })
            .chain(self.from_params.iter().cloned().map(TokenLocation::Param))
            .chain(self.from_cookies.iter().cloned().map(TokenLocation::Cookie))
            .collect();
        if locations.is_empty() {
            locations.push(TokenLocation::Header {
                name: header::AUTHORIZATION.as_str().to_owned(),
                prefix: "Bearer ".to_owned(),
            });
            locations.push(TokenLocation::Param("access_token".to_owned()));
        }
        locations
    }

    /// The checks `jwt::verify` runs for this rule.
    pub fn jwt_rule(&self) -> JwtRule {
        JwtRule {
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
        }
    }

    pub fn jwks_source(&self) -> JwksSource {
        if let Some(jwks) = &self.jwks {
            return JwksSource::Inline(jwks.clone());
        }
        if let Some(uri) = &self.jwks_uri {
            return match api_server_path(uri) {
                Some(path) => JwksSource::ApiServer(path),
                None => JwksSource::Url(uri.clone()),
            };
        }
        match api_server_path(&self.issuer) {
            Some(_) => JwksSource::ApiServer("/openid/v1/jwks".to_owned()),
            None => JwksSource::Discovery(self.issuer.clone()),
        }
    }
}

/// The path of a URL that names the in-cluster API server.
fn api_server_path(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    API_SERVER_HOSTS
        .contains(&uri.host()?)
        .then(|| uri.path().to_owned())
}

/// The jwtRules of every RequestAuthentication binding `enforcer`, in stored order. ztunnel reads
/// none: it cannot see HTTP.
pub fn rules_for<'a>(
    authentications: &'a [StoredRequestAuthentication],
    enforcer: &Enforcer,
) -> Vec<&'a JwtRuleSpec> {
    if matches!(enforcer, Enforcer::Ztunnel(_)) {
        return Vec::new();
    }
    authentications
        .iter()
        .filter(|a| a.spec.attachment.binds(&a.namespace, enforcer))
        .flat_map(|a| &a.spec.jwt_rules)
        .collect()
}

/// What the proxy found in a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Extraction<'a> {
    /// No token in any configured place: the request goes on unauthenticated.
    NoToken,
    /// A token, and the rule that verifies it.
    Token {
        token: String,
        rule: &'a JwtRuleSpec,
        location: TokenLocation,
    },
    /// Refused before verification (format, or an issuer no rule configures for that place).
    Rejected(JwtError),
}

/// Finds the request's token in the places `rules` name and the rule for its issuer.
pub fn extract<'a>(
    rules: &[&'a JwtRuleSpec],
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Extraction<'a> {
    let found = rules
        .iter()
        .flat_map(|r| r.locations())
        .find_map(|location| token_at(&location, headers, query).map(|token| (token, location)));
    let Some((token, location)) = found else {
        return Extraction::NoToken;
    };
    let issuer = match jwt::issuer_of(&token) {
        Ok(issuer) => issuer,
        Err(error) => return Extraction::Rejected(error),
    };
    match rules
        .iter()
        .find(|r| r.issuer == issuer && r.locations().contains(&location))
    {
        Some(rule) => Extraction::Token {
            token,
            rule,
            location,
        },
        None => Extraction::Rejected(JwtError::UnknownIssuer),
    }
}

fn token_at(
    location: &TokenLocation,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Option<String> {
    let token = match location {
        TokenLocation::Header { name, prefix } => {
            let value = headers.get(name.as_str())?.to_str().ok()?;
            // Envoy compares the prefix without regard to case (`bearer` works as `Bearer`).
            let head = value.get(..prefix.len())?;
            if !head.eq_ignore_ascii_case(prefix) {
                return None;
            }
            value[prefix.len()..].trim().to_owned()
        }
        TokenLocation::Param(name) => query.iter().find(|(k, _)| k == name)?.1.clone(),
        TokenLocation::Cookie(name) => crate::http_util::cookie(headers, name)?.to_owned(),
    };
    (!token.is_empty()).then_some(token)
}

/// What Envoy does after verifying `token` with `rule`: drops the token unless
/// `forwardOriginalToken`, writes `outputPayloadToHeader` and `outputClaimToHeaders` (string,
/// number and boolean claims; a missing or other claim writes nothing).
pub fn apply_outputs(
    rule: &JwtRuleSpec,
    token: &str,
    location: &TokenLocation,
    verified: &VerifiedClaims,
    headers: &mut HeaderMap,
) {
    if !rule.forward_original_token
        && let TokenLocation::Header { name, .. } = location
    {
        headers.remove(name.as_str());
    }
    let mut set = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    };
    if let Some(name) = &rule.output_payload_to_header
        && let Some(payload) = token.split('.').nth(1)
    {
        set(name, payload);
    }
    for output in &rule.output_claim_to_headers {
        if let Some(value) = claim_text(&verified.claims, &output.claim) {
            set(&output.header, &value);
        }
    }
}

/// A claim (top level, else a dotted path into nested objects) as header text.
fn claim_text(claims: &serde_json::Value, claim: &str) -> Option<String> {
    let value = claims.get(claim).or_else(|| {
        claim
            .split('.')
            .try_fold(claims, |value, part| value.get(part))
    })?;
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Decodes a token's payload without checks (for tests and diagnostics).
pub fn payload_of(token: &str) -> Option<serde_json::Value> {
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
    serde_json::from_slice(&payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{KUBERNETES_ISSUER, Signer};
    use crate::policy::{ObjectRef, Workload};
    use serde_json::json;

    const TEST_KEY: &[u8] = include_bytes!("../tests/fixtures/test-signer.pk8.der");

    fn token(iss: &str) -> String {
        Signer::from_pkcs8(TEST_KEY, "k1")
            .unwrap()
            .sign(&json!({"iss": iss, "sub": "system:serviceaccount:ns:sa", "aud": ["a"], "exp": 4_000_000_000_i64, "kubernetes.io": {"namespace": "ns"}, "team": {"name": "a"}, "admin": true}))
            .unwrap()
    }

    fn rule(spec: serde_json::Value) -> JwtRuleSpec {
        serde_json::from_value(spec).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn extraction_table() {
        let k8s = rule(json!({"issuer": KUBERNETES_ISSUER}));
        let other = rule(
            json!({"issuer": "https://dex.example.com", "fromHeaders": [{"name": "x-token"}]}),
        );
        let good = token(KUBERNETES_ISSUER);
        let dex = token("https://dex.example.com");
        let bearer = format!("Bearer {good}");
        let lower = format!("bearer {good}");
        let bearer_dex = format!("Bearer {dex}");
        let rules = [&k8s, &other];
        let auth_header = TokenLocation::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        };
        type Case<'a> = (&'a str, HeaderMap, Vec<(String, String)>, Extraction<'a>);
        let cases: Vec<Case> = vec![
            ("nothing", headers(&[]), vec![], Extraction::NoToken),
            (
                "Basic credentials are not a bearer token",
                headers(&[("authorization", "Basic dXNlcjpwYXNz")]),
                vec![],
                Extraction::NoToken,
            ),
            (
                "Authorization: Bearer",
                headers(&[("authorization", &bearer)]),
                vec![],
                Extraction::Token {
                    token: good.clone(),
                    rule: &k8s,
                    location: auth_header.clone(),
                },
            ),
            (
                "the prefix ignores case",
                headers(&[("authorization", &lower)]),
                vec![],
                Extraction::Token {
                    token: good.clone(),
                    rule: &k8s,
                    location: auth_header.clone(),
                },
            ),
            (
                "access_token parameter",
                headers(&[]),
                vec![("access_token".into(), good.clone())],
                Extraction::Token {
                    token: good.clone(),
                    rule: &k8s,
                    location: TokenLocation::Param("access_token".into()),
                },
            ),
            (
                "a rule's own header",
                headers(&[("x-token", &dex)]),
                vec![],
                Extraction::Token {
                    token: dex.clone(),
                    rule: &other,
                    location: TokenLocation::Header {
                        name: "x-token".into(),
                        prefix: String::new(),
                    },
                },
            ),
            (
                "a token in a place its issuer's rule does not read",
                headers(&[("authorization", &bearer_dex)]),
                vec![],
                Extraction::Rejected(JwtError::UnknownIssuer),
            ),
            (
                "an issuer no rule names",
                headers(&[(
                    "authorization",
                    &format!("Bearer {}", token("https://evil.example.com")),
                )]),
                vec![],
                Extraction::Rejected(JwtError::UnknownIssuer),
            ),
            (
                "not a JWT",
                headers(&[("authorization", "Bearer abc")]),
                vec![],
                Extraction::Rejected(JwtError::BadFormat),
            ),
        ];
        for (name, headers, query, want) in cases {
            assert_eq!(extract(&rules, &headers, &query), want, "{name}");
        }
        assert_eq!(
            extract(&[], &headers(&[("authorization", &bearer)]), &[]),
            Extraction::NoToken,
            "no rule: the token passes unread"
        );
    }

    #[test]
    fn outputs() {
        let token = token(KUBERNETES_ISSUER);
        let verified = VerifiedClaims {
            issuer: KUBERNETES_ISSUER.into(),
            subject: "system:serviceaccount:ns:sa".into(),
            claims: payload_of(&token).unwrap(),
        };
        let location = TokenLocation::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        };
        let bearer = format!("Bearer {token}");
        let spec = rule(json!({
            "issuer": KUBERNETES_ISSUER,
            "outputPayloadToHeader": "x-jwt-payload",
            "outputClaimToHeaders": [
                {"header": "kubeflow-userid", "claim": "sub"},
                {"header": "x-team", "claim": "team.name"},
                {"header": "x-admin", "claim": "admin"},
                {"header": "x-aud", "claim": "aud"},
                {"header": "x-missing", "claim": "nope"}
            ]
        }));
        let mut h = headers(&[("authorization", &bearer), ("kubeflow-userid", "spoofed")]);
        apply_outputs(&spec, &token, &location, &verified, &mut h);
        assert!(
            h.get("authorization").is_none(),
            "dropped without forwardOriginalToken"
        );
        assert_eq!(h["kubeflow-userid"], "system:serviceaccount:ns:sa");
        assert_eq!(h["x-team"], "a");
        assert_eq!(h["x-admin"], "true");
        assert!(h.get("x-aud").is_none(), "lists are not written");
        assert!(h.get("x-missing").is_none());
        assert_eq!(h["x-jwt-payload"], token.split('.').nth(1).unwrap());

        let forward = rule(json!({"issuer": KUBERNETES_ISSUER, "forwardOriginalToken": true}));
        let mut h = headers(&[("authorization", &bearer)]);
        apply_outputs(&forward, &token, &location, &verified, &mut h);
        assert_eq!(h["authorization"], bearer.as_str());
    }

    #[test]
    fn jwks_sources() {
        let cases = [
            (
                json!({"issuer": KUBERNETES_ISSUER}),
                JwksSource::ApiServer("/openid/v1/jwks".into()),
            ),
            (
                json!({"issuer": "x", "jwksUri": "https://kubernetes.default.svc.cluster.local/openid/v1/jwks"}),
                JwksSource::ApiServer("/openid/v1/jwks".into()),
            ),
            (
                json!({"issuer": "x", "jwks_uri": "http://127.0.0.1:9/keys"}),
                JwksSource::Url("http://127.0.0.1:9/keys".into()),
            ),
            (
                json!({"issuer": "x", "jwks": "{\"keys\":[]}"}),
                JwksSource::Inline("{\"keys\":[]}".into()),
            ),
            (
                json!({"issuer": "https://dex.example.com"}),
                JwksSource::Discovery("https://dex.example.com".into()),
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(rule(spec.clone()).jwks_source(), want, "{spec}");
        }
    }

    #[test]
    fn binding() {
        let stored = |namespace: &str, spec: serde_json::Value| StoredRequestAuthentication {
            namespace: namespace.into(),
            name: "ra".into(),
            spec: serde_json::from_value(spec).unwrap(),
        };
        let all = vec![
            stored(
                "kserve",
                json!({"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "kserve-ingress-gateway"}],
                       "jwtRules": [{"issuer": "gateway"}]}),
            ),
            stored(
                "models",
                json!({"jwtRules": [{"issuer": "namespace-wide"}]}),
            ),
            stored(
                "istio-system",
                json!({"selector": {"matchLabels": {"app": "istio-ingressgateway"}}, "jwtRules": [{"issuer": "m2m"}]}),
            ),
        ];
        let gateway = ObjectRef::new("kserve", "kserve-ingress-gateway");
        let gateway_pods = Workload {
            namespace: "kserve".into(),
            labels: Default::default(),
        };
        let issuers = |enforcer: &Enforcer| -> Vec<String> {
            rules_for(&all, enforcer)
                .iter()
                .map(|r| r.issuer.clone())
                .collect()
        };
        assert_eq!(
            issuers(&Enforcer::Gateway {
                gateway: &gateway,
                class: "istio",
                workload: &gateway_pods
            }),
            ["gateway"]
        );
        let model = Workload {
            namespace: "models".into(),
            labels: Default::default(),
        };
        assert_eq!(issuers(&Enforcer::Sidecar(&model)), ["namespace-wide"]);
        assert!(issuers(&Enforcer::Ztunnel(&model)).is_empty());
    }
}
