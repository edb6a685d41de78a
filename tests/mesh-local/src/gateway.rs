//! The gateway double. One listener plays Kubeflow's Istio ingress gateway (RequestAuthentication
//! `m2m-token-issuer`, oauth2-proxy/authservice, KServe's VirtualServices); one listener per
//! configured Gateway plays a Gateway API gateway run by Istio (its RequestAuthentications and
//! AuthorizationPolicies, its HTTPRoutes). Behind either, the proxies before the model's pod are
//! played too (its sidecar, or ztunnel and the waypoint of ambient mode), then the request goes to
//! the model server. Decisions are the pure modules' (`policy`, `authn`, `httproute`, `mesh`,
//! `routing`); this module reads the cluster and wires them.

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
use k8s_openapi::api::core::v1::{Pod, Service};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::authn::{self, Extraction, JwtRuleSpec};
use crate::cluster::{self, ControlPlaneError};
use crate::http_util::{Response, empty, html, query_pairs, redirect, text};
use crate::httproute::{self, HeaderEdits, RouteOutcome, RouteRequest};
use crate::jwt::{self, JwtError, VerifiedClaims};
use crate::login::{Clock, Login, LoginConfig};
use crate::mesh::{self, Dataplane};
use crate::policy::{
    self, Decision, Enforcer, ObjectRef, RequestAttributes, StoredPolicy, Workload,
};
use crate::routing;

/// The identity requests carry from Kubeflow's ingress gateway to the proxies behind it (mTLS).
pub const GATEWAY_PRINCIPAL: &str =
    "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
/// The header Kubeflow's gateway sets from the verified identity.
pub const USERID_HEADER: &str = "kubeflow-userid";
/// Test-only response header naming the hop that refused a request: `gateway`, `waypoint`,
/// `ztunnel` or `sidecar`. Real Envoy does not say; the body is Envoy's either way.
pub const DENIED_BY_HEADER: &str = "x-mesh-local-denied-by";
/// The ext_authz provider name (Kubeflow's mesh config) that CUSTOM policies reach the
/// oauth2-proxy/authservice double by.
pub const LOGIN_PROVIDER: &str = "oauth2-proxy";
/// Port the predictor container listens on, as the sidecar and ztunnel see it.
const PREDICTOR_PORT: u16 = 8080;
/// Envoy's answer when the upstream closes the connection before answering (how a gateway or
/// waypoint reports ztunnel refusing the connection).
const CONNECTION_TERMINATION: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// The proxy that refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    Gateway,
    Waypoint,
    Ztunnel,
    Sidecar,
}

impl Hop {
    pub fn as_str(self) -> &'static str {
        match self {
            Hop::Gateway => "gateway",
            Hop::Waypoint => "waypoint",
            Hop::Ztunnel => "ztunnel",
            Hop::Sidecar => "sidecar",
        }
    }
}

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
    gateway_api: Vec<(ObjectRef, u16)>,
    default_upstream: Option<String>,
    upstreams: HashMap<(String, String), String>,
    service_upstreams: HashMap<(String, String), String>,
    kubeflow_rule: JwtRuleSpec,
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

    /// Port of Kubeflow's ingress gateway on 127.0.0.1; 0 (default) picks a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Also play the Gateway API Gateway `namespace/name` (e.g. `kserve/kserve-ingress-gateway`)
    /// on a free port of its own: [`Gateway::gateway_api_url`].
    pub fn gateway_api(self, namespace: &str, name: &str) -> Self {
        self.gateway_api_on(namespace, name, 0)
    }

    /// [`GatewayBuilder::gateway_api`] on a given port (0 picks a free one).
    pub fn gateway_api_on(mut self, namespace: &str, name: &str, port: u16) -> Self {
        self.gateway_api
            .push((ObjectRef::new(namespace, name), port));
        self
    }

    /// Model server for every destination without its own upstream.
    pub fn upstream(mut self, base_url: &str) -> Self {
        self.default_upstream = Some(base_url.trim_end_matches('/').to_owned());
        self
    }

    /// Model server for one InferenceService (its pods' `serving.kserve.io/inferenceservice`).
    pub fn upstream_for(mut self, namespace: &str, name: &str, base_url: &str) -> Self {
        self.upstreams.insert(
            (namespace.to_owned(), name.to_owned()),
            base_url.trim_end_matches('/').to_owned(),
        );
        self
    }

    /// Model server behind one Service (an HTTPRoute backend, or a predictor's Service); wins
    /// over [`GatewayBuilder::upstream_for`].
    pub fn upstream_for_service(mut self, namespace: &str, service: &str, base_url: &str) -> Self {
        self.service_upstreams.insert(
            (namespace.to_owned(), service.to_owned()),
            base_url.trim_end_matches('/').to_owned(),
        );
        self
    }

    /// Require this audience in bearer tokens at Kubeflow's gateway (RequestAuthentication
    /// `audiences`); none by default, as Kubeflow's `m2m-token-issuer`.
    pub fn audience(mut self, audience: &str) -> Self {
        self.kubeflow_rule.audiences.push(audience.to_owned());
        self
    }

    /// Trusted token issuer at Kubeflow's gateway; default
    /// `https://kubernetes.default.svc.cluster.local` (keys: the API server's JWKS either way).
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.kubeflow_rule.issuer = issuer.to_owned();
        self
    }

    /// Dex users, front end flavour and session lifetime.
    pub fn login(mut self, login: LoginConfig) -> Self {
        self.login = login;
        self
    }

    /// Kubeflow's mesh-wide deny-all (an empty AuthorizationPolicy `istio-system/global-deny-all`)
    /// at sidecars and ztunnel (default on).
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
        for url in self
            .default_upstream
            .iter()
            .chain(self.upstreams.values())
            .chain(self.service_upstreams.values())
        {
            let uri: Uri = url
                .parse()
                .map_err(|_| GatewayError::Upstream(url.clone()))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(GatewayError::Upstream(url.clone()));
            }
        }
        let mut listeners = Vec::new();
        let (kubeflow, addr) = bind(self.port).await?;
        listeners.push((kubeflow, Entry::Kubeflow));
        let mut gateway_api_addrs = Vec::new();
        for (gateway, port) in self.gateway_api {
            let (listener, addr) = bind(port).await?;
            gateway_api_addrs.push((gateway.clone(), addr));
            listeners.push((listener, Entry::GatewayApi(gateway)));
        }
        let state = Arc::new(GatewayState {
            client,
            http: HttpClient::builder(TokioExecutor::new()).build_http(),
            default_upstream: self.default_upstream,
            upstreams: self.upstreams,
            service_upstreams: self.service_upstreams,
            kubeflow_rule: self.kubeflow_rule,
            login: Login::new(self.login, self.clock.clone())
                .map_err(|_| GatewayError::Randomness)?,
            global_deny_all: self.global_deny_all,
            clock: self.clock.clone(),
        });
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(serve_all(listeners, state, shutdown_rx));
        Ok(Gateway {
            addr,
            gateway_api_addrs,
            clock: self.clock,
            shutdown: Some(shutdown_tx),
            task,
        })
    }
}

async fn bind(port: u16) -> Result<(TcpListener, SocketAddr), GatewayError> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| GatewayError::Bind { port, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| GatewayError::Bind { port, source })?;
    Ok((listener, addr))
}

/// A hung API server must not hang requests forever: its lookups are bounded.
fn client_from(mut config: kube::Config) -> Result<kube::Client, GatewayError> {
    config.read_timeout = Some(Duration::from_secs(30));
    kube::Client::try_from(config).map_err(GatewayError::Client)
}

/// A running gateway on 127.0.0.1; stops when dropped.
pub struct Gateway {
    addr: SocketAddr,
    gateway_api_addrs: Vec<(ObjectRef, SocketAddr)>,
    clock: Clock,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            api: None,
            port: 0,
            gateway_api: Vec::new(),
            default_upstream: None,
            upstreams: HashMap::new(),
            service_upstreams: HashMap::new(),
            kubeflow_rule: kubeflow_m2m_rule(),
            login: LoginConfig::default(),
            global_deny_all: true,
            clock: Clock::default(),
        }
    }

    /// Kubeflow's ingress gateway: `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The played Gateway API Gateway `namespace/name`: `http://127.0.0.1:<port>`.
    pub fn gateway_api_url(&self, namespace: &str, name: &str) -> Option<String> {
        self.gateway_api_addrs
            .iter()
            .find(|(g, _)| g.namespace == namespace && g.name == name)
            .map(|(_, addr)| format!("http://{addr}"))
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

/// Kubeflow's `m2m-token-issuer`: ServiceAccount tokens by the API server's keys, forwarded on.
fn kubeflow_m2m_rule() -> JwtRuleSpec {
    JwtRuleSpec {
        issuer: jwt::KUBERNETES_ISSUER.to_owned(),
        jwks_uri: Some(format!("{}/openid/v1/jwks", jwt::KUBERNETES_ISSUER)),
        forward_original_token: true,
        ..JwtRuleSpec::default()
    }
}

/// Which gateway a listener plays.
#[derive(Clone, Debug)]
enum Entry {
    Kubeflow,
    GatewayApi(ObjectRef),
}

struct GatewayState {
    client: kube::Client,
    http: HttpClient<HttpConnector, Full<Bytes>>,
    default_upstream: Option<String>,
    upstreams: HashMap<(String, String), String>,
    service_upstreams: HashMap<(String, String), String>,
    kubeflow_rule: JwtRuleSpec,
    login: Login,
    global_deny_all: bool,
    clock: Clock,
}

async fn serve_all(
    listeners: Vec<(TcpListener, Entry)>,
    state: Arc<GatewayState>,
    shutdown: oneshot::Receiver<()>,
) {
    // The listeners' tasks (and their connections) end when this set is dropped.
    let mut servers = JoinSet::new();
    for (listener, entry) in listeners {
        servers.spawn(serve(listener, state.clone(), entry));
    }
    let _ = shutdown.await;
}

async fn serve(listener: TcpListener, state: Arc<GatewayState>, entry: Entry) {
    // Connections live in this set, so ending the server task ends them too (no detached tasks).
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                let entry = entry.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        let entry = entry.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&state, &entry, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

/// One request as received.
struct Inbound {
    method: Method,
    uri: Uri,
    /// The Host header (or the URI's authority), port included.
    host: String,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    body: Bytes,
}

impl Inbound {
    fn path(&self) -> &str {
        self.uri.path()
    }
}

async fn handle(state: &GatewayState, entry: &Entry, request: http::Request<Incoming>) -> Response {
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
    let inbound = Inbound {
        query: query_pairs(&parts.uri),
        method: parts.method,
        uri: parts.uri,
        host,
        headers: parts.headers,
        body,
    };
    let result = if Login::owns(inbound.path()) {
        // Kubeflow exempts the login paths; the double serves them on every gateway it plays.
        Ok(state.login.handle(
            &inbound.method,
            &inbound.uri,
            &inbound.headers,
            &inbound.body,
        ))
    } else {
        match entry {
            Entry::Kubeflow => kubeflow(state, &inbound).await,
            Entry::GatewayApi(gateway) => gateway_api(state, gateway, &inbound).await,
        }
    };
    let response = result.unwrap_or_else(|error| {
        tracing::warn!(%error, "control plane lookup failed");
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "mesh-local: control plane unavailable",
        )
    });
    tracing::info!(method = %inbound.method, host = inbound.host, path = inbound.path(), status = response.status().as_u16(), denied_by = ?response.headers().get(DENIED_BY_HEADER), "request");
    with_server_header(response)
}

/// Where a routed request is delivered: a model's pod, and the Service it was addressed by.
struct Destination {
    namespace: String,
    pod: Pod,
    service: Option<Service>,
    /// The InferenceService the pod serves (`serving.kserve.io/inferenceservice`).
    inference_service: Option<String>,
    /// The Service port the request was addressed to.
    service_port: u16,
}

/// The request as it leaves the gateway for the destination.
struct Outbound {
    method: Method,
    /// The client's Host header (port included), or the URLRewrite host.
    host: String,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
    response_headers: HeaderEdits,
}

/// Kubeflow's ingress gateway: m2m-token-issuer or the session front end, then KServe's routes.
async fn kubeflow(state: &GatewayState, inbound: &Inbound) -> Result<Response, ControlPlaneError> {
    let path = inbound.path();
    let mut headers = inbound.headers.clone();

    // 1. Authentication at the gateway.
    let rules = [&state.kubeflow_rule];
    let user = match authn::extract(&rules, &headers, &inbound.query) {
        Extraction::Rejected(error) => {
            return Ok(jwt_rejection(error, &inbound.host, path, Hop::Gateway));
        }
        Extraction::Token { token, rule, .. } => {
            let jwks = cluster::jwks(&state.client, &state.http, &rule.jwks_source()).await?;
            match jwt::verify(
                &token,
                &rule.jwt_rule(),
                &jwks,
                state.clock.now().as_second(),
            ) {
                Ok(claims) => claims.subject,
                Err(error) => return Ok(jwt_rejection(error, &inbound.host, path, Hop::Gateway)),
            }
        }
        Extraction::NoToken => match state.login.session_user(&headers) {
            Some(email) => email,
            None => return Ok(state.login.unauthenticated(&headers, &inbound.uri)),
        },
    };

    // 2. KServe's VirtualServices.
    let services = cluster::inference_service_urls(&state.client).await?;
    let path_and_query = inbound.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let Some(route) = routing::route(&services, &inbound.host, path_and_query) else {
        if path == "/" {
            return Ok(dashboard(&user));
        }
        return Ok(empty(StatusCode::NOT_FOUND));
    };

    // 3. The predictor: its pod, and the Service KServe names after it.
    let selector = format!(
        "serving.kserve.io/inferenceservice={},component=predictor",
        route.name
    );
    let Some(pod) = cluster::pods(&state.client, &route.namespace, &selector)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"));
    };
    let mut service = None;
    for name in [
        format!("{}-predictor", route.name),
        format!("{}-predictor-default", route.name),
    ] {
        service = cluster::service(&state.client, &route.namespace, &name).await?;
        if service.is_some() {
            break;
        }
    }
    if let Ok(value) = HeaderValue::from_str(&user) {
        headers.insert(HeaderName::from_static(USERID_HEADER), value);
    }
    let destination = Destination {
        namespace: route.namespace.clone(),
        pod,
        service,
        inference_service: Some(route.name.clone()),
        service_port: 80,
    };
    let outbound = Outbound {
        method: inbound.method.clone(),
        host: inbound.host.clone(),
        path_and_query: route.upstream_path_and_query,
        headers,
        body: inbound.body.clone(),
        timeout: DEFAULT_UPSTREAM_TIMEOUT,
        response_headers: HeaderEdits::default(),
    };
    deliver(state, GATEWAY_PRINCIPAL.to_owned(), destination, outbound).await
}

/// A Gateway API gateway run by Istio: its RequestAuthentications and AuthorizationPolicies, then
/// its HTTPRoutes.
async fn gateway_api(
    state: &GatewayState,
    gateway_ref: &ObjectRef,
    inbound: &Inbound,
) -> Result<Response, ControlPlaneError> {
    let Some(gateway) =
        cluster::gateway(&state.client, &gateway_ref.namespace, &gateway_ref.name).await?
    else {
        tracing::warn!(gateway = %gateway_ref, "Gateway not found: nothing is programmed");
        return Ok(empty(StatusCode::NOT_FOUND));
    };
    let class = gateway.spec.gateway_class_name.clone();
    let workload = Workload {
        namespace: gateway_ref.namespace.clone(),
        labels: [
            (
                mesh::GATEWAY_NAME_LABEL.to_owned(),
                gateway_ref.name.clone(),
            ),
            ("istio.io/gateway-name".to_owned(), gateway_ref.name.clone()),
        ]
        .into(),
    };
    let enforcer = Enforcer::Gateway {
        gateway: gateway_ref,
        class: &class,
        workload: &workload,
    };
    let port = gateway
        .spec
        .listeners
        .iter()
        .find(|l| l.protocol == "HTTP")
        .map_or(80, |l| l.port);
    let mut headers = inbound.headers.clone();
    let namespaces = [gateway_ref.namespace.as_str()];
    // The client is outside the mesh: no peer principal at the edge.
    let check = EnvoyCheck {
        enforcer: &enforcer,
        namespaces: &namespaces,
        hop: Hop::Gateway,
        source_principal: None,
        port,
        host: &inbound.host,
        method: &inbound.method,
        path: inbound.path(),
        query: &inbound.query,
        uri: &inbound.uri,
        extra_policy: None,
    };
    if let Some(stop) = envoy_checks(state, &check, &mut headers).await? {
        return Ok(stop);
    }

    let routes = cluster::http_routes(&state.client).await?;
    let grants = cluster::reference_grants(&state.client).await?;
    let needs_labels = gateway.spec.listeners.iter().any(|l| {
        l.allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref())
            .and_then(|n| n.from.as_deref())
            == Some("Selector")
    });
    let namespace_labels = match needs_labels {
        true => cluster::all_namespace_labels(&state.client).await?,
        false => BTreeMap::new(),
    };
    let request = RouteRequest {
        host: routing::strip_port(&inbound.host),
        method: inbound.method.as_str(),
        path: inbound.path(),
        query: &inbound.query,
        headers: &headers,
    };
    let forward = match httproute::select(&gateway, &routes, &grants, &namespace_labels, &request) {
        RouteOutcome::NotFound => return Ok(empty(StatusCode::NOT_FOUND)),
        RouteOutcome::Redirect { status, location } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
            return Ok(redirect(status, &location));
        }
        RouteOutcome::InvalidBackend { route, reason } => {
            tracing::warn!(route, reason, "invalid backendRef: 500");
            return Ok(empty(StatusCode::INTERNAL_SERVER_ERROR));
        }
        RouteOutcome::Forward(forward) => forward,
    };
    let Some(service) = cluster::service(
        &state.client,
        &forward.backend.namespace,
        &forward.backend.name,
    )
    .await?
    else {
        tracing::warn!(route = forward.route, service = %forward.backend, "backend Service not found: 500");
        return Ok(empty(StatusCode::INTERNAL_SERVER_ERROR));
    };
    let selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        });
    let pod = match selector {
        Some(selector) => cluster::pods(&state.client, &forward.backend.namespace, &selector)
            .await?
            .into_iter()
            .next(),
        None => None,
    };
    let Some(pod) = pod else {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"));
    };
    forward.request_headers.apply(&mut headers);
    let host = match &forward.host {
        Some(rewritten) => {
            if let Ok(value) = HeaderValue::from_str(rewritten) {
                headers.insert(header::HOST, value);
            }
            rewritten.clone()
        }
        None => inbound.host.clone(),
    };
    let query = inbound
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let destination = Destination {
        namespace: forward.backend.namespace.clone(),
        inference_service: label(&pod, "serving.kserve.io/inferenceservice"),
        pod,
        service: Some(service),
        service_port: forward.port,
    };
    let outbound = Outbound {
        method: inbound.method.clone(),
        host,
        path_and_query: format!("{}{query}", forward.path),
        headers,
        body: inbound.body.clone(),
        timeout: forward.timeout.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT),
        response_headers: forward.response_headers,
    };
    let principal = mesh::gateway_principal(gateway_ref, &class, &gateway.annotations);
    deliver(state, principal, destination, outbound).await
}

fn label(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.labels.as_ref()?.get(key).cloned()
}

/// One Envoy's checks (gateway, waypoint or sidecar): RequestAuthentication, then CUSTOM, DENY
/// and ALLOW policies.
struct EnvoyCheck<'a> {
    enforcer: &'a Enforcer<'a>,
    /// Namespaces whose policies may bind it (the root namespace is added).
    namespaces: &'a [&'a str],
    hop: Hop,
    source_principal: Option<String>,
    port: u16,
    host: &'a str,
    method: &'a Method,
    path: &'a str,
    query: &'a [(String, String)],
    uri: &'a Uri,
    /// Kubeflow's global deny-all, where it applies.
    extra_policy: Option<StoredPolicy>,
}

/// Runs one Envoy's checks; Some(response) when the request stops there. Headers are updated as
/// that Envoy would (claims to headers, token removal, ext_authz headers).
async fn envoy_checks(
    state: &GatewayState,
    check: &EnvoyCheck<'_>,
    headers: &mut HeaderMap,
) -> Result<Option<Response>, ControlPlaneError> {
    let authentications = cluster::request_authentications(&state.client, check.namespaces).await?;
    let rules = authn::rules_for(&authentications, check.enforcer);
    let verified = match authenticate(state, &rules, headers, check.query).await? {
        Ok(verified) => verified,
        Err(error) => {
            return Ok(Some(jwt_rejection(
                error, check.host, check.path, check.hop,
            )));
        }
    };
    let mut policies = cluster::authorization_policies(&state.client, check.namespaces).await?;
    policies.extend(check.extra_policy.clone());
    let attributes = |headers: &HeaderMap| RequestAttributes {
        source_principal: check.source_principal.clone(),
        request_principal: verified.as_ref().map(VerifiedClaims::principal),
        claims: verified.as_ref().map(|v| v.claims.clone()),
        host: routing::strip_port(check.host).to_owned(),
        port: check.port,
        method: check.method.to_string(),
        path: check.path.to_owned(),
        headers: header_values(headers),
    };
    for custom in policy::custom_matches(&policies, check.enforcer, &attributes(headers)) {
        if custom.provider != LOGIN_PROVIDER {
            // Istio turns a CUSTOM policy with an unknown provider into deny-all.
            tracing::warn!(
                policy = custom.policy,
                provider = custom.provider,
                "unknown ext_authz provider"
            );
            return Ok(Some(rbac_denied(check.hop)));
        }
        match state.login.session_user(headers) {
            Some(email) => {
                if let Ok(value) = HeaderValue::from_str(&email) {
                    headers.insert(HeaderName::from_static(USERID_HEADER), value);
                }
            }
            None => return Ok(Some(state.login.unauthenticated(headers, check.uri))),
        }
    }
    if let Decision::Denied { policy } =
        policy::evaluate(&policies, check.enforcer, &attributes(headers))
    {
        tracing::info!(hop = check.hop.as_str(), ?policy, "RBAC denied");
        return Ok(Some(rbac_denied(check.hop)));
    }
    Ok(None)
}

/// Envoy's jwt_authn over `rules`: Ok(None) without a token, Ok(Some) verified (outputs applied
/// to `headers`), Err with Envoy's reason.
async fn authenticate(
    state: &GatewayState,
    rules: &[&JwtRuleSpec],
    headers: &mut HeaderMap,
    query: &[(String, String)],
) -> Result<Result<Option<VerifiedClaims>, JwtError>, ControlPlaneError> {
    match authn::extract(rules, headers, query) {
        Extraction::NoToken => Ok(Ok(None)),
        Extraction::Rejected(error) => Ok(Err(error)),
        Extraction::Token {
            token,
            rule,
            location,
        } => {
            let jwks = cluster::jwks(&state.client, &state.http, &rule.jwks_source()).await?;
            let now = state.clock.now().as_second();
            Ok(
                jwt::verify(&token, &rule.jwt_rule(), &jwks, now).map(|verified| {
                    authn::apply_outputs(rule, &token, &location, &verified, headers);
                    Some(verified)
                }),
            )
        }
    }
}

/// The hops between the gateway and the pod (sidecar; or waypoint and ztunnel), then the model
/// server.
async fn deliver(
    state: &GatewayState,
    gateway_principal: String,
    destination: Destination,
    mut outbound: Outbound,
) -> Result<Response, ControlPlaneError> {
    let namespace = destination.namespace.as_str();
    let namespace_labels = cluster::namespace_labels(&state.client, namespace).await?;
    let meta = &destination.pod.metadata;
    let pod_labels = meta.labels.clone().unwrap_or_default();
    let containers: Vec<&str> = destination
        .pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let dataplane = mesh::dataplane(
        &pod_labels,
        &meta.annotations.clone().unwrap_or_default(),
        &containers,
        &namespace_labels,
    );
    let workload = Workload {
        namespace: namespace.to_owned(),
        labels: pod_labels,
    };
    let global_deny_all = state.global_deny_all.then(|| StoredPolicy {
        namespace: policy::ROOT_NAMESPACE.to_owned(),
        name: "global-deny-all".to_owned(),
        spec: Default::default(),
    });
    let path = outbound
        .path_and_query
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let query = query_pairs(&outbound.path_and_query.parse::<Uri>().unwrap_or_default());
    let uri: Uri = outbound.path_and_query.parse().unwrap_or_default();
    match dataplane {
        Dataplane::None => {}
        Dataplane::Sidecar => {
            let enforcer = Enforcer::Sidecar(&workload);
            let check = EnvoyCheck {
                enforcer: &enforcer,
                namespaces: &[namespace],
                hop: Hop::Sidecar,
                source_principal: Some(gateway_principal),
                port: PREDICTOR_PORT,
                host: &outbound.host,
                method: &outbound.method,
                path: &path,
                query: &query,
                uri: &uri,
                extra_policy: global_deny_all.clone(),
            };
            if let Some(stop) = envoy_checks(state, &check, &mut outbound.headers).await? {
                return Ok(stop);
            }
        }
        Dataplane::Ambient => {
            let service_ref = destination
                .service
                .as_ref()
                .map(|s| ObjectRef::new(namespace, s.metadata.name.as_deref().unwrap_or_default()));
            let service_labels = destination
                .service
                .as_ref()
                .and_then(|s| s.metadata.labels.clone());
            let mut ztunnel_source = gateway_principal.clone();
            if let Some((waypoint, waypoint_principal)) =
                waypoint_in_path(state, namespace, service_labels.as_ref(), &namespace_labels)
                    .await?
            {
                let enforcer = Enforcer::Waypoint {
                    waypoint: &waypoint,
                    service: service_ref.as_ref(),
                };
                let check = EnvoyCheck {
                    enforcer: &enforcer,
                    namespaces: &[waypoint.namespace.as_str(), namespace],
                    hop: Hop::Waypoint,
                    source_principal: Some(gateway_principal),
                    port: destination.service_port,
                    host: &outbound.host,
                    method: &outbound.method,
                    path: &path,
                    query: &query,
                    uri: &uri,
                    extra_policy: None,
                };
                if let Some(stop) = envoy_checks(state, &check, &mut outbound.headers).await? {
                    return Ok(stop);
                }
                // Waypoints do not impersonate: ztunnel sees the waypoint's identity.
                ztunnel_source = waypoint_principal;
            }
            let mut policies = cluster::authorization_policies(&state.client, &[namespace]).await?;
            policies.extend(global_deny_all);
            let attributes = RequestAttributes {
                source_principal: Some(ztunnel_source),
                port: PREDICTOR_PORT,
                ..Default::default()
            };
            if let Decision::Denied { policy } =
                policy::evaluate(&policies, &Enforcer::Ztunnel(&workload), &attributes)
            {
                tracing::info!(?policy, "ztunnel closed the connection");
                return Ok(denied_by(
                    text(StatusCode::SERVICE_UNAVAILABLE, CONNECTION_TERMINATION),
                    Hop::Ztunnel,
                ));
            }
        }
    }

    let upstream = destination
        .service
        .as_ref()
        .and_then(|s| {
            let name = s.metadata.name.clone().unwrap_or_default();
            state.service_upstreams.get(&(namespace.to_owned(), name))
        })
        .or_else(|| {
            let isvc = destination.inference_service.clone()?;
            state.upstreams.get(&(namespace.to_owned(), isvc))
        })
        .or(state.default_upstream.as_ref());
    let Some(upstream) = upstream else {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"));
    };
    let mut response = proxy(state, upstream, &outbound).await;
    outbound.response_headers.apply(response.headers_mut());
    Ok(response)
}

/// The waypoint an ingress request to this Service passes, with its principal: only when the
/// Service (or namespace) opts ingress in, names a waypoint, and that Gateway exists as a waypoint
/// for Service traffic.
async fn waypoint_in_path(
    state: &GatewayState,
    namespace: &str,
    service_labels: Option<&BTreeMap<String, String>>,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<Option<(ObjectRef, String)>, ControlPlaneError> {
    let Some(named) = mesh::waypoint_named(namespace, service_labels, namespace_labels) else {
        return Ok(None);
    };
    if !mesh::ingress_uses_waypoint(service_labels, namespace_labels) {
        tracing::debug!(waypoint = %named, "ingress traffic skips the waypoint (no istio.io/ingress-use-waypoint)");
        return Ok(None);
    }
    let Some(gateway) = cluster::gateway(&state.client, &named.namespace, &named.name).await?
    else {
        tracing::warn!(waypoint = %named, "waypoint Gateway not found: traffic goes straight to ztunnel");
        return Ok(None);
    };
    if !mesh::serves_services(&gateway.spec.gateway_class_name, &gateway.labels) {
        return Ok(None);
    }
    let principal = mesh::gateway_principal(
        &named,
        &gateway.spec.gateway_class_name,
        &gateway.annotations,
    );
    Ok(Some((named, principal)))
}

/// Envoy jwt_authn's 401: the failure text as body and a Bearer challenge.
fn jwt_rejection(error: JwtError, host: &str, path: &str, hop: Hop) -> Response {
    let mut response = text(StatusCode::UNAUTHORIZED, error.to_string());
    let challenge = format!("Bearer realm=\"http://{host}{path}\", error=\"invalid_token\"");
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    denied_by(response, hop)
}

/// Envoy's RBAC filter answer.
fn rbac_denied(hop: Hop) -> Response {
    denied_by(text(StatusCode::FORBIDDEN, "RBAC: access denied"), hop)
}

fn denied_by(mut response: Response, hop: Hop) -> Response {
    response.headers_mut().insert(
        HeaderName::from_static(DENIED_BY_HEADER),
        HeaderValue::from_static(hop.as_str()),
    );
    // A sidecar's or waypoint's answer comes back through the gateway's Envoy, which adds
    // this header to everything it proxied (clients tell the hops apart by it).
    if matches!(hop, Hop::Sidecar | Hop::Waypoint) {
        response.headers_mut().insert(
            HeaderName::from_static("x-envoy-upstream-service-time"),
            HeaderValue::from_static("1"),
        );
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

async fn proxy(state: &GatewayState, upstream: &str, outbound: &Outbound) -> Response {
    let mut headers = outbound.headers.clone();
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let uri = format!("{upstream}{}", outbound.path_and_query);
    let mut request = match http::Request::builder()
        .method(outbound.method.clone())
        .uri(&uri)
        .body(Full::new(outbound.body.clone()))
    {
        Ok(request) => request,
        Err(_) => return empty(StatusCode::BAD_REQUEST),
    };
    *request.headers_mut() = headers;
    let started = Instant::now();
    let response = match tokio::time::timeout(outbound.timeout, state.http.request(request)).await {
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
