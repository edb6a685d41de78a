//! TokenRequest, the JWT and OIDC documents, TokenReview, authentication and RBAC.
// Helpers outside #[test] fns: a failed setup step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use kube_local::ControlPlane;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::sha2::Sha256;
use rsa::signature::Verifier;
use rsa::{BigUint, RsaPublicKey};
use serde_json::{Value, json};

const NS: &str = "/api/v1/namespaces/team";

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .expect("base64url")
}

fn claims(token: &str) -> Value {
    serde_json::from_slice(&b64(token.split('.').nth(1).expect("payload"))).expect("claims json")
}

async fn setup(cp: &ControlPlane) -> kube::Client {
    let c = admin(cp).await;
    assert_eq!(
        post(&c, "/api/v1/namespaces", namespace("team")).await.code,
        201
    );
    assert_eq!(
        post(
            &c,
            &format!("{NS}/serviceaccounts"),
            json!({"metadata": {"name": "robot"}})
        )
        .await
        .code,
        201
    );
    c
}

fn token_request(aud: &[&str], secs: i64, bound: Option<Value>) -> Value {
    let mut spec = json!({"audiences": aud, "expirationSeconds": secs});
    if let Some(b) = bound {
        spec["boundObjectRef"] = b;
    }
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
}

#[tokio::test]
async fn token_request_follows_the_api_server_rules() {
    let cp = ControlPlane::builder()
        .token_max_expiration(Some(Duration::from_secs(3600)))
        .start()
        .await
        .expect("start");
    let c = setup(&cp).await;
    let url = format!("{NS}/serviceaccounts/robot/token");
    let missing = post(
        &c,
        &format!("{NS}/serviceaccounts/ghost/token"),
        token_request(&["a"], 600, None),
    )
    .await;
    assert_eq!(
        (missing.code, missing.body["message"].as_str()),
        (404, Some("serviceaccounts \"ghost\" not found"))
    );
    let short = post(&c, &url, token_request(&["a"], 599, None)).await;
    assert_eq!(short.code, 422);
    assert!(
        short.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("may not specify a duration less than 10 minutes")
    );
    let capped = post(&c, &url, token_request(&["a"], 7200, None)).await;
    assert_eq!(
        (
            capped.code,
            capped.body["spec"]["expirationSeconds"].as_i64()
        ),
        (201, Some(3600))
    );
    let warning = capped
        .headers
        .get("warning")
        .and_then(|w| w.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(warning.contains("shortened to 3600 seconds"), "{warning}");
    let secret = post(
        &c,
        &format!("{NS}/secrets"),
        json!({"metadata": {"name": "cred"}}),
    )
    .await
    .body;
    let uid = secret["metadata"]["uid"].as_str().expect("uid").to_string();
    let wrong = post(
        &c,
        &url,
        token_request(
            &["a"],
            600,
            Some(json!({"apiVersion": "v1", "kind": "Secret", "name": "cred", "uid": "nope"})),
        ),
    )
    .await;
    assert_eq!(
        (wrong.code, wrong.body["reason"].as_str()),
        (409, Some("Conflict"))
    );
    assert!(
        wrong.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not match the UID in record")
    );
    let gone = post(
        &c,
        &url,
        token_request(
            &["a"],
            600,
            Some(json!({"apiVersion": "v1", "kind": "Secret", "name": "absent"})),
        ),
    )
    .await;
    assert_eq!(gone.code, 404);
    let aud = "istio-ingressgateway.istio-system.svc.cluster.local";
    let ok = post(
        &c,
        &url,
        token_request(
            &[aud],
            1200,
            Some(json!({"apiVersion": "v1", "kind": "Secret", "name": "cred", "uid": uid})),
        ),
    )
    .await;
    assert_eq!(ok.code, 201, "{}", ok.text);
    let token = ok.body["status"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let cl = claims(&token);
    let sa_uid =
        get(&c, &format!("{NS}/serviceaccounts/robot")).await.body["metadata"]["uid"].clone();
    assert_eq!(cl["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(cl["sub"], "system:serviceaccount:team:robot");
    assert_eq!(cl["aud"], json!([aud]));
    assert_eq!(
        cl["kubernetes.io"],
        json!({"namespace": "team", "serviceaccount": {"name": "robot", "uid": sa_uid}, "secret": {"name": "cred", "uid": uid}})
    );
    assert_eq!(
        cl["exp"].as_i64().unwrap_or(0) - cl["iat"].as_i64().unwrap_or(0),
        1200
    );
    assert_eq!(cl["nbf"], cl["iat"]);
    assert!(cl["jti"].is_string());
    let expires: jiff::Timestamp = ok.body["status"]["expirationTimestamp"]
        .as_str()
        .expect("ts")
        .parse()
        .expect("rfc3339");
    assert_eq!(expires.as_second(), cl["exp"].as_i64().unwrap_or(0));
    // The signature verifies against the published JWKS.
    let oidc = get(&c, "/.well-known/openid-configuration").await;
    assert_eq!(
        oidc.body["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    let jwks = get(&c, "/openid/v1/jwks").await.body;
    let key = &jwks["keys"][0];
    let header: Value =
        serde_json::from_slice(&b64(token.split('.').next().unwrap_or_default())).expect("header");
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("RS256"), key["kid"].as_str())
    );
    let public = RsaPublicKey::new(
        BigUint::from_bytes_be(&b64(key["n"].as_str().unwrap_or_default())),
        BigUint::from_bytes_be(&b64(key["e"].as_str().unwrap_or_default())),
    )
    .expect("key");
    let (signed, sig) = token.rsplit_once('.').expect("signature");
    let sig = Signature::try_from(b64(sig).as_slice()).expect("sig");
    assert!(
        VerifyingKey::<Sha256>::new(public)
            .verify(signed.as_bytes(), &sig)
            .is_ok()
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn token_review_and_authentication_track_the_bound_object() {
    let cp = start().await;
    let c = setup(&cp).await;
    let secret = post(
        &c,
        &format!("{NS}/secrets"),
        json!({"metadata": {"name": "cred"}}),
    )
    .await
    .body;
    let bound = json!({"apiVersion": "v1", "kind": "Secret", "name": "cred", "uid": secret["metadata"]["uid"]});
    let url = format!("{NS}/serviceaccounts/robot/token");
    let aud = "istio-ingressgateway.istio-system.svc.cluster.local";
    let mesh_token = post(&c, &url, token_request(&[aud], 600, Some(bound.clone())))
        .await
        .body["status"]["token"]
        .as_str()
        .expect("t")
        .to_string();
    let api_token = post(&c, &url, json!({"spec": {"boundObjectRef": bound}}))
        .await
        .body["status"]["token"]
        .as_str()
        .expect("t")
        .to_string();
    assert_eq!(
        claims(&api_token)["aud"],
        json!(["https://kubernetes.default.svc.cluster.local"]),
        "empty audiences mean the API server"
    );
    let review = |token: String, auds: Vec<&'static str>| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token, "audiences": auds}});
    let r = post(
        &c,
        "/apis/authentication.k8s.io/v1/tokenreviews",
        review(mesh_token.clone(), vec![aud]),
    )
    .await;
    assert_eq!(r.body["status"]["authenticated"], true, "{}", r.text);
    assert_eq!(
        r.body["status"]["user"]["username"],
        "system:serviceaccount:team:robot"
    );
    let wrong_aud = post(
        &c,
        "/apis/authentication.k8s.io/v1/tokenreviews",
        review(mesh_token.clone(), vec![]),
    )
    .await;
    assert_ne!(wrong_aud.body["status"]["authenticated"], true);
    // An API-audience token authenticates callers as the ServiceAccount; a mesh token does not.
    let as_robot = client_for(&cp, &api_token).await;
    let me = post(
        &as_robot,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )
    .await;
    assert_eq!(
        me.body["status"]["userInfo"]["username"],
        "system:serviceaccount:team:robot"
    );
    assert!(
        me.body["status"]["userInfo"]["groups"]
            .to_string()
            .contains("system:serviceaccounts:team")
    );
    let mesh_client = client_for(&cp, &mesh_token).await;
    assert_eq!(get(&mesh_client, "/api/v1/namespaces").await.code, 401);
    let junk = client_for(&cp, "not-a-token").await;
    let denied = get(&junk, "/api/v1/namespaces").await;
    assert_eq!(
        (denied.code, denied.body["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
    // Deleting the bound Secret kills both tokens.
    delete(&c, &format!("{NS}/secrets/cred"), None).await;
    let dead = post(
        &c,
        "/apis/authentication.k8s.io/v1/tokenreviews",
        review(mesh_token, vec![aud]),
    )
    .await;
    assert_ne!(dead.body["status"]["authenticated"], true);
    assert!(
        dead.body["status"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("invalidated")
    );
    assert_eq!(
        get(&as_robot, "/api/v1/namespaces/team/secrets").await.code,
        401
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn missing_credentials_are_rejected_when_required() {
    let cp = ControlPlane::builder()
        .unauthenticated_admin(false)
        .start()
        .await
        .expect("start");
    let resp = reqwest_free_get(&cp.url(), "/api/v1/namespaces").await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    let open = reqwest_free_get(&cp.url(), "/openid/v1/jwks").await;
    assert!(open.starts_with("HTTP/1.1 200"), "{open}");
    cp.shutdown().await;
}

/// A bare HTTP/1.1 GET without credentials (kube's client always sends its token).
async fn reqwest_free_get(base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test]
async fn rbac_enforces_roles_bindings_subresources_and_names() {
    let cp = ControlPlane::builder()
        .rbac(true)
        .start()
        .await
        .expect("start");
    let c = setup(&cp).await;
    let token = post(
        &c,
        &format!("{NS}/serviceaccounts/robot/token"),
        json!({"spec": {}}),
    )
    .await
    .body["status"]["token"]
        .as_str()
        .expect("t")
        .to_string();
    let robot = client_for(&cp, &token).await;
    let denied = get(&robot, &format!("{NS}/secrets")).await;
    assert_eq!(
        (denied.code, denied.body["reason"].as_str()),
        (403, Some("Forbidden"))
    );
    assert_eq!(
        denied.body["message"],
        "secrets is forbidden: User \"system:serviceaccount:team:robot\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\""
    );
    let cluster = get(&robot, "/api/v1/namespaces").await;
    assert!(
        cluster.body["message"]
            .as_str()
            .unwrap_or_default()
            .ends_with("at the cluster scope")
    );
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    post(&c, &format!("{rbac}/namespaces/team/roles"), json!({"metadata": {"name": "r"}, "rules": [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"], "resourceNames": ["robot"]}
    ]})).await;
    post(
        &c,
        &format!("{rbac}/namespaces/team/rolebindings"),
        json!({"metadata": {"name": "rb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "team"}]}),
    )
    .await;
    assert_eq!(get(&robot, &format!("{NS}/secrets")).await.code, 200);
    assert_eq!(
        post(
            &robot,
            &format!("{NS}/secrets"),
            json!({"metadata": {"name": "x"}})
        )
        .await
        .code,
        403
    );
    assert_eq!(
        post(
            &robot,
            &format!("{NS}/serviceaccounts/robot/token"),
            json!({"spec": {"audiences": ["a"]}})
        )
        .await
        .code,
        201
    );
    post(
        &c,
        &format!("{NS}/serviceaccounts"),
        json!({"metadata": {"name": "other"}}),
    )
    .await;
    let other = post(
        &robot,
        &format!("{NS}/serviceaccounts/other/token"),
        json!({"spec": {"audiences": ["a"]}}),
    )
    .await;
    assert_eq!(other.code, 403);
    assert!(
        other.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot create resource \"serviceaccounts/token\"")
    );
    assert_eq!(
        get(&robot, "/api/v1/namespaces/default/secrets").await.code,
        403,
        "a Role binds in its namespace only"
    );
    // A ClusterRole through a ClusterRoleBinding to the group of all ServiceAccounts.
    post(&c, &format!("{rbac}/clusterroles"), json!({"metadata": {"name": "ns-reader"}, "rules": [{"apiGroups": ["*"], "resources": ["namespaces"], "verbs": ["*"]}]})).await;
    post(&c, &format!("{rbac}/clusterrolebindings"), json!({"metadata": {"name": "crb"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ns-reader"}, "subjects": [{"kind": "Group", "name": "system:serviceaccounts"}]})).await;
    assert_eq!(get(&robot, "/api/v1/namespaces").await.code, 200);
    let ssar = |verb: &str, resource: &str| json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {"resourceAttributes": {"namespace": "team", "verb": verb, "resource": resource}}});
    assert_eq!(
        post(
            &robot,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            ssar("get", "secrets")
        )
        .await
        .body["status"]["allowed"],
        true
    );
    assert_eq!(
        post(
            &robot,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            ssar("delete", "secrets")
        )
        .await
        .body["status"]["allowed"],
        false
    );
    // The admin is never denied.
    assert_eq!(get(&c, &format!("{NS}/secrets")).await.code, 200);
    cp.shutdown().await;
}

#[tokio::test]
async fn pod_bound_tokens_carry_the_pod_and_die_with_it() {
    let cp = start().await;
    let c = setup(&cp).await;
    let pod = post(
        &c,
        &format!("{NS}/pods"),
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .await
    .body;
    let bound =
        json!({"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": pod["metadata"]["uid"]});
    let resp = post(
        &c,
        &format!("{NS}/serviceaccounts/robot/token"),
        token_request(&["a"], 600, Some(bound)),
    )
    .await;
    assert_eq!(resp.code, 201, "{}", resp.text);
    let token = resp.body["status"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(
        claims(&token)["kubernetes.io"]["pod"],
        json!({"name": "p", "uid": pod["metadata"]["uid"]})
    );
    let unsupported = post(
        &c,
        &format!("{NS}/serviceaccounts/robot/token"),
        token_request(
            &["a"],
            600,
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "x"})),
        ),
    )
    .await;
    assert_eq!(unsupported.code, 422);
    let review = json!({"spec": {"token": token, "audiences": ["a"]}});
    assert_eq!(
        post(
            &c,
            "/apis/authentication.k8s.io/v1/tokenreviews",
            review.clone()
        )
        .await
        .body["status"]["authenticated"],
        true
    );
    delete(&c, &format!("{NS}/pods/p"), None).await;
    assert_ne!(
        post(&c, "/apis/authentication.k8s.io/v1/tokenreviews", review)
            .await
            .body["status"]["authenticated"],
        true
    );
    cp.shutdown().await;
}
