//! When a token must be (re)issued, and when the current one is renewed: pure decisions over the
//! record the operator keeps in the Secret and a `now`.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::Secret;
use serde::{Deserialize, Serialize};

use crate::api::keys;
use crate::gateway::probe::Credential;

/// The API server refuses `expirationSeconds` below this.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

/// What a token was requested with. Stored on the Secret so a spec change re-issues the token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequestInputs {
    pub service_account: String,
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
}

impl TokenRequestInputs {
    /// The TokenRequest body, bound to the credential Secret so the token dies with it for
    /// TokenReview consumers.
    pub fn token_request(&self, secret_name: &str, secret_uid: &str) -> TokenRequest {
        TokenRequest {
            spec: TokenRequestSpec {
                audiences: self.audiences.clone(),
                expiration_seconds: Some(self.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Secret".into()),
                    name: Some(secret_name.into()),
                    uid: Some(secret_uid.into()),
                }),
            },
            ..TokenRequest::default()
        }
    }
}

/// What a Dex session was logged in with. Never the password: a changed password is a new
/// Secret the user rotates, and `inference-access renew` logs in again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DexSessionInputs {
    pub username: String,
    pub connector: String,
    pub login_url: String,
}

/// What the credential in the Secret was obtained with, stored on the Secret so that a spec
/// change obtains a new one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum Inputs {
    ServiceAccountToken(TokenRequestInputs),
    DexSession(DexSessionInputs),
}

/// The credential currently held in the Secret, with when and for what it was obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCredential {
    pub value: Credential,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub inputs: Inputs,
}

impl IssuedCredential {
    /// Reads the record back from a Secret the operator wrote. `None` when any part is missing
    /// or unreadable: the credential is then obtained again rather than trusted.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let annotations = secret.metadata.annotations.as_ref()?;
        let value = Credential::from_secret(secret)?;
        let expires_at = data
            .get(keys::KEY_EXPIRES_AT)
            .and_then(|v| std::str::from_utf8(&v.0).ok())?
            .parse()
            .ok()?;
        let issued_at = annotations.get(keys::ANNOTATION_ISSUED_AT)?.parse().ok()?;
        let inputs = serde_json::from_str(annotations.get(keys::ANNOTATION_TOKEN_REQUEST)?).ok()?;
        Some(Self {
            value,
            issued_at,
            expires_at,
            inputs,
        })
    }

    /// The annotations that let `from_secret` read this record back.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                keys::ANNOTATION_ISSUED_AT.to_owned(),
                self.issued_at.to_string(),
            ),
            (
                keys::ANNOTATION_TOKEN_REQUEST.to_owned(),
                serde_json::to_string(&self.inputs).unwrap_or_default(),
            ),
        ])
    }

    /// When to renew: `renew_before` ahead of expiry, or a third of the lifetime when unset.
    /// A server cap can make the real lifetime shorter than `renew_before`; renewing at once
    /// would then loop forever, so the default third applies instead.
    pub fn renewal_time(&self, renew_before: Option<SignedDuration>) -> Timestamp {
        let lifetime = self.expires_at.duration_since(self.issued_at);
        let third = lifetime / 3;
        let before = match renew_before {
            Some(before) if before < lifetime => before,
            _ => third,
        };
        self.expires_at - before
    }
}

/// Why a new token is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// The Secret holds no token yet.
    Missing,
    /// The renewal time has come (or the token already expired).
    Renewal,
    /// The ServiceAccount, audiences or duration changed since the token was issued.
    SpecChanged,
    /// A person asked for a renewal (`inference-access renew`).
    Requested,
}

/// Whether the held token is still good at `now`.
pub fn needs_issue(
    current: Option<&IssuedCredential>,
    wanted: &Inputs,
    renew_before: Option<SignedDuration>,
    renew_requested_after: Option<Timestamp>,
    now: Timestamp,
) -> Option<IssueReason> {
    let Some(current) = current else {
        return Some(IssueReason::Missing);
    };
    if &current.inputs != wanted {
        return Some(IssueReason::SpecChanged);
    }
    if renew_requested_after.is_some_and(|requested| requested > current.issued_at) {
        return Some(IssueReason::Requested);
    }
    (now >= current.renewal_time(renew_before)).then_some(IssueReason::Renewal)
}

/// A little deterministic jitter (up to 1% of the renew window, at most 30 s), derived from the
/// object's uid so a fleet of accesses created together does not renew in one burst.
pub fn jitter(uid: &str, window: SignedDuration) -> SignedDuration {
    let spread = (window.as_millis() / 100).clamp(0, 30_000) as u64;
    if spread == 0 {
        return SignedDuration::ZERO;
    }
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let hash = uid.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    SignedDuration::from_millis((hash % spread) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn token_inputs() -> TokenRequestInputs {
        TokenRequestInputs {
            service_account: "client".into(),
            audiences: vec!["istio-ingressgateway.istio-system.svc.cluster.local".into()],
            expiration_seconds: 3600,
        }
    }

    fn inputs() -> Inputs {
        Inputs::ServiceAccountToken(token_inputs())
    }

    fn issued(issued_at: &str, expires_at: &str) -> IssuedCredential {
        IssuedCredential {
            value: Credential::Bearer("t".into()),
            issued_at: ts(issued_at),
            expires_at: ts(expires_at),
            inputs: inputs(),
        }
    }

    #[test]
    fn renewal_time_defaults_to_a_third_of_the_lifetime() {
        let token = issued("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
        assert_eq!(token.renewal_time(None), ts("2026-01-01T00:40:00Z"));
        assert_eq!(
            token.renewal_time(Some(SignedDuration::from_mins(5))),
            ts("2026-01-01T00:55:00Z")
        );
    }

    #[test]
    fn renewal_time_survives_a_server_cap_shorter_than_renew_before() {
        // Asked for 24h with renewBefore 2h; the server capped the token at 1h.
        let token = issued("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
        assert_eq!(
            token.renewal_time(Some(SignedDuration::from_hours(2))),
            ts("2026-01-01T00:40:00Z")
        );
    }

    #[test]
    fn needs_issue_table() {
        let token = issued("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
        let mut other = token_inputs();
        other.audiences = vec!["other".into()];
        let other = Inputs::ServiceAccountToken(other);
        let cases = [
            (
                None,
                inputs(),
                None,
                "2026-01-01T00:10:00Z",
                Some(IssueReason::Missing),
            ),
            (Some(&token), inputs(), None, "2026-01-01T00:39:59Z", None),
            (
                Some(&token),
                inputs(),
                None,
                "2026-01-01T00:40:00Z",
                Some(IssueReason::Renewal),
            ),
            (
                Some(&token),
                inputs(),
                None,
                "2026-01-01T02:00:00Z",
                Some(IssueReason::Renewal),
            ),
            (
                Some(&token),
                other,
                None,
                "2026-01-01T00:10:00Z",
                Some(IssueReason::SpecChanged),
            ),
            (
                Some(&token),
                inputs(),
                Some("2026-01-01T00:05:00Z"),
                "2026-01-01T00:10:00Z",
                Some(IssueReason::Requested),
            ),
            // A renew request older than the token was already served.
            (
                Some(&token),
                inputs(),
                Some("2025-12-31T23:00:00Z"),
                "2026-01-01T00:10:00Z",
                None,
            ),
        ];
        for (current, wanted, requested, now, expected) in cases {
            assert_eq!(
                needs_issue(current, &wanted, None, requested.map(ts), ts(now)),
                expected,
                "at {now}"
            );
        }
    }

    #[test]
    fn the_record_round_trips_through_the_secret() {
        let token = issued("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
        let secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some(token.annotations()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (keys::KEY_TOKEN.to_owned(), ByteString(b"t".to_vec())),
                (
                    keys::KEY_EXPIRES_AT.to_owned(),
                    ByteString(b"2026-01-01T01:00:00Z".to_vec()),
                ),
            ])),
            ..Default::default()
        };
        assert_eq!(IssuedCredential::from_secret(&secret), Some(token));
    }

    #[test]
    fn an_unreadable_record_is_not_trusted() {
        let secret = Secret {
            data: Some(BTreeMap::from([(
                keys::KEY_TOKEN.to_owned(),
                ByteString(b"t".to_vec()),
            )])),
            ..Default::default()
        };
        assert_eq!(IssuedCredential::from_secret(&secret), None);
        assert_eq!(IssuedCredential::from_secret(&Secret::default()), None);
    }

    #[test]
    fn token_request_is_bound_to_the_secret_and_never_audience_less() {
        let request = token_inputs().token_request("client-credential", "uid-1");
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "metadata": {},
                "spec": {
                    "audiences": ["istio-ingressgateway.istio-system.svc.cluster.local"],
                    "expirationSeconds": 3600,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": "client-credential", "uid": "uid-1"}
                }
            })
        );
    }

    #[test]
    fn jitter_is_small_stable_and_spread() {
        let window = SignedDuration::from_mins(20);
        let a = jitter("uid-a", window);
        assert_eq!(a, jitter("uid-a", window));
        assert!(a <= SignedDuration::from_secs(12));
        let distinct: std::collections::BTreeSet<_> = (0..50)
            .map(|i| jitter(&format!("uid-{i}"), window))
            .collect();
        assert!(
            distinct.len() > 40,
            "jitter should spread accesses: {distinct:?}"
        );
        assert_eq!(jitter("uid-a", SignedDuration::ZERO), SignedDuration::ZERO);
    }
}
