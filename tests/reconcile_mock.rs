//! Reconcile against a scripted API server (kube-rs's `tower-test` verifier pattern): every
//! request the pipeline sends is checked in order, answered as the API server would, and
//! counted, so request order and "zero requests" are asserted, not assumed. What the watches
//! would have delivered is put into the reconcile's caches by hand (`World`): a reconcile reads
//! nothing from the API server that a watch covers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use inference_access::api::InferenceAccess;
use inference_access::fixtures::{self, ts};
use inference_access::reconcile::cache::Caches;
use inference_access::reconcile::{Context, reconcile};
use inference_access::runtime::recorder::Recorder;
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::core::PartialObjectMetaExt;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use tower_test::mock;

const NS: &str = "kubeflow-user-example-com";
const ISSUED: &str = "2026-01-01T00:00:00Z";
const EXPIRES: &str = "2026-01-01T01:00:00Z";

fn at_issue() -> Timestamp {
    ts(ISSUED)
}
fn before_renewal() -> Timestamp {
    ts("2026-01-01T00:30:00Z")
}
fn after_renewal() -> Timestamp {
    ts("2026-01-01T00:41:00Z")
}

/// One expected request and how the fake server answers it.
struct Exchange {
    method: &'static str,
    path: String,
    answer: Box<dyn FnOnce(Value) -> (u16, Value) + Send>,
}

fn expect(
    method: &'static str,
    path: impl Into<String>,
    answer: impl FnOnce(Value) -> (u16, Value) + Send + 'static,
) -> Exchange {
    Exchange {
        method,
        path: path.into(),
        answer: Box::new(answer),
    }
}

/// Echoes an applied or created object back with server-set metadata, as the API server does.
fn echo(uid: &'static str) -> impl FnOnce(Value) -> (u16, Value) {
    move |mut body| {
        body["metadata"]["uid"] = json!(uid);
        body["metadata"]["resourceVersion"] = json!("1");
        (200, body)
    }
}

/// Records what the pipeline sent, in order, for assertions after the run.
#[derive(Default, Clone)]
struct Sent(Arc<std::sync::Mutex<Vec<(String, String, Value)>>>);

impl Sent {
    fn requests(&self) -> Vec<(String, String, Value)> {
        self.0.lock().unwrap().clone()
    }
    fn lines(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect()
    }
    fn body(&self, method: &str, path: &str) -> Value {
        self.requests()
            .into_iter()
            .find(|(m, p, _)| m == method && p == path)
            .map(|(_, _, b)| b)
            .unwrap_or_else(|| panic!("no {method} {path} in {:?}", self.lines()))
    }
    fn writes(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| !l.starts_with("GET "))
            .collect()
    }
}

/// What the watches have delivered: objects as the API server stores them.
#[derive(Clone, Default)]
struct World(Vec<Value>);

impl World {
    fn with(mut self, object: Value) -> Self {
        self.0.push(object);
        self
    }

    fn caches(&self, istio: bool) -> Caches {
        let (mut caches, mut writers) = Caches::detached();
        caches.policies_served = istio;
        for object in &self.0 {
            let value = object.clone();
            match object["kind"].as_str().unwrap() {
                "InferenceService" => {
                    writers
                        .inference_services
                        .apply_watcher_event(&Event::Apply(serde_json::from_value(value).unwrap()));
                }
                "ServiceAccount" => {
                    writers
                        .service_accounts
                        .apply_watcher_event(&Event::Apply(serde_json::from_value(value).unwrap()));
                }
                "AuthorizationPolicy" => {
                    writers
                        .policies
                        .apply_watcher_event(&Event::Apply(serde_json::from_value(value).unwrap()));
                }
                "InferenceAccess" => {
                    writers
                        .accesses
                        .apply_watcher_event(&Event::Apply(serde_json::from_value(value).unwrap()));
                }
                // The Secret cache holds metadata only.
                "Secret" => {
                    let secret: k8s_openapi::api::core::v1::Secret =
                        serde_json::from_value(value).unwrap();
                    writers.secrets.apply_watcher_event(&Event::Apply(
                        secret.metadata.into_response_partial(),
                    ));
                }
                other => panic!("no cache for {other}"),
            }
        }
        caches.mark_synced();
        caches
    }
}

/// Runs one reconcile of `access` at `now` with `world` in the caches against `script`;
/// events may arrive at any point after the status write and are answered without a script
/// entry.
async fn run(
    access: &InferenceAccess,
    now: fn() -> Timestamp,
    world: &World,
    script: Vec<Exchange>,
) -> (Result<Option<Duration>, String>, Sent) {
    run_with(access, now, world.caches(true), script).await
}

async fn run_with(
    access: &InferenceAccess,
    now: fn() -> Timestamp,
    caches: Caches,
    script: Vec<Exchange>,
) -> (Result<Option<Duration>, String>, Sent) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let sent = Sent::default();
    let record = sent.clone();
    let server = tokio::spawn(async move {
        let mut handle = Box::pin(handle);
        let mut script = script.into_iter();
        while let Some((request, respond)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            record
                .0
                .lock()
                .unwrap()
                .push((method.clone(), path.clone(), body.clone()));
            let (status, answer) = if path.starts_with("/apis/events.k8s.io/") {
                (201, body)
            } else {
                let next = script
                    .next()
                    .unwrap_or_else(|| panic!("unexpected request {method} {path}"));
                assert_eq!(
                    (next.method, next.path.as_str()),
                    (method.as_str(), path.as_str()),
                    "request out of order"
                );
                (next.answer)(body)
            };
            let response = Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            respond.send_response(response);
        }
        let left: Vec<_> = script.map(|e| format!("{} {}", e.method, e.path)).collect();
        assert!(left.is_empty(), "requests never sent: {left:?}");
    });
    let client = Client::new(service, NS);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "inference-access".into(),
            instance: None,
        },
    );
    // The reconcile reads the access from its cache, as the controller hands over its metadata.
    let namespace = access.metadata.namespace.as_deref().unwrap_or_default();
    if caches
        .accesses
        .get(
            namespace,
            access.metadata.name.as_deref().unwrap_or_default(),
        )
        .is_none()
    {
        caches.accesses.wrote(access.clone());
    }
    let ctx = Arc::new(Context::with_caches(client, recorder, now, caches));
    let scheduled = kube::core::PartialObjectMeta {
        types: None,
        metadata: access.metadata.clone(),
        _phantom: std::marker::PhantomData,
    };
    let key = format!(
        "{namespace}/{}",
        access.metadata.name.as_deref().unwrap_or_default()
    );
    // What the controller sees is always "await a change": the next pass is the wakeup's.
    let result = reconcile(Arc::new(scheduled), ctx.clone())
        .await
        .map(|action| {
            assert_eq!(
                format!("{action:?}"),
                format!("{:?}", Action::await_change())
            );
            ctx.wakeups.pending(&key)
        })
        .map_err(|e| e.to_string());
    // Dropping the last client handle closes the mock service, which ends the server loop.
    drop(ctx);
    server.await.unwrap();
    (result, sent)
}

/// An access as the API server stores it. Endpoint verification is off here: it talks to a
/// gateway, not the API server (the end-to-end suite covers it with the gateway double).
fn access(mut spec: Value) -> InferenceAccess {
    if spec.get("verification").is_none() {
        spec["verification"] = json!({"enabled": false});
    }
    fixtures::access(spec).namespace(NS).build()
}

fn default_access() -> InferenceAccess {
    access(json!({"inferenceService": {"name": "sklearn-iris"}}))
}

fn isvc(url: Option<&str>) -> Value {
    serde_json::to_value(fixtures::inference_service("sklearn-iris", url)).unwrap()
}

const URL: &str = "http://sklearn-iris.kubeflow-user-example-com.example.com";

fn base(kind: &str) -> String {
    match kind {
        "isvc" => format!("/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices"),
        "sa" => format!("/api/v1/namespaces/{NS}/serviceaccounts"),
        "secret" => format!("/api/v1/namespaces/{NS}/secrets"),
        "ap" => format!("/apis/security.istio.io/v1/namespaces/{NS}/authorizationpolicies"),
        "ia" => format!("/apis/inference-access.io/v1alpha1/namespaces/{NS}/inferenceaccesses"),
        _ => unreachable!(),
    }
}

/// The status write ending a reconcile that changed something.
fn status_write() -> Exchange {
    expect(
        "PATCH",
        format!("{}/client/status", base("ia")),
        stored_status,
    )
}

/// The body of the status write the reconcile sent.
fn status_written(sent: &Sent) -> Value {
    sent.body("PATCH", &format!("{}/client/status", base("ia")))
}

/// The one apply of the credential Secret's data.
fn secret_write() -> Exchange {
    expect(
        "PATCH",
        format!("{}/client-credential", base("secret")),
        echo("secret-uid"),
    )
}

/// The API server answers a status write with the whole object.
fn stored_status(body: Value) -> (u16, Value) {
    let mut stored = serde_json::to_value(default_access()).unwrap();
    stored["status"] = body["status"].clone();
    (200, stored)
}

fn token_response() -> impl FnOnce(Value) -> (u16, Value) {
    |mut body| {
        body["status"] =
            json!({"token": "header.payload.signature", "expirationTimestamp": EXPIRES});
        (201, body)
    }
}

/// The world of a first issuance: the referenced InferenceService, ready.
fn ready_model() -> World {
    World::default().with(isvc(Some(URL)))
}

/// The script of a first issuance: six writes, in the order the pipeline prescribes, and no
/// read (the caches show there is nothing yet). The ServiceAccount cache sees every
/// ServiceAccount, so the dedicated one is applied; the Secret and policy caches see only the
/// operator's, so those are created, never applied over someone else's.
fn first_issuance_script() -> Vec<Exchange> {
    vec![
        expect("PATCH", format!("{}/client", base("sa")), echo("sa-uid")),
        expect("POST", base("secret"), |b| (201, echo("secret-uid")(b).1)),
        expect(
            "POST",
            format!("{}/client/token", base("sa")),
            token_response(),
        ),
        secret_write(),
        expect("POST", base("ap"), |b| (201, echo("ap-uid")(b).1)),
        status_write(),
    ]
}

fn decoded(secret: &Value, key: &str) -> String {
    use base64::Engine;
    let encoded = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {secret}"));
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

fn events(sent: &Sent) -> Vec<String> {
    sent.requests()
        .into_iter()
        .filter(|(_, p, _)| p.contains("events.k8s.io"))
        .map(|(_, _, b)| b["reason"].as_str().unwrap().to_owned())
        .collect()
}

/// The cluster after a first issuance, as the watches deliver it.
struct Issued {
    access: InferenceAccess,
    world: World,
    secret: Value,
}

async fn issue_first() -> Issued {
    let (result, sent) = run(
        &default_access(),
        at_issue,
        &ready_model(),
        first_issuance_script(),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let mut access = default_access();
    let status = status_written(&sent);
    access.status = Some(serde_json::from_value(status["status"].clone()).unwrap());
    let stored = |method: &str, path: String, uid: &str| {
        let mut body = sent.body(method, &path);
        body["metadata"]["uid"] = json!(uid);
        body["metadata"]["resourceVersion"] = json!("1");
        body
    };
    let secret = stored(
        "PATCH",
        format!("{}/client-credential", base("secret")),
        "secret-uid",
    );
    let world = ready_model()
        .with(stored("PATCH", format!("{}/client", base("sa")), "sa-uid"))
        .with(secret.clone())
        .with(stored("POST", base("ap"), "ap-uid"))
        .with(serde_json::to_value(&access).unwrap());
    Issued {
        access,
        world,
        secret,
    }
}

#[tokio::test]
async fn first_issuance_sends_requests_in_order_and_writes_a_complete_secret() {
    let (result, sent) = run(
        &default_access(),
        at_issue,
        &ready_model(),
        first_issuance_script(),
    )
    .await;
    // Renew at 00:40 (a third of an hour before expiry) plus under 12 s of jitter.
    let wait = requeue_secs(&result.unwrap());
    assert!((2400.0..=2412.0).contains(&wait), "requeue after {wait}s");

    let token_request = sent.body("POST", &format!("{}/client/token", base("sa")));
    assert_eq!(
        token_request["spec"],
        json!({
            "audiences": ["istio-ingressgateway.istio-system.svc.cluster.local"],
            "expirationSeconds": 3600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": "client-credential", "uid": "secret-uid"}
        })
    );

    let sa = sent.body("PATCH", &format!("{}/client", base("sa")));
    assert_eq!(sa["automountServiceAccountToken"], json!(false));
    assert_eq!(
        sa["metadata"]["ownerReferences"][0]["uid"],
        json!("access-uid")
    );

    let secret = sent.body("PATCH", &format!("{}/client-credential", base("secret")));
    let expected = [
        ("token", "header.payload.signature"),
        ("authorization", "Bearer header.payload.signature"),
        ("url", URL),
        ("host", "sklearn-iris.kubeflow-user-example-com.example.com"),
        (
            "predict-url",
            "http://istio-ingressgateway.istio-system.svc.cluster.local/v1/models/sklearn-iris:predict",
        ),
        (
            "infer-url",
            "http://istio-ingressgateway.istio-system.svc.cluster.local/v2/models/sklearn-iris/infer",
        ),
        (
            "gateway-url",
            "http://istio-ingressgateway.istio-system.svc.cluster.local",
        ),
        ("expires-at", EXPIRES),
    ];
    for (key, value) in expected {
        assert_eq!(decoded(&secret, key), value, "{key}");
    }
    assert_eq!(secret["data"].as_object().unwrap().len(), expected.len());
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        json!("inference-access")
    );
    // The record is in the annotations, so renewal is decided from metadata alone.
    assert_eq!(
        secret["metadata"]["annotations"]["inference-access.io/expires-at"],
        json!(EXPIRES)
    );

    let policy = sent.body("POST", &base("ap"));
    assert_eq!(
        (&policy["apiVersion"], &policy["kind"]),
        (
            &json!("security.istio.io/v1"),
            &json!("AuthorizationPolicy")
        )
    );
    assert_eq!(
        policy["spec"],
        json!({
            "selector": {"matchLabels": {"serving.kserve.io/inferenceservice": "sklearn-iris"}},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"principals": ["cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"]}}],
                    "when": [{"key": "request.headers[kubeflow-userid]", "values": ["system:serviceaccount:kubeflow-user-example-com:client"]}]
                },
                {"to": [{"operation": {"paths": ["/healthz", "/ready", "/metrics", "/wait-for-drain"]}}]}
            ]
        })
    );

    let status = status_written(&sent);
    assert_eq!(status["status"]["tokenExpirationTime"], json!(EXPIRES));
    assert_eq!(
        status["status"]["renewalTime"],
        json!("2026-01-01T00:40:00Z")
    );
    assert_eq!(
        status["status"]["host"],
        json!("sklearn-iris.kubeflow-user-example-com.example.com")
    );
    assert_eq!(status["status"]["observedGeneration"], json!(1));
    for type_ in [
        "Ready",
        "InferenceServiceReady",
        "CredentialIssued",
        "AccessPolicyReady",
    ] {
        assert_eq!(
            condition(&status, type_)["status"],
            json!("True"),
            "{type_}: {status}"
        );
    }

    // One Event for the whole issue; seven requests in all.
    assert_eq!(events(&sent), ["CredentialIssued"]);
    assert_eq!(sent.lines().len(), 7, "{:#?}", sent.lines());
    // No secret value in any event, status or log-facing text.
    for (method, path, body) in sent.requests() {
        if !path.contains("/secrets") && !path.ends_with("/token") {
            assert!(
                !body.to_string().contains("header.payload.signature"),
                "{method} {path} leaks the token"
            );
        }
    }
}

#[tokio::test]
async fn a_reconcile_with_nothing_to_do_sends_no_request() {
    let state = issue_first().await;
    let (result, sent) = run(&state.access, before_renewal, &state.world, vec![]).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(sent.lines(), Vec::<String>::new());
}

#[tokio::test]
async fn renewal_mints_a_new_token_and_rewrites_the_secret() {
    let state = issue_first().await;
    let script = vec![
        expect(
            "POST",
            format!("{}/client/token", base("sa")),
            |mut body| {
                body["status"] = json!({"token": "renewed.token.value", "expirationTimestamp": "2026-01-01T01:41:00Z"});
                (201, body)
            },
        ),
        secret_write(),
        status_write(),
    ];
    let (result, sent) = run(&state.access, after_renewal, &state.world, script).await;
    assert!(result.is_ok(), "{result:?}");
    let secret = sent.body("PATCH", &format!("{}/client-credential", base("secret")));
    assert_eq!(decoded(&secret, "token"), "renewed.token.value");
    assert_eq!(decoded(&secret, "expires-at"), "2026-01-01T01:41:00Z");
    let status = status_written(&sent);
    assert_eq!(
        status["status"]["tokenExpirationTime"],
        json!("2026-01-01T01:41:00Z")
    );
    assert_eq!(
        status["status"]["renewalTime"],
        json!("2026-01-01T01:21:00Z")
    );
    // The condition did not flip, so its transition time stays.
    assert_eq!(
        condition(&status, "CredentialIssued")["lastTransitionTime"],
        json!(ISSUED)
    );
    assert_eq!(events(&sent), ["CredentialRenewed"]);
}

#[tokio::test]
async fn a_changed_status_url_reaches_the_secret_without_a_new_token() {
    let state = issue_first().await;
    let moved = "http://example.com/serving/kubeflow-user-example-com/sklearn-iris";
    let mut world = state.world.clone();
    world.0[0] = isvc(Some(moved));
    let stored = state.secret.clone();
    // The token is in the data, which the metadata cache does not hold: read once.
    let script = vec![
        expect(
            "GET",
            format!("{}/client-credential", base("secret")),
            move |_| (200, stored),
        ),
        secret_write(),
        status_write(),
    ];
    let (result, sent) = run(&state.access, before_renewal, &world, script).await;
    assert!(result.is_ok(), "{result:?}");
    let secret = sent.body("PATCH", &format!("{}/client-credential", base("secret")));
    assert_eq!(decoded(&secret, "token"), "header.payload.signature");
    assert_eq!(decoded(&secret, "host"), "example.com");
    assert_eq!(
        decoded(&secret, "predict-url"),
        "http://istio-ingressgateway.istio-system.svc.cluster.local/serving/kubeflow-user-example-com/sklearn-iris/v1/models/sklearn-iris:predict"
    );
    let status = status_written(&sent);
    assert_eq!(status["status"]["url"], json!(moved));
}

async fn failing(
    access: InferenceAccess,
    world: &World,
    script: Vec<Exchange>,
) -> (Result<Option<Duration>, String>, Value, Sent) {
    let (result, sent) = run(&access, at_issue, world, script).await;
    let status = status_written(&sent);
    (result, status, sent)
}

fn requeue_secs(wakeup: &Option<Duration>) -> f64 {
    wakeup.expect("a wakeup").as_secs_f64()
}

fn ready_reason(status: &Value) -> (&str, &str) {
    let ready = condition(status, "Ready");
    (
        ready["status"].as_str().unwrap(),
        ready["reason"].as_str().unwrap(),
    )
}

#[tokio::test]
async fn missing_inference_service_is_a_condition() {
    let (result, status, sent) =
        failing(default_access(), &World::default(), vec![status_write()]).await;
    assert!(result.is_ok());
    assert_eq!(ready_reason(&status), ("False", "InferenceServiceNotFound"));
    assert_eq!(sent.writes().len(), 1);
}

#[tokio::test]
async fn an_inference_service_without_url_gets_its_policy_but_no_credential_yet() {
    let (result, status, _) = failing(
        default_access(),
        &World::default().with(isvc(None)),
        vec![
            expect("PATCH", format!("{}/client", base("sa")), echo("sa-uid")),
            expect("POST", base("ap"), |b| (201, echo("ap-uid")(b).1)),
            status_write(),
        ],
    )
    .await;
    assert!(result.is_ok());
    assert_eq!(ready_reason(&status), ("False", "InferenceServiceNotReady"));
    assert_eq!(
        condition(&status, "CredentialIssued")["reason"],
        json!("WaitingForURL")
    );
    assert_eq!(
        condition(&status, "AccessPolicyReady")["status"],
        json!("True")
    );
}

/// An InferenceService without a URL, created at `at` (the reconciles here run at [`ISSUED`]).
fn isvc_created_at(at: &str) -> World {
    let mut model = isvc(None);
    model["metadata"]["creationTimestamp"] = json!(at);
    World::default().with(model)
}

fn policy_without_url_script() -> Vec<Exchange> {
    vec![
        expect("PATCH", format!("{}/client", base("sa")), echo("sa-uid")),
        expect("POST", base("ap"), |b| (201, echo("ap-uid")(b).1)),
    ]
}

#[tokio::test]
async fn a_new_access_holds_its_first_report_while_kserve_is_about_to_answer() {
    // The InferenceService the access has just applied: KServe has not answered yet.
    let world = isvc_created_at("2025-12-31T23:59:59Z");
    let (result, sent) = run(
        &default_access(),
        at_issue,
        &world,
        policy_without_url_script(),
    )
    .await;
    let wakeup = requeue_secs(&result.unwrap());
    assert!(
        (0.9..=1.0).contains(&wakeup),
        "looked at again when the 2 s grace ends, 1 s after the InferenceService's creation, not {wakeup} s"
    );
    assert!(
        !sent.writes().iter().any(|w| w.ends_with("/status")),
        "no status: {:?}",
        sent.writes()
    );
    assert!(
        events(&sent).is_empty(),
        "no Event yet: {:?}",
        events(&sent)
    );
}

#[tokio::test]
async fn an_inference_service_older_than_the_grace_is_reported_waiting_for_url() {
    let older = isvc_created_at("2025-12-31T23:59:57Z");
    let mut script = policy_without_url_script();
    script.push(status_write());
    let (result, status, sent) = failing(default_access(), &older, script).await;
    assert!(result.is_ok());
    assert_eq!(
        condition(&status, "CredentialIssued")["reason"],
        json!("WaitingForURL")
    );
    assert_eq!(events(&sent), ["PolicyApplied"]);
}

#[tokio::test]
async fn a_new_access_reports_at_once_what_a_person_must_fix() {
    without_istio(
        isvc_created_at("2025-12-31T23:59:59Z"),
        vec![
            expect("PATCH", format!("{}/client", base("sa")), echo("sa-uid")),
            status_write(),
        ],
    )
    .await;
}

/// Reconciles the default access where AuthorizationPolicies are not served: the status it
/// writes says why the policy is missing. That status, and what was sent.
async fn without_istio(world: World, script: Vec<Exchange>) -> (Value, Sent) {
    let (result, sent) = run_with(&default_access(), at_issue, world.caches(false), script).await;
    assert!(result.is_ok());
    let status = status_written(&sent);
    assert_eq!(
        condition(&status, "AccessPolicyReady")["reason"],
        json!("IstioNotInstalled")
    );
    (status, sent)
}

#[tokio::test]
async fn missing_named_service_account_is_a_condition() {
    let access = access(
        json!({"inferenceService": {"name": "sklearn-iris"}, "serviceAccount": {"name": "default-editor"}}),
    );
    let (result, status, _) = failing(access, &ready_model(), vec![status_write()]).await;
    assert!(result.is_ok());
    assert_eq!(ready_reason(&status), ("False", "ServiceAccountNotFound"));
}

#[tokio::test]
async fn a_failed_token_request_is_a_condition_and_an_error_to_back_off() {
    let mut script = first_issuance_script();
    script.truncate(2);
    script.push(expect("POST", format!("{}/client/token", base("sa")), |_| {
        (403, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": "serviceaccounts \"client\" is forbidden: User cannot create resource \"serviceaccounts/token\""}))
    }));
    script.push(expect("POST", base("ap"), |b| (201, echo("ap-uid")(b).1)));
    script.push(status_write());
    let (result, status, sent) = failing(default_access(), &ready_model(), script).await;
    assert!(result.unwrap_err().contains("TokenRequest"));
    assert_eq!(ready_reason(&status), ("False", "TokenRequestFailed"));
    assert!(
        condition(&status, "CredentialIssued")["message"]
            .as_str()
            .unwrap()
            .contains("serviceaccounts/token")
    );
    assert_eq!(events(&sent), ["TokenRequestFailed"]);
}

#[tokio::test]
async fn a_secret_we_did_not_create_is_never_touched() {
    let foreign = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "client-credential", "namespace": NS, "uid": "foreign"}, "data": {"password": "aHVudGVyMg=="}});
    let mut script = first_issuance_script();
    script.truncate(1);
    // Not labelled as the operator's, so not in its cache: the create says it exists.
    script.push(expect("POST", base("secret"), |_| {
        (409, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "secrets \"client-credential\" already exists"}))
    }));
    script.push(expect(
        "GET",
        format!("{}/client-credential", base("secret")),
        move |_| (200, foreign),
    ));
    script.push(expect("POST", base("ap"), |b| (201, echo("ap-uid")(b).1)));
    script.push(status_write());
    let (result, status, sent) = failing(default_access(), &ready_model(), script).await;
    assert!(result.is_ok());
    assert_eq!(ready_reason(&status), ("False", "SecretConflict"));
    assert!(
        sent.writes()
            .iter()
            .all(|w| !w.starts_with("PATCH") || !w.contains("/secrets")),
        "{:?}",
        sent.writes()
    );
}

#[tokio::test]
async fn without_istio_the_credential_still_works_and_the_policy_condition_says_why() {
    let mut script = first_issuance_script();
    script.truncate(4);
    script.push(status_write());
    let (status, sent) = without_istio(ready_model(), script).await;
    assert_eq!(
        condition(&status, "CredentialIssued")["status"],
        json!("True")
    );
    assert!(
        sent.writes()
            .iter()
            .any(|w| w.ends_with("/secrets/client-credential"))
    );
}

#[tokio::test]
async fn an_invalid_spec_waits_for_a_change() {
    // Below the API server's minimum: the CRD's CEL rule refuses it, the controller too.
    let access =
        access(json!({"inferenceService": {"name": "sklearn-iris"}, "token": {"duration": "5m"}}));
    let (result, status, sent) = failing(access, &World::default(), vec![status_write()]).await;
    assert_eq!(result.unwrap(), None, "woken only by a change");
    assert_eq!(ready_reason(&status), ("False", "InvalidSpec"));
    assert_eq!(
        sent.writes().len(),
        2,
        "the status and one warning event: {:?}",
        sent.writes()
    );
}

#[tokio::test]
async fn a_second_template_for_one_inference_service_is_refused() {
    let access = access(
        json!({"inferenceService": {"name": "sklearn-iris", "template": {"spec": {"predictor": {}}}}}),
    );
    let mut owned_by_other = isvc(Some(URL));
    owned_by_other["metadata"]["ownerReferences"] = json!([{"apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess", "name": "first", "uid": "other-uid", "controller": true}]);
    let (result, status, sent) = failing(
        access,
        &World::default().with(owned_by_other),
        vec![status_write()],
    )
    .await;
    assert!(result.is_ok());
    assert_eq!(ready_reason(&status), ("False", "TemplateConflict"));
    assert!(
        condition(&status, "InferenceServiceReady")["message"]
            .as_str()
            .unwrap()
            .contains("InferenceAccess/first")
    );
    assert_eq!(sent.writes().len(), 1);
}
