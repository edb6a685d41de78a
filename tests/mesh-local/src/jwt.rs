//! Bearer JWT verification as Istio's RequestAuthentication (Envoy jwt_authn) does it.
//!
//! Check order and failure texts are Envoy's: format, issuer, time window (60 s clock skew),
//! audiences (only when configured), then the signature against the JWKS.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use serde::Deserialize;

/// The ServiceAccount token issuer Kubeflow's `m2m-token-issuer` RequestAuthentication trusts.
pub const KUBERNETES_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Envoy jwt_authn's default `clock_skew_seconds`.
pub const CLOCK_SKEW_SECONDS: i64 = 60;

/// A RequestAuthentication jwtRule: the trusted issuer and, when non-empty, accepted audiences.
#[derive(Clone, Debug)]
pub struct JwtRule {
    pub issuer: String,
    pub audiences: Vec<String>,
}

impl Default for JwtRule {
    fn default() -> Self {
        JwtRule {
            issuer: KUBERNETES_ISSUER.to_owned(),
            audiences: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Jwks {
    #[serde(default)]
    pub keys: Vec<Jwk>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
}

/// Why a token was rejected; `Display` is the body Envoy answers with (HTTP 401).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    BadFormat,
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoMatchingKey,
    #[error("Jwt verification fails")]
    VerificationFails,
}

/// A verified token's claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedClaims {
    pub issuer: String,
    pub subject: String,
    /// The whole payload (for `request.auth.claims[...]` and `outputClaimToHeaders`).
    pub claims: serde_json::Value,
}

impl VerifiedClaims {
    /// Istio's request principal: `<iss>/<sub>`.
    pub fn principal(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }
}

/// The `iss` of a token, read before any check (Envoy picks the provider by it); a token that is
/// not a JWS fails as Envoy's format check does.
pub fn issuer_of(token: &str) -> Result<String, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::BadFormat);
    };
    let _: Header = decode_json(header)?;
    let claims: Claims = decode_json(claims)?;
    Ok(claims.iss.unwrap_or_default())
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    aud: Audience,
}

#[derive(Default, Deserialize)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains_any(&self, wanted: &[String]) -> bool {
        match self {
            Audience::None => false,
            Audience::One(a) => wanted.contains(a),
            Audience::Many(list) => list.iter().any(|a| wanted.contains(a)),
        }
    }
}

/// Verifies `token` against `rule` and `jwks` at unix time `now`.
pub fn verify(
    token: &str,
    rule: &JwtRule,
    jwks: &Jwks,
    now: i64,
) -> Result<VerifiedClaims, JwtError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::BadFormat);
    };
    let header: Header = decode_json(header_b64)?;
    let claims: Claims = decode_json(claims_b64)?;
    let payload: serde_json::Value = decode_json(claims_b64)?;

    let issuer = claims.iss.unwrap_or_default();
    if issuer != rule.issuer {
        return Err(JwtError::UnknownIssuer);
    }
    if claims.exp.is_some_and(|exp| now > exp + CLOCK_SKEW_SECONDS) {
        return Err(JwtError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| now + CLOCK_SKEW_SECONDS < nbf) {
        return Err(JwtError::NotYetValid);
    }
    if !rule.audiences.is_empty() && !claims.aud.contains_any(&rule.audiences) {
        return Err(JwtError::AudienceNotAllowed);
    }

    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| JwtError::BadFormat)?;
    let signed = &token[..header_b64.len() + 1 + claims_b64.len()];
    let candidates: Vec<&Jwk> = jwks
        .keys
        .iter()
        .filter(|k| k.kty == "RSA" && header.alg == "RS256")
        .filter(|k| k.alg.as_deref().is_none_or(|a| a == header.alg))
        .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
        .collect();
    if candidates.is_empty() {
        return Err(JwtError::NoMatchingKey);
    }
    let verified = candidates.iter().any(|key| {
        let (Some(n), Some(e)) = (key.n.as_deref(), key.e.as_deref()) else {
            return false;
        };
        let (Ok(n), Ok(e)) = (URL_SAFE_NO_PAD.decode(n), URL_SAFE_NO_PAD.decode(e)) else {
            return false;
        };
        RsaPublicKeyComponents { n, e }
            .verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature)
            .is_ok()
    });
    if !verified {
        return Err(JwtError::VerificationFails);
    }
    Ok(VerifiedClaims {
        issuer,
        subject: claims.sub.unwrap_or_default(),
        claims: payload,
    })
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::BadFormat)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::BadFormat)
}

/// Signs RS256 tokens and publishes the matching JWKS: for tests that stand in for an API server.
pub struct Signer {
    pair: ring::signature::RsaKeyPair,
    kid: String,
}

impl Signer {
    /// `pkcs8_der`: an RSA private key (ring cannot generate RSA keys, so tests ship one).
    pub fn from_pkcs8(pkcs8_der: &[u8], kid: &str) -> Result<Signer, ring::error::KeyRejected> {
        Ok(Signer {
            pair: ring::signature::RsaKeyPair::from_pkcs8(pkcs8_der)?,
            kid: kid.to_owned(),
        })
    }

    /// The JWKS document (`/openid/v1/jwks`) holding this key.
    pub fn jwks(&self) -> serde_json::Value {
        let public: RsaPublicKeyComponents<Vec<u8>> = self.pair.public().into();
        let n = URL_SAFE_NO_PAD.encode(&public.n);
        let e = URL_SAFE_NO_PAD.encode(&public.e);
        serde_json::json!({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": n, "e": e}]})
    }

    /// A compact RS256 JWS over `claims`.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, ring::error::Unspecified> {
        let header = URL_SAFE_NO_PAD
            .encode(serde_json::json!({"alg": "RS256", "kid": self.kid}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{payload}");
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signed.as_bytes(),
            &mut signature,
        )?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const AUD: &str = "istio-ingressgateway.istio-system.svc.cluster.local";

    const TEST_KEY: &[u8] = include_bytes!("../tests/fixtures/test-signer.pk8.der");
    const OTHER_KEY: &[u8] = include_bytes!("../tests/fixtures/other-signer.pk8.der");

    fn signer(der: &[u8], kid: &str) -> Signer {
        Signer::from_pkcs8(der, kid).unwrap()
    }

    fn jwks() -> Jwks {
        serde_json::from_value(signer(TEST_KEY, "k1").jwks()).unwrap()
    }

    fn sign(der: &[u8], kid: &str, claims: serde_json::Value) -> String {
        signer(der, kid).sign(&claims).unwrap()
    }

    fn claims(exp: i64) -> serde_json::Value {
        json!({
            "iss": KUBERNETES_ISSUER,
            "sub": "system:serviceaccount:kubeflow-user-example-com:default-editor",
            "aud": [AUD],
            "iat": NOW - 100,
            "nbf": NOW - 100,
            "exp": exp,
        })
    }

    fn rule(audiences: &[&str]) -> JwtRule {
        JwtRule {
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            ..JwtRule::default()
        }
    }

    #[test]
    fn good_token_gives_sub() {
        let token = sign(TEST_KEY, "k1", claims(NOW + 3600));
        let verified = verify(&token, &rule(&[AUD]), &jwks(), NOW).unwrap();
        assert_eq!(
            verified.subject,
            "system:serviceaccount:kubeflow-user-example-com:default-editor"
        );
    }

    #[test]
    fn failures_carry_envoys_texts() {
        let jwks = jwks();
        let good = sign(TEST_KEY, "k1", claims(NOW + 3600));
        let mut wrong_issuer = claims(NOW + 3600);
        wrong_issuer["iss"] = json!("https://evil.example.com");
        let cases = [
            (
                "bad signature",
                sign(OTHER_KEY, "k1", claims(NOW + 3600)),
                rule(&[]),
                JwtError::VerificationFails,
            ),
            (
                "expired",
                sign(TEST_KEY, "k1", claims(NOW - 61)),
                rule(&[]),
                JwtError::Expired,
            ),
            (
                "wrong audience",
                good.clone(),
                rule(&["other-audience"]),
                JwtError::AudienceNotAllowed,
            ),
            (
                "wrong issuer",
                sign(TEST_KEY, "k1", wrong_issuer),
                rule(&[]),
                JwtError::UnknownIssuer,
            ),
            (
                "unknown kid",
                sign(TEST_KEY, "k2", claims(NOW + 3600)),
                rule(&[]),
                JwtError::NoMatchingKey,
            ),
            (
                "garbage",
                "not-a-jwt".to_owned(),
                rule(&[]),
                JwtError::BadFormat,
            ),
        ];
        for (name, token, rule, want) in cases {
            assert_eq!(verify(&token, &rule, &jwks, NOW), Err(want), "{name}");
        }
        assert_eq!(
            JwtError::VerificationFails.to_string(),
            "Jwt verification fails"
        );
    }

    #[test]
    fn clock_skew_and_no_audience_rule() {
        let jwks = jwks();
        // Within Envoy's 60 s skew an expired token still passes; no audiences configured = any.
        let token = sign(TEST_KEY, "k1", claims(NOW - 30));
        assert!(verify(&token, &rule(&[]), &jwks, NOW).is_ok());
        let mut future = claims(NOW + 3600);
        future["nbf"] = json!(NOW + 120);
        let token = sign(TEST_KEY, "k1", future);
        assert_eq!(
            verify(&token, &rule(&[]), &jwks, NOW),
            Err(JwtError::NotYetValid)
        );
    }
}
