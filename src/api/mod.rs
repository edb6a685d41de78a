//! The `InferenceAccess` API (`inference-access.io/v1alpha1`).
//!
//! The Rust types are the single source of the CRD: `inference-access crd` prints it and
//! `crds/` holds the checked-in copy. Cross-field rules live in the schema as CEL so the API
//! server refuses bad input before the controller ever sees it.

pub mod authorization_policy;
pub mod crd;
pub mod inference_service;
pub mod json_text;
pub mod keys;
mod schema;
mod third_party;
pub mod workload;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use authorization_policy::AuthorizationPolicy;
pub use inference_service::InferenceService;

/// An access as the controller schedules it: its metadata only. The reconcile reads the whole
/// access from the access cache, which keeps it compressed: a typed copy of every access in the
/// controller's own store was the largest part of the operator's memory.
pub type AccessMeta = kube::core::PartialObjectMeta<InferenceAccess>;
pub(crate) use third_party::{api_version, kind, namespaced_resource};

/// The audience Kubeflow's ingress gateway accepts for ServiceAccount tokens.
pub const DEFAULT_AUDIENCE: &str = "istio-ingressgateway.istio-system.svc.cluster.local";
/// Kubeflow's ingress gateway, as seen from inside the cluster.
pub const DEFAULT_GATEWAY_URL: &str = "http://istio-ingressgateway.istio-system.svc.cluster.local";
/// The gateway's mesh identity: the source principal of every request it forwards.
pub const DEFAULT_GATEWAY_PRINCIPAL: &str =
    "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
/// The header Kubeflow's gateway overwrites with the verified token's `sub`.
pub const DEFAULT_USER_ID_HEADER: &str = "kubeflow-userid";
/// Paths Knative's activator and queue-proxy probe on the predictor; they carry no user token.
pub const DEFAULT_PROBE_PATHS: [&str; 4] = ["/healthz", "/ready", "/metrics", "/wait-for-drain"];

/// A request for a working, self-renewing credential to call one KServe InferenceService.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "inference-access.io",
    version = "v1alpha1",
    kind = "InferenceAccess",
    plural = "inferenceaccesses",
    shortname = "ia",
    category = "kubeflow",
    namespaced,
    status = "InferenceAccessStatus",
    derive = "PartialEq",
    doc = "InferenceAccess keeps a ready, self-renewing credential for one KServe InferenceService in a Secret, and the Istio access policy that lets it through.",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason", "priority": 1}"#,
    printcolumn = r#"{"name": "URL", "type": "string", "jsonPath": ".status.url"}"#,
    printcolumn = r#"{"name": "Secret", "type": "string", "jsonPath": ".status.secretName", "priority": 1}"#,
    printcolumn = r#"{"name": "Expires", "type": "string", "jsonPath": ".status.tokenExpirationTime"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63").message("the name must be at most 63 characters: it becomes a label value and the name of the ServiceAccount and AuthorizationPolicy"),
    cel
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.mesh.mode != 'DisableSidecarInjection' || has(self.inferenceService.template)").message("mesh.mode DisableSidecarInjection needs spec.inferenceService.template: the operator only changes an InferenceService this access creates"))]
pub struct InferenceAccessSpec {
    /// The InferenceService to reach, in the same namespace.
    pub inference_service: InferenceServiceRef,
    /// How the credential authenticates at the gateway: a ServiceAccount token (default) or a
    /// Dex login session.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub auth: AuthSpec,
    /// The identity the credential is minted for (ServiceAccountToken).
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub service_account: ServiceAccountRef,
    /// The ServiceAccount token: audiences, lifetime and when to renew it.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub token: TokenSpec,
    /// How the Istio mesh is told to let this identity through.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub mesh: MeshSpec,
    /// Where clients reach the ingress gateway.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub gateway: GatewaySpec,
    /// Name of the Secret that holds the credential. Defaults to `<name>-credential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$')").message("must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.'"))]
    pub secret_name: Option<String>,
    /// Labels and annotations copied onto the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
    /// Whether the operator checks, after each issue, that the credential reaches the model.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub verification: VerificationSpec,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerificationSpec {
    /// After issuing or renewing, `GET <gateway>/v1/models/<name>` with the credential and the
    /// Host header, and report the answer in the `EndpointVerified` condition.
    #[serde(default = "enabled")]
    pub enabled: bool,
}

impl Default for VerificationSpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

fn enabled() -> bool {
    true
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
// `namespace` is a CEL reserved word: Kubernetes' CEL reads the field as `__namespace__`.
#[x_kube(
    validation = kube::core::Rule::new("!has(self.template) || !has(self.kind) || self.kind == 'InferenceService'").message("a template applies only to kind InferenceService: an LLMInferenceService is only read"),
    validation = kube::core::Rule::new("!has(self.template) || !has(self.__namespace__)").message("a template creates the InferenceService in the access's own namespace: drop namespace, or reference an existing InferenceService there without a template"),
    validation = kube::core::Rule::new("!has(self.__namespace__) || !has(self.kind) || self.kind == 'InferenceService'").message("only an InferenceService can be reached in another namespace")
)]
pub struct InferenceServiceRef {
    /// Name of the InferenceService (`serving.kserve.io/v1beta1`), in this namespace or in
    /// `namespace`.
    #[schemars(length(max = 63))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')").message("must be a DNS-1035 label, as KServe requires for an InferenceService name"))]
    pub name: String,
    /// The InferenceService's namespace, when it is not the access's. Its owner consents with a
    /// ReferenceGrant there (from group `inference-access.io`, kind `InferenceAccess`, this
    /// namespace; to group `serving.kserve.io`, kind `InferenceService`, this name or none);
    /// until then the access is `ConsentPending`: no token, no policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')").message("must be a namespace name (a DNS-1123 label)"))]
    pub namespace: Option<String>,
    /// What `name` names: an `InferenceService` (default; KServe v1 paths) or an
    /// `LLMInferenceService` (`serving.kserve.io/v1alpha2`; OpenAI-style paths, URL from its
    /// status). Exactly one target either way.
    #[serde(default, skip_serializing_if = "TargetKind::is_inference_service")]
    pub kind: TargetKind,
    /// When set, the operator applies this InferenceService (server-side apply) and owns it;
    /// when absent, the InferenceService must already exist and is only read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<InferenceServiceTemplate>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferenceServiceTemplate {
    /// Labels and annotations of the InferenceService.
    #[serde(default)]
    pub metadata: TemplateMetadata,
    /// The InferenceService spec, as in `kubectl apply -f sklearn.yaml`. Validated by KServe's
    /// own schema when applied.
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub spec: json_text::JsonText,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    // Key and value syntax is checked by the controller (plan.rs), not by CEL here: map keys
    // cannot be length-bounded in a structural schema, so a CEL rule over them could exceed the
    // API server's cost budget.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: BTreeMap<String, String>,
}

/// Labels and annotations for the credential Secret, as cert-manager's `secretTemplate`.
pub type SecretTemplate = TemplateMetadata;

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TargetKind {
    #[default]
    InferenceService,
    /// KServe's LLMInferenceService: read, never applied.
    #[serde(rename = "LLMInferenceService")]
    LlmInferenceService,
}

impl TargetKind {
    pub fn is_inference_service(&self) -> bool {
        *self == TargetKind::InferenceService
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthType {
    /// A ServiceAccount token from the TokenRequest API, for the gateway's audience.
    #[default]
    ServiceAccountToken,
    /// A Dex session cookie, from logging in through the gateway as a person would.
    DexSession,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.type != 'DexSession' || has(self.dexSession)").message("auth.dexSession is required when auth.type is DexSession"))]
pub struct AuthSpec {
    #[serde(default, rename = "type")]
    pub type_: AuthType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dex_session: Option<DexSessionSpec>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DexSessionSpec {
    /// A Secret in this namespace with the Dex username and password. Only read, never logged.
    pub credentials_secret: CredentialsSecretRef,
    /// The Dex connector: `local` (staticPasswords) or `ldap`.
    #[serde(default)]
    pub connector: DexConnector,
    /// Where the login starts (the Kubeflow URL). Defaults to `spec.gateway.url`.
    #[serde(default, rename = "loginURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^https?://[^/?#@ ]+([/?#][^ ]*)?$')").message("must be an http:// or https:// URL without user info or spaces"))]
    pub login_url: Option<String>,
    /// The user id the gateway sets in the user-id header for this session, which the policy
    /// admits. Defaults to the username: right for Dex staticPasswords (the email), but an LDAP
    /// login name may differ from the email Dex puts in the token.
    #[serde(default, rename = "userID", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('*') && !self.contains(' ')").message("must be one user id: no '*' (Istio reads it as a wildcard) and no spaces"))]
    pub user_id: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DexConnector {
    #[default]
    Local,
    Ldap,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.usernameKey != self.passwordKey").message("usernameKey and passwordKey must differ: the username is published in the policy, the password never"))]
pub struct CredentialsSecretRef {
    /// A Secret labelled `inference-access.io/dex-login: "true"` by someone who may edit it.
    #[schemars(length(max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$')").message("must be a DNS-1123 subdomain"))]
    pub name: String,
    #[serde(default = "default_username_key")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[-._a-zA-Z0-9]+$')").message("must be a Secret key: letters, digits, '-', '_' and '.'"))]
    pub username_key: String,
    #[serde(default = "default_password_key")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[-._a-zA-Z0-9]+$')").message("must be a Secret key: letters, digits, '-', '_' and '.'"))]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRef {
    /// An existing ServiceAccount in this namespace (Kubeflow's sample uses `default-editor`).
    /// When absent the operator creates a dedicated ServiceAccount named after this access, with
    /// no RBAC bindings: an identity for the mesh, nothing more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$')").message("must be a DNS-1123 subdomain"))]
    pub name: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
// Durations are checked for their form first, and every comparison is guarded by that check,
// so `1d` or `abc` get a message a person can act on instead of a CEL evaluation error.
#[x_kube(
    validation = kube::core::Rule::new("self.duration.matches('^([0-9]{1,5}([.][0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$')").message("duration must be a Go duration such as 30m, 1h or 1h30m (units h, m, s, ms, us, ns; no days, no sign)").field_path(".duration"),
    validation = kube::core::Rule::new("!has(self.renewBefore) || self.renewBefore.matches('^([0-9]{1,5}([.][0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$')").message("renewBefore must be a Go duration such as 10m or 1h (units h, m, s, ms, us, ns; no days, no sign)").field_path(".renewBefore"),
    validation = kube::core::Rule::new("!self.duration.matches('^([0-9]{1,5}([.][0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$') || duration(self.duration) >= duration('10m')").message("duration must be at least 10m: the API server refuses shorter tokens").field_path(".duration"),
    validation = kube::core::Rule::new("!has(self.renewBefore) || !self.renewBefore.matches('^([0-9]{1,5}([.][0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$') || !self.duration.matches('^([0-9]{1,5}([.][0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$') || duration(self.renewBefore) < duration(self.duration)").message("renewBefore must be shorter than duration").field_path(".renewBefore"),
    validation = kube::core::Rule::new("!has(self.renewBefore) || !self.renewBefore.matches('^([0-9]{1,5}([.][0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$') || duration(self.renewBefore) > duration('0s')").message("renewBefore must be positive").field_path(".renewBefore")
)]
pub struct TokenSpec {
    /// Audiences of the token. Never empty: an empty list would mint a full Kubernetes API
    /// credential.
    #[serde(default = "default_audiences")]
    #[schemars(length(min = 1, max = 8), inner(length(max = 253)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(a, size(a) > 0)").message("audiences must not be empty strings"))]
    pub audiences: Vec<String>,
    /// Requested lifetime (Go duration, e.g. `1h`). At least `10m`. The API server may shorten
    /// it; the expiry it returns is the truth.
    #[serde(default = "default_duration")]
    #[schemars(extend("default" = "1h", "maxLength" = 64))]
    pub duration: Duration,
    /// How long before expiry to renew. Defaults to a third of the token's lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxLength" = 64))]
    pub renew_before: Option<Duration>,
}

impl Default for TokenSpec {
    fn default() -> Self {
        Self {
            audiences: default_audiences(),
            duration: default_duration(),
            renew_before: None,
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MeshMode {
    /// An Istio AuthorizationPolicy lets exactly this identity through the predictor's sidecar.
    #[default]
    AuthorizationPolicy,
    /// The InferenceService gets `sidecar.istio.io/inject: "false"`: no sidecar, no policy
    /// enforcement, any caller the gateway authenticates gets through.
    DisableSidecarInjection,
    /// The operator leaves the mesh alone.
    Unmanaged,
    /// The operator looks at how the model is reached and writes the object that enforces there:
    /// a policy at the Istio Gateway of the model's HTTPRoute, on the sidecar, or attached to the
    /// model's Service for its ambient waypoint. The path and why it was chosen are in
    /// `status.meshPath` and the AccessPolicyReady message.
    Auto,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshSpec {
    #[serde(default)]
    pub mode: MeshMode,
    /// The header the gateway overwrites with the verified token's subject.
    /// Must be one the cluster admin declared that the gateway overwrites.
    #[serde(default = "default_user_id_header")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9-]+$')").message("must be a lowercase HTTP header name"))]
    pub user_id_header: String,
    /// Mesh identities allowed to forward requests to the predictor: the ingress gateway. Each
    /// must be one the cluster admin allowed.
    #[serde(default = "default_source_principals")]
    #[schemars(length(min = 1, max = 8), inner(length(min = 1, max = 253)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, !p.contains('*') && !p.contains(' '))").message("source principals must be exact mesh identities: no '*' (any identity) and no spaces"))]
    pub source_principals: Vec<String>,
    /// Paths open to any source so Knative can probe the predictor: exact paths only, never
    /// under the model APIs (`/v1`, `/v2`, `/openai`).
    #[serde(default = "default_probe_paths")]
    #[schemars(length(max = 16), inner(length(max = 256)))]
    #[x_kube(
        validation = kube::core::Rule::new("self.all(p, p.matches('^/[A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]+)*$') && !p.contains('..'))").message("probe paths must be exact paths such as /healthz: no '*', no '..', no query, no percent-encoding"),
        validation = kube::core::Rule::new("self.all(p, !(p.startsWith('/v1') || p.startsWith('/v2') || p.startsWith('/openai')))").message("probe paths must not open the model APIs (/v1, /v2, /openai) to every caller")
    )]
    pub probe_paths: Vec<String>,
}

impl Default for MeshSpec {
    fn default() -> Self {
        Self {
            mode: MeshMode::default(),
            user_id_header: default_user_id_header(),
            source_principals: default_source_principals(),
            probe_paths: default_probe_paths(),
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Base URL of the ingress gateway (scheme, host, optional port).
    #[serde(default = "default_gateway_url")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^https?://[^/?#@ ]+([/?#][^ ]*)?$')").message("must be an http:// or https:// URL without user info or spaces"))]
    pub url: String,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        Self {
            url: default_gateway_url(),
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferenceAccessStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The InferenceService's `status.url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Host header to send to the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// When the current token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expiration_time: Option<Time>,
    /// When the operator will renew the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// The last `inference-access renew` request the credential was renewed for (the
    /// annotation's value), so `renew --wait` knows when its request was served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_renew_request: Option<String>,
    /// DexSession: logins Dex refused in a row. At three the operator stops trying (no account
    /// lockout by the operator) until the spec or the credentials Secret changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::count_schema")]
    pub login_refusals: Option<u32>,
    /// The credentials Secret's resourceVersion those refusals were for. (Scalars rather than
    /// an object: server-side apply leaves an emptied object behind when it is dropped.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_refused_secret_version: Option<String>,
    /// mesh.mode Auto: the path the operator found the model is reached by (`Gateway`,
    /// `Sidecar`, `Waypoint`, `Ambient` without a waypoint, or `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The Deployments and StatefulSets in the namespace whose Pods read the Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
}

/// A workload that reads the access's Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Consumer {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    pub name: String,
    /// How its Pods read the Secret: `env`, `envFrom`, `volume`, `projected`.
    pub via: Vec<String>,
    /// Its Pods are restarted after each renewal: it reads the Secret through env and its
    /// annotation `inference-access.io/restart-on-renewal` names this access (or is `true`).
    #[serde(default)]
    pub restart_on_renewal: bool,
    /// With `restartOnRenewal`: the issue time of the credential its Pods started with, as
    /// the operator recorded it (at first sight, then with each restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_with: Option<Time>,
}

fn default_audiences() -> Vec<String> {
    vec![DEFAULT_AUDIENCE.to_owned()]
}

fn default_duration() -> Duration {
    std::time::Duration::from_secs(3600).into()
}

fn default_user_id_header() -> String {
    DEFAULT_USER_ID_HEADER.to_owned()
}

fn default_source_principals() -> Vec<String> {
    vec![DEFAULT_GATEWAY_PRINCIPAL.to_owned()]
}

fn default_probe_paths() -> Vec<String> {
    DEFAULT_PROBE_PATHS
        .iter()
        .map(|p| (*p).to_owned())
        .collect()
}

fn default_gateway_url() -> String {
    DEFAULT_GATEWAY_URL.to_owned()
}

#[cfg(test)]
mod tests;
