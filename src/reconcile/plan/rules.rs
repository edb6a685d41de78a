//! The rules a spec must pass before anything is planned: each a small function from a part of
//! the spec (and the admin's [`Limits`]) to that part's plan or a [`SpecError`] naming the field
//! and the fix. The CRD's CEL rules say most of this at `kubectl apply`; these say it again for
//! whatever reaches the controller anyway, and add what only the controller knows (the limits).

use jiff::SignedDuration;

use super::SpecError;
use crate::api::{AuthType, InferenceAccessSpec, MeshMode, MeshSpec, TargetKind, TemplateMetadata};
use crate::core::renewal::MIN_TOKEN_LIFETIME;
use crate::core::url::HttpUrl;
use crate::reconcile::conditions::reason;
use crate::reconcile::limits::Limits;

/// Access names become label values (at most 63 characters) and object names.
pub const MAX_ACCESS_NAME: usize = 63;

fn refuse<T>(reason: &'static str, message: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError {
        reason,
        message: message.into(),
    })
}

pub fn access_name(name: &str) -> Result<(), SpecError> {
    if name.len() > MAX_ACCESS_NAME {
        return refuse(
            reason::INVALID_SPEC,
            format!(
                "the name must be at most {MAX_ACCESS_NAME} characters: it becomes a label value and the name of the ServiceAccount and AuthorizationPolicy"
            ),
        );
    }
    Ok(())
}

/// An InferenceService in another namespace: read, never templated, reached by a
/// ServiceAccount token through a policy in that namespace (or none, Unmanaged). Whether its
/// owner consents is read at each reconcile, not here.
pub fn cross_namespace(
    other: &str,
    spec: &InferenceAccessSpec,
    templated: bool,
    limits: &Limits,
) -> Result<(), SpecError> {
    if !limits.cross_namespace {
        return refuse(
            reason::CROSS_NAMESPACE_NOT_AVAILABLE,
            format!(
                "spec.inferenceService.namespace {other}: this operator cannot follow a consent there: it watches listed namespaces only (controller.watchNamespaces), or ReferenceGrant (gateway.networking.k8s.io) was not served cluster-wide when it started; cross-namespace access needs the cluster-wide install and the Gateway API CRDs (docs/install.md)"
            ),
        );
    }
    let invalid = |message: &str| refuse(reason::INVALID_SPEC, message.to_owned());
    if templated {
        return invalid(
            "spec.inferenceService.template creates the InferenceService in the access's own namespace: drop spec.inferenceService.namespace, or drop the template",
        );
    }
    if spec.inference_service.kind != TargetKind::InferenceService {
        return invalid("only an InferenceService can be reached in another namespace");
    }
    if spec.auth.type_ != AuthType::ServiceAccountToken {
        return invalid(
            "a model in another namespace is reached with a ServiceAccount token of this namespace, the identity its owner's consent names: spec.auth.type must be ServiceAccountToken",
        );
    }
    if !matches!(
        spec.mesh.mode,
        MeshMode::AuthorizationPolicy | MeshMode::Unmanaged
    ) {
        return invalid(
            "a model in another namespace gets a policy on its predictor there (mesh.mode AuthorizationPolicy) or none (Unmanaged)",
        );
    }
    Ok(())
}

/// The lifetime to request: the spec's, capped to the admin's maximum (`Some(asked)` when
/// capped), and when to renew.
pub fn lifetime(
    duration: kube::core::Duration,
    renew_before: Option<kube::core::Duration>,
    limits: &Limits,
) -> Result<
    (
        SignedDuration,
        Option<SignedDuration>,
        Option<SignedDuration>,
    ),
    SpecError,
> {
    let asked = signed(duration);
    if asked < MIN_TOKEN_LIFETIME {
        return refuse(
            reason::INVALID_SPEC,
            format!("spec.token.duration {duration} is below the API server's minimum of 10m"),
        );
    }
    let renew_before = renew_before.map(signed);
    if renew_before.is_some_and(|before| before <= SignedDuration::ZERO || before >= asked) {
        return refuse(
            reason::INVALID_SPEC,
            format!(
                "spec.token.renewBefore must be positive and shorter than spec.token.duration ({duration})"
            ),
        );
    }
    let granted = asked.min(limits.max_token_lifetime);
    let capped = (granted < asked).then_some(asked);
    Ok((granted, capped, renew_before))
}

/// A Kubernetes duration as a signed one; negative inputs become the minimum so every bound
/// check refuses them.
fn signed(duration: kube::core::Duration) -> SignedDuration {
    if duration.is_negative() {
        return SignedDuration::MIN;
    }
    SignedDuration::try_from(std::time::Duration::from(duration)).unwrap_or(SignedDuration::MAX)
}

pub fn audiences(audiences: &[String], limits: &Limits) -> Result<(), SpecError> {
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return refuse(
            reason::INVALID_SPEC,
            "spec.token.audiences must list at least one non-empty audience: an empty list would mint a full Kubernetes API credential",
        );
    }
    if let Some(api) = audiences.iter().find(|a| limits.is_api_audience(a)) {
        return refuse(
            reason::AUDIENCE_NOT_ALLOWED,
            format!(
                "spec.token.audiences: {api:?} is the API server's own audience; a token for it would be a Kubernetes API credential, so it is never minted"
            ),
        );
    }
    if let Some(other) = audiences.iter().find(|a| !limits.audience_allowed(a)) {
        return refuse(
            reason::AUDIENCE_NOT_ALLOWED,
            format!(
                "spec.token.audiences: {other:?} is not an audience the cluster admin allows (allowed: {})",
                limits.allowed_audiences.join(", ")
            ),
        );
    }
    Ok(())
}

/// A URL credentials are sent to: well-formed, no user info, and a destination the admin
/// allowed. Refused before anything is sent.
pub fn destination(field: &str, text: &str, limits: &Limits) -> Result<HttpUrl, SpecError> {
    let url = HttpUrl::parse(text).map_err(|e| SpecError {
        reason: reason::INVALID_SPEC,
        message: format!("{field} {e}"),
    })?;
    if url.has_userinfo() {
        return refuse(
            reason::INVALID_SPEC,
            format!(
                "{field} must not carry user info (user:password@): credentials belong in Secrets"
            ),
        );
    }
    if !limits.gateway_allowed(&url) {
        return refuse(
            reason::GATEWAY_NOT_ALLOWED,
            format!(
                "{field} {} is not a gateway the cluster admin allows credentials to be sent to (allowed: {}); nothing is sent",
                url.origin(),
                limits.allowed_gateways.join(", ")
            ),
        );
    }
    Ok(url)
}

/// A user id an AuthorizationPolicy admits: one exact value.
pub fn user_id(field: &str, value: &str) -> Result<(), SpecError> {
    if value.is_empty()
        || value.len() > 253
        || value.contains('*')
        || value.chars().any(char::is_whitespace)
    {
        return refuse(
            reason::INVALID_SPEC,
            format!(
                "{field} must be one user id of at most 253 characters: no '*' (Istio reads it as a wildcard) and no spaces"
            ),
        );
    }
    Ok(())
}

/// The mesh settings the spec may choose: only what the admin declared, exact paths only.
pub fn mesh(mesh: &MeshSpec, limits: &Limits) -> Result<(), SpecError> {
    if !limits
        .allowed_user_id_headers
        .iter()
        .any(|h| h == &mesh.user_id_header)
    {
        return refuse(
            reason::MESH_SETTING_NOT_ALLOWED,
            format!(
                "spec.mesh.userIdHeader {:?} is not a header the cluster admin declared the gateway overwrites (allowed: {}); any caller could set it",
                mesh.user_id_header,
                limits.allowed_user_id_headers.join(", ")
            ),
        );
    }
    if mesh.source_principals.is_empty() {
        return refuse(
            reason::INVALID_SPEC,
            "spec.mesh.sourcePrincipals must not be empty: the policy would admit nobody",
        );
    }
    if let Some(principal) = mesh
        .source_principals
        .iter()
        .find(|p| !limits.allowed_source_principals.contains(p))
    {
        return refuse(
            reason::MESH_SETTING_NOT_ALLOWED,
            format!(
                "spec.mesh.sourcePrincipals: {principal:?} is not a gateway identity the cluster admin allows (allowed: {})",
                limits.allowed_source_principals.join(", ")
            ),
        );
    }
    if let Some(path) = mesh.probe_paths.iter().find(|p| !probe_path_ok(p)) {
        return refuse(
            reason::MESH_SETTING_NOT_ALLOWED,
            format!(
                "spec.mesh.probePaths: {path:?} must be an exact path such as /healthz, outside the model APIs (/v1, /v2, /openai): probe paths are open to every caller"
            ),
        );
    }
    Ok(())
}

fn probe_path_ok(path: &str) -> bool {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._~-".contains(c))
    };
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let model_api = ["v1", "v2", "openai"]
        .iter()
        .any(|api| rest.starts_with(api));
    path.len() <= 256 && !model_api && (rest.is_empty() || rest.split('/').all(segment_ok))
}

/// Labels and annotations as the API server accepts them, so a bad key is refused here rather
/// than by a write that would be retried.
pub fn metadata(field: &str, metadata: &TemplateMetadata) -> Result<(), SpecError> {
    let bad_key = metadata
        .labels
        .keys()
        .chain(metadata.annotations.keys())
        .find(|k| !qualified_name(k));
    if let Some(key) = bad_key {
        return refuse(
            reason::INVALID_SPEC,
            format!(
                "{field}: {key:?} is not a valid label or annotation key ([prefix/]name, name at most 63 characters)"
            ),
        );
    }
    if let Some((key, _)) = metadata.labels.iter().find(|(_, v)| !label_value(v)) {
        return refuse(
            reason::INVALID_SPEC,
            format!(
                "{field}.labels[{key:?}]: label values must be at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
            ),
        );
    }
    Ok(())
}

fn label_value(value: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    value.is_empty()
        || (value.len() <= 63
            && alnum(value.chars().next())
            && alnum(value.chars().last())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
}

fn qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    prefix_ok && !name.is_empty() && label_value(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_paths_are_exact_and_outside_the_model_apis() {
        for (path, ok) in [
            ("/healthz", true),
            ("/wait-for-drain", true),
            ("/", true),
            ("/a/b.c", true),
            ("*", false),
            ("/*", false),
            ("/v1/models/*", false),
            ("/v1/models/m:predict", false),
            ("/v1", false),
            ("/v2/health/ready", false),
            ("/v10", false),
            ("/openai/v1/completions", false),
            ("/healthz/../v1/models/m:predict", false),
            ("//v1/models", false),
            ("/a%2Fb", false),
            ("/ready?x=1", false),
            ("healthz", false),
        ] {
            assert_eq!(probe_path_ok(path), ok, "{path}");
        }
    }

    #[test]
    fn keys_and_values_as_the_api_server_takes_them() {
        for (key, ok) in [
            ("team", true),
            ("app.kubernetes.io/name", true),
            ("example.com/Team_1", true),
            ("", false),
            ("a/b/c", false),
            ("Example.com/x", false),
            ("-team", false),
            (&"x".repeat(64), false),
        ] {
            assert_eq!(qualified_name(key), ok, "{key}");
        }
        for (value, ok) in [("", true), ("a-b_c.d", true), ("-a", false), ("a b", false)] {
            assert_eq!(label_value(value), ok, "{value}");
        }
    }
}
