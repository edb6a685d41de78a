//! The Dex login through the gateway, walked step by step as the KServe sample's
//! `get_istio_auth_session` does, for both session front ends and both Dex connectors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Browser, Cluster, NS, echo_upstream};
use http::StatusCode;
use mesh_local::{Flavour, Gateway, LdapUser, LoginConfig, StaticUser};

const HOST: &str = "sklearn-iris.kubeflow-user-example-com.example.com";

/// Logs Kubeflow's default user in through the local connector.
async fn default_user_session(gateway: &Gateway) -> (Browser, AuthSession) {
    let mut browser = Browser::default();
    let session = get_istio_auth_session(
        &mut browser,
        &gateway.url(),
        "local",
        "user@example.com",
        "12341234",
    )
    .await;
    (browser, session)
}

struct AuthSession {
    redirect_url: String,
    dex_login_url: String,
    /// Status and redirect count of the login POST.
    post_status: StatusCode,
    post_redirects: usize,
    login_page: String,
}

/// `get_istio_auth_session`'s steps: GET the endpoint following redirects; pick a connector when
/// Dex lists them (`/auth` → `/auth/<connector>`); GET that to reach `/auth/<c>/login`; POST.
async fn get_istio_auth_session(
    browser: &mut Browser,
    url: &str,
    connector: &str,
    username: &str,
    password: &str,
) -> AuthSession {
    let answer = browser.get(url, &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "GET {url}");
    assert!(
        !answer.history.is_empty(),
        "endpoint must be secured (redirected)"
    );
    let redirect_url = answer.url.clone();
    let (path, query) = redirect_url.split_once('?').unwrap_or((&redirect_url, ""));
    let mut login_url = redirect_url.clone();
    if path.ends_with("/auth") {
        login_url = format!("{path}/{connector}?{query}");
    }
    let path = login_url.split('?').next().unwrap().to_owned();
    let has_login_path = path.contains("/auth/") && path.ends_with("/login");
    let mut login_page = answer.body.clone();
    if !has_login_path {
        let answer = browser.get(&login_url, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "GET {login_url}");
        login_url = answer.url.clone();
        login_page = answer.body;
    }
    let answer = browser
        .post_form(&login_url, &[("login", username), ("password", password)])
        .await;
    AuthSession {
        redirect_url,
        dex_login_url: login_url,
        post_status: answer.status,
        post_redirects: answer.history.len(),
        login_page: if answer.history.is_empty() {
            answer.body
        } else {
            login_page
        },
    }
}

async fn gateway(api: &Cluster, upstream: &str, login: LoginConfig) -> Gateway {
    Gateway::builder()
        .api_server(&api.url(), &api.admin_token())
        .upstream(upstream)
        .login(login)
        .start()
        .await
        .unwrap()
}

fn both_connectors(flavour: Flavour) -> LoginConfig {
    LoginConfig {
        flavour,
        ldap_users: vec![LdapUser {
            username: "jane".into(),
            password: "ldap-secret".into(),
            email: "jane@example.com".into(),
        }],
        ..LoginConfig::default()
    }
}

async fn predict_with_cookie(gateway: &Gateway, cookie: &str) -> common::Answer {
    let cookie_header = cookie.to_owned();
    Browser::default()
        .send(
            http::Method::POST,
            &format!("{}/v1/models/sklearn-iris:predict", gateway.url()),
            &[
                ("host", HOST),
                ("cookie", &cookie_header),
                ("content-type", "application/json"),
            ],
            bytes::Bytes::from_static(b"{}"),
            false,
        )
        .await
}

#[tokio::test]
async fn oauth2_proxy_flow_with_static_password() {
    let api = Cluster::start().await;
    api.add_model(NS, "sklearn-iris", false).await;
    let (upstream, _task) = echo_upstream().await;
    let gateway = gateway(&api, &upstream, LoginConfig::default()).await;

    // Unauthenticated: the oauth2-proxy sign-in redirect straight into Dex.
    let first = Browser::default()
        .send(
            http::Method::GET,
            &gateway.url(),
            &[],
            bytes::Bytes::new(),
            false,
        )
        .await;
    assert_eq!(first.status, StatusCode::FOUND);
    let location = first.headers["location"].to_str().unwrap();
    assert!(
        location.starts_with(
            "/dex/auth?client_id=kubeflow-oidc-authservice&redirect_uri=%2Foauth2%2Fcallback"
        ),
        "{location}"
    );

    let (browser, session) = default_user_session(&gateway).await;
    // One connector: Dex skipped its list and went on to the local login form.
    assert!(
        session
            .redirect_url
            .contains("/dex/auth/local/login?back=&state="),
        "{}",
        session.redirect_url
    );
    assert_eq!(session.dex_login_url, session.redirect_url);
    assert!(
        session.post_redirects >= 3,
        "POST → approval → callback → target"
    );
    assert_eq!(
        session.post_status,
        StatusCode::OK,
        "lands on the dashboard"
    );
    let cookie = browser
        .cookies
        .get("oauth2_proxy_kubeflow")
        .cloned()
        .expect("session cookie");
    assert!(
        !browser.cookies.contains_key("oauth2_proxy_kubeflow_csrf"),
        "CSRF cookie cleared"
    );

    let answer = predict_with_cookie(&gateway, &format!("oauth2_proxy_kubeflow={cookie}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["userid"], "user@example.com");

    // JSON clients get oauth2-proxy's 401 instead of the redirect.
    let ajax = Browser::default()
        .send(
            http::Method::GET,
            &format!("{}/v1/models/x", gateway.url()),
            &[("accept", "application/json")],
            bytes::Bytes::new(),
            false,
        )
        .await;
    assert_eq!(ajax.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn authservice_flow_with_connector_choice_and_ldap() {
    let api = Cluster::start().await;
    api.add_model(NS, "sklearn-iris", false).await;
    let (upstream, _task) = echo_upstream().await;
    let gateway = gateway(&api, &upstream, both_connectors(Flavour::AuthService)).await;

    // authservice redirects to Dex directly; with two connectors Dex shows its list (200).
    let mut browser = Browser::default();
    let session = get_istio_auth_session(
        &mut browser,
        &format!("{}/v1/models/sklearn-iris", gateway.url()),
        "ldap",
        "jane",
        "ldap-secret",
    )
    .await;
    assert!(session.redirect_url.contains("/dex/auth?client_id=kubeflow-oidc-authservice&redirect_uri=%2Fauthservice%2Foidc%2Fcallback"), "{}", session.redirect_url);
    assert!(
        session
            .dex_login_url
            .contains("/dex/auth/ldap/login?back=&state="),
        "{}",
        session.dex_login_url
    );
    assert!(session.post_redirects >= 3);
    let cookie = browser
        .cookies
        .get("authservice_session")
        .cloned()
        .expect("session cookie");
    assert!(!browser.cookies.contains_key("oauth2_proxy_kubeflow"));

    let answer = predict_with_cookie(&gateway, &format!("authservice_session={cookie}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["userid"], "jane@example.com");
    // An oauth2-proxy cookie name means nothing to authservice.
    let answer = predict_with_cookie(&gateway, &format!("oauth2_proxy_kubeflow={cookie}")).await;
    assert_eq!(answer.status, StatusCode::FOUND);

    // The same gateway's local connector, picked from the list.
    let (browser, session) = default_user_session(&gateway).await;
    assert!(session.dex_login_url.contains("/dex/auth/local/login?"));
    assert!(browser.cookies.contains_key("authservice_session"));
}

#[tokio::test]
async fn wrong_password_shows_the_login_page_again_without_redirect() {
    for (flavour, connector, user, prompt) in [
        (
            Flavour::OAuth2Proxy,
            "local",
            "user@example.com",
            "Invalid Email Address and password.",
        ),
        (
            Flavour::AuthService,
            "ldap",
            "jane",
            "Invalid Username and password.",
        ),
    ] {
        let api = Cluster::start().await;
        let (upstream, _task) = echo_upstream().await;
        let gateway = gateway(&api, &upstream, both_connectors(flavour)).await;
        let mut browser = Browser::default();
        let session =
            get_istio_auth_session(&mut browser, &gateway.url(), connector, user, "wrong").await;
        assert_eq!(session.post_status, StatusCode::OK, "{flavour:?}");
        assert_eq!(
            session.post_redirects, 0,
            "{flavour:?}: no redirect after a failed login"
        );
        assert!(
            session.login_page.contains(prompt),
            "{flavour:?}: {}",
            session.login_page
        );
        assert!(!browser.cookies.contains_key(flavour.session_cookie()));
    }
}

#[tokio::test]
async fn sessions_carry_max_age_and_expire() {
    let api = Cluster::start().await;
    api.add_model(NS, "sklearn-iris", false).await;
    let (upstream, _task) = echo_upstream().await;
    let login = LoginConfig {
        session_max_age: Duration::from_secs(3600),
        static_users: vec![StaticUser {
            email: "ops@example.com".into(),
            password: "pw".into(),
        }],
        ..LoginConfig::default()
    };
    let gateway = gateway(&api, &upstream, login).await;

    let mut browser = Browser::default();
    let session = get_istio_auth_session(
        &mut browser,
        &gateway.url(),
        "local",
        "ops@example.com",
        "pw",
    )
    .await;
    assert!(session.post_redirects > 0);
    let cookie = browser.cookies["oauth2_proxy_kubeflow"].clone();
    let answer = predict_with_cookie(&gateway, &format!("oauth2_proxy_kubeflow={cookie}")).await;
    assert_eq!(answer.status, StatusCode::OK);

    gateway.clock().advance(Duration::from_secs(3600));
    let answer = predict_with_cookie(&gateway, &format!("oauth2_proxy_kubeflow={cookie}")).await;
    assert_eq!(
        answer.status,
        StatusCode::FOUND,
        "expired session → sign-in redirect again"
    );
}

#[tokio::test]
async fn session_cookie_attributes() {
    let api = Cluster::start().await;
    let (upstream, _task) = echo_upstream().await;
    let login = LoginConfig {
        session_max_age: Duration::from_secs(7200),
        ..LoginConfig::default()
    };
    let gateway = gateway(&api, &upstream, login).await;
    // Walk the chain hop by hop to see the callback's Set-Cookie header.
    let mut manual = Browser::default();
    let mut url = gateway.url();
    let mut set_cookie = None;
    let mut method = http::Method::GET;
    let mut body = bytes::Bytes::new();
    let mut headers: Vec<(String, String)> = Vec::new();
    for _ in 0..10 {
        let header_refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let answer = manual
            .send(method.clone(), &url, &header_refs, body.clone(), false)
            .await;
        if let Some(value) = answer
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|v| v.starts_with("oauth2_proxy_kubeflow="))
        {
            set_cookie = Some(value);
            break;
        }
        if answer.url.contains("/login?")
            && method == http::Method::GET
            && answer.status == StatusCode::OK
        {
            method = http::Method::POST;
            body = bytes::Bytes::from_static(b"login=user%40example.com&password=12341234");
            headers = vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )];
            continue;
        }
        let location = answer.headers["location"].to_str().unwrap().to_owned();
        url = common::resolve(&answer.url, &location);
        method = http::Method::GET;
        body = bytes::Bytes::new();
        headers.clear();
    }
    let set_cookie = set_cookie.expect("callback sets the session cookie");
    assert!(set_cookie.contains("Max-Age=7200"), "{set_cookie}");
    assert!(set_cookie.contains("Expires="), "{set_cookie}");
    assert!(set_cookie.contains("Path=/"), "{set_cookie}");
}
