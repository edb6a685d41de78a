//! The gateway against kube-local and an echo upstream: routing, bearer JWTs, the sidecar's
//! AuthorizationPolicy check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{AUD, Browser, Cluster, NS, access_policy, echo_upstream, host_of};
use http::StatusCode;
use kube_local::UrlStyle;
use mesh_local::Gateway;
use serde_json::json;

const EDITOR: &str = "system:serviceaccount:kubeflow-user-example-com:default-editor";
const PREDICT: &str = "/v1/models/sklearn-iris:predict";

struct Setup {
    cluster: Cluster,
    gateway: Gateway,
    _upstream: tokio::task::JoinHandle<()>,
}

async fn setup(
    configure: impl FnOnce(mesh_local::GatewayBuilder) -> mesh_local::GatewayBuilder,
) -> Setup {
    let cluster = Cluster::start().await;
    let (upstream, upstream_task) = echo_upstream().await;
    let builder = Gateway::builder()
        .api_server(&cluster.url(), &cluster.admin_token())
        .upstream(&upstream);
    let gateway = configure(builder).start().await.unwrap();
    Setup {
        cluster,
        gateway,
        _upstream: upstream_task,
    }
}

async fn predict(gateway: &Gateway, host: &str, path: &str, token: &str) -> common::Answer {
    common::post_json(
        &gateway.url(),
        host,
        path,
        token,
        br#"{"instances": [[6.8, 2.8, 4.8, 1.4]]}"#,
    )
    .await
}

#[tokio::test]
async fn routes_by_each_kserve_url_form() {
    let s = setup(|b| b).await;
    let token = s.cluster.token(NS, "default-editor", AUD, 3600).await;

    // Knative form: http://<name>.<ns>.<domain>; kubeflow-userid comes from the token's sub.
    let knative = host_of(&s.cluster.add_model(NS, "sklearn-iris", false).await);
    assert_eq!(
        knative,
        "sklearn-iris.kubeflow-user-example-com.example.com"
    );
    let answer = predict(&s.gateway, &knative, PREDICT, &token).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.json(),
        json!({"method": "POST", "path": PREDICT, "userid": EDITOR, "upstream": "default"})
    );
    assert_eq!(answer.headers["server"], "istio-envoy");
    let with_port = format!("{}:80", knative.to_uppercase());
    assert_eq!(
        predict(&s.gateway, &with_port, PREDICT, &token)
            .await
            .status,
        StatusCode::OK
    );

    // Standard form: http://<name>-<ns>.<domain>; the old host no longer routes.
    s.cluster
        .control_plane
        .set_kserve_url_style(UrlStyle::Standard);
    let standard = s
        .cluster
        .wait_for_url(NS, "sklearn-iris", |u| !u.contains(&knative))
        .await;
    assert_eq!(
        host_of(&standard),
        "sklearn-iris-kubeflow-user-example-com.example.com"
    );
    assert_eq!(
        predict(&s.gateway, &host_of(&standard), PREDICT, &token)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        predict(&s.gateway, &knative, PREDICT, &token).await.status,
        StatusCode::NOT_FOUND
    );

    // pathTemplate: http://<domain>/serving/<ns>/<name>; the prefix is stripped before proxying.
    s.cluster
        .control_plane
        .set_kserve_url_style(UrlStyle::PathTemplate);
    let by_path = s
        .cluster
        .wait_for_url(NS, "sklearn-iris", |u| u.contains("/serving/"))
        .await;
    assert_eq!(
        by_path,
        "http://example.com/serving/kubeflow-user-example-com/sklearn-iris"
    );
    let answer = predict(
        &s.gateway,
        "example.com",
        &format!("/serving/{NS}/sklearn-iris{PREDICT}"),
        &token,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["path"], PREDICT);
    // The sample's `cut -d/ -f3` Host with the plain path reaches nothing.
    assert_eq!(
        predict(&s.gateway, "example.com", PREDICT, &token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn unknown_host_is_404_with_empty_body() {
    let s = setup(|b| b).await;
    s.cluster.add_model(NS, "sklearn-iris", false).await;
    let token = s.cluster.token(NS, "default-editor", AUD, 3600).await;
    let answer = predict(
        &s.gateway,
        "sklearn-iris.kubeflow-user-example-com.svc.cluster.local",
        PREDICT,
        &token,
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body, "");
}

#[tokio::test]
async fn client_supplied_userid_is_overwritten() {
    let s = setup(|b| b).await;
    let host = host_of(&s.cluster.add_model(NS, "sklearn-iris", false).await);
    let token = s.cluster.token(NS, "default-editor", AUD, 3600).await;
    let auth = format!("Bearer {token}");
    let answer = Browser::default()
        .get(
            &format!("{}/v1/models/sklearn-iris", s.gateway.url()),
            &[
                ("host", &host),
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
    let host = host_of(&s.cluster.add_model(NS, "sklearn-iris", false).await);
    let good = s.cluster.token(NS, "default-editor", AUD, 3600).await;
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(good.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let other_key = include_bytes!("fixtures/other-signer.pk8.der");
    let kid = {
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(good.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        header["kid"].as_str().unwrap_or_default().to_owned()
    };
    let forged = mesh_local::jwt::Signer::from_pkcs8(other_key, &kid)
        .unwrap()
        .sign(&claims)
        .unwrap();
    let api_audience = s
        .cluster
        .token(NS, "default-editor", kube_local::API_AUDIENCE, 3600)
        .await;
    let cases = [
        ("bad signature", forged, "Jwt verification fails"),
        (
            "wrong audience",
            api_audience,
            "Audiences in Jwt are not allowed",
        ),
        (
            "not a JWT",
            "abc".to_owned(),
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
    ];
    for (name, token, body) in cases {
        let answer = predict(&s.gateway, &host, PREDICT, &token).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(answer.body, body, "{name}");
        assert!(
            answer.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer realm=")
        );
    }
    let answer = predict(&s.gateway, &host, PREDICT, &good).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let s = setup(|b| b).await;
    let host = host_of(&s.cluster.add_model(NS, "sklearn-iris", false).await);
    let token = s.cluster.token(NS, "default-editor", AUD, 600).await;
    assert_eq!(
        predict(&s.gateway, &host, PREDICT, &token).await.status,
        StatusCode::OK
    );
    // Past exp plus Envoy's 60 s clock skew.
    s.gateway.clock().advance(Duration::from_secs(600 + 61));
    let answer = predict(&s.gateway, &host, PREDICT, &token).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::UNAUTHORIZED, "Jwt is expired")
    );
}

#[tokio::test]
async fn sidecar_predictors_need_an_allow_policy() {
    let s = setup(|b| b).await;
    let host = host_of(&s.cluster.add_model(NS, "sklearn-iris", true).await);
    let editor = s.cluster.token(NS, "default-editor", AUD, 3600).await;
    let stranger = s
        .cluster
        .token("other-team", "default-editor", AUD, 3600)
        .await;

    // Mesh-wide deny-all: nothing allows yet.
    let answer = predict(&s.gateway, &host, PREDICT, &editor).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );

    // Kubeflow's namespace-owner policy matches emails, never a ServiceAccount's sub.
    let owner = json!({"rules": [{"when": [{"key": "request.headers[kubeflow-userid]", "values": ["user@example.com"]}]}]});
    s.cluster
        .add_policy(NS, "ns-owner-access-istio", owner)
        .await;
    assert_eq!(
        predict(&s.gateway, &host, PREDICT, &editor).await.status,
        StatusCode::FORBIDDEN
    );

    s.cluster
        .add_policy(
            NS,
            "sklearn-iris-access",
            access_policy("sklearn-iris", EDITOR),
        )
        .await;
    let answer = predict(&s.gateway, &host, PREDICT, &editor).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = predict(&s.gateway, &host, PREDICT, &stranger).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );
}

#[tokio::test]
async fn without_a_sidecar_any_valid_token_passes() {
    // The gap GUIDE §1 describes: authentication without per-model authorization.
    let s = setup(|b| b).await;
    let host = host_of(&s.cluster.add_model(NS, "sklearn-iris", false).await);
    s.cluster
        .add_policy(
            NS,
            "deny-everything",
            json!({"action": "DENY", "rules": [{}]}),
        )
        .await;
    let stranger = s
        .cluster
        .token("other-team", "default-editor", AUD, 3600)
        .await;
    assert_eq!(
        predict(&s.gateway, &host, PREDICT, &stranger).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn deny_policies_in_the_root_namespace_apply() {
    let s = setup(|b| b).await;
    let host = host_of(&s.cluster.add_model(NS, "sklearn-iris", true).await);
    s.cluster
        .add_policy(NS, "allow-all", json!({"rules": [{}]}))
        .await;
    let editor = s.cluster.token(NS, "default-editor", AUD, 3600).await;
    assert_eq!(
        predict(&s.gateway, &host, PREDICT, &editor).await.status,
        StatusCode::OK
    );
    s.cluster.ensure_namespace("istio-system").await;
    let no_v1 = json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/v1/*"]}}]}]});
    s.cluster.add_policy("istio-system", "no-v1", no_v1).await;
    assert_eq!(
        predict(&s.gateway, &host, PREDICT, &editor).await.status,
        StatusCode::FORBIDDEN
    );
    let v2 = predict(&s.gateway, &host, "/v2/models/sklearn-iris/infer", &editor).await;
    assert_eq!(v2.status, StatusCode::OK);
}

#[tokio::test]
async fn missing_upstream_is_503() {
    let cluster = Cluster::start().await;
    let gateway = Gateway::builder()
        .api_server(&cluster.url(), &cluster.admin_token())
        .start()
        .await
        .unwrap();
    let host = host_of(&cluster.add_model(NS, "sklearn-iris", false).await);
    let token = cluster.token(NS, "default-editor", AUD, 3600).await;
    let answer = predict(&gateway, &host, PREDICT, &token).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
    );
}

#[tokio::test]
async fn unreachable_upstream_or_api_server_is_503() {
    // Port 1 on loopback: nothing listens there, connections are refused at once.
    let s = setup(|b| b.upstream_for(NS, "sklearn-iris", "http://127.0.0.1:1")).await;
    let host = host_of(&s.cluster.add_model(NS, "sklearn-iris", false).await);
    let token = s.cluster.token(NS, "default-editor", AUD, 3600).await;
    let answer = predict(&s.gateway, &host, PREDICT, &token).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.body.starts_with("upstream connect error"),
        "{}",
        answer.body
    );

    let orphan = Gateway::builder()
        .api_server("http://127.0.0.1:1", "irrelevant")
        .start()
        .await
        .unwrap();
    let answer = predict(&orphan, &host, PREDICT, &token).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "mesh-local: control plane unavailable"
        )
    );
}
