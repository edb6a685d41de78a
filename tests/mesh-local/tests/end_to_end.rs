//! The sample end to end: kube-local (objects created through its API, TokenRequest tokens,
//! KServe's stand-in setting status.url), the gateway, and the real KServe model server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    AUD, Browser, Cluster, GATEWAY_SA, NS, access_policy, assert_rbac_denied_by, host_of,
    sample_login,
};
use http::{Method, StatusCode};
use mesh_local::{Flavour, Gateway, LoginConfig, ModelServer};
use serde_json::json;

const EDITOR: &str = "system:serviceaccount:kubeflow-user-example-com:default-editor";
const IRIS_INPUT: &[u8] = include_bytes!("../../model-server/iris-input.json");
const V2_INPUT: &[u8] =
    br#"{"inputs":[{"name":"input-0","shape":[2,4],"datatype":"FP32","data":[6.8,2.8,4.8,1.4,6.0,3.4,4.5,1.6]}]}"#;

async fn post(
    gateway: &Gateway,
    host: &str,
    path: &str,
    token: &str,
    body: &'static [u8],
) -> common::Answer {
    common::post_json(&gateway.url(), host, path, token, body).await
}

/// The sample's v1 request with its iris-input.json.
async fn predict_iris(gateway: &Gateway, host: &str, token: &str) -> common::Answer {
    post(
        gateway,
        host,
        "/v1/models/sklearn-iris:predict",
        token,
        IRIS_INPUT,
    )
    .await
}

fn assert_rbac_denied(answer: &common::Answer) {
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );
}

#[tokio::test]
async fn sample_prediction_through_gateway_and_real_model_server() {
    let cluster = Cluster::start().await;
    let model = ModelServer::start().await.unwrap();
    // The sample's InferenceService as published (no sidecar), and the same with a sidecar.
    let open_host = host_of(&cluster.add_model(NS, "sklearn-iris", false).await);
    let meshed_host = host_of(&cluster.add_model(NS, "sklearn-meshed", true).await);
    let gateway = Gateway::builder()
        .api_server(&cluster.url(), &cluster.admin_token())
        .upstream(&model.url())
        .audience(AUD)
        .start()
        .await
        .unwrap();
    let editor = cluster.token(NS, "default-editor", AUD, 3600).await;
    let stranger = cluster
        .token("other-team", "default-editor", AUD, 3600)
        .await;

    // No sidecar: any valid token gets the sample's answer.
    for caller in [&editor, &stranger] {
        let answer = predict_iris(&gateway, &open_host, caller).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.json(), json!({"predictions": [1, 1]}));
        assert_eq!(answer.headers["server"], "istio-envoy");
    }

    // Sidecar: deny-all until the access policy exists, then only its user.
    let denied = predict_iris(&gateway, &meshed_host, &editor).await;
    assert_rbac_denied(&denied);
    cluster
        .add_policy(
            NS,
            "sklearn-meshed-access",
            access_policy("sklearn-meshed", EDITOR),
        )
        .await;
    let allowed = predict_iris(&gateway, &meshed_host, &editor).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);
    assert_eq!(allowed.json(), json!({"predictions": [1, 1]}));
    let denied = predict_iris(&gateway, &meshed_host, &stranger).await;
    assert_rbac_denied(&denied);

    // v2 protocol and the readiness endpoint through the same path.
    let v2 = post(
        &gateway,
        &meshed_host,
        "/v2/models/sklearn-iris/infer",
        &editor,
        V2_INPUT,
    )
    .await;
    assert_eq!(v2.status, StatusCode::OK, "{}", v2.body);
    assert_eq!(v2.json()["outputs"][0]["data"], json!([1, 1]));
    let auth = format!("Bearer {editor}");
    let ready = Browser::default()
        .get(
            &format!("{}/v1/models/sklearn-iris", gateway.url()),
            &[("host", &open_host), ("authorization", &auth)],
        )
        .await;
    assert_eq!(ready.json(), json!({"name": "sklearn-iris", "ready": true}));

    // A full API credential (the API server's audience) is refused at the gateway.
    let api_token = cluster
        .token(NS, "default-editor", kube_local::API_AUDIENCE, 3600)
        .await;
    let refused = predict_iris(&gateway, &open_host, &api_token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    model.stop().await;
}

/// Kubeflow's profile controller's `ns-owner-access-istio` for the profile's owner, as
/// kubeflow/dashboard's profile controller builds it (no selector: every workload of the
/// namespace).
fn ns_owner_access_istio(owner: &str) -> serde_json::Value {
    json!({
        "action": "ALLOW",
        "rules": [
            {"from": [{"source": {"principals": [GATEWAY_SA, "cluster.local/ns/kubeflow/sa/ml-pipeline-ui"]}}],
             "when": [{"key": "request.headers[kubeflow-userid]", "values": [owner]}]},
            {"when": [{"key": "source.namespace", "values": [NS]}]},
            {"to": [{"operation": {"paths": ["/healthz", "/metrics", "/wait-for-drain"]}}]},
            {"from": [{"source": {"principals": ["cluster.local/ns/kubeflow/sa/notebook-controller-service-account"]}}],
             "to": [{"operation": {"methods": ["GET"], "paths": ["*/api/kernels"]}}]}
        ]
    })
}

#[tokio::test]
async fn namespace_owner_session_gets_the_prediction_through_kubeflow_policy() {
    let cluster = Cluster::start().await;
    let model = ModelServer::start().await.unwrap();
    // A sidecar-injected predictor in the owner's profile namespace, behind Kubeflow's deny-all.
    let host = host_of(&cluster.add_model(NS, "sklearn-iris", true).await);
    let gateway = Gateway::builder()
        .api_server(&cluster.url(), &cluster.admin_token())
        .upstream(&model.url())
        .login(LoginConfig {
            flavour: Flavour::AuthService,
            ..LoginConfig::default()
        })
        .start()
        .await
        .unwrap();
    // The sample's own login function, as the namespace owner.
    let session = sample_login(&gateway.url(), "user@example.com", "12341234").await;
    let cookie = session["session_cookie"]
        .as_str()
        .expect("session cookie")
        .to_owned();
    let predict = async || {
        Browser::default()
            .send(
                Method::POST,
                &format!("{}/v1/models/sklearn-iris:predict", gateway.url()),
                &[
                    ("host", &host),
                    ("cookie", &cookie),
                    ("content-type", "application/json"),
                ],
                bytes::Bytes::from_static(IRIS_INPUT),
                false,
            )
            .await
    };

    assert_rbac_denied_by(&predict().await, "sidecar");

    // What Kubeflow's profile controller creates for the profile's owner.
    cluster
        .add_policy(
            NS,
            "ns-owner-access-istio",
            ns_owner_access_istio("user@example.com"),
        )
        .await;
    let answer = predict().await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json(), json!({"predictions": [1, 1]}));
    model.stop().await;
}
