//! Starts the real KServe model server (tests/model-server) on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use tokio::process::{Child, ChildStdin, Command};

/// The InferenceService name the server answers to (the sample's).
pub const MODEL_NAME: &str = "sklearn-iris";

/// First start on a machine installs the venv (~30-60 s); later starts take a few seconds.
const SETUP_DEADLINE: Duration = Duration::from_secs(600);
const READY_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ModelServerError {
    #[error("running {script}: {message}")]
    Setup { script: PathBuf, message: String },
    #[error("finding a free port: {0}")]
    Port(#[source] std::io::Error),
    #[error("spawning the model server: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("model server exited before ready ({status}); log: {log}")]
    Exited {
        status: std::process::ExitStatus,
        log: PathBuf,
    },
    #[error("model server not ready within {deadline:?}; log: {log}")]
    NotReady { deadline: Duration, log: PathBuf },
}

/// Paths of the model server's files inside the repository.
fn model_server_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model-server")
}

/// Where setup.sh puts the venv: `<repo>/target/model-server-venv` unless
/// `MODEL_SERVER_VENV` says otherwise.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("MODEL_SERVER_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/model-server-venv"),
        PathBuf::from,
    )
}

/// A running `sklearn-iris` model server; killed when dropped.
pub struct ModelServer {
    child: Child,
    /// serve.py exits when this pipe closes, so the server dies with this process however it ends.
    _lifeline: ChildStdin,
    port: u16,
    log: PathBuf,
    /// Set when starting failed: the error names the log, so it must stay.
    keep_log: bool,
}

impl ModelServer {
    /// Ensures the venv and model (idempotent setup.sh, safe to call concurrently), starts the
    /// server on a free 127.0.0.1 port and waits until `GET /v1/models/sklearn-iris` is ready.
    pub async fn start() -> Result<ModelServer, ModelServerError> {
        Self::start_on(0).await
    }

    /// [`ModelServer::start`] on a given port; 0 picks a free one.
    pub async fn start_on(port: u16) -> Result<ModelServer, ModelServerError> {
        let venv = ensure_venv().await?;
        if port != 0 {
            return Self::start_once(&venv, port).await;
        }
        // Another process may take the probed port before the server binds it; the server then
        // exits, and another port is tried.
        let mut attempt = 1;
        loop {
            let port = free_port().map_err(ModelServerError::Port)?;
            match Self::start_once(&venv, port).await {
                Err(ModelServerError::Exited { .. }) if attempt < 3 => attempt += 1,
                result => return result,
            }
        }
    }

    async fn start_once(venv: &Path, port: u16) -> Result<ModelServer, ModelServerError> {
        let log = std::env::temp_dir().join(format!("mesh-local-model-server-{port}.log"));
        let log_file = std::fs::File::create(&log).map_err(ModelServerError::Spawn)?;
        let log_err = log_file.try_clone().map_err(ModelServerError::Spawn)?;
        let mut child = Command::new(venv.join("bin/python"))
            .arg(model_server_dir().join("serve.py"))
            .arg(venv.join("model/model.joblib"))
            .arg(port.to_string())
            .env("MODEL_SERVER_EXIT_ON_STDIN_EOF", "1")
            .stdin(Stdio::piped())
            .stdout(log_file)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(ModelServerError::Spawn)?;
        let Some(lifeline) = child.stdin.take() else {
            return Err(ModelServerError::Spawn(std::io::Error::other(
                "no stdin pipe",
            )));
        };
        let mut server = ModelServer {
            child,
            _lifeline: lifeline,
            port,
            log,
            keep_log: false,
        };
        if let Err(error) = server.wait_ready().await {
            server.keep_log = true;
            return Err(error);
        }
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    async fn wait_ready(&mut self) -> Result<(), ModelServerError> {
        let client = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri: http::Uri = match format!("{}/v1/models/{MODEL_NAME}", self.url()).parse() {
            Ok(uri) => uri,
            Err(_) => return Err(self.not_ready()),
        };
        let deadline = tokio::time::Instant::now() + READY_DEADLINE;
        let mut interval = tokio::time::interval(Duration::from_millis(200));
        loop {
            interval.tick().await;
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ModelServerError::Exited {
                    status,
                    log: self.log.clone(),
                });
            }
            if let Ok(Ok(response)) =
                tokio::time::timeout(Duration::from_secs(2), client.get(uri.clone())).await
                && response.status().is_success()
                && let Ok(body) = response.into_body().collect().await
                && serde_json::from_slice::<serde_json::Value>(&body.to_bytes())
                    .is_ok_and(|v| v["ready"] == true)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.not_ready());
            }
        }
    }

    fn not_ready(&self) -> ModelServerError {
        ModelServerError::NotReady {
            deadline: READY_DEADLINE,
            log: self.log.clone(),
        }
    }
}

impl Drop for ModelServer {
    /// The log is kept only for servers that failed to start (their error names it).
    fn drop(&mut self) {
        if !self.keep_log {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Runs tests/model-server/setup.sh (fast when the venv is current) and returns the venv.
pub async fn ensure_venv() -> Result<PathBuf, ModelServerError> {
    let script = model_server_dir().join("setup.sh");
    let venv = venv_dir();
    let setup_error = |message: String| ModelServerError::Setup {
        script: script.clone(),
        message,
    };
    let run = Command::new("bash")
        .arg(&script)
        .arg(&venv)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SETUP_DEADLINE, run)
        .await
        .map_err(|_| setup_error(format!("no result within {SETUP_DEADLINE:?}")))?
        .map_err(|e| setup_error(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(setup_error(format!(
            "{}: {}",
            output.status,
            tail.join("\n")
        )));
    }
    Ok(venv)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs the KServe sample's own `get_istio_auth_session` (Python, taken from the sample README,
/// `tests/model-server/sample_login.py`) against `url` in the model server's venv; returns the
/// session it prints as JSON, or what it wrote to stderr.
pub async fn sample_login(
    url: &str,
    username: &str,
    password: &str,
) -> Result<serde_json::Value, String> {
    let venv = ensure_venv().await.map_err(|err| err.to_string())?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../model-server/sample_login.py"
    );
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(venv.join("bin/python"))
            .args([script, url, username, password])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "the sample's login did not finish within 60 s".to_owned())?
    .map_err(|err| err.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|err| err.to_string())
}
