//! Helpers for the packaging checks: find the real `helm` and `kubectl`, render the chart and the
//! kustomize tree, and judge what they render (valid Kubernetes objects, pod security, RBAC).
//!
//! Nothing here talks to a cluster: `helm template` and `kubectl kustomize` are offline.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The repository root (this crate lives in `tests/packaging`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The chart's folder.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/inference-access")
}

/// A command-line tool the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// Helm 4, the version the chart is developed with.
    Helm,
    /// Helm 3, for the compatibility check (`helm3` from `make tools`).
    Helm3,
    Kubectl,
    /// Prometheus' rule checker and tester (`make tools`, from Debian's `prometheus` package).
    Promtool,
    /// The Prometheus server, for the end-to-end alert test (`make tools`).
    Prometheus,
}

impl Tool {
    fn binary(self) -> &'static str {
        match self {
            Tool::Helm => "helm",
            Tool::Helm3 => "helm3",
            Tool::Kubectl => "kubectl",
            Tool::Promtool => "promtool",
            Tool::Prometheus => "prometheus",
        }
    }

    fn env_var(self) -> &'static str {
        match self {
            Tool::Helm => "HELM",
            Tool::Helm3 => "HELM3",
            Tool::Kubectl => "KUBECTL",
            Tool::Promtool => "PROMTOOL",
            Tool::Prometheus => "PROMETHEUS",
        }
    }
}

/// Where the tool is: `$HELM`/`$KUBECTL`/…, else `<repo>/.tools/bin` (`make tools`), else `PATH`.
pub fn tool_path(tool: Tool) -> Result<PathBuf, String> {
    locate(
        tool,
        std::env::var_os(tool.env_var()),
        &repo_root().join(".tools/bin"),
        std::env::var_os("PATH"),
    )
}

fn locate(
    tool: Tool,
    from_env: Option<OsString>,
    tools_dir: &Path,
    search_path: Option<OsString>,
) -> Result<PathBuf, String> {
    let name = tool.binary();
    let install_hint = format!(
        "install it with `make tools` (hack/install-tools.sh), put it on PATH, or set ${}",
        tool.env_var()
    );
    if let Some(from_env) = from_env.filter(|value| !value.is_empty()) {
        let path = PathBuf::from(from_env);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "${} points at {}, which does not exist: {install_hint}",
                tool.env_var(),
                path.display()
            ))
        };
    }
    let local = tools_dir.join(name);
    if local.is_file() {
        return Ok(local);
    }
    search_path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("`{name}` not found: {install_hint}"))
}

/// Runs the tool in the repository root and returns its standard output; the error carries the
/// exit status and standard error.
pub fn run(tool: Tool, args: &[&str]) -> Result<String, String> {
    run_in(tool, args, &repo_root())
}

/// Runs the tool in `dir`, as [`run`].
pub fn run_in(tool: Tool, args: &[&str], dir: &Path) -> Result<String, String> {
    let path = tool_path(tool)?;
    let output = Command::new(&path)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|err| format!("cannot run {}: {err}", path.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{} {} failed ({}):\n{}",
            tool.binary(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `helm template` of the chart (CRDs included) with `--set` pairs, as parsed objects.
pub fn helm_template(set: &[&str]) -> Result<Vec<Value>, String> {
    parse_documents(&helm_template_text(Tool::Helm, set)?)
}

/// The text `helm template` prints, with the given Helm (4 or 3).
pub fn helm_template_text(helm: Tool, set: &[&str]) -> Result<String, String> {
    render_chart(helm, "release", "operators", set)
}

/// `helm template` of the chart as release `release` in `namespace` (CRDs included), as parsed
/// objects: what `helm install` would apply there.
pub fn helm_template_release(
    release: &str,
    namespace: &str,
    set: &[&str],
) -> Result<Vec<Value>, String> {
    parse_documents(&render_chart(Tool::Helm, release, namespace, set)?)
}

fn render_chart(
    helm: Tool,
    release: &str,
    namespace: &str,
    set: &[&str],
) -> Result<String, String> {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let mut args = vec![
        "template",
        release,
        &chart,
        "--namespace",
        namespace,
        "--include-crds",
    ];
    for pair in set {
        args.extend(["--set", pair]);
    }
    run(helm, &args)
}

/// `kubectl kustomize <dir>` (relative to the repository root), as parsed objects.
pub fn kustomize(dir: &str) -> Result<Vec<Value>, String> {
    parse_documents(&run(Tool::Kubectl, &["kustomize", dir])?)
}

/// Every non-empty document of a multi-document YAML stream.
pub fn parse_documents(yaml: &str) -> Result<Vec<Value>, String> {
    let mut documents = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|err| format!("document {index} is not valid YAML: {err}"))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// Reads one YAML file of the repository (path relative to the root).
pub fn read_yaml(relative: &str) -> Result<Value, String> {
    let path = repo_root().join(relative);
    let text = std::fs::read_to_string(&path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|err| format!("{relative} is not valid YAML: {err}"))
}

/// The operator's version from the root Cargo.toml's `[package]` table.
pub fn crate_version() -> Result<String, String> {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml"))
        .map_err(|err| format!("cannot read Cargo.toml: {err}"))?;
    let package = manifest
        .split("\n[")
        .find(|table| table.starts_with("package]"))
        .ok_or("Cargo.toml has no [package] table")?;
    package
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .ok_or_else(|| "[package] has no version".to_owned())
}

/// The RBAC rules the packaging ships, from one of the files in `config/rbac/` (`role.yaml`: the
/// operator's ClusterRole; `leader_election_role.yaml`: its Lease Role). The chart and kustomize
/// grant exactly these, so an end-to-end test that runs the operator with them proves the
/// shipped permissions are enough.
pub fn shipped_rules(file: &str) -> Result<Vec<PolicyRule>, String> {
    let role = read_yaml(&format!("config/rbac/{file}"))?;
    serde_json::from_value(role["rules"].clone())
        .map_err(|err| format!("config/rbac/{file}: rules do not parse: {err}"))
}

/// `"<kind>/<name>"`, for messages.
pub fn describe(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The objects of one kind.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|object| object["kind"] == kind)
        .collect()
}

/// Kinds the operator's packaging ships that live in a namespace.
const NAMESPACED_KINDS: &[&str] = &[
    "Deployment",
    "Service",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "PodDisruptionBudget",
    "ServiceMonitor",
    "PrometheusRule",
    "ConfigMap",
    "InferenceAccess",
];

/// Checks that an object is a well-formed Kubernetes object: apiVersion, kind, a valid name,
/// label keys and values within Kubernetes' limits, a namespace when the kind is namespaced,
/// and, for kinds with a Rust type, that it survives a round trip through that type unchanged
/// (a misspelt or misplaced field would be dropped and show up as a difference).
pub fn validate_object(object: &Value) -> Result<(), String> {
    let what = describe(object);
    let api_version = object["apiVersion"]
        .as_str()
        .filter(|value| !value.is_empty())
        .ok_or_else(|| format!("{what}: no apiVersion"))?;
    let kind = object["kind"]
        .as_str()
        .filter(|value| !value.is_empty())
        .ok_or_else(|| format!("{what}: no kind"))?;
    let metadata = object["metadata"]
        .as_object()
        .ok_or_else(|| format!("{what}: no metadata"))?;
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{what}: no metadata.name"))?;
    if !is_dns_subdomain(name) {
        return Err(format!("{what}: metadata.name is not a DNS subdomain"));
    }
    if NAMESPACED_KINDS.contains(&kind) {
        let namespace = metadata.get("namespace").and_then(Value::as_str);
        if !namespace.is_some_and(is_dns_label) {
            return Err(format!(
                "{what}: a namespaced kind without a valid namespace"
            ));
        }
    }
    for field in ["labels", "annotations"] {
        if let Some(map) = metadata.get(field) {
            let map = map
                .as_object()
                .ok_or_else(|| format!("{what}: metadata.{field} is not a map"))?;
            for (key, value) in map {
                if !is_qualified_name(key) {
                    return Err(format!("{what}: metadata.{field} key {key:?} is invalid"));
                }
                let value = value
                    .as_str()
                    .ok_or_else(|| format!("{what}: metadata.{field}.{key} is not a string"))?;
                if field == "labels" && !is_label_value(value) {
                    return Err(format!("{what}: label {key}={value:?} is invalid"));
                }
            }
        }
    }
    round_trip(api_version, kind, object).map_err(|err| format!("{what}: {err}"))
}

fn round_trip(api_version: &str, kind: &str, object: &Value) -> Result<(), String> {
    use k8s_openapi::api::{apps, core, policy, rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
    match (api_version, kind) {
        ("apps/v1", "Deployment") => same_after::<apps::v1::Deployment>(object),
        ("v1", "Service") => same_after::<core::v1::Service>(object),
        ("v1", "ServiceAccount") => same_after::<core::v1::ServiceAccount>(object),
        ("v1", "ConfigMap") => same_after::<core::v1::ConfigMap>(object),
        ("v1", "Namespace") => same_after::<core::v1::Namespace>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            same_after::<rbac::v1::ClusterRole>(object)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            same_after::<rbac::v1::ClusterRoleBinding>(object)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => same_after::<rbac::v1::Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            same_after::<rbac::v1::RoleBinding>(object)
        }
        ("policy/v1", "PodDisruptionBudget") => {
            same_after::<policy::v1::PodDisruptionBudget>(object)
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            same_after::<apiextensions::v1::CustomResourceDefinition>(object)
        }
        // No Rust type: the Prometheus Operator's CRDs and our own (the CRD's schema checks it).
        ("monitoring.coreos.com/v1", "ServiceMonitor" | "PrometheusRule")
        | ("inference-access.io/v1alpha1", "InferenceAccess") => {
            if object["spec"].is_object() {
                Ok(())
            } else {
                Err("no spec".to_owned())
            }
        }
        _ => Err(format!("unexpected object type {api_version} {kind}")),
    }
}

fn same_after<T: DeserializeOwned + Serialize>(object: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(object.clone())
        .map_err(|err| format!("does not parse as its Kubernetes type: {err}"))?;
    let back = serde_json::to_value(&typed).map_err(|err| err.to_string())?;
    match first_difference(object, &back, "") {
        None => Ok(()),
        Some(path) => Err(format!(
            "field {path} is unknown to the Kubernetes type or has the wrong shape"
        )),
    }
}

/// The path of the first place where `original` has something `typed` lost or changed.
fn first_difference(original: &Value, typed: &Value, path: &str) -> Option<String> {
    match (original, typed) {
        (Value::Object(left), Value::Object(right)) => left.iter().find_map(|(key, value)| {
            let here = format!("{path}.{key}");
            match right.get(key) {
                Some(other) => first_difference(value, other, &here),
                None => Some(here),
            }
        }),
        (Value::Array(left), Value::Array(right)) if left.len() == right.len() => left
            .iter()
            .zip(right)
            .enumerate()
            .find_map(|(index, (value, other))| {
                first_difference(value, other, &format!("{path}[{index}]"))
            }),
        _ if original == typed => None,
        _ => Some(if path.is_empty() {
            ".".to_owned()
        } else {
            path.to_owned()
        }),
    }
}

fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

fn is_dns_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_dns_label)
}

/// `[prefix/]name` as label and annotation keys allow.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_dns_subdomain)
        && !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Everything Pod Security Admission `restricted` asks of a pod template that the operator's
/// pod must satisfy: non-root (pod or every container), RuntimeDefault seccomp, and per
/// container no privilege escalation, all capabilities dropped, a read-only root filesystem.
/// Returns every violation found.
pub fn pod_security_violations(pod_spec: &Value) -> Vec<String> {
    let mut violations = Vec::new();
    let pod = &pod_spec["securityContext"];
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod_spec[field] == true {
            violations.push(format!("pod: {field} is set"));
        }
    }
    if pod_spec["volumes"]
        .as_array()
        .is_some_and(|volumes| volumes.iter().any(|volume| !volume["hostPath"].is_null()))
    {
        violations.push("pod: a hostPath volume".to_owned());
    }
    if pod["runAsUser"] == 0 {
        violations.push("pod: runAsUser 0".to_owned());
    }
    let containers = pod_spec["initContainers"]
        .as_array()
        .into_iter()
        .chain(pod_spec["containers"].as_array())
        .flatten();
    let mut any_container = false;
    for container in containers {
        any_container = true;
        let name = container["name"].as_str().unwrap_or("?");
        let security = &container["securityContext"];
        let setting = |field: &str| -> &Value {
            if security[field].is_null() {
                &pod[field]
            } else {
                &security[field]
            }
        };
        if setting("runAsNonRoot") != true {
            violations.push(format!("container {name}: runAsNonRoot is not true"));
        }
        if security["runAsUser"] == 0 {
            violations.push(format!("container {name}: runAsUser 0"));
        }
        if setting("seccompProfile")["type"] != "RuntimeDefault" {
            violations.push(format!(
                "container {name}: seccomp profile is not RuntimeDefault"
            ));
        }
        if security["allowPrivilegeEscalation"] != false {
            violations.push(format!(
                "container {name}: allowPrivilegeEscalation is not false"
            ));
        }
        if security["privileged"] == true {
            violations.push(format!("container {name}: privileged"));
        }
        if security["readOnlyRootFilesystem"] != true {
            violations.push(format!("container {name}: root filesystem is writable"));
        }
        let drops_all = security["capabilities"]["drop"]
            .as_array()
            .is_some_and(|drop| drop.iter().any(|capability| capability == "ALL"));
        if !drops_all {
            violations.push(format!("container {name}: capabilities do not drop ALL"));
        }
        if security["capabilities"]["add"]
            .as_array()
            .is_some_and(|add| !add.is_empty())
        {
            violations.push(format!("container {name}: adds capabilities"));
        }
    }
    if !any_container {
        violations.push("pod: no containers".to_owned());
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_catches_a_misspelt_field() {
        let good = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "sa", "namespace": "ns"},
            "automountServiceAccountToken": false
        });
        assert_eq!(validate_object(&good), Ok(()));
        let mut bad = good.clone();
        bad["automountServiceAcountToken"] = json!(false);
        assert_eq!(
            validate_object(&bad),
            Err(
                "ServiceAccount/sa: field .automountServiceAcountToken is unknown to the \
                 Kubernetes type or has the wrong shape"
                    .to_owned()
            )
        );
    }

    #[test]
    fn names_labels_and_namespaces_are_checked() {
        let object = |name: &str, namespace: Option<&str>, label: &str| {
            let mut object = json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/name": label}}
            });
            if let Some(namespace) = namespace {
                object["metadata"]["namespace"] = json!(namespace);
            }
            object
        };
        assert_eq!(validate_object(&object("a", Some("b"), "c")), Ok(()));
        assert!(validate_object(&object("A", Some("b"), "c")).is_err());
        assert!(validate_object(&object("a", None, "c")).is_err());
        assert!(validate_object(&object("a", Some("b"), "-c")).is_err());
        assert!(validate_object(&object("a", Some("b"), &"x".repeat(64))).is_err());
    }

    #[test]
    fn pod_security_accepts_restricted_and_names_each_gap() {
        let restricted = json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {
                "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]}}}]
        });
        assert_eq!(pod_security_violations(&restricted), Vec::<String>::new());
        let open = json!({"containers": [{"name": "c"}]});
        assert_eq!(
            pod_security_violations(&open),
            vec![
                "container c: runAsNonRoot is not true",
                "container c: seccomp profile is not RuntimeDefault",
                "container c: allowPrivilegeEscalation is not false",
                "container c: root filesystem is writable",
                "container c: capabilities do not drop ALL",
            ]
        );
    }

    #[test]
    fn tools_are_found_in_order_env_then_tools_dir_then_path() -> Result<(), std::io::Error> {
        let scratch = std::env::temp_dir().join(format!("packaging-locate-{}", std::process::id()));
        let (tools_dir, path_dir) = (scratch.join("tools"), scratch.join("path"));
        std::fs::create_dir_all(&tools_dir)?;
        std::fs::create_dir_all(&path_dir)?;
        for file in [
            tools_dir.join("helm"),
            path_dir.join("helm"),
            path_dir.join("kubectl"),
        ] {
            std::fs::write(file, "")?;
        }
        let from_env = path_dir.join("kubectl");
        let search_path = Some(path_dir.clone().into_os_string());

        assert_eq!(
            locate(
                Tool::Helm,
                Some(from_env.clone().into()),
                &tools_dir,
                search_path.clone()
            ),
            Ok(from_env)
        );
        assert_eq!(
            locate(Tool::Helm, None, &tools_dir, search_path.clone()),
            Ok(tools_dir.join("helm"))
        );
        assert_eq!(
            locate(Tool::Kubectl, None, &tools_dir, search_path),
            Ok(path_dir.join("kubectl"))
        );
        assert_eq!(
            locate(Tool::Kubectl, None, &tools_dir, None),
            Err(
                "`kubectl` not found: install it with `make tools` (hack/install-tools.sh), put \
                 it on PATH, or set $KUBECTL"
                    .to_owned()
            )
        );
        let missing = scratch.join("missing");
        assert_eq!(
            locate(Tool::Helm, Some(missing.clone().into()), &tools_dir, None),
            Err(format!(
                "$HELM points at {}, which does not exist: install it with `make tools` \
                 (hack/install-tools.sh), put it on PATH, or set $HELM",
                missing.display()
            ))
        );
        std::fs::remove_dir_all(scratch)
    }

    #[test]
    fn the_shipped_rules_grant_tokens_only_through_the_subresource() -> Result<(), String> {
        let rules = shipped_rules("role.yaml")?;
        let grants = |resource: &str, verb: &str| {
            rules.iter().any(|rule| {
                rule.resources.iter().flatten().any(|r| r == resource)
                    && rule.verbs.iter().any(|v| v == verb || v == "*")
            })
        };
        assert!(grants("serviceaccounts/token", "create"));
        assert!(grants("secrets", "watch"));
        assert!(
            !grants("secrets", "delete"),
            "owner references delete, not the operator"
        );
        assert!(!rules.iter().any(|rule| rule.verbs.iter().any(|v| v == "*")));
        assert!(!rules.iter().any(|rule| {
            rule.resources.iter().flatten().any(|r| r == "*")
                || rule.api_groups.iter().flatten().any(|g| g == "*")
        }));
        let lease = shipped_rules("leader_election_role.yaml")?;
        assert_eq!(lease.len(), 1);
        assert_eq!(lease[0].verbs, ["get", "create", "update"]);
        Ok(())
    }

    #[test]
    fn multi_document_streams_skip_empty_documents() {
        let documents = parse_documents("---\n# only a comment\n---\na: 1\n---\nb: 2\n");
        assert_eq!(documents, Ok(vec![json!({"a": 1}), json!({"b": 2})]));
    }
}
