//! The credential Secret's layout: the one place that knows its keys. The operator encodes a
//! credential and its endpoint into it; the operator (to decide on renewal) and every client
//! command decode it.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::credential::{Credential, Inputs, IssuedCredential, Record};
use super::endpoint::Endpoint;

pub const KEY_TOKEN: &str = "token";
pub const KEY_AUTHORIZATION: &str = "authorization";
/// DexSession: the session cookie as `name=value`, and its name alone.
pub const KEY_COOKIE: &str = "cookie";
pub const KEY_COOKIE_NAME: &str = "cookie-name";
pub const KEY_URL: &str = "url";
pub const KEY_HOST: &str = "host";
pub const KEY_PREDICT_URL: &str = "predict-url";
pub const KEY_INFER_URL: &str = "infer-url";
pub const KEY_GATEWAY_URL: &str = "gateway-url";
pub const KEY_EXPIRES_AT: &str = "expires-at";

/// When the credential in the Secret was issued (RFC 3339).
pub const ANNOTATION_ISSUED_AT: &str = "inference-access.io/issued-at";
/// The inputs it was obtained with (JSON), to notice spec changes.
/// The renew request the credential was obtained for.
pub const ANNOTATION_RENEW_REQUEST: &str = "inference-access.io/renew-request";
/// When the credential expires (RFC 3339), beside the `expires-at` key, so the record can be read
/// from the Secret's metadata alone.
pub const ANNOTATION_EXPIRES_AT: &str = "inference-access.io/expires-at";
/// A fingerprint of the non-credential keys (URLs, Host): a changed endpoint is seen in the
/// metadata without reading the Secret's data.
pub const ANNOTATION_CONTENT: &str = "inference-access.io/content";
/// (Named token-request before DexSession existed; kept so existing Secrets stay readable.)
pub const ANNOTATION_INPUTS: &str = "inference-access.io/token-request";

const ENDPOINT_KEYS: [&str; 6] = [
    KEY_URL,
    KEY_HOST,
    KEY_PREDICT_URL,
    KEY_INFER_URL,
    KEY_GATEWAY_URL,
    KEY_EXPIRES_AT,
];

/// The two shapes of credential a Secret holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// `token` and `authorization`.
    Token,
    /// `cookie` and `cookie-name`.
    Session,
}

impl CredentialKind {
    /// The keys whose values are the credential itself: never shown, never logged.
    pub fn secret_keys(self) -> [&'static str; 2] {
        match self {
            CredentialKind::Token => [KEY_TOKEN, KEY_AUTHORIZATION],
            CredentialKind::Session => [KEY_COOKIE, KEY_COOKIE_NAME],
        }
    }

    /// The key a client reads the credential from.
    pub fn credential_key(self) -> &'static str {
        match self {
            CredentialKind::Token => KEY_TOKEN,
            CredentialKind::Session => KEY_COOKIE,
        }
    }

    /// Every key of a complete Secret of this kind, sorted.
    pub fn keys(self) -> Vec<&'static str> {
        let mut keys: Vec<_> = self
            .secret_keys()
            .into_iter()
            .chain(ENDPOINT_KEYS)
            .collect();
        keys.sort_unstable();
        keys
    }

    /// What people call it in messages.
    pub fn noun(self) -> &'static str {
        match self {
            CredentialKind::Token => "token",
            CredentialKind::Session => "session",
        }
    }

    pub fn of(credential: &Credential) -> Self {
        match credential {
            Credential::Bearer(_) => CredentialKind::Token,
            Credential::Cookie { .. } => CredentialKind::Session,
        }
    }
}

/// Whether a key holds a credential value (to redact when shown).
pub fn is_credential_key(key: &str) -> bool {
    [KEY_TOKEN, KEY_AUTHORIZATION, KEY_COOKIE].contains(&key)
}

/// Read access to a stored Secret, so decoding needs no Kubernetes types.
pub trait SecretFields {
    fn data(&self, key: &str) -> Option<&[u8]>;
    fn annotation(&self, key: &str) -> Option<&str>;

    /// A non-empty UTF-8 value.
    fn text(&self, key: &str) -> Option<&str> {
        self.data(key)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|v| !v.is_empty())
    }
}

/// What the operator writes: every key at once, plus the record annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub data: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

pub fn encode(issued: &IssuedCredential, endpoint: &Endpoint) -> Encoded {
    let credential = match &issued.value {
        Credential::Bearer(token) => [
            (KEY_TOKEN, token.clone()),
            (KEY_AUTHORIZATION, format!("Bearer {token}")),
        ],
        Credential::Cookie { name, value } => [
            (KEY_COOKIE, format!("{name}={value}")),
            (KEY_COOKIE_NAME, name.clone()),
        ],
    };
    let record = &issued.record;
    let data = credential
        .into_iter()
        .chain(endpoint_keys(endpoint))
        .chain([(KEY_EXPIRES_AT, record.expires_at.to_string())])
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    Encoded {
        data,
        annotations: annotations(record, endpoint),
    }
}

fn endpoint_keys(endpoint: &Endpoint) -> [(&'static str, String); 5] {
    [
        (KEY_URL, endpoint.url.clone()),
        (KEY_HOST, endpoint.host.clone()),
        (KEY_PREDICT_URL, endpoint.predict_url()),
        (KEY_INFER_URL, endpoint.infer_url()),
        (KEY_GATEWAY_URL, endpoint.gateway_url.clone()),
    ]
}

/// The Secret's annotations for a credential with this record at this endpoint: if the Secret
/// already carries them all, its data needs no rewrite.
pub fn annotations(record: &Record, endpoint: &Endpoint) -> BTreeMap<String, String> {
    let content: String = endpoint_keys(endpoint)
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let mut annotations = BTreeMap::from([
        (
            ANNOTATION_ISSUED_AT.to_owned(),
            record.issued_at.to_string(),
        ),
        (
            ANNOTATION_EXPIRES_AT.to_owned(),
            record.expires_at.to_string(),
        ),
        (
            ANNOTATION_INPUTS.to_owned(),
            serde_json::to_string(&record.inputs).unwrap_or_default(),
        ),
        (
            ANNOTATION_CONTENT.to_owned(),
            format!("{:016x}", super::fnv1a(content.as_bytes())),
        ),
    ]);
    if let Some(request) = &record.renew_request {
        annotations.insert(ANNOTATION_RENEW_REQUEST.to_owned(), request.clone());
    }
    annotations
}

/// The credential a Secret holds: the Dex session cookie when there is one, otherwise the
/// token (or the `authorization` value without its `Bearer ` prefix).
pub fn decode_credential(secret: &impl SecretFields) -> Option<Credential> {
    if let Some(cookie) = secret.text(KEY_COOKIE) {
        let (name, value) = match cookie.split_once('=') {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None => (secret.text(KEY_COOKIE_NAME)?.to_owned(), cookie.to_owned()),
        };
        return Some(Credential::Cookie { name, value });
    }
    if let Some(token) = secret.text(KEY_TOKEN) {
        return Some(Credential::Bearer(token.to_owned()));
    }
    secret
        .text(KEY_AUTHORIZATION)
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(|t| Credential::Bearer(t.to_owned()))
}

/// The record the operator wrote, from the annotations (and the `expires-at` key for Secrets
/// written before the annotation existed). `None` when any part is missing or unreadable: the
/// credential is then obtained again rather than trusted.
pub fn decode_record(secret: &impl SecretFields) -> Option<Record> {
    let expires_at = secret
        .annotation(ANNOTATION_EXPIRES_AT)
        .or_else(|| secret.text(KEY_EXPIRES_AT))?;
    let issued_at: Timestamp = secret.annotation(ANNOTATION_ISSUED_AT)?.parse().ok()?;
    let inputs: Inputs = serde_json::from_str(secret.annotation(ANNOTATION_INPUTS)?).ok()?;
    Some(Record {
        issued_at,
        expires_at: expires_at.parse().ok()?,
        inputs,
        renew_request: secret
            .annotation(ANNOTATION_RENEW_REQUEST)
            .map(str::to_owned),
    })
}

/// The credential and its record, from a whole Secret.
pub fn decode_issued(secret: &impl SecretFields) -> Option<IssuedCredential> {
    Some(IssuedCredential {
        value: decode_credential(secret)?,
        record: decode_record(secret)?,
    })
}

/// What a client reads back to call the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSecret {
    pub url: String,
    pub host: String,
    pub gateway_url: String,
    pub predict_url: String,
    pub infer_url: String,
    pub credential: Credential,
}

/// Why a Secret cannot be used by a client yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incomplete {
    NoCredential,
    MissingKey(&'static str),
}

impl ClientSecret {
    pub fn decode(secret: &impl SecretFields) -> Result<Self, Incomplete> {
        let text = |key: &'static str| {
            secret
                .text(key)
                .map(str::to_owned)
                .ok_or(Incomplete::MissingKey(key))
        };
        Ok(Self {
            credential: decode_credential(secret).ok_or(Incomplete::NoCredential)?,
            url: text(KEY_URL)?,
            host: text(KEY_HOST)?,
            gateway_url: text(KEY_GATEWAY_URL)?,
            predict_url: text(KEY_PREDICT_URL)?,
            infer_url: text(KEY_INFER_URL)?,
        })
    }
}

/// A Secret as plain maps: how tests and offline rendering hold one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlainSecret {
    pub data: BTreeMap<String, Vec<u8>>,
    pub annotations: BTreeMap<String, String>,
}

impl SecretFields for PlainSecret {
    fn data(&self, key: &str) -> Option<&[u8]> {
        self.data.get(key).map(Vec::as_slice)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
}

impl From<Encoded> for PlainSecret {
    fn from(encoded: Encoded) -> Self {
        Self {
            data: encoded
                .data
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect(),
            annotations: encoded.annotations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::credential::TokenRequestInputs;
    use crate::fixtures::ts;

    fn endpoint() -> Endpoint {
        Endpoint::resolve(
            "http://sklearn-iris.ns.example.com",
            "http://gw.example",
            "sklearn-iris",
        )
        .unwrap()
    }

    fn issued(value: Credential) -> IssuedCredential {
        IssuedCredential {
            value,
            record: Record {
                issued_at: ts("2026-01-01T00:00:00Z"),
                expires_at: ts("2026-01-01T01:00:00Z"),
                inputs: Inputs::ServiceAccountToken(TokenRequestInputs {
                    service_account: "client".into(),
                    audiences: vec!["aud".into()],
                    expiration_seconds: 3600,
                }),
                renew_request: Some("2026-01-01T00:00:00.5Z".into()),
            },
        }
    }

    fn plain(data: &[(&str, &str)]) -> PlainSecret {
        PlainSecret {
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn a_token_secret_has_every_key_a_client_needs() {
        let encoded = encode(&issued(Credential::Bearer("t0k".into())), &endpoint());
        let keys: Vec<&str> = encoded.data.keys().map(String::as_str).collect();
        assert_eq!(keys, CredentialKind::Token.keys());
        assert_eq!(encoded.data[KEY_AUTHORIZATION], "Bearer t0k");
        assert_eq!(
            encoded.data[KEY_PREDICT_URL],
            "http://gw.example/v1/models/sklearn-iris:predict"
        );
        assert_eq!(encoded.data[KEY_EXPIRES_AT], "2026-01-01T01:00:00Z");
    }

    #[test]
    fn a_session_secret_holds_the_cookie_instead() {
        let cookie = Credential::Cookie {
            name: "oauth2_proxy_kubeflow".into(),
            value: "abc==".into(),
        };
        let encoded = encode(&issued(cookie.clone()), &endpoint());
        let keys: Vec<&str> = encoded.data.keys().map(String::as_str).collect();
        assert_eq!(keys, CredentialKind::Session.keys());
        assert_eq!(encoded.data[KEY_COOKIE], "oauth2_proxy_kubeflow=abc==");
        assert_eq!(decode_credential(&PlainSecret::from(encoded)), Some(cookie));
    }

    #[test]
    fn the_record_round_trips() {
        let record = issued(Credential::Bearer("t".into()));
        let secret = PlainSecret::from(encode(&record, &endpoint()));
        assert_eq!(decode_issued(&secret), Some(record));
    }

    #[test]
    fn the_record_reads_from_the_annotations_alone() {
        let record = issued(Credential::Bearer("t".into()));
        let mut metadata_only = PlainSecret::from(encode(&record, &endpoint()));
        metadata_only.data.clear();
        assert_eq!(decode_record(&metadata_only), Some(record.record));
        // A moved endpoint changes the fingerprint; a new credential its issue time.
        let moved =
            Endpoint::resolve("http://example.com/serving/ns/m", "http://gw.example", "m").unwrap();
        let before = annotations(&issued(Credential::Bearer("t".into())).record, &endpoint());
        let after = annotations(&issued(Credential::Bearer("t".into())).record, &moved);
        assert_ne!(before[ANNOTATION_CONTENT], after[ANNOTATION_CONTENT]);
    }

    #[test]
    fn an_unreadable_record_is_not_trusted() {
        assert_eq!(decode_issued(&plain(&[("token", "t")])), None);
        assert_eq!(decode_issued(&PlainSecret::default()), None);
        let mut secret =
            PlainSecret::from(encode(&issued(Credential::Bearer("t".into())), &endpoint()));
        secret
            .annotations
            .insert(ANNOTATION_INPUTS.into(), "{not json".into());
        assert_eq!(decode_issued(&secret), None);
    }

    #[test]
    fn credential_from_any_of_its_keys() {
        let cases = [
            (
                plain(&[("token", "t0k"), ("authorization", "Bearer t0k")]),
                Some(Credential::Bearer("t0k".into())),
            ),
            (
                plain(&[("authorization", "Bearer t0k")]),
                Some(Credential::Bearer("t0k".into())),
            ),
            (
                plain(&[("cookie", "abc"), ("cookie-name", "authservice_session")]),
                Some(Credential::Cookie {
                    name: "authservice_session".into(),
                    value: "abc".into(),
                }),
            ),
            (plain(&[("url", "http://x")]), None),
            (plain(&[("token", "")]), None),
        ];
        for (secret, expected) in cases {
            assert_eq!(decode_credential(&secret), expected, "{secret:?}");
        }
    }

    #[test]
    fn a_client_learns_which_key_is_missing() {
        let full = PlainSecret::from(encode(&issued(Credential::Bearer("t".into())), &endpoint()));
        let client = ClientSecret::decode(&full).unwrap();
        assert_eq!(client.host, "sklearn-iris.ns.example.com");
        let mut partial = full.clone();
        partial.data.remove(KEY_HOST);
        assert_eq!(
            ClientSecret::decode(&partial),
            Err(Incomplete::MissingKey(KEY_HOST))
        );
        assert_eq!(
            ClientSecret::decode(&plain(&[("url", "u")])),
            Err(Incomplete::NoCredential)
        );
    }

    #[test]
    fn only_credential_values_are_redacted() {
        let redacted: Vec<_> = CredentialKind::Token
            .keys()
            .into_iter()
            .chain(CredentialKind::Session.keys())
            .filter(|k| is_credential_key(k))
            .collect();
        assert_eq!(redacted, ["authorization", "token", "cookie"]);
    }
}
