//! Figures for the README's Performance section:
//! `cargo run --release -p kube-local --example bench [-- basic|worlds] [--worlds 0,1000,10000]`.
//!
//! Two parts, both by default:
//! - `basic`: throughput of single requests. The control plane runs on a single-threaded runtime
//!   in its own thread (one core); the load comes from another thread over loopback, with
//!   keep-alive HTTP/1.1 connections written by hand so the client costs as little as possible.
//! - `worlds`: how kube-local scales with what inference-access leaves in a cluster. The control
//!   plane runs in a child process (this binary again, single-threaded runtime, KServe stand-in
//!   with no ready delay) so that its CPU time (`/proc/PID/task/*/schedstat`, nanoseconds) and
//!   RSS are its own. The parent fills it with "access worlds" (an InferenceAccess-like owner, an
//!   InferenceService and the predictor Pod the stand-in makes for it, a ServiceAccount, a Secret
//!   holding a ~1 KB bound token, an AuthorizationPolicy and two Events), 10 namespaces, and at
//!   each size measures the server CPU per request of server-side apply, get, list, TokenRequest
//!   and watch, and the server's RSS. `KUBE_LOCAL_BENCH_CALLGRIND=DIR` runs that server under
//!   callgrind and reports instructions instead; `KUBE_LOCAL_BENCH_HISTORY=N` sets its history.
//!
//! Every phase is bounded in count; it is a benchmark that prints figures, not a timed test.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: any failure aborts it

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_local::ControlPlane;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 8;
const PHASE: Duration = Duration::from_secs(3);
/// Set in the child process that serves the worlds part.
const CHILD_ENV: &str = "KUBE_LOCAL_BENCH_CHILD";
/// Changes kept per kind for watch resumption in the worlds part's server (default 10,000).
const HISTORY_ENV: &str = "KUBE_LOCAL_BENCH_HISTORY";
/// A directory: run the worlds part's server under callgrind and report instructions per
/// request instead of CPU time.
const CALLGRIND_ENV: &str = "KUBE_LOCAL_BENCH_CALLGRIND";
const NAMESPACES: usize = 10;
const ACCESS_GROUP: &str = "bench.kube-local.dev";

/// One keep-alive connection that sends a request and reads one Content-Length response.
struct Conn {
    stream: TcpStream,
    host: String,
    token: String,
    buf: Vec<u8>,
    body_start: usize,
}

impl Conn {
    async fn open(url: &str, token: &str) -> Self {
        let host = url.trim_start_matches("http://").to_string();
        let stream = TcpStream::connect(&host).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            host,
            token: token.to_string(),
            buf: Vec::with_capacity(64 * 1024),
            body_start: 0,
        }
    }

    async fn send(&mut self, method: &str, path: &str, content_type: &str, body: &str) -> u16 {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nAccept: application/json\r\n\r\n{body}",
            self.host,
            self.token,
            body.len()
        );
        self.stream.write_all(req.as_bytes()).await.expect("write");
        self.buf.clear();
        let mut chunk = vec![0u8; 256 * 1024];
        // (status, total length) once the head is in; the head is parsed only once.
        let mut framed: Option<(u16, usize)> = None;
        loop {
            let n = self.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
            if framed.is_none()
                && let Some(end) = find(&self.buf, b"\r\n\r\n")
            {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap_or(0))
                    .unwrap_or(0);
                self.body_start = end + 4;
                framed = Some((head[9..12].parse().unwrap_or(0), end + 4 + len));
            }
            if let Some((code, total)) = framed
                && self.buf.len() >= total
            {
                return code;
            }
        }
    }

    /// Sends and insists on a 2xx answer.
    async fn ok(&mut self, method: &str, path: &str, content_type: &str, body: &str) {
        let code = self.send(method, path, content_type, body).await;
        assert!(
            code < 300,
            "{method} {path} -> {code}: {}",
            String::from_utf8_lossy(self.body())
        );
    }

    fn body(&self) -> &[u8] {
        &self.buf[self.body_start..]
    }

    fn json(&self) -> Value {
        serde_json::from_slice(self.body()).expect("JSON body")
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs `CONNECTIONS` loops of requests for `PHASE`; returns requests per second.
async fn throughput<F>(url: &str, token: &str, make: F) -> f64
where
    F: Fn(usize, usize) -> (String, String, String, String) + Send + Sync + Clone + 'static,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let (url, token, make) = (url.to_string(), token.to_string(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&url, &token).await;
            let mut n = 0usize;
            while start.elapsed() < PHASE {
                let (m, p, ct, b) = make(c, n);
                let code = conn.send(&m, &p, &ct, &b).await;
                assert!(code < 300, "{m} {p} -> {code}");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("join");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Opens a watch and counts events until `want` arrived.
async fn count_watch_events(url: &str, token: &str, path: &str, want: usize) -> Duration {
    let mut stream = open_watch(url, token, path).await;
    let start = Instant::now();
    read_watch_events(&mut stream, want).await;
    start.elapsed()
}

async fn open_watch(url: &str, token: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    stream
}

/// Reads up to the end of the response head (the server answered: the watch is registered).
/// A watch sends no event before a change, so nothing after the head is lost.
async fn read_response_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while find(&head, b"\r\n\r\n").is_none() {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "watch closed before its response");
        head.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until the server ends the response (a watch's timeoutSeconds): the chunked body's
/// last chunk, or the connection closed.
async fn read_to_end(stream: &mut TcpStream) {
    const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
    let mut tail = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => tail.extend_from_slice(&chunk[..n]),
            _ => return,
        }
        if tail.ends_with(LAST_CHUNK) {
            return;
        }
        let keep = tail.len().saturating_sub(LAST_CHUNK.len());
        tail.drain(..keep);
    }
}

async fn read_watch_events(stream: &mut TcpStream, want: usize) {
    let mut seen = 0;
    let mut carry = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    while seen < want {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "watch closed after {seen} events");
        carry.extend_from_slice(&chunk[..n]);
        let mut from = 0;
        while let Some(i) = find(&carry[from..], b"\"type\":\"") {
            seen += 1;
            from += i + 8;
        }
        carry.drain(..from);
    }
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        serve_child();
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let part = |p: &str| {
        !args.iter().any(|a| a == "basic" || a == "worlds") || args.contains(&p.to_string())
    };
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--worlds")
        .and_then(|i| args.get(i + 1))
        .map(|s| {
            s.split(',')
                .map(|n| n.trim().parse().expect("--worlds 0,1000,10000"))
                .collect()
        })
        .unwrap_or_else(|| vec![0, 1000, 10_000]);
    if part("basic") {
        basic();
    }
    if part("worlds") {
        worlds(&sizes);
    }
}

fn basic() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let cp = ControlPlane::builder().start().await.expect("start");
            tx.send((cp.url(), cp.admin_token(), cp.store().clone()))
                .expect("send");
            let _ = stop_rx.await;
            cp.shutdown().await;
        });
    });
    let (url, token, store) = rx.recv().expect("control plane");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        println!("== single requests (server on one core, {CONNECTIONS} connections)");
        let ns = "/api/v1/namespaces/default";
        let mut setup = Conn::open(&url, &token).await;
        for i in 0..10 {
            setup.send("POST", &format!("{ns}/configmaps"), "application/json", &json!({"metadata": {"name": format!("small{i}"), "labels": {"set": "small"}}, "data": {"k": "v"}}).to_string()).await;
        }
        let get = throughput(&url, &token, move |_, _| ("GET".into(), format!("{ns}/configmaps/small0"), "application/json".into(), String::new())).await;
        println!("get one configmap:                 {get:>8.0} req/s");
        let list = throughput(&url, &token, move |_, _| ("GET".into(), format!("{ns}/configmaps?labelSelector=set%3Dsmall"), "application/json".into(), String::new())).await;
        println!("list 10 configmaps (selector):     {list:>8.0} req/s");
        let create = throughput(&url, &token, move |c, n| {
            ("POST".into(), format!("{ns}/configmaps"), "application/json".into(), json!({"metadata": {"name": format!("c{c}-{n}")}, "data": {"k": "v"}}).to_string())
        })
        .await;
        println!("create configmap:                  {create:>8.0} req/s");
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1", "b": "2"}}).to_string();
        let ssa = throughput(&url, &token, move |_, _| ("PATCH".into(), format!("{ns}/configmaps/applied?fieldManager=bench&force=true"), "application/apply-patch+yaml".into(), body.clone())).await;
        println!("server-side apply (no-op):         {ssa:>8.0} req/s");

        // Ten thousand objects, then a list and a watch's initial state over them.
        store.compact();
        let mut bulk = Conn::open(&url, &token).await;
        let t = Instant::now();
        for i in 0..10_000 {
            bulk.send("POST", "/api/v1/namespaces/default/secrets", "application/json", &json!({"metadata": {"name": format!("s{i}"), "labels": {"bulk": "yes"}}, "data": {"k": "dg=="}}).to_string()).await;
        }
        println!("create 10,000 secrets (1 conn):    {:>8.2} s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        let code = bulk.send("GET", "/api/v1/namespaces/default/secrets?labelSelector=bulk%3Dyes", "application/json", "").await;
        assert_eq!(code, 200);
        println!("list 10,000 secrets:               {:>8.0} ms ({} KiB)", t.elapsed().as_secs_f64() * 1000.0, bulk.buf.len() / 1024);
        let initial = count_watch_events(&url, &token, "/api/v1/namespaces/default/secrets?watch=true&labelSelector=bulk%3Dyes&timeoutSeconds=30", 10_000).await;
        println!("watch: initial 10,000 ADDED:       {:>8.0} ms", initial.as_secs_f64() * 1000.0);
        // Ten watchers over the 10,000 secrets; 1,000 updates fan out to each.
        let rv = store.resource_version();
        let mut watchers = Vec::new();
        for _ in 0..10 {
            let path = format!("/api/v1/namespaces/default/secrets?watch=true&resourceVersion={rv}&timeoutSeconds=60");
            // Writes start once every watch is answered, so the timing covers only fan-out.
            let mut stream = open_watch(&url, &token, &path).await;
            read_response_head(&mut stream).await;
            watchers.push(tokio::spawn(async move { read_watch_events(&mut stream, 1000).await }));
        }
        let t = Instant::now();
        for i in 0..1000 {
            bulk.send("PATCH", &format!("/api/v1/namespaces/default/secrets/s{i}"), "application/merge-patch+json", r#"{"metadata":{"labels":{"touched":"yes"}}}"#).await;
        }
        let writes = t.elapsed();
        for w in watchers {
            w.await.expect("watcher");
        }
        println!("1,000 patches, 10 watchers:        {:>8.0} ms writing, {:>6.0} ms until every watcher saw all", writes.as_secs_f64() * 1000.0, t.elapsed().as_secs_f64() * 1000.0);
    });
    let _ = stop_tx.send(());
    server.join().expect("server thread");
}

/// The child process of the worlds part: a control plane on one thread until stdin closes.
fn serve_child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut builder = ControlPlane::builder().kserve_ready_delay(Duration::ZERO);
        if let Some(n) = std::env::var(HISTORY_ENV).ok().and_then(|n| n.parse().ok()) {
            builder = builder.watch_history(n);
        }
        let cp = builder.start().await.expect("start");
        println!("{} {}", cp.url(), cp.admin_token());
        std::io::stdout().flush().expect("flush");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // A plain thread waits for the parent to close stdin (the runtime's only thread stays
        // the server's, so its CPU time is the server's).
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            let _ = tx.send(());
        });
        let _ = rx.await;
        cp.shutdown().await;
    });
}

/// The control plane in a child process, with its CPU time and memory readable from /proc.
struct Server {
    child: Child,
    url: String,
    token: String,
    /// Where callgrind writes its dumps, when the server runs under it.
    callgrind: Option<std::path::PathBuf>,
}

impl Server {
    fn start() -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let callgrind = std::env::var(CALLGRIND_ENV).ok();
        let mut cmd = match &callgrind {
            Some(dir) => {
                std::fs::create_dir_all(dir).expect("callgrind dir");
                let mut c = Command::new("valgrind");
                c.args([
                    "--tool=callgrind",
                    "--instr-atstart=no",
                    &format!("--callgrind-out-file={dir}/callgrind.out"),
                ])
                .arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let mut child = cmd
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("child control plane");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("child's first line");
        let (url, token) = line.trim().split_once(' ').expect("url and token");
        Self {
            url: url.to_string(),
            token: token.to_string(),
            child,
            callgrind: callgrind.map(std::path::PathBuf::from),
        }
    }

    /// Returns once the server has used no CPU for a while (its controllers are done).
    async fn idle(&self) {
        loop {
            let before = self.cpu();
            tokio::time::sleep(Duration::from_millis(200)).await;
            if self.cpu() - before < Duration::from_millis(2) {
                return;
            }
        }
    }

    /// Starts measuring (under callgrind: turns instrumentation on).
    fn begin(&self) -> Duration {
        if self.callgrind.is_some() {
            self.callgrind_control(&["-z"]);
            self.callgrind_control(&["-i", "on"]);
        }
        self.cpu()
    }

    /// The cost per request of `n` requests since `begin`: server CPU time, or under callgrind
    /// the instructions executed (steady on a noisy machine).
    fn per_request(&self, begun: Duration, n: usize) -> String {
        let n = n.max(1);
        let Some(dir) = &self.callgrind else {
            return ms((self.cpu() - begun) / n as u32);
        };
        self.callgrind_control(&["-d"]);
        self.callgrind_control(&["-i", "off"]);
        // The newest dump holds the counts since `begin` zeroed them.
        let newest = std::fs::read_dir(dir)
            .expect("callgrind dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("callgrind.out"))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .expect("a callgrind dump");
        let text = std::fs::read_to_string(newest.path()).expect("dump");
        let total: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        format!("{:.0} kIr", total / n as f64 / 1000.0)
    }

    fn callgrind_control(&self, args: &[&str]) {
        let status = Command::new("callgrind_control")
            .args(args)
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .status()
            .expect("callgrind_control");
        assert!(status.success(), "callgrind_control {args:?}");
    }

    /// CPU time the server process has used, over all its threads.
    fn cpu(&self) -> Duration {
        let dir = format!("/proc/{}/task", self.child.id());
        let mut ns = 0u64;
        for task in std::fs::read_dir(dir).expect("tasks").flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
        Duration::from_nanos(ns)
    }

    /// (VmRSS, VmHWM) in MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// One request: method, path, content type, body.
type Req = (&'static str, String, &'static str, String);

/// Server CPU per request of `reqs`, sent one after another on one connection (so the figure
/// has no queueing in it).
async fn cpu_per_request(server: &Server, c: &mut Conn, reqs: Vec<Req>) -> String {
    let n = reqs.len();
    let begun = server.begin();
    for (method, path, content_type, body) in reqs {
        c.ok(method, &path, content_type, &body).await;
    }
    server.per_request(begun, n)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn ns_of(i: usize) -> String {
    format!("bench-{}", i % NAMESPACES)
}

fn access_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("inferenceaccesses.{ACCESS_GROUP}")},
        "spec": {"group": ACCESS_GROUP, "scope": "Namespaced",
            "names": {"plural": "inferenceaccesses", "singular": "inferenceaccess", "kind": "InferenceAccess", "listKind": "InferenceAccessList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

fn isvc(name: &str, owner: Option<(&str, &str)>) -> String {
    let mut o = json!({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "inference-access", "inference-access.io/access": name},
            "annotations": {"sidecar.istio.io/inject": "true", "serving.kserve.io/deploymentMode": "Standard"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model",
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}}}});
    if let Some((owner, uid)) = owner {
        o["metadata"]["ownerReferences"] = json!([{"apiVersion": format!("{ACCESS_GROUP}/v1alpha1"), "kind": "InferenceAccess", "name": owner, "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
    }
    o.to_string()
}

/// Creates the objects one access leaves in a cluster, as the operator would.
async fn make_world(c: &mut Conn, i: usize) -> String {
    let (ns, name) = (ns_of(i), format!("a{i}"));
    let access_path = format!("/apis/{ACCESS_GROUP}/v1alpha1/namespaces/{ns}/inferenceaccesses");
    c.ok("POST", &access_path, "application/json", &json!({"apiVersion": format!("{ACCESS_GROUP}/v1alpha1"), "kind": "InferenceAccess",
        "metadata": {"name": name}, "spec": {"inferenceServiceRef": {"name": name}, "serviceAccount": format!("{name}-client"), "audiences": ["istio-ingressgateway.istio-system.svc.cluster.local"]}}).to_string()).await;
    let uid = c.json()["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let owner = json!([{"apiVersion": format!("{ACCESS_GROUP}/v1alpha1"), "kind": "InferenceAccess", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
    let labels = json!({"app.kubernetes.io/managed-by": "inference-access", "inference-access.io/access": name});
    let apply = "application/apply-patch+yaml";
    let fm = "fieldManager=inference-access&force=true";
    c.ok(
        "PATCH",
        &format!("/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}?{fm}"),
        apply,
        &isvc(&name, Some((&name, &uid))),
    )
    .await;
    let sa = format!("{name}-client");
    c.ok("PATCH", &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}?{fm}"), apply, &json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": sa, "labels": labels, "ownerReferences": owner}, "automountServiceAccountToken": false}).to_string()).await;
    let secret = format!("{name}-credentials");
    c.ok(
        "POST",
        &format!("/api/v1/namespaces/{ns}/secrets"),
        "application/json",
        &json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret, "labels": labels, "ownerReferences": owner}, "type": "Opaque"})
        .to_string(),
    )
    .await;
    let secret_uid = c.json()["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    c.ok("POST", &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"), "application/json", &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["istio-ingressgateway.istio-system.svc.cluster.local"], "expirationSeconds": 86400,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": secret, "uid": secret_uid}}}).to_string()).await;
    let token = c.json()["status"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let url = format!("http://{name}.{ns}.example.com");
    c.ok("PATCH", &format!("/api/v1/namespaces/{ns}/secrets/{secret}"), "application/merge-patch+json", &json!({
        "metadata": {"annotations": {"inference-access.io/issued-at": "2026-01-01T00:00:00Z"}},
        "data": {"token": b64(&token), "authorization": b64(&format!("Bearer {token}")), "url": b64(&url), "host": b64(&format!("{name}.{ns}.example.com")),
            "predict-url": b64(&format!("{url}/v1/models/{name}:predict")), "expires-at": b64("2026-01-02T00:00:00Z")}}).to_string()).await;
    c.ok("PATCH", &format!("/apis/security.istio.io/v1/namespaces/{ns}/authorizationpolicies/{name}-access?{fm}"), apply, &json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": format!("{name}-access"), "labels": labels, "ownerReferences": owner},
        "spec": {"selector": {"matchLabels": {"serving.kserve.io/inferenceservice": name}}, "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"]}}],
                "when": [{"key": "request.headers[kubeflow-userid]", "values": [format!("system:serviceaccount:{ns}:{sa}")]}]}]}}).to_string()).await;
    for (j, reason) in ["CredentialIssued", "Ready"].iter().enumerate() {
        c.ok("POST", &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"), "application/json", &json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": format!("{name}.{j}")}, "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "inference-access.io/controller",
            "reportingInstance": "inference-access-0", "action": "Reconcile", "reason": reason, "type": "Normal", "note": format!("{reason} for {name}"),
            "regarding": {"apiVersion": format!("{ACCESS_GROUP}/v1alpha1"), "kind": "InferenceAccess", "name": name, "namespace": ns, "uid": uid}}).to_string()).await;
    }
    c.ok("PATCH", &format!("{access_path}/{name}/status"), "application/merge-patch+json", &json!({"status": {"observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "CredentialIssued", "message": "credential issued", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "secretName": secret, "expiresAt": "2026-01-02T00:00:00Z"}}).to_string()).await;
    uid
}

/// Waits until the KServe stand-in has a running predictor pod for every InferenceService.
async fn settle(c: &mut Conn, isvcs: usize) {
    let started = Instant::now();
    loop {
        c.ok(
            "GET",
            "/api/v1/pods?labelSelector=component%3Dpredictor&limit=1",
            "application/json",
            "",
        )
        .await;
        let v = c.json();
        let n = v["items"].as_array().map_or(0, Vec::len)
            + v["metadata"]["remainingItemCount"].as_u64().unwrap_or(0) as usize;
        if n >= isvcs {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {n} of {isvcs} predictor pods"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn worlds(sizes: &[usize]) {
    let server = Server::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (url, token) = (server.url.clone(), server.token.clone());
        let mut c = Conn::open(&url, &token).await;
        c.ok("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json", &access_crd().to_string()).await;
        for n in 0..NAMESPACES {
            c.ok("POST", "/api/v1/namespaces", "application/json", &json!({"metadata": {"name": ns_of(n)}}).to_string()).await;
        }
        println!("== access worlds (server in a child process on one core; per request: server CPU time)");
        println!("{:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
            "worlds", "ssa-new", "ssa-noop", "get", "list-sel", "list-ns", "token", "watch-sel", "other-kind", "build", "RSS MiB", "peak MiB");
        let (mut built, mut probes) = (0usize, 0usize);
        let mut owners: Vec<String> = Vec::new();
        for &size in sizes {
            let cpu0 = server.cpu();
            // Build up to `size` worlds over several connections.
            let mut tasks = Vec::new();
            for k in 0..CONNECTIONS {
                let (url, token) = (url.clone(), token.clone());
                let (from, to) = (built, size.max(built));
                tasks.push(tokio::spawn(async move {
                    let mut c = Conn::open(&url, &token).await;
                    let mut made = Vec::new();
                    for i in (from + k..to).step_by(CONNECTIONS) {
                        made.push((i, make_world(&mut c, i).await));
                    }
                    made
                }));
            }
            owners.resize(size.max(built), String::new());
            for t in tasks {
                for (i, uid) in t.await.expect("builder") {
                    owners[i] = uid;
                }
            }
            built = size.max(built);
            settle(&mut c, built + probes).await;
            let build = if size == 0 { String::from("-") } else { format!("{:.1} s", (server.cpu() - cpu0).as_secs_f64()) };
            // Server-side apply of a new InferenceService (the stand-in's pod and status writes
            // that follow are counted in, settled before the CPU time is read).
            const PROBES: usize = 200;
            let begun = server.begin();
            for j in 0..PROBES {
                c.ok("PATCH", &format!("/apis/serving.kserve.io/v1beta1/namespaces/bench-0/inferenceservices/probe-{size}-{j}?fieldManager=inference-access&force=true"), "application/apply-patch+yaml", &isvc(&format!("probe-{size}-{j}"), None)).await;
            }
            probes += PROBES;
            // Measured once the stand-in's reaction is over, and checked only afterwards (the
            // check is not counted).
            server.idle().await;
            let ssa_new = server.per_request(begun, PROBES);
            settle(&mut c, built + probes).await;
            // The operator's steady state: re-applying an unchanged InferenceService.
            let span = size.max(1);
            let target = |j: usize| -> (String, String, Option<String>) {
                if size == 0 {
                    ("bench-0".into(), format!("probe-0-{}", j % PROBES), None)
                } else {
                    let i = (j * 7919) % size;
                    (ns_of(i), format!("a{i}"), Some(owners[i].clone()))
                }
            };
            let isvc_path = |ns: &str, name: &str| format!("/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}");
            let reqs = (0..1000).map(|j| {
                let (ns, name, owner) = target(j);
                let body = isvc(&name, owner.as_deref().map(|uid| (name.as_str(), uid)));
                ("PATCH", format!("{}?fieldManager=inference-access&force=true", isvc_path(&ns, &name)), "application/apply-patch+yaml", body)
            });
            let ssa_noop = cpu_per_request(&server, &mut c, reqs.collect()).await;
            let reqs = (0..1000).map(|j| {
                let (ns, name, _) = target(j);
                ("GET", isvc_path(&ns, &name), "application/json", String::new())
            });
            let get = cpu_per_request(&server, &mut c, reqs.collect()).await;
            // An access's Secret by label selector in its namespace (one item).
            let reqs = (0..1000).map(|j| {
                let i = (j * 7919) % span;
                ("GET", format!("/api/v1/namespaces/{}/secrets?labelSelector=inference-access.io%2Faccess%3Da{i}", ns_of(i)), "application/json", String::new())
            });
            let list_sel = cpu_per_request(&server, &mut c, reqs.collect()).await;
            // Every ServiceAccount of another, small namespace (default: one item).
            let reqs = (0..1000).map(|_| ("GET", "/api/v1/namespaces/default/serviceaccounts".to_string(), "application/json", String::new()));
            let list_ns = cpu_per_request(&server, &mut c, reqs.collect()).await;
            // A TokenRequest for an access's ServiceAccount (an RS256 signature each).
            let reqs = (0..200).map(|j| {
                let (ns, sa) = if size == 0 { ("default".to_string(), "default".to_string()) } else { let i = (j * 7919) % size; (ns_of(i), format!("a{i}-client")) };
                ("POST", format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"), "application/json",
                    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": ["istio-ingressgateway.istio-system.svc.cluster.local"], "expirationSeconds": 3600}}).to_string())
            });
            let token_request = cpu_per_request(&server, &mut c, reqs.collect()).await;
            // A label-selected watch's start (initial state: one InferenceService).
            let watch_sel = {
                let begun = server.begin();
                let mut started = Vec::new();
                for j in 0..200 {
                    let i = (j * 7919) % span;
                    let path = if size == 0 { format!("/apis/serving.kserve.io/v1beta1/namespaces/bench-0/inferenceservices?watch=true&labelSelector=inference-access.io%2Faccess%3Dprobe-0-{j}&timeoutSeconds=1") } else { format!("/apis/serving.kserve.io/v1beta1/namespaces/{}/inferenceservices?watch=true&labelSelector=inference-access.io%2Faccess%3Da{i}&timeoutSeconds=1", ns_of(i)) };
                    let mut w = open_watch(&url, &token, &path).await;
                    read_watch_events(&mut w, 1).await;
                    started.push(w);
                }
                (server.per_request(begun, 200), started)
            };
            let (watch_sel, mut started) = watch_sel;
            // 20 InferenceService watches stay open while 1,000 ConfigMaps change: a change of
            // another kind should cost the watches nothing.
            let mut idle = Vec::new();
            for _ in 0..20 {
                idle.push(open_watch(&url, &token, "/apis/serving.kserve.io/v1beta1/inferenceservices?watch=true&resourceVersion=0&timeoutSeconds=2&labelSelector=none%3Dnone").await);
            }
            c.ok("GET", "/api/v1/namespaces/default/configmaps", "application/json", "").await;
            let cm = format!("cm-{size}");
            c.ok("POST", "/api/v1/namespaces/default/configmaps", "application/json", &json!({"metadata": {"name": cm}, "data": {"n": "0"}}).to_string()).await;
            let reqs = (0..1000).map(|j| ("PATCH", format!("/api/v1/namespaces/default/configmaps/{cm}"), "application/merge-patch+json", json!({"data": {"n": j.to_string()}}).to_string()));
            let other_kind = cpu_per_request(&server, &mut c, reqs.collect()).await;
            let (rss, peak) = server.rss_mib();
            // Every watch of this round ends on the server (its timeoutSeconds) before the next.
            started.append(&mut idle);
            for w in &mut started {
                read_to_end(w).await;
            }
            println!("{size:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {build:>10} {rss:>9.0} {peak:>9.0}",
                ssa_new, ssa_noop, get, list_sel, list_ns, token_request, watch_sel, other_kind);
        }
        // Whole-kind reads at the largest size.
        let t = server.cpu();
        let wall = Instant::now();
        c.ok("GET", "/api/v1/secrets", "application/json", "").await;
        let (cpu, wall) = (server.cpu() - t, wall.elapsed());
        let n = c.json()["items"].as_array().map_or(0, Vec::len);
        println!("list every Secret ({n}, {} KiB): {} server CPU, {} wall", c.body().len() / 1024, ms(cpu), ms(wall));
        let t = server.cpu();
        let wall = Instant::now();
        let pods = built + probes;
        let mut w = open_watch(&url, &token, "/api/v1/pods?watch=true&timeoutSeconds=30").await;
        read_watch_events(&mut w, pods).await;
        println!("watch every Pod from now ({pods} ADDED): {} server CPU, {} wall", ms(server.cpu() - t), ms(wall.elapsed()));
    });
    server.stop();
}
