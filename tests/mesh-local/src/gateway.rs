//! The ingress gateway double: authentication (RequestAuthentication + oauth2-proxy/authservice),
//! KServe routing, the predictor sidecar's AuthorizationPolicy check, then the real model server.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::http_util::{Response, empty, html, text};
use crate::jwt::{self, Jwks, JwtRule};
use crate::login::{Clock, Login, LoginConfig};
use crate::policy::{self, Decision, RequestAttributes, StoredPolicy, Workload};
use crate::routing::{self, ServiceUrl};

/// The identity requests carry from the ingress gateway to a predictor's sidecar (mTLS).
pub const GATEWAY_PRINCIPAL: &str =
    "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
/// The header Kubeflow's gateway sets from the verified identity.
pub const USERID_HEADER: &str = "kubeflow-userid";
/// Port the predictor container listens on, as the sidecar sees it.
const PREDICTOR_PORT: u16 = 8080;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid API server URL: {0}")]
    ApiServerUrl(String),
    #[error("reading kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("building the API client: {0}")]
    Client(#[source] kube::Error),
    #[error("binding 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("invalid upstream URL {0:?}")]
    Upstream(String),
    #[error("the operating system's random number generator failed")]
    Randomness,
}

enum ApiSource {
    Client(kube::Client),
    Token { url: String, token: String },
    Kubeconfig(PathBuf),
}

/// Configures and starts a [`Gateway`].
pub struct GatewayBuilder {
    api: Option<ApiSource>,
    port: u16,
    default_upstream: Option<String>,
    upstreams: HashMap<(String, String), String>,
    jwt_rule: JwtRule,
    login: LoginConfig,
    global_deny_all: bool,
    clock: Clock,
}

impl GatewayBuilder {
    /// The API server by URL and bearer token (e.g. kube-local's admin token).
    pub fn api_server(mut self, url: &str, bearer_token: &str) -> Self {
        self.api = Some(ApiSource::Token {
            url: url.to_owned(),
            token: bearer_token.to_owned(),
        });
        self
    }

    /// The API server through a ready client (any auth a kubeconfig allows).
    pub fn kube_client(mut self, client: kube::Client) -> Self {
        self.api = Some(ApiSource::Client(client));
        self
    }

    /// The API server from a kubeconfig file (its current context).
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.api = Some(ApiSource::Kubeconfig(path.into()));
        self
    }

    /// Listen port on 127.0.0.1; 0 (default) picks a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Model server for every InferenceService without its own upstream.
    pub fn upstream(mut self, base_url: &str) -> Self {
        self.default_upstream = Some(base_url.trim_end_matches('/').to_owned());
        self
    }

    /// Model server for one InferenceService.
    pub fn upstream_for(mut self, namespace: &str, name: &str, base_url: &str) -> Self {
        self.upstreams.insert(
            (namespace.to_owned(), name.to_owned()),
            base_url.trim_end_matches('/').to_owned(),
        );
        self
    }

    /// Require this audience in bearer tokens (RequestAuthentication `audiences`); none by
    /// default, as Kubeflow's `m2m-token-issuer`.
    pub fn audience(mut self, audience: &str) -> Self {
        self.jwt_rule.audiences.push(audience.to_owned());
        self
    }

    /// Trusted token issuer; default `https://kubernetes.default.svc.cluster.local`.
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.jwt_rule.issuer = issuer.to_owned();
        self
    }

    /// Dex users, front end flavour and session lifetime.
    pub fn login(mut self, login: LoginConfig) -> Self {
        self.login = login;
        self
    }

    /// Kubeflow's mesh-wide deny-all for sidecar-injected workloads (default on).
    pub fn global_deny_all(mut self, enabled: bool) -> Self {
        self.global_deny_all = enabled;
        self
    }

    /// Share a clock (sessions, token expiry) with the test driving the gateway.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub async fn start(self) -> Result<Gateway, GatewayError> {
        let client = match self.api {
            Some(ApiSource::Client(client)) => client,
            Some(ApiSource::Token { url, token }) => {
                let uri: Uri = url
                    .parse()
                    .map_err(|_| GatewayError::ApiServerUrl(url.clone()))?;
                let mut config = kube::Config::new(uri);
                config.auth_info.token = Some(token.into());
                client_from(config)?
            }
            Some(ApiSource::Kubeconfig(path)) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(&path)
                    .map_err(|e| GatewayError::Kubeconfig(e.to_string()))?;
                let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| GatewayError::Kubeconfig(e.to_string()))?;
                client_from(config)?
            }
            None => {
                let config = kube::Config::infer()
                    .await
                    .map_err(|e| GatewayError::Kubeconfig(e.to_string()))?;
                client_from(config)?
            }
        };
        for url in self.default_upstream.iter().chain(self.upstreams.values()) {
            let uri: Uri = url
                .parse()
                .map_err(|_| GatewayError::Upstream(url.clone()))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(GatewayError::Upstream(url.clone()));
            }
        }
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .map_err(|source| GatewayError::Bind {
                port: self.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            port: self.port,
            source,
        })?;
        let state = Arc::new(GatewayState {
            client,
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
            default_upstream: self.default_upstream,
            upstreams: self.upstreams,
            jwt_rule: self.jwt_rule,
            login: Login::new(self.login, self.clock.clone())
                .map_err(|_| GatewayError::Randomness)?,
            global_deny_all: self.global_deny_all,
            clock: self.clock.clone(),
        });
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, state, shutdown_rx));
        Ok(Gateway {
            addr,
            clock: self.clock,
            shutdown: Some(shutdown_tx),
            task,
        })
    }
}

/// A hung API server must not hang requests forever: its lookups are bounded.
fn client_from(mut config: kube::Config) -> Result<kube::Client, GatewayError> {
    config.read_timeout = Some(Duration::from_secs(30));
    kube::Client::try_from(config).map_err(GatewayError::Client)
}

/// A running gateway on 127.0.0.1; stops when dropped.
pub struct Gateway {
    addr: SocketAddr,
    clock: Clock,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            api: None,
            port: 0,
            default_upstream: None,
            upstreams: HashMap::new(),
            jwt_rule: JwtRule::default(),
            login: LoginConfig::default(),
            global_deny_all: true,
            clock: Clock::default(),
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The clock sessions and token lifetimes are judged by; advance it to expire them.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Stops accepting, ends open connections, and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct GatewayState {
    client: kube::Client,
    http: HttpClient<HttpConnector, Full<Bytes>>,
    default_upstream: Option<String>,
    upstreams: HashMap<(String, String), String>,
    jwt_rule: JwtRule,
    login: Login,
    global_deny_all: bool,
    clock: Clock,
}

async fn serve(
    listener: TcpListener,
    state: Arc<GatewayState>,
    mut shutdown: oneshot::Receiver<()>,
) {
    // Connections live in this set, so ending the server task ends them too (no detached tasks).
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

/// Why the gateway could not reach a decision (API server trouble): answered 503.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ControlPlaneError(String);

async fn handle(state: &GatewayState, request: http::Request<Incoming>) -> Response {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return empty(StatusCode::BAD_REQUEST),
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_owned();
    let response = match route_request(state, &parts, &host, body).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%error, "control plane lookup failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "mesh-local: control plane unavailable",
            )
        }
    };
    tracing::info!(method = %parts.method, host, path = parts.uri.path(), status = response.status().as_u16(), "request");
    with_server_header(response)
}

async fn route_request(
    state: &GatewayState,
    parts: &http::request::Parts,
    host: &str,
    body: Bytes,
) -> Result<Response, ControlPlaneError> {
    let path = parts.uri.path();
    if Login::owns(path) {
        return Ok(state
            .login
            .handle(&parts.method, &parts.uri, &parts.headers, &body));
    }

    // 1. Authentication at the gateway.
    let user = match bearer_token(&parts.headers) {
        Some(token) => {
            let jwks = fetch_jwks(&state.client).await?;
            match jwt::verify(token, &state.jwt_rule, &jwks, state.clock.now().as_second()) {
                Ok(claims) => claims.subject,
                Err(error) => return Ok(jwt_rejection(error, host, path)),
            }
        }
        None => match state.login.session_user(&parts.headers) {
            Some(email) => email,
            None => return Ok(state.login.unauthenticated(&parts.headers, &parts.uri)),
        },
    };

    // 2. KServe's VirtualServices.
    let services = list_service_urls(&state.client).await?;
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let Some(route) = routing::route(&services, host, path_and_query) else {
        if path == "/" {
            return Ok(dashboard(&user));
        }
        return Ok(empty(StatusCode::NOT_FOUND));
    };

    // 3. The predictor's sidecar.
    let Some(pod) = predictor_pod(&state.client, &route.namespace, &route.name).await? else {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"));
    };
    let mut headers = parts.headers.clone();
    if let Ok(value) = HeaderValue::from_str(&user) {
        headers.insert(HeaderName::from_static(USERID_HEADER), value);
    }
    if has_sidecar(&pod) {
        let mut policies = list_policies(&state.client, &route.namespace).await?;
        if state.global_deny_all {
            policies.push(StoredPolicy {
                namespace: policy::ROOT_NAMESPACE.to_owned(),
                name: "global-deny-all".to_owned(),
                spec: Default::default(),
            });
        }
        let workload = Workload {
            namespace: route.namespace.clone(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
        };
        let attributes = RequestAttributes {
            source_principal: Some(GATEWAY_PRINCIPAL.to_owned()),
            request_principal: None,
            host: routing::strip_port(host).to_owned(),
            port: PREDICTOR_PORT,
            method: parts.method.to_string(),
            path: route
                .upstream_path_and_query
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned(),
            headers: header_values(&headers),
        };
        if let Decision::Denied { .. } = policy::evaluate(&policies, &workload, &attributes) {
            return Ok(text(StatusCode::FORBIDDEN, "RBAC: access denied"));
        }
    }

    // 4. The model server.
    let upstream = state
        .upstreams
        .get(&(route.namespace.clone(), route.name.clone()))
        .or(state.default_upstream.as_ref());
    let Some(upstream) = upstream else {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"));
    };
    Ok(proxy(
        state,
        &parts.method,
        upstream,
        &route.upstream_path_and_query,
        headers,
        body,
    )
    .await)
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Envoy jwt_authn's 401: the failure text as body and a Bearer challenge.
fn jwt_rejection(error: jwt::JwtError, host: &str, path: &str) -> Response {
    let mut response = text(StatusCode::UNAUTHORIZED, error.to_string());
    let challenge = format!("Bearer realm=\"http://{host}{path}\", error=\"invalid_token\"");
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Kubeflow serves its central dashboard at `/` on the gateway's own host.
fn dashboard(user: &str) -> Response {
    html(
        StatusCode::OK,
        format!(
            "<!DOCTYPE html><html><head><title>Kubeflow Central Dashboard</title></head>\
             <body>mesh-local stand-in for the central dashboard; signed in as {}</body></html>",
            crate::http_util::escape_html(user)
        ),
    )
}

/// Istio injects a sidecar unless the pod opts out by annotation or label.
fn has_sidecar(pod: &Pod) -> bool {
    let opted_out = |map: &Option<BTreeMap<String, String>>| {
        map.as_ref()
            .and_then(|m| m.get("sidecar.istio.io/inject"))
            .is_some_and(|v| v == "false")
    };
    !(opted_out(&pod.metadata.annotations) || opted_out(&pod.metadata.labels))
}

fn header_values(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            map.entry(name.as_str().to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
    map
}

fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// A list whose resource type is not installed (404) is an empty list, as for Istio.
fn not_installed(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

async fn fetch_jwks(client: &kube::Client) -> Result<Jwks, ControlPlaneError> {
    let request = http::Request::get("/openid/v1/jwks")
        .body(Vec::new())
        .map_err(|e| ControlPlaneError(format!("building JWKS request: {e}")))?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| ControlPlaneError(format!("fetching JWKS: {e}")))?;
    serde_json::from_str(&text).map_err(|e| ControlPlaneError(format!("parsing JWKS: {e}")))
}

async fn list_service_urls(client: &kube::Client) -> Result<Vec<ServiceUrl>, ControlPlaneError> {
    let resource = api_resource(
        "serving.kserve.io",
        "v1beta1",
        "InferenceService",
        "inferenceservices",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(e) if not_installed(&e) => return Ok(Vec::new()),
        Err(e) => return Err(ControlPlaneError(format!("listing InferenceServices: {e}"))),
    };
    Ok(list
        .items
        .iter()
        .filter_map(|isvc| {
            let url = isvc.data.get("status")?.get("url")?.as_str()?;
            ServiceUrl::parse(
                isvc.metadata.namespace.as_deref()?,
                isvc.metadata.name.as_deref()?,
                url,
            )
        })
        .collect())
}

async fn predictor_pod(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Pod>, ControlPlaneError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("serving.kserve.io/inferenceservice={name},component=predictor");
    let pods = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| ControlPlaneError(format!("listing predictor pods: {e}")))?;
    Ok(pods.items.into_iter().next())
}

/// Policies in the workload's namespace and the root namespace.
async fn list_policies(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<StoredPolicy>, ControlPlaneError> {
    let resource = api_resource(
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    );
    let mut policies = Vec::new();
    let mut namespaces = vec![namespace];
    if namespace != policy::ROOT_NAMESPACE {
        namespaces.push(policy::ROOT_NAMESPACE);
    }
    for ns in namespaces {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(e) if not_installed(&e) => continue,
            Err(e) => {
                return Err(ControlPlaneError(format!(
                    "listing AuthorizationPolicies: {e}"
                )));
            }
        };
        for object in list.items {
            let name = object.metadata.name.clone().unwrap_or_default();
            let spec = object.data.get("spec").cloned().unwrap_or_default();
            // Istio's admission rejects malformed policies; one that slipped in is skipped.
            match serde_json::from_value(if spec.is_null() {
                serde_json::json!({})
            } else {
                spec
            }) {
                Ok(spec) => policies.push(StoredPolicy {
                    namespace: ns.to_owned(),
                    name,
                    spec,
                }),
                Err(error) => {
                    tracing::warn!(namespace = ns, name, %error, "skipping malformed AuthorizationPolicy")
                }
            }
        }
    }
    Ok(policies)
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

async fn proxy(
    state: &GatewayState,
    method: &Method,
    upstream: &str,
    path_and_query: &str,
    mut headers: HeaderMap,
    body: Bytes,
) -> Response {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let uri = format!("{upstream}{path_and_query}");
    let mut request = match http::Request::builder()
        .method(method.clone())
        .uri(&uri)
        .body(Full::new(body))
    {
        Ok(request) => request,
        Err(_) => return empty(StatusCode::BAD_REQUEST),
    };
    *request.headers_mut() = headers;
    let started = Instant::now();
    let response = match tokio::time::timeout(Duration::from_secs(60), state.http.request(request))
        .await
    {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            );
        }
        Err(_) => return text(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
    };
    let (mut parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream reset before response completed",
            );
        }
    };
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    let elapsed = started.elapsed().as_millis().to_string();
    if let Ok(value) = HeaderValue::from_str(&elapsed) {
        parts.headers.insert("x-envoy-upstream-service-time", value);
    }
    http::Response::from_parts(parts, Full::new(body))
}

fn with_server_header(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("istio-envoy"));
    response
}
