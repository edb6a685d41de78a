//! The gateway against the stand-in API server and an echo upstream: routing, bearer JWTs,
//! the sidecar's AuthorizationPolicy check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, AUD, Browser, FakeApiServer, NS, access_policy, echo_upstream};
use http::StatusCode;
use mesh_local::Gateway;
use serde_json::json;

const HOST: &str = "sklearn-iris.kubeflow-user-example-com.example.com";
const EDITOR: &str = "system:serviceaccount:kubeflow-user-example-com:default-editor";

struct Setup {
    api: FakeApiServer,
    gateway: Gateway,
    _upstream: tokio::task::JoinHandle<()>,
}

async fn setup(
    configure: impl FnOnce(mesh_local::GatewayBuilder) -> mesh_local::GatewayBuilder,
) -> Setup {
    let api = FakeApiServer::start().await;
    let (upstream, upstream_task) = echo_upstream().await;
    let builder = Gateway::builder()
        .api_server(&api.url, ADMIN_TOKEN)
        .upstream(&upstream);
    let gateway = configure(builder).start().await.unwrap();
    Setup {
        api,
        gateway,
        _upstream: upstream_task,
    }
}

async fn predict(gateway: &Gateway, host: &str, path: &str, token: &str) -> common::Answer {
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
            bytes::Bytes::from_static(br#"{"instances": [[6.8, 2.8, 4.8, 1.4]]}"#),
            false,
        )
        .await
}

#[tokio::test]
async fn routes_by_host_and_path_and_sets_userid_from_sub() {
    let s = setup(|b| b).await;
    s.api
        .add_model(NS, "sklearn-iris", &format!("http://{HOST}"), false);
    s.api.add_model(
        "team-a",
        "standard",
        "http://standard-team-a.example.com",
        false,
    );
    s.api.add_model(
        "team-b",
        "by-path",
        "http://models.example.com/serving/team-b/by-path",
        false,
    );
    let token = s.api.token(NS, "default-editor", AUD, 3600);

    let answer = predict(&s.gateway, HOST, "/v1/models/sklearn-iris:predict", &token).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.json(),
        json!({"method": "POST", "path": "/v1/models/sklearn-iris:predict", "userid": EDITOR, "upstream": "default"})
    );
    assert_eq!(answer.headers["server"], "istio-envoy");

    let answer = predict(
        &s.gateway,
        "standard-team-a.example.com:80",
        "/v2/models/standard/infer",
        &token,
    )
    .await;
    assert_eq!(answer.json()["path"], "/v2/models/standard/infer");

    let answer = predict(
        &s.gateway,
        "models.example.com",
        "/serving/team-b/by-path/v1/models/by-path:predict",
        &token,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["path"], "/v1/models/by-path:predict");
}

#[tokio::test]
async fn unknown_host_is_404_with_empty_body() {
    let s = setup(|b| b).await;
    s.api
        .add_model(NS, "sklearn-iris", &format!("http://{HOST}"), false);
    let token = s.api.token(NS, "default-editor", AUD, 3600);
    let answer = predict(
        &s.gateway,
        "sklearn-iris.kubeflow-user-example-com.svc.cluster.local",
        "/v1/models/sklearn-iris:predict",
        &token,
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body, "");
}

#[tokio::test]
async fn client_supplied_userid_is_overwritten() {
    let s = setup(|b| b).await;
    s.api
        .add_model(NS, "sklearn-iris", &format!("http://{HOST}"), false);
    let token = s.api.token(NS, "default-editor", AUD, 3600);
    let auth = format!("Bearer {token}");
    let answer = Browser::default()
        .get(
            &format!("{}/v1/models/sklearn-iris", s.gateway.url()),
            &[
                ("host", HOST),
                ("authorization", &auth),
                ("kubeflow-userid", "admin@example.com"),
            ],
        )
        .await;
    assert_eq!(answer.json()["userid"], EDITOR);
}

#[tokio::test]
async fn bad_tokens_get_envoys_401() {
    let s = setup(|b| b.audience(AUD)).await;
    s.api
        .add_model(NS, "sklearn-iris", &format!("http://{HOST}"), false);
    let other = mesh_local::jwt::Signer::from_pkcs8(
        include_bytes!("fixtures/other-signer.pk8.der"),
        "test-key",
    )
    .unwrap();
    let good = s.api.token(NS, "default-editor", AUD, 3600);
    let claims: serde_json::Value = {
        use base64::Engine as _;
        let payload = good.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    let cases = [
        (
            "bad signature",
            other.sign(&claims).unwrap(),
            "Jwt verification fails",
        ),
        (
            "expired",
            s.api.token(NS, "default-editor", AUD, -120),
            "Jwt is expired",
        ),
        (
            "wrong audience",
            s.api
                .token(NS, "default-editor", "https://kubernetes.default.svc", 3600),
            "Audiences in Jwt are not allowed",
        ),
    ];
    for (name, token, body) in cases {
        let answer = predict(&s.gateway, HOST, "/v1/models/sklearn-iris:predict", &token).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(answer.body, body, "{name}");
        assert!(
            answer.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer realm=")
        );
    }
    let answer = predict(&s.gateway, HOST, "/v1/models/sklearn-iris:predict", &good).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn token_expiry_follows_the_gateway_clock() {
    let s = setup(|b| b).await;
    s.api
        .add_model(NS, "sklearn-iris", &format!("http://{HOST}"), false);
    let token = s.api.token(NS, "default-editor", AUD, 600);
    assert_eq!(
        predict(&s.gateway, HOST, "/v1/models/sklearn-iris:predict", &token)
            .await
            .status,
        StatusCode::OK
    );
    s.gateway
        .clock()
        .advance(std::time::Duration::from_secs(600 + 61));
    let answer = predict(&s.gateway, HOST, "/v1/models/sklearn-iris:predict", &token).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::UNAUTHORIZED, "Jwt is expired")
    );
}

#[tokio::test]
async fn sidecar_predictors_need_an_allow_policy() {
    let s = setup(|b| b).await;
    s.api
        .add_model(NS, "sklearn-iris", &format!("http://{HOST}"), true);
    let editor = s.api.token(NS, "default-editor", AUD, 3600);
    let stranger = s.api.token("other-team", "default-editor", AUD, 3600);

    // Mesh-wide deny-all: nothing allows yet.
    let answer = predict(&s.gateway, HOST, "/v1/models/sklearn-iris:predict", &editor).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );

    // Kubeflow's namespace-owner policy matches emails, never a ServiceAccount's sub.
    s.api.add_policy(NS, "ns-owner-access-istio", json!({"rules": [{"when": [{"key": "request.headers[kubeflow-userid]", "values": ["user@example.com"]}]}]}));
    assert_eq!(
        predict(&s.gateway, HOST, "/v1/models/sklearn-iris:predict", &editor)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    s.api.add_policy(
        NS,
        "sklearn-iris-access",
        access_policy("sklearn-iris", EDITOR),
    );
    let answer = predict(&s.gateway, HOST, "/v1/models/sklearn-iris:predict", &editor).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = predict(
        &s.gateway,
        HOST,
        "/v1/models/sklearn-iris:predict",
        &stranger,
    )
    .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );
}

#[tokio::test]
async fn without_a_sidecar_any_valid_token_passes() {
    // The gap GUIDE §1 describes: authentication without per-model authorization.
    let s = setup(|b| b).await;
    s.api
        .add_model(NS, "sklearn-iris", &format!("http://{HOST}"), false);
    s.api.add_policy(
        NS,
        "deny-everything-at-the-sidecar",
        json!({"action": "DENY", "rules": [{}]}),
    );
    let stranger = s.api.token("other-team", "default-editor", AUD, 3600);
    let answer = predict(
        &s.gateway,
        HOST,
        "/v1/models/sklearn-iris:predict",
        &stranger,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn deny_policies_in_the_root_namespace_apply() {
    let s = setup(|b| b).await;
    s.api
        .add_model(NS, "sklearn-iris", &format!("http://{HOST}"), true);
    s.api.add_policy(NS, "allow-all", json!({"rules": [{}]}));
    let editor = s.api.token(NS, "default-editor", AUD, 3600);
    assert_eq!(
        predict(&s.gateway, HOST, "/v1/models/sklearn-iris:predict", &editor)
            .await
            .status,
        StatusCode::OK
    );
    s.api.add_policy(
        "istio-system",
        "no-v1",
        json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/v1/*"]}}]}]}),
    );
    assert_eq!(
        predict(&s.gateway, HOST, "/v1/models/sklearn-iris:predict", &editor)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        predict(&s.gateway, HOST, "/v2/models/sklearn-iris/infer", &editor)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn missing_upstream_is_503() {
    let api = FakeApiServer::start().await;
    let gateway = Gateway::builder()
        .api_server(&api.url, ADMIN_TOKEN)
        .start()
        .await
        .unwrap();
    api.add_model(NS, "sklearn-iris", &format!("http://{HOST}"), false);
    let token = api.token(NS, "default-editor", AUD, 3600);
    let answer = predict(&gateway, HOST, "/v1/models/sklearn-iris:predict", &token).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
    );
}
