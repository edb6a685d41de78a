//! One error type for the reconcile pipeline. `category()` is a fixed, bounded label for
//! events and metrics; messages never carry a credential or a password.

use std::fmt;

/// The kind of object (or API call) a failed request was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    InferenceService,
    ServiceAccount,
    /// The user's Secret with a Dex login (DexSession).
    CredentialsSecret,
    Secret,
    TokenRequest,
    AuthorizationPolicy,
    /// Reading how the model is reached (pods, namespace, Service, Gateway API objects).
    DataPath,
    /// A Deployment or StatefulSet restarted after a renewal.
    Workload,
    Status,
}

impl Kind {
    fn category(self) -> &'static str {
        match self {
            Kind::InferenceService => "inference_service",
            Kind::ServiceAccount => "service_account",
            Kind::CredentialsSecret | Kind::Secret => "secret",
            Kind::TokenRequest => "token_request",
            Kind::AuthorizationPolicy => "policy",
            Kind::DataPath => "data_path",
            Kind::Workload => "workload",
            Kind::Status => "status",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::InferenceService => "InferenceService",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::CredentialsSecret => "credentials Secret",
            Kind::Secret => "Secret",
            Kind::TokenRequest => "TokenRequest",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::DataPath => "data path",
            Kind::Workload => "workload",
            Kind::Status => "status",
        })
    }
}

/// A reconcile step that failed for a reason outside the spec: retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("{kind}: {}", describe(.source))]
    Api {
        kind: Kind,
        #[source]
        source: kube::Error,
    },
    #[error("TokenRequest answered without a token or expiry")]
    EmptyTokenResponse,
    /// The message never holds the password: dex::LoginError's texts name URLs and statuses.
    #[error("{message}")]
    DexLogin {
        message: String,
        /// Dex refused the username and password (not a network or gateway failure).
        refused: bool,
    },
    /// mesh.mode Auto could not read how the model is reached: the API server refused (403)
    /// the operator this right (an install for listed namespaces has no cluster-wide reads).
    #[error("the operator may not {right}")]
    Forbidden { right: String },
}

impl Error {
    pub fn api(kind: Kind) -> impl FnOnce(kube::Error) -> Self {
        move |source| Error::Api { kind, source }
    }

    pub fn category(&self) -> &'static str {
        match self {
            Error::Api { kind, .. } => kind.category(),
            Error::EmptyTokenResponse => "token_request",
            Error::DexLogin { .. } => "dex_login",
            Error::Forbidden { .. } => Kind::DataPath.category(),
        }
    }
}

impl Error {
    /// The API server refused what the spec produced (400/422): retrying cannot help, the spec
    /// has to change.
    pub fn is_invalid(&self) -> bool {
        matches!(self, Error::Api { source, .. } if matches!(api_status(source), Some(400 | 422)))
    }
}

/// The HTTP status of an API error, if the server answered at all.
pub fn api_status(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A short, human form of an API error for condition messages and events: the server's own
/// message and code, without the debug dump.
pub fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!(
                "{} (HTTP {} {})",
                status.message, status.code, status.reason
            )
        }
        kube::Error::Api(status) => format!("HTTP {} {}", status.code, status.reason),
        other => other.to_string(),
    }
}
