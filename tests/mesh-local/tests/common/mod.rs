//! Shared test fixtures: a tiny stand-in for the few API server endpoints the gateway reads, an
//! echo upstream, and a cookie-keeping HTTP client that follows redirects like `requests`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_local::jwt::{KUBERNETES_ISSUER, Signer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
pub const NS: &str = "kubeflow-user-example-com";
pub const GATEWAY_SA: &str =
    "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account";
pub const AUD: &str = "istio-ingressgateway.istio-system.svc.cluster.local";

/// Spawns `serve` for every connection on a fresh loopback port; the task ends with the handle.
pub async fn serve_http<F, Fut>(handler: F) -> (String, JoinHandle<()>)
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let handler = handler.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, task)
}

fn json_response(status: StatusCode, body: &Value) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    response
}

#[derive(Default)]
pub struct Objects {
    pub inference_services: Vec<Value>,
    pub pods: Vec<Value>,
    pub policies: Vec<Value>,
}

/// The API server endpoints the gateway reads (list InferenceServices, predictor pods,
/// AuthorizationPolicies; JWKS), behind the admin bearer token; until kube-local lands.
pub struct FakeApiServer {
    pub url: String,
    pub objects: Arc<Mutex<Objects>>,
    pub signer: Arc<Signer>,
    _task: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self._task.abort();
    }
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let signer = Arc::new(
            Signer::from_pkcs8(
                include_bytes!("../fixtures/test-signer.pk8.der"),
                "test-key",
            )
            .unwrap(),
        );
        let objects = Arc::new(Mutex::new(Objects::default()));
        let (state, jwks) = (objects.clone(), signer.jwks());
        let (url, task) = serve_http(move |request| {
            let state = state.clone();
            let jwks = jwks.clone();
            async move { api_response(&state, &jwks, &request) }
        })
        .await;
        FakeApiServer {
            url,
            objects,
            signer,
            _task: task,
        }
    }

    /// A ServiceAccount token as the API server's TokenRequest mints it.
    pub fn token(
        &self,
        namespace: &str,
        service_account: &str,
        audience: &str,
        expires_in: i64,
    ) -> String {
        let now = jiff::Timestamp::now().as_second();
        self.signer
            .sign(&json!({
                "aud": [audience],
                "exp": now + expires_in,
                "iat": now,
                "nbf": now,
                "iss": KUBERNETES_ISSUER,
                "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account, "uid": "0"}},
                "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
            }))
            .unwrap()
    }

    /// An InferenceService with `status.url` and its predictor pod carrying its annotations.
    pub fn add_model(&self, namespace: &str, name: &str, url: &str, sidecar: bool) {
        let annotations = if sidecar {
            json!({})
        } else {
            json!({"sidecar.istio.io/inject": "false"})
        };
        let mut objects = self.objects.lock().unwrap();
        objects.inference_services.push(json!({
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}},
            "status": {"url": url},
        }));
        objects.pods.push(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": format!("{name}-predictor-0"),
                "namespace": namespace,
                "annotations": annotations,
                "labels": {"serving.kserve.io/inferenceservice": name, "component": "predictor"},
            },
        }));
    }

    pub fn add_policy(&self, namespace: &str, name: &str, spec: Value) {
        self.objects.lock().unwrap().policies.push(json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }));
    }
}

/// The policy the operator is meant to write: gateway principal AND the caller's userid header.
pub fn access_policy(model: &str, user: &str) -> Value {
    json!({
        "selector": {"matchLabels": {"serving.kserve.io/inferenceservice": model}},
        "action": "ALLOW",
        "rules": [{
            "from": [{"source": {"principals": [GATEWAY_SA]}}],
            "when": [{"key": "request.headers[kubeflow-userid]", "values": [user]}],
        }],
    })
}

fn api_response(
    state: &Mutex<Objects>,
    jwks: &Value,
    request: &http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == format!("Bearer {ADMIN_TOKEN}").as_bytes());
    if !authorized {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"kind": "Status", "code": 401, "message": "Unauthorized", "reason": "Unauthorized"}),
        );
    }
    if request.method() != Method::GET {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"kind": "Status", "code": 405}),
        );
    }
    let path = request.uri().path();
    let selector: BTreeMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "labelSelector")
            .map(|(_, v)| {
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
    let objects = state.lock().unwrap();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (items, kind, api_version): (Vec<Value>, &str, &str) = match segments.as_slice() {
        ["openid", "v1", "jwks"] => return json_response(StatusCode::OK, jwks),
        ["apis", "serving.kserve.io", "v1beta1", "inferenceservices"] => (
            objects.inference_services.clone(),
            "InferenceServiceList",
            "serving.kserve.io/v1beta1",
        ),
        ["api", "v1", "namespaces", ns, "pods"] => {
            (in_namespace(&objects.pods, ns), "PodList", "v1")
        }
        [
            "apis",
            "security.istio.io",
            "v1",
            "namespaces",
            ns,
            "authorizationpolicies",
        ] => (
            in_namespace(&objects.policies, ns),
            "AuthorizationPolicyList",
            "security.istio.io/v1",
        ),
        _ => {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"kind": "Status", "code": 404, "reason": "NotFound", "message": "not found"}),
            );
        }
    };
    let items: Vec<Value> = items
        .into_iter()
        .filter(|item| {
            selector
                .iter()
                .all(|(k, v)| item["metadata"]["labels"][k].as_str() == Some(v))
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}

fn in_namespace(items: &[Value], ns: &str) -> Vec<Value> {
    items
        .iter()
        .filter(|i| i["metadata"]["namespace"] == ns)
        .cloned()
        .collect()
}

/// An upstream that answers with what it received: method, path, and the kubeflow-userid header.
pub async fn echo_upstream() -> (String, JoinHandle<()>) {
    named_echo_upstream("default").await
}

/// [`echo_upstream`] that also names itself in its answers (`"upstream"`).
pub async fn named_echo_upstream(name: &'static str) -> (String, JoinHandle<()>) {
    serve_http(
        move |request: http::Request<hyper::body::Incoming>| async move {
            let userid = request
                .headers()
                .get("kubeflow-userid")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            json_response(
                StatusCode::OK,
                &json!({
                    "method": request.method().as_str(),
                    "path": request.uri().path_and_query().map(|pq| pq.as_str()),
                    "userid": userid,
                    "upstream": name,
                }),
            )
        },
    )
    .await
}

/// One received response, with the URL it answered.
pub struct Answer {
    pub status: StatusCode,
    pub url: String,
    pub headers: http::HeaderMap,
    pub body: String,
    /// Responses that redirected on the way (as `requests`' `resp.history`).
    pub history: Vec<(StatusCode, String)>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A `requests.Session` in miniature: keeps cookies, follows 30x like `requests`.
pub struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    pub cookies: BTreeMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser {
            client: Client::builder(TokioExecutor::new()).build_http(),
            cookies: BTreeMap::new(),
        }
    }
}

impl Browser {
    pub async fn get(&mut self, url: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, url, headers, Bytes::new(), true)
            .await
    }

    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(
            Method::POST,
            url,
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::from(body),
            true,
        )
        .await
    }

    pub async fn send(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        follow: bool,
    ) -> Answer {
        let (mut method, mut url, mut body) = (method, url.to_owned(), body);
        let mut history = Vec::new();
        loop {
            let mut builder = http::Request::builder().method(method.clone()).uri(&url);
            for (name, value) in headers {
                if method == Method::GET && *name == "content-type" {
                    continue;
                }
                builder = builder.header(*name, *value);
            }
            if !self.cookies.is_empty() {
                let jar: Vec<String> = self
                    .cookies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                builder = builder.header(header::COOKIE, jar.join("; "));
            }
            let response = self
                .client
                .request(builder.body(Full::new(body.clone())).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let response_headers = response.headers().clone();
            for set_cookie in response_headers.get_all(header::SET_COOKIE) {
                let text = set_cookie.to_str().unwrap();
                let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
                let (name, value) = pair.split_once('=').unwrap();
                if attributes.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
            let text = String::from_utf8(
                response
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .to_vec(),
            )
            .unwrap();
            let location = response_headers
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok());
            match location {
                Some(location) if follow && status.is_redirection() => {
                    assert!(history.len() < 10, "redirect loop: {history:?}");
                    history.push((status, url.clone()));
                    url = resolve(&url, location);
                    // requests turns 302/303 into GET without body.
                    if status == StatusCode::SEE_OTHER || status == StatusCode::FOUND {
                        method = Method::GET;
                        body = Bytes::new();
                    }
                }
                _ => {
                    return Answer {
                        status,
                        url,
                        headers: response_headers,
                        body: text,
                        history,
                    };
                }
            }
        }
    }
}

/// Resolves a Location against the URL it came from (absolute or absolute-path forms).
pub fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") {
        return location.to_owned();
    }
    let after_scheme = base.trim_start_matches("http://");
    let authority = after_scheme.split('/').next().unwrap();
    format!("http://{authority}{location}")
}
