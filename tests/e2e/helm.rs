//! The chart as shipped works: the real Helm installs charts/inference-access into kube-local
//! under RBAC enforcement (`helm install --wait`, no values), the admin points it at the gateway
//! with the one value a real install sets for that (`helm upgrade --reuse-values --wait`), and
//! the operator runs as the chart's Deployment would: its flags, and a token of the chart's
//! ServiceAccount bound to the Deployment's Pod, never an admin's. The sample becomes Ready and
//! its credential gets the model through the gateway.

use inference_access::api::InferenceAccess;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use crate::harness::*;
use crate::serving_modes::{
    assert_predicts, assert_refused_by, host_of, owner_token, predict, stranger_token,
};

#[tokio::test]
async fn the_chart_installed_by_helm_runs_the_sample_with_its_own_rights() {
    if skip_on_real_cluster("the_chart_installed_by_helm_runs_the_sample_with_its_own_rights") {
        return;
    }
    let env = Env::start_with_helm_release().await;
    let mut data = DataPath::around(env, |gateway| gateway).await;
    // The one value this cluster needs: where its gateway is (the default is the in-cluster
    // Istio ingress gateway's Service, which kube-local has no network for).
    let allowed = format!(
        "controller.limits.allowedGateways={{{}}}",
        data.gateway.url()
    );
    data.env.helm_upgrade(&[&allowed]).await;
    let env = &data.env;
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), OPERATOR_NS)
        .get("inference-access")
        .await
        .unwrap();
    let flags = controller_flags(&serde_json::to_value(&deployment).unwrap());
    assert!(
        flags.contains(&format!("--allowed-gateways={}", data.gateway.url())),
        "the chart's flags: {flags:?}"
    );

    let stranger = stranger_token(env).await;
    data.apply("AuthorizationPolicy").await;
    let access: InferenceAccess = env.wait_ready(ACCESS).await;
    let host = host_of(&access.status.unwrap().url.unwrap());
    assert_predicts(
        &predict(&data.gateway.url(), &host, Some(&owner_token(env).await)).await,
        "owner",
    );
    assert_refused_by(
        &predict(&data.gateway.url(), &host, Some(&stranger)).await,
        403,
        "sidecar",
        "another ServiceAccount",
    );
    data.wait_endpoint("EndpointReachable").await;

    // Everything the operator did, it did as the chart's ServiceAccount, and the chart's
    // roles were enough: RBAC refused none of its requests.
    let requests = env.operator_requests();
    for (verb, resource, subresource) in [
        ("patch", "inferenceservices", None),
        ("create", "serviceaccounts", Some("token")),
        ("create", "secrets", None),
        ("create", "authorizationpolicies", None),
        ("patch", "inferenceaccesses", Some("status")),
        ("watch", "inferenceaccesses", None),
    ] {
        assert!(
            requests.iter().any(|r| r.verb == verb
                && r.resource == resource
                && r.subresource.as_deref() == subresource),
            "the operator made no {verb} {resource} {subresource:?}: {requests:#?}"
        );
    }
    let refused: Vec<&kube_local::Request> = requests.iter().filter(|r| r.code == 403).collect();
    assert!(refused.is_empty(), "refused by RBAC: {refused:#?}");
}
