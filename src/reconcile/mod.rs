//! The reconcile pipeline: resolve inputs (I/O) → validate (pure) → build desired objects
//! (pure, `desired`) → apply (I/O) → compute status (pure, `status`) → patch status (I/O).
//!
//! Every read is a GET of the current object, so a reconcile never acts on a stale cache (a
//! stale Secret would mean minting a token twice); every write is skipped when the object
//! already holds what the access wants, so a reconcile with nothing to do writes nothing.

pub mod build;
pub mod error;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use tracing::{info, warn};

use crate::api::AuthType;
use crate::api::inference_service::Readiness;
use crate::api::keys::{ANNOTATION_RENEW_REQUESTED_AT, FIELD_MANAGER, SIDECAR_FIELD_MANAGER};
use crate::api::{AuthorizationPolicy, InferenceService};
use crate::api::{InferenceAccess, MeshMode};
use crate::core::credential::{
    self, DexSessionInputs, Inputs, IssueReason, IssuedCredential, TokenRequestInputs,
};
use crate::core::endpoint::Endpoint;
use crate::gateway::client::GatewayClient;
use crate::gateway::dex;
use crate::gateway::probe;
use crate::gateway::probe::Credential;
use crate::reconcile::error::{Error, api_status, describe};
use crate::reconcile::status::{Check, ENDPOINT_VERIFIED, Observation, build_status, reason};
use crate::runtime::metrics::Metrics;

/// How long to wait before looking again at something outside the operator's watches (a named
/// ServiceAccount, a foreign Secret in the way).
const RECHECK_BLOCKED: Duration = Duration::from_secs(60);
const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// A fresh policy takes Istio a moment to push to the sidecar: probe again soon, then back off.
const VERIFY_BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub clock: fn() -> Timestamp,
    pub metrics: Arc<Metrics>,
    /// For endpoint verification; `None` if no HTTP client could be built (reported as such).
    pub gateway: Option<GatewayClient>,
    /// Consecutive reconcile failures per access (by namespace/name), for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Consecutive failed endpoint probes per access, likewise.
    verify_failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, recorder: Recorder, clock: fn() -> Timestamp) -> Self {
        Self {
            client,
            recorder,
            clock,
            metrics: Arc::default(),
            gateway: GatewayClient::new().ok(),
            failures: Mutex::default(),
            verify_failures: Mutex::default(),
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn record_outcome(&self, access: &InferenceAccess, failed: bool) -> u32 {
        count_failure(&self.failures, access, failed)
    }

    fn count_verify_failure(&self, access: &InferenceAccess, failed: bool) -> u32 {
        count_failure(&self.verify_failures, access, failed)
    }

    /// Drops the counts of an access that is gone, so failing accesses deleted over time do
    /// not accumulate.
    pub fn forget(&self, namespace: Option<&str>, name: &str) {
        let key = failure_key(namespace, name);
        for counts in [&self.failures, &self.verify_failures] {
            counts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&key);
        }
    }

    fn failures_of(&self, access: &InferenceAccess) -> u32 {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        failures
            .get(&failure_key(
                access.namespace().as_deref(),
                &access.name_any(),
            ))
            .copied()
            .unwrap_or(1)
    }
}

fn failure_key(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or_default())
}

/// Counts consecutive failures of one access; a success resets the count.
fn count_failure(
    counts: &Mutex<HashMap<String, u32>>,
    access: &InferenceAccess,
    failed: bool,
) -> u32 {
    let key = failure_key(access.namespace().as_deref(), &access.name_any());
    let mut counts = counts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if failed {
        let count = counts.entry(key).or_default();
        *count = count.saturating_add(1);
        *count
    } else {
        counts.remove(&key);
        0
    }
}

/// Checks what the CRD's schema and CEL rules already enforce, for API servers (or older CRD
/// versions) that did not: the controller never trusts its input.
pub fn validate(access: &InferenceAccess) -> Result<(), String> {
    let spec = &access.spec;
    if access.namespace().is_none() {
        return Err("InferenceAccess must be namespaced".into());
    }
    if spec.inference_service.name.is_empty() {
        return Err("spec.inferenceService.name is required".into());
    }
    if spec.token.audiences.is_empty() || spec.token.audiences.iter().any(String::is_empty) {
        return Err("spec.token.audiences must list at least one non-empty audience: an empty list would mint a full Kubernetes API credential".into());
    }
    let duration = signed(spec.token.duration);
    if duration < SignedDuration::from_secs(credential::MIN_EXPIRATION_SECONDS) {
        return Err(format!(
            "spec.token.duration {} is below the API server's minimum of 10m",
            spec.token.duration
        ));
    }
    if let Some(before) = spec.token.renew_before {
        let before = signed(before);
        if before <= SignedDuration::ZERO || before >= duration {
            return Err(format!(
                "spec.token.renewBefore must be positive and shorter than spec.token.duration ({})",
                spec.token.duration
            ));
        }
    }
    if let Some(template) = &spec.inference_service.template
        && !template.spec.is_object()
    {
        return Err("spec.inferenceService.template.spec must be an object".into());
    }
    if spec.auth.type_ == AuthType::DexSession && spec.auth.dex_session.is_none() {
        return Err("spec.auth.dexSession is required when spec.auth.type is DexSession".into());
    }
    if spec.mesh.mode == MeshMode::AuthorizationPolicy && spec.mesh.source_principals.is_empty() {
        return Err(
            "spec.mesh.sourcePrincipals must not be empty: the policy would admit nobody".into(),
        );
    }
    Ok(())
}

fn signed(duration: kube::core::Duration) -> SignedDuration {
    if duration.is_negative() {
        return SignedDuration::MIN;
    }
    SignedDuration::try_from(Duration::from(duration)).unwrap_or(SignedDuration::MAX)
}

/// Entry point for the controller.
pub async fn reconcile(access: Arc<InferenceAccess>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_once(&access, &ctx).await;
    ctx.metrics.reconciled(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    result
}

async fn reconcile_once(
    access: &Arc<InferenceAccess>,
    ctx: &Arc<Context>,
) -> Result<Action, Error> {
    let now = (ctx.clock)();
    let mut run = Run::new(access, ctx, now);
    let result = run.pipeline().await;
    let status_result = run.publish_status().await;
    run.publish_events().await;
    ctx.record_outcome(access, result.is_err() || status_result.is_err());
    match result {
        Err(err) if err.is_spec_error() => Ok(Action::await_change()),
        Err(err) => Err(err),
        Ok(action) => status_result.map(|()| action),
    }
}

/// Failures back off exponentially per access; spec errors never reach here.
pub fn error_policy(access: Arc<InferenceAccess>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = backoff(BACKOFF_BASE, ctx.failures_of(&access));
    warn!(access = %access.name_any(), namespace = access.namespace().unwrap_or_default(), category = error.category(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// When a Dex session cookie says nothing about its lifetime (oauth2-proxy's default is 168h;
/// Kubeflow sets 24h).
const DEFAULT_SESSION_LIFETIME: SignedDuration = SignedDuration::from_hours(24);

/// Who the credential is for. No `Debug`: it holds a password.
enum Identity {
    ServiceAccount(TokenRequestInputs),
    DexUser {
        login: DexSessionInputs,
        password: String,
        connector: dex::Connector,
        /// What the gateway puts in the user-id header for this session.
        user_id: String,
    },
}

impl Identity {
    /// What the credential is obtained with, as recorded on the Secret.
    fn inputs(&self) -> Inputs {
        match self {
            Identity::ServiceAccount(request) => Inputs::ServiceAccountToken(request.clone()),
            Identity::DexUser { login, .. } => Inputs::DexSession(login.clone()),
        }
    }

    /// The value the gateway puts in the user-id header for this identity.
    fn user_id(&self, namespace: &str) -> String {
        match self {
            Identity::ServiceAccount(request) => {
                build::service_account_user(namespace, &request.service_account)
            }
            Identity::DexUser { user_id, .. } => user_id.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Identity::ServiceAccount(request) => {
                format!("ServiceAccount {}", request.service_account)
            }
            Identity::DexUser { login, .. } => format!("Dex user {}", login.username),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Identity::ServiceAccount(_) => "token",
            Identity::DexUser { .. } => "session",
        }
    }

    fn obtaining(&self) -> &'static str {
        match self {
            Identity::ServiceAccount(_) => "TokenRequest",
            Identity::DexUser { .. } => "Dex login",
        }
    }

    fn failure_reason(&self) -> &'static str {
        match self {
            Identity::ServiceAccount(_) => reason::TOKEN_REQUEST_FAILED,
            Identity::DexUser { .. } => reason::DEX_LOGIN_FAILED,
        }
    }
}

/// A credential in the Secret, and what the rest of the pipeline needs of it.
struct Issued {
    /// When to renew (jitter included).
    renewal: Timestamp,
    endpoint: Endpoint,
    credential: probe::Credential,
    /// Whether this reconcile wrote the Secret's data.
    written: bool,
}

/// `base` doubled per consecutive failure, capped.
fn backoff(base: Duration, failures: u32) -> Duration {
    base.saturating_mul(2_u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(BACKOFF_MAX)
}

struct Run<'a> {
    access: &'a InferenceAccess,
    ctx: &'a Context,
    now: Timestamp,
    observation: Observation,
    events: Vec<Event>,
}

impl<'a> Run<'a> {
    fn new(access: &'a InferenceAccess, ctx: &'a Context, now: Timestamp) -> Self {
        Self {
            access,
            ctx,
            now,
            observation: Observation::default(),
            events: Vec::new(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(
            self.ctx.client.clone(),
            &self.access.namespace().unwrap_or_default(),
        )
    }

    fn event(&mut self, type_: EventType, reason: &str, action: &str, note: String) {
        self.events.push(Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        });
    }

    async fn pipeline(&mut self) -> Result<Action, Error> {
        if let Err(message) = validate(self.access) {
            let check = Check::failed(reason::INVALID_SPEC, message.clone());
            self.observation.inference_service = check.clone();
            self.observation.credential = check.clone();
            self.observation.access_policy = check;
            self.event(
                EventType::Warning,
                reason::INVALID_SPEC,
                "Validate",
                message.clone(),
            );
            return Err(Error::InvalidSpec(message));
        }
        let Some(inference_service) = self.resolve_inference_service().await? else {
            return Ok(Action::requeue(RECHECK_BLOCKED));
        };
        let identity = match self.access.spec.auth.type_ {
            AuthType::ServiceAccountToken => {
                let spec = &self.access.spec;
                self.resolve_service_account()
                    .await?
                    .map(|service_account| {
                        Identity::ServiceAccount(TokenRequestInputs {
                            service_account,
                            audiences: spec.token.audiences.clone(),
                            expiration_seconds: signed(spec.token.duration).as_secs(),
                        })
                    })
            }
            AuthType::DexSession => self.resolve_dex_user().await?,
        };
        let Some(identity) = identity else {
            return Ok(Action::requeue(RECHECK_BLOCKED));
        };
        // The credential needs the URL; the mesh does not, and must not wait for it: Knative
        // may need the policy's probe paths before it publishes the URL at all.
        let credential = match inference_service.url() {
            Some(url) => self.ensure_credential(url, &identity).await,
            None => {
                self.observation.credential = Check::failed(
                    reason::WAITING_FOR_URL,
                    format!(
                        "waiting for InferenceService {} to publish status.url",
                        inference_service.name_any()
                    ),
                );
                Ok(None)
            }
        };
        let user_id = identity.user_id(&self.access.namespace().unwrap_or_default());
        let mesh = self.ensure_mesh(&inference_service, &user_id).await;
        let issued = credential?;
        mesh?;
        let Some(issued) = issued else {
            return Ok(Action::requeue(RECHECK_BLOCKED));
        };
        let wait = issued
            .renewal
            .duration_since(self.now)
            .max(SignedDuration::from_secs(1));
        let until_renewal = Duration::try_from(wait).unwrap_or(RECHECK_BLOCKED);
        // After the policy, so a fresh policy is in place before the first probe.
        Ok(Action::requeue(match self.verify_endpoint(&issued).await {
            Some(retry) => retry.min(until_renewal),
            None => until_renewal,
        }))
    }

    /// Step 5b: a request with the credential through the gateway, after an issue or a change,
    /// and again with backoff while it fails. Never blocks the credential. Returns when to try
    /// again after a failure.
    async fn verify_endpoint(&mut self, issued: &Issued) -> Option<Duration> {
        if !self.access.spec.verification.enabled {
            self.observation.endpoint = Some(Check::unknown(
                reason::VERIFICATION_DISABLED,
                "spec.verification.enabled is false: the operator does not probe the gateway",
            ));
            return None;
        }
        let last_ok = self
            .access
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == ENDPOINT_VERIFIED))
            .is_some_and(|c| {
                c.status == "True" && c.observed_generation == self.access.meta().generation
            });
        if last_ok && !issued.written {
            return None;
        }
        let diagnosis = match &self.ctx.gateway {
            Some(client) => probe::verify(client, &issued.endpoint, &issued.credential).await,
            None => probe::Diagnosis::GatewayUnreachable {
                error: "no HTTP client could be built".into(),
            },
        };
        let message = diagnosis.message(&issued.endpoint);
        let failures = self
            .ctx
            .count_verify_failure(self.access, !diagnosis.is_reachable());
        self.observation.endpoint = Some(if diagnosis.is_reachable() {
            Check::ok(diagnosis.reason(), message)
        } else {
            Check::failed(diagnosis.reason(), message)
        });
        (failures > 0).then(|| backoff(VERIFY_BACKOFF_BASE, failures))
    }

    /// Step 1: the InferenceService, applied from the template when there is one.
    async fn resolve_inference_service(&mut self) -> Result<Option<InferenceService>, Error> {
        let name = &self.access.spec.inference_service.name;
        let api = self.api::<InferenceService>();
        let current = api.get_opt(name).await.map_err(|e| self.isvc_failed(e))?;
        let resolved = match (build::templated_inference_service(self.access), current) {
            (None, None) => {
                self.observation.inference_service = Check::failed(
                    reason::INFERENCE_SERVICE_NOT_FOUND,
                    format!(
                        "InferenceService {name} does not exist in this namespace: create it, or set spec.inferenceService.template"
                    ),
                );
                return Ok(None);
            }
            (None, Some(current)) => {
                if self.access.spec.mesh.mode == MeshMode::DisableSidecarInjection
                    && !current.sidecar_disabled()
                {
                    self.disable_sidecar_on_referenced(&api, name).await?;
                }
                current
            }
            (Some(_), Some(current))
                if !build::is_controlled_by(&current.metadata, self.access) =>
            {
                let owner = build::controller_of(&current.metadata)
                    .map(|o| format!("it is managed by {o}"))
                    .unwrap_or_else(|| "it was not created by this access".into());
                self.observation.inference_service = Check::failed(
                    reason::TEMPLATE_CONFLICT,
                    format!(
                        "InferenceService {name} exists and {owner}: only one access may template an InferenceService; remove spec.inferenceService.template to reference it instead"
                    ),
                );
                return Ok(None);
            }
            (Some(wanted), current) => {
                if current.as_ref().is_some_and(|c| contains(c, &wanted)) {
                    current.unwrap_or(wanted)
                } else {
                    match apply(&api, name, &wanted).await {
                        Ok(applied) => {
                            self.event(
                                EventType::Normal,
                                "InferenceServiceApplied",
                                "Apply",
                                format!("applied InferenceService {name} from the template"),
                            );
                            applied
                        }
                        Err(err) if api_status(&err).is_some_and(|c| c == 400 || c == 422) => {
                            let message = format!(
                                "KServe refused the InferenceService template: {}",
                                describe(&err)
                            );
                            self.observation.inference_service =
                                Check::failed(reason::INVALID_TEMPLATE, message.clone());
                            return Err(Error::InvalidSpec(message));
                        }
                        Err(err) => return Err(self.isvc_failed(err)),
                    }
                }
            }
        };
        self.observation.inference_service = match resolved.readiness() {
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
        };
        Ok(Some(resolved))
    }

    fn isvc_failed(&mut self, err: kube::Error) -> Error {
        self.observation.inference_service =
            Check::failed(reason::INFERENCE_SERVICE_FAILED, describe(&err));
        Error::InferenceService(err)
    }

    /// DisableSidecarInjection on an InferenceService the access does not own: apply only the
    /// annotation, under a field manager of its own and without force, so a different value
    /// set by someone else surfaces as a conflict instead of being overwritten.
    async fn disable_sidecar_on_referenced(
        &mut self,
        api: &Api<InferenceService>,
        name: &str,
    ) -> Result<(), Error> {
        let patch = build::sidecar_annotation_patch(name);
        match api
            .patch(
                name,
                &PatchParams::apply(SIDECAR_FIELD_MANAGER),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => {
                self.event(
                    EventType::Normal,
                    "SidecarInjectionDisabled",
                    "Apply",
                    format!("set sidecar.istio.io/inject=false on InferenceService {name}"),
                );
                Ok(())
            }
            Err(err) if api_status(&err) == Some(409) => {
                self.observation.access_policy = Check::failed(
                    reason::SIDECAR_ANNOTATION_CONFLICT,
                    format!(
                        "another manager set sidecar.istio.io/inject on InferenceService {name}: {}; remove it there or choose mesh.mode AuthorizationPolicy",
                        describe(&err)
                    ),
                );
                Ok(())
            }
            Err(err) => {
                self.observation.access_policy =
                    Check::failed(reason::POLICY_FAILED, describe(&err));
                Err(Error::InferenceService(err))
            }
        }
    }

    /// Step 1b: the ServiceAccount the token is minted for.
    async fn resolve_service_account(&mut self) -> Result<Option<String>, Error> {
        let (name, dedicated) = self.access.service_account();
        let api = self.api::<ServiceAccount>();
        let current = api.get_opt(&name).await.map_err(|e| self.sa_failed(e))?;
        match (dedicated, current) {
            (false, None) => {
                self.observation.credential = Check::failed(
                    reason::SERVICE_ACCOUNT_NOT_FOUND,
                    format!(
                        "ServiceAccount {name} does not exist in this namespace: create it, or leave spec.serviceAccount.name empty for a dedicated one"
                    ),
                );
                return Ok(None);
            }
            (false, Some(_)) => {}
            (true, Some(current)) if !build::is_controlled_by(&current.metadata, self.access) => {
                self.observation.credential = Check::failed(
                    reason::SERVICE_ACCOUNT_CONFLICT,
                    format!(
                        "ServiceAccount {name} exists and was not created by this access: set spec.serviceAccount.name to use it, or rename the access"
                    ),
                );
                return Ok(None);
            }
            (true, current) => {
                let wanted = build::service_account(self.access, &name);
                if !current.is_some_and(|c| contains(&c, &wanted)) {
                    apply(&api, &name, &wanted)
                        .await
                        .map_err(|e| self.sa_failed(e))?;
                    self.event(
                        EventType::Normal,
                        "ServiceAccountApplied",
                        "Apply",
                        format!("applied dedicated ServiceAccount {name}"),
                    );
                }
            }
        }
        self.observation.service_account_name = Some(name.clone());
        Ok(Some(name))
    }

    /// Step 1b for DexSession: the Dex user's name and password, from the user's own Secret
    /// (read only; the password goes to the login form and nowhere else).
    async fn resolve_dex_user(&mut self) -> Result<Option<Identity>, Error> {
        let Some(dex_spec) = &self.access.spec.auth.dex_session else {
            return Err(Error::InvalidSpec(
                "auth.dexSession is required when auth.type is DexSession".into(),
            ));
        };
        let reference = &dex_spec.credentials_secret;
        let secret = self
            .api::<Secret>()
            .get_opt(&reference.name)
            .await
            .map_err(|e| {
                self.observation.credential = Check::failed(
                    reason::CREDENTIALS_SECRET_INVALID,
                    format!("cannot read Secret {}: {}", reference.name, describe(&e)),
                );
                Error::Secret(e)
            })?;
        let text = |key: &str| {
            secret
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get(key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| !v.is_empty())
        };
        let (Some(username), Some(password)) =
            (text(&reference.username_key), text(&reference.password_key))
        else {
            self.observation.credential = Check::failed(
                reason::CREDENTIALS_SECRET_INVALID,
                format!(
                    "Secret {} must exist in this namespace with non-empty keys {} and {} (the Dex username and password)",
                    reference.name, reference.username_key, reference.password_key
                ),
            );
            return Ok(None);
        };
        let connector = match dex_spec.connector {
            crate::api::DexConnector::Local => dex::Connector::Local,
            crate::api::DexConnector::Ldap => dex::Connector::Ldap,
        };
        let login_url = dex_spec
            .login_url
            .clone()
            .unwrap_or_else(|| self.access.spec.gateway.url.clone());
        let user_id = dex_spec.user_id.clone().unwrap_or_else(|| username.clone());
        let login = DexSessionInputs {
            username,
            connector: connector.id().to_owned(),
            login_url,
        };
        Ok(Some(Identity::DexUser {
            login,
            password,
            connector,
            user_id,
        }))
    }

    fn sa_failed(&mut self, err: kube::Error) -> Error {
        self.observation.credential = Check::failed(reason::SERVICE_ACCOUNT_FAILED, describe(&err));
        Error::ServiceAccount(err)
    }

    /// Steps 2 to 4: the Secret, the credential (bound to it where the API allows), and the data
    /// clients read.
    async fn ensure_credential(
        &mut self,
        url: &str,
        identity: &Identity,
    ) -> Result<Option<Issued>, Error> {
        let spec = &self.access.spec;
        let endpoint = match Endpoint::resolve(url, &spec.gateway.url, &spec.inference_service.name)
        {
            Ok(endpoint) => endpoint,
            Err(err) => {
                self.observation.credential =
                    Check::failed(reason::WAITING_FOR_URL, err.to_string());
                return Ok(None);
            }
        };
        self.observation.url = Some(endpoint.url.clone());
        self.observation.host = Some(endpoint.host.clone());
        let Some(secret) = self.ensure_secret().await? else {
            return Ok(None);
        };
        let current = IssuedCredential::from_secret(&secret);
        if let Some(current) = &current {
            self.record_expiry(current);
        }
        let wanted = identity.inputs();
        let requested = self
            .access
            .annotations()
            .get(ANNOTATION_RENEW_REQUESTED_AT)
            .and_then(|t| t.parse::<Timestamp>().ok());
        let renew_before = spec.token.renew_before.map(signed);
        let issued = match credential::needs_issue(
            current.as_ref(),
            &wanted,
            renew_before,
            requested,
            self.now,
        ) {
            None => current,
            Some(why) => match self.obtain(&secret, identity).await {
                Ok(issued) => {
                    let renewed = why != IssueReason::Missing;
                    let (reason, verb) = if renewed {
                        ("CredentialRenewed", "renewed")
                    } else {
                        ("CredentialIssued", "issued")
                    };
                    self.ctx.metrics.credential_minted(renewed);
                    info!(access = %self.access.name_any(), namespace = self.access.namespace().unwrap_or_default(), why = ?why, expires_at = %issued.expires_at, "credential {verb}");
                    self.event(
                        EventType::Normal,
                        reason,
                        "IssueCredential",
                        format!(
                            "{verb} a {} for {}, expires at {}",
                            identity.kind(),
                            identity.describe(),
                            issued.expires_at
                        ),
                    );
                    Some(issued)
                }
                Err(err) => {
                    let kept = current
                        .as_ref()
                        .filter(|c| c.expires_at > self.now)
                        .map(|c| {
                            format!(
                                "; the current {} stays valid until {}",
                                identity.kind(),
                                c.expires_at
                            )
                        })
                        .unwrap_or_default();
                    let failure = identity.failure_reason();
                    let message = format!(
                        "{} for {} failed: {err}{kept}",
                        identity.obtaining(),
                        identity.describe()
                    );
                    self.observation.credential = Check::failed(failure, message.clone());
                    self.event(EventType::Warning, failure, "IssueCredential", message);
                    return Err(err);
                }
            },
        };
        let Some(issued) = issued else {
            return Ok(None);
        };
        let wanted_secret = build::credential_secret(self.access, &endpoint, &issued);
        let written = !contains(&secret, &wanted_secret);
        if written {
            // One apply writes every key at once: clients never read a half-written Secret, and
            // the old credential stays until the new one replaces it.
            apply(
                &self.api::<Secret>(),
                &self.access.secret_name(),
                &wanted_secret,
            )
            .await
            .map_err(|e| {
                self.observation.credential =
                    Check::failed(reason::SECRET_WRITE_FAILED, describe(&e));
                Error::Secret(e)
            })?;
        }
        let renewal = self.record_expiry(&issued);
        self.observation.credential = Check::ok(
            reason::ISSUED,
            format!(
                "Secret {} holds a {} for {}, valid until {}, renewed after {renewal}",
                self.access.secret_name(),
                identity.kind(),
                identity.describe(),
                issued.expires_at
            ),
        );
        let window = issued.expires_at.duration_since(renewal);
        Ok(Some(Issued {
            renewal: renewal + credential::jitter(&self.access.uid().unwrap_or_default(), window),
            endpoint,
            credential: issued.value,
            written,
        }))
    }

    fn record_expiry(&mut self, issued: &IssuedCredential) -> Timestamp {
        let renewal = issued.renewal_time(self.access.spec.token.renew_before.map(signed));
        self.observation.token_expiration_time = Some(issued.expires_at);
        self.observation.renewal_time = Some(renewal);
        renewal
    }

    /// Step 2: the Secret must exist (owned, labeled) before a token can be bound to it. A
    /// Secret of that name the operator did not create is never touched.
    async fn ensure_secret(&mut self) -> Result<Option<Secret>, Error> {
        let name = self.access.secret_name();
        let api = self.api::<Secret>();
        let secret_failed = |this: &mut Self, e: kube::Error| {
            this.observation.credential = Check::failed(reason::SECRET_WRITE_FAILED, describe(&e));
            Error::Secret(e)
        };
        let current = match api.get_opt(&name).await {
            Ok(current) => current,
            Err(e) => return Err(secret_failed(self, e)),
        };
        self.observation.secret_name = Some(name.clone());
        match current {
            Some(secret) if build::is_controlled_by(&secret.metadata, self.access) => {
                Ok(Some(secret))
            }
            Some(_) => {
                self.observation.credential = Check::failed(
                    reason::SECRET_CONFLICT,
                    format!(
                        "Secret {name} exists and was not created by this access; it is left untouched: delete it or set spec.secretName"
                    ),
                );
                Ok(None)
            }
            None => {
                let params = PostParams {
                    dry_run: false,
                    field_manager: Some(FIELD_MANAGER.into()),
                };
                match api.create(&params, &build::empty_secret(self.access)).await {
                    Ok(created) => Ok(Some(created)),
                    Err(e) => Err(secret_failed(self, e)),
                }
            }
        }
    }

    /// Step 3: a new credential. A token comes from the TokenRequest API, bound to the Secret;
    /// the server's expiry is the truth (it may have capped the duration). A Dex session comes
    /// from logging in through the gateway, as a person would.
    async fn obtain(
        &self,
        secret: &Secret,
        identity: &Identity,
    ) -> Result<IssuedCredential, Error> {
        let (value, expires_at) = match identity {
            Identity::DexUser {
                login,
                password,
                connector,
                ..
            } => {
                let client = self
                    .ctx
                    .gateway
                    .as_ref()
                    .ok_or_else(|| Error::DexLogin("no HTTP client could be built".into()))?;
                let session = dex::login(
                    client,
                    &login.login_url,
                    &login.username,
                    password,
                    *connector,
                    self.now,
                )
                .await
                .map_err(|e| Error::DexLogin(e.to_string()))?;
                let expires_at = session
                    .expires_at
                    .unwrap_or(self.now + DEFAULT_SESSION_LIFETIME);
                let cookie = Credential::Cookie {
                    name: session.cookie_name,
                    value: session.cookie_value,
                };
                (cookie, expires_at)
            }
            Identity::ServiceAccount(request) => {
                let body =
                    request.token_request(&secret.name_any(), &secret.uid().unwrap_or_default());
                let response: TokenRequest = self
                    .api::<ServiceAccount>()
                    .create_subresource(
                        "token",
                        &request.service_account,
                        &PostParams::default(),
                        &body,
                    )
                    .await
                    .map_err(Error::TokenRequest)?;
                let status = response.status.ok_or(Error::EmptyTokenResponse)?;
                if status.token.is_empty() {
                    return Err(Error::EmptyTokenResponse);
                }
                (
                    Credential::Bearer(status.token),
                    status.expiration_timestamp.0,
                )
            }
        };
        Ok(IssuedCredential {
            value,
            issued_at: self.now,
            expires_at,
            inputs: identity.inputs(),
        })
    }

    /// Step 5: tell the mesh to let this identity through, as the mode says.
    async fn ensure_mesh(
        &mut self,
        inference_service: &InferenceService,
        user_id: &str,
    ) -> Result<(), Error> {
        if self.observation.access_policy.reason == reason::SIDECAR_ANNOTATION_CONFLICT {
            return Ok(());
        }
        let name = build::policy_name(self.access);
        let api = self.api::<AuthorizationPolicy>();
        let current = match api.get_opt(&name).await {
            Ok(current) => current,
            // The resource is not served at all: Istio is not installed.
            Err(err) if api_status(&err) == Some(404) => None,
            Err(err) => return Err(self.policy_failed(err)),
        };
        let isvc = inference_service.name_any();
        let mode = self.access.spec.mesh.mode;
        if mode != MeshMode::AuthorizationPolicy {
            if let Some(stale) =
                current.filter(|c| build::is_controlled_by(&c.metadata, self.access))
            {
                api.delete(&stale.name_any(), &DeleteParams::default())
                    .await
                    .map_err(|e| self.policy_failed(e))?;
                self.event(
                    EventType::Normal,
                    "PolicyDeleted",
                    "Delete",
                    format!("deleted AuthorizationPolicy {name}: mesh.mode is now {mode:?}"),
                );
            }
            self.observation.access_policy = match mode {
                MeshMode::DisableSidecarInjection => Check::ok(
                    reason::SIDECAR_DISABLED,
                    format!(
                        "InferenceService {isvc} runs without an Istio sidecar: any caller the gateway authenticates can reach it"
                    ),
                ),
                _ => Check::ok(
                    reason::UNMANAGED,
                    "mesh.mode is Unmanaged: the operator leaves Istio alone",
                ),
            };
            return Ok(());
        }
        let wanted = build::authorization_policy(self.access, user_id);
        match current {
            Some(current) if !build::is_controlled_by(&current.metadata, self.access) => {
                self.observation.access_policy = Check::failed(
                    reason::POLICY_CONFLICT,
                    format!(
                        "AuthorizationPolicy {name} exists and was not created by this access; it is left untouched: delete or rename it"
                    ),
                );
                return Ok(());
            }
            Some(current) if contains(&current, &wanted) => {}
            _ => match apply(&api, &name, &wanted).await {
                Ok(_) => self.event(
                    EventType::Normal,
                    "PolicyApplied",
                    "Apply",
                    format!("applied AuthorizationPolicy {name} for {user_id}"),
                ),
                Err(err) if api_status(&err) == Some(404) => {
                    self.observation.access_policy = Check::failed(
                        reason::ISTIO_NOT_INSTALLED,
                        "the AuthorizationPolicy resource (security.istio.io/v1) is not served: Istio is not installed; the credential still works, set mesh.mode Unmanaged if no mesh is intended",
                    );
                    return Ok(());
                }
                Err(err) => return Err(self.policy_failed(err)),
            },
        }
        self.observation.access_policy = if inference_service.sidecar_disabled() {
            Check::failed(
                reason::NO_SIDECAR,
                format!(
                    "InferenceService {isvc} has sidecar.istio.io/inject=false: AuthorizationPolicy {name} is never enforced and any authenticated caller reaches the model; remove the annotation, or choose mesh.mode DisableSidecarInjection to accept that"
                ),
            )
        } else {
            Check::ok(
                reason::POLICY_APPLIED,
                format!("AuthorizationPolicy {name} allows {user_id} through the gateway"),
            )
        };
        Ok(())
    }

    fn policy_failed(&mut self, err: kube::Error) -> Error {
        self.observation.access_policy = Check::failed(reason::POLICY_FAILED, describe(&err));
        Error::Policy(err)
    }

    /// Step 6: publish the status, only when it changed.
    async fn publish_status(&self) -> Result<(), Error> {
        let status = build_status(
            &self.observation,
            self.access.status.as_ref(),
            self.access.meta().generation,
            self.now,
        );
        if self.access.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let patch = serde_json::json!({
            "apiVersion": InferenceAccess::api_version(&()),
            "kind": InferenceAccess::kind(&()),
            "metadata": {"name": self.access.name_any()},
            "status": status,
        });
        self.api::<InferenceAccess>()
            .patch_status(
                &self.access.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(Error::Status)?;
        Ok(())
    }

    async fn publish_events(&self) {
        let reference = self.access.object_ref(&());
        for event in &self.events {
            if let Err(err) = self.ctx.recorder.publish(event, &reference).await {
                warn!(access = %self.access.name_any(), reason = %event.reason, error = %describe(&err), "cannot publish event");
            }
        }
    }
}

/// Server-side apply with the operator's one field manager, forced: the operator is the only
/// writer of the fields it sets on objects it owns.
pub async fn apply<K>(api: &Api<K>, name: &str, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Serialize + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
}

/// Whether `actual` already holds every field `wanted` sets, so applying would change nothing.
pub fn contains<A: Serialize, W: Serialize>(actual: &A, wanted: &W) -> bool {
    match (serde_json::to_value(actual), serde_json::to_value(wanted)) {
        (Ok(actual), Ok(wanted)) => is_subset(&wanted, &actual),
        _ => false,
    }
}

fn is_subset(wanted: &serde_json::Value, actual: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (wanted, actual) {
        (Value::Object(w), Value::Object(a)) => w.iter().all(|(k, v)| match a.get(k) {
            Some(actual) => is_subset(v, actual),
            // An empty map or list wanted is the same as one absent.
            None => {
                v.is_null()
                    || v.as_object().is_some_and(|o| o.is_empty())
                    || v.as_array().is_some_and(|l| l.is_empty())
            }
        }),
        (Value::Array(w), Value::Array(a)) => {
            w.len() == a.len() && w.iter().zip(a).all(|(w, a)| is_subset(w, a))
        }
        (w, a) => w == a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failures_count_up_reset_on_success_and_back_off_to_a_cap() {
        let counts = Mutex::default();
        let access = crate::api::fixtures::access(json!({"inferenceService": {"name": "m"}}));
        assert_eq!(count_failure(&counts, &access, true), 1);
        assert_eq!(count_failure(&counts, &access, true), 2);
        assert_eq!(counts.lock().unwrap().get("ns/client"), Some(&2));
        assert_eq!(count_failure(&counts, &access, false), 0);
        assert!(counts.lock().unwrap().is_empty());
        let delays: Vec<_> = [1, 2, 3, 9, 40]
            .into_iter()
            .map(|n| backoff(BACKOFF_BASE, n).as_secs())
            .collect();
        assert_eq!(delays, [2, 4, 8, 300, 300]);
    }

    #[test]
    fn subset_table() {
        let cases = [
            (json!({"a": 1}), json!({"a": 1, "b": 2}), true),
            (json!({"a": 1}), json!({"a": 2}), false),
            (
                json!({"a": {"b": [1, {"c": 1}]}}),
                json!({"a": {"b": [1, {"c": 1, "d": 2}]}}),
                true,
            ),
            (json!({"a": [1]}), json!({"a": [1, 2]}), false),
            (json!({"a": {}}), json!({}), true),
            (json!({"a": []}), json!({}), true),
            (json!({"a": null}), json!({}), true),
            (json!({"a": "x"}), json!({}), false),
        ];
        for (wanted, actual, expected) in cases {
            assert_eq!(is_subset(&wanted, &actual), expected, "{wanted} ⊆ {actual}");
        }
    }
}
