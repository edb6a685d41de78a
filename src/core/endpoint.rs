//! Where a client sends requests for a model: the gateway URL, the Host header and the paths.
//!
//! KServe publishes `status.url` in two shapes. Host-based (`http://<name>.<ns>.<domain>`, or
//! `http://<name>-<ns>.<domain>`): the gateway routes on the Host header and the model paths sit
//! at the root. Path-based (`pathTemplate`, `http://<domain>/serving/<ns>/<name>`): the gateway
//! routes on the path prefix, so every model path keeps that prefix. `cut -d/ -f3` gets the
//! second shape wrong; this module gets both right.

use std::fmt;

use super::url::HttpUrl;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The InferenceService's `status.url`, as published.
    pub url: String,
    /// The Host header to send to the gateway.
    pub host: String,
    /// The gateway base URL without a trailing slash.
    pub gateway_url: String,
    /// The path prefix the gateway routes on: empty for host-based URLs.
    pub path_prefix: String,
    pub model_name: String,
    pub protocol: Protocol,
}

/// The API the model speaks, which decides the paths clients call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// KServe's v1 (`/v1/models/<name>:predict`) and v2 (`/v2/models/<name>/infer`).
    #[default]
    KServe,
    /// OpenAI-style, as an LLMInferenceService serves: `/v1/completions`,
    /// `/v1/chat/completions`, `/v1/models`.
    OpenAi,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointError(String);

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EndpointError {}

impl Endpoint {
    pub fn resolve(
        status_url: &str,
        gateway_url: &str,
        model_name: &str,
    ) -> Result<Self, EndpointError> {
        let url = HttpUrl::parse(status_url).map_err(|e| {
            EndpointError(format!("InferenceService status.url {status_url:?} {e}"))
        })?;
        let gateway = HttpUrl::parse(gateway_url)
            .map_err(|e| EndpointError(format!("gateway URL {gateway_url:?} {e}")))?;
        Ok(Self {
            url: status_url.to_owned(),
            host: url.authority().to_owned(),
            gateway_url: gateway.without_query().trim_end_matches('/').to_owned(),
            path_prefix: url.path().trim_end_matches('/').to_owned(),
            model_name: model_name.to_owned(),
            protocol: Protocol::KServe,
        })
    }

    /// The same endpoint, spoken to with OpenAI-style paths.
    pub fn openai(self) -> Self {
        Self {
            protocol: Protocol::OpenAi,
            ..self
        }
    }

    fn at(&self, path: &str) -> String {
        format!("{}{}{path}", self.gateway_url, self.path_prefix)
    }

    /// KServe v1: `POST .../v1/models/<name>:predict`; OpenAI: `POST .../v1/completions`.
    pub fn predict_url(&self) -> String {
        match self.protocol {
            Protocol::KServe => self.at(&format!("/v1/models/{}:predict", self.model_name)),
            Protocol::OpenAi => self.at("/v1/completions"),
        }
    }

    /// What the probe asks for: KServe v1 model readiness `GET .../v1/models/<name>`; OpenAI's
    /// model list `GET .../v1/models`.
    pub fn model_url(&self) -> String {
        match self.protocol {
            Protocol::KServe => self.at(&format!("/v1/models/{}", self.model_name)),
            Protocol::OpenAi => self.at("/v1/models"),
        }
    }

    /// Open Inference Protocol (v2): `POST .../v2/models/<name>/infer`; OpenAI: `POST
    /// .../v1/chat/completions`.
    pub fn infer_url(&self) -> String {
        match self.protocol {
            Protocol::KServe => self.at(&format!("/v2/models/{}/infer", self.model_name)),
            Protocol::OpenAi => self.at("/v1/chat/completions"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "http://istio-ingressgateway.istio-system.svc.cluster.local";

    #[test]
    fn resolves_every_url_shape_kserve_publishes() {
        // (status.url, gateway, host, predict-url, infer-url)
        let cases = [
            (
                "http://sklearn-iris.kubeflow-user-example-com.example.com",
                GATEWAY,
                "sklearn-iris.kubeflow-user-example-com.example.com",
                "http://istio-ingressgateway.istio-system.svc.cluster.local/v1/models/sklearn-iris:predict",
                "http://istio-ingressgateway.istio-system.svc.cluster.local/v2/models/sklearn-iris/infer",
            ),
            (
                "https://sklearn-iris-kubeflow-user-example-com.example.com/",
                "http://localhost:8080/",
                "sklearn-iris-kubeflow-user-example-com.example.com",
                "http://localhost:8080/v1/models/sklearn-iris:predict",
                "http://localhost:8080/v2/models/sklearn-iris/infer",
            ),
            (
                "http://example.com/serving/kubeflow-user-example-com/sklearn-iris",
                "http://localhost:8080",
                "example.com",
                "http://localhost:8080/serving/kubeflow-user-example-com/sklearn-iris/v1/models/sklearn-iris:predict",
                "http://localhost:8080/serving/kubeflow-user-example-com/sklearn-iris/v2/models/sklearn-iris/infer",
            ),
            (
                "http://models.example.com:8443/serving/ns/sklearn-iris/?x=1",
                GATEWAY,
                "models.example.com:8443",
                "http://istio-ingressgateway.istio-system.svc.cluster.local/serving/ns/sklearn-iris/v1/models/sklearn-iris:predict",
                "http://istio-ingressgateway.istio-system.svc.cluster.local/serving/ns/sklearn-iris/v2/models/sklearn-iris/infer",
            ),
        ];
        for (url, gateway, host, predict, infer) in cases {
            let endpoint = Endpoint::resolve(url, gateway, "sklearn-iris").unwrap();
            assert_eq!(endpoint.host, host, "{url}");
            assert_eq!(endpoint.predict_url(), predict, "{url}");
            assert_eq!(endpoint.infer_url(), infer, "{url}");
        }
    }

    #[test]
    fn refuses_what_is_not_an_http_url() {
        for (url, gateway) in [
            ("sklearn-iris.ns.example.com", GATEWAY),
            ("ftp://sklearn-iris.ns.example.com", GATEWAY),
            ("http://", GATEWAY),
            ("http://sklearn-iris.ns.example.com", "gateway:8080"),
        ] {
            let err = Endpoint::resolve(url, gateway, "m").unwrap_err();
            assert!(
                err.to_string().contains("not an http:// or https:// URL")
                    || err.to_string().contains("has no host"),
                "{url} {gateway}: {err}"
            );
        }
    }

    #[test]
    fn model_url_follows_the_same_prefix() {
        let endpoint =
            Endpoint::resolve("http://d.example/serving/ns/m", "http://gw", "m").unwrap();
        assert_eq!(endpoint.model_url(), "http://gw/serving/ns/m/v1/models/m");
    }

    #[test]
    fn an_llm_inference_service_speaks_openai_paths() {
        let e = Endpoint::resolve("http://llm-ns.example.com", "http://gw/", "llm")
            .unwrap()
            .openai();
        assert_eq!(e.host, "llm-ns.example.com");
        assert_eq!(e.predict_url(), "http://gw/v1/completions");
        assert_eq!(e.infer_url(), "http://gw/v1/chat/completions");
        assert_eq!(e.model_url(), "http://gw/v1/models");
        let prefixed = Endpoint::resolve("http://d.example/serving/ns/llm", "http://gw", "llm")
            .unwrap()
            .openai();
        assert_eq!(
            prefixed.predict_url(),
            "http://gw/serving/ns/llm/v1/completions"
        );
    }
}
