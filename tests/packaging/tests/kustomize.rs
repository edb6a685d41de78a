//! The kustomize tree under config/, rendered by the real `kubectl kustomize`.

use packaging_tests::{
    describe, kustomize, of_kind, pod_security_violations, read_yaml, validate_object,
};
use serde_json::{Value, json};

fn render(dir: &str) -> Vec<Value> {
    kustomize(dir).unwrap_or_else(|err| panic!("{err}"))
}

fn the<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} rendered"))
}

/// The operator's own rights: its Role in a watched namespace, or its binding to one.
fn is_manager_role(object: &Value) -> bool {
    ["Role", "RoleBinding"].contains(&object["kind"].as_str().unwrap_or(""))
        && object["metadata"]["name"] == "inference-access-manager"
}

/// What every tree under config/ must satisfy, in `namespace`, with the operator's rights
/// cluster-wide (`watched` empty) or in the `watched` namespaces only.
fn assert_installable(objects: &[Value], namespace: &str, watched: &[&str]) {
    for object in objects {
        validate_object(object).unwrap_or_else(|err| panic!("{err}"));
        if !object["metadata"]["namespace"].is_null() && !is_manager_role(object) {
            assert_eq!(
                object["metadata"]["namespace"],
                namespace,
                "{}",
                describe(object)
            );
        }
    }
    let deployment = the(objects, "Deployment", "inference-access");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod_security_violations(pod), Vec::<String>::new());
    let account = pod["serviceAccountName"].as_str().unwrap_or("");
    the(objects, "ServiceAccount", account);
    for binding in of_kind(objects, "ClusterRoleBinding")
        .into_iter()
        .chain(of_kind(objects, "RoleBinding"))
    {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": account, "namespace": namespace}]),
            "{}",
            describe(binding)
        );
        the(
            objects,
            binding["roleRef"]["kind"].as_str().unwrap_or(""),
            binding["roleRef"]["name"].as_str().unwrap_or(""),
        );
    }
    let source = read_yaml("config/rbac/role.yaml").unwrap_or_else(|err| panic!("{err}"));
    if watched.is_empty() {
        let manager = the(objects, "ClusterRole", "inference-access-manager");
        assert_eq!(manager["rules"], source["rules"]);
        the(objects, "ClusterRoleBinding", "inference-access-manager");
    } else {
        assert_rights_only_in(objects, watched, &source["rules"]);
    }
    let service = the(objects, "Service", "inference-access-metrics");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"]
        .as_object()
        .into_iter()
        .flatten()
    {
        assert_eq!(
            &pod_labels[key], value,
            "the metrics Service misses the pods: {key}"
        );
    }
    let generated = read_yaml("crds/inference-access.io_inferenceaccesses.yaml")
        .unwrap_or_else(|err| panic!("{err}"));
    let crd = the(
        objects,
        "CustomResourceDefinition",
        "inferenceaccesses.inference-access.io",
    );
    assert_eq!(
        crd["spec"], generated["spec"],
        "config/ ships the generated CRD schema"
    );
}

/// The operator holds a Role with exactly `rules` in each watched namespace, watches exactly
/// those, and has nothing cluster-wide but the user-facing aggregated roles.
fn assert_rights_only_in(objects: &[Value], watched: &[&str], rules: &Value) {
    assert!(
        of_kind(objects, "ClusterRoleBinding").is_empty(),
        "{:?}",
        of_kind(objects, "ClusterRoleBinding")
    );
    for role in of_kind(objects, "ClusterRole") {
        assert!(
            role["metadata"]["labels"]
                .as_object()
                .is_some_and(|labels| labels.keys().any(|key| key.contains("/aggregate-to-"))),
            "{} is not a user-facing aggregated role",
            describe(role)
        );
    }
    let mut role_namespaces = Vec::new();
    for object in objects.iter().filter(|object| is_manager_role(object)) {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("");
        if object["kind"] == "Role" {
            assert_eq!(&object["rules"], rules, "the Role in {namespace}");
            role_namespaces.push(namespace);
        } else {
            assert_eq!(
                object["roleRef"],
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "inference-access-manager"})
            );
        }
    }
    role_namespaces.sort_unstable();
    let mut expected = watched.to_vec();
    expected.sort_unstable();
    assert_eq!(role_namespaces, expected);
    let deployment = the(objects, "Deployment", "inference-access");
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .into_iter()
            .flatten()
            .any(|arg| *arg == format!("--namespaces={}", watched.join(","))),
        "{args}"
    );
}

#[test]
fn config_default_renders_an_installable_operator() {
    let objects = render("config/default");
    assert_installable(&objects, "inference-access-system", &[]);
    let namespace = the(&objects, "Namespace", "inference-access-system");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let mut kinds: Vec<String> = objects.iter().map(describe).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole/inference-access-editor",
            "ClusterRole/inference-access-manager",
            "ClusterRole/inference-access-viewer",
            "ClusterRoleBinding/inference-access-manager",
            "CustomResourceDefinition/inferenceaccesses.inference-access.io",
            "Deployment/inference-access",
            "Namespace/inference-access-system",
            "Role/inference-access-leader-election",
            "RoleBinding/inference-access-leader-election",
            "Service/inference-access-metrics",
            "ServiceAccount/inference-access",
        ]
    );
    // One replica without leader election: never two pods at once.
    let deployment = the(&objects, "Deployment", "inference-access");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn the_kubeflow_overlay_installs_into_kubeflow_without_a_sidecar() {
    let objects = render("config/overlays/kubeflow");
    assert_installable(&objects, "kubeflow", &[]);
    assert!(
        of_kind(&objects, "Namespace").is_empty(),
        "Kubeflow owns the kubeflow namespace"
    );
    for object in &objects {
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/part-of"],
            "kubeflow",
            "{}",
            describe(object)
        );
    }
    let deployment = the(&objects, "Deployment", "inference-access");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"],
        "false"
    );
    // Labels added to objects must not leak into the immutable selector.
    assert!(deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/part-of"].is_null());
}

#[test]
fn the_scoped_overlay_grants_rights_in_the_watched_namespace_only() {
    let objects = render("config/overlays/scoped");
    assert_installable(
        &objects,
        "inference-access-system",
        &["kubeflow-user-example-com"],
    );
    let mut kinds: Vec<String> = objects.iter().map(describe).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole/inference-access-editor",
            "ClusterRole/inference-access-viewer",
            "CustomResourceDefinition/inferenceaccesses.inference-access.io",
            "Deployment/inference-access",
            "Namespace/inference-access-system",
            "Role/inference-access-leader-election",
            "Role/inference-access-manager",
            "RoleBinding/inference-access-leader-election",
            "RoleBinding/inference-access-manager",
            "Service/inference-access-metrics",
            "ServiceAccount/inference-access",
        ]
    );
    let lease = the(&objects, "Role", "inference-access-leader-election");
    assert_eq!(lease["metadata"]["namespace"], "inference-access-system");
}

#[test]
fn the_samples_render_the_example_access() {
    let objects = render("config/samples");
    for object in &objects {
        validate_object(object).unwrap_or_else(|err| panic!("{err}"));
    }
    let access = of_kind(&objects, "InferenceAccess");
    assert_eq!(access.len(), 1, "{objects:?}");
    assert_eq!(
        access[0]["spec"]["inferenceService"]["name"],
        "sklearn-iris"
    );
}
