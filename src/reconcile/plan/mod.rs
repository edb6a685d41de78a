//! `validate(&InferenceAccess) -> Plan`: every default and derived value of an access, computed
//! once. The reconciler, `render`, `status` and the tests all work from a [`Plan`]; nothing
//! downstream reads the spec again.
//!
//! The CRD's schema and CEL rules already refuse most bad input at `kubectl apply`; this checks
//! it again for API servers (or older CRD versions) that did not, because the controller never
//! trusts its input.

use std::fmt;

mod rules;

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::api::TargetKind;
use crate::api::keys::ANNOTATION_RENEW_REQUESTED_AT;
use crate::api::{
    AuthType, CredentialsSecretRef, DexConnector, InferenceAccess, MeshMode, TemplateMetadata,
};
use crate::core::credential::TokenRequestInputs;
use crate::core::endpoint::{Endpoint, EndpointError};
use crate::core::secret_codec::CredentialKind;
use crate::gateway::dex::Connector;
use crate::reconcile::conditions::reason;
use crate::reconcile::issue::LoginRefusals;
use crate::reconcile::limits::Limits;

pub use rules::user_id as check_user_id;

/// The access, validated, with every default applied and every name derived.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub access: AccessRef,
    pub target: TargetPlan,
    pub identity: IdentityPlan,
    /// How long before expiry to renew; `None`: a third of the real lifetime.
    pub renew_before: Option<SignedDuration>,
    /// The lifetime the spec asked for, when the admin's maximum capped it.
    pub lifetime_capped_from: Option<SignedDuration>,
    pub secret: SecretPlan,
    /// The gateway base URL clients (and the probe) send requests to.
    pub gateway_url: String,
    pub mesh: MeshPlan,
    pub verification: bool,
    /// The value of the renew annotation (`inference-access renew` sets it to a time): a new
    /// credential is obtained once per distinct value.
    pub renew_request: Option<String>,
    /// DexSession: logins Dex refused in a row for this generation (from the status).
    pub login_refusals: Option<LoginRefusals>,
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
    /// The model's namespace when it is not the access's: its owner's ReferenceGrant there
    /// decides whether the access gets a token and a policy at all.
    pub other_namespace: Option<String>,
    pub kind: TargetKind,
    /// Set when the access applies and owns the InferenceService.
    pub template: Option<TemplatePlan>,
}

impl TargetPlan {
    /// The namespace the model lives in.
    pub fn namespace<'a>(&'a self, access: &'a AccessRef) -> &'a str {
        self.other_namespace.as_deref().unwrap_or(&access.namespace)
    }

    /// Where clients send requests, with the paths the target's protocol uses.
    pub fn endpoint(&self, status_url: &str, gateway_url: &str) -> Result<Endpoint, EndpointError> {
        let endpoint = Endpoint::resolve(status_url, gateway_url, &self.name)?;
        Ok(match self.kind {
            TargetKind::InferenceService => endpoint,
            TargetKind::LlmInferenceService => endpoint.openai(),
        })
    }
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
    /// Detect the path and write what enforces there; the policy's rules as for a sidecar.
    Auto(PolicyPlan),
}

impl MeshPlan {
    pub fn mode(&self) -> MeshMode {
        match self {
            MeshPlan::AuthorizationPolicy(_) => MeshMode::AuthorizationPolicy,
            MeshPlan::Auto(_) => MeshMode::Auto,
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

/// Why an access cannot be planned: a condition reason and a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    pub reason: &'static str,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

fn refuse<T>(message: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError {
        reason: reason::INVALID_SPEC,
        message: message.into(),
    })
}

/// The Secret that carries the credential: `spec.secretName` or `<name>-credential`.
pub fn secret_name(access: &InferenceAccess) -> String {
    access
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-credential", access.name_any()))
}

pub fn validate(access: &InferenceAccess, limits: &Limits) -> Result<Plan, SpecError> {
    let spec = &access.spec;
    let Some(namespace) = access.namespace() else {
        return refuse("InferenceAccess must be namespaced");
    };
    let name = access.name_any();
    rules::access_name(&name)?;
    if spec.inference_service.name.is_empty() {
        return refuse("spec.inferenceService.name is required");
    }
    let (lifetime, lifetime_capped_from, renew_before) =
        rules::lifetime(spec.token.duration, spec.token.renew_before, limits)?;
    let gateway_url = rules::destination("spec.gateway.url", &spec.gateway.url, limits)?;
    let template = match &spec.inference_service.template {
        Some(_) if !limits.templates => {
            return Err(SpecError {
                reason: reason::TEMPLATE_NOT_ALLOWED,
                message: "spec.inferenceService.template: the cluster admin does not let accesses create InferenceServices; create it yourself and reference it by name".into(),
            });
        }
        Some(template) if !template.spec.is_object() => {
            return refuse("spec.inferenceService.template.spec must be an object");
        }
        Some(template) => {
            rules::metadata(
                "spec.inferenceService.template.metadata",
                &template.metadata,
            )?;
            Some(TemplatePlan {
                metadata: template.metadata.clone(),
                spec: template.spec.value(),
            })
        }
        None => None,
    };
    if let Some(template) = &spec.secret_template {
        rules::metadata("spec.secretTemplate", template)?;
    }
    let identity = match spec.auth.type_ {
        AuthType::ServiceAccountToken => {
            rules::audiences(&spec.token.audiences, limits)?;
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
            rules::destination("spec.auth.dexSession.loginURL", login_url, limits)?;
            if let Some(user_id) = &dex.user_id {
                rules::user_id("spec.auth.dexSession.userID", user_id)?;
            }
            let credentials = &dex.credentials_secret;
            if credentials.username_key == credentials.password_key {
                return refuse(
                    "spec.auth.dexSession.credentialsSecret: usernameKey and passwordKey must differ: the username is published in the policy, the password never",
                );
            }
            IdentityPlan::DexUser {
                credentials: credentials.clone(),
                connector: match dex.connector {
                    DexConnector::Local => Connector::Local,
                    DexConnector::Ldap => Connector::Ldap,
                },
                login_url: login_url.to_owned(),
                user_id: dex.user_id.clone(),
            }
        }
    };
    let policy_plan = || PolicyPlan {
        user_id_header: spec.mesh.user_id_header.clone(),
        source_principals: spec.mesh.source_principals.clone(),
        probe_paths: spec.mesh.probe_paths.clone(),
    };
    let llm = spec.inference_service.kind == TargetKind::LlmInferenceService;
    if llm && template.is_some() {
        return refuse(
            "spec.inferenceService.template applies only to kind InferenceService: an LLMInferenceService is only read",
        );
    }
    if llm && !matches!(spec.mesh.mode, MeshMode::Auto | MeshMode::Unmanaged) {
        return refuse(
            "an LLMInferenceService is reached through its Gateway (or a waypoint), not a predictor sidecar: set spec.mesh.mode to Auto, or Unmanaged",
        );
    }
    // The model's own namespace named explicitly is no other namespace.
    let other_namespace = spec
        .inference_service
        .namespace
        .clone()
        .filter(|ns| *ns != namespace);
    if let Some(other) = &other_namespace {
        rules::cross_namespace(other, spec, template.is_some(), limits)?;
    }
    let mesh = match spec.mesh.mode {
        MeshMode::AuthorizationPolicy => {
            rules::mesh(&spec.mesh, limits)?;
            MeshPlan::AuthorizationPolicy(policy_plan())
        }
        MeshMode::Auto => {
            rules::mesh(&spec.mesh, limits)?;
            MeshPlan::Auto(policy_plan())
        }
        MeshMode::DisableSidecarInjection if template.is_none() => {
            return refuse(
                "spec.mesh.mode DisableSidecarInjection needs spec.inferenceService.template: the operator only changes an InferenceService this access creates",
            );
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
            other_namespace,
            kind: spec.inference_service.kind,
            template,
        },
        secret: SecretPlan {
            name: secret_name(access),
            template: spec.secret_template.clone().unwrap_or_default(),
            kind: identity.credential_kind(),
        },
        identity,
        renew_before,
        lifetime_capped_from,
        gateway_url: gateway_url.without_query().trim_end_matches('/').to_owned(),
        mesh,
        verification: spec.verification.enabled,
        renew_request: access
            .annotations()
            .get(ANNOTATION_RENEW_REQUESTED_AT)
            .cloned(),
        login_refusals: access
            .status
            .as_ref()
            .filter(|s| s.observed_generation == access.meta().generation)
            .and_then(|s| {
                Some(LoginRefusals {
                    count: s.login_refusals?,
                    secret_version: s.login_refused_secret_version.clone()?,
                })
            }),
    })
}

#[cfg(test)]
mod tests;
