//! Does a credential reach the model through the gateway? One `GET <gateway>/v1/models/<name>`
//! with the right Host header, judged by [`crate::core::diagnosis`].

use std::time::Duration;

use crate::core::credential::Credential;
use crate::core::diagnosis::{Answer, Diagnosis, diagnose};
use crate::core::endpoint::Endpoint;
use crate::gateway::client::{GatewayClient, Response};

/// How long the probe waits for the gateway: it runs inside a reconcile.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the gateway for the model with the credential, as a client would.
pub async fn verify(
    client: &GatewayClient,
    endpoint: &Endpoint,
    credential: &Credential,
) -> Diagnosis {
    let client = client
        .clone()
        .with_timeout(client.timeout().min(PROBE_TIMEOUT));
    let (name, value) = credential.header();
    let headers = [("host", endpoint.host.as_str()), (name, value.as_str())];
    match client.get(&endpoint.model_url(), &headers).await {
        Ok(response) => diagnose(&answer(&response, &response.text()), &endpoint.host),
        // A bad URL or header lands here too: either way nothing reached the gateway.
        Err(error) => Diagnosis::GatewayUnreachable {
            error: error.to_string(),
        },
    }
}

/// The parts of `response` (with its body as `text`) a diagnosis reads.
pub fn answer<'a>(response: &'a Response, text: &'a str) -> Answer<'a> {
    Answer {
        status: response.status,
        body: text,
        location: response.header("location"),
        from_upstream: response.header("x-envoy-upstream-service-time").is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "sklearn-iris.kubeflow-user-example-com.example.com";

    #[tokio::test]
    async fn verify_without_a_gateway_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gateway = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let e = Endpoint::resolve(&format!("http://{HOST}"), &gateway, "sklearn-iris").unwrap();
        let client = GatewayClient::new().unwrap();
        let diagnosis = verify(&client, &e, &Credential::Bearer("t0k".into())).await;
        assert_eq!(diagnosis.reason(), "GatewayUnreachable", "{diagnosis:?}");
        assert!(!diagnosis.message(&e).contains("t0k"));
    }
}
