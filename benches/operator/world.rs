//! The benchmark's world: kube-local on its own runtime, the real operator binary as a child
//! process, and what is read from both (request log, /readyz, /metrics, /proc).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub const OPERATOR_NS: &str = "inference-access-system";
const OPERATOR_SA: &str = "inference-access";
pub const AUDIENCE: &str = "istio-ingressgateway.istio-system.svc.cluster.local";

pub fn operator_caller() -> String {
    format!("system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}")
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// kube-local serving from a runtime of its own (two workers), so the load the benchmark sends
/// from its own runtime does not queue behind the server's tasks.
pub struct Server {
    pub plane: kube_local::ControlPlane,
    pub client: Client,
    pub dir: PathBuf,
    operator_kubeconfig: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    pub async fn start(builder: kube_local::Builder, dir: &Path) -> Result<Self> {
        // Four threads on two cores: a thread that waits for the store's lock waits whole,
        // where the API server's Go scheduler parks only the goroutine; with two, a request
        // that needed no lock queued behind one that did (21-25% of the CPU idle under the
        // bare client).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("kube-local")
            .enable_all()
            .build()?;
        let plane = runtime.spawn(builder.start()).await??;
        std::fs::create_dir_all(dir)?;
        let admin = dir.join("admin.kubeconfig");
        plane.write_kubeconfig(&admin)?;
        let client = client_for(&admin).await?;
        install_crd(&client).await?;
        let token = operator_token(&client).await?;
        let operator_kubeconfig = dir.join("operator.kubeconfig");
        std::fs::write(&operator_kubeconfig, plane.kubeconfig_for_token(&token))?;
        Ok(Self {
            plane,
            client,
            dir: dir.to_owned(),
            operator_kubeconfig,
            runtime: Some(runtime),
        })
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The operator's requests since `mark`, by verb (Events counted apart as `event`).
    pub fn operator_requests(&self, mark: u64) -> BTreeMap<String, usize> {
        let caller = operator_caller();
        let mut by_verb = BTreeMap::new();
        for r in self.plane.requests().since(mark) {
            if r.caller != caller {
                continue;
            }
            let key = if r.resource == "events" {
                "event".to_owned()
            } else if r.subresource.as_deref() == Some("token") {
                "tokenrequest".to_owned()
            } else {
                r.verb.clone()
            };
            *by_verb.entry(key).or_insert(0) += 1;
        }
        by_verb
    }

    /// Waits until no request at all reached the server for `quiet` (the operator has nothing
    /// left to do), and returns when that started.
    pub async fn settle(&self, quiet: Duration) {
        let mut last = self.plane.requests().mark();
        loop {
            tokio::time::sleep(quiet).await;
            let now = self.plane.requests().mark();
            if now == last {
                return;
            }
            last = now;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let mut config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    // A benchmark sends many requests at once; kube's defaults are for controllers.
    config.read_timeout = Some(Duration::from_secs(120));
    Ok(Client::try_from(config)?)
}

async fn install_crd(client: &Client) -> Result<()> {
    let text = std::fs::read_to_string(repo("crds/inference-access.io_inferenceaccesses.yaml"))?;
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text)?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    Ok(())
}

pub async fn namespace(client: &Client, name: &str) -> Result<()> {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    Api::<Namespace>::all(client.clone())
        .patch(name, &PatchParams::apply("bench"), &Patch::Apply(&ns))
        .await?;
    Ok(())
}

/// A ServiceAccount token for the operator, so the request log tells its requests apart.
async fn operator_token(client: &Client) -> Result<String> {
    namespace(client, OPERATOR_NS).await?;
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), OPERATOR_NS);
    let sa =
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": OPERATOR_SA}});
    sas.patch(
        OPERATOR_SA,
        &PatchParams::apply("bench"),
        &Patch::Apply(&sa),
    )
    .await?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600 * 24),
            ..Default::default()
        },
        ..Default::default()
    };
    let response = sas
        .create_subresource::<TokenRequest, TokenRequest>(
            "token",
            OPERATOR_SA,
            &PostParams::default(),
            &request,
        )
        .await?;
    Ok(response.status.map(|s| s.token).unwrap_or_default())
}

/// The real operator binary (release build), watching the whole cluster.
pub struct Operator {
    child: Child,
    /// Run under `OPERATOR_BENCH_WRAP`: the operator is the wrapper's descendant.
    wrapped: bool,
    pub ops: String,
    pub started: Instant,
}

impl Operator {
    pub fn spawn(server: &Server, log_name: &str) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let ops = format!("127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(server.dir.join(log_name))?;
        let started = Instant::now();
        let binary = env!("CARGO_BIN_EXE_inference-access");
        // `OPERATOR_BENCH_WRAP=heaptrack` (or valgrind, perf record ...) runs the operator
        // under a profiler; its RSS and CPU figures are then the wrapper's, not the operator's.
        let wrapper = std::env::var("OPERATOR_BENCH_WRAP").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let wrapped = !wrapper.trim().is_empty();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let child = command
            .args(["controller", "--log-level", "warn", "--metrics-addr", &ops])
            .env("KUBECONFIG", &server.operator_kubeconfig)
            .env("POD_NAME", "bench")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Self {
            child,
            wrapped,
            ops,
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for `/readyz` to answer 200; the time since the process was started.
    pub async fn ready(&self) -> Result<Duration> {
        loop {
            if let Ok((200, _)) = http_get(&self.ops, "/readyz").await {
                return Ok(self.started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A counter or gauge from `/metrics`, summed over its label sets that contain `labels`.
    pub async fn metric(&self, name: &str, labels: &str) -> Result<f64> {
        let (_, body) = http_get(&self.ops, "/metrics").await?;
        Ok(body
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                    && l.contains(labels)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Resident memory now and at its peak, in bytes (`/proc/PID/status`).
    pub fn rss(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    /// Resident memory once it has stopped falling, in bytes. The allocator hands freed pages
    /// back over about a second, from a background thread (.cargo/config.toml): a reading taken
    /// the moment the cluster goes quiet still counts pages it is about to return.
    pub async fn steady_rss(&self) -> Result<u64> {
        const STEP: Duration = Duration::from_millis(250);
        // Four readings in a row (a second) that fall by less than this count as steady.
        const SLACK: u64 = 256 * 1024;
        const GIVE_UP: Duration = Duration::from_secs(10);
        let started = Instant::now();
        let (mut last, _) = self.rss()?;
        let mut still = 0;
        while still < 4 && started.elapsed() < GIVE_UP {
            tokio::time::sleep(STEP).await;
            let (now, _) = self.rss()?;
            still = if now + SLACK < last { 0 } else { still + 1 };
            last = now;
        }
        Ok(last)
    }

    /// CPU time used so far (user + system), from `/proc/PID/stat`.
    pub fn cpu(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
            .sum();
        // USER_HZ is 100 on every Linux the project runs on.
        Ok(Duration::from_millis(ticks * 10))
    }

    pub fn stop(mut self) -> Result<()> {
        if self.wrapped {
            // The wrapper's descendant that runs the operator binary ends gently (its profiler
            // then writes its data), and the wrapper with it.
            for pid in descendants(self.child.id()) {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                if exe.ends_with("inference-access") {
                    Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()?;
                }
            }
        } else {
            self.child.kill()?;
        }
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every process below `pid` (`/proc/PID/task/*/children`).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.push(child);
            out.extend(descendants(child));
        }
    }
    out
}

/// A plain HTTP/1.0 GET: the status code and the body.
async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
