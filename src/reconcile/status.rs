//! From the steps' outcomes to the checks the status publishes: one pure function, table-tested
//! for every reason the README documents.

use jiff::Timestamp;

use super::build;
use super::conditions::{Check, Checks, reason};
use super::consumers::ConsumersOutcome;
use super::detect::{Detected, MeshPath};
use super::error::Error;
use super::identity::IdentityOutcome;
use super::issue::MAX_LOGIN_REFUSALS;
use super::issue::{IssueOutcome, IssueResult};
use super::mesh::{AutoResult, MeshOutcome};
use super::plan::{IdentityPlan, Plan, SpecError, policy_name};
use super::target::TargetOutcome;
use super::verify::VerifyOutcome;
use crate::api::inference_service::Readiness;
use crate::api::keys::{ANNOTATION_ALLOWED_ACCESSES, DEX_LOGIN_LABEL};

/// What each step of one reconcile came to. A step that did not run (an earlier one blocked
/// it) is `None`.
#[derive(Debug)]
pub struct Outcomes {
    pub target: TargetOutcome,
    pub identity: Option<IdentityOutcome>,
    pub issue: Option<IssueOutcome>,
    pub consumers: Option<ConsumersOutcome>,
    pub mesh: Option<MeshOutcome>,
    pub verify: Option<VerifyOutcome>,
}

impl Outcomes {
    pub fn new(target: TargetOutcome) -> Self {
        Self {
            target,
            identity: None,
            issue: None,
            consumers: None,
            mesh: None,
            verify: None,
        }
    }

    /// The first step failure, in pipeline order: what the reconcile backs off on.
    pub fn into_error(self) -> Option<Error> {
        let target = match self.target {
            TargetOutcome::Failed(err)
            | TargetOutcome::ConsentPending {
                withdraw_failed: Some(err),
            } => Some(err),
            _ => None,
        };
        let identity = match self.identity {
            Some(IdentityOutcome::Failed(err)) => Some(err),
            _ => None,
        };
        let issue = match self.issue.map(|i| i.result) {
            Some(IssueResult::Failed(err) | IssueResult::ObtainFailed(err)) => Some(err),
            _ => None,
        };
        let mesh = match self.mesh {
            Some(MeshOutcome::Failed(err)) => Some(err),
            _ => None,
        };
        let consumers = self.consumers.and_then(|c| c.failed);
        target.or(identity).or(issue).or(consumers).or(mesh)
    }
}

/// The checks for an access whose spec cannot be planned: every link of the chain says why.
pub fn invalid(refusal: &SpecError) -> Checks {
    let check = Check::failed(refusal.reason, refusal.message.clone());
    Checks {
        inference_service: check.clone(),
        credential: check.clone(),
        access_policy: check,
        ..Checks::default()
    }
}

pub fn checks(plan: &Plan, outcomes: &Outcomes, now: Timestamp) -> Checks {
    let mut checks = Checks {
        inference_service: target_check(plan, &outcomes.target),
        login_refusals: plan.login_refusals.clone(),
        ..Checks::default()
    };
    if let Some(identity) = &outcomes.identity {
        if let (IdentityOutcome::Ready { .. }, IdentityPlan::ServiceAccount { name, .. }) =
            (identity, &plan.identity)
        {
            checks.service_account_name = Some(name.clone());
        }
        if let Some(check) = identity_check(plan, identity) {
            checks.credential = check;
        }
    }
    if let Some(issue) = &outcomes.issue {
        if let Some(endpoint) = &issue.endpoint {
            checks.url = Some(endpoint.url.clone());
            checks.host = Some(endpoint.host.clone());
        }
        if issue.secret_seen {
            checks.secret_name = Some(plan.secret.name.clone());
        }
        if let Some(held) = &issue.held {
            checks.token_expiration_time = Some(held.expires_at);
            checks.renewal_time = Some(held.renewal_time(plan.renew_before));
            checks.last_renew_request = held.renew_request.clone();
        }
        checks.login_refusals = issue.login_refusals.clone();
        let identity = outcomes.identity.as_ref().and_then(IdentityOutcome::ready);
        checks.credential = issue_check(plan, issue, identity, now);
    }
    if let Some(consumers) = &outcomes.consumers {
        checks.consumers = Some(consumers.consumers.iter().map(consumer_status).collect());
    }
    if let Some(mesh) = &outcomes.mesh {
        checks.access_policy = mesh_check(plan, mesh);
        if let MeshOutcome::Auto { detected, .. } = mesh {
            checks.mesh_path = Some(detected.path.name().to_owned());
        }
    }
    checks.endpoint = match &outcomes.verify {
        Some(VerifyOutcome::Disabled) => Some(Check::unknown(
            reason::VERIFICATION_DISABLED,
            "spec.verification.enabled is false: the operator does not probe the gateway",
        )),
        Some(VerifyOutcome::Probed {
            diagnosis,
            endpoint,
            ..
        }) => {
            let message = diagnosis.message(endpoint);
            Some(if diagnosis.is_reachable() {
                Check::ok(diagnosis.reason(), message)
            } else {
                Check::failed(diagnosis.reason(), message)
            })
        }
        // Not probed this time: the last result stands.
        Some(VerifyOutcome::NotDue) | None => None,
    };
    checks
}

fn consumer_status(consumer: &super::consumers::Consumer) -> crate::api::Consumer {
    crate::api::Consumer {
        kind: consumer.kind.as_str().to_owned(),
        name: consumer.name.clone(),
        via: consumer.via.iter().map(|v| v.as_str().to_owned()).collect(),
        restart_on_renewal: consumer.restart_on_renewal,
        started_with: consumer
            .started_with
            .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
    }
}

/// An API error's own words, without the step prefix the condition's reason already gives.
fn detail(err: &Error) -> String {
    match err {
        Error::Api { source, .. } => super::error::describe(source),
        other => other.to_string(),
    }
}

fn target_check(plan: &Plan, outcome: &TargetOutcome) -> Check {
    let name = &plan.target.name;
    match outcome {
        TargetOutcome::Found { isvc, .. } => match isvc.readiness() {
            Readiness::Ready => {
                Check::ok(reason::READY, format!("InferenceService {name} is ready"))
            }
            Readiness::NotReady {
                reason: why,
                message,
            } => Check::failed(
                reason::INFERENCE_SERVICE_NOT_READY,
                format!("InferenceService {name} is not ready ({why}): {message}")
                    .trim_end_matches(": ")
                    .to_owned(),
            ),
        },
        TargetOutcome::NotFound => Check::failed(
            reason::INFERENCE_SERVICE_NOT_FOUND,
            match &plan.target.other_namespace {
                Some(ns) => format!("InferenceService {name} does not exist in namespace {ns}"),
                None => format!(
                    "InferenceService {name} does not exist in this namespace: create it, or set spec.inferenceService.template"
                ),
            },
        ),
        TargetOutcome::ConsentPending { .. } => super::consent::pending(plan),
        TargetOutcome::NotServed => Check::failed(
            reason::INFERENCE_SERVICE_NOT_FOUND,
            "the InferenceService resource (serving.kserve.io/v1beta1) is not served: KServe is not installed",
        ),
        TargetOutcome::TemplateConflict { owner } => {
            let owner = owner
                .as_ref()
                .map(|o| format!("it is managed by {o}"))
                .unwrap_or_else(|| "it was not created by this access".into());
            Check::failed(
                reason::TEMPLATE_CONFLICT,
                format!(
                    "InferenceService {name} exists and {owner}: only one access may template an InferenceService; remove spec.inferenceService.template to reference it instead"
                ),
            )
        }
        TargetOutcome::InvalidTemplate { message } => {
            Check::failed(reason::INVALID_TEMPLATE, message.clone())
        }
        TargetOutcome::Failed(err) => Check::failed(reason::INFERENCE_SERVICE_FAILED, detail(err)),
    }
}

/// `None` when the identity is ready: the credential check is then the issue step's.
fn identity_check(plan: &Plan, outcome: &IdentityOutcome) -> Option<Check> {
    let check = match (&plan.identity, outcome) {
        (_, IdentityOutcome::Ready { .. }) => return None,
        (IdentityPlan::ServiceAccount { name, .. }, IdentityOutcome::ServiceAccountNotFound) => {
            Check::failed(
                reason::SERVICE_ACCOUNT_NOT_FOUND,
                format!(
                    "ServiceAccount {name} does not exist in this namespace: create it, or leave spec.serviceAccount.name empty for a dedicated one"
                ),
            )
        }
        (IdentityPlan::ServiceAccount { name, .. }, IdentityOutcome::ServiceAccountConflict) => {
            Check::failed(
                reason::SERVICE_ACCOUNT_CONFLICT,
                format!(
                    "ServiceAccount {name} exists and was not created by this access: set spec.serviceAccount.name to use it, or rename the access"
                ),
            )
        }
        (IdentityPlan::ServiceAccount { name, .. }, IdentityOutcome::ServiceAccountNotAllowed) => {
            Check::failed(
                reason::SERVICE_ACCOUNT_NOT_ALLOWED,
                format!(
                    "ServiceAccount {name} has not allowed this access to mint tokens for it: someone who may edit it must annotate it with {ANNOTATION_ALLOWED_ACCESSES}: {} (or leave spec.serviceAccount.name empty for a dedicated ServiceAccount); nothing was minted",
                    plan.access.name
                ),
            )
        }
        (
            IdentityPlan::DexUser { credentials, .. },
            IdentityOutcome::CredentialsSecretNotAllowed,
        ) => Check::failed(
            reason::CREDENTIALS_SECRET_NOT_ALLOWED,
            format!(
                "Secret {} is not marked as a Dex login: someone who may edit it must label it {DEX_LOGIN_LABEL}=true; it was not read further",
                credentials.name
            ),
        ),
        (
            IdentityPlan::DexUser { credentials, .. },
            IdentityOutcome::CredentialsSecretInvalid { problem },
        ) => Check::failed(
            reason::CREDENTIALS_SECRET_INVALID,
            format!(
                "Secret {} {problem}: it must hold the Dex username and password under keys {} and {}",
                credentials.name, credentials.username_key, credentials.password_key
            ),
        ),
        (IdentityPlan::DexUser { credentials, .. }, IdentityOutcome::Failed(err)) => Check::failed(
            reason::CREDENTIALS_SECRET_INVALID,
            format!("cannot read Secret {}: {}", credentials.name, detail(err)),
        ),
        (_, IdentityOutcome::Failed(err)) => {
            Check::failed(reason::SERVICE_ACCOUNT_FAILED, detail(err))
        }
        // The plan and the outcome disagree only if a step is wrong; say so rather than panic.
        (_, other) => Check::failed(
            reason::SERVICE_ACCOUNT_FAILED,
            format!("unexpected identity outcome {other:?}"),
        ),
    };
    Some(check)
}

fn issue_check(
    plan: &Plan,
    issue: &IssueOutcome,
    identity: Option<&super::identity::Identity>,
    now: Timestamp,
) -> Check {
    let secret = &plan.secret.name;
    let who = identity.map(|i| i.describe()).unwrap_or_default();
    let noun = plan.secret.kind.noun();
    match &issue.result {
        IssueResult::WaitingForUrl { message } => {
            Check::failed(reason::WAITING_FOR_URL, message.clone())
        }
        IssueResult::SecretConflict => Check::failed(
            reason::SECRET_CONFLICT,
            format!(
                "Secret {secret} exists and was not created by this access; it is left untouched: delete it or set spec.secretName"
            ),
        ),
        IssueResult::Ready { .. } => match &issue.held {
            Some(held) => {
                let capped = plan
                    .lifetime_capped_from
                    .map(|asked| {
                        format!(
                            "; spec.token.duration {asked:#} was capped to the cluster admin's maximum"
                        )
                    })
                    .unwrap_or_default();
                Check::ok(
                    reason::ISSUED,
                    format!(
                        "Secret {secret} holds a {noun} for {who}, valid until {}, renewed after {}{capped}",
                        held.expires_at,
                        held.renewal_time(plan.renew_before)
                    ),
                )
            }
            None => Check::pending("no credential has been issued yet"),
        },
        IssueResult::LoginStopped => Check::failed(
            reason::DEX_LOGIN_STOPPED,
            format!(
                "Dex refused the login {MAX_LOGIN_REFUSALS} times in a row; the operator stopped trying so the account is not locked out: fix the password in the credentials Secret, or change the spec, to try again"
            ),
        ),
        IssueResult::ObtainFailed(err) => {
            let (failure, obtaining) = match plan.identity {
                IdentityPlan::ServiceAccount { .. } => {
                    (reason::TOKEN_REQUEST_FAILED, "TokenRequest")
                }
                IdentityPlan::DexUser { .. } => (reason::DEX_LOGIN_FAILED, "Dex login"),
            };
            let kept = issue
                .held
                .as_ref()
                .filter(|held| held.expires_at > now)
                .map(|held| format!("; the current {noun} stays valid until {}", held.expires_at))
                .unwrap_or_default();
            Check::failed(
                failure,
                format!("{obtaining} for {who} failed: {err}{kept}"),
            )
        }
        IssueResult::Failed(err) => Check::failed(reason::SECRET_WRITE_FAILED, detail(err)),
    }
}

fn mesh_check(plan: &Plan, outcome: &MeshOutcome) -> Check {
    let isvc = &plan.target.name;
    let policy = match &plan.target.other_namespace {
        Some(ns) => format!("{ns}/{}", build::consumer_policy_name(plan)),
        None => policy_name(plan).to_owned(),
    };
    match outcome {
        MeshOutcome::PolicyReady {
            no_sidecar: true, ..
        } => Check::failed(
            reason::NO_SIDECAR,
            format!(
                "InferenceService {isvc} has sidecar.istio.io/inject=false: AuthorizationPolicy {policy} is never enforced and any authenticated caller reaches the model; remove the annotation, or choose mesh.mode DisableSidecarInjection to accept that"
            ),
        ),
        MeshOutcome::PolicyReady { user_id, .. } => Check::ok(
            reason::POLICY_APPLIED,
            format!("AuthorizationPolicy {policy} allows {user_id} through the gateway"),
        ),
        MeshOutcome::PolicyConflict => Check::failed(
            reason::POLICY_CONFLICT,
            format!(
                "AuthorizationPolicy {policy} exists and was not created by this access; it is left untouched: delete or rename it"
            ),
        ),
        MeshOutcome::IstioNotInstalled => Check::failed(
            reason::ISTIO_NOT_INSTALLED,
            "the AuthorizationPolicy resource (security.istio.io/v1) is not served: Istio is not installed; the credential still works, set mesh.mode Unmanaged if no mesh is intended",
        ),
        MeshOutcome::SidecarDisabled { .. } => Check::ok(
            reason::SIDECAR_DISABLED,
            format!(
                "InferenceService {isvc} runs without an Istio sidecar: any caller the gateway authenticates can reach it"
            ),
        ),
        MeshOutcome::Unmanaged { .. } => Check::ok(
            reason::UNMANAGED,
            "mesh.mode is Unmanaged: the operator leaves Istio alone",
        ),
        MeshOutcome::Auto { detected, result } => auto_check(plan, detected, result),
        MeshOutcome::Failed(err) => Check::failed(reason::POLICY_FAILED, detail(err)),
    }
}

/// mesh.mode Auto: every message starts with the path found and why.
fn auto_check(plan: &Plan, detected: &Detected, result: &AutoResult) -> Check {
    let policy = policy_name(plan);
    let found = format!("path {}: {}", detected.path.name(), detected.why);
    match (result, &detected.path) {
        (AutoResult::Applied { user_id, .. }, MeshPath::Sidecar) => Check::ok(
            reason::POLICY_APPLIED,
            format!("{found}; AuthorizationPolicy {policy} allows {user_id} through the sidecar"),
        ),
        (
            AutoResult::Applied { user_id, .. },
            MeshPath::Waypoint {
                ingress_uses_it: false,
                service,
                waypoint,
            },
        ) => Check::failed(
            reason::INGRESS_BYPASSES_WAYPOINT,
            format!(
                "{found}; AuthorizationPolicy {policy} allows {user_id} at waypoint {waypoint}, but ingress traffic skips the waypoint, so any caller the gateway authenticates reaches the model: label Service {service} or the namespace istio.io/ingress-use-waypoint=true"
            ),
        ),
        (AutoResult::Applied { user_id, .. }, MeshPath::Waypoint { waypoint, .. }) => Check::ok(
            reason::WAYPOINT_POLICY_APPLIED,
            format!(
                "{found}; AuthorizationPolicy {policy}, attached to the Service, allows {user_id} at waypoint {waypoint}"
            ),
        ),
        (AutoResult::Applied { user_id, .. }, MeshPath::Gateway { gateway, .. }) => Check::ok(
            reason::GATEWAY_POLICY_APPLIED,
            format!(
                "{found}; AuthorizationPolicy {}/{} denies every caller but {user_id} this model's host at the Gateway; other models there are unaffected",
                gateway.namespace,
                build::gateway_policy_name(plan)
            ),
        ),
        (AutoResult::Applied { .. }, _) | (AutoResult::Unprotected, _) => Check::failed(
            reason::NO_ENFORCEMENT,
            format!(
                "{found}; nothing on the path enforces a policy, so any caller the gateway authenticates reaches the model: inject a sidecar, use an ambient waypoint, or expose the model through an Istio Gateway"
            ),
        ),
        (AutoResult::Conflict { owner }, _) => Check::failed(
            reason::POLICY_CONFLICT,
            format!(
                "{found}; the AuthorizationPolicy it needs exists and was not created by this access ({}); it is left untouched. At a Gateway one access grants a model: name the identity there",
                owner.as_deref().unwrap_or("no controller")
            ),
        ),
        (AutoResult::NoWaypoint, _) => Check::failed(
            reason::NO_WAYPOINT,
            format!(
                "{found}; only a waypoint enforces a per-identity policy in ambient mode (a selector policy would be enforced by ztunnel, which cannot read it and denies everyone), so nothing was written and any caller the gateway authenticates reaches the model: deploy a waypoint (istioctl waypoint apply) and label the namespace istio.io/use-waypoint"
            ),
        ),
        (AutoResult::GatewayNotAllowed, MeshPath::Gateway { gateway, .. }) => Check::failed(
            reason::GATEWAY_POLICY_NOT_ALLOWED,
            format!(
                "{found}; a policy for this model must live in the Gateway's namespace {}, and no ReferenceGrant there lets InferenceAccesses from namespace {} refer to Gateway {}: its owner creates one (from group inference-access.io, kind InferenceAccess); nothing was written",
                gateway.namespace, plan.access.namespace, gateway.name
            ),
        ),
        (AutoResult::GatewayNotAuthenticating, MeshPath::Gateway { gateway, .. }) => Check::failed(
            reason::GATEWAY_NOT_AUTHENTICATING,
            format!(
                "{found}; no RequestAuthentication is attached to Gateway {}/{}, so it verifies no token and a policy could not tell callers apart; nothing was written: attach one (targetRefs) for the cluster's issuer",
                gateway.namespace, gateway.name
            ),
        ),
        (AutoResult::SessionAtGateway, _) => Check::failed(
            reason::SESSION_AT_GATEWAY,
            format!(
                "{found}; a Dex session carries no token the Gateway verifies, so a policy there cannot admit it: use auth.type ServiceAccountToken"
            ),
        ),
        (AutoResult::Forbidden { right }, _) => Check::failed(
            reason::DATA_PATH_FORBIDDEN,
            format!(
                "{found}; mode Auto reads how the model is reached and the API server refused the operator: it may not {right} (an install for listed namespaces, chart controller.watchNamespaces, holds no cluster-wide reads nor any in the Gateway's namespace); nothing was written or removed: grant that read (docs/install.md) or pin spec.mesh.mode"
            ),
        ),
        (AutoResult::GatewayNotAllowed | AutoResult::GatewayNotAuthenticating, _)
        | (AutoResult::IstioNotInstalled, _) => Check::failed(
            reason::ISTIO_NOT_INSTALLED,
            "the AuthorizationPolicy resource (security.istio.io/v1) is not served: Istio is not installed; the credential still works, set mesh.mode Unmanaged if no mesh is intended",
        ),
    }
}

#[cfg(test)]
#[path = "status_auto_tests.rs"]
mod auto_tests;
#[cfg(test)]
#[path = "status_endpoint_tests.rs"]
mod endpoint_tests;
#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
