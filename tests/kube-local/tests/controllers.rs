//! The KServe stand-in, fault injection, request accounting and the admin endpoint.
// Helpers outside #[test] fns: a failed setup step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use kube_local::{ControlPlane, FaultRule, UrlStyle};
use serde_json::{Value, json};

const ISVC: &str = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices";

fn isvc(name: &str) -> Value {
    json!({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name, "annotations": {"sidecar.istio.io/inject": "false"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}})
}

async fn ready(c: &kube::Client, name: &str, generation: i64) -> Value {
    eventually(
        Duration::from_secs(10),
        "InferenceService ready",
        || async {
            let o = get(c, &format!("{ISVC}/{name}")).await.body;
            (o["status"]["observedGeneration"] == generation).then_some(o)
        },
    )
    .await
}

fn pods(cp: &ControlPlane, name: &str) -> Vec<Value> {
    cp.store()
        .list(
            "v1",
            "pods",
            Some("default"),
            &format!("serving.kserve.io/inferenceservice={name},component=predictor"),
        )
        .unwrap_or_default()
}

#[tokio::test]
async fn kserve_stand_in_makes_inference_services_ready() {
    let cp = start().await;
    let c = admin(&cp).await;
    let created = post(&c, ISVC, isvc("sklearn-iris")).await;
    assert_eq!(created.code, 201, "{}", created.text);
    assert!(
        created.body["status"].is_null(),
        "not ready before the delay"
    );
    let o = ready(&c, "sklearn-iris", 1).await;
    assert_eq!(
        o["status"]["url"],
        "http://sklearn-iris.default.example.com"
    );
    assert_eq!(
        o["status"]["address"]["url"],
        "http://sklearn-iris-predictor.default.svc.cluster.local"
    );
    for t in ["Ready", "IngressReady", "PredictorReady"] {
        let cond = o["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or_default();
        assert_eq!(cond["status"], "True", "{t}");
        assert!(cond["lastTransitionTime"].is_string());
    }
    let p = eventually(Duration::from_secs(5), "predictor pod", || async {
        pods(&cp, "sklearn-iris").into_iter().next()
    })
    .await;
    assert!(
        p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sklearn-iris-predictor-")
    );
    assert_eq!(
        p["metadata"]["annotations"]["sidecar.istio.io/inject"],
        "false"
    );
    // Opted out of injection: no sidecar.
    assert!(p["metadata"]["annotations"]["sidecar.istio.io/status"].is_null());
    assert_eq!(
        p["metadata"]["ownerReferences"][0]["uid"],
        o["metadata"]["uid"]
    );
    assert_eq!(p["status"]["phase"], "Running");
    // An annotation change rolls a new pod that carries it.
    patch(
        &c,
        &format!("{ISVC}/sklearn-iris"),
        "application/merge-patch+json",
        json!({"metadata": {"annotations": {"sidecar.istio.io/inject": "true"}}}),
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "new pod with the annotation",
        || async {
            let ps = pods(&cp, "sklearn-iris");
            // Injection on: the injector's record is on the new pod.
            (ps.len() == 1
                && ps[0]["metadata"]["annotations"]["sidecar.istio.io/inject"] == "true"
                && ps[0]["metadata"]["annotations"]["sidecar.istio.io/status"].is_string())
            .then_some(())
        },
    )
    .await;
    // A spec change bumps generation; the stand-in catches up.
    patch(
        &c,
        &format!("{ISVC}/sklearn-iris"),
        "application/merge-patch+json",
        json!({"spec": {"predictor": {"minReplicas": 2}}}),
    )
    .await;
    ready(&c, "sklearn-iris", 2).await;
    // URL styles follow the setting.
    cp.set_kserve_url_style(UrlStyle::PathTemplate);
    eventually(Duration::from_secs(5), "path URL", || async {
        (get(&c, &format!("{ISVC}/sklearn-iris")).await.body["status"]["url"]
            == "http://example.com/serving/default/sklearn-iris")
            .then_some(())
    })
    .await;
    cp.set_kserve_domain("models.local");
    cp.set_kserve_url_style(UrlStyle::Standard);
    eventually(Duration::from_secs(5), "standard URL", || async {
        (get(&c, &format!("{ISVC}/sklearn-iris")).await.body["status"]["url"]
            == "http://sklearn-iris-default.models.local")
            .then_some(())
    })
    .await;
    // Deleting the InferenceService collects its pod.
    delete(&c, &format!("{ISVC}/sklearn-iris"), None).await;
    eventually(Duration::from_secs(5), "pod collected", || async {
        pods(&cp, "sklearn-iris").is_empty().then_some(())
    })
    .await;
    cp.shutdown().await;
}

#[tokio::test]
async fn kserve_stand_in_serves_standard_mode_as_kserve_does() {
    let routes = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mesh-local/tests/fixtures/crds/gateway.networking.k8s.io_httproutes.yaml");
    let cp = ControlPlane::builder()
        .kserve_ready_delay(Duration::from_millis(10))
        .kserve_gateway_api(true)
        .load_crds(&[routes])
        .start()
        .await
        .expect("start");
    let c = admin(&cp).await;
    // Knative-style first: one revision pod owned by the InferenceService.
    post(&c, ISVC, isvc("iris")).await;
    ready(&c, "iris", 1).await;
    assert_eq!(
        pods(&cp, "iris")[0]["metadata"]["ownerReferences"][0]["kind"],
        "InferenceService"
    );

    // The old name of the mode, then the new one: what KServe 0.17 makes for it.
    for (mode, generation) in [("RawDeployment", 1), ("Standard", 1)] {
        let annotated = patch(
            &c,
            &format!("{ISVC}/iris"),
            "application/merge-patch+json",
            json!({"metadata": {"annotations": {"serving.kserve.io/deploymentMode": mode}}}),
        )
        .await;
        assert_eq!(annotated.code, 200, "{}", annotated.text);
        let o = eventually(Duration::from_secs(10), "Standard mode", || async {
            let o = get(&c, &format!("{ISVC}/iris")).await.body;
            let pods = pods(&cp, "iris");
            (o["status"]["deploymentMode"] == "Standard"
                && pods.len() == 1
                && pods[0]["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet")
                .then_some(o)
        })
        .await;
        assert_eq!(o["metadata"]["generation"], generation);
        assert_eq!(o["status"]["url"], "http://iris-default.example.com");
        assert_eq!(
            o["status"]["address"]["url"],
            "http://iris-predictor.default.svc.cluster.local"
        );
        assert_eq!(o["status"]["components"], json!({"predictor": {}}));
    }
    let uid = get(&c, &format!("{ISVC}/iris")).await.body["metadata"]["uid"].clone();
    let owned_by_isvc = |o: &Value| {
        assert_eq!(
            o["metadata"]["ownerReferences"][0]["kind"],
            "InferenceService"
        );
        assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], uid);
    };
    let deployment = get(
        &c,
        "/apis/apps/v1/namespaces/default/deployments/iris-predictor",
    )
    .await;
    assert_eq!(deployment.code, 200, "{}", deployment.text);
    owned_by_isvc(&deployment.body);
    let labels = &deployment.body["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        labels,
        &json!({"app": "isvc.iris-predictor", "serving.kserve.io/inferenceservice": "iris", "component": "predictor"})
    );
    // The pod carries what the operator and the gateway double look for.
    let pod = &pods(&cp, "iris")[0];
    assert_eq!(
        pod["metadata"]["annotations"]["sidecar.istio.io/inject"],
        "false"
    );
    assert!(pod["metadata"]["annotations"]["sidecar.istio.io/status"].is_null());
    let service = get(&c, "/api/v1/namespaces/default/services/iris-predictor").await;
    assert_eq!(service.code, 200, "{}", service.text);
    owned_by_isvc(&service.body);
    assert_eq!(
        service.body["spec"]["selector"],
        json!({"app": "isvc.iris-predictor"})
    );
    assert_eq!(service.body["spec"]["ports"][0]["port"], 80);
    let route = get(
        &c,
        "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/iris",
    )
    .await;
    assert_eq!(route.code, 200, "{}", route.text);
    owned_by_isvc(&route.body);
    assert_eq!(
        route.body["spec"]["parentRefs"][0],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "kserve", "name": "kserve-ingress-gateway"})
    );
    assert_eq!(
        route.body["spec"]["hostnames"],
        json!(["iris-default.example.com"])
    );
    assert_eq!(
        route.body["spec"]["rules"][0]["backendRefs"][0]["name"],
        "iris-predictor"
    );

    // A deleted Deployment is made again, as KServe's controller would.
    delete(
        &c,
        "/apis/apps/v1/namespaces/default/deployments/iris-predictor",
        None,
    )
    .await;
    eventually(Duration::from_secs(10), "the Deployment again", || async {
        let d = get(
            &c,
            "/apis/apps/v1/namespaces/default/deployments/iris-predictor",
        )
        .await;
        (d.code == 200 && d.body["metadata"]["uid"] != deployment.body["metadata"]["uid"])
            .then_some(())
    })
    .await;

    // Back to the Knative path: Standard mode's objects go, a revision pod comes.
    patch(
        &c,
        &format!("{ISVC}/iris"),
        "application/json-patch+json",
        json!([{"op": "remove", "path": "/metadata/annotations/serving.kserve.io~1deploymentMode"}]),
    )
    .await;
    eventually(Duration::from_secs(10), "Knative again", || async {
        let gone = get(
            &c,
            "/apis/apps/v1/namespaces/default/deployments/iris-predictor",
        )
        .await
        .code
            == 404
            && get(
                &c,
                "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/iris",
            )
            .await
            .code
                == 404;
        let pods = pods(&cp, "iris");
        (gone
            && pods.len() == 1
            && pods[0]["metadata"]["ownerReferences"][0]["kind"] == "InferenceService")
            .then_some(())
    })
    .await;
    assert_eq!(
        get(&c, &format!("{ISVC}/iris")).await.body["status"]["url"],
        "http://iris.default.example.com"
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn builder_settings_and_istio_absence() {
    let cp = ControlPlane::builder()
        .kserve_url_style(UrlStyle::Standard)
        .kserve_domain("d.io")
        .kserve_ready_delay(Duration::from_millis(10))
        .without_istio()
        .start()
        .await
        .expect("start");
    let c = admin(&cp).await;
    post(&c, ISVC, isvc("m")).await;
    assert_eq!(
        ready(&c, "m", 1).await["status"]["url"],
        "http://m-default.d.io"
    );
    assert_eq!(
        get(
            &c,
            "/apis/security.istio.io/v1/namespaces/default/authorizationpolicies"
        )
        .await
        .code,
        404
    );
    assert!(!get(&c, "/apis").await.text.contains("security.istio.io"));
    cp.shutdown().await;
}

#[tokio::test]
async fn faults_fail_delay_and_recover() {
    let cp = start().await;
    let c = admin(&cp).await;
    cp.faults()
        .fail_next(FaultRule::new("create", "serviceaccounts/token", 1, 429).retry_after(2));
    cp.faults().fail_next(FaultRule {
        verb: Some("get".into()),
        resource: Some("configmaps".into()),
        count: 2,
        status: 503,
        retry_after: None,
    });
    let tr = post(
        &c,
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        json!({"spec": {"audiences": ["a"]}}),
    )
    .await;
    assert_eq!(
        (tr.code, tr.body["reason"].as_str()),
        (429, Some("TooManyRequests"))
    );
    assert_eq!(
        tr.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("2")
    );
    assert_eq!(tr.body["details"]["retryAfterSeconds"], 2);
    assert_eq!(
        post(
            &c,
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            json!({"spec": {"audiences": ["a"]}})
        )
        .await
        .code,
        201
    );
    for _ in 0..2 {
        assert_eq!(
            get(&c, "/api/v1/namespaces/default/configmaps/x")
                .await
                .code,
            503
        );
    }
    assert_eq!(
        get(&c, "/api/v1/namespaces/default/configmaps/x")
            .await
            .code,
        404
    );
    cp.faults().latency(Duration::from_millis(300));
    let t = tokio::time::Instant::now();
    get(&c, "/api/v1/namespaces/default/configmaps").await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    cp.faults().clear();
    cp.shutdown().await;
}

#[tokio::test]
async fn dropped_watches_end_and_refused_connections_come_back_with_state() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, WatchParams};
    let cp = start().await;
    let c = admin(&cp).await;
    post(
        &c,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "keep"}}),
    )
    .await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let rv = cp.store().resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .expect("watch")
        .boxed();
    cp.faults().drop_watches();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("stream ends promptly");
    assert!(ended.is_none());
    cp.faults()
        .refuse_connections_for(Duration::from_millis(500));
    let url = cp.url();
    let addr = url.trim_start_matches("http://").to_string();
    eventually(Duration::from_secs(5), "connections refused", || {
        let addr = addr.clone();
        async move {
            tokio::net::TcpStream::connect(&addr)
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    let back = eventually(Duration::from_secs(10), "listener back", || {
        let c = c.clone();
        async move {
            let r = tokio::time::timeout(
                Duration::from_secs(1),
                c.send(
                    http::Request::get("/api/v1/namespaces/default/configmaps/keep")
                        .body(kube::client::Body::empty())
                        .expect("req"),
                ),
            )
            .await;
            match r {
                Ok(Ok(resp)) => Some(resp.status().as_u16()),
                _ => None,
            }
        }
    })
    .await;
    assert_eq!(back, 200, "state intact after the outage");
    cp.shutdown().await;
}

#[tokio::test]
async fn requests_are_accounted_by_verb_resource_and_caller() {
    let cp = start().await;
    let c = admin(&cp).await;
    let mark = cp.requests().mark();
    post(
        &c,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "a"}}),
    )
    .await;
    get(&c, "/api/v1/namespaces/default/configmaps/a").await;
    get(&c, "/api/v1/namespaces/default/configmaps").await;
    post(
        &c,
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        json!({"spec": {"audiences": ["x"]}}),
    )
    .await;
    get(&c, "/api").await;
    let reqs = cp.requests().since(mark);
    let verbs: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.verb.as_str(), r.resource.as_str()))
        .collect();
    assert_eq!(
        verbs,
        vec![
            ("create", "configmaps"),
            ("get", "configmaps"),
            ("list", "configmaps"),
            ("create", "serviceaccounts")
        ]
    );
    assert_eq!(reqs[3].subresource.as_deref(), Some("token"));
    assert!(reqs.iter().all(|r| r.caller == "admin"));
    assert_eq!(reqs[1].name.as_deref(), Some("a"));
    assert_eq!(reqs[1].namespace.as_deref(), Some("default"));
    assert_eq!(cp.requests().count("create", "serviceaccounts/token"), 1);
    assert_eq!(
        cp.requests().counts().get(&(
            "get".to_string(),
            "configmaps".to_string(),
            "admin".to_string()
        )),
        Some(&1)
    );
    assert_eq!(cp.requests().writes_since(mark).len(), 2);
    let later = cp.requests().mark();
    get(&c, "/api/v1/namespaces/default/configmaps/a").await;
    assert!(cp.requests().writes_since(later).is_empty());
    cp.requests().clear();
    assert!(cp.requests().snapshot().is_empty());
    cp.shutdown().await;
}

#[tokio::test]
async fn admin_endpoint_drives_faults_and_accounting() {
    let cp = start().await;
    let c = admin(&cp).await;
    let rule = json!({"verb": "list", "resource": "secrets", "count": 1, "status": 500});
    assert_eq!(
        post(&c, "/_kube-local/faults/fail-next", rule).await.code,
        200
    );
    assert_eq!(
        get(&c, "/api/v1/namespaces/default/secrets").await.code,
        500
    );
    assert_eq!(
        get(&c, "/api/v1/namespaces/default/secrets").await.code,
        200
    );
    let reqs = get(&c, "/_kube-local/requests").await.body;
    assert_eq!(reqs.as_array().map(Vec::len), Some(2));
    assert_eq!(reqs[0]["code"], 500);
    let counts = get(&c, "/_kube-local/requests/counts").await.body;
    assert_eq!(
        counts[0],
        json!({"verb": "list", "resource": "secrets", "caller": "admin", "count": 2})
    );
    assert_eq!(
        call(
            &c,
            "DELETE",
            "/_kube-local/requests",
            "application/json",
            None
        )
        .await
        .code,
        200
    );
    assert_eq!(get(&c, "/_kube-local/requests").await.body, json!([]));
    post(
        &c,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "c"}}),
    )
    .await;
    let rv = cp.store().resource_version();
    assert_eq!(
        post(&c, "/_kube-local/faults/compact", json!({}))
            .await
            .code,
        200
    );
    let gone = get(
        &c,
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={}",
            rv - 1
        ),
    )
    .await;
    assert!(gone.text.contains("\"code\":410"), "{}", gone.text);
    assert_eq!(
        post(&c, "/_kube-local/faults/latency", json!({"millis": 0}))
            .await
            .code,
        200
    );
    assert_eq!(
        post(&c, "/_kube-local/faults/clear", json!({})).await.code,
        200
    );
    cp.shutdown().await;
}
