#![forbid(unsafe_code)]

use std::process::ExitCode;

/// jemalloc, not the platform's: one allocator in the glibc build the benchmark measures and the
/// static musl image, and glibc kept what a burst of accesses freed; see Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "inference-access",
    version,
    about = "Keeps a ready, self-renewing credential for a KServe InferenceService in a Secret"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the kubeconfig's cluster (or in-cluster config).
    Controller(ControllerArgs),
    /// Print the InferenceAccess CustomResourceDefinition as YAML.
    Crd,
    #[command(flatten)]
    Client(inference_access::cli::Command),
    /// Print a completion script for bash, zsh or fish; it completes commands, flags and the
    /// names of the namespace's accesses. Load it with `source <(inference-access completion
    /// bash)` (zsh likewise; fish: `inference-access completion fish | source`).
    Completion(inference_access::cli::completion::Args),
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Namespaces to watch, comma-separated; empty watches the whole cluster.
    #[arg(long, env = "INFERENCE_ACCESS_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Log filter, RUST_LOG syntax.
    #[arg(long, env = "INFERENCE_ACCESS_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[arg(long, env = "INFERENCE_ACCESS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Accesses reconciled at once.
    #[arg(long, env = "INFERENCE_ACCESS_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(
        long,
        env = "INFERENCE_ACCESS_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: std::net::SocketAddr,
    /// Run only while holding the leader Lease (for more than one replica).
    #[arg(long, env = "INFERENCE_ACCESS_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader Lease; in a cluster, the pod's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "inference-access-system")]
    leader_election_namespace: String,
    #[arg(
        long,
        env = "INFERENCE_ACCESS_LEASE_NAME",
        default_value = "inference-access-leader"
    )]
    lease_name: String,
    /// How long the Lease stays valid without renewal (Go duration); renewals come every third.
    #[arg(long, env = "INFERENCE_ACCESS_LEASE_DURATION", default_value = "15s")]
    lease_duration: kube::core::Duration,
    /// What an InferenceAccess may ask for.
    #[command(flatten)]
    limits: inference_access::cli::limits::LimitsArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(level: &str, format: LogFormat) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("invalid --log-level {level:?}: {e}"))?;
    // Colors only for a person at a terminal, never in pod logs or files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Some(code) = inference_access::cli::completion::intercept(Cli::command) {
        return code;
    }
    let result = match Cli::parse().command {
        Command::Crd => inference_access::api::crd::crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(|e| format!("cannot render the CRD: {e}")),
        Command::Controller(args) => run_controller(args),
        Command::Client(command) => inference_access::cli::run(command),
        Command::Completion(args) => {
            inference_access::cli::completion::print(&args, &Cli::command())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_controller(args: ControllerArgs) -> Result<(), String> {
    init_logging(&args.log_level, args.log_format)?;
    let limits = args
        .limits
        .limits()
        .map_err(|e| format!("invalid limits: {e}"))?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            format!("cannot configure a Kubernetes client (kubeconfig or in-cluster): {e}")
        })?;
        let lease_duration = std::time::Duration::from(args.lease_duration);
        if args.leader_elect && lease_duration < std::time::Duration::from_secs(3) {
            return Err("--lease-duration must be at least 3s".into());
        }
        let leader = args
            .leader_elect
            .then(|| inference_access::runtime::leader::Settings {
                namespace: args.leader_election_namespace,
                lease_name: args.lease_name,
                identity: identity(),
                lease_duration,
                retry_period: lease_duration / 3,
            });
        let options = inference_access::runtime::run::Options {
            controller: inference_access::runtime::controller::Settings {
                namespaces: args
                    .namespaces
                    .into_iter()
                    .filter(|n| !n.is_empty())
                    .collect(),
                concurrency: args.concurrency.max(1),
                limits,
            },
            metrics_addr: args.metrics_addr,
            leader,
        };
        inference_access::runtime::run::run(client, options).await
    })
}

/// This replica's name for the Lease: the pod name in a cluster, else host and process.
fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        format!("{host}-{}", std::process::id())
    })
}
