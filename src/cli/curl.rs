//! `curl`: the sample's curl command, filled in from the access, with the credential read from
//! the Secret when the command runs (so it never sits in shell history or a terminal scrollback).

use super::Target;
use super::access::{self, Cluster, client_secret, endpoint};
use crate::core::secret_codec::{CredentialKind, KEY_COOKIE};

#[derive(clap::Args)]
pub struct Args {
    /// Name of the InferenceAccess.
    pub name: String,
    /// The request body file the command sends with `-d @FILE`.
    #[arg(short = 'f', long = "filename", default_value = "./iris-input.json")]
    pub file: String,
    /// Open Inference Protocol (v2) URL.
    #[arg(long)]
    pub v2: bool,
    /// Use this gateway address instead of the Secret's gateway-url (e.g. http://localhost:8080).
    #[arg(long)]
    pub gateway: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

pub async fn run(args: Args) -> Result<(), String> {
    let cluster = Cluster::connect(&args.target).await?;
    let (access, secret) = cluster.access_and_secret(&args.name).await?;
    let stored = client_secret(&secret, &args.name, &cluster.namespace)?;
    let endpoint = endpoint(
        &stored,
        &access.spec.inference_service.name,
        args.gateway.as_deref(),
    )?;
    let url = if args.v2 {
        endpoint.infer_url()
    } else {
        endpoint.predict_url()
    };
    let key = CredentialKind::of(&stored.credential).credential_key();
    println!(
        "{}",
        command(&CurlCommand {
            namespace: &cluster.namespace,
            secret: &access::secret_name(&access),
            key,
            host: &stored.host,
            url: &url,
            file: &args.file,
        })
    );
    Ok(())
}

pub struct CurlCommand<'a> {
    pub namespace: &'a str,
    pub secret: &'a str,
    /// `token` (sent as a bearer token) or `cookie` (sent as the Cookie header).
    pub key: &'a str,
    pub host: &'a str,
    pub url: &'a str,
    pub file: &'a str,
}

/// The command line; every value is shell-quoted, the credential comes from kubectl at run time.
pub fn command(c: &CurlCommand<'_>) -> String {
    let read = format!(
        "$(kubectl get secret {} -n {} -o jsonpath='{{.data.{}}}' | base64 -d)",
        quote(c.secret),
        quote(c.namespace),
        c.key
    );
    let credential = if c.key == KEY_COOKIE {
        format!("\"Cookie: {read}\"")
    } else {
        format!("\"Authorization: Bearer {read}\"")
    };
    format!(
        "curl -v -H {} -H {credential} -H 'Content-Type: application/json' -d {} {}",
        quote(&format!("Host: {}", c.host)),
        quote(&format!("@{}", c.file)),
        quote(c.url)
    )
}

/// Single-quotes `text` for a POSIX shell unless it is plainly safe.
fn quote(text: &str) -> String {
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@=,+".contains(c));
    if safe {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_samples_command_without_the_token() {
        let text = command(&CurlCommand {
            namespace: "kubeflow-user-example-com",
            secret: "sklearn-iris-client-credential",
            key: "token",
            host: "sklearn-iris.kubeflow-user-example-com.example.com",
            url: "http://localhost:8080/v1/models/sklearn-iris:predict",
            file: "./iris-input.json",
        });
        assert_eq!(
            text,
            "curl -v -H 'Host: sklearn-iris.kubeflow-user-example-com.example.com' \
             -H \"Authorization: Bearer $(kubectl get secret sklearn-iris-client-credential \
             -n kubeflow-user-example-com -o jsonpath='{.data.token}' | base64 -d)\" \
             -H 'Content-Type: application/json' -d @./iris-input.json \
             http://localhost:8080/v1/models/sklearn-iris:predict"
        );
    }

    #[test]
    fn cookies_and_odd_file_names() {
        let text = command(&CurlCommand {
            namespace: "ns",
            secret: "s",
            key: "cookie",
            host: "h",
            url: "http://gw/v1/models/m:predict",
            file: "my input's.json",
        });
        assert!(text.contains("-H \"Cookie: $(kubectl get secret s -n ns -o jsonpath='{.data.cookie}' | base64 -d)\""), "{text}");
        assert!(text.contains(r"-d '@my input'\''s.json'"), "{text}");
    }
}
