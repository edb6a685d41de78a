//! A scoped install (issue: confused deputy, "Scoped install"): the operator watches one
//! namespace and holds only the Roles the chart renders for that (`helm template` with
//! `controller.watchNamespaces`), under RBAC enforcement. The sample still reaches Ready, and
//! kube-local's request log shows the operator never listed or watched across the cluster and
//! never reached into another namespace; its token cannot read a Secret there either.

use inference_access::api::InferenceAccess;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::harness::*;

/// A namespace the operator does not watch, with a Secret it must not read.
const OTHER_NS: &str = "other-team";

/// The chart as a cluster admin installs it for namespace `NS`, with leader election (so the
/// Lease's Role is exercised too) and limits set through values (so the flags the chart
/// writes are ones the binary accepts).
fn rendered_chart() -> Vec<Value> {
    let namespaces = format!("controller.watchNamespaces={{{NS}}}");
    packaging_tests::helm_template_release(
        "inference-access",
        OPERATOR_NS,
        &[
            &namespaces,
            "leaderElection.enabled=true",
            "controller.limits.maxTokenLifetime=12h",
            "controller.limits.allowedAudiences={istio-ingressgateway.istio-system.svc.cluster.local}",
            "controller.limits.allowedGateways={http://istio-ingressgateway.istio-system.svc.cluster.local}",
            "controller.limits.allowTemplates=true",
        ],
    )
    .unwrap_or_else(|err| panic!("{err}"))
}

/// The controller flags of the rendered Deployment (`controller_flags`).
fn chart_flags(rendered: &[Value]) -> Vec<String> {
    let deployment = rendered
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("the chart renders the Deployment");
    controller_flags(deployment)
}

#[tokio::test]
async fn a_scoped_install_works_with_the_charts_roles_alone() {
    if skip_on_real_cluster("a_scoped_install_works_with_the_charts_roles_alone") {
        return;
    }
    let rendered = rendered_chart();
    let flags = chart_flags(&rendered);
    assert!(
        flags.contains(&format!("--namespaces={NS}")),
        "the chart's flags: {flags:?}"
    );
    // The operator's rights, as rendered: Roles only, nothing bound cluster-wide.
    assert!(
        !rendered.iter().any(|o| o["kind"] == "ClusterRoleBinding"),
        "the chart binds a ClusterRole"
    );
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let env = Env::start_with_rendered_rbac(&rendered, &flags).await;
    let admin_secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "elsewhere", "namespace": OTHER_NS},
        "stringData": {"password": "not-for-the-operator"},
    });
    let params = PatchParams::apply("e2e-test").force();
    env.apply_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OTHER_NS}}),
    )
    .await;
    Api::<Secret>::namespaced(env.client.clone(), OTHER_NS)
        .patch("elsewhere", &params, &Patch::Apply(&admin_secret))
        .await
        .unwrap();

    env.apply_example().await;
    env.wait_ready(ACCESS).await;
    let secret = env.api::<Secret>().get(SECRET).await.unwrap();
    assert!(!secret_text(&secret, "token").is_empty());

    // Everything the operator asked for stayed in its namespace (and the Lease's), and the
    // Roles were enough: no request was refused.
    let requests = env.operator_requests();
    assert!(
        requests.iter().any(|r| r.verb == "watch"),
        "no watch by the operator: {requests:#?}"
    );
    let cluster_wide: Vec<&kube_local::Request> = requests
        .iter()
        .filter(|r| matches!(r.verb.as_str(), "list" | "watch") && r.namespace.is_none())
        .collect();
    assert!(
        cluster_wide.is_empty(),
        "lists or watches across the cluster: {cluster_wide:#?}"
    );
    let elsewhere: Vec<&kube_local::Request> = requests
        .iter()
        .filter(|r| !matches!(r.namespace.as_deref(), Some(NS | OPERATOR_NS)))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "requests outside the watched namespace: {elsewhere:#?}"
    );
    let refused: Vec<&kube_local::Request> = requests.iter().filter(|r| r.code == 403).collect();
    assert!(refused.is_empty(), "refused by RBAC: {refused:#?}");
    assert!(
        requests
            .iter()
            .any(|r| r.resource == "leases" && r.namespace.as_deref() == Some(OPERATOR_NS)),
        "the operator did not take its Lease"
    );

    // With its own token, the operator can read nothing outside the watched namespace.
    let operator = env.operator_client().await;
    assert_forbidden(
        Api::<Secret>::namespaced(operator.clone(), OTHER_NS)
            .get("elsewhere")
            .await,
    );
    assert_forbidden(
        Api::<Secret>::all(operator.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        Api::<Secret>::namespaced(operator, OTHER_NS)
            .list(&ListParams::default())
            .await,
    );
}

#[tokio::test]
async fn auto_under_a_scoped_install_names_the_read_it_lacks() {
    if skip_on_real_cluster("auto_under_a_scoped_install_names_the_read_it_lacks") {
        return;
    }
    let rendered = rendered_chart();
    let flags = chart_flags(&rendered);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let env = Env::start_with_rendered_rbac(&rendered, &flags).await;
    env.apply_example().await;
    env.wait_ready(ACCESS).await;
    // Auto needs the namespace's labels (ambient?), a cluster-scoped read a Role cannot grant:
    // the access says which right is missing, and the credential keeps working.
    env.api::<InferenceAccess>()
        .patch(
            ACCESS,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mesh": {"mode": "Auto"}}})),
        )
        .await
        .unwrap();
    let access = wait_for(
        &env.api::<InferenceAccess>(),
        ACCESS,
        condition_reason("AccessPolicyReady", "DataPathForbidden"),
    )
    .await;
    let status = access.status.unwrap();
    assert_eq!(status.mesh_path.as_deref(), Some("Unknown"));
    let policy = status
        .conditions
        .iter()
        .find(|c| c.type_ == "AccessPolicyReady")
        .unwrap();
    assert!(
        policy.message.contains("get namespaces (cluster-scoped)"),
        "{}",
        policy.message
    );
    let credential = status
        .conditions
        .iter()
        .find(|c| c.type_ == "CredentialIssued")
        .unwrap();
    assert_eq!(credential.status, "True");
    // Nothing was removed: the policy the access held before stays.
    assert!(
        env.api::<inference_access::api::AuthorizationPolicy>()
            .get_opt(ACCESS)
            .await
            .unwrap()
            .is_some()
    );
}

fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}
