//! Istio ambient mode behind the gateway double: ztunnel enforces L4 only (an ALLOW rule with an
//! HTTP attribute is dropped, so the policy fails closed), a waypoint enforces policies attached
//! with `targetRefs` (only for ingress traffic that opts in), and ztunnel then sees the waypoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{
    AUD, Answer, Browser, Cluster, GATEWAY_SA, NS, access_policy, assert_denied,
    assert_rbac_denied_by, assert_ztunnel_reset, header_echo_upstream, host_of, kserve_gateway,
};
use http::{Method, StatusCode};
use mesh_local::{DENIED_BY_HEADER, Gateway};
use serde_json::{Value, json};

const MODEL: &str = "sklearn-iris";
const SERVICE: &str = "sklearn-iris-predictor";
const EDITOR: &str = "system:serviceaccount:kubeflow-user-example-com:default-editor";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const PREDICT: &str = "/v1/models/sklearn-iris:predict";

fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

fn service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": NS}})
}

/// The waypoint `istioctl waypoint apply` creates for a namespace.
fn waypoint() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "waypoint", "namespace": NS, "labels": {"istio.io/waypoint-for": "service"}},
        "spec": {"gatewayClassName": "istio-waypoint", "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}
    })
}

/// An L4 policy for ztunnel: the predictor admits connections from `principal`.
fn l4_allow(principal: &str) -> Value {
    json!({"selector": {"matchLabels": {"serving.kserve.io/inferenceservice": MODEL}},
           "action": "ALLOW", "rules": [{"from": [{"source": {"principals": [principal]}}]}]})
}

/// An ambient namespace (`extra` labels added) with the model and its Service.
async fn ambient_model(cluster: &Cluster, extra: Value) -> String {
    let mut labels = json!({"istio.io/dataplane-mode": "ambient"});
    labels
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    cluster.labelled_namespace(NS, labels).await;
    // No sidecar annotation: in an ambient namespace that means no sidecar at all.
    let url = cluster.add_model(NS, MODEL, true).await;
    cluster.predictor_service(NS, MODEL, json!({})).await;
    host_of(&url)
}

async fn predict(url: &str, host: &str, token: &str) -> Answer {
    let auth = format!("Bearer {token}");
    Browser::default()
        .send(
            Method::POST,
            &format!("{url}{PREDICT}"),
            &[
                ("host", host),
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Bytes::from_static(b"{}"),
            false,
        )
        .await
}

#[tokio::test]
async fn without_a_waypoint_ztunnel_enforces_l4_only() {
    let cluster = Cluster::start_with_gateway_api().await;
    let host = ambient_model(&cluster, json!({})).await;
    let (upstream, _task) = header_echo_upstream("model").await;
    // Kubeflow's mesh-wide deny-all is on (the default): it binds ztunnel as well.
    let gateway = Gateway::builder()
        .api_server(&cluster.url(), &cluster.admin_token())
        .upstream(&upstream)
        .start()
        .await
        .unwrap();
    let editor = cluster.token(NS, "default-editor", AUD, 3600).await;
    let stranger = cluster
        .token("other-team", "default-editor", AUD, 3600)
        .await;

    // ztunnel refuses the connection: the gateway answers 503, as Envoy does for a reset.
    assert_ztunnel_reset(&predict(&gateway.url(), &host, &editor).await);

    // The sidecar-style grant (selector + header condition) is L7: ztunnel drops its rule and
    // the ALLOW policy admits nobody, its own user included.
    cluster
        .create(policy("sklearn-iris-access", access_policy(MODEL, EDITOR)))
        .await;
    assert_ztunnel_reset(&predict(&gateway.url(), &host, &editor).await);

    // An L4 rule works, and cannot tell callers of the same gateway apart.
    cluster
        .create(policy("from-ingress", l4_allow(GATEWAY_SA)))
        .await;
    for caller in [&editor, &stranger] {
        let answer = predict(&gateway.url(), &host, caller).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert!(answer.headers.get(DENIED_BY_HEADER).is_none());
    }
}

#[tokio::test]
async fn a_waypoint_enforces_service_policies_for_ingress_that_opts_in() {
    let cluster = Cluster::start_with_gateway_api().await;
    let host = ambient_model(&cluster, json!({"istio.io/use-waypoint": "waypoint"})).await;
    cluster.create(waypoint()).await;
    let (upstream, _task) = header_echo_upstream("model").await;
    let gateway = Gateway::builder()
        .api_server(&cluster.url(), &cluster.admin_token())
        .upstream(&upstream)
        .global_deny_all(false)
        .start()
        .await
        .unwrap();
    let editor = cluster.token(NS, "default-editor", AUD, 3600).await;
    let stranger = cluster
        .token("other-team", "default-editor", AUD, 3600)
        .await;
    // The grant for ambient: the same rule, attached to the model's Service.
    cluster
        .create(policy(
            "sklearn-iris-access",
            json!({"targetRefs": [{"group": "", "kind": "Service", "name": SERVICE}], "action": "ALLOW",
                   "rules": [{"from": [{"source": {"principals": [GATEWAY_SA]}}],
                              "when": [{"key": "request.headers[kubeflow-userid]", "values": [EDITOR]}]}]}),
        ))
        .await;

    // Ingress gateways skip waypoints by default: the policy is not enforced at all.
    assert_eq!(
        predict(&gateway.url(), &host, &stranger).await.status,
        StatusCode::OK
    );

    cluster
        .label(service(), json!({"istio.io/ingress-use-waypoint": "true"}))
        .await;
    let owner = predict(&gateway.url(), &host, &editor).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    assert_rbac_denied_by(&predict(&gateway.url(), &host, &stranger).await, "waypoint");

    // Behind the waypoint, ztunnel sees the waypoint's identity, not the gateway's.
    cluster
        .create(policy("from-ingress", l4_allow(GATEWAY_SA)))
        .await;
    assert_ztunnel_reset(&predict(&gateway.url(), &host, &editor).await);
    cluster
        .create(policy(
            "from-waypoint",
            l4_allow(&format!("cluster.local/ns/{NS}/sa/waypoint")),
        ))
        .await;
    assert_eq!(
        predict(&gateway.url(), &host, &editor).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn gateway_api_to_a_waypoint_that_checks_request_principals() {
    let cluster = Cluster::start_with_gateway_api().await;
    let host = ambient_model(
        &cluster,
        json!({"istio.io/use-waypoint": "waypoint", "istio.io/ingress-use-waypoint": "true"}),
    )
    .await;
    cluster.create(waypoint()).await;
    cluster.ensure_namespace("kserve").await;
    cluster.create(kserve_gateway()).await;
    let route_host = "sklearn-iris-kubeflow-user-example-com.example.com";
    cluster
        .create(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": MODEL, "namespace": NS},
            "spec": {"parentRefs": [{"namespace": "kserve", "name": "kserve-ingress-gateway"}],
                     "hostnames": [route_host],
                     "rules": [{"backendRefs": [{"name": SERVICE, "port": 80}]}]}
        }))
        .await;
    // The waypoint verifies the token the gateway passes on, and admits one caller.
    let waypoint_ref =
        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}]);
    cluster
        .create(json!({
            "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": "tokens", "namespace": NS},
            "spec": {"targetRefs": waypoint_ref, "jwtRules": [{"issuer": ISSUER, "audiences": [AUD]}]}
        }))
        .await;
    cluster
        .create(policy(
            "sklearn-iris-access",
            json!({"targetRefs": [{"group": "", "kind": "Service", "name": SERVICE}],
                   "rules": [{"from": [{"source": {
                       "principals": ["cluster.local/ns/kserve/sa/kserve-ingress-gateway-istio"],
                       "requestPrincipals": [format!("{ISSUER}/{EDITOR}")]}}]}]}),
        ))
        .await;
    let (upstream, _task) = header_echo_upstream("model").await;
    let gateway = Gateway::builder()
        .api_server(&cluster.url(), &cluster.admin_token())
        .gateway_api("kserve", "kserve-ingress-gateway")
        .upstream(&upstream)
        .global_deny_all(false)
        .start()
        .await
        .unwrap();
    let url = gateway
        .gateway_api_url("kserve", "kserve-ingress-gateway")
        .unwrap();
    let editor = cluster.token(NS, "default-editor", AUD, 3600).await;
    let stranger = cluster
        .token("other-team", "default-editor", AUD, 3600)
        .await;
    let wrong_audience = cluster
        .token(NS, "default-editor", kube_local::API_AUDIENCE, 3600)
        .await;
    // The classic gateway's host is not on this Gateway.
    assert_eq!(
        predict(&url, &host, &editor).await.status,
        StatusCode::NOT_FOUND
    );

    let owner = predict(&url, route_host, &editor).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    assert_rbac_denied_by(&predict(&url, route_host, &stranger).await, "waypoint");
    assert_denied(
        &predict(&url, route_host, &wrong_audience).await,
        StatusCode::UNAUTHORIZED,
        "Audiences in Jwt are not allowed",
        "waypoint",
    );
}
