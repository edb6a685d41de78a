//! CRDs, schema validation, CEL, deletion, finalizers and garbage collection.
// Helpers outside #[test] fns: a failed setup step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

#[tokio::test]
async fn crds_are_served_once_established_and_cleaned_up() {
    let cp = start().await;
    let c = admin(&cp).await;
    assert_eq!(
        get(&c, "/apis/example.io/v1/namespaces/default/widgets")
            .await
            .code,
        404
    );
    let created = post(&c, CRDS, widget_crd()).await;
    assert_eq!(created.code, 201, "{}", created.text);
    let crd = get(&c, &format!("{CRDS}/widgets.example.io")).await;
    let established = crd.body["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    assert!(established, "{}", crd.text);
    let disc = get(&c, "/apis/example.io/v1").await;
    assert!(disc.text.contains("\"widgets/status\""));
    assert_eq!(
        post(
            &c,
            "/apis/example.io/v1/namespaces/default/widgets",
            widget("default", "w", 1)
        )
        .await
        .code,
        201
    );
    let table = call(
        &c,
        "GET",
        "/apis/example.io/v1/namespaces/default/widgets",
        "application/json",
        None,
    )
    .await;
    assert_eq!(table.body["items"].as_array().map(Vec::len), Some(1));
    let del = delete(&c, &format!("{CRDS}/widgets.example.io"), None).await;
    assert!(del.code == 200 || del.code == 202, "{}", del.text);
    assert_eq!(
        get(&c, &format!("{CRDS}/widgets.example.io")).await.code,
        404
    );
    assert_eq!(
        get(&c, "/apis/example.io/v1/namespaces/default/widgets")
            .await
            .code,
        404
    );
    assert!(
        cp.store()
            .list("example.io/v1", "widgets", None, "")
            .is_err()
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn a_crd_whose_cel_rule_does_not_compile_is_refused() {
    let cp = start().await;
    let c = admin(&cp).await;
    for (rule, why) in [
        ("self.size <=", "Syntax error"),
        ("self.namespace == 'a'", "undefined field 'namespace'"),
    ] {
        let mut crd = widget_crd();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
            [0]["rule"] = json!(rule);
        let refused = post(&c, CRDS, crd).await;
        assert_eq!(refused.code, 422, "{rule}: {}", refused.text);
        let message = refused.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule")
                && message.contains("compilation failed")
                && message.contains(why),
            "{rule}: {message}"
        );
        assert_eq!(
            get(&c, &format!("{CRDS}/widgets.example.io")).await.code,
            404
        );
    }
}

#[tokio::test]
async fn custom_resources_are_validated_defaulted_and_pruned() {
    let cp = start().await;
    let c = admin(&cp).await;
    post(&c, CRDS, widget_crd()).await;
    let url = "/apis/example.io/v1/namespaces/default/widgets";
    let mut w = widget("default", "ok", 3);
    w["spec"]["unknown"] = json!(1);
    w["spec"]["extra"] = json!({"kept": {"deep": true}});
    let created = post(&c, url, w).await;
    assert_eq!(created.code, 201, "{}", created.text);
    assert_eq!(
        created.body["spec"],
        json!({"size": 3, "maxSize": 10, "extra": {"kept": {"deep": true}}})
    );
    let strict = post(&c, &format!("{url}?fieldValidation=Strict"), json!({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "strict"}, "spec": {"size": 1, "nope": 1}})).await;
    assert_eq!(strict.code, 400);
    assert_eq!(
        strict.body["message"],
        "Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.nope\""
    );
    let bad = post(&c, url, json!({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "bad"}, "spec": {"size": 0, "color": "green"}})).await;
    assert_eq!(
        (bad.code, bad.body["reason"].as_str()),
        (422, Some("Invalid"))
    );
    let msg = bad.body["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("Widget.example.io \"bad\" is invalid: ["),
        "{msg}"
    );
    assert!(
        msg.contains(
            "spec.color: Unsupported value: \"green\": supported values: \"red\", \"blue\""
        ),
        "{msg}"
    );
    assert!(
        msg.contains(
            "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"
        ),
        "{msg}"
    );
    let causes: Vec<&str> = bad.body["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert!(
        causes.contains(&"spec.color") && causes.contains(&"spec.size"),
        "{causes:?}"
    );
    let missing = post(&c, url, json!({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "m"}, "spec": {}})).await;
    assert!(
        missing.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.size: Required value"),
        "{}",
        missing.text
    );
    let typed = post(&c, url, json!({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "t"}, "spec": {"size": "big"}})).await;
    assert!(
        typed.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.size in body must be of type integer: \"string\""),
        "{}",
        typed.text
    );
    let cel = post(&c, url, json!({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "cel"}, "spec": {"size": 11}})).await;
    assert_eq!(cel.code, 422);
    assert!(
        cel.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("size must not exceed maxSize"),
        "{}",
        cel.text
    );
    // Updates are validated too.
    let upd = patch(
        &c,
        &format!("{url}/ok"),
        "application/merge-patch+json",
        json!({"spec": {"size": 20}}),
    )
    .await;
    assert_eq!(upd.code, 422);
    cp.shutdown().await;
}

fn docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("dataset readable");
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| v.is_object())
        .collect()
}

#[tokio::test]
async fn real_istio_and_kserve_schemas_accept_valid_and_reject_invalid_objects() {
    let cp = start().await;
    let c = admin(&cp).await;
    let dataset = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    for file in [
        "security-v1-AuthorizationPolicy.yaml",
        "security-v1beta1-AuthorizationPolicy.yaml",
        "security-v1-RequestAuthentication.yaml",
    ] {
        for (i, mut doc) in docs(&format!("{dataset}/{file}")).into_iter().enumerate() {
            doc["metadata"]["namespace"] = json!("default");
            doc["metadata"]["name"] = json!(format!("ok-{i}"));
            let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
            let plural = if doc["kind"] == "AuthorizationPolicy" {
                "authorizationpolicies"
            } else {
                "requestauthentications"
            };
            let r = post(
                &c,
                &format!("/apis/{api_version}/namespaces/default/{plural}"),
                doc.clone(),
            )
            .await;
            assert_eq!(r.code, 201, "{file} #{i}: {}", r.text);
            let _ = delete(
                &c,
                &format!("/apis/{api_version}/namespaces/default/{plural}/ok-{i}"),
                None,
            )
            .await;
        }
    }
    let both = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "both"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "g"}}});
    let r = post(
        &c,
        "/apis/security.istio.io/v1/namespaces/default/authorizationpolicies",
        both,
    )
    .await;
    assert_eq!(r.code, 422, "{}", r.text);
    assert!(
        r.text
            .contains("only one of targetRefs or selector can be set"),
        "{}",
        r.text
    );
    let wrong_action = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "act"}, "spec": {"action": "PERMIT"}});
    let r = post(
        &c,
        "/apis/security.istio.io/v1/namespaces/default/authorizationpolicies",
        wrong_action,
    )
    .await;
    assert!(
        r.code == 422
            && r.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("spec.action: Unsupported value: \"PERMIT\""),
        "{}",
        r.text
    );
    let sample: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{dataset}/sklearn.yaml")).expect("sample"),
    )
    .expect("yaml");
    let r = post(
        &c,
        "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices",
        sample,
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.text);
    let bad = json!({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "bad"}, "spec": {"predictor": {"minReplicas": "two"}}});
    let r = post(
        &c,
        "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices",
        bad,
    )
    .await;
    assert!(
        r.code == 422 && r.text.contains("spec.predictor.minReplicas"),
        "{}",
        r.text
    );
    // Both Istio versions share storage.
    let v1beta1 = get(
        &c,
        "/apis/security.istio.io/v1beta1/namespaces/default/authorizationpolicies",
    )
    .await;
    assert_eq!(v1beta1.code, 200);
    cp.shutdown().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let cp = start().await;
    let c = admin(&cp).await;
    let url = "/api/v1/namespaces/default/configmaps";
    post(
        &c,
        url,
        json!({"metadata": {"name": "held", "finalizers": ["example.io/hold"]}}),
    )
    .await;
    let del = delete(&c, &format!("{url}/held"), None).await;
    assert_eq!(del.code, 202);
    assert!(del.body["metadata"]["deletionTimestamp"].is_string());
    let still = get(&c, &format!("{url}/held")).await;
    assert!(still.body["metadata"]["deletionTimestamp"].is_string());
    let add = patch(
        &c,
        &format!("{url}/held"),
        "application/merge-patch+json",
        json!({"metadata": {"finalizers": ["example.io/hold", "more"]}}),
    )
    .await;
    assert_eq!(add.code, 422, "no new finalizers while deleting");
    let release = patch(
        &c,
        &format!("{url}/held"),
        "application/merge-patch+json",
        json!({"metadata": {"finalizers": null}}),
    )
    .await;
    assert_eq!(release.code, 200);
    assert_eq!(get(&c, &format!("{url}/held")).await.code, 404);
    let pre = post(&c, url, json!({"metadata": {"name": "pre"}})).await;
    let wrong = delete(
        &c,
        &format!("{url}/pre"),
        Some(json!({"preconditions": {"uid": "other"}})),
    )
    .await;
    assert_eq!(wrong.code, 409);
    let ok = delete(
        &c,
        &format!("{url}/pre"),
        Some(json!({"preconditions": {"uid": pre.body["metadata"]["uid"]}})),
    )
    .await;
    assert_eq!(
        (ok.code, ok.body["status"].as_str()),
        (200, Some("Success"))
    );
    cp.shutdown().await;
}

fn owned(name: &str, owner: &Value, block: bool) -> Value {
    json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "blockOwnerDeletion": block}]}})
}

#[tokio::test]
async fn garbage_collection_follows_propagation_policy() {
    let cp = start().await;
    let c = admin(&cp).await;
    let url = "/api/v1/namespaces/default/configmaps";
    // Background: the owner goes at once, dependents follow.
    let owner = post(&c, url, json!({"metadata": {"name": "owner"}}))
        .await
        .body;
    post(
        &c,
        "/api/v1/namespaces/default/secrets",
        owned("dep", &owner, false),
    )
    .await;
    assert_eq!(delete(&c, &format!("{url}/owner"), None).await.code, 200);
    eventually(Duration::from_secs(5), "dependent collected", || async {
        (get(&c, "/api/v1/namespaces/default/secrets/dep").await.code == 404).then_some(())
    })
    .await;
    // Foreground: the owner waits (finalizer) for a blocking dependent that has a finalizer.
    let owner = post(&c, url, json!({"metadata": {"name": "fg"}}))
        .await
        .body;
    let mut dep = owned("fg-dep", &owner, true);
    dep["metadata"]["finalizers"] = json!(["example.io/slow"]);
    post(&c, "/api/v1/namespaces/default/secrets", dep).await;
    let del = delete(
        &c,
        &format!("{url}/fg"),
        Some(json!({"propagationPolicy": "Foreground"})),
    )
    .await;
    assert_eq!(del.code, 202);
    assert!(
        get(&c, &format!("{url}/fg")).await.body["metadata"]["finalizers"]
            .to_string()
            .contains("foregroundDeletion")
    );
    patch(
        &c,
        "/api/v1/namespaces/default/secrets/fg-dep",
        "application/merge-patch+json",
        json!({"metadata": {"finalizers": null}}),
    )
    .await;
    assert_eq!(
        get(&c, &format!("{url}/fg")).await.code,
        404,
        "owner goes once the dependent is gone"
    );
    // Orphan: dependents stay, without the owner reference.
    let owner = post(&c, url, json!({"metadata": {"name": "or"}}))
        .await
        .body;
    post(
        &c,
        "/api/v1/namespaces/default/secrets",
        owned("or-dep", &owner, false),
    )
    .await;
    delete(
        &c,
        &format!("{url}/or"),
        Some(json!({"propagationPolicy": "Orphan"})),
    )
    .await;
    assert_eq!(get(&c, &format!("{url}/or")).await.code, 404);
    let orphan = get(&c, "/api/v1/namespaces/default/secrets/or-dep").await;
    assert_eq!(orphan.code, 200);
    assert!(
        orphan.body["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    );
    // Deleting a namespace deletes its content.
    post(&c, "/api/v1/namespaces", namespace("doomed")).await;
    post(
        &c,
        "/api/v1/namespaces/doomed/configmaps",
        json!({"metadata": {"name": "x"}}),
    )
    .await;
    assert_eq!(
        get(&c, "/api/v1/namespaces/doomed/serviceaccounts/default")
            .await
            .code,
        200,
        "default SA in a new namespace"
    );
    delete(&c, "/api/v1/namespaces/doomed", None).await;
    eventually(Duration::from_secs(5), "namespace gone", || async {
        (get(&c, "/api/v1/namespaces/doomed").await.code == 404).then_some(())
    })
    .await;
    assert!(
        cp.store()
            .list("v1", "configmaps", Some("doomed"), "")
            .unwrap_or_default()
            .is_empty()
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn events_k8s_io_and_core_events_share_storage() {
    let cp = start().await;
    let c = admin(&cp).await;
    let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "inference-access.io/controller", "reportingInstance": "i",
        "action": "Issue", "reason": "CredentialIssued", "type": "Normal", "note": "issued",
        "regarding": {"apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess", "name": "ia", "namespace": "default", "uid": "u1"}});
    let created = post(&c, "/apis/events.k8s.io/v1/namespaces/default/events", new).await;
    assert_eq!(created.code, 201, "{}", created.text);
    assert_eq!(created.body["note"], "issued");
    let core = get(&c, "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dia,involvedObject.uid%3Du1").await;
    let items = core.body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{}", core.text);
    assert_eq!(
        (
            items[0]["message"].as_str(),
            items[0]["reportingComponent"].as_str()
        ),
        (Some("issued"), Some("inference-access.io/controller"))
    );
    assert_eq!(items[0]["apiVersion"], "v1");
    let patched = patch(
        &c,
        "/apis/events.k8s.io/v1/namespaces/default/events/e1",
        "application/merge-patch+json",
        json!({"note": "renewed"}),
    )
    .await;
    assert_eq!(patched.body["note"], "renewed");
    assert_eq!(
        get(&c, "/api/v1/namespaces/default/events/e1").await.body["message"],
        "renewed"
    );
    cp.shutdown().await;
}
