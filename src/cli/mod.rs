//! The client side: commands people run against an access (also as the kubectl plugin
//! `kubectl-inference_access`: `ln -s inference-access kubectl-inference_access` somewhere on
//! PATH, then `kubectl inference-access predict ...`; clap takes the usage name from argv[0]),
//! and their shell completion ([`completion`]).
//!
//! Every command is a thin shell: read what it needs (kube-rs with the kubeconfig, the gateway
//! through [`crate::gateway::client`]), then a pure function builds what is printed, so the
//! output formats are unit-tested without a cluster.

mod access;
pub mod completion;
mod curl;
mod doctor;
mod doctor_checks;
mod doctor_hops;
pub mod limits;
mod login;
mod output;
mod predict;
mod render;
mod renew;
mod status;

use std::future::Future;
use std::path::PathBuf;

pub use output::Output;

/// Client commands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Send a prediction request through the gateway with the access's credential and print
    /// the model's answer.
    Predict(predict::Args),
    /// Show an access: conditions, InferenceService, credential expiry and renewal, the Secret's
    /// keys (values hidden), the access policy and recent events.
    Status(status::Args),
    /// Ask the operator to renew the credential now.
    Renew(renew::Args),
    /// Print the access's token (or Dex session cookie), for `$(...)`.
    Token(access::TokenArgs),
    /// Print a ready curl command equivalent to the KServe sample's; it reads the token from the
    /// Secret with kubectl when run, so the command itself holds no credential.
    Curl(curl::Args),
    /// Log in to Dex through the gateway (the sample's get_istio_auth_session) and print the
    /// session cookie as name=value.
    Login(login::Args),
    /// Walk the path to the model hop by hop (target, token, mesh path, gateway and its
    /// RequestAuthentication, route, policies, sidecar or waypoint), send one request through
    /// the gateway, and name the hop that refuses it with the fix. Exit code 1 when one does.
    Doctor(doctor::Args),
    /// Print, offline, the objects the operator would create for the InferenceAccess in a file
    /// (Secret values redacted).
    Render(render::Args),
}

pub fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Render(args) => render::run(&args),
        Command::Predict(args) => block_on(predict::run(args)),
        Command::Status(args) => block_on(status::run(args)),
        Command::Renew(args) => block_on(renew::run(args)),
        Command::Token(args) => block_on(access::run_token(args)),
        Command::Curl(args) => block_on(curl::run(args)),
        Command::Login(args) => block_on(login::run(args)),
        Command::Doctor(args) => block_on(doctor::run(args)),
    }
}

fn block_on<F: Future<Output = Result<(), String>>>(future: F) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(future)
}

/// Where the access lives: the kubeconfig flags kubectl plugins are expected to take.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Target {
    /// Namespace of the InferenceAccess (default: the kubeconfig context's namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, which may list several files,
    /// ~/.kube/config, or the in-cluster configuration).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
}
