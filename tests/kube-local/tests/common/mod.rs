//! Shared helpers for kube-local's HTTP-level tests.
// Helpers outside #[test] fns: a failed setup step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)]

use std::time::Duration;

use http_body_util::BodyExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_local::ControlPlane;
use serde_json::{Value, json};

pub async fn start() -> ControlPlane {
    ControlPlane::builder()
        .kserve_ready_delay(Duration::from_millis(50))
        .start()
        .await
        .expect("control plane starts")
}

pub async fn client_for(cp: &ControlPlane, token: &str) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&cp.kubeconfig_for_token(token)).expect("kubeconfig parses");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    // kube retries 429/503 with Retry-After by itself; the tests look at raw responses.
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

pub async fn admin(cp: &ControlPlane) -> kube::Client {
    client_for(cp, &cp.admin_token()).await
}

/// A raw HTTP response: status, headers, body as JSON (or a string).
pub struct Reply {
    pub code: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
    pub text: String,
}

pub async fn call(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<Value>,
) -> Reply {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("accept", "application/json")
        .body(bytes)
        .expect("request");
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .expect("response");
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let raw = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&raw).to_string();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Reply {
        code,
        headers,
        body,
        text,
    }
}

pub async fn get(c: &kube::Client, path: &str) -> Reply {
    call(c, "GET", path, "application/json", None).await
}

pub async fn post(c: &kube::Client, path: &str, body: Value) -> Reply {
    call(c, "POST", path, "application/json", Some(body)).await
}

pub async fn put(c: &kube::Client, path: &str, body: Value) -> Reply {
    call(c, "PUT", path, "application/json", Some(body)).await
}

pub async fn patch(c: &kube::Client, path: &str, content_type: &str, body: Value) -> Reply {
    call(c, "PATCH", path, content_type, Some(body)).await
}

pub async fn delete(c: &kube::Client, path: &str, body: Option<Value>) -> Reply {
    call(c, "DELETE", path, "application/json", body).await
}

/// Polls `check` until it returns Some, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// A CRD with a status subresource, defaults, a preserved map and a CEL rule, for the tests.
pub fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.io"},
        "spec": {
            "group": "example.io", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}, {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object", "required": ["size"],
                            "x-kubernetes-validations": [{"rule": "self.size <= self.maxSize", "message": "size must not exceed maxSize"}],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1},
                                "maxSize": {"type": "integer", "default": 10},
                                "color": {"type": "string", "enum": ["red", "blue"]},
                                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                            }
                        },
                        "status": {"type": "object", "properties": {
                            "phase": {"type": "string"},
                            "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"], "items": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}}
                        }}
                    }
                }}
            }]
        }
    })
}

pub fn widget(ns: &str, name: &str, size: i64) -> Value {
    json!({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": name, "namespace": ns}, "spec": {"size": size}})
}
