//! A credential for the gateway, and the record of what it was obtained with and when.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

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
}

/// What a token was requested with. Stored on the Secret so a spec change re-issues the token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequestInputs {
    pub service_account: String,
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
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

/// When and for what a credential was obtained: everything the operator decides renewal on,
/// kept in the Secret's annotations so it is known without reading the credential itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub inputs: Inputs,
    /// The renew request (the annotation's value) this credential was obtained for, if any.
    pub renew_request: Option<String>,
}

/// A credential with its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCredential {
    pub value: Credential,
    pub record: Record,
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn headers_carry_the_credential_as_gateways_expect() {
        assert_eq!(
            Credential::Bearer("t".into()).header(),
            ("authorization", "Bearer t".to_owned())
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
}
