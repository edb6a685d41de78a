//! `mesh.mode: Auto` on the paths a KServe model is reached by today, through the gateway
//! double (tests/mesh-local), which enforces each as Istio does: an ambient namespace with a
//! waypoint, and KServe Standard mode with Gateway API on a Gateway shared by two models. On
//! each: the owner's credential gets the model, another ServiceAccount's is refused by the hop
//! that should refuse it, an unauthenticated call is refused, and every object the operator
//! writes was admitted by kube-local against the upstream CRD schemas (Istio's and Gateway API's,
//! with their CEL rules).

use std::path::PathBuf;

use bytes::Bytes;
use http::Method;
use inference_access::api::{AuthorizationPolicy, InferenceAccess, InferenceService};
use inference_access::gateway::client::{GatewayClient, Response};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch};
use kube::api::{PatchParams, PostParams};
use serde_json::json;

use crate::harness::*;

const MODEL: &str = "sklearn-iris";
const SECOND: &str = "second-model";
pub(crate) const GATEWAY_NS: &str = "kserve";
pub(crate) const GATEWAY: &str = "kserve-ingress-gateway";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AUDIENCE: &str = "istio-ingressgateway.istio-system.svc.cluster.local";

/// The upstream Gateway API CRDs, which kube-local serves with their schemas and CEL rules.
pub(crate) fn gateway_api_crds() -> Vec<PathBuf> {
    [
        "gatewayclasses",
        "gateways",
        "httproutes",
        "referencegrants",
    ]
    .iter()
    .map(|plural| {
        repo(&format!(
            "tests/mesh-local/tests/fixtures/crds/gateway.networking.k8s.io_{plural}.yaml"
        ))
    })
    .collect()
}

/// A token of another ServiceAccount of the namespace, for the gateway's audience.
pub(crate) async fn stranger_token(env: &Env) -> String {
    let sas = env.api::<ServiceAccount>();
    let sa =
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "stranger"}});
    sas.patch(
        "stranger",
        &PatchParams::apply("e2e-test"),
        &Patch::Apply(&sa),
    )
    .await
    .unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![AUDIENCE.into()],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let response: TokenRequest = sas
        .create_subresource("token", "stranger", &PostParams::default(), &request)
        .await
        .unwrap();
    response.status.unwrap().token
}

pub(crate) async fn owner_token(env: &Env) -> String {
    let secret = env.api::<Secret>().get(SECRET).await.unwrap();
    secret_text(&secret, "token")
}

/// POSTs the sample's input to `model`'s v1 predict path at `base`, for `host`.
pub(crate) async fn predict(base: &str, host: &str, token: Option<&str>) -> Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("host", host), ("content-type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    GatewayClient::new()
        .unwrap()
        .send(
            Method::POST,
            &format!("{base}/v1/models/{MODEL}:predict"),
            &headers,
            Some(Bytes::from_static(
                br#"{"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}"#,
            )),
        )
        .await
        .unwrap()
}

pub(crate) fn assert_predicts(answer: &Response, who: &str) {
    assert_eq!(
        (answer.status, answer.text()),
        (200, r#"{"predictions":[1,1]}"#.to_owned()),
        "{who}"
    );
}

pub(crate) fn assert_refused_by(answer: &Response, status: u16, hop: &str, who: &str) {
    assert_eq!(answer.status, status, "{who}: {}", answer.text());
    assert_eq!(
        answer.header(mesh_local::DENIED_BY_HEADER),
        Some(hop),
        "{who}"
    );
}

pub(crate) fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// Waits until the access's `AccessPolicyReady` has `reason`.
pub(crate) async fn wait_policy(env: &Env, reason: &'static str) -> InferenceAccess {
    wait_for(
        &env.api::<InferenceAccess>(),
        ACCESS,
        condition_reason("AccessPolicyReady", reason),
    )
    .await
}

pub(crate) fn mesh_path(access: &InferenceAccess) -> Option<String> {
    access.status.as_ref().and_then(|s| s.mesh_path.clone())
}

#[tokio::test]
async fn ambient_with_a_waypoint_admits_only_the_owner() {
    if skip_on_real_cluster("ambient_with_a_waypoint_admits_only_the_owner") {
        return;
    }
    // Kubeflow's mesh-wide deny-all would also bind ztunnel, which then sees the waypoint's
    // principal: that needs an L4 ALLOW for the waypoint, which the operator does not write yet.
    let data = DataPath::start_configured(
        kube_local::ControlPlane::builder().load_crds(&gateway_api_crds()),
        |gateway| gateway.global_deny_all(false),
    )
    .await;
    let env = &data.env;
    // An ambient namespace whose Services use the waypoint, for ingress traffic too.
    apply_object(
        env,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {
        "istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint",
        "istio.io/ingress-use-waypoint": "true"}}}),
    )
    .await;
    // The waypoint `istioctl waypoint apply` creates.
    apply_object(env, json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "waypoint", "namespace": NS, "labels": {"istio.io/waypoint-for": "service"}},
        "spec": {"gatewayClassName": "istio-waypoint", "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}
    }))
    .await;
    let stranger = stranger_token(env).await;
    // KServe's Standard mode (its default since 0.17): the stand-in puts the Service
    // `sklearn-iris-predictor` before the predictor's Deployment, as KServe does.
    data.apply_sample(json!({
        "mesh": {"mode": "Auto"},
        "inferenceService": {"name": MODEL, "template": {
            "metadata": {"annotations": {"serving.kserve.io/deploymentMode": "Standard"}},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}}},
    }))
    .await;
    let access = wait_policy(env, "WaypointPolicyApplied").await;
    assert_eq!(mesh_path(&access).as_deref(), Some("Waypoint"));
    let access = env.wait_ready(ACCESS).await;

    // The policy is attached to the Service (no selector: ztunnel would deny everyone).
    let policy = env.api::<AuthorizationPolicy>().get(ACCESS).await.unwrap();
    assert!(policy.spec.selector.is_none());
    assert_eq!(policy.spec.target_refs[0].kind, "Service");
    assert_eq!(
        policy.spec.target_refs[0].name,
        format!("{MODEL}-predictor")
    );

    let url = access.status.unwrap().url.unwrap();
    let host = host_of(&url);
    let owner = owner_token(env).await;
    assert_predicts(
        &predict(&data.gateway.url(), &host, Some(&owner)).await,
        "owner",
    );
    assert_refused_by(
        &predict(&data.gateway.url(), &host, Some(&stranger)).await,
        403,
        "waypoint",
        "another ServiceAccount",
    );
    // No credential: Kubeflow's gateway sends the caller to Dex.
    let anonymous = predict(&data.gateway.url(), &host, None).await;
    assert!(
        [302, 401].contains(&anonymous.status),
        "anonymous: {}",
        anonymous.status
    );
    data.wait_endpoint("EndpointReachable").await;
}

#[tokio::test]
async fn ambient_without_a_waypoint_writes_nothing_that_denies_everyone() {
    if skip_on_real_cluster("ambient_without_a_waypoint_writes_nothing") {
        return;
    }
    let data = DataPath::start_configured(
        kube_local::ControlPlane::builder().load_crds(&gateway_api_crds()),
        |gateway| gateway.global_deny_all(false),
    )
    .await;
    let env = &data.env;
    apply_object(
        env,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {
        "istio.io/dataplane-mode": "ambient"}}}),
    )
    .await;
    // The sidecar-mode policy exists from before: in ambient it would lock everyone out.
    data.apply("AuthorizationPolicy").await;
    wait_policy(env, "PolicyApplied").await;
    data.apply("Auto").await;
    let access = wait_policy(env, "NoWaypoint").await;
    assert_eq!(mesh_path(&access).as_deref(), Some("Ambient"));
    wait_deleted(&env.api::<AuthorizationPolicy>(), ACCESS).await;
    let issued = wait_for(
        &env.api::<InferenceAccess>(),
        ACCESS,
        condition_is("CredentialIssued", "True"),
    )
    .await;
    let host = host_of(&issued.status.unwrap().url.unwrap());
    // Nothing enforces, and nothing denies: the owner still gets the model.
    let owner = owner_token(env).await;
    assert_predicts(
        &predict(&data.gateway.url(), &host, Some(&owner)).await,
        "owner",
    );
}

/// An InferenceService as a user creates it in KServe's Standard mode; the KServe stand-in
/// (with `enableGatewayApi`) makes its predictor Deployment, Service and the HTTPRoute on the
/// shared Gateway, as KServe does. Its host.
pub(crate) async fn standard_model(env: &Env, name: &str) -> String {
    apply_object(env, json!({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS, "annotations": {
            "serving.kserve.io/deploymentMode": "Standard", "sidecar.istio.io/inject": "false"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                 "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}
    }))
    .await;
    let ready = wait_for(
        &env.api::<InferenceService>(),
        name,
        |i: Option<&InferenceService>| i.is_some_and(|i| i.url().is_some()),
    )
    .await;
    host_of(ready.url().unwrap())
}

/// What the cluster admin installs: Istio's GatewayClass, KServe's Gateway, and a
/// RequestAuthentication on it for the cluster's ServiceAccount tokens.
pub(crate) async fn install_shared_gateway(env: &Env) {
    apply_object(
        env,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NS}}),
    )
    .await;
    apply_object(
        env,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "istio"}, "spec": {"controllerName": "istio.io/gateway-controller"}
        }),
    )
    .await;
    apply_object(env, json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": GATEWAY, "namespace": GATEWAY_NS},
        "spec": {"gatewayClassName": "istio", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}]}
    }))
    .await;
    apply_object(env, json!({
        "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
        "metadata": {"name": "cluster-tokens", "namespace": GATEWAY_NS},
        "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY}],
                 "jwtRules": [{"issuer": ISSUER, "audiences": [AUDIENCE], "forwardOriginalToken": true}]}
    }))
    .await;
}

/// The data path with the gateway double playing the shared Gateway (configured further by
/// `configure`), the operator allowed to send credentials there, and the admin's Gateway
/// installed; with the Gateway's URL.
pub(crate) async fn at_shared_gateway(
    builder: kube_local::Builder,
    configure: impl FnOnce(mesh_local::GatewayBuilder) -> mesh_local::GatewayBuilder,
) -> (DataPath, String) {
    let mut data = DataPath::start_configured(builder, |gateway| {
        configure(gateway.gateway_api(GATEWAY_NS, GATEWAY))
    })
    .await;
    let gateway_url = data.gateway.gateway_api_url(GATEWAY_NS, GATEWAY).unwrap();
    data.env
        .restart_operator_with(&["--allowed-gateways", &gateway_url])
        .await;
    install_shared_gateway(&data.env).await;
    (data, gateway_url)
}

/// The Gateway's owner consents to policies for this namespace's accesses.
pub(crate) async fn consent(env: &Env) {
    apply_object(env, json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "inference-access", "namespace": GATEWAY_NS},
        "spec": {"from": [{"group": "inference-access.io", "kind": "InferenceAccess", "namespace": NS}],
                 "to": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY}]}
    }))
    .await;
}

#[tokio::test]
async fn a_grant_at_a_shared_gateway_leaves_the_other_model_alone() {
    if skip_on_real_cluster("a_grant_at_a_shared_gateway_leaves_the_other_model_alone") {
        return;
    }
    let (data, gateway_url) = at_shared_gateway(
        kube_local::ControlPlane::builder()
            .load_crds(&gateway_api_crds())
            .kserve_gateway_api(true),
        |gateway| gateway,
    )
    .await;
    let env = &data.env;
    let granted = standard_model(env, MODEL).await;
    let other = standard_model(env, SECOND).await;
    let stranger = stranger_token(env).await;
    // Before any grant, anyone reaches both models: the gap the access closes for one.
    assert_predicts(
        &predict(&gateway_url, &other, Some(&stranger)).await,
        "second, before",
    );

    // The access references the model; without the Gateway owner's consent nothing is written.
    env.apply_value(json!({
        "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
        "metadata": {"name": ACCESS, "namespace": NS},
        "spec": {"inferenceService": {"name": MODEL}, "gateway": {"url": gateway_url},
                 "mesh": {"mode": "Auto"}},
    }))
    .await;
    let access = wait_policy(env, "GatewayPolicyNotAllowed").await;
    assert_eq!(mesh_path(&access).as_deref(), Some("Gateway"));
    let policies = Api::<AuthorizationPolicy>::namespaced(env.client.clone(), GATEWAY_NS);
    let name = format!("inference-access.{NS}.{MODEL}");
    assert!(policies.get_opt(&name).await.unwrap().is_none());

    // The Gateway's owner consents for this namespace: the policy is written at the Gateway.
    consent(env).await;
    // Consent is not watched: a change to the access makes the operator look again.
    env.apply_value(json!({
        "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
        "metadata": {"name": ACCESS, "namespace": NS, "annotations": {"e2e/consent": "given"}},
        "spec": {"inferenceService": {"name": MODEL}, "gateway": {"url": gateway_url},
                 "mesh": {"mode": "Auto"}},
    }))
    .await;
    wait_policy(env, "GatewayPolicyApplied").await;
    env.wait_ready(ACCESS).await;
    let policy = policies.get(&name).await.unwrap();
    assert_eq!(policy.spec.action.as_deref(), Some("DENY"));
    assert_eq!(policy.spec.target_refs[0].kind, "Gateway");

    let owner = owner_token(env).await;
    assert_predicts(
        &predict(&gateway_url, &granted, Some(&owner)).await,
        "owner",
    );
    assert_refused_by(
        &predict(&gateway_url, &granted, Some(&stranger)).await,
        403,
        "gateway",
        "another ServiceAccount",
    );
    // No token: no request principal, so the DENY applies (Istio's RequestAuthentication
    // lets token-less requests through to the policies; they answer 403).
    assert_refused_by(
        &predict(&gateway_url, &granted, None).await,
        403,
        "gateway",
        "anonymous",
    );
    // A token the Gateway cannot verify: 401 from its jwt_authn.
    assert_refused_by(
        &predict(&gateway_url, &granted, Some("not.a.jwt")).await,
        401,
        "gateway",
        "a forged token",
    );
    // The second model on the same Gateway: its callers are exactly as before.
    assert_predicts(
        &predict(&gateway_url, &other, Some(&stranger)).await,
        "second, stranger",
    );
    assert_predicts(
        &predict(&gateway_url, &other, None).await,
        "second, anonymous",
    );
    data.wait_endpoint("EndpointReachable").await;
    let (ok, report, _) = doctor(env, ACCESS).await;
    assert!(ok, "{report:#}");
    assert_eq!(report["meshPath"], "Gateway");

    // The Gateway's owner adds a DENY of their own that catches this caller too: doctor names
    // the gateway as the hop and that policy as the one that does not exempt it.
    apply_object(env, json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "maintenance", "namespace": GATEWAY_NS},
        "spec": {"action": "DENY", "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY}],
                 "rules": [{"to": [{"operation": {"paths": ["/v1/*"]}}]}]}
    }))
    .await;
    let (ok, report, _) = doctor(env, ACCESS).await;
    assert!(!ok);
    assert_eq!(
        (&report["failingHop"], &report["reason"]),
        (&json!("gateway"), &json!("GatewayAccessDenied"))
    );
    let listed: Vec<(&str, &str, bool)> = report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["hop"] == "gateway")
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["action"].as_str().unwrap(),
                p["namesIdentity"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        listed.contains(&(&*format!("{GATEWAY_NS}/{name}"), "DENY", true)),
        "{listed:?}"
    );
    assert!(
        listed.contains(&("kserve/maintenance", "DENY", false)),
        "{listed:?}"
    );
    assert_refused_by(
        &predict(&gateway_url, &granted, Some(&owner)).await,
        403,
        "gateway",
        "owner, maintenance",
    );
    Api::<DynamicObject>::namespaced_with(
        env.client.clone(),
        GATEWAY_NS,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("security.istio.io", "v1", "AuthorizationPolicy"),
            "authorizationpolicies",
        ),
    )
    .delete("maintenance", &DeleteParams::default())
    .await
    .unwrap();

    // Deleting the access deletes its policy in the Gateway's namespace (its finalizer).
    env.api::<InferenceAccess>()
        .delete(ACCESS, &DeleteParams::default())
        .await
        .unwrap();
    wait_deleted(&env.api::<InferenceAccess>(), ACCESS).await;
    wait_deleted(&policies, &name).await;
    assert_predicts(
        &predict(&gateway_url, &granted, Some(&stranger)).await,
        "first, after the grant is gone",
    );
}
