//! An LLMInferenceService as the target, on the path KServe gives it: Gateway → HTTPRoute →
//! the model's workload. kube-local's stand-in publishes its status; the test plays the rest of
//! KServe (its HTTPRoute, workload Service and Pod) and an OpenAI-style model server; the access, in mode Auto,
//! gets the DENY at the shared Gateway for the model's host: the owner's credential reaches
//! `/v1/completions`, another ServiceAccount's is refused at the gateway.

use std::convert::Infallible;

use bytes::Bytes;
use http::Method;
use http_body_util::Full;
use inference_access::gateway::client::GatewayClient;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use crate::harness::*;
use crate::serving_modes::{
    GATEWAY, GATEWAY_NS, assert_refused_by, at_shared_gateway, consent, gateway_api_crds, host_of,
    mesh_path, owner_token, stranger_token, wait_policy,
};

const LLM: &str = "llm";
const WORKLOAD: &str = "llm-kserve-workload-svc";
const COMPLETION: &str =
    r#"{"object":"text_completion","model":"llm","choices":[{"index":0,"text":" world"}]}"#;

/// A model server that speaks the OpenAI-style paths an LLMInferenceService serves; it stops
/// when the handle drops.
struct OpenAiStub {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OpenAiStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn openai_stub() -> OpenAiStub {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let (status, body) = match (request.method(), request.uri().path()) {
                            (&Method::POST, "/v1/completions") => (200, COMPLETION),
                            (&Method::GET, "/v1/models") => {
                                (200, r#"{"object":"list","data":[{"id":"llm"}]}"#)
                            }
                            _ => (404, ""),
                        };
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(body.as_bytes())))
                                .unwrap(),
                        )
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    OpenAiStub { url, task }
}

/// What KServe makes for an LLMInferenceService on Gateway API: its status (URL, addresses,
/// Ready: kube-local's stand-in), an HTTPRoute it controls on the shared Gateway, and the
/// workload behind it (a Service and a Pod, played by the test, here outside the mesh; KServe's backend is an InferencePool, which the gateway
/// double does not route to, so the route names the Service).
async fn llm_as_kserve_makes_it(env: &Env) -> String {
    let llm = apply_object(
        env,
        json!({
            "apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
            "metadata": {"name": LLM, "namespace": NS},
            "spec": {"model": {"uri": "hf://facebook/opt-125m", "name": "facebook/opt-125m"},
                     "router": {"gateway": {}, "route": {}, "scheduler": {}}}
        }),
    )
    .await;
    // KServe (kube-local's stand-in) publishes the URL once the route is programmed.
    let llms = Api::<DynamicObject>::namespaced_with(
        env.client.clone(),
        NS,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("serving.kserve.io", "v1alpha2", "LLMInferenceService"),
            "llminferenceservices",
        ),
    );
    let published = wait_for(&llms, LLM, |o: Option<&DynamicObject>| {
        o.is_some_and(|o| o.data["status"]["url"].is_string())
    })
    .await;
    let url = published.data["status"]["url"].as_str().unwrap().to_owned();
    assert_eq!(
        published.data["status"]["addresses"][0]["url"],
        url.as_str()
    );
    let host = host_of(&url);
    apply_object(env, json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "llm-kserve-workload", "namespace": NS,
                     "labels": {"app.kubernetes.io/name": LLM, "app.kubernetes.io/part-of": "llminferenceservice"},
                     "annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {"containers": [{"name": "main", "image": "vllm/vllm-openai"}]}
    }))
    .await;
    apply_object(env, json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": WORKLOAD, "namespace": NS},
        "spec": {"selector": {"app.kubernetes.io/name": LLM, "app.kubernetes.io/part-of": "llminferenceservice"},
                 "ports": [{"name": "http", "port": 8000, "targetPort": 8000}]}
    }))
    .await;
    apply_object(env, json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": format!("{LLM}-kserve-route"), "namespace": NS, "ownerReferences": [{
            "apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService", "name": LLM,
            "uid": llm.metadata.uid.unwrap(), "controller": true}]},
        "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY, "namespace": GATEWAY_NS}],
                 "hostnames": [host],
                 "rules": [{"backendRefs": [{"kind": "Service", "name": WORKLOAD, "port": 8000}]}]}
    }))
    .await;
    host
}

async fn complete(
    gateway: &str,
    host: &str,
    token: &str,
) -> inference_access::gateway::client::Response {
    let bearer = format!("Bearer {token}");
    GatewayClient::new()
        .unwrap()
        .send(
            Method::POST,
            &format!("{gateway}/v1/completions"),
            &[
                ("host", host),
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            Some(Bytes::from_static(
                br#"{"model": "llm", "prompt": "hello", "max_tokens": 1}"#,
            )),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn an_llm_inference_service_admits_only_the_owner_at_its_gateway() {
    if skip_on_real_cluster("an_llm_inference_service_admits_only_the_owner_at_its_gateway") {
        return;
    }
    let stub = openai_stub().await;
    let mut crds = gateway_api_crds();
    crds.push(repo(
        "tests/mesh-local/tests/fixtures/crds/serving.kserve.io_llminferenceservices.yaml",
    ));
    let (data, gateway_url) = at_shared_gateway(
        kube_local::ControlPlane::builder()
            .load_crds(&crds)
            .kserve_url_style(kube_local::UrlStyle::Standard),
        |gateway| gateway.upstream_for_service(NS, WORKLOAD, &stub.url),
    )
    .await;
    let env = &data.env;
    consent(env).await;
    let host = llm_as_kserve_makes_it(env).await;
    let stranger = stranger_token(env).await;

    env.apply_value(json!({
        "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
        "metadata": {"name": ACCESS, "namespace": NS},
        "spec": {"inferenceService": {"name": LLM, "kind": "LLMInferenceService"},
                 "gateway": {"url": gateway_url}, "mesh": {"mode": "Auto"}},
    }))
    .await;
    let access = wait_policy(env, "GatewayPolicyApplied").await;
    assert_eq!(mesh_path(&access).as_deref(), Some("Gateway"));
    let access = env.wait_ready(ACCESS).await;
    assert_eq!(host_of(&access.status.unwrap().url.unwrap()), host);
    // The Secret carries the OpenAI-style URLs.
    let secret = env.api::<Secret>().get(SECRET).await.unwrap();
    assert_eq!(
        secret_text(&secret, "predict-url"),
        format!("{gateway_url}/v1/completions")
    );
    assert_eq!(
        secret_text(&secret, "infer-url"),
        format!("{gateway_url}/v1/chat/completions")
    );

    let owner = owner_token(env).await;
    let answer = complete(&gateway_url, &host, &owner).await;
    assert_eq!(
        (answer.status, answer.text()),
        (200, COMPLETION.to_owned()),
        "owner"
    );
    assert_refused_by(
        &complete(&gateway_url, &host, &stranger).await,
        403,
        "gateway",
        "another ServiceAccount",
    );
    data.wait_endpoint("EndpointReachable").await;
    let (ok, report, _) = doctor(env, ACCESS).await;
    assert!(ok, "{report:#}");
}
