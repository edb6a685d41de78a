//! Names the operator stamps on objects and the keys of the credential Secret: one place for
//! every string another component (watches, the CLI, workloads) relies on.

use std::collections::BTreeMap;

/// The one field manager for every server-side apply and status write.
pub const FIELD_MANAGER: &str = "inference-access";
/// A second manager for the single sidecar annotation on an InferenceService the operator does
/// not own: applying it under `FIELD_MANAGER` would drop that manager's other fields.
pub const SIDECAR_FIELD_MANAGER: &str = "inference-access-sidecar";

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "inference-access";
/// Names the InferenceAccess an object belongs to.
pub const ACCESS_LABEL: &str = "inference-access.io/access";
/// The label selector that scopes every watch of owned objects.
pub const OWNED_SELECTOR: &str = "app.kubernetes.io/managed-by=inference-access";

/// When the token in the Secret was issued (RFC 3339).
pub const ANNOTATION_ISSUED_AT: &str = "inference-access.io/issued-at";
/// The inputs the token was requested with (JSON), to notice spec changes.
pub const ANNOTATION_TOKEN_REQUEST: &str = "inference-access.io/token-request";
/// Set on an InferenceAccess (RFC 3339 time) to ask for a renewal now.
pub const ANNOTATION_RENEW_REQUESTED_AT: &str = "inference-access.io/renew-requested-at";

pub const KEY_TOKEN: &str = "token";
pub const KEY_AUTHORIZATION: &str = "authorization";
pub const KEY_URL: &str = "url";
pub const KEY_HOST: &str = "host";
pub const KEY_PREDICT_URL: &str = "predict-url";
pub const KEY_INFER_URL: &str = "infer-url";
pub const KEY_GATEWAY_URL: &str = "gateway-url";
pub const KEY_EXPIRES_AT: &str = "expires-at";
/// DexSession: the session cookie as `name=value`, and its name alone.
pub const KEY_COOKIE: &str = "cookie";
pub const KEY_COOKIE_NAME: &str = "cookie-name";

/// Labels on every object the operator creates for the access named `access`.
pub fn owned_labels(access: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (ACCESS_LABEL.to_owned(), access.to_owned()),
    ])
}
