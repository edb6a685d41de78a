//! Names the operator stamps on objects: one place for every label, annotation and field
//! manager another component (watches, the CLI, GitOps tools) relies on. The credential
//! Secret's keys live with its codec (`core::secret_codec`).

use std::collections::BTreeMap;

/// The one field manager for every server-side apply and status write.
pub const FIELD_MANAGER: &str = "inference-access";

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "inference-access";
/// Names the InferenceAccess an object belongs to.
pub const ACCESS_LABEL: &str = "inference-access.io/access";
/// On an object the operator writes outside the access's namespace (a policy at a shared
/// Gateway), where no owner reference can point at the access: its namespace, and its uid.
pub const ACCESS_NAMESPACE_LABEL: &str = "inference-access.io/access-namespace";
pub const ANNOTATION_ACCESS_UID: &str = "inference-access.io/access-uid";
/// On an access that wrote outside its namespace: removed once that object is deleted.
pub const GATEWAY_POLICY_FINALIZER: &str = "inference-access.io/gateway-policy";
/// The label selector that scopes every watch of owned objects.
pub const OWNED_SELECTOR: &str = "app.kubernetes.io/managed-by=inference-access";

/// Set on an InferenceAccess (RFC 3339 time) to ask for a renewal now.
pub const ANNOTATION_RENEW_REQUESTED_AT: &str = "inference-access.io/renew-requested-at";

/// On a ServiceAccount: the accesses (names in its namespace, comma-separated, or `*`) allowed
/// to mint tokens for it. Whoever may edit the ServiceAccount consents; without it an access
/// gets only its own dedicated ServiceAccount.
pub const ANNOTATION_ALLOWED_ACCESSES: &str = "inference-access.io/allowed-accesses";
/// On a Secret: `"true"` marks it as a Dex login an access may use (DexSession). Whoever may
/// edit the Secret consents; any other Secret is never read.
pub const DEX_LOGIN_LABEL: &str = "inference-access.io/dex-login";

/// On a Deployment or StatefulSet: `"true"`, or the names of accesses (comma-separated), whose
/// renewals restart its Pods when they read the credential through env. Whoever may edit the
/// workload consents; no other workload is ever patched.
pub const ANNOTATION_RESTART_ON_RENEWAL: &str = "inference-access.io/restart-on-renewal";
/// What `kubectl rollout restart` sets on the pod template, and the operator likewise.
pub const ANNOTATION_RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// On an opted-in workload: the issue time of the credential of the access named `access` that
/// its Pods started with (recorded when the operator first sees the workload, and with each
/// restart in the same write), so that each renewal restarts them once, whatever the operator
/// does meanwhile (access names are at most 63 characters, as an annotation name must be).
pub fn started_with_annotation(access: &str) -> String {
    format!("started-with.inference-access.io/{access}")
}

/// Labels on every object the operator creates for the access named `access`.
pub fn owned_labels(access: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (ACCESS_LABEL.to_owned(), access.to_owned()),
    ])
}
