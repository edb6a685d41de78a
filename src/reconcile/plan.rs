//! `validate(&InferenceAccess) -> Plan`: every default and derived value of an access, computed
//! once. The reconciler, `render`, `status` and the tests all work from a [`Plan`]; nothing
//! downstream reads the spec again.
//!
//! The CRD's schema and CEL rules already refuse most bad input at `kubectl apply`; this checks
//! it again for API servers (or older CRD versions) that did not, because the controller never
//! trusts its input.

use std::fmt;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::api::keys::ANNOTATION_RENEW_REQUESTED_AT;
use crate::api::{
    AuthType, CredentialsSecretRef, DexConnector, InferenceAccess, MeshMode, TemplateMetadata,
};
use crate::core::credential::TokenRequestInputs;
use crate::core::renewal::MIN_TOKEN_LIFETIME;
use crate::core::secret_codec::CredentialKind;
use crate::core::url::HttpUrl;
use crate::gateway::dex::Connector;

/// The access, validated, with every default applied and every name derived.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub access: AccessRef,
    pub target: TargetPlan,
    pub identity: IdentityPlan,
    /// How long before expiry to renew; `None`: a third of the real lifetime.
    pub renew_before: Option<SignedDuration>,
    pub secret: SecretPlan,
    /// The gateway base URL clients (and the probe) send requests to.
    pub gateway_url: String,
    pub mesh: MeshPlan,
    pub verification: bool,
    /// `inference-access renew` asked for a new credential at this time.
    pub renew_requested_at: Option<Timestamp>,
}

/// Who the access is: what owner references and events point at.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: Option<i64>,
    /// The controller reference every owned object carries.
    pub owner: OwnerReference,
}

impl AccessRef {
    /// `namespace/name`, for logs and per-access bookkeeping.
    pub fn key(&self) -> String {
        super::backoff::key(Some(&self.namespace), &self.name)
    }
}

/// The InferenceService the access reaches.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetPlan {
    pub name: String,
    /// Set when the access applies and owns the InferenceService.
    pub template: Option<TemplatePlan>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TemplatePlan {
    pub metadata: TemplateMetadata,
    pub spec: serde_json::Value,
}

/// Who the credential is for.
#[derive(Clone, Debug, PartialEq)]
pub enum IdentityPlan {
    /// A TokenRequest token for a ServiceAccount.
    ServiceAccount {
        name: String,
        /// The operator creates and owns it (no `spec.serviceAccount.name`).
        dedicated: bool,
        request: TokenRequestInputs,
    },
    /// A Dex session, logged in with the user's own Secret.
    DexUser {
        credentials: CredentialsSecretRef,
        connector: Connector,
        login_url: String,
        /// The user id the gateway will see; `None`: the username, known once the Secret is read.
        user_id: Option<String>,
    },
}

impl IdentityPlan {
    /// The user id the gateway puts in the user-id header, when the plan alone tells it.
    pub fn user_id(&self, namespace: &str) -> Option<String> {
        match self {
            IdentityPlan::ServiceAccount { name, .. } => {
                Some(service_account_user(namespace, name))
            }
            IdentityPlan::DexUser { user_id, .. } => user_id.clone(),
        }
    }

    pub fn credential_kind(&self) -> CredentialKind {
        match self {
            IdentityPlan::ServiceAccount { .. } => CredentialKind::Token,
            IdentityPlan::DexUser { .. } => CredentialKind::Session,
        }
    }
}

/// The user id Kubeflow's gateway puts in the user-id header for a ServiceAccount token: the
/// token's `sub`.
pub fn service_account_user(namespace: &str, service_account: &str) -> String {
    format!("system:serviceaccount:{namespace}:{service_account}")
}

/// The user id a Dex session is admitted as: `userID` when set, else the username.
pub fn dex_user_id(user_id: Option<&str>, username: &str) -> String {
    user_id.unwrap_or(username).to_owned()
}

/// The credential Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct SecretPlan {
    pub name: String,
    /// From `spec.secretTemplate`; the operator's own labels win over these.
    pub template: TemplateMetadata,
    pub kind: CredentialKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MeshPlan {
    AuthorizationPolicy(PolicyPlan),
    /// `sidecar.istio.io/inject: "false"` on the InferenceService.
    DisableSidecarInjection,
    Unmanaged,
}

impl MeshPlan {
    pub fn mode(&self) -> MeshMode {
        match self {
            MeshPlan::AuthorizationPolicy(_) => MeshMode::AuthorizationPolicy,
            MeshPlan::DisableSidecarInjection => MeshMode::DisableSidecarInjection,
            MeshPlan::Unmanaged => MeshMode::Unmanaged,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PolicyPlan {
    pub user_id_header: String,
    pub source_principals: Vec<String>,
    pub probe_paths: Vec<String>,
}

/// The access's own name: `kubectl get authorizationpolicy` lines up with `kubectl get ia`.
pub fn policy_name(plan: &Plan) -> &str {
    &plan.access.name
}

/// Why an access cannot be planned: a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

fn refuse<T>(message: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError(message.into()))
}

/// The Secret that carries the credential: `spec.secretName` or `<name>-credential`.
pub fn secret_name(access: &InferenceAccess) -> String {
    access
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-credential", access.name_any()))
}

pub fn validate(access: &InferenceAccess) -> Result<Plan, SpecError> {
    let spec = &access.spec;
    let Some(namespace) = access.namespace() else {
        return refuse("InferenceAccess must be namespaced");
    };
    let name = access.name_any();
    if spec.inference_service.name.is_empty() {
        return refuse("spec.inferenceService.name is required");
    }
    let lifetime = signed(spec.token.duration);
    if lifetime < MIN_TOKEN_LIFETIME {
        return refuse(format!(
            "spec.token.duration {} is below the API server's minimum of 10m",
            spec.token.duration
        ));
    }
    let renew_before = spec.token.renew_before.map(signed);
    if renew_before.is_some_and(|before| before <= SignedDuration::ZERO || before >= lifetime) {
        return refuse(format!(
            "spec.token.renewBefore must be positive and shorter than spec.token.duration ({})",
            spec.token.duration
        ));
    }
    let gateway_url = HttpUrl::parse(&spec.gateway.url)
        .map_err(|e| SpecError(format!("spec.gateway.url {e}")))?;
    let template = match &spec.inference_service.template {
        Some(template) if !template.spec.is_object() => {
            return refuse("spec.inferenceService.template.spec must be an object");
        }
        Some(template) => Some(TemplatePlan {
            metadata: template.metadata.clone(),
            spec: template.spec.clone(),
        }),
        None => None,
    };
    let identity = match spec.auth.type_ {
        AuthType::ServiceAccountToken => {
            if spec.token.audiences.is_empty() || spec.token.audiences.iter().any(String::is_empty)
            {
                return refuse(
                    "spec.token.audiences must list at least one non-empty audience: an empty list would mint a full Kubernetes API credential",
                );
            }
            let (service_account, dedicated) = match &spec.service_account.name {
                Some(existing) => (existing.clone(), false),
                None => (name.clone(), true),
            };
            IdentityPlan::ServiceAccount {
                request: TokenRequestInputs {
                    service_account: service_account.clone(),
                    audiences: spec.token.audiences.clone(),
                    expiration_seconds: lifetime.as_secs(),
                },
                name: service_account,
                dedicated,
            }
        }
        AuthType::DexSession => {
            let Some(dex) = &spec.auth.dex_session else {
                return refuse(
                    "spec.auth.dexSession is required when spec.auth.type is DexSession",
                );
            };
            let login_url = dex.login_url.as_deref().unwrap_or(&spec.gateway.url);
            HttpUrl::parse(login_url)
                .map_err(|e| SpecError(format!("spec.auth.dexSession.loginURL {e}")))?;
            IdentityPlan::DexUser {
                credentials: dex.credentials_secret.clone(),
                connector: match dex.connector {
                    DexConnector::Local => Connector::Local,
                    DexConnector::Ldap => Connector::Ldap,
                },
                login_url: login_url.to_owned(),
                user_id: dex.user_id.clone(),
            }
        }
    };
    let mesh = match spec.mesh.mode {
        MeshMode::AuthorizationPolicy => {
            if spec.mesh.source_principals.is_empty() {
                return refuse(
                    "spec.mesh.sourcePrincipals must not be empty: the policy would admit nobody",
                );
            }
            MeshPlan::AuthorizationPolicy(PolicyPlan {
                user_id_header: spec.mesh.user_id_header.clone(),
                source_principals: spec.mesh.source_principals.clone(),
                probe_paths: spec.mesh.probe_paths.clone(),
            })
        }
        MeshMode::DisableSidecarInjection => MeshPlan::DisableSidecarInjection,
        MeshMode::Unmanaged => MeshPlan::Unmanaged,
    };
    // Built rather than taken from kube's controller_owner_ref, which needs a uid: a document
    // read from a file (`render`) has none yet.
    let owner = OwnerReference {
        api_version: InferenceAccess::api_version(&()).into_owned(),
        kind: InferenceAccess::kind(&()).into_owned(),
        name: name.clone(),
        uid: access.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    Ok(Plan {
        access: AccessRef {
            uid: access.uid().unwrap_or_default(),
            generation: access.meta().generation,
            owner,
            name,
            namespace,
        },
        target: TargetPlan {
            name: spec.inference_service.name.clone(),
            template,
        },
        secret: SecretPlan {
            name: secret_name(access),
            template: spec.secret_template.clone().unwrap_or_default(),
            kind: identity.credential_kind(),
        },
        identity,
        renew_before,
        gateway_url: gateway_url.without_query().trim_end_matches('/').to_owned(),
        mesh,
        verification: spec.verification.enabled,
        renew_requested_at: access
            .annotations()
            .get(ANNOTATION_RENEW_REQUESTED_AT)
            .and_then(|t| t.parse().ok()),
    })
}

/// A Kubernetes duration as a signed one; negative inputs become the minimum so every bound
/// check refuses them.
fn signed(duration: kube::core::Duration) -> SignedDuration {
    if duration.is_negative() {
        return SignedDuration::MIN;
    }
    SignedDuration::try_from(std::time::Duration::from(duration)).unwrap_or(SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::access;
    use serde_json::json;

    #[test]
    fn the_defaults_plan_a_dedicated_service_account_and_a_policy() {
        let plan = validate(&access(json!({"inferenceService": {"name": "m"}})).build()).unwrap();
        assert_eq!(
            plan.identity,
            IdentityPlan::ServiceAccount {
                name: "client".into(),
                dedicated: true,
                request: TokenRequestInputs {
                    service_account: "client".into(),
                    audiences: vec!["istio-ingressgateway.istio-system.svc.cluster.local".into()],
                    expiration_seconds: 3600,
                },
            }
        );
        assert_eq!(plan.secret.name, "client-credential");
        assert_eq!(plan.secret.kind, CredentialKind::Token);
        assert_eq!(
            plan.identity.user_id("ns").as_deref(),
            Some("system:serviceaccount:ns:client")
        );
        assert_eq!(plan.mesh.mode(), MeshMode::AuthorizationPolicy);
        assert_eq!(plan.access.owner.uid, "access-uid");
        assert_eq!(
            plan.gateway_url,
            "http://istio-ingressgateway.istio-system.svc.cluster.local"
        );
        assert!(plan.verification);
    }

    #[test]
    fn a_dex_session_plans_a_session_secret_and_no_service_account() {
        let plan = validate(
            &access(json!({
                "inferenceService": {"name": "m"},
                "auth": {"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "dex-user"}, "connector": "ldap"}},
                "gateway": {"url": "http://gw.example/"}
            }))
            .build(),
        )
        .unwrap();
        assert_eq!(plan.secret.kind, CredentialKind::Session);
        let IdentityPlan::DexUser {
            connector,
            login_url,
            user_id,
            credentials,
        } = &plan.identity
        else {
            panic!("{:?}", plan.identity)
        };
        assert_eq!(
            (
                *connector,
                login_url.as_str(),
                user_id,
                credentials.name.as_str()
            ),
            (Connector::Ldap, "http://gw.example/", &None, "dex-user")
        );
        assert_eq!(plan.gateway_url, "http://gw.example");
    }

    #[test]
    fn names_derive_from_the_access_unless_set() {
        let named = validate(
            &access(json!({
                "inferenceService": {"name": "m"},
                "secretName": "mine",
                "serviceAccount": {"name": "default-editor"}
            }))
            .build(),
        )
        .unwrap();
        assert_eq!(named.secret.name, "mine");
        assert!(matches!(
            &named.identity,
            IdentityPlan::ServiceAccount { name, dedicated: false, .. } if name == "default-editor"
        ));
    }

    #[test]
    fn a_renew_request_is_read_from_the_annotation() {
        let plan = validate(
            &access(json!({"inferenceService": {"name": "m"}}))
                .annotation(ANNOTATION_RENEW_REQUESTED_AT, "2026-01-01T00:05:00Z")
                .build(),
        )
        .unwrap();
        assert_eq!(
            plan.renew_requested_at,
            Some(crate::fixtures::ts("2026-01-01T00:05:00Z"))
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                json!({"inferenceService": {"name": ""}}),
                "inferenceService.name",
            ),
            (
                json!({"inferenceService": {"name": "m"}, "token": {"duration": "9m"}}),
                "minimum of 10m",
            ),
            (
                json!({"inferenceService": {"name": "m"}, "token": {"duration": "1h", "renewBefore": "1h"}}),
                "renewBefore",
            ),
            (
                json!({"inferenceService": {"name": "m"}, "token": {"audiences": []}}),
                "audiences",
            ),
            (
                json!({"inferenceService": {"name": "m", "template": {"spec": []}}}),
                "must be an object",
            ),
            (
                json!({"inferenceService": {"name": "m"}, "auth": {"type": "DexSession"}}),
                "dexSession is required",
            ),
            (
                json!({"inferenceService": {"name": "m"}, "mesh": {"sourcePrincipals": []}}),
                "sourcePrincipals",
            ),
            (
                json!({"inferenceService": {"name": "m"}, "gateway": {"url": "gateway:80"}}),
                "spec.gateway.url",
            ),
        ];
        for (spec, needle) in cases {
            let err = validate(&access(spec.clone()).build()).unwrap_err();
            assert!(err.0.contains(needle), "{spec}: {err}");
        }
    }
}
