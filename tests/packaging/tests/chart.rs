//! The Helm chart, rendered by the real `helm` (v4 from `make tools`, or $HELM / PATH), and by
//! Helm 3 (`helm3` from `make tools`, or $HELM3) for compatibility.

use packaging_tests::{
    Tool, chart_dir, describe, helm_template, helm_template_text, of_kind, pod_security_violations,
    read_yaml, run, validate_object,
};
use serde_json::{Value, json};

/// Value sets that together render every template and every branch of them.
const VALUE_SETS: &[&[&str]] = &[
    &[],
    &[
        "replicaCount=3",
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prometheus",
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.labels.release=prometheus",
        "metrics.grafanaDashboard.enabled=true",
        "metrics.grafanaDashboard.annotations.grafana_folder=Operators",
        "metrics.grafanaDashboard.namespace=monitoring",
        "controller.watchNamespaces={team-a,team-b}",
        "controller.limits.allowedAudiences={gateway.example.com,istio-ingressgateway.istio-system.svc.cluster.local}",
        "controller.limits.maxTokenLifetime=12h",
        "controller.limits.allowedGateways={https://*.example.com,http://gw.internal:8080}",
        "controller.limits.allowedUserIdHeaders={kubeflow-userid}",
        "controller.limits.allowedSourcePrincipals={cluster.local/ns/gw/sa/gateway}",
        "controller.limits.allowTemplates=false",
        "controller.logFormat=text",
        "controller.logLevel=debug",
        "commonLabels.team=ml-platform",
        "podLabels.example\\.com/tier=control-plane",
        "podAnnotations.example\\.com/owner=platform",
        "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "nodeSelector.kubernetes\\.io/os=linux",
        "priorityClassName=system-cluster-critical",
        "controller.extraArgs={--lease-duration=20s}",
        "controller.extraEnv[0].name=RUST_BACKTRACE",
        "controller.extraEnv[0].value=full",
        "imagePullSecrets[0].name=registry-credentials",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Exists",
        "topologySpreadConstraints[0].maxSkew=1",
        "topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=100",
        "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey=kubernetes.io/hostname",
        "serviceAccount.annotations.example\\.com/purpose=operator",
        "metrics.service.annotations.example\\.com/scraped-by=prometheus",
    ],
    &[
        "leaderElection.enabled=true",
        "serviceAccount.create=false",
        "serviceAccount.name=ops",
    ],
    &[
        "rbac.create=false",
        "rbac.aggregateToUserRoles=false",
        "metrics.service.enabled=false",
    ],
];

fn render(set: &[&str]) -> Vec<Value> {
    helm_template(set).unwrap_or_else(|err| panic!("{err}"))
}

fn the<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} rendered"))
}

fn deployment_args(objects: &[Value]) -> Vec<String> {
    let deployment = the(objects, "Deployment", "release-inference-access");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .map(|args| {
            args.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn assert_lint_clean(helm: Tool) {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    for set in VALUE_SETS {
        let mut args = vec!["lint", "--strict", &chart];
        for pair in *set {
            args.extend(["--set", pair]);
        }
        let output = run(helm, &args).unwrap_or_else(|err| panic!("{err}"));
        assert!(
            output.contains("0 chart(s) failed"),
            "{helm:?} {set:?}: {output}"
        );
        assert!(
            !output.contains("[WARNING]") && !output.contains("[ERROR]"),
            "{helm:?} {set:?}: {output}"
        );
    }
}

#[test]
fn helm_lint_is_clean_for_every_value_set() {
    assert_lint_clean(Tool::Helm);
}

#[test]
fn helm_3_lints_clean_and_renders_exactly_what_helm_4_renders() {
    assert_lint_clean(Tool::Helm3);
    for set in VALUE_SETS {
        let helm3 = helm_template_text(Tool::Helm3, set).unwrap_or_else(|err| panic!("{err}"));
        let helm4 = helm_template_text(Tool::Helm, set).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(helm3, helm4, "{set:?}");
    }
}

#[test]
fn every_rendered_object_is_a_valid_kubernetes_object() {
    for set in VALUE_SETS {
        let objects = render(set);
        assert!(
            objects.len() >= 3,
            "{set:?}: only {} objects",
            objects.len()
        );
        for object in &objects {
            validate_object(object).unwrap_or_else(|err| panic!("{set:?}: {err}"));
        }
        // A Role of the same name in each watched namespace is fine: kind, namespace and name.
        let mut names: Vec<(String, String)> = objects
            .iter()
            .map(|object| {
                (
                    object["metadata"]["namespace"].to_string(),
                    describe(object),
                )
            })
            .collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(
            names.len(),
            count,
            "{set:?}: two objects share a kind and name"
        );
    }
}

#[test]
fn the_default_release_has_exactly_the_documented_objects() {
    let objects = render(&[]);
    let mut kinds: Vec<String> = objects.iter().map(describe).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole/release-inference-access-editor",
            "ClusterRole/release-inference-access-manager",
            "ClusterRole/release-inference-access-viewer",
            "ClusterRoleBinding/release-inference-access-manager",
            "CustomResourceDefinition/inferenceaccesses.inference-access.io",
            "Deployment/release-inference-access",
            "Service/release-inference-access-metrics",
            "ServiceAccount/release-inference-access",
        ]
    );
}

#[test]
fn pods_meet_restricted_pod_security_in_every_value_set() {
    for set in VALUE_SETS {
        let objects = render(set);
        for deployment in of_kind(&objects, "Deployment") {
            let pod = &deployment["spec"]["template"]["spec"];
            assert_eq!(
                pod_security_violations(pod),
                Vec::<String>::new(),
                "{set:?}"
            );
            assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{set:?}");
        }
    }
}

#[test]
fn chart_rbac_equals_config_rbac() {
    let objects = render(&["replicaCount=2"]);
    let cases = [
        (
            "ClusterRole",
            "release-inference-access-manager",
            "config/rbac/role.yaml",
        ),
        (
            "Role",
            "release-inference-access-leader-election",
            "config/rbac/leader_election_role.yaml",
        ),
        (
            "ClusterRole",
            "release-inference-access-editor",
            "config/rbac/inferenceaccess_editor_role.yaml",
        ),
        (
            "ClusterRole",
            "release-inference-access-viewer",
            "config/rbac/inferenceaccess_viewer_role.yaml",
        ),
    ];
    for (kind, name, source) in cases {
        let source = read_yaml(source).unwrap_or_else(|err| panic!("{err}"));
        let rendered = the(&objects, kind, name);
        assert_eq!(rendered["rules"], source["rules"], "{kind}/{name}");
        let aggregation = |role: &Value| -> Vec<(String, Value)> {
            role["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(key, _)| key.contains("/aggregate-to-"))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        };
        assert_eq!(aggregation(rendered), aggregation(&source), "{kind}/{name}");
    }
}

#[test]
fn users_get_edit_and_view_through_aggregation() {
    let objects = render(&[]);
    let editor = the(&objects, "ClusterRole", "release-inference-access-editor");
    let viewer = the(&objects, "ClusterRole", "release-inference-access-viewer");
    for (role, labels) in [
        (
            editor,
            [
                "rbac.authorization.k8s.io/aggregate-to-edit",
                "rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit",
            ],
        ),
        (
            viewer,
            [
                "rbac.authorization.k8s.io/aggregate-to-view",
                "rbac.authorization.kubeflow.org/aggregate-to-kubeflow-view",
            ],
        ),
    ] {
        for label in labels {
            assert_eq!(
                role["metadata"]["labels"][label],
                "true",
                "{}: {label}",
                describe(role)
            );
        }
    }
    // Readers never get write verbs.
    let viewer_verbs: Vec<&Value> = viewer["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["verbs"].as_array().into_iter().flatten())
        .collect();
    assert!(
        viewer_verbs
            .iter()
            .all(|verb| ["get", "list", "watch"].contains(&verb.as_str().unwrap_or("")))
    );
}

#[test]
fn bindings_point_at_the_release_service_account() {
    for set in VALUE_SETS {
        let objects = render(set);
        let deployment = the(&objects, "Deployment", "release-inference-access");
        let account = &deployment["spec"]["template"]["spec"]["serviceAccountName"];
        for binding in of_kind(&objects, "ClusterRoleBinding")
            .into_iter()
            .chain(of_kind(&objects, "RoleBinding"))
        {
            assert_eq!(
                binding["subjects"],
                json!([{"kind": "ServiceAccount", "name": account, "namespace": "operators"}]),
                "{set:?}: {}",
                describe(binding)
            );
            let role_kind = &binding["roleRef"]["kind"];
            let role_name = binding["roleRef"]["name"].as_str().unwrap_or("");
            the(&objects, role_kind.as_str().unwrap_or(""), role_name);
        }
    }
}

#[test]
fn one_replica_runs_without_leader_election_and_never_overlaps() {
    let objects = render(&[]);
    let args = deployment_args(&objects);
    assert!(
        !args.iter().any(|arg| arg.starts_with("--leader-elect")),
        "{args:?}"
    );
    let deployment = the(&objects, "Deployment", "release-inference-access");
    assert_eq!(deployment["spec"]["strategy"], json!({"type": "Recreate"}));
    assert!(of_kind(&objects, "Role").is_empty());
    assert!(
        of_kind(&objects, "PodDisruptionBudget").is_empty(),
        "a PDB would block drains"
    );
}

#[test]
fn several_replicas_elect_a_leader_and_keep_one_through_drains() {
    let objects = render(&["replicaCount=2"]);
    let args = deployment_args(&objects);
    assert!(args.contains(&"--leader-elect".to_owned()), "{args:?}");
    assert!(
        args.contains(&"--lease-name=inference-access-leader".to_owned()),
        "{args:?}"
    );
    let deployment = the(&objects, "Deployment", "release-inference-access");
    assert!(
        deployment["spec"]["strategy"].is_null(),
        "rolling update with a standby"
    );
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env,
        &json!([
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ])
    );
    let role = the(&objects, "Role", "release-inference-access-leader-election");
    assert_eq!(role["metadata"]["namespace"], "operators");
    let budget = the(&objects, "PodDisruptionBudget", "release-inference-access");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert_eq!(budget["spec"]["selector"], deployment["spec"]["selector"]);
}

#[test]
fn turning_leader_election_off_with_several_replicas_is_refused() {
    let err = helm_template(&["replicaCount=2", "leaderElection.enabled=false"])
        .expect_err("two reconciling replicas must not render");
    assert!(
        err.contains("replicaCount > 1 needs leader election"),
        "{err}"
    );
}

#[test]
fn controller_values_become_flags() {
    let objects = render(VALUE_SETS[1]);
    assert_eq!(
        deployment_args(&objects),
        [
            "controller",
            "--metrics-addr=0.0.0.0:8080",
            "--log-level=debug",
            "--log-format=text",
            "--concurrency=8",
            "--namespaces=team-a,team-b",
            "--allowed-audiences=gateway.example.com,istio-ingressgateway.istio-system.svc.cluster.local",
            "--max-token-lifetime=12h",
            "--allowed-gateways=https://*.example.com,http://gw.internal:8080",
            "--allowed-user-id-headers=kubeflow-userid",
            "--allowed-source-principals=cluster.local/ns/gw/sa/gateway",
            "--allow-templates=false",
            "--leader-elect",
            "--lease-name=inference-access-leader",
            "--lease-duration=20s",
        ]
    );
    let deployment = the(&objects, "Deployment", "release-inference-access");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "ghcr.io/inference-access/inference-access@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        container["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        container["env"][2],
        json!({"name": "RUST_BACKTRACE", "value": "full"})
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["imagePullSecrets"],
        json!([{"name": "registry-credentials"}])
    );
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "dedicated", "operator": "Exists"}])
    );
    assert_eq!(pod["topologySpreadConstraints"][0]["maxSkew"], 1);
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    let affinity_term =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        affinity_term["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["team"], "ml-platform");
    assert_eq!(labels["example.com/tier"], "control-plane");
    for object in &objects {
        if object["kind"] != "CustomResourceDefinition" {
            assert_eq!(
                object["metadata"]["labels"]["team"],
                "ml-platform",
                "{}",
                describe(object)
            );
        }
    }
}

#[test]
fn the_service_monitor_scrapes_the_metrics_service() {
    let objects = render(VALUE_SETS[1]);
    let monitor = the(&objects, "ServiceMonitor", "release-inference-access");
    let service = the(&objects, "Service", "release-inference-access-metrics");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(!selector.is_empty());
    for (key, value) in &selector {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    // The per-access series keep the access's namespace, which the alerts and dashboard show.
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
    // The Service reaches the pods.
    let deployment = the(&objects, "Deployment", "release-inference-access");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"]
        .as_object()
        .into_iter()
        .flatten()
    {
        assert_eq!(&pod_labels[key], value, "{key}");
    }
}

#[test]
fn alerts_and_dashboard_ship_the_config_files_unchanged() {
    let objects = render(VALUE_SETS[1]);
    let rule = the(&objects, "PrometheusRule", "release-inference-access");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let rules = read_yaml("config/prometheus/rules.yaml").unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(rule["spec"]["groups"], rules["groups"]);

    let dashboard = the(&objects, "ConfigMap", "release-inference-access-dashboard");
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"],
        "Operators"
    );
    let shipped: Value = serde_json::from_str(
        dashboard["data"]["inference-access.json"]
            .as_str()
            .unwrap_or_default(),
    )
    .unwrap_or_else(|err| panic!("the ConfigMap's dashboard is not JSON: {err}"));
    let source = std::fs::read_to_string(
        packaging_tests::repo_root().join("config/grafana/inference-access.json"),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let source: Value = serde_json::from_str(&source).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(shipped, source);

    // Off by default, like the ServiceMonitor.
    let defaults = render(&[]);
    assert!(of_kind(&defaults, "PrometheusRule").is_empty());
    assert!(of_kind(&defaults, "ConfigMap").is_empty());
}

#[test]
fn the_chart_ships_the_generated_crd_unchanged() {
    let objects = render(&[]);
    let shipped = the(
        &objects,
        "CustomResourceDefinition",
        "inferenceaccesses.inference-access.io",
    );
    let generated = read_yaml("crds/inference-access.io_inferenceaccesses.yaml")
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(shipped, &generated);
}

#[test]
fn the_values_schema_rejects_mistakes() {
    for (pair, complaint) in [
        ("controller.logFormat=xml", "logFormat"),
        ("replicaCount=-1", "replicaCount"),
        ("controler.logLevel=debug", "controler"),
        ("metrics.prometheusRule.enable=true", "enable"),
        (
            "metrics.grafanaDashboard.labels.grafana_dashboard=1",
            "grafana_dashboard",
        ),
        ("controller.watchNamespaces={Team_A}", "watchNamespaces"),
        (
            "controller.extraEnv[0].name=DEBUG,controller.extraEnv[0].value=1",
            "extraEnv",
        ),
        ("controller.limits.maxTokenLifetime=1d", "maxTokenLifetime"),
        ("controller.limits.allowTemplates=maybe", "allowTemplates"),
        ("controller.limits.allowedGateways={a b}", "allowedGateways"),
        ("controller.limits.maxLifetime=1h", "maxLifetime"),
    ] {
        let err = helm_template(&[pair]).expect_err(pair);
        assert!(err.contains(complaint), "{pair}: {err}");
    }
}

#[test]
fn watching_namespaces_grants_a_role_in_each_and_nothing_cluster_wide() {
    let cluster_wide = render(&[]);
    let manager_rules = &the(
        &cluster_wide,
        "ClusterRole",
        "release-inference-access-manager",
    )["rules"];
    let source = read_yaml("config/rbac/role.yaml").unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(manager_rules, &source["rules"]);

    let objects = render(&[
        "controller.watchNamespaces={team-a,team-b}",
        "leaderElection.enabled=true",
    ]);
    // The operator holds nothing cluster-wide: no binding at all, and the only ClusterRoles
    // are the user-facing ones that aggregate into edit/view.
    assert!(
        of_kind(&objects, "ClusterRoleBinding").is_empty(),
        "{:?}",
        of_kind(&objects, "ClusterRoleBinding")
    );
    let mut cluster_roles: Vec<String> = of_kind(&objects, "ClusterRole")
        .into_iter()
        .map(describe)
        .collect();
    cluster_roles.sort();
    assert_eq!(
        cluster_roles,
        [
            "ClusterRole/release-inference-access-editor",
            "ClusterRole/release-inference-access-viewer"
        ]
    );
    let account = the(&objects, "ServiceAccount", "release-inference-access");
    let in_namespace = |kind: &str, namespace: &str| -> &Value {
        objects
            .iter()
            .find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == "release-inference-access-manager"
                    && o["metadata"]["namespace"] == namespace
            })
            .unwrap_or_else(|| panic!("no {kind} in {namespace}"))
    };
    for namespace in ["team-a", "team-b"] {
        let role = in_namespace("Role", namespace);
        assert_eq!(&role["rules"], manager_rules, "the Role in {namespace}");
        let binding = in_namespace("RoleBinding", namespace);
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "release-inference-access-manager"})
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "operators"}])
        );
    }
    // Roles exactly where the operator watches; the Lease's Role stays in its own namespace.
    let mut role_namespaces: Vec<&str> = of_kind(&objects, "Role")
        .into_iter()
        .filter(|role| role["metadata"]["name"] == "release-inference-access-manager")
        .filter_map(|role| role["metadata"]["namespace"].as_str())
        .collect();
    role_namespaces.sort_unstable();
    assert_eq!(role_namespaces, ["team-a", "team-b"]);
    assert!(deployment_args(&objects).contains(&"--namespaces=team-a,team-b".to_owned()));
    let lease = the(&objects, "Role", "release-inference-access-leader-election");
    assert_eq!(lease["metadata"]["namespace"], "operators");

    // rbac.create=false renders none of it.
    let unmanaged = render(&["controller.watchNamespaces={team-a}", "rbac.create=false"]);
    assert!(of_kind(&unmanaged, "Role").is_empty());
    assert!(of_kind(&unmanaged, "RoleBinding").is_empty());
}

#[test]
fn limits_pass_no_flag_by_default() {
    let args = deployment_args(&render(&[]));
    for flag in [
        "--allowed-audiences",
        "--max-token-lifetime",
        "--allowed-gateways",
        "--allowed-user-id-headers",
        "--allowed-source-principals",
        "--allow-templates",
    ] {
        assert!(
            !args.iter().any(|arg| arg.starts_with(flag)),
            "{flag} in {args:?}: an empty value keeps the binary's default"
        );
    }
    // false is a value, not "unset".
    let args = deployment_args(&render(&["controller.limits.allowTemplates=true"]));
    assert!(
        args.contains(&"--allow-templates=true".to_owned()),
        "{args:?}"
    );
}
