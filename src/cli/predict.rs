//! `predict`: the sample's curl, with the access's credential.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::Method;

use super::access::{Cluster, client_secret, endpoint};
use super::{Output, Target};
use crate::core::diagnosis::{self, Diagnosis};
use crate::gateway::client::GatewayClient;
use crate::gateway::probe;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("body").required(true).args(["file", "data"])))]
pub struct Args {
    /// Name of the InferenceAccess.
    pub name: String,
    /// JSON request body from a file (`-` for stdin), e.g. the sample's iris-input.json.
    #[arg(short = 'f', long = "filename")]
    pub file: Option<PathBuf>,
    /// JSON request body inline.
    #[arg(long)]
    pub data: Option<String>,
    /// Open Inference Protocol (v2): POST to the Secret's infer-url instead of predict-url.
    #[arg(long)]
    pub v2: bool,
    /// Send to this gateway address instead of the Secret's gateway-url (e.g. a port-forward:
    /// http://localhost:8080).
    #[arg(long)]
    pub gateway: Option<String>,
    /// How long to wait for the model's answer, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Output format: human text, or json/yaml for scripts.
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    #[command(flatten)]
    pub target: Target,
}

pub async fn run(args: Args) -> Result<(), String> {
    let body = request_body(&args)?;
    let cluster = Cluster::connect(&args.target).await?;
    let (access, secret) = cluster.access_and_secret(&args.name).await?;
    let stored = client_secret(&secret, &args.name, &cluster.namespace)?;
    let model = &access.spec.inference_service.name;
    let endpoint = endpoint(&stored, model, args.gateway.as_deref())?;
    let url = match (args.v2, args.gateway.is_some()) {
        (false, false) => stored.predict_url.clone(),
        (true, false) => stored.infer_url.clone(),
        (false, true) => endpoint.predict_url(),
        (true, true) => endpoint.infer_url(),
    };
    let client = GatewayClient::new()
        .map_err(|e| e.to_string())?
        .with_timeout(Duration::from_secs(args.timeout));
    let (header, value) = stored.credential.header();
    let headers = [
        ("host", stored.host.as_str()),
        (header, value.as_str()),
        ("content-type", "application/json"),
    ];
    let response = match client
        .send(Method::POST, &url, &headers, Some(Bytes::from(body)))
        .await
    {
        Ok(response) => response,
        Err(error) => {
            let diagnosis = Diagnosis::GatewayUnreachable {
                error: error.to_string(),
            };
            let mut message = format!("{}: {}", diagnosis.reason(), diagnosis.message(&endpoint));
            if args.gateway.is_none() {
                // The Secret holds the in-cluster address; from a laptop the gateway needs a
                // port-forward, as in the KServe sample.
                message.push_str(
                    "; from outside the cluster, run `kubectl port-forward -n istio-system \
                     svc/istio-ingressgateway 8080:80` and pass --gateway http://localhost:8080",
                );
            }
            return Err(message);
        }
    };
    let text = response.text();
    let diagnosis = diagnosis::diagnose(&probe::answer(&response, &text), &stored.host);
    if !diagnosis.is_reachable() {
        return Err(failure(&diagnosis, &endpoint, response.status, &url, &text));
    }
    print!("{}", format_answer(&text, args.output)?);
    Ok(())
}

/// The request body, checked to be JSON before it leaves (the model's 400 says less).
fn request_body(args: &Args) -> Result<Vec<u8>, String> {
    let body = match (&args.file, &args.data) {
        (_, Some(data)) => data.clone().into_bytes(),
        (Some(path), None) if path.as_os_str() == "-" => {
            let mut buffer = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buffer)
                .map_err(|e| format!("cannot read the request body from stdin: {e}"))?;
            buffer
        }
        (Some(path), None) => std::fs::read(path)
            .map_err(|e| format!("cannot read the request body {}: {e}", path.display()))?,
        (None, None) => return Err("give the request body with -f FILE or --data JSON".into()),
    };
    serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| {
        format!(
            "the request body is not JSON ({e}); KServe v1 expects {{\"instances\": [...]}}, v2 \
             {{\"inputs\": [...]}}"
        )
    })?;
    Ok(body)
}

/// The model's answer: as it came for people (the sample's `{"predictions":[1,1]}`), parsed
/// and re-encoded for `-o json|yaml`.
pub fn format_answer(body: &str, output: Output) -> Result<String, String> {
    if output == Output::Human {
        return Ok(format!("{}\n", body.trim_end()));
    }
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| format!("the model answered with something that is not JSON: {e}"))?;
    Ok(output.render(&value)?.unwrap_or_default())
}

/// The same diagnosis `EndpointVerified` gives, plus what the model said when it was the model.
pub fn failure(
    diagnosis: &Diagnosis,
    endpoint: &crate::core::endpoint::Endpoint,
    status: u16,
    url: &str,
    body: &str,
) -> String {
    let mut message = format!(
        "POST {url} answered {status}: {}: {}",
        diagnosis.reason(),
        diagnosis.message(endpoint)
    );
    let body = body.trim();
    if matches!(diagnosis, Diagnosis::Unexpected { .. }) && !body.is_empty() {
        let excerpt: String = body.chars().take(500).collect();
        message.push_str(&format!("; the answer was: {excerpt}"));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_print_as_the_sample_shows_them() {
        let body = "{\"predictions\":[1,1]}";
        assert_eq!(
            format_answer(body, Output::Human).unwrap(),
            "{\"predictions\":[1,1]}\n"
        );
        assert_eq!(
            format_answer(body, Output::Json).unwrap(),
            "{\n  \"predictions\": [\n    1,\n    1\n  ]\n}\n"
        );
        assert_eq!(
            format_answer(body, Output::Yaml).unwrap(),
            "predictions:\n- 1\n- 1\n"
        );
        assert!(format_answer("<html>", Output::Json).is_err());
    }

    #[test]
    fn failures_carry_the_diagnosis_and_model_errors() {
        let endpoint = crate::core::endpoint::Endpoint::resolve(
            "http://sklearn-iris.ns.example.com",
            "http://127.0.0.1:1",
            "sklearn-iris",
        )
        .unwrap();
        let denied = failure(
            &Diagnosis::AccessDenied {
                at: diagnosis::DeniedAt::BehindGateway,
            },
            &endpoint,
            403,
            "http://u",
            "RBAC: access denied",
        );
        assert!(
            denied.starts_with("POST http://u answered 403: AccessDenied: "),
            "{denied}"
        );
        let bad = failure(
            &Diagnosis::Unexpected { status: 400 },
            &endpoint,
            400,
            "http://u",
            "{\"error\":\"bad input\"}",
        );
        assert!(
            bad.ends_with("the answer was: {\"error\":\"bad input\"}"),
            "{bad}"
        );
    }
}
