//! The KServe sample's own `get_istio_auth_session` (Python, `requests`) against the login doubles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Cluster, sample_login as run_sample};
use mesh_local::{Flavour, Gateway, LoginConfig};
use serde_json::Value;

async fn gateway(api: &Cluster, flavour: Flavour) -> Gateway {
    Gateway::builder()
        .api_server(&api.url(), &api.admin_token())
        .login(LoginConfig {
            flavour,
            ..LoginConfig::default()
        })
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn sample_function_gets_an_authservice_session() {
    let api = Cluster::start().await;
    let gateway = gateway(&api, Flavour::AuthService).await;
    let session = run_sample(&gateway.url(), "user@example.com", "12341234").await;
    assert_eq!(session["is_secured"], true, "{session}");
    assert!(
        session["dex_login_url"]
            .as_str()
            .unwrap()
            .contains("/dex/auth/local/login?")
    );
    let cookie = session["authservice_session"]
        .as_str()
        .expect("authservice_session");
    assert!(
        session["session_cookie"]
            .as_str()
            .unwrap()
            .contains(&format!("authservice_session={cookie}"))
    );
}

#[tokio::test]
async fn sample_function_with_oauth2_proxy_finds_no_authservice_cookie() {
    // The breakage users hit with Kubeflow 1.9: the login works, the cookie has a new name.
    let api = Cluster::start().await;
    let gateway = gateway(&api, Flavour::OAuth2Proxy).await;
    let session = run_sample(&gateway.url(), "user@example.com", "12341234").await;
    assert_eq!(session["is_secured"], true, "{session}");
    assert_eq!(session["authservice_session"], Value::Null);
    assert!(
        session["session_cookie"]
            .as_str()
            .unwrap()
            .contains("oauth2_proxy_kubeflow="),
        "{session}"
    );
}

#[tokio::test]
async fn sample_function_reports_a_wrong_password() {
    let api = Cluster::start().await;
    let gateway = gateway(&api, Flavour::OAuth2Proxy).await;
    let session = run_sample(&gateway.url(), "user@example.com", "wrong").await;
    assert!(
        session["error"]
            .as_str()
            .unwrap()
            .starts_with("Login credentials were probably invalid"),
        "{session}"
    );
}
