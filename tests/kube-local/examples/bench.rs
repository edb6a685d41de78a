//! Throughput figures for the README: `cargo run --release -p kube-local --example bench`.
//!
//! The control plane runs on a single-threaded runtime in its own thread (one core); the load
//! comes from another thread over loopback, with keep-alive HTTP/1.1 connections written by hand
//! so the client costs as little as possible. Every phase is bounded in time and count.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark: any failure aborts it

use std::time::{Duration, Instant};

use kube_local::ControlPlane;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 8;
const PHASE: Duration = Duration::from_secs(3);

/// One keep-alive connection that sends a request and reads one Content-Length response.
struct Conn {
    stream: TcpStream,
    host: String,
    token: String,
    buf: Vec<u8>,
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
                framed = Some((head[9..12].parse().unwrap_or(0), end + 4 + len));
            }
            if let Some((code, total)) = framed
                && self.buf.len() >= total
            {
                return code;
            }
        }
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

async fn count_watch_events(url: &str, token: &str, path: &str, want: usize) -> Duration {
    let mut stream = TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .expect("connect");
    let start = Instant::now();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
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
    start.elapsed()
}

fn main() {
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
            let (url, token) = (url.clone(), token.clone());
            let path = format!("/api/v1/namespaces/default/secrets?watch=true&resourceVersion={rv}&timeoutSeconds=60");
            watchers.push(tokio::spawn(async move { count_watch_events(&url, &token, &path, 1000).await }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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
