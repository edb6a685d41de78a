#![forbid(unsafe_code)]
//! `mesh-local gateway ...` and `mesh-local model-server ...`: the doubles as processes (demo).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mesh_local::{Flavour, Gateway, LdapUser, LoginConfig, ModelServer, StaticUser};

#[derive(Parser)]
#[command(
    about = "Test doubles: Kubeflow's Istio ingress gateway with Dex, and the KServe model server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Kubeflow's ingress gateway and any Gateway API gateways (plus Dex and
    /// oauth2-proxy/authservice under /dex/, /oauth2/, /authservice/).
    Gateway(Box<GatewayArgs>),
    /// The real KServe model server serving sklearn-iris (creates its venv on first use).
    ModelServer {
        /// Port on 127.0.0.1 (0 = any free port; the chosen URL is printed).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

#[derive(clap::Args)]
struct GatewayArgs {
    /// Port on 127.0.0.1 (0 = any free port; the chosen URL is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Kubeconfig of the API server to read InferenceServices, pods, policies and JWKS from
    /// (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Model server URL; `NS/NAME=URL` for one InferenceService. Repeatable.
    #[arg(long = "upstream", value_name = "[NS/NAME=]URL")]
    upstreams: Vec<String>,
    /// Model server behind one Service (an HTTPRoute backend): `NS/SERVICE=URL`. Repeatable.
    #[arg(long = "upstream-service", value_name = "NS/SERVICE=URL")]
    service_upstreams: Vec<String>,
    /// Also play this Gateway API Gateway on a port of its own (`NS/NAME`, or `NS/NAME=PORT`);
    /// its URL is printed as `NS/NAME URL` after the first line. Repeatable.
    #[arg(long = "gateway-api", value_name = "NS/NAME[=PORT]")]
    gateway_api: Vec<String>,
    /// Audience bearer tokens must carry (default: any, as Kubeflow's m2m-token-issuer).
    #[arg(long)]
    audience: Option<String>,
    /// Trusted token issuer.
    #[arg(long, default_value = mesh_local::jwt::KUBERNETES_ISSUER)]
    issuer: String,
    /// Session front end before Dex: oauth2-proxy (Kubeflow ≥ 1.9) or authservice (≤ 1.8).
    #[arg(long, default_value = "oauth2-proxy")]
    dex_flavour: Flavour,
    /// Dex staticPasswords user `EMAIL:PASSWORD` (repeatable; default user@example.com:12341234).
    #[arg(long = "dex-user", value_name = "EMAIL:PASSWORD")]
    dex_users: Vec<String>,
    /// LDAP connector user `USERNAME:PASSWORD:EMAIL` (repeatable; enables the ldap connector).
    #[arg(long = "dex-ldap-user", value_name = "USERNAME:PASSWORD:EMAIL")]
    ldap_users: Vec<String>,
    /// Session cookie lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    dex_session_max_age: u64,
    /// Do not apply Kubeflow's mesh-wide deny-all at sidecars and ztunnel.
    #[arg(long)]
    no_global_deny_all: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Gateway(args) => run_gateway(*args).await,
        Command::ModelServer { port } => {
            let server = ModelServer::start_on(port).await?;
            println!("{}", server.url());
            shutdown_signal().await?;
            server.stop().await;
            Ok(())
        }
    }
}

async fn run_gateway(args: GatewayArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut login = LoginConfig {
        flavour: args.dex_flavour,
        session_max_age: Duration::from_secs(args.dex_session_max_age),
        ..LoginConfig::default()
    };
    if !args.dex_users.is_empty() {
        login.static_users = args
            .dex_users
            .iter()
            .map(|spec| {
                let (email, password) = spec
                    .split_once(':')
                    .ok_or("--dex-user wants EMAIL:PASSWORD")?;
                Ok(StaticUser {
                    email: email.to_owned(),
                    password: password.to_owned(),
                })
            })
            .collect::<Result<_, &str>>()?;
    }
    login.ldap_users = args
        .ldap_users
        .iter()
        .map(|spec| {
            let mut parts = spec.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(username), Some(password), Some(email)) => Ok(LdapUser {
                    username: username.to_owned(),
                    password: password.to_owned(),
                    email: email.to_owned(),
                }),
                _ => Err("--dex-ldap-user wants USERNAME:PASSWORD:EMAIL"),
            }
        })
        .collect::<Result<_, &str>>()?;

    let mut builder = Gateway::builder()
        .port(args.port)
        .issuer(&args.issuer)
        .login(login)
        .global_deny_all(!args.no_global_deny_all);
    if let Some(path) = args.kubeconfig {
        builder = builder.kubeconfig(path);
    }
    if let Some(audience) = &args.audience {
        builder = builder.audience(audience);
    }
    for spec in &args.upstreams {
        builder = match spec.split_once('=') {
            Some((target, url)) => {
                let (namespace, name) = target
                    .split_once('/')
                    .ok_or("--upstream wants NS/NAME=URL or URL")?;
                builder.upstream_for(namespace, name, url)
            }
            None => builder.upstream(spec),
        };
    }
    for spec in &args.service_upstreams {
        let (target, url) = spec
            .split_once('=')
            .ok_or("--upstream-service wants NS/SERVICE=URL")?;
        let (namespace, service) = target
            .split_once('/')
            .ok_or("--upstream-service wants NS/SERVICE=URL")?;
        builder = builder.upstream_for_service(namespace, service, url);
    }
    let mut gateways = Vec::new();
    for spec in &args.gateway_api {
        let (target, port) = match spec.split_once('=') {
            Some((target, port)) => (
                target,
                port.parse()
                    .map_err(|_| "--gateway-api wants NS/NAME[=PORT]")?,
            ),
            None => (spec.as_str(), 0),
        };
        let (namespace, name) = target
            .split_once('/')
            .ok_or("--gateway-api wants NS/NAME[=PORT]")?;
        builder = builder.gateway_api_on(namespace, name, port);
        gateways.push((namespace.to_owned(), name.to_owned()));
    }
    let gateway = builder.start().await?;
    println!("{}", gateway.url());
    for (namespace, name) in &gateways {
        if let Some(url) = gateway.gateway_api_url(namespace, name) {
            println!("{namespace}/{name} {url}");
        }
    }
    shutdown_signal().await?;
    gateway.shutdown().await;
    Ok(())
}

/// Ctrl-C or SIGTERM (what `kill` and process supervisors send).
async fn shutdown_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
