//! Istio AuthorizationPolicy evaluation at each enforcement point, as pure functions.
//!
//! Semantics follow Istio's reference (security.istio.io/v1) and istiod's translation for ztunnel:
//! - Attachment: `targetRef(s)` bind a policy to a Gateway API gateway (kind Gateway in the
//!   policy's namespace, or GatewayClass from the root namespace) or to a waypoint (its Gateway, a
//!   Service it serves, or GatewayClass `istio-waypoint` from the root namespace); sidecars and
//!   ztunnel ignore such policies. Without targetRefs a policy binds the workloads of its namespace
//!   (all namespaces from the root namespace) that its `selector` matches; waypoints ignore it.
//! - Order at Envoy (gateway, waypoint, sidecar): CUSTOM, then DENY, then ALLOW. ALLOW policies are
//!   OR-ed; when any ALLOW policy binds the proxy and none matches, the request is denied.
//! - Inside a policy, rules are OR-ed; inside a rule, `from`, `to` and `when` are AND-ed; entries
//!   of one `from`/`to` list are OR-ed; fields of one source/operation are AND-ed; values of one
//!   field are OR-ed and `not*` values must all miss. An empty rule list matches nothing, an empty
//!   rule matches everything.
//! - ztunnel (ambient, no waypoint) sees L4 only. istiod drops every ALLOW rule that names an HTTP
//!   attribute (hosts, methods, paths, requestPrincipals, remoteIpBlocks, or a `when` key other
//!   than source.ip/source.namespace/source.principal/destination.ip/destination.port), so an
//!   ALLOW policy left without rules denies everything; in a DENY rule it drops only the HTTP
//!   parts, so the rule matches more. CUSTOM and AUDIT policies are not sent to ztunnel.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Istio's root namespace: its policies apply to workloads in every namespace.
pub const ROOT_NAMESPACE: &str = "istio-system";
/// The Gateway API group (targetRefs to Gateways and GatewayClasses).
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The GatewayClass of Istio's waypoint proxies.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";

/// One stored AuthorizationPolicy: where it lives and its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPolicy {
    pub namespace: String,
    pub name: String,
    pub spec: PolicySpec,
}

impl StoredPolicy {
    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    #[serde(flatten)]
    pub attachment: Attachment,
    #[serde(default)]
    pub action: Action,
    /// The ext_authz provider of a CUSTOM policy.
    #[serde(default)]
    pub provider: Option<Provider>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// How a policy (AuthorizationPolicy or RequestAuthentication) picks its proxies.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<TargetRef>,
    #[serde(default)]
    pub target_refs: Vec<TargetRef>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

impl TargetRef {
    fn is(&self, group: &str, kind: &str) -> bool {
        let group_matches = match group {
            "" => self.group.is_empty() || self.group == "core",
            g => self.group == g,
        };
        group_matches && self.kind == kind
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Provider {
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Rule {
    #[serde(default)]
    pub from: Vec<From>,
    #[serde(default)]
    pub to: Vec<To>,
    #[serde(default)]
    pub when: Vec<Condition>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct From {
    #[serde(default)]
    pub source: Source,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct To {
    #[serde(default)]
    pub operation: Operation,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub not_ports: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}

/// A workload (pod) a proxy stands in front of.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// A namespaced object by name (Gateway, Service).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: &str, name: &str) -> ObjectRef {
        ObjectRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a policy is enforced.
#[derive(Clone, Copy, Debug)]
pub enum Enforcer<'a> {
    /// The Envoy sidecar injected into `workload`.
    Sidecar(&'a Workload),
    /// The destination ztunnel of an ambient `workload` (L4 only).
    Ztunnel(&'a Workload),
    /// A waypoint proxy, handling traffic addressed to `service`.
    Waypoint {
        waypoint: &'a ObjectRef,
        service: Option<&'a ObjectRef>,
    },
    /// A Gateway API gateway of class `class`, running as `workload` (its pods).
    Gateway {
        gateway: &'a ObjectRef,
        class: &'a str,
        workload: &'a Workload,
    },
}

impl Attachment {
    /// Whether a policy stored in `namespace` with this attachment binds `enforcer`.
    pub fn binds(&self, namespace: &str, enforcer: &Enforcer) -> bool {
        let refs: Vec<&TargetRef> = self.target_ref.iter().chain(&self.target_refs).collect();
        if !refs.is_empty() {
            // Istio's CEL rules keep targetRefs in the policy's own namespace.
            return refs
                .iter()
                .filter(|r| r.namespace.as_deref().is_none_or(|n| n == namespace))
                .any(|r| target_matches(r, namespace, enforcer));
        }
        let workload = match enforcer {
            Enforcer::Waypoint { .. } => return false,
            Enforcer::Sidecar(w) | Enforcer::Ztunnel(w) => *w,
            Enforcer::Gateway { workload, .. } => *workload,
        };
        (namespace == workload.namespace || namespace == ROOT_NAMESPACE)
            && self.selector.as_ref().is_none_or(|s| {
                s.match_labels
                    .iter()
                    .all(|(k, v)| workload.labels.get(k) == Some(v))
            })
    }
}

fn target_matches(r: &TargetRef, namespace: &str, enforcer: &Enforcer) -> bool {
    match enforcer {
        Enforcer::Sidecar(_) | Enforcer::Ztunnel(_) => false,
        Enforcer::Waypoint { waypoint, service } => {
            (r.is(GATEWAY_GROUP, "Gateway")
                && r.name == waypoint.name
                && namespace == waypoint.namespace)
                || (r.is("", "Service")
                    && service.is_some_and(|s| s.name == r.name && s.namespace == namespace))
                || (r.is(GATEWAY_GROUP, "GatewayClass")
                    && r.name == WAYPOINT_CLASS
                    && namespace == ROOT_NAMESPACE)
        }
        Enforcer::Gateway { gateway, class, .. } => {
            (r.is(GATEWAY_GROUP, "Gateway")
                && r.name == gateway.name
                && namespace == gateway.namespace)
                || (r.is(GATEWAY_GROUP, "GatewayClass")
                    && r.name == *class
                    && namespace == ROOT_NAMESPACE)
        }
    }
}

/// What the enforcing proxy knows about a request.
#[derive(Clone, Debug, Default)]
pub struct RequestAttributes {
    /// mTLS peer identity (`cluster.local/ns/<ns>/sa/<sa>`); None for plaintext.
    pub source_principal: Option<String>,
    /// JWT principal (`iss/sub`), set where a RequestAuthentication verified a token.
    pub request_principal: Option<String>,
    /// The verified token's claims (`request.auth.claims[...]`, `.audiences`, `.presenter`).
    pub claims: Option<serde_json::Value>,
    pub host: String,
    pub port: u16,
    pub method: String,
    /// Path without the query string, as Istio matches it.
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// `policy` names the matching DENY policy, or is None when no ALLOW policy matched.
    Denied {
        policy: Option<String>,
    },
}

/// A CUSTOM policy whose rules matched: its provider decides next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomMatch {
    pub policy: String,
    pub provider: String,
}

/// The CUSTOM policies binding `enforcer` that match `request`, in stored order (none at ztunnel).
pub fn custom_matches(
    policies: &[StoredPolicy],
    enforcer: &Enforcer,
    request: &RequestAttributes,
) -> Vec<CustomMatch> {
    if matches!(enforcer, Enforcer::Ztunnel(_)) {
        return Vec::new();
    }
    policies
        .iter()
        .filter(|p| {
            p.spec.action == Action::Custom && p.spec.attachment.binds(&p.namespace, enforcer)
        })
        .filter(|p| policy_matches(p, request, Mode::Envoy))
        .map(|p| CustomMatch {
            policy: p.id(),
            provider: p.spec.provider.clone().unwrap_or_default().name,
        })
        .collect()
}

/// The DENY/ALLOW decision for `request` at `enforcer` given every stored policy.
pub fn evaluate(
    policies: &[StoredPolicy],
    enforcer: &Enforcer,
    request: &RequestAttributes,
) -> Decision {
    let ztunnel = matches!(enforcer, Enforcer::Ztunnel(_));
    let applicable: Vec<&StoredPolicy> = policies
        .iter()
        .filter(|p| p.spec.attachment.binds(&p.namespace, enforcer))
        .collect();
    let mode = |action| {
        if ztunnel {
            Mode::Ztunnel(action)
        } else {
            Mode::Envoy
        }
    };
    if let Some(deny) = applicable
        .iter()
        .find(|p| p.spec.action == Action::Deny && policy_matches(p, request, mode(Action::Deny)))
    {
        return Decision::Denied {
            policy: Some(deny.id()),
        };
    }
    let mut allows = applicable
        .iter()
        .filter(|p| p.spec.action == Action::Allow)
        .peekable();
    if allows.peek().is_none() {
        return Decision::Allowed;
    }
    if allows.any(|p| policy_matches(p, request, mode(Action::Allow))) {
        Decision::Allowed
    } else {
        Decision::Denied { policy: None }
    }
}

/// Who evaluates the rules: an Envoy (full L7) or ztunnel (istiod's L4 translation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Envoy,
    Ztunnel(Action),
}

fn policy_matches(policy: &StoredPolicy, request: &RequestAttributes, mode: Mode) -> bool {
    policy
        .spec
        .rules
        .iter()
        .any(|rule| rule_matches(rule, &policy.namespace, request, mode))
}

fn rule_matches(rule: &Rule, namespace: &str, request: &RequestAttributes, mode: Mode) -> bool {
    if mode == Mode::Ztunnel(Action::Allow) && rule_has_http(rule) {
        return false;
    }
    (rule.from.is_empty()
        || rule
            .from
            .iter()
            .any(|f| source_matches(&f.source, namespace, request, mode)))
        && (rule.to.is_empty()
            || rule
                .to
                .iter()
                .any(|t| operation_matches(&t.operation, request, mode)))
        && rule
            .when
            .iter()
            .all(|c| condition_matches(c, request, mode))
}

/// The `when` keys ztunnel understands.
const L4_KEYS: [&str; 5] = [
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

/// Whether a rule names an attribute only an HTTP proxy sees (istiod's list for ztunnel).
pub fn rule_has_http(rule: &Rule) -> bool {
    let op = |o: &Operation| {
        [
            &o.hosts,
            &o.not_hosts,
            &o.methods,
            &o.not_methods,
            &o.paths,
            &o.not_paths,
        ]
        .iter()
        .any(|v| !v.is_empty())
    };
    let source = |s: &Source| {
        [
            &s.request_principals,
            &s.not_request_principals,
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
        ]
        .iter()
        .any(|v| !v.is_empty())
    };
    rule.to.iter().any(|t| op(&t.operation))
        || rule.from.iter().any(|f| source(&f.source))
        || rule.when.iter().any(|c| !L4_KEYS.contains(&c.key.as_str()))
}

fn source_matches(
    source: &Source,
    namespace: &str,
    request: &RequestAttributes,
    mode: Mode,
) -> bool {
    let principal = request.source_principal.as_deref();
    let peer_namespace = principal.and_then(principal_namespace);
    let service_account = principal.and_then(principal_service_account);
    // A bare serviceAccounts entry names one in the policy's namespace.
    let sa_matches = |pattern: &str, value: &str| match pattern.contains('/') {
        true => pattern == value,
        false => format!("{namespace}/{pattern}") == value,
    };
    let l4 = field(&source.principals, &source.not_principals, principal, string_matches)
        && field(&source.namespaces, &source.not_namespaces, peer_namespace, string_matches)
        && field(
            &source.service_accounts,
            &source.not_service_accounts,
            service_account.as_deref(),
            sa_matches,
        )
        // The double knows no peer addresses: an IP condition never holds.
        && field(&source.ip_blocks, &source.not_ip_blocks, None, string_matches);
    if mode == Mode::Ztunnel(Action::Deny) {
        // ztunnel drops the HTTP fields of a DENY rule, so they match anything.
        return l4;
    }
    l4 && field(
        &source.request_principals,
        &source.not_request_principals,
        request.request_principal.as_deref(),
        string_matches,
    ) && field(
        &source.remote_ip_blocks,
        &source.not_remote_ip_blocks,
        None,
        string_matches,
    )
}

fn operation_matches(operation: &Operation, request: &RequestAttributes, mode: Mode) -> bool {
    let port = request.port.to_string();
    let l4 = field(
        &operation.ports,
        &operation.not_ports,
        Some(&port),
        |p, v| p == v,
    );
    if mode == Mode::Ztunnel(Action::Deny) {
        return l4;
    }
    l4 && field(
        &operation.hosts,
        &operation.not_hosts,
        Some(&request.host),
        |p, v| string_matches(&p.to_ascii_lowercase(), &v.to_ascii_lowercase()),
    ) && field(
        &operation.methods,
        &operation.not_methods,
        Some(&request.method),
        string_matches,
    ) && field(
        &operation.paths,
        &operation.not_paths,
        Some(&request.path),
        string_matches,
    )
}

fn condition_matches(condition: &Condition, request: &RequestAttributes, mode: Mode) -> bool {
    if mode == Mode::Ztunnel(Action::Deny) && !L4_KEYS.contains(&condition.key.as_str()) {
        return true;
    }
    let values = condition_values(&condition.key, request);
    let any = |patterns: &[String]| {
        values
            .iter()
            .any(|v| patterns.iter().any(|p| string_matches(p, v)))
    };
    (condition.values.is_empty() || any(&condition.values))
        && (condition.not_values.is_empty() || !any(&condition.not_values))
}

/// The attribute values a `when` key names; empty when the attribute is absent or unknown.
fn condition_values(key: &str, request: &RequestAttributes) -> Vec<String> {
    if let Some(name) = bracketed(key, "request.headers") {
        return request
            .headers
            .get(&name.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
    }
    if let Some(path) = key.strip_prefix("request.auth.claims") {
        return claim_path(path)
            .and_then(|path| claim_strings(request.claims.as_ref()?, &path))
            .unwrap_or_default();
    }
    let principal = request.source_principal.as_deref();
    let claims = request.claims.as_ref();
    match key {
        "source.principal" => principal.map(str::to_owned).into_iter().collect(),
        "source.namespace" => principal
            .and_then(principal_namespace)
            .map(str::to_owned)
            .into_iter()
            .collect(),
        "request.auth.principal" => request.request_principal.clone().into_iter().collect(),
        "request.auth.audiences" => claims
            .and_then(|c| claim_strings(c, &["aud"]))
            .unwrap_or_default(),
        "request.auth.presenter" => claims
            .and_then(|c| claim_strings(c, &["azp"]))
            .unwrap_or_default(),
        "destination.port" => vec![request.port.to_string()],
        // IPs, SNI and experimental keys: unknown to the double.
        _ => Vec::new(),
    }
}

/// `prefix[name]` → `name`.
fn bracketed<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    key.strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')
}

/// `[a][b]` → `["a", "b"]`.
fn claim_path(rest: &str) -> Option<Vec<&str>> {
    let inner = rest.strip_prefix('[')?.strip_suffix(']')?;
    Some(inner.split("][").collect())
}

/// A claim's values: a string, or the strings of a list (what Istio matches claims against).
pub fn claim_strings(claims: &serde_json::Value, path: &[&str]) -> Option<Vec<String>> {
    let mut value = claims;
    for part in path {
        value = value.get(part)?;
    }
    match value {
        serde_json::Value::String(s) => Some(vec![s.clone()]),
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

/// One field of a source/operation: unset fields match; set values are OR-ed; `not` values must
/// all miss. An absent attribute matches no value (so a `not` list alone holds).
fn field(
    values: &[String],
    not_values: &[String],
    attribute: Option<&str>,
    matches: impl Fn(&str, &str) -> bool,
) -> bool {
    let hit =
        |patterns: &[String]| attribute.is_some_and(|a| patterns.iter().any(|p| matches(p, a)));
    (values.is_empty() || hit(values)) && (not_values.is_empty() || !hit(not_values))
}

/// Istio string match: `*` alone matches any non-empty value, `x*` prefix, `*x` suffix, else exact.
pub fn string_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return !value.is_empty();
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    pattern == value
}

/// The SPIFFE-style principal of a ServiceAccount (`cluster.local/ns/<ns>/sa/<sa>`).
pub fn principal(namespace: &str, service_account: &str) -> String {
    format!("cluster.local/ns/{namespace}/sa/{service_account}")
}

/// `cluster.local/ns/<ns>/sa/<sa>` → `<ns>`.
fn principal_namespace(principal: &str) -> Option<&str> {
    let mut parts = principal.split('/');
    let (_trust_domain, ns_key, ns) = (parts.next()?, parts.next()?, parts.next()?);
    (ns_key == "ns").then_some(ns)
}

/// `cluster.local/ns/<ns>/sa/<sa>` → `<ns>/<sa>` (the serviceAccounts field's form).
fn principal_service_account(principal: &str) -> Option<String> {
    let parts: Vec<&str> = principal.split('/').collect();
    match parts.as_slice() {
        [_, "ns", ns, "sa", sa] => Some(format!("{ns}/{sa}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GATEWAY: &str = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
    const WAYPOINT: &str = "cluster.local/ns/kubeflow-user-example-com/sa/waypoint";
    const NS: &str = "kubeflow-user-example-com";
    const HOST: &str = "sklearn-iris-kubeflow-user-example-com.example.com";
    const OWNER_SA: &str = "system:serviceaccount:kubeflow-user-example-com:default-editor";
    const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

    fn policy(namespace: &str, spec: serde_json::Value) -> StoredPolicy {
        StoredPolicy {
            namespace: namespace.into(),
            name: "p".into(),
            spec: serde_json::from_value(spec).unwrap(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn predictor() -> Workload {
        Workload {
            namespace: NS.into(),
            labels: labels(&[
                ("serving.kserve.io/inferenceservice", "sklearn-iris"),
                ("component", "predictor"),
            ]),
        }
    }

    fn request(userid: &str) -> RequestAttributes {
        RequestAttributes {
            source_principal: Some(GATEWAY.into()),
            request_principal: None,
            claims: None,
            host: "sklearn-iris.kubeflow-user-example-com.example.com".into(),
            port: 8080,
            method: "POST".into(),
            path: "/v1/models/sklearn-iris:predict".into(),
            headers: [("kubeflow-userid".to_owned(), vec![userid.to_owned()])].into(),
        }
    }

    /// A request as a gateway sees it after verifying the ServiceAccount token `sub`.
    fn authenticated(sub: &str) -> RequestAttributes {
        RequestAttributes {
            source_principal: None,
            request_principal: Some(format!("{ISSUER}/{sub}")),
            claims: Some(
                json!({"iss": ISSUER, "sub": sub, "aud": ["models"], "groups": ["team-a", "admins"], "kubernetes.io": {"namespace": NS}}),
            ),
            host: HOST.into(),
            port: 80,
            method: "POST".into(),
            path: "/v1/models/sklearn-iris:predict".into(),
            headers: [("kubeflow-userid".to_owned(), vec![sub.to_owned()])].into(),
        }
    }

    fn evaluate_sidecar(policies: &[StoredPolicy], request: &RequestAttributes) -> Decision {
        evaluate(policies, &Enforcer::Sidecar(&predictor()), request)
    }

    /// The policy the operator is expected to write: gateway principal AND the userid header.
    fn access_policy(user: &str) -> serde_json::Value {
        json!({
            "selector": {"matchLabels": {"serving.kserve.io/inferenceservice": "sklearn-iris"}},
            "action": "ALLOW",
            "rules": [{
                "from": [{"source": {"principals": [GATEWAY]}}],
                "when": [{"key": "request.headers[kubeflow-userid]", "values": [user]}]
            }]
        })
    }

    /// Kubeflow's profile controller's `ns-owner-access-istio` for `owner`.
    fn ns_owner_access(owner: &str) -> serde_json::Value {
        json!({"rules": [
            {"from": [{"source": {"principals": [GATEWAY, "cluster.local/ns/kubeflow/sa/ml-pipeline-ui"]}}],
             "when": [{"key": "request.headers[kubeflow-userid]", "values": [owner]}]},
            {"when": [{"key": "source.namespace", "values": [NS]}]},
            {"to": [{"operation": {"paths": ["/healthz", "/metrics", "/wait-for-drain"]}}]},
            {"from": [{"source": {"principals": ["cluster.local/ns/kubeflow/sa/notebook-controller-service-account"]}}],
             "to": [{"operation": {"methods": ["GET"], "paths": ["*/api/kernels"]}}]}
        ]})
    }

    fn deny_all() -> StoredPolicy {
        policy(ROOT_NAMESPACE, json!({}))
    }

    #[test]
    fn sidecar_table() {
        use Decision::*;
        let denied = Denied { policy: None };
        let cases: Vec<(&str, Vec<StoredPolicy>, RequestAttributes, Decision)> = vec![
            (
                "no policy at all allows",
                vec![],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "mesh-wide deny-all denies",
                vec![deny_all()],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "ALLOW with empty rules matches nothing",
                vec![policy(NS, json!({"action": "ALLOW", "rules": []}))],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "ALLOW with an empty rule matches everything",
                vec![deny_all(), policy(NS, json!({"rules": [{}]}))],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "access policy allows its user through the gateway",
                vec![deny_all(), policy(NS, access_policy(OWNER_SA))],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "access policy denies another user",
                vec![deny_all(), policy(NS, access_policy(OWNER_SA))],
                request("system:serviceaccount:other:default"),
                denied.clone(),
            ),
            (
                "access policy denies a caller that bypasses the gateway (fields ANDed)",
                vec![deny_all(), policy(NS, access_policy(OWNER_SA))],
                RequestAttributes {
                    source_principal: Some("cluster.local/ns/other/sa/default".into()),
                    ..request(OWNER_SA)
                },
                denied.clone(),
            ),
            (
                "access policy in another namespace does not apply",
                vec![deny_all(), policy("elsewhere", access_policy(OWNER_SA))],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "access policy selecting another model does not apply",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({
                            "selector": {"matchLabels": {"serving.kserve.io/inferenceservice": "other"}},
                            "rules": [{}]
                        }),
                    ),
                ],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "ALLOW policies are ORed",
                vec![
                    deny_all(),
                    policy(NS, access_policy("someone-else")),
                    policy(NS, access_policy(OWNER_SA)),
                ],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "Kubeflow's ns-owner-access-istio never matches a ServiceAccount sub",
                vec![deny_all(), policy(NS, ns_owner_access("user@example.com"))],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "Kubeflow's ns-owner-access-istio admits the owner's session through the gateway",
                vec![deny_all(), policy(NS, ns_owner_access("user@example.com"))],
                request("user@example.com"),
                Allowed,
            ),
            (
                "ns-owner-access-istio admits callers from the namespace itself",
                vec![deny_all(), policy(NS, ns_owner_access("user@example.com"))],
                RequestAttributes {
                    source_principal: Some(format!("cluster.local/ns/{NS}/sa/default-editor")),
                    ..request("")
                },
                Allowed,
            ),
            (
                "DENY wins over ALLOW",
                vec![
                    policy(NS, json!({"rules": [{}]})),
                    policy(
                        NS,
                        json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}),
                    ),
                ],
                request(OWNER_SA),
                Denied {
                    policy: Some(format!("{NS}/p")),
                },
            ),
            (
                "DENY with empty rules matches nothing",
                vec![policy(NS, json!({"action": "DENY"}))],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "path prefix match",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"to": [{"operation": {"paths": ["/v1/models/*"]}}]}]}),
                    ),
                ],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "path suffix match",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"to": [{"operation": {"paths": ["*:predict"]}}]}]}),
                    ),
                ],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "exact path mismatch",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"to": [{"operation": {"paths": ["/v2/models/sklearn-iris/infer"]}}]}]}),
                    ),
                ],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "notPaths excludes",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"to": [{"operation": {"notPaths": ["/v1/*"]}}]}]}),
                    ),
                ],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "method and path ANDed within an operation",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"to": [{"operation": {"methods": ["GET"], "paths": ["/v1/*"]}}]}]}),
                    ),
                ],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "source namespaces from the mTLS principal",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"from": [{"source": {"namespaces": ["istio-system"]}}]}]}),
                    ),
                ],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "serviceAccounts in ns/name form",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"from": [{"source": {"serviceAccounts": ["istio-system/istio-ingressgateway-service-account"]}}]}]}),
                    ),
                ],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "a bare serviceAccounts entry is in the policy's namespace",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"from": [{"source": {"serviceAccounts": ["istio-ingressgateway-service-account"]}}]}]}),
                    ),
                ],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "requestPrincipals never match without a RequestAuthentication",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}),
                    ),
                ],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "principal wildcard requires a principal",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"from": [{"source": {"principals": ["*"]}}]}]}),
                    ),
                ],
                RequestAttributes {
                    source_principal: None,
                    ..request(OWNER_SA)
                },
                denied.clone(),
            ),
            (
                "when notValues excludes",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"when": [{"key": "request.headers[kubeflow-userid]", "notValues": ["system:serviceaccount:*"]}]}]}),
                    ),
                ],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "when header prefix value",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"when": [{"key": "request.headers[Kubeflow-Userid]", "values": ["system:serviceaccount:kubeflow-user-example-com:*"]}]}]}),
                    ),
                ],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "when on an absent header does not match",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"when": [{"key": "request.headers[x-missing]", "values": ["*"]}]}]}),
                    ),
                ],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "from entries ORed",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"from": [
                            {"source": {"principals": ["cluster.local/ns/x/sa/y"]}},
                            {"source": {"principals": [GATEWAY]}}
                        ]}]}),
                    ),
                ],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "targetRefs policies do not bind sidecars",
                vec![policy(
                    NS,
                    json!({"targetRefs": [{"group": GATEWAY_GROUP, "kind": "Gateway", "name": "g"}], "rules": []}),
                )],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "the deprecated targetRef does not bind sidecars either",
                vec![policy(
                    NS,
                    json!({"targetRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "name": "g"}, "rules": []}),
                )],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "AUDIT and CUSTOM do not decide",
                vec![
                    policy(NS, json!({"action": "AUDIT", "rules": [{}]})),
                    policy(
                        NS,
                        json!({"action": "CUSTOM", "provider": {"name": "x"}, "rules": [{}]}),
                    ),
                ],
                request(OWNER_SA),
                Allowed,
            ),
        ];
        for (name, policies, request, want) in cases {
            assert_eq!(evaluate_sidecar(&policies, &request), want, "{name}");
        }
    }

    #[test]
    fn ztunnel_table() {
        // ztunnel in front of the same predictor, ambient and without a waypoint.
        use Decision::*;
        let denied = Denied { policy: None };
        let workload = predictor();
        let at_ztunnel = |policies: &[StoredPolicy], request: &RequestAttributes| {
            evaluate(policies, &Enforcer::Ztunnel(&workload), request)
        };
        let from_gateway = request(OWNER_SA);
        let l4_allow = |principal: &str| {
            json!({"selector": {"matchLabels": {"component": "predictor"}},
                   "rules": [{"from": [{"source": {"principals": [principal]}}]}]})
        };
        let cases: Vec<(&str, Vec<StoredPolicy>, RequestAttributes, Decision)> = vec![
            ("no policy allows", vec![], from_gateway.clone(), Allowed),
            (
                "L4 ALLOW on the caller's principal allows",
                vec![policy(NS, l4_allow(GATEWAY))],
                from_gateway.clone(),
                Allowed,
            ),
            (
                "L4 ALLOW on another principal denies",
                vec![policy(NS, l4_allow(WAYPOINT))],
                from_gateway.clone(),
                denied.clone(),
            ),
            (
                "the operator's sidecar policy (header condition) denies everyone, its user too",
                vec![policy(NS, access_policy(OWNER_SA))],
                from_gateway.clone(),
                denied.clone(),
            ),
            (
                "an ALLOW rule with a path is dropped, an L4 rule beside it still allows",
                vec![policy(
                    NS,
                    json!({"rules": [
                        {"to": [{"operation": {"paths": ["/v1/*"]}}]},
                        {"from": [{"source": {"namespaces": ["istio-system"]}}]}
                    ]}),
                )],
                from_gateway.clone(),
                Allowed,
            ),
            (
                "requestPrincipals are HTTP: the rule is dropped",
                vec![policy(
                    NS,
                    json!({"rules": [{"from": [{"source": {"requestPrincipals": ["*"], "principals": [GATEWAY]}}]}]}),
                )],
                from_gateway.clone(),
                denied.clone(),
            ),
            (
                "L4 when keys stay: source.namespace",
                vec![policy(
                    NS,
                    json!({"rules": [{"when": [{"key": "source.namespace", "values": ["istio-system"]}]}]}),
                )],
                from_gateway.clone(),
                Allowed,
            ),
            (
                "ports are L4 (the predictor's 8080)",
                vec![policy(
                    NS,
                    json!({"rules": [{"to": [{"operation": {"ports": ["8080"]}}]}]}),
                )],
                from_gateway.clone(),
                Allowed,
            ),
            (
                "a DENY with a method drops the method: denies every request",
                vec![policy(
                    NS,
                    json!({"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
                )],
                from_gateway.clone(),
                Denied {
                    policy: Some(format!("{NS}/p")),
                },
            ),
            (
                "a DENY keeps its L4 part: other principals are not denied",
                vec![policy(
                    NS,
                    json!({"action": "DENY", "rules": [{"from": [{"source": {"principals": [WAYPOINT]}}],
                                                      "when": [{"key": "request.headers[x]", "values": ["y"]}]}]}),
                )],
                from_gateway.clone(),
                Allowed,
            ),
            (
                "Kubeflow's deny-all applies",
                vec![deny_all()],
                from_gateway.clone(),
                denied.clone(),
            ),
            (
                "ns-owner-access-istio keeps only its same-namespace rule",
                vec![deny_all(), policy(NS, ns_owner_access("user@example.com"))],
                request("user@example.com"),
                denied.clone(),
            ),
            (
                "targetRefs policies are the waypoint's, not ztunnel's",
                vec![policy(
                    NS,
                    json!({"targetRefs": [{"kind": "Service", "group": "", "name": "sklearn-iris-predictor"}], "rules": []}),
                )],
                from_gateway.clone(),
                Allowed,
            ),
            (
                "CUSTOM is not sent to ztunnel",
                vec![policy(
                    NS,
                    json!({"action": "CUSTOM", "provider": {"name": "oauth2-proxy"}, "rules": [{}]}),
                )],
                from_gateway.clone(),
                Allowed,
            ),
        ];
        for (name, policies, request, want) in cases {
            assert_eq!(at_ztunnel(&policies, &request), want, "{name}");
        }
    }

    #[test]
    fn waypoint_table() {
        use Decision::*;
        let denied = Denied { policy: None };
        let waypoint = ObjectRef::new(NS, "waypoint");
        let service = ObjectRef::new(NS, "sklearn-iris-predictor");
        let at_waypoint = |policies: &[StoredPolicy], request: &RequestAttributes| {
            evaluate(
                policies,
                &Enforcer::Waypoint {
                    waypoint: &waypoint,
                    service: Some(&service),
                },
                request,
            )
        };
        let service_policy = |user: &str| {
            json!({"targetRefs": [{"kind": "Service", "group": "", "name": "sklearn-iris-predictor"}],
                   "rules": [{"from": [{"source": {"principals": [GATEWAY]}}],
                              "when": [{"key": "request.headers[kubeflow-userid]", "values": [user]}]}]})
        };
        let cases: Vec<(&str, Vec<StoredPolicy>, RequestAttributes, Decision)> = vec![
            ("no policy allows", vec![], request(OWNER_SA), Allowed),
            (
                "targetRefs Service: its user passes (full L7)",
                vec![policy(NS, service_policy(OWNER_SA))],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "targetRefs Service: another user is denied",
                vec![policy(NS, service_policy(OWNER_SA))],
                request("system:serviceaccount:other:default"),
                denied.clone(),
            ),
            (
                "a Service policy in another namespace does not bind",
                vec![policy("elsewhere", service_policy(OWNER_SA))],
                request("system:serviceaccount:other:default"),
                Allowed,
            ),
            (
                "a policy for another Service does not bind",
                vec![policy(
                    NS,
                    json!({"targetRefs": [{"kind": "Service", "group": "", "name": "other"}], "rules": []}),
                )],
                request(OWNER_SA),
                Allowed,
            ),
            (
                "targetRefs to the waypoint Gateway bind",
                vec![policy(
                    NS,
                    json!({"targetRefs": [{"kind": "Gateway", "group": GATEWAY_GROUP, "name": "waypoint"}], "rules": []}),
                )],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "GatewayClass istio-waypoint from the root namespace binds",
                vec![policy(
                    ROOT_NAMESPACE,
                    json!({"targetRefs": [{"kind": "GatewayClass", "group": GATEWAY_GROUP, "name": WAYPOINT_CLASS}], "rules": []}),
                )],
                request(OWNER_SA),
                denied.clone(),
            ),
            (
                "selector and namespace policies are ztunnel's, not the waypoint's",
                vec![deny_all(), policy(NS, json!({"rules": []}))],
                request(OWNER_SA),
                Allowed,
            ),
        ];
        for (name, policies, request, want) in cases {
            assert_eq!(at_waypoint(&policies, &request), want, "{name}");
        }
    }

    #[test]
    fn gateway_table() {
        // KServe's shared Gateway: policies attach with targetRefs, in the Gateway's namespace.
        use Decision::*;
        let denied = Denied { policy: None };
        let gateway = ObjectRef::new("kserve", "kserve-ingress-gateway");
        let workload = Workload {
            namespace: "kserve".into(),
            labels: labels(&[(
                "gateway.networking.k8s.io/gateway-name",
                "kserve-ingress-gateway",
            )]),
        };
        let at_gateway = |policies: &[StoredPolicy], request: &RequestAttributes| {
            evaluate(
                policies,
                &Enforcer::Gateway {
                    gateway: &gateway,
                    class: "istio",
                    workload: &workload,
                },
                request,
            )
        };
        let target =
            json!([{"group": GATEWAY_GROUP, "kind": "Gateway", "name": "kserve-ingress-gateway"}]);
        let grant = |host: &str, sub: &str| {
            json!({"targetRefs": target, "action": "ALLOW", "rules": [{
                "from": [{"source": {"requestPrincipals": [format!("{ISSUER}/{sub}")]}}],
                "to": [{"operation": {"hosts": [host], "paths": ["/v1/models/*", "/v2/models/*"]}}]
            }]})
        };
        let other_host = RequestAttributes {
            host: "other-kubeflow-user-example-com.example.com".into(),
            ..authenticated(OWNER_SA)
        };
        let cases: Vec<(&str, Vec<StoredPolicy>, RequestAttributes, Decision)> = vec![
            ("no policy allows", vec![], authenticated(OWNER_SA), Allowed),
            (
                "the grant admits its caller on its host",
                vec![policy("kserve", grant(HOST, OWNER_SA))],
                authenticated(OWNER_SA),
                Allowed,
            ),
            (
                "the grant refuses another caller",
                vec![policy("kserve", grant(HOST, OWNER_SA))],
                authenticated("system:serviceaccount:other:default"),
                denied.clone(),
            ),
            (
                "an ALLOW at a shared gateway denies every other host",
                vec![policy("kserve", grant(HOST, OWNER_SA))],
                other_host.clone(),
                denied.clone(),
            ),
            (
                "a DENY scoped to the host leaves other hosts alone",
                vec![policy(
                    "kserve",
                    json!({"targetRefs": target, "action": "DENY", "rules": [{
                        "from": [{"source": {"notRequestPrincipals": [format!("{ISSUER}/{OWNER_SA}")]}}],
                        "to": [{"operation": {"hosts": [HOST]}}]
                    }]}),
                )],
                other_host,
                Allowed,
            ),
            (
                "host match ignores case",
                vec![policy("kserve", grant(&HOST.to_uppercase(), OWNER_SA))],
                authenticated(OWNER_SA),
                Allowed,
            ),
            (
                "a grant in another namespace does not bind (no cross-namespace targetRef)",
                vec![policy(NS, grant(HOST, OWNER_SA))],
                authenticated("system:serviceaccount:other:default"),
                Allowed,
            ),
            (
                "a policy for another Gateway does not bind",
                vec![policy(
                    "kserve",
                    json!({"targetRefs": [{"group": GATEWAY_GROUP, "kind": "Gateway", "name": "other"}], "rules": []}),
                )],
                authenticated(OWNER_SA),
                Allowed,
            ),
            (
                "a selector on the gateway's pods binds too",
                vec![policy(
                    "kserve",
                    json!({"selector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "kserve-ingress-gateway"}}, "rules": []}),
                )],
                authenticated(OWNER_SA),
                denied.clone(),
            ),
            (
                "request.auth.claims of a list",
                vec![policy(
                    "kserve",
                    json!({"targetRefs": target, "rules": [{"when": [{"key": "request.auth.claims[groups]", "values": ["admins"]}]}]}),
                )],
                authenticated(OWNER_SA),
                Allowed,
            ),
            (
                "request.auth.claims nested",
                vec![policy(
                    "kserve",
                    json!({"targetRefs": target, "rules": [{"when": [{"key": "request.auth.claims[kubernetes.io][namespace]", "values": [NS]}]}]}),
                )],
                authenticated(OWNER_SA),
                Allowed,
            ),
            (
                "request.auth.principal and audiences",
                vec![policy(
                    "kserve",
                    json!({"targetRefs": target, "rules": [{"when": [
                        {"key": "request.auth.principal", "values": [format!("{ISSUER}/{OWNER_SA}")]},
                        {"key": "request.auth.audiences", "values": ["models"]}
                    ]}]}),
                )],
                authenticated(OWNER_SA),
                Allowed,
            ),
            (
                "claims never match an unauthenticated request",
                vec![policy(
                    "kserve",
                    json!({"targetRefs": target, "rules": [{"when": [{"key": "request.auth.claims[sub]", "values": ["*"]}]}]}),
                )],
                RequestAttributes {
                    request_principal: None,
                    claims: None,
                    ..authenticated(OWNER_SA)
                },
                denied.clone(),
            ),
            (
                "source principal of the caller (the edge) is absent: principals never match",
                vec![policy(
                    "kserve",
                    json!({"targetRefs": target, "rules": [{"from": [{"source": {"principals": ["*"]}}]}]}),
                )],
                authenticated(OWNER_SA),
                denied.clone(),
            ),
        ];
        for (name, policies, request, want) in cases {
            assert_eq!(at_gateway(&policies, &request), want, "{name}");
        }
        // Kubeflow's deny-all is a root-namespace policy: Istio would bind it here too.
        assert_eq!(at_gateway(&[deny_all()], &authenticated(OWNER_SA)), denied);
    }

    #[test]
    fn custom_policies_are_reported_in_order() {
        let gateway = ObjectRef::new("kserve", "g");
        let workload = Workload {
            namespace: "kserve".into(),
            labels: BTreeMap::new(),
        };
        let enforcer = Enforcer::Gateway {
            gateway: &gateway,
            class: "istio",
            workload: &workload,
        };
        let policies = vec![
            StoredPolicy {
                name: "login".into(),
                ..policy(
                    "kserve",
                    json!({"action": "CUSTOM", "provider": {"name": "oauth2-proxy"}, "targetRefs": [{"group": GATEWAY_GROUP, "kind": "Gateway", "name": "g"}],
                           "rules": [{"to": [{"operation": {"notPaths": ["/dex/*"]}}]}]}),
                )
            },
            policy(
                "kserve",
                json!({"action": "CUSTOM", "provider": {"name": "other"}, "rules": [{"to": [{"operation": {"paths": ["/x"]}}]}]}),
            ),
        ];
        let got = custom_matches(&policies, &enforcer, &authenticated(OWNER_SA));
        assert_eq!(
            got,
            vec![CustomMatch {
                policy: "kserve/login".into(),
                provider: "oauth2-proxy".into()
            }]
        );
        assert!(
            custom_matches(&policies, &Enforcer::Ztunnel(&predictor()), &request("x")).is_empty()
        );
    }

    #[test]
    fn string_match_forms() {
        assert!(string_matches("*", "x"));
        assert!(!string_matches("*", ""));
        assert!(string_matches("/a/*", "/a/b"));
        assert!(string_matches("*.html", "/x.html"));
        assert!(!string_matches("/a", "/a/b"));
    }

    #[test]
    fn istio_validation_example_parses_and_evaluates() {
        // Istio's own valid example object: every field the double knows must deserialize.
        let text = include_str!("../tests/fixtures/security-v1-AuthorizationPolicy.yaml");
        let object: serde_json::Value = serde_yaml::from_str(text).unwrap();
        let spec: PolicySpec = serde_json::from_value(object["spec"].clone()).unwrap();
        assert_eq!(spec.rules[0].to.len(), 2);
        let httpbin = Workload {
            namespace: "default".into(),
            labels: labels(&[("app", "httpbin"), ("version", "v1")]),
        };
        let stored = [StoredPolicy {
            namespace: "default".into(),
            name: "authorization-policy".into(),
            spec,
        }];
        // Its `when` needs request.auth.claims, which a sidecar without RequestAuthentication lacks.
        let get_info = RequestAttributes {
            source_principal: Some("cluster.local/ns/default/sa/sleep".into()),
            method: "GET".into(),
            path: "/info/x".into(),
            ..Default::default()
        };
        assert_eq!(
            evaluate(&stored, &Enforcer::Sidecar(&httpbin), &get_info),
            Decision::Denied { policy: None }
        );
    }
}
