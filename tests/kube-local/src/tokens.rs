//! ServiceAccount tokens: TokenRequest, RS256 JWTs, the OIDC discovery documents, TokenReview,
//! and bearer-token authentication.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use rsa::RsaPrivateKey;
use rsa::sha2::{Digest, Sha256};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use crate::error::{ApiError, FieldError};
use crate::store::State;

/// The issuer and default audience of a kube-apiserver with default flags.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const API_AUDIENCE: &str = ISSUER;

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The signing key: generated with `rsa` (ring cannot generate RSA keys), which also gives the
/// public parts for the JWKS, and loaded into ring, which signs several times faster (a
/// TokenRequest's signature is otherwise the dearest thing the API does).
struct Keys {
    rsa: RsaPrivateKey,
    ring: ring::signature::RsaKeyPair,
}

/// Generated once per process: 2048-bit RSA generation is slow in debug builds and every control
/// plane a test process starts can share it.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey as _;
        let mut rng = rsa::rand_core::OsRng;
        // Startup: without a key there is no token service.
        #[allow(clippy::expect_used)]
        let rsa = RsaPrivateKey::new(&mut rng, 2048).expect("RSA key generation");
        #[allow(clippy::expect_used)]
        let der = rsa.to_pkcs8_der().expect("PKCS#8 encoding of the key");
        #[allow(clippy::expect_used)]
        let ring = ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes())
            .expect("ring loads a 2048-bit key with exponent 65537");
        Keys { rsa, ring }
    })
}

fn signing_key() -> &'static RsaPrivateKey {
    &keys().rsa
}

/// `spec.audiences` of a TokenRequest or TokenReview; empty means the API server's own.
fn audiences_or_api(list: &Value) -> Vec<String> {
    let audiences: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    if audiences.is_empty() {
        vec![API_AUDIENCE.to_string()]
    } else {
        audiences
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn admin() -> Self {
        Self {
            name: "admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    /// Who a request without credentials is on the insecure port (what kubectl over http is).
    pub fn insecure_port() -> Self {
        Self {
            name: "system:unsecured".into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// What the server remembers about a token it minted.
#[derive(Debug, Clone)]
struct Minted {
    namespace: String,
    sa_name: String,
    sa_uid: String,
    bound: Option<(String, String, String)>,
    audiences: Vec<String>,
    exp: i64,
    jti: String,
}

pub struct TokenService {
    admin_token: String,
    kid: String,
    max_expiration: Option<Duration>,
    minted: Mutex<MintedTokens>,
}

struct MintedTokens {
    tokens: HashMap<String, Minted>,
    /// The size at which expired tokens are dropped next.
    prune_at: usize,
}

/// Below this many minted tokens, expired ones are kept.
const PRUNE_FLOOR: usize = 1024;

impl TokenService {
    pub fn new(max_expiration: Option<Duration>) -> Self {
        let key = signing_key();
        let mut h = Sha256::new();
        h.update(key.n().to_bytes_be());
        h.update(key.e().to_bytes_be());
        let kid = b64url(&h.finalize());
        let admin_token = format!("kube-local-admin-{}", uuid::Uuid::new_v4().simple());
        Self {
            admin_token,
            kid,
            max_expiration,
            minted: Mutex::new(MintedTokens {
                tokens: HashMap::new(),
                prune_at: PRUNE_FLOOR,
            }),
        }
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn openid_configuration(&self, base_url: &str) -> Value {
        json!({
            "issuer": ISSUER,
            "jwks_uri": format!("{base_url}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    pub fn jwks(&self) -> Value {
        let key = signing_key();
        json!({"keys": [{
            "use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256",
            "n": b64url(&key.n().to_bytes_be()), "e": b64url(&key.e().to_bytes_be()),
        }]})
    }

    fn sign(&self, claims: &Value) -> Result<String, ApiError> {
        let header = json!({"alg": "RS256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let key = &keys().ring;
        let mut sig = vec![0u8; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| ApiError::new(500, "InternalError", "signing the token failed"))?;
        Ok(format!("{input}.{}", b64url(&sig)))
    }

    /// POST serviceaccounts/NAME/token. Returns the TokenRequest and an optional Warning text.
    /// `uid_of(plural, name)` looks objects of the namespace up (the ServiceAccount, the bound
    /// object): the store is locked only for those lookups, not while the token is signed.
    pub fn token_request(
        &self,
        uid_of: impl Fn(&str, &str) -> Option<String>,
        ns: &str,
        sa_name: &str,
        body: &Value,
    ) -> Result<(Value, Option<String>), ApiError> {
        let sa_uid = uid_of("serviceaccounts", sa_name)
            .ok_or_else(|| ApiError::not_found("", "serviceaccounts", sa_name))?;
        let spec = &body["spec"];
        let audiences = audiences_or_api(&spec["audiences"]);
        let requested = spec["expirationSeconds"].as_i64().unwrap_or(3600);
        let invalid = |e: FieldError| {
            ApiError::invalid("authentication.k8s.io", "TokenRequest", sa_name, &[e])
        };
        if requested < 600 {
            return Err(invalid(FieldError::invalid(
                "spec.expirationSeconds",
                &json!(requested),
                "may not specify a duration less than 10 minutes",
            )));
        }
        if requested > 1 << 32 {
            return Err(invalid(FieldError::invalid(
                "spec.expirationSeconds",
                &json!(requested),
                "may not specify a duration larger than 2^32 seconds",
            )));
        }
        let mut expiration = requested;
        let mut warning = None;
        if let Some(max) = self.max_expiration {
            let max = max.as_secs() as i64;
            if expiration > max {
                warning = Some(format!(
                    "requested expiration of {requested} seconds shortened to {max} seconds"
                ));
                expiration = max;
            }
        }
        let bound_ref = &spec["boundObjectRef"];
        let mut bound = None;
        if bound_ref.is_object() {
            let kind = bound_ref["kind"].as_str().unwrap_or_default();
            let api_version = bound_ref["apiVersion"].as_str().unwrap_or("v1");
            let plural = match (api_version, kind) {
                ("v1", "Secret") => "secrets",
                ("v1", "Pod") => "pods",
                _ => {
                    return Err(invalid(FieldError::not_supported(
                        "spec.boundObjectRef.kind",
                        &json!(kind),
                        &[json!("Pod"), json!("Secret")],
                    )));
                }
            };
            let name = bound_ref["name"].as_str().unwrap_or_default();
            let uid = uid_of(plural, name).ok_or_else(|| ApiError::not_found("", plural, name))?;
            if let Some(want) = bound_ref["uid"].as_str().filter(|u| !u.is_empty())
                && want != uid
            {
                return Err(ApiError::conflict(
                    "",
                    kind,
                    name,
                    &format!(
                        "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            bound = Some((kind.to_string(), name.to_string(), uid));
        }
        let now = crate::util::now();
        let iat = now.as_second();
        let exp = iat + expiration;
        let jti = uuid::Uuid::new_v4().to_string();
        let mut k8s = json!({"namespace": ns, "serviceaccount": {"name": sa_name, "uid": sa_uid}});
        if let Some((kind, name, uid)) = &bound {
            k8s[kind.to_lowercase()] = json!({"name": name, "uid": uid});
        }
        let claims = json!({
            "aud": audiences, "exp": exp, "iat": iat, "iss": ISSUER, "jti": jti,
            "kubernetes.io": k8s, "nbf": iat, "sub": format!("system:serviceaccount:{ns}:{sa_name}"),
        });
        let token = self.sign(&claims)?;
        let record = Minted {
            namespace: ns.into(),
            sa_name: sa_name.into(),
            sa_uid,
            bound,
            audiences: audiences.clone(),
            exp,
            jti,
        };
        let mut minted = self.minted.lock().unwrap_or_else(|p| p.into_inner());
        // Expired tokens never authenticate again: forget them now and then (when the map has
        // doubled since), so renewals do not grow it for ever.
        if minted.tokens.len() >= minted.prune_at {
            minted.tokens.retain(|_, m| m.exp > iat);
            minted.prune_at = (minted.tokens.len() * 2).max(PRUNE_FLOOR);
        }
        minted.tokens.insert(token.clone(), record);
        drop(minted);
        let expires = jiff::Timestamp::from_second(exp)
            .map(crate::util::rfc3339)
            .unwrap_or_default();
        let mut out_spec = json!({"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": null});
        if bound_ref.is_object() {
            out_spec["boundObjectRef"] = bound_ref.clone();
        }
        let response = json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": sa_name, "namespace": ns, "creationTimestamp": crate::util::rfc3339(now)},
            "spec": out_spec,
            "status": {"token": token, "expirationTimestamp": expires},
        });
        Ok((response, warning))
    }

    /// Checks a token against the store: minted here, unexpired, audience, SA and bound object alive.
    fn check(
        &self,
        st: &State,
        token: &str,
        audiences: &[String],
    ) -> Result<(User, Vec<String>, String), String> {
        let minted = self
            .minted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tokens
            .get(token)
            .cloned();
        let Some(m) = minted else {
            return Err("invalid bearer token".into());
        };
        if m.exp <= crate::util::now().as_second() {
            return Err("invalid bearer token, service account token has expired".into());
        }
        let matched: Vec<String> = m
            .audiences
            .iter()
            .filter(|a| audiences.contains(a))
            .cloned()
            .collect();
        if matched.is_empty() {
            return Err("invalid bearer token, token audiences is invalid".into());
        }
        let sa_ok = st.uid_of("serviceaccounts", &m.namespace, &m.sa_name) == Some(&m.sa_uid);
        if !sa_ok {
            return Err("invalid bearer token, service account has been deleted".into());
        }
        if let Some((kind, name, uid)) = &m.bound {
            let plural = if kind == "Pod" { "pods" } else { "secrets" };
            let alive = st.uid_of(plural, &m.namespace, name) == Some(uid.as_str());
            if !alive {
                return Err("invalid bearer token, token has been invalidated".into());
            }
        }
        let ns = &m.namespace;
        let user = User {
            name: format!("system:serviceaccount:{ns}:{}", m.sa_name),
            uid: m.sa_uid.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        };
        Ok((user, matched, m.jti.clone()))
    }

    /// Authenticates a request's bearer token.
    pub fn authenticate(&self, st: &State, token: &str) -> Option<User> {
        if token == self.admin_token {
            return Some(User::admin());
        }
        self.check(st, token, &[API_AUDIENCE.to_string()])
            .ok()
            .map(|(u, _, _)| u)
    }

    /// POST tokenreviews.
    pub fn token_review(&self, st: &State, body: &Value) -> Value {
        let token = body["spec"]["token"].as_str().unwrap_or_default();
        let audiences = audiences_or_api(&body["spec"]["audiences"]);
        let status = match self.check(st, token, &audiences) {
            Ok((user, matched, jti)) => json!({
                "authenticated": true,
                "user": {"username": user.name, "uid": user.uid, "groups": user.groups,
                         "extra": {"authentication.kubernetes.io/credential-id": [format!("JTI={jti}")]}},
                "audiences": matched,
            }),
            Err(e) => json!({"user": {}, "error": e}),
        };
        let mut spec = body["spec"].clone();
        if let Some(m) = spec.as_object_mut() {
            m.remove("token");
        }
        json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {"creationTimestamp": null}, "spec": spec, "status": status})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_free_claims_shape() {
        let svc = TokenService::new(None);
        let claims = json!({"sub": "x"});
        let token = svc.sign(&claims).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[0])
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], svc.jwks()["keys"][0]["kid"]);
        // The signature verifies with the published key.
        use rsa::signature::Verifier;
        let verifying = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(signing_key().to_public_key());
        let sig_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap_or_default();
        let sig = rsa::pkcs1v15::Signature::try_from(sig_bytes.as_slice());
        assert!(sig.is_ok_and(|s| {
            verifying
                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &s)
                .is_ok()
        }));
    }
}
