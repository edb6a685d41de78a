//! Shared test fixtures: kube-local with an admin client, an echo upstream, and a cookie-keeping
//! HTTP client that follows redirects like `requests`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const NS: &str = "kubeflow-user-example-com";
pub const GATEWAY_SA: &str =
    "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
pub const AUD: &str = "istio-ingressgateway.istio-system.svc.cluster.local";

/// Spawns `serve` for every connection on a fresh loopback port; the task ends with the handle.
pub async fn serve_http<F, Fut>(handler: F) -> (String, JoinHandle<()>)
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let handler = handler.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, task)
}

fn json_response(status: StatusCode, body: &Value) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    response
}

/// kube-local plus an admin client: objects are created through the API, as a user would.
pub struct Cluster {
    pub control_plane: kube_local::ControlPlane,
    pub client: kube::Client,
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn inference_services() -> ApiResource {
    resource(
        "serving.kserve.io",
        "v1beta1",
        "InferenceService",
        "inferenceservices",
    )
}

/// The Gateway API CRDs (fixtures/crds, copied from upstream) for kube-local to serve.
pub fn gateway_api_crds() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crds");
    [
        "gatewayclasses",
        "gateways",
        "httproutes",
        "referencegrants",
    ]
    .iter()
    .map(|plural| dir.join(format!("gateway.networking.k8s.io_{plural}.yaml")))
    .collect()
}

/// The resource of an object's apiVersion and kind (regular English plurals).
fn resource_of(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let lower = kind.to_ascii_lowercase();
    let consonant_y = lower.ends_with('y') && !lower.ends_with("ay") && !lower.ends_with("ey");
    let plural = if consonant_y {
        format!("{}ies", &lower[..lower.len() - 1])
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    };
    resource(group, version, kind, &plural)
}

fn is_cluster_scoped(kind: &str) -> bool {
    matches!(kind, "Namespace" | "GatewayClass")
}

impl Cluster {
    pub async fn start() -> Cluster {
        Self::start_with(kube_local::ControlPlane::builder()).await
    }

    /// kube-local that also serves the Gateway API (Gateway, HTTPRoute, ReferenceGrant).
    pub async fn start_with_gateway_api() -> Cluster {
        Self::start_with(kube_local::ControlPlane::builder().load_crds(&gateway_api_crds())).await
    }

    pub async fn start_with(builder: kube_local::Builder) -> Cluster {
        let control_plane = builder.start().await.unwrap();
        let client = client_for(&control_plane.url(), &control_plane.admin_token());
        Cluster {
            control_plane,
            client,
        }
    }

    pub fn url(&self) -> String {
        self.control_plane.url()
    }

    pub fn admin_token(&self) -> String {
        self.control_plane.admin_token()
    }

    /// Creates the object unless it exists.
    async fn ensure(&self, ar: &ApiResource, namespace: Option<&str>, object: Value) {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        };
        match api
            .create(
                &PostParams::default(),
                &serde_json::from_value(object).unwrap(),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => panic!("create: {error}"),
        }
    }

    fn api_for(&self, object: &Value) -> Api<DynamicObject> {
        let kind = object["kind"].as_str().unwrap();
        let ar = resource_of(object["apiVersion"].as_str().unwrap(), kind);
        match object["metadata"]["namespace"].as_str() {
            Some(ns) if !is_cluster_scoped(kind) => {
                Api::namespaced_with(self.client.clone(), ns, &ar)
            }
            _ => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Creates any object (apiVersion, kind, metadata.namespace) through the API; fails the test
    /// when the API server refuses it.
    pub async fn create(&self, object: Value) {
        let api = self.api_for(&object);
        if let Err(error) = api
            .create(
                &PostParams::default(),
                &serde_json::from_value(object.clone()).unwrap(),
            )
            .await
        {
            panic!("create {}: {error}", object["metadata"]["name"]);
        }
    }

    /// Deletes an object named like `object` (apiVersion, kind, metadata.namespace/name).
    pub async fn delete(&self, object: Value) {
        let api = self.api_for(&object);
        api.delete(
            object["metadata"]["name"].as_str().unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    }

    /// Merge-patches the labels of an object (a null value removes a label).
    pub async fn label(&self, object: Value, labels: Value) {
        let api = self.api_for(&object);
        api.patch(
            object["metadata"]["name"].as_str().unwrap(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .unwrap();
    }

    /// A namespace with labels (e.g. `istio.io/dataplane-mode: ambient`).
    pub async fn labelled_namespace(&self, namespace: &str, labels: Value) {
        self.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}}))
            .await;
    }

    /// The Service KServe's Standard mode puts before a predictor: `<name>-predictor`, port 80,
    /// selecting the InferenceService's pods.
    pub async fn predictor_service(&self, namespace: &str, name: &str, labels: Value) {
        self.create(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("{name}-predictor"), "namespace": namespace, "labels": labels},
            "spec": {"selector": {"serving.kserve.io/inferenceservice": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .await;
    }

    pub async fn ensure_namespace(&self, namespace: &str) {
        let namespaces = resource("", "v1", "Namespace", "namespaces");
        self.ensure(
            &namespaces,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .await;
    }

    pub async fn ensure_service_account(&self, namespace: &str, name: &str) {
        self.ensure_namespace(namespace).await;
        let service_accounts = resource("", "v1", "ServiceAccount", "serviceaccounts");
        self.ensure(
            &service_accounts,
            Some(namespace),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
        )
        .await;
    }

    /// A TokenRequest token (the API server's minimum lifetime is 600 s).
    pub async fn token(
        &self,
        namespace: &str,
        service_account: &str,
        audience: &str,
        seconds: i64,
    ) -> String {
        self.ensure_service_account(namespace, service_account)
            .await;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_owned()],
                expiration_seconds: Some(seconds),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create_token_request(service_account, &PostParams::default(), &request)
            .await
            .unwrap()
            .status
            .unwrap()
            .token
    }

    /// The sample's InferenceService (with or without sidecar); waits for KServe's stand-in to
    /// set status.url and start the predictor pod; returns status.url.
    pub async fn add_model(&self, namespace: &str, name: &str, sidecar: bool) -> String {
        self.ensure_service_account(namespace, "default-editor")
            .await;
        let annotations = if sidecar {
            json!({})
        } else {
            json!({"sidecar.istio.io/inject": "false"})
        };
        self.ensure(
            &inference_services(),
            Some(namespace),
            json!({
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": name, "annotations": annotations},
                "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}},
            }),
        )
        .await;
        self.wait_for_url(namespace, name, |_| true).await
    }

    /// Polls until status.url satisfies `accept` and the predictor pod exists.
    pub async fn wait_for_url(
        &self,
        namespace: &str,
        name: &str,
        accept: impl Fn(&str) -> bool,
    ) -> String {
        let isvcs: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &inference_services());
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let selector = format!("serving.kserve.io/inferenceservice={name},component=predictor");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut interval = tokio::time::interval(Duration::from_millis(50));
        loop {
            interval.tick().await;
            let isvc = isvcs.get(name).await.unwrap();
            let url = isvc.data["status"]["url"]
                .as_str()
                .filter(|u| accept(u))
                .map(str::to_owned);
            let has_pod = !pods
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items
                .is_empty();
            if let (Some(url), true) = (url, has_pod) {
                return url;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "predictor of {namespace}/{name} not ready"
            );
        }
    }

    pub async fn add_policy(&self, namespace: &str, name: &str, spec: Value) {
        let policies = resource(
            "security.istio.io",
            "v1",
            "AuthorizationPolicy",
            "authorizationpolicies",
        );
        self.ensure(
            &policies,
            Some(namespace),
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": name}, "spec": spec}),
        )
        .await;
    }
}

pub fn client_for(url: &str, token: &str) -> kube::Client {
    let mut config = kube::Config::new(url.parse().unwrap());
    config.auth_info.token = Some(token.to_owned().into());
    kube::Client::try_from(config).unwrap()
}

/// The host of a URL (what the sample gets with `cut -d/ -f3`, minus any port).
pub fn host_of(url: &str) -> String {
    url.parse::<http::Uri>().unwrap().host().unwrap().to_owned()
}

/// The policy the operator is meant to write: gateway principal AND the caller's userid header.
pub fn access_policy(model: &str, user: &str) -> Value {
    json!({
        "selector": {"matchLabels": {"serving.kserve.io/inferenceservice": model}},
        "action": "ALLOW",
        "rules": [{
            "from": [{"source": {"principals": [GATEWAY_SA]}}],
            "when": [{"key": "request.headers[kubeflow-userid]", "values": [user]}],
        }],
    })
}

/// An upstream that answers with what it received: method, path, and the kubeflow-userid header.
pub async fn echo_upstream() -> (String, JoinHandle<()>) {
    named_echo_upstream("default").await
}

/// [`echo_upstream`] that also names itself in its answers (`"upstream"`).
pub async fn named_echo_upstream(name: &'static str) -> (String, JoinHandle<()>) {
    serve_http(
        move |request: http::Request<hyper::body::Incoming>| async move {
            let userid = request
                .headers()
                .get("kubeflow-userid")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            json_response(
                StatusCode::OK,
                &json!({
                    "method": request.method().as_str(),
                    "path": request.uri().path_and_query().map(|pq| pq.as_str()),
                    "userid": userid,
                    "upstream": name,
                }),
            )
        },
    )
    .await
}

/// KServe's Gateway `kserve/kserve-ingress-gateway`: class `istio`, one HTTP listener on port 80
/// admitting HTTPRoutes from every namespace.
pub fn kserve_gateway() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "kserve-ingress-gateway", "namespace": "kserve"},
        "spec": {"gatewayClassName": "istio", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}
        ]}
    })
}

/// Envoy's body when ztunnel closes the connection it refused.
pub const RESET: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";

/// A refusal: status, Envoy's body, and the hop the double names.
pub fn assert_denied(answer: &Answer, status: StatusCode, body: &str, hop: &str) {
    assert_eq!((answer.status, answer.body.as_str()), (status, body));
    assert_eq!(answer.headers[mesh_local::DENIED_BY_HEADER], hop);
    assert_eq!(answer.headers["server"], "istio-envoy");
}

/// 403 `RBAC: access denied` from `hop`.
pub fn assert_rbac_denied_by(answer: &Answer, hop: &str) {
    assert_denied(answer, StatusCode::FORBIDDEN, "RBAC: access denied", hop);
}

/// ztunnel refused the connection: 503 from the proxy before it.
pub fn assert_ztunnel_reset(answer: &Answer) {
    assert_denied(answer, StatusCode::SERVICE_UNAVAILABLE, RESET, "ztunnel");
}

/// An upstream that answers with its name, the method, the path and every request header.
pub async fn header_echo_upstream(name: &'static str) -> (String, JoinHandle<()>) {
    serve_http(
        move |request: http::Request<hyper::body::Incoming>| async move {
            let headers: BTreeMap<String, String> = request
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        v.to_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "upstream": name,
                    "method": request.method().as_str(),
                    "path": request.uri().path_and_query().map(|pq| pq.as_str()),
                    "headers": headers,
                }),
            )
        },
    )
    .await
}

/// Logs Kubeflow's default user in through the oauth2-proxy flavour, starting at `start` (a URL
/// that sends browsers to Dex) and following redirects as a browser does; the session cookie
/// stays in `browser`. Returns the answer of the page the login returned to.
pub async fn log_in(browser: &mut Browser, start: &str) -> Answer {
    let form = browser.get(start, &[]).await;
    assert_eq!(form.status, StatusCode::OK, "login form: {}", form.body);
    assert!(form.url.contains("/dex/auth/local/login"), "{}", form.url);
    let done = browser
        .post_form(
            &form.url,
            &[("login", "user@example.com"), ("password", "12341234")],
        )
        .await;
    assert!(
        browser.cookies.contains_key("oauth2_proxy_kubeflow"),
        "{:?}",
        done.history
    );
    done
}

/// Runs the KServe sample's own `get_istio_auth_session` against `url`; returns the session it
/// prints as JSON.
pub async fn sample_login(url: &str, username: &str, password: &str) -> Value {
    mesh_local::model_server::sample_login(url, username, password)
        .await
        .unwrap_or_else(|err| panic!("{err}"))
}

/// POSTs a JSON body through the gateway with the sample's Host and bearer token.
pub async fn post_json(
    gateway_url: &str,
    host: &str,
    path: &str,
    token: &str,
    body: &'static [u8],
) -> Answer {
    let auth = format!("Bearer {token}");
    Browser::default()
        .send(
            Method::POST,
            &format!("{gateway_url}{path}"),
            &[
                ("host", host),
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Bytes::from_static(body),
            false,
        )
        .await
}

/// One received response, with the URL it answered.
pub struct Answer {
    pub status: StatusCode,
    pub url: String,
    pub headers: http::HeaderMap,
    pub body: String,
    /// Responses that redirected on the way (as `requests`' `resp.history`).
    pub history: Vec<(StatusCode, String)>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A `requests.Session` in miniature: keeps cookies, follows 30x like `requests`.
pub struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    pub cookies: BTreeMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser {
            client: Client::builder(TokioExecutor::new()).build_http(),
            cookies: BTreeMap::new(),
        }
    }
}

impl Browser {
    pub async fn get(&mut self, url: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, url, headers, Bytes::new(), true)
            .await
    }

    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(
            Method::POST,
            url,
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::from(body),
            true,
        )
        .await
    }

    pub async fn send(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        follow: bool,
    ) -> Answer {
        let (mut method, mut url, mut body) = (method, url.to_owned(), body);
        let mut history = Vec::new();
        loop {
            let mut builder = http::Request::builder().method(method.clone()).uri(&url);
            for (name, value) in headers {
                if method == Method::GET && *name == "content-type" {
                    continue;
                }
                builder = builder.header(*name, *value);
            }
            if !self.cookies.is_empty() {
                let jar: Vec<String> = self
                    .cookies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                builder = builder.header(header::COOKIE, jar.join("; "));
            }
            // Bounded: a hung gateway fails the test instead of stalling the suite.
            let response = tokio::time::timeout(
                Duration::from_secs(60),
                self.client
                    .request(builder.body(Full::new(body.clone())).unwrap()),
            )
            .await
            .expect("answer within 60 s")
            .unwrap();
            let status = response.status();
            let response_headers = response.headers().clone();
            for set_cookie in response_headers.get_all(header::SET_COOKIE) {
                let text = set_cookie.to_str().unwrap();
                let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
                let (name, value) = pair.split_once('=').unwrap();
                if attributes.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
            let text = String::from_utf8(
                response
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .to_vec(),
            )
            .unwrap();
            let location = response_headers
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok());
            match location {
                Some(location) if follow && status.is_redirection() => {
                    assert!(history.len() < 10, "redirect loop: {history:?}");
                    history.push((status, url.clone()));
                    url = resolve(&url, location);
                    // requests turns 302/303 into GET without body.
                    if status == StatusCode::SEE_OTHER || status == StatusCode::FOUND {
                        method = Method::GET;
                        body = Bytes::new();
                    }
                }
                _ => {
                    return Answer {
                        status,
                        url,
                        headers: response_headers,
                        body: text,
                        history,
                    };
                }
            }
        }
    }
}

/// Resolves a Location against the URL it came from (absolute or absolute-path forms).
pub fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") {
        return location.to_owned();
    }
    let after_scheme = base.trim_start_matches("http://");
    let authority = after_scheme.split('/').next().unwrap();
    format!("http://{authority}{location}")
}
