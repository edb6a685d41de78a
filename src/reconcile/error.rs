//! One error type for the reconcile pipeline, a variant per step.

/// A reconcile step that failed. `category()` is a fixed, bounded label for events and metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("InferenceService: {0}")]
    InferenceService(#[source] kube::Error),
    #[error("ServiceAccount: {0}")]
    ServiceAccount(#[source] kube::Error),
    #[error("Secret: {0}")]
    Secret(#[source] kube::Error),
    #[error("TokenRequest: {0}")]
    TokenRequest(#[source] kube::Error),
    #[error("TokenRequest answered without a token or expiry")]
    EmptyTokenResponse,
    /// The message never holds the password: dex::LoginError's texts name URLs and statuses.
    #[error("{0}")]
    DexLogin(String),
    #[error("access policy: {0}")]
    Policy(#[source] kube::Error),
    #[error("status: {0}")]
    Status(#[source] kube::Error),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::InferenceService(_) => "inference_service",
            Error::ServiceAccount(_) => "service_account",
            Error::Secret(_) => "secret",
            Error::TokenRequest(_) | Error::EmptyTokenResponse => "token_request",
            Error::DexLogin(_) => "dex_login",
            Error::Policy(_) => "policy",
            Error::Status(_) => "status",
        }
    }

    /// Spec errors wait for the user to change the object; everything else is retried.
    pub fn is_spec_error(&self) -> bool {
        matches!(self, Error::InvalidSpec(_))
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
