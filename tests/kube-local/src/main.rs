//! `kube-local serve --port N --kubeconfig OUT`: runs the local control plane until SIGTERM/Ctrl-C.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kube_local::{ControlPlane, UrlStyle};

#[derive(Parser)]
#[command(
    name = "kube-local",
    about = "A local Kubernetes control plane for tests and demos (not a product)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Style {
    Knative,
    Standard,
    PathTemplate,
}

#[derive(Subcommand)]
enum Command {
    /// Serve on 127.0.0.1 and write a kubeconfig for the admin user.
    Serve {
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Where to write the kubeconfig.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Enforce RBAC for non-admin callers.
        #[arg(long)]
        rbac: bool,
        /// Cap on ServiceAccount token lifetimes, in seconds.
        #[arg(long)]
        token_max_expiration_seconds: Option<u64>,
        /// Milliseconds before the KServe stand-in marks an InferenceService ready.
        #[arg(long, default_value_t = 200)]
        kserve_ready_delay_ms: u64,
        #[arg(long, default_value = "example.com")]
        kserve_domain: String,
        #[arg(long, value_enum, default_value_t = Style::Knative)]
        kserve_url_style: Style,
        /// KServe's enableGatewayApi: an HTTPRoute on kserve/kserve-ingress-gateway for each
        /// Standard-mode InferenceService (with the Gateway API CRDs given by --crd).
        #[arg(long)]
        kserve_gateway_api: bool,
        /// Start without the Istio CRDs.
        #[arg(long)]
        without_istio: bool,
        /// Extra CRD files to serve.
        #[arg(long = "crd")]
        crds: Vec<PathBuf>,
        /// Write an https:// kubeconfig (with the CA made at start) instead of http://.
        #[arg(long)]
        tls: bool,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Command::Serve {
        port,
        kubeconfig,
        rbac,
        token_max_expiration_seconds,
        kserve_ready_delay_ms,
        kserve_domain,
        kserve_url_style,
        kserve_gateway_api,
        without_istio,
        crds,
        tls,
    } = Cli::parse().command;
    let style = match kserve_url_style {
        Style::Knative => UrlStyle::Knative,
        Style::Standard => UrlStyle::Standard,
        Style::PathTemplate => UrlStyle::PathTemplate,
    };
    let mut builder = ControlPlane::builder()
        .port(port)
        .rbac(rbac)
        .token_max_expiration(token_max_expiration_seconds.map(Duration::from_secs))
        .kserve_ready_delay(Duration::from_millis(kserve_ready_delay_ms))
        .kserve_domain(&kserve_domain)
        .kserve_url_style(style)
        .kserve_gateway_api(kserve_gateway_api)
        .load_crds(&crds);
    if without_istio {
        builder = builder.without_istio();
    }
    let cp = match builder.start().await {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("kube-local: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let written = if tls {
        ControlPlane::write_kubeconfig_text(&kubeconfig, &cp.kubeconfig_tls_yaml())
    } else {
        cp.write_kubeconfig(&kubeconfig)
    };
    if let Err(e) = written {
        eprintln!("kube-local: writing {}: {e}", kubeconfig.display());
        return std::process::ExitCode::FAILURE;
    }
    println!("{}", if tls { cp.https_url() } else { cp.url() });
    eprintln!(
        "kube-local: serving {} (kubeconfig {}); Ctrl-C or SIGTERM stops it",
        cp.url(),
        kubeconfig.display()
    );
    wait_for_signal().await;
    cp.shutdown().await;
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
