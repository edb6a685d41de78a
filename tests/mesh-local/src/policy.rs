//! Istio AuthorizationPolicy evaluation at a workload's sidecar, as a pure function.
//!
//! Semantics follow Istio's reference (security.istio.io/v1): CUSTOM is not modelled, DENY policies
//! are checked first, then ALLOW policies are OR-ed; a workload selected by any ALLOW policy is
//! denied when none of them matches. Inside a policy, rules are OR-ed; inside a rule, `from`, `to`
//! and `when` are AND-ed; entries of one `from`/`to` list are OR-ed; fields of one source/operation
//! are AND-ed; values of one field are OR-ed and `not*` values must all miss.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Istio's root namespace: its policies apply to workloads in every namespace.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// One stored AuthorizationPolicy: where it lives and its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPolicy {
    pub namespace: String,
    pub name: String,
    pub spec: PolicySpec,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    /// Policies bound by targetRef(s) attach to gateways/waypoints, never to a sidecar.
    #[serde(default)]
    pub target_ref: Option<serde_json::Value>,
    #[serde(default)]
    pub target_refs: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub rules: Vec<Rule>,
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

/// The workload a request is delivered to (the predictor pod).
#[derive(Clone, Debug, Default)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// What the sidecar knows about a request.
#[derive(Clone, Debug, Default)]
pub struct RequestAttributes {
    /// mTLS peer identity (`cluster.local/ns/<ns>/sa/<sa>`); None for plaintext.
    pub source_principal: Option<String>,
    /// JWT principal (`iss/sub`); None where no RequestAuthentication applies (predictor sidecars).
    pub request_principal: Option<String>,
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

/// Istio's decision for `request` at `workload`'s sidecar given every stored policy.
pub fn evaluate(
    policies: &[StoredPolicy],
    workload: &Workload,
    request: &RequestAttributes,
) -> Decision {
    let applicable: Vec<&StoredPolicy> = policies
        .iter()
        .filter(|p| applies_to(p, workload))
        .collect();
    if let Some(deny) = applicable
        .iter()
        .find(|p| p.spec.action == Action::Deny && policy_matches(&p.spec, request))
    {
        return Decision::Denied {
            policy: Some(format!("{}/{}", deny.namespace, deny.name)),
        };
    }
    let mut allows = applicable
        .iter()
        .filter(|p| p.spec.action == Action::Allow)
        .peekable();
    if allows.peek().is_none() {
        return Decision::Allowed;
    }
    if allows.any(|p| policy_matches(&p.spec, request)) {
        Decision::Allowed
    } else {
        Decision::Denied { policy: None }
    }
}

fn applies_to(policy: &StoredPolicy, workload: &Workload) -> bool {
    if policy.spec.target_ref.is_some() || policy.spec.target_refs.is_some() {
        return false;
    }
    if policy.namespace != workload.namespace && policy.namespace != ROOT_NAMESPACE {
        return false;
    }
    policy.spec.selector.as_ref().is_none_or(|s| {
        s.match_labels
            .iter()
            .all(|(k, v)| workload.labels.get(k) == Some(v))
    })
}

/// An empty rule list matches nothing; a rule with no from/to/when matches everything.
fn policy_matches(spec: &PolicySpec, request: &RequestAttributes) -> bool {
    spec.rules.iter().any(|rule| rule_matches(rule, request))
}

fn rule_matches(rule: &Rule, request: &RequestAttributes) -> bool {
    (rule.from.is_empty() || rule.from.iter().any(|f| source_matches(&f.source, request)))
        && (rule.to.is_empty()
            || rule
                .to
                .iter()
                .any(|t| operation_matches(&t.operation, request)))
        && rule.when.iter().all(|c| condition_matches(c, request))
}

fn source_matches(source: &Source, request: &RequestAttributes) -> bool {
    let principal = request.source_principal.as_deref();
    let namespace = principal.and_then(principal_namespace);
    let service_account = principal.and_then(principal_service_account);
    field(&source.principals, &source.not_principals, principal, string_matches)
        && field(
            &source.request_principals,
            &source.not_request_principals,
            request.request_principal.as_deref(),
            string_matches,
        )
        && field(&source.namespaces, &source.not_namespaces, namespace, string_matches)
        && field(
            &source.service_accounts,
            &source.not_service_accounts,
            service_account.as_deref(),
            |pattern, value| pattern == value,
        )
        // The double knows no peer addresses: an IP condition never holds.
        && field(&source.ip_blocks, &source.not_ip_blocks, None, string_matches)
        && field(&source.remote_ip_blocks, &source.not_remote_ip_blocks, None, string_matches)
}

fn operation_matches(operation: &Operation, request: &RequestAttributes) -> bool {
    let port = request.port.to_string();
    field(
        &operation.hosts,
        &operation.not_hosts,
        Some(&request.host),
        |p, v| string_matches(&p.to_ascii_lowercase(), &v.to_ascii_lowercase()),
    ) && field(
        &operation.ports,
        &operation.not_ports,
        Some(&port),
        |p, v| p == v,
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

fn condition_matches(condition: &Condition, request: &RequestAttributes) -> bool {
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
    if let Some(name) = key
        .strip_prefix("request.headers[")
        .and_then(|rest| rest.strip_suffix(']'))
    {
        return request
            .headers
            .get(&name.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
    }
    let principal = request.source_principal.as_deref();
    let single = match key {
        "source.principal" => principal.map(str::to_owned),
        "source.namespace" => principal.and_then(principal_namespace).map(str::to_owned),
        "request.auth.principal" => request.request_principal.clone(),
        "destination.port" => Some(request.port.to_string()),
        // request.auth.claims[..], request.auth.audiences, IPs, SNI: unknown to a predictor sidecar.
        _ => None,
    };
    single.into_iter().collect()
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
    const NS: &str = "kubeflow-user-example-com";

    fn policy(namespace: &str, spec: serde_json::Value) -> StoredPolicy {
        StoredPolicy {
            namespace: namespace.into(),
            name: "p".into(),
            spec: serde_json::from_value(spec).unwrap(),
        }
    }

    fn predictor() -> Workload {
        Workload {
            namespace: NS.into(),
            labels: [
                ("serving.kserve.io/inferenceservice", "sklearn-iris"),
                ("component", "predictor"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        }
    }

    fn request(userid: &str) -> RequestAttributes {
        RequestAttributes {
            source_principal: Some(GATEWAY.into()),
            request_principal: None,
            host: "sklearn-iris.kubeflow-user-example-com.example.com".into(),
            port: 8080,
            method: "POST".into(),
            path: "/v1/models/sklearn-iris:predict".into(),
            headers: [("kubeflow-userid".to_owned(), vec![userid.to_owned()])].into(),
        }
    }

    const SA_USER: &str = "system:serviceaccount:kubeflow-user-example-com:default-editor";

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

    fn deny_all() -> StoredPolicy {
        policy(ROOT_NAMESPACE, json!({}))
    }

    #[test]
    fn table() {
        use Decision::*;
        let denied = Denied { policy: None };
        let cases: Vec<(&str, Vec<StoredPolicy>, RequestAttributes, Decision)> = vec![
            ("no policy at all allows", vec![], request(SA_USER), Allowed),
            (
                "mesh-wide deny-all denies",
                vec![deny_all()],
                request(SA_USER),
                denied.clone(),
            ),
            (
                "ALLOW with empty rules matches nothing",
                vec![policy(NS, json!({"action": "ALLOW", "rules": []}))],
                request(SA_USER),
                denied.clone(),
            ),
            (
                "ALLOW with an empty rule matches everything",
                vec![deny_all(), policy(NS, json!({"rules": [{}]}))],
                request(SA_USER),
                Allowed,
            ),
            (
                "access policy allows its user through the gateway",
                vec![deny_all(), policy(NS, access_policy(SA_USER))],
                request(SA_USER),
                Allowed,
            ),
            (
                "access policy denies another user",
                vec![deny_all(), policy(NS, access_policy(SA_USER))],
                request("system:serviceaccount:other:default"),
                denied.clone(),
            ),
            (
                "access policy denies a caller that bypasses the gateway (fields ANDed)",
                vec![deny_all(), policy(NS, access_policy(SA_USER))],
                RequestAttributes {
                    source_principal: Some("cluster.local/ns/other/sa/default".into()),
                    ..request(SA_USER)
                },
                denied.clone(),
            ),
            (
                "access policy in another namespace does not apply",
                vec![deny_all(), policy("elsewhere", access_policy(SA_USER))],
                request(SA_USER),
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
                request(SA_USER),
                denied.clone(),
            ),
            (
                "ALLOW policies are ORed",
                vec![
                    deny_all(),
                    policy(NS, access_policy("someone-else")),
                    policy(NS, access_policy(SA_USER)),
                ],
                request(SA_USER),
                Allowed,
            ),
            (
                "Kubeflow's ns-owner-access-istio never matches a ServiceAccount sub",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"when": [{"key": "request.headers[kubeflow-userid]", "values": ["user@example.com"]}]}]}),
                    ),
                ],
                request(SA_USER),
                denied.clone(),
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
                request(SA_USER),
                Denied {
                    policy: Some(format!("{NS}/p")),
                },
            ),
            (
                "DENY with empty rules matches nothing",
                vec![policy(NS, json!({"action": "DENY"}))],
                request(SA_USER),
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
                request(SA_USER),
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
                request(SA_USER),
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
                request(SA_USER),
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
                request(SA_USER),
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
                request(SA_USER),
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
                request(SA_USER),
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
                request(SA_USER),
                Allowed,
            ),
            (
                "requestPrincipals never match at a predictor sidecar",
                vec![
                    deny_all(),
                    policy(
                        NS,
                        json!({"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}),
                    ),
                ],
                request(SA_USER),
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
                    ..request(SA_USER)
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
                request(SA_USER),
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
                request(SA_USER),
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
                request(SA_USER),
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
                request(SA_USER),
                Allowed,
            ),
            (
                "targetRef policies do not bind sidecars",
                vec![policy(
                    NS,
                    json!({"targetRef": {"kind": "Gateway", "name": "g"}, "rules": []}),
                )],
                request(SA_USER),
                Allowed,
            ),
            (
                "AUDIT and CUSTOM do not decide",
                vec![
                    policy(NS, json!({"action": "AUDIT", "rules": [{}]})),
                    policy(NS, json!({"action": "CUSTOM", "rules": [{}]})),
                ],
                request(SA_USER),
                Allowed,
            ),
        ];
        for (name, policies, request, want) in cases {
            assert_eq!(evaluate(&policies, &predictor(), &request), want, "{name}");
        }
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
            labels: [("app", "httpbin"), ("version", "v1")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
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
            evaluate(&stored, &httpbin, &get_info),
            Decision::Denied { policy: None }
        );
    }
}
