//! kube-local: a local Kubernetes control plane for inference-access's end-to-end tests and
//! demo. It is a test and demo substrate, not a product; README.md lists where it differs from
//! the real kube-apiserver.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_local::StartError> {
//! let cp = kube_local::ControlPlane::builder().rbac(true).start().await?;
//! println!("{}", cp.url());
//! cp.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod cel_patterns;
mod cel_rules;
mod cel_validation;
mod controllers;
mod discovery;
mod error;
mod faults;
mod fields;
mod patch;
mod protobuf;
mod rbac;
mod requests;
mod resources;
mod selectors;
mod server;
mod store;
mod tls;
mod tokens;
mod util;
mod validation;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use cel_rules::crd_rule_errors;
pub use controllers::{KserveSettings, PROFILE_LABEL, PROFILE_OWNER_ANNOTATION, UrlStyle};
pub use error::{ApiError, FieldError};
pub use faults::{FaultRule, Faults};
pub use requests::{Request, RequestLog};
pub use store::Store;
pub use tokens::{API_AUDIENCE, ISSUER};

use server::Shared;

/// Why the control plane did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error("reading CRD file {path}: {source}")]
    ReadCrd {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing CRD file {path}: {message}")]
    ParseCrd { path: PathBuf, message: String },
    #[error("loading CRD {name}: {source}")]
    LoadCrd { name: String, source: ApiError },
    #[error("making the TLS certificate: {0}")]
    Tls(String),
}

const KSERVE_CRD: &str = include_str!("../crds/serving.kserve.io_inferenceservices.json");
const ISTIO_CRDS: [&str; 2] = [
    include_str!("../crds/authorizationpolicies.security.istio.io.json"),
    include_str!("../crds/requestauthentications.security.istio.io.json"),
];

/// The built-in CRDs, parsed once per process.
fn builtin_crds() -> &'static (Value, Vec<Value>) {
    static CRDS: OnceLock<(Value, Vec<Value>)> = OnceLock::new();
    CRDS.get_or_init(|| {
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
        (
            parse(KSERVE_CRD),
            ISTIO_CRDS.iter().map(|s| parse(s)).collect(),
        )
    })
}

/// Configures a [`ControlPlane`].
#[derive(Debug, Clone)]
pub struct Builder {
    port: u16,
    rbac: bool,
    unauthenticated_admin: bool,
    token_max_expiration: Option<Duration>,
    kserve: KserveSettings,
    istio: bool,
    crd_files: Vec<PathBuf>,
    bookmark_every: Duration,
    history: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            port: 0,
            rbac: false,
            unauthenticated_admin: true,
            token_max_expiration: None,
            kserve: KserveSettings::default(),
            istio: true,
            crd_files: Vec::new(),
            bookmark_every: Duration::from_secs(10),
            history: store::DEFAULT_HISTORY,
        }
    }
}

impl Builder {
    /// Port on 127.0.0.1 (0 picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Enforce RBAC for callers outside system:masters (the admin token is always allowed).
    pub fn rbac(mut self, enabled: bool) -> Self {
        self.rbac = enabled;
        self
    }

    /// Whether requests without an Authorization header act as system:masters (default true),
    /// as on the API server's former insecure port. kubectl (client-go) never sends a bearer
    /// token to an `http://` server, so this is what lets the real kubectl drive kube-local;
    /// requests with an unknown token still get 401. Set false to require a token everywhere.
    pub fn unauthenticated_admin(mut self, enabled: bool) -> Self {
        self.unauthenticated_admin = enabled;
        self
    }

    /// Cap token lifetimes like `--service-account-max-token-expiration`.
    pub fn token_max_expiration(mut self, max: Option<Duration>) -> Self {
        self.token_max_expiration = max;
        self
    }

    /// How long the KServe stand-in waits before an InferenceService becomes ready.
    pub fn kserve_ready_delay(mut self, delay: Duration) -> Self {
        self.kserve.ready_delay = delay;
        self
    }

    /// The ingress domain in InferenceService URLs (default `example.com`).
    pub fn kserve_domain(mut self, domain: &str) -> Self {
        self.kserve.domain = domain.to_string();
        self
    }

    pub fn kserve_url_style(mut self, style: UrlStyle) -> Self {
        self.kserve.url_style = style;
        self
    }

    /// KServe's `enableGatewayApi`: Standard-mode InferenceServices get an HTTPRoute on the
    /// Gateway `kserve/kserve-ingress-gateway` (load the Gateway API CRDs with `load_crds`).
    pub fn kserve_gateway_api(mut self, enabled: bool) -> Self {
        self.kserve.gateway_api = enabled;
        self
    }

    /// Start without the Istio CRDs (as a cluster without Istio): no sidecar is injected either.
    pub fn without_istio(mut self) -> Self {
        self.istio = false;
        self.kserve.istio_injection = false;
        self
    }

    /// How often an idle watch that allows bookmarks gets one (default 10 s; the API server
    /// sends them about once a minute).
    pub fn watch_bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_every = every;
        self
    }

    /// How many changes of each kind are kept for watches that resume from a resourceVersion
    /// (default 10,000); a resume from before them, or a watch that falls that far behind, gets
    /// 410 Gone and relists.
    pub fn watch_history(mut self, changes_per_kind: usize) -> Self {
        self.history = changes_per_kind;
        self
    }

    /// Extra CRD files (YAML, multi-document, or JSON) created at start.
    pub fn load_crds(mut self, paths: &[PathBuf]) -> Self {
        self.crd_files.extend(paths.iter().cloned());
        self
    }

    pub async fn start(self) -> Result<ControlPlane, StartError> {
        let store = Store::with_history(self.history);
        bootstrap(&store, &self)?;
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], self.port))).map_err(|source| {
            StartError::Bind {
                port: self.port,
                source,
            }
        })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            port: self.port,
            source,
        })?;
        let tls = tls::make().map_err(StartError::Tls)?;
        let shared = Arc::new(Shared {
            store: store.clone(),
            tokens: tokens::TokenService::new(self.token_max_expiration),
            faults: Faults::new(store.clone()),
            requests: RequestLog::default(),
            rbac: self.rbac,
            unauthenticated_admin: self.unauthenticated_admin,
            addr,
            ca_pem: tls.ca_pem,
            bookmark_every: self.bookmark_every,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (kserve, kserve_rx) = watch::channel(self.kserve.clone());
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(
            shared.clone(),
            tls.acceptor,
            listener,
            shutdown_rx.clone(),
        ));
        tasks.spawn(controllers::run_workloads(
            store.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(controllers::run_profiles(
            store.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(controllers::run_llm(
            store.clone(),
            kserve_rx.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(controllers::run_kserve(store, kserve_rx, shutdown_rx));
        Ok(ControlPlane {
            shared,
            shutdown,
            kserve,
            tasks,
        })
    }
}

fn bootstrap(store: &Store, b: &Builder) -> Result<(), StartError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        store.create(obj).map_err(|source| StartError::LoadCrd {
            name: format!("namespace {ns}"),
            source,
        })?;
    }
    let (kserve, istio) = builtin_crds();
    let mut crds = vec![kserve.clone()];
    if b.istio {
        crds.extend(istio.iter().cloned());
    }
    for path in &b.crd_files {
        let text = std::fs::read_to_string(path).map_err(|source| StartError::ReadCrd {
            path: path.clone(),
            source,
        })?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value =
                serde::Deserialize::deserialize(doc).map_err(|e| StartError::ParseCrd {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            if !v.is_null() {
                crds.push(v);
            }
        }
    }
    for crd in crds {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        store
            .create(crd)
            .map_err(|source| StartError::LoadCrd { name, source })?;
    }
    Ok(())
}

/// Binds with SO_REUSEADDR so the same port can be taken again after a refused-connections fault.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    shared: Arc<Shared>,
    tls: tokio_rustls::TlsAcceptor,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut refuse = shared.faults.refuse.subscribe();
    let mut listener = listener;
    let mut conns: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = refuse.changed() => {
                if changed.is_err() { break; }
                let Some(pause) = *refuse.borrow_and_update() else { continue };
                // Stop listening and cut every open connection, as a restarting API server does.
                drop(listener);
                conns.abort_all();
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => return,
                }
                listener = loop {
                    match bind(shared.addr) {
                        Ok(l) => break l,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    // TLS and plain HTTP share the port: the first byte tells them apart.
                    let mut first = [0u8; 1];
                    let is_tls = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == tls::HANDSHAKE);
                    if is_tls {
                        if let Ok(stream) = tls.accept(stream).await {
                            serve_connection(shared, stream).await;
                        }
                    } else {
                        serve_connection(shared, stream).await;
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

async fn serve_connection<IO>(shared: Arc<Shared>, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| server::handle(shared.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// A running control plane. Dropping it stops it too; `shutdown` waits for the tasks to end.
pub struct ControlPlane {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    kserve: watch::Sender<KserveSettings>,
    tasks: JoinSet<()>,
}

impl ControlPlane {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.shared.base_url()
    }

    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// The admin bearer token (user `admin`, group `system:masters`).
    pub fn admin_token(&self) -> String {
        self.shared.tokens.admin_token().to_string()
    }

    /// A kubeconfig for the admin user, current context set, namespace `default`.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_for_token(self.shared.tokens.admin_token())
    }

    /// The same kubeconfig with another bearer token (e.g. a ServiceAccount's).
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-local\n  cluster:\n    server: {url}\ncontexts:\n- name: kube-local\n  context:\n    cluster: kube-local\n    user: kube-local-user\n    namespace: default\ncurrent-context: kube-local\nusers:\n- name: kube-local-user\n  user:\n    token: {token}\n",
            url = self.url()
        )
    }

    /// `https://127.0.0.1:PORT` (same port; TLS with the CA from [`Self::ca_pem`]).
    pub fn https_url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    /// The CA certificate (PEM) that signed the serving certificate, made at start.
    pub fn ca_pem(&self) -> String {
        self.shared.ca_pem.clone()
    }

    /// A kubeconfig over TLS acting as `token`. Use it when kubectl must authenticate as a
    /// particular token: client-go sends bearer tokens only over TLS.
    pub fn kubeconfig_tls_for_token(&self, token: &str) -> String {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.shared.ca_pem.as_bytes());
        self.kubeconfig_for_token(token).replace(
            &format!("    server: {}\n", self.url()),
            &format!(
                "    server: {}\n    certificate-authority-data: {ca}\n",
                self.https_url()
            ),
        )
    }

    /// The admin kubeconfig over TLS.
    pub fn kubeconfig_tls_yaml(&self) -> String {
        self.kubeconfig_tls_for_token(self.shared.tokens.admin_token())
    }

    /// Writes a kubeconfig (mode 0600: it holds a credential), e.g. from
    /// [`Self::kubeconfig_tls_for_token`].
    pub fn write_kubeconfig_text(path: &Path, kubeconfig: &str) -> std::io::Result<()> {
        write_private(path, kubeconfig)
    }

    /// Writes the admin kubeconfig (mode 0600: it holds a credential).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        write_private(path, &self.kubeconfig_yaml())
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    pub fn requests(&self) -> &RequestLog {
        &self.shared.requests
    }

    /// Direct access to objects (no HTTP, no RBAC, not in the request log).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Changes the KServe stand-in's URL style at run time (every InferenceService follows).
    pub fn set_kserve_url_style(&self, style: UrlStyle) {
        self.kserve.send_modify(|s| s.url_style = style);
    }

    /// Changes the KServe stand-in's ingress domain at run time.
    pub fn set_kserve_domain(&self, domain: &str) {
        self.kserve.send_modify(|s| s.domain = domain.to_string());
    }

    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())
}
