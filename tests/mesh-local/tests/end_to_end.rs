//! The sample's request through the gateway to the real KServe model server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, AUD, Browser, FakeApiServer, NS, access_policy};
use http::StatusCode;
use mesh_local::{Gateway, ModelServer};
use serde_json::json;

const HOST: &str = "sklearn-iris.kubeflow-user-example-com.example.com";
const EDITOR: &str = "system:serviceaccount:kubeflow-user-example-com:default-editor";
const IRIS_INPUT: &[u8] = include_bytes!("../../model-server/iris-input.json");

async fn post(
    gateway: &Gateway,
    host: &str,
    path: &str,
    token: &str,
    body: &'static [u8],
) -> common::Answer {
    let auth = format!("Bearer {token}");
    Browser::default()
        .send(
            http::Method::POST,
            &format!("{}{path}", gateway.url()),
            &[
                ("host", host),
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            bytes::Bytes::from_static(body),
            false,
        )
        .await
}

#[tokio::test]
async fn sample_prediction_through_gateway_and_real_model_server() {
    let model = ModelServer::start().await.unwrap();
    let api = FakeApiServer::start().await;
    // The sample's InferenceService has a sidecar here, so the 403 path is exercised too.
    api.add_model(NS, "sklearn-iris", &format!("http://{HOST}"), true);
    api.add_model(
        "team-b",
        "by-path",
        "http://models.example.com/serving/team-b/by-path",
        false,
    );
    let gateway = Gateway::builder()
        .api_server(&api.url, ADMIN_TOKEN)
        .upstream(&model.url())
        .audience(AUD)
        .start()
        .await
        .unwrap();
    let editor = api.token(NS, "default-editor", AUD, 3600);

    let denied = post(
        &gateway,
        HOST,
        "/v1/models/sklearn-iris:predict",
        &editor,
        IRIS_INPUT,
    )
    .await;
    assert_eq!(
        (denied.status, denied.body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );

    api.add_policy(
        NS,
        "sklearn-iris-access",
        access_policy("sklearn-iris", EDITOR),
    );
    let allowed = post(
        &gateway,
        HOST,
        "/v1/models/sklearn-iris:predict",
        &editor,
        IRIS_INPUT,
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.body);
    assert_eq!(allowed.json(), json!({"predictions": [1, 1]}));
    assert_eq!(allowed.headers["server"], "istio-envoy");

    let v2 = br#"{"inputs":[{"name":"input-0","shape":[2,4],"datatype":"FP32","data":[6.8,2.8,4.8,1.4,6.0,3.4,4.5,1.6]}]}"#;
    let answer = post(&gateway, HOST, "/v2/models/sklearn-iris/infer", &editor, v2).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["outputs"][0]["data"], json!([1, 1]));

    let auth = format!("Bearer {editor}");
    let ready = Browser::default()
        .get(
            &format!("{}/v1/models/sklearn-iris", gateway.url()),
            &[("host", HOST), ("authorization", &auth)],
        )
        .await;
    assert_eq!(ready.json(), json!({"name": "sklearn-iris", "ready": true}));

    // Path-based routing reaches the same server with the prefix stripped.
    let answer = post(
        &gateway,
        "models.example.com",
        "/serving/team-b/by-path/v1/models/sklearn-iris:predict",
        &editor,
        IRIS_INPUT,
    )
    .await;
    assert_eq!(answer.json(), json!({"predictions": [1, 1]}));

    let stranger = api.token("other-team", "default-editor", AUD, 3600);
    let denied = post(
        &gateway,
        HOST,
        "/v1/models/sklearn-iris:predict",
        &stranger,
        IRIS_INPUT,
    )
    .await;
    assert_eq!(
        (denied.status, denied.body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );
    model.stop().await;
}
