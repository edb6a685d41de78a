//! The operator benchmark (issue 9): the real operator binary (this build) against kube-local
//! in this process, InferenceService ready delay 0, verification off. It prints one table and
//! writes the figures as JSON and an SVG plot. A benchmark, not a test: nothing here fails on
//! a time.
//!
//! `cargo bench -p inference-access --bench operator -- [--sizes 100,1000,10000] [--smoke]`;
//! `make bench` runs it in full, `make bench-smoke` at a small size. docs/performance.md has
//! the figures and how to read them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark's startup: a panic is a report

/// kube-local serves from this process: with glibc's allocator, malloc and free were about a
/// fifth of its CPU, which the operator's figures would carry.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod load;
mod report;
mod world;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use inference_access::api::InferenceAccess;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use load::{Created, ReadyWatch, create_accesses, namespaces, percentile};
use world::{Operator, Result, Server, mib, namespace};

#[derive(Parser, Debug, Clone)]
#[command(about = "The inference-access operator benchmark")]
struct Args {
    /// Numbers of accesses, each measured on a fresh control plane.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    sizes: Vec<usize>,
    /// Credentials sent through the scripted kubectl path (per size).
    #[arg(long, default_value_t = 10)]
    kubectl_sample: usize,
    /// Crowded cluster: accesses, then unrelated 32 KiB Secrets, then unrelated
    /// InferenceServices.
    #[arg(long, default_value_t = 1000)]
    crowded_accesses: usize,
    #[arg(long, default_value_t = 50_000)]
    crowded_secrets: usize,
    #[arg(long, default_value_t = 5_000)]
    crowded_inference_services: usize,
    /// Renewal storm: accesses with 10-minute tokens, all due this long after their issue
    /// (longer than the burst takes to issue them all, so no access renews twice before the
    /// last renews once).
    #[arg(long, default_value_t = 10_000)]
    storm_accesses: usize,
    #[arg(long, default_value = "240", value_parser = parse_secs)]
    storm_due_after: Duration,
    /// Parts to run.
    #[arg(long, value_delimiter = ',', default_value = "sizes,crowded,storm")]
    only: Vec<String>,
    /// Small sizes for CI: every part runs, in well under a minute of load.
    #[arg(long)]
    smoke: bool,
    /// Where the JSON and the SVG go.
    #[arg(long, default_value = "target/operator-bench")]
    out: PathBuf,
    /// Cargo passes this to every bench target.
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_secs(s: &str) -> std::result::Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| e.to_string())
}

impl Args {
    fn smoke(mut self) -> Self {
        if self.smoke {
            self.sizes = vec![20];
            self.kubectl_sample = 2;
            self.crowded_accesses = 20;
            self.crowded_secrets = 200;
            self.crowded_inference_services = 100;
            self.storm_accesses = 20;
            self.storm_due_after = Duration::from_secs(10);
        }
        self
    }
}

fn main() -> Result<()> {
    let args = Args::parse().smoke();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let work = std::env::temp_dir().join(format!("operator-bench-{}", std::process::id()));
    let mut results = json!({
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "settings": {"kserveReadyDelayMs": 0, "verification": false, "operatorConcurrency": 8},
        "sizes": [],
    });
    if args.only.iter().any(|p| p == "sizes") {
        for &n in &args.sizes {
            eprintln!("== {n} accesses");
            let figures = size(&args, n, &work.join(format!("size-{n}"))).await?;
            eprintln!("{figures:#}");
            results["sizes"].as_array_mut().unwrap().push(figures);
        }
    }
    if args.only.iter().any(|p| p == "crowded") {
        eprintln!("== crowded cluster");
        results["crowded"] = crowded(&args, &work.join("crowded")).await?;
        eprintln!("{:#}", results["crowded"]);
    }
    if args.only.iter().any(|p| p == "storm") {
        eprintln!("== renewal storm");
        results["storm"] = storm(&args, &work.join("storm")).await?;
        eprintln!("{:#}", results["storm"]);
    }
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("operator.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    std::fs::write(args.out.join("operator.svg"), report::svg(&results))?;
    println!("{}", report::table(&results));
    eprintln!(
        "wrote {0}/operator.json and {0}/operator.svg",
        args.out.display()
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn builder() -> kube_local::Builder {
    kube_local::ControlPlane::builder().kserve_ready_delay(Duration::ZERO)
}

/// Creates `count` accesses in a burst with the operator running and waits until all are
/// Ready: seconds to all Ready and create→Ready of each.
async fn burst(
    server: &Server,
    prefix: &str,
    range: std::ops::Range<usize>,
    extra: &Value,
) -> Result<Burst> {
    let mut ready = ReadyWatch::start(&server.client).await?;
    let count = range.len();
    let started = Instant::now();
    let sent = create_accesses(&server.client, prefix, range, extra).await?;
    ready.wait_for(count).await?;
    let ready_at = ready.ready_at();
    let last = ready_at.values().max().copied().unwrap_or(started);
    let accesses = sent
        .into_iter()
        .filter_map(|(key, created)| Some((key.clone(), (created, *ready_at.get(&key)?))))
        .collect();
    Ok(Burst {
        took: last.saturating_duration_since(started),
        accesses,
    })
}

struct Burst {
    /// From the first create sent to the last access seen Ready.
    took: Duration,
    /// By `namespace/name`: when the access's create was sent and answered, and when it was
    /// seen Ready.
    accesses: HashMap<String, (Created, Instant)>,
}

impl Burst {
    /// create→Ready of every access, sorted.
    fn latencies(&self) -> Vec<Duration> {
        let mut latencies: Vec<Duration> = self
            .accesses
            .values()
            .map(|(created, ready)| ready.saturating_duration_since(created.sent))
            .collect();
        latencies.sort();
        latencies
    }
}

/// Where create→Ready goes, from the server's request log: per access, the create until the
/// API server answered it, then until the operator's first write (the InferenceService), then
/// its ServiceAccount, then its TokenRequest (the policy, KServe's URL and the Secret come
/// between), then the status that says Ready, then the bench's watch seeing it. p50 and p99 of
/// each step, and the steps of the slowest access.
fn phases(server: &Server, mark: u64, burst: &Burst) -> Value {
    let log = server.plane.requests();
    let started = log.started();
    let caller = world::operator_caller();
    // By access key: the first InferenceService, ServiceAccount, TokenRequest and status write.
    let mut writes: HashMap<String, [Option<Instant>; 4]> = HashMap::new();
    for r in log.since(mark) {
        let (Some(ns), Some(name)) = (&r.namespace, &r.name) else {
            continue;
        };
        if r.caller != caller || !r.is_write() {
            continue;
        }
        let (slot, access) = match (r.resource.as_str(), r.subresource.as_deref()) {
            ("inferenceservices", None) => (0, load::access_of_model(name)),
            ("serviceaccounts", None) => (1, name.clone()),
            ("serviceaccounts", Some("token")) => (2, name.clone()),
            ("inferenceaccesses", Some("status")) => (3, name.clone()),
            _ => continue,
        };
        let key = format!("{ns}/{access}");
        let at = writes.entry(key).or_insert([None; 4]);
        at[slot].get_or_insert(started + r.at);
    }
    let mut steps: Vec<(Duration, [Duration; report::STEPS.len()])> = burst
        .accesses
        .iter()
        .filter_map(|(key, (created, ready))| {
            let [isvc, sa, token, status] = *writes.get(key)?;
            let [isvc, sa, token, status] = [isvc?, sa?, token?, status?];
            let points = [
                created.sent,
                created.answered,
                isvc,
                sa,
                token,
                status,
                *ready,
            ];
            let mut step = [Duration::ZERO; report::STEPS.len()];
            for (i, pair) in points.windows(2).enumerate() {
                step[i] = pair[1].saturating_duration_since(pair[0]);
            }
            Some((ready.saturating_duration_since(created.sent), step))
        })
        .collect();
    steps.sort_by_key(|(total, _)| *total);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut out = serde_json::Map::new();
    for (i, (name, _)) in report::STEPS.iter().enumerate() {
        let mut of_step: Vec<Duration> = steps.iter().map(|(_, s)| s[i]).collect();
        of_step.sort();
        out.insert(
            (*name).to_owned(),
            json!({"p50": ms(percentile(&of_step, 50.0)), "p99": ms(percentile(&of_step, 99.0))}),
        );
    }
    if let Some((total, slowest)) = steps.last() {
        let by_step: serde_json::Map<String, Value> = report::STEPS
            .iter()
            .map(|(name, _)| name)
            .zip(slowest)
            .map(|(name, d)| ((*name).to_owned(), json!(ms(*d))))
            .collect();
        out.insert(
            "slowest".to_owned(),
            json!({"totalMs": ms(*total), "steps": by_step}),
        );
    }
    out.into()
}

/// Restarts the operator over converged accesses: /readyz time, then (once every access has
/// been reconciled again and all is quiet) the writes it sent and the tokens it minted.
async fn restart(
    server: &Server,
    operator: Operator,
    accesses: usize,
) -> Result<(Value, Operator)> {
    operator.stop()?;
    let mark = server.plane.requests().mark();
    let operator = Operator::spawn(server, "operator.log")?;
    let readyz = operator.ready().await?;
    let cpu_at_readyz = operator.cpu()?;
    while operator
        .metric("inference_access_reconciles_total", "")
        .await?
        < accesses as f64
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.settle(Duration::from_secs(1)).await;
    let requests = server.operator_requests(mark);
    if std::env::var_os("OPERATOR_BENCH_TRACE").is_some() {
        trace(server, mark, "bench-0");
    }
    let writes: usize = [
        "create",
        "patch",
        "update",
        "delete",
        "event",
        "tokenrequest",
    ]
    .iter()
    .filter_map(|v| requests.get(*v))
    .sum();
    Ok((
        json!({
            "readyzSeconds": readyz.as_secs_f64(),
            "operatorCpuSecondsToReadyz": cpu_at_readyz.as_secs_f64(),
            "writes": writes,
            "tokensMinted": requests.get("tokenrequest").copied().unwrap_or(0),
            "requests": requests,
        }),
        operator,
    ))
}

async fn size(args: &Args, n: usize, dir: &std::path::Path) -> Result<Value> {
    let server = Server::start(builder(), dir).await?;
    for ns in namespaces("bench", n)
        .into_iter()
        .chain(namespaces("bare", n))
        .chain(namespaces("bare-burst", n))
    {
        namespace(&server.client, &ns).await?;
    }
    let operator = Operator::spawn(&server, "operator.log")?;
    let readyz_empty = operator.ready().await?;
    let (idle_rss, _) = operator.rss()?;
    let mark = server.plane.requests().mark();
    let cpu_before = operator.cpu()?;
    let burst = burst(&server, "bench", 0..n, &Value::Null).await?;
    let (to_ready, latencies) = (burst.took, burst.latencies());
    let phases = phases(&server, mark, &burst);
    server.settle(Duration::from_secs(1)).await;
    let cpu = operator.cpu()?.saturating_sub(cpu_before);
    let requests = server.operator_requests(mark);
    if std::env::var_os("OPERATOR_BENCH_TRACE").is_some() {
        trace(&server, mark, "bench-0");
    }
    let per_access: BTreeMap<&String, f64> = requests
        .iter()
        .map(|(verb, count)| (verb, *count as f64 / n as f64))
        .collect();
    let (rss_at_quiet, peak) = operator.rss()?;
    let rss = operator.steady_rss().await?;
    let (restart, operator) = restart(&server, operator, n).await?;
    let (rss_after_restart_at_quiet, _) = operator.rss()?;
    let rss_after_restart = operator.steady_rss().await?;
    operator.stop()?;

    // The same server, the same run, no operator: the floor.
    let bare = load::bare_client(&server.client, "bare", n, 8).await?;
    let (bare_burst, bare_latencies) = load::bare_burst(&server.client, "bare-burst", n, 8).await?;
    let kubectl = match kubectl() {
        Some(kubectl) => {
            let sample = args.kubectl_sample.min(n);
            let path = server.admin_kubeconfig();
            let per = tokio::task::spawn_blocking(move || {
                load::kubectl_path(&kubectl, &path, "bench", sample)
            })
            .await??;
            json!({"sample": sample, "secondsPerCredential": per.as_secs_f64(),
                "ratio": per.as_secs_f64() * n as f64 / to_ready.as_secs_f64()})
        }
        None => json!(null),
    };
    Ok(json!({
        "accesses": n,
        "secondsToAllReady": to_ready.as_secs_f64(),
        "createToReadyMs": {
            "p50": percentile(&latencies, 50.0).as_secs_f64() * 1e3,
            "p99": percentile(&latencies, 99.0).as_secs_f64() * 1e3,
            "max": latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            "steps": phases,
        },
        "requestsPerAccess": per_access,
        "requestsPerAccessTotal": requests.values().sum::<usize>() as f64 / n as f64,
        "operatorCpuSeconds": cpu.as_secs_f64(),
        "rssMiB": {"idle": mib(idle_rss), "converged": mib(rss), "peak": mib(peak),
            "afterRestart": mib(rss_after_restart),
            "convergedAtQuiet": mib(rss_at_quiet),
            "afterRestartAtQuiet": mib(rss_after_restart_at_quiet)},
        "readyzSecondsEmpty": readyz_empty.as_secs_f64(),
        "restart": restart,
        "bareClient": {"seconds": bare.as_secs_f64(),
            "ratio": bare.as_secs_f64() / to_ready.as_secs_f64(),
            "burst": {
                "seconds": bare_burst.as_secs_f64(),
                "ratio": bare_burst.as_secs_f64() / to_ready.as_secs_f64(),
                "createToDoneMs": {
                    "p50": percentile(&bare_latencies, 50.0).as_secs_f64() * 1e3,
                    "p99": percentile(&bare_latencies, 99.0).as_secs_f64() * 1e3,
                }}},
        "kubectl": kubectl,
    }))
}

/// `OPERATOR_BENCH_TRACE=1`: the operator's requests in one namespace since `mark`, to see
/// where a figure comes from.
fn trace(server: &Server, mark: u64, namespace: &str) {
    let caller = world::operator_caller();
    for r in server.plane.requests().since(mark) {
        if r.caller == caller && r.namespace.as_deref() == Some(namespace) {
            eprintln!(
                "  {:>9.3} ms {} {}{} {} -> {}",
                r.at.as_secs_f64() * 1e3,
                r.verb,
                r.resource,
                r.subresource.map(|s| format!("/{s}")).unwrap_or_default(),
                r.name.unwrap_or_default(),
                r.code
            );
        }
    }
}

/// kubectl from `make tools` (or `KUBECTL`); the kubectl column is left out without it.
fn kubectl() -> Option<PathBuf> {
    let path = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| world::repo(".tools/bin/kubectl"));
    path.exists().then_some(path)
}

/// Operator RSS once the cluster is quiet and the memory has stopped falling.
async fn quiet_rss(server: &Server, operator: &Operator) -> Result<u64> {
    server.settle(Duration::from_secs(2)).await;
    operator.steady_rss().await
}

async fn crowded(args: &Args, dir: &std::path::Path) -> Result<Value> {
    let server = Server::start(builder(), dir).await?;
    let n = args.crowded_accesses;
    for ns in namespaces("bench", n) {
        namespace(&server.client, &ns).await?;
    }
    let operator = Operator::spawn(&server, "operator.log")?;
    operator.ready().await?;
    burst(&server, "bench", 0..n, &Value::Null).await?;
    let base = quiet_rss(&server, &operator).await?;

    // Unrelated Secrets in the accesses' namespaces, written straight into the store (no HTTP:
    // only what the operator sees matters here).
    let filler = "A".repeat(32 * 1024 / 3 * 4);
    for i in 0..args.crowded_secrets {
        let ns = load::namespace_of("bench", i);
        server.plane.store().apply(
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": format!("unrelated-{i}"), "namespace": ns},
                "data": {"blob": filler}}),
            "bench",
        )?;
    }
    let with_secrets = quiet_rss(&server, &operator).await?;

    // Unrelated InferenceServices: every one is watched (an access may reference any).
    for i in 0..args.crowded_inference_services {
        let ns = load::namespace_of("bench", i);
        server.plane.store().apply(
            json!({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": {"name": format!("unrelated-{i}"), "namespace": ns},
                "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                    "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}}),
            "bench",
        )?;
    }
    let with_models = quiet_rss(&server, &operator).await?;
    operator.stop()?;
    let per_model =
        (with_models as f64 - with_secrets as f64) / args.crowded_inference_services.max(1) as f64;
    Ok(json!({
        "accesses": n,
        "unrelatedSecrets": args.crowded_secrets,
        "unrelatedInferenceServices": args.crowded_inference_services,
        "rssMiB": {"accesses": mib(base), "withSecrets": mib(with_secrets), "withInferenceServices": mib(with_models)},
        "secretsRssRatio": with_secrets as f64 / base as f64,
        "perInferenceServiceKiB": per_model / 1024.0,
    }))
}

async fn storm(args: &Args, dir: &std::path::Path) -> Result<Value> {
    let server = Server::start(builder(), dir).await?;
    let n = args.storm_accesses;
    for ns in namespaces("storm", n) {
        namespace(&server.client, &ns).await?;
    }
    let operator = Operator::spawn(&server, "operator.log")?;
    operator.ready().await?;
    // 10 minutes is TokenRequest's minimum lifetime; renewBefore puts every renewal
    // `storm_due_after` after its issue, so all fall due within the burst's own span.
    let renew_before = Duration::from_secs(600).saturating_sub(args.storm_due_after);
    let spec = json!({"token": {"duration": "10m", "renewBefore": format!("{}s", renew_before.as_secs())}});
    let started = Instant::now();
    let issued_in = burst(&server, "storm", 0..n, &spec).await?.took;
    let accesses = Api::<InferenceAccess>::all(server.client.clone());
    let first = expiries(&accesses).await?;
    // The operator's request rate, second by second, until every credential was renewed.
    let mut rates = Vec::new();
    let mut last = server.plane.requests().mark();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let mark = server.plane.requests().mark();
        rates.push(mark - last);
        last = mark;
        let renewed = operator
            .metric("inference_access_credentials_total", "renew")
            .await?;
        if renewed >= n as f64 {
            break;
        }
    }
    let renewed_in = started.elapsed();
    server.settle(Duration::from_secs(1)).await;
    let then = expiries(&accesses).await?;
    let all_later = first
        .iter()
        .all(|(k, old)| then.get(k).is_some_and(|new| new > old));
    let earliest_expiry = first.values().min().copied().unwrap_or_default();
    let finished_at = jiff::Timestamp::now();
    operator.stop()?;
    Ok(json!({
        "accesses": n,
        "tokenDuration": "10m",
        "renewBefore": format!("{}s", renew_before.as_secs()),
        "issuedInSeconds": issued_in.as_secs_f64(),
        "allRenewedAfterSeconds": renewed_in.as_secs_f64(),
        "allRenewedBeforeExpiry": all_later && finished_at < earliest_expiry,
        "peakRequestsPerSecond": rates.iter().copied().max().unwrap_or(0),
        "requestsPerSecond": rates,
    }))
}

async fn expiries(accesses: &Api<InferenceAccess>) -> Result<BTreeMap<String, jiff::Timestamp>> {
    Ok(accesses
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|a| {
            let key = format!(
                "{}/{}",
                a.metadata.namespace.unwrap_or_default(),
                a.metadata.name.unwrap_or_default()
            );
            let expiry = a
                .status
                .and_then(|s| s.token_expiration_time)
                .map(|t| t.0)
                .unwrap_or_default();
            (key, expiry)
        })
        .collect())
}
