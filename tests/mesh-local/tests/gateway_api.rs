//! The gateway double playing KServe's Gateway API gateway (`kserve/kserve-ingress-gateway`):
//! HTTPRoutes as KServe writes them in Standard mode with `enableGatewayApi`, policies and
//! RequestAuthentications attached to the Gateway with `targetRefs`, CUSTOM (oauth2-proxy).
//! All objects are created through kube-local, which checks them against the upstream schemas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{
    AUD, Answer, Browser, Cluster, assert_denied, assert_rbac_denied_by, header_echo_upstream,
    log_in,
};
use http::{Method, StatusCode};
use mesh_local::Gateway;
use serde_json::{Value, json};

const GW_NS: &str = "kserve";
const GW: &str = "kserve-ingress-gateway";
const TEAM_A: &str = "team-a";
const TEAM_B: &str = "team-b";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const PREDICT: &str = "/v1/models/iris:predict";

fn host(ns: &str, name: &str) -> String {
    format!("{name}-{ns}.example.com")
}

fn gateway_object() -> Value {
    common::kserve_gateway()
}

/// The HTTPRoute KServe creates for an InferenceService in Standard mode with Gateway API.
fn kserve_route(ns: &str, name: &str, backend_namespace: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": GW_NS, "name": GW}],
            "hostnames": [host(ns, name)],
            "rules": [{
                "matches": [{"path": {"type": "RegularExpression", "value": "^/.*"}}],
                "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [
                    {"name": "KServe-Isvc-Name", "value": name}, {"name": "KServe-Isvc-Namespace", "value": ns}]}}],
                "backendRefs": [{"kind": "Service", "name": format!("{name}-predictor"), "namespace": backend_namespace, "port": 80}],
                "timeouts": {"request": "60s"}
            }]
        }
    })
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn target_gateway() -> Value {
    json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GW}])
}

struct Setup {
    cluster: Cluster,
    gateway: Gateway,
    _upstreams: Vec<tokio::task::JoinHandle<()>>,
}

impl Setup {
    /// kube-local with the Gateway API, the Gateway, two models (team-a/iris, team-b/wine) with
    /// their Services and KServe's HTTPRoutes, one echo upstream per Service.
    async fn start() -> Setup {
        let cluster = Cluster::start_with_gateway_api().await;
        cluster.ensure_namespace(GW_NS).await;
        cluster.create(gateway_object()).await;
        for (ns, name) in [(TEAM_A, "iris"), (TEAM_B, "wine")] {
            cluster.add_model(ns, name, false).await;
            cluster.predictor_service(ns, name, json!({})).await;
            cluster.create(kserve_route(ns, name, ns)).await;
        }
        let (iris, iris_task) = header_echo_upstream("iris").await;
        let (wine, wine_task) = header_echo_upstream("wine").await;
        let gateway = Gateway::builder()
            .api_server(&cluster.url(), &cluster.admin_token())
            .gateway_api(GW_NS, GW)
            .upstream_for_service(TEAM_A, "iris-predictor", &iris)
            .upstream_for_service(TEAM_B, "wine-predictor", &wine)
            .start()
            .await
            .unwrap();
        Setup {
            cluster,
            gateway,
            _upstreams: vec![iris_task, wine_task],
        }
    }

    fn url(&self) -> String {
        self.gateway.gateway_api_url(GW_NS, GW).unwrap()
    }

    async fn send(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut all = vec![("host", host), ("content-type", "application/json")];
        all.extend_from_slice(headers);
        Browser::default()
            .send(
                Method::POST,
                &format!("{}{path}", self.url()),
                &all,
                Bytes::from_static(br#"{"instances": [[6.8, 2.8, 4.8, 1.4]]}"#),
                false,
            )
            .await
    }

    async fn predict(&self, host: &str, token: Option<&str>) -> Answer {
        match token {
            Some(token) => {
                let auth = format!("Bearer {token}");
                self.send(host, PREDICT, &[("authorization", &auth)]).await
            }
            None => self.send(host, PREDICT, &[]).await,
        }
    }
}

#[tokio::test]
async fn httproutes_route_by_host_to_their_backend_service() {
    let s = Setup::start().await;
    let iris = s.predict(&host(TEAM_A, "iris"), None).await;
    assert_eq!(iris.status, StatusCode::OK, "{}", iris.body);
    let body = iris.json();
    assert_eq!(body["upstream"], "iris");
    assert_eq!(body["path"], PREDICT);
    // KServe's RequestHeaderModifier reaches the predictor.
    assert_eq!(body["headers"]["kserve-isvc-name"], "iris");
    assert_eq!(body["headers"]["kserve-isvc-namespace"], TEAM_A);
    assert_eq!(
        s.predict(&host(TEAM_B, "wine"), None).await.json()["upstream"],
        "wine"
    );

    // No route for the host: Envoy's 404 with an empty body.
    let none = s.predict("unknown.example.com", None).await;
    assert_eq!(
        (none.status, none.body.as_str()),
        (StatusCode::NOT_FOUND, "")
    );

    // A backend in another namespace needs that namespace's consent (a ReferenceGrant): 500 until.
    s.cluster
        .create(kserve_route(TEAM_A, "borrowed", TEAM_B))
        .await;
    s.cluster
        .predictor_service(TEAM_B, "borrowed", json!({}))
        .await;
    let refused = s.predict(&host(TEAM_A, "borrowed"), None).await;
    assert_eq!(refused.status, StatusCode::INTERNAL_SERVER_ERROR);
    s.cluster
        .create(json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": "team-a-routes", "namespace": TEAM_B},
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": TEAM_A}],
                     "to": [{"group": "", "kind": "Service", "name": "borrowed-predictor"}]}
        }))
        .await;
    // The Service selects no pod (no InferenceService "borrowed"): Envoy has no endpoint.
    let no_pods = s.predict(&host(TEAM_A, "borrowed"), None).await;
    assert_eq!(
        (no_pods.status, no_pods.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
    );

    // A played Gateway that does not exist programs nothing.
    s.cluster.delete(gateway_object()).await;
    assert_eq!(
        s.predict(&host(TEAM_A, "iris"), None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn request_authentication_attached_to_the_gateway() {
    let s = Setup::start().await;
    s.cluster
        .create(json!({
            "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": "kserve-tokens", "namespace": GW_NS},
            "spec": {"targetRefs": target_gateway(), "jwtRules": [{
                "issuer": ISSUER,
                "audiences": [AUD],
                "jwksUri": format!("{ISSUER}/openid/v1/jwks"),
                "outputClaimToHeaders": [{"header": "kubeflow-userid", "claim": "sub"}]
            }]}
        }))
        .await;
    let editor = s.cluster.token(TEAM_A, "default-editor", AUD, 3600).await;
    let iris = host(TEAM_A, "iris");

    // A verified token: its sub replaces a client's kubeflow-userid; the token is not forwarded.
    let auth = format!("Bearer {editor}");
    let ok = s
        .send(
            &iris,
            PREDICT,
            &[
                ("authorization", &auth),
                ("kubeflow-userid", "admin@example.com"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(
        ok.json()["headers"]["kubeflow-userid"],
        "system:serviceaccount:team-a:default-editor"
    );
    assert!(ok.json()["headers"].get("authorization").is_none());

    // Envoy's refusals, named to the gateway hop.
    let api_audience = s
        .cluster
        .token(TEAM_A, "default-editor", kube_local::API_AUDIENCE, 3600)
        .await;
    let foreign =
        mesh_local::jwt::Signer::from_pkcs8(include_bytes!("fixtures/test-signer.pk8.der"), "k")
            .unwrap()
            .sign(
                &json!({"iss": "https://dex.example.com", "sub": "user", "exp": 4_000_000_000_i64}),
            )
            .unwrap();
    for (token, body) in [
        (api_audience.as_str(), "Audiences in Jwt are not allowed"),
        (foreign.as_str(), "Jwt issuer is not configured"),
        (
            "not-a-jwt",
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
    ] {
        let answer = s.predict(&iris, Some(token)).await;
        assert_denied(&answer, StatusCode::UNAUTHORIZED, body, "gateway");
        assert!(
            answer.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer realm=")
        );
    }

    // RequestAuthentication alone requires nothing: no token passes (with no identity).
    let anonymous = s.predict(&iris, None).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    assert!(anonymous.json()["headers"].get("kubeflow-userid").is_none());
}

#[tokio::test]
async fn allow_policy_at_a_shared_gateway_denies_every_other_route() {
    let s = Setup::start().await;
    s.cluster
        .create(json!({
            "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": "kserve-tokens", "namespace": GW_NS},
            "spec": {"targetRefs": target_gateway(), "jwtRules": [{"issuer": ISSUER, "forwardOriginalToken": true}]}
        }))
        .await;
    let editor = s.cluster.token(TEAM_A, "default-editor", AUD, 3600).await;
    let stranger = s.cluster.token(TEAM_B, "default-editor", AUD, 3600).await;
    let (iris, wine) = (host(TEAM_A, "iris"), host(TEAM_B, "wine"));
    // Before any policy everyone reaches both models.
    assert_eq!(
        s.predict(&wine, Some(&stranger)).await.status,
        StatusCode::OK
    );

    // A grant for team-a's model as an ALLOW policy on the Gateway...
    let grant = policy(
        GW_NS,
        "iris-access",
        json!({"targetRefs": target_gateway(), "action": "ALLOW", "rules": [{
            "from": [{"source": {"requestPrincipals": [format!("{ISSUER}/system:serviceaccount:team-a:default-editor")]}}],
            "to": [{"operation": {"hosts": [iris.clone()]}}]
        }]}),
    );
    s.cluster.create(grant.clone()).await;
    let owner = s.predict(&iris, Some(&editor)).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    assert!(
        owner.json()["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer ")
    );
    assert_rbac_denied_by(&s.predict(&iris, Some(&stranger)).await, "gateway");
    assert_rbac_denied_by(&s.predict(&iris, None).await, "gateway");
    // ...locks everyone out of team-b's model on the same Gateway (Istio's ALLOW semantics).
    assert_rbac_denied_by(&s.predict(&wine, Some(&stranger)).await, "gateway");

    // The same grant as a DENY of everyone else on that host leaves other routes alone.
    s.cluster.delete(grant).await;
    s.cluster
        .create(policy(
            GW_NS,
            "iris-deny-others",
            json!({"targetRefs": target_gateway(), "action": "DENY", "rules": [{
                "from": [{"source": {"notRequestPrincipals": [format!("{ISSUER}/system:serviceaccount:team-a:default-editor")]}}],
                "to": [{"operation": {"hosts": [iris.clone()]}}]
            }]}),
        ))
        .await;
    assert_eq!(s.predict(&iris, Some(&editor)).await.status, StatusCode::OK);
    assert_rbac_denied_by(&s.predict(&iris, Some(&stranger)).await, "gateway");
    assert_eq!(
        s.predict(&wine, Some(&stranger)).await.status,
        StatusCode::OK
    );
    assert_eq!(s.predict(&wine, None).await.status, StatusCode::OK);

    // when: claims of the verified token.
    s.cluster
        .create(policy(
            GW_NS,
            "team-a-namespace-only",
            json!({"targetRefs": target_gateway(), "action": "DENY", "rules": [{
                "to": [{"operation": {"hosts": [wine.clone()], "paths": ["/v1/*"], "methods": ["POST"]}}],
                "when": [{"key": "request.auth.claims[kubernetes.io][namespace]", "notValues": [TEAM_B]}]
            }]}),
        ))
        .await;
    assert_eq!(
        s.predict(&wine, Some(&stranger)).await.status,
        StatusCode::OK
    );
    assert_rbac_denied_by(&s.predict(&wine, Some(&editor)).await, "gateway");
}

#[tokio::test]
async fn custom_policy_sends_browsers_to_dex() {
    let s = Setup::start().await;
    // Kubeflow's oauth2-proxy policy, attached to the Gateway: requests without a token log in.
    s.cluster
        .create(policy(
            GW_NS,
            "oauth2-proxy",
            json!({"targetRefs": target_gateway(), "action": "CUSTOM", "provider": {"name": "oauth2-proxy"},
                   "rules": [{"when": [{"key": "request.headers[authorization]", "notValues": ["*"]}]}]}),
        ))
        .await;
    let iris = host(TEAM_A, "iris");
    let browserless = s.predict(&iris, None).await;
    assert_eq!(browserless.status, StatusCode::FOUND);
    assert!(
        browserless.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/dex/auth?client_id=kubeflow-oidc-authservice"),
        "{:?}",
        browserless.headers
    );
    let ajax = s
        .send(&iris, PREDICT, &[("accept", "application/json")])
        .await;
    assert_eq!(ajax.status, StatusCode::UNAUTHORIZED);

    // A session from Dex (the login paths are served on this gateway too) passes with its email.
    let mut browser = Browser::default();
    let back = log_in(&mut browser, &s.url()).await;
    // Back at `/` on this gateway, where no route is: Envoy's 404.
    assert_eq!(back.status, StatusCode::NOT_FOUND);
    let answer = browser
        .send(
            Method::GET,
            &format!("{}/v1/models/iris", s.url()),
            &[("host", &iris)],
            Bytes::new(),
            false,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.json()["headers"]["kubeflow-userid"],
        "user@example.com"
    );

    // A CUSTOM policy naming a provider the mesh does not know denies everything it matches.
    s.cluster
        .create(policy(
            GW_NS,
            "unknown-provider",
            json!({"targetRefs": target_gateway(), "action": "CUSTOM", "provider": {"name": "opa"},
                   "rules": [{"to": [{"operation": {"paths": ["/v2/*"]}}]}]}),
        ))
        .await;
    let token = s.cluster.token(TEAM_A, "default-editor", AUD, 3600).await;
    let auth = format!("Bearer {token}");
    assert_denied(
        &s.send(&iris, "/v2/models/iris/infer", &[("authorization", &auth)])
            .await,
        StatusCode::FORBIDDEN,
        "RBAC: access denied",
        "gateway",
    );
    assert_eq!(s.predict(&iris, Some(&token)).await.status, StatusCode::OK);
}
