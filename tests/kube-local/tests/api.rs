//! HTTP-level tests of the core API semantics kube-rs and kubectl rely on.
// Helpers outside #[test] fns: a failed setup step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

#[tokio::test]
async fn version_discovery_and_openapi() {
    let cp = start().await;
    let c = admin(&cp).await;
    let v = get(&c, "/version").await;
    assert_eq!((v.code, v.body["major"].as_str()), (200, Some("1")));
    let api = get(&c, "/api").await;
    assert_eq!(api.body["versions"], json!(["v1"]));
    let groups = get(&c, "/apis").await;
    let names: Vec<&str> = groups.body["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["name"].as_str())
        .collect();
    for g in [
        "serving.kserve.io",
        "security.istio.io",
        "apiextensions.k8s.io",
        "rbac.authorization.k8s.io",
        "events.k8s.io",
        "coordination.k8s.io",
    ] {
        assert!(names.contains(&g), "{g} missing from {names:?}");
    }
    let istio = get(&c, "/apis/security.istio.io").await;
    assert_eq!(istio.body["preferredVersion"]["version"], "v1");
    let core = get(&c, "/api/v1").await;
    let resources: Vec<&str> = core.body["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        resources.contains(&"serviceaccounts/token")
            && resources.contains(&"secrets")
            && resources.contains(&"namespaces/status")
    );
    let kserve = get(&c, "/apis/serving.kserve.io/v1beta1").await;
    assert!(kserve.text.contains("\"inferenceservices/status\""));
    let root = get(&c, "/openapi/v3").await;
    let url = root.body["paths"]["apis/serving.kserve.io/v1beta1"]["serverRelativeURL"]
        .as_str()
        .expect("gv listed")
        .to_string();
    let doc = get(&c, &url).await;
    let patch = &doc.body["paths"]["/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{name}"]
        ["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "InferenceService"
    );
    assert!(patch["parameters"].to_string().contains("fieldValidation"));
    // The v2 document kubectl downloads for client-side validation (JSON here; protobuf when
    // asked, as kubectl does: tests/kubectl.rs).
    let v2 = get(&c, "/openapi/v2").await;
    assert_eq!(v2.code, 200);
    assert_eq!(v2.body["swagger"], "2.0");
    assert_eq!(get(&c, "/apis/nope.io/v1").await.code, 404);
    cp.shutdown().await;
}

#[tokio::test]
async fn create_get_update_conflicts() {
    let cp = start().await;
    let c = admin(&cp).await;
    let base = "/api/v1/namespaces/default/configmaps";
    let created = post(
        &c,
        base,
        json!({"metadata": {"generateName": "cm-"}, "data": {"a": "1"}}),
    )
    .await;
    assert_eq!(created.code, 201);
    let name = created.body["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    assert!(name.starts_with("cm-") && name.len() == 8, "{name}");
    for f in ["uid", "creationTimestamp", "resourceVersion"] {
        assert!(created.body["metadata"][f].is_string(), "{f}");
    }
    let dup = post(&c, base, json!({"metadata": {"name": name}})).await;
    assert_eq!(
        (
            dup.code,
            dup.body["reason"].as_str(),
            dup.body["kind"].as_str()
        ),
        (409, Some("AlreadyExists"), Some("Status"))
    );
    assert_eq!(
        dup.body["message"],
        format!("configmaps \"{name}\" already exists")
    );
    assert_eq!(
        dup.body["details"],
        json!({"name": name, "kind": "configmaps"})
    );
    let missing = get(&c, &format!("{base}/nope")).await;
    assert_eq!(
        (missing.code, missing.body["message"].as_str()),
        (404, Some("configmaps \"nope\" not found"))
    );
    let mut obj = created.body.clone();
    obj["data"]["a"] = json!("2");
    let updated = put(&c, &format!("{base}/{name}"), obj.clone()).await;
    assert_eq!(
        (updated.code, updated.body["data"]["a"].as_str()),
        (200, Some("2"))
    );
    assert_ne!(
        updated.body["metadata"]["resourceVersion"],
        created.body["metadata"]["resourceVersion"]
    );
    // The first body still carries the old resourceVersion.
    let stale = put(&c, &format!("{base}/{name}"), obj).await;
    assert_eq!(
        (stale.code, stale.body["reason"].as_str()),
        (409, Some("Conflict"))
    );
    assert!(
        stale.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("the object has been modified")
    );
    // A no-op update keeps the resourceVersion.
    let again = put(&c, &format!("{base}/{name}"), updated.body.clone()).await;
    assert_eq!(
        again.body["metadata"]["resourceVersion"],
        updated.body["metadata"]["resourceVersion"]
    );
    let no_ns = post(
        &c,
        "/api/v1/namespaces/ghost/configmaps",
        json!({"metadata": {"name": "x"}}),
    )
    .await;
    assert_eq!(
        (no_ns.code, no_ns.body["message"].as_str()),
        (404, Some("namespaces \"ghost\" not found"))
    );
    let bad_name = post(&c, base, json!({"metadata": {"name": "Bad_Name"}})).await;
    assert_eq!(
        (bad_name.code, bad_name.body["reason"].as_str()),
        (422, Some("Invalid"))
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn list_with_selectors_and_pages() {
    let cp = start().await;
    let c = admin(&cp).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for i in 0..7 {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("cm{i}"), "labels": {"parity": if i % 2 == 0 { "even" } else { "odd" }}}})).expect("cm");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let even = cms
        .list(&ListParams::default().labels("parity=even"))
        .await
        .expect("list");
    assert_eq!(even.items.len(), 4);
    let set = cms
        .list(&ListParams::default().labels("parity in (odd),parity!=even"))
        .await
        .expect("list");
    assert_eq!(set.items.len(), 3);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=cm3"))
        .await
        .expect("list");
    assert_eq!(by_name.items.len(), 1);
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(3).labels("parity");
    loop {
        let page = cms.list(&params).await.expect("page");
        assert!(page.items.len() <= 3);
        names.extend(page.items.iter().filter_map(|i| i.metadata.name.clone()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(names, (0..7).map(|i| format!("cm{i}")).collect::<Vec<_>>());
    let first = get(&c, "/api/v1/namespaces/default/configmaps?limit=2").await;
    assert_eq!(first.body["metadata"]["remainingItemCount"], 5);
    let token = first.body["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_string();
    cp.faults().compact();
    let expired = get(
        &c,
        &format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}"),
    )
    .await;
    assert_eq!(
        (expired.code, expired.body["reason"].as_str()),
        (410, Some("Expired"))
    );
    let all_ns = get(&c, "/api/v1/serviceaccounts").await;
    assert!(
        all_ns.body["items"]
            .as_array()
            .is_some_and(|a| a.len() >= 4)
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn watch_resumes_filters_and_expires() {
    let cp = start().await;
    let c = admin(&cp).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let mk = |name: &str, app: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}}}))
            .expect("cm")
    };
    cms.create(&PostParams::default(), &mk("before", "web"))
        .await
        .expect("create");
    let list = cms.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.expect("rv");
    cms.create(&PostParams::default(), &mk("a", "web"))
        .await
        .expect("create");
    cms.create(&PostParams::default(), &mk("b", "db"))
        .await
        .expect("create");
    // Relabel a: it leaves the app=web selection, which a filtered watch sees as DELETED.
    let mut a = cms.get("a").await.expect("get");
    a.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
    cms.replace("a", &PostParams::default(), &a)
        .await
        .expect("replace");
    let wp = WatchParams::default().labels("app=web").timeout(2);
    let events: Vec<WatchEvent<ConfigMap>> = cms
        .watch(&wp, &rv)
        .await
        .expect("watch")
        .take(2)
        .try_collect()
        .await
        .expect("events");
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) => ("ADDED".into(), o.metadata.name.clone().unwrap_or_default()),
            WatchEvent::Modified(o) => (
                "MODIFIED".into(),
                o.metadata.name.clone().unwrap_or_default(),
            ),
            WatchEvent::Deleted(o) => (
                "DELETED".into(),
                o.metadata.name.clone().unwrap_or_default(),
            ),
            other => (format!("{other:?}"), String::new()),
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("ADDED".to_string(), "a".to_string()),
            ("DELETED".to_string(), "a".to_string())
        ]
    );
    // timeoutSeconds ends the stream; bookmarks are only sent when asked for.
    let started = tokio::time::Instant::now();
    let rest: Vec<_> = cms
        .watch(
            &WatchParams::default().timeout(1),
            &cms.list(&ListParams::default())
                .await
                .expect("list")
                .metadata
                .resource_version
                .expect("rv"),
        )
        .await
        .expect("watch")
        .collect()
        .await;
    assert!(rest.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    // sendInitialEvents with bookmarks ends the initial state with the initial-events-end bookmark.
    let initial = get(&c, "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1").await;
    let lines: Vec<Value> = initial
        .text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.iter().filter(|l| l["type"] == "ADDED").count(), 3);
    let last = lines.last().expect("a bookmark");
    assert_eq!(
        (
            last["type"].as_str(),
            last["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"].as_str()
        ),
        (Some("BOOKMARK"), Some("true"))
    );
    // After compaction a resume from the old version gets an ERROR event with 410.
    cp.faults().compact();
    let gone = get(
        &c,
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"),
    )
    .await;
    let ev: Value =
        serde_json::from_str(gone.text.lines().next().unwrap_or_default()).expect("event");
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["code"].as_i64(),
            ev["object"]["reason"].as_str()
        ),
        (Some("ERROR"), Some(410), Some("Expired"))
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn watch_streams_live_changes_to_kube_runtime() {
    use kube::runtime::{WatchStreamExt, watcher};
    let cp = start().await;
    let c = admin(&cp).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let mut stream = watcher(cms.clone(), watcher::Config::default().labels("app=live"))
        .applied_objects()
        .boxed();
    let writer = cp.store().clone();
    tokio::spawn(async move {
        for i in 0..3 {
            let _ = writer.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("live{i}"), "namespace": "default", "labels": {"app": "live"}}}));
        }
    });
    let mut names = Vec::new();
    while names.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("event in time");
        let cm = next.expect("stream open").expect("no error");
        names.push(cm.metadata.name.unwrap_or_default());
    }
    names.sort();
    assert_eq!(names, vec!["live0", "live1", "live2"]);
    cp.shutdown().await;
}

#[tokio::test]
async fn patch_formats() {
    let cp = start().await;
    let c = admin(&cp).await;
    let base = "/api/v1/namespaces/default";
    post(
        &c,
        &format!("{base}/configmaps"),
        json!({"metadata": {"name": "p"}, "data": {"a": "1", "b": "2"}}),
    )
    .await;
    let merged = patch(
        &c,
        &format!("{base}/configmaps/p"),
        "application/merge-patch+json",
        json!({"data": {"a": null, "c": "3"}}),
    )
    .await;
    assert_eq!(merged.body["data"], json!({"b": "2", "c": "3"}));
    let jp = patch(
        &c,
        &format!("{base}/configmaps/p"),
        "application/json-patch+json",
        json!([{"op": "add", "path": "/data/d", "value": "4"}]),
    )
    .await;
    assert_eq!(jp.body["data"]["d"], "4");
    let failed_test = patch(
        &c,
        &format!("{base}/configmaps/p"),
        "application/json-patch+json",
        json!([{"op": "test", "path": "/data/d", "value": "5"}]),
    )
    .await;
    assert_eq!(failed_test.code, 422);
    let pod = json!({"metadata": {"name": "pod"}, "spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}});
    assert_eq!(post(&c, &format!("{base}/pods"), pod).await.code, 201);
    let smp = patch(
        &c,
        &format!("{base}/pods/pod"),
        "application/strategic-merge-patch+json",
        json!({"spec": {"containers": [{"name": "b", "image": "y:2"}]}}),
    )
    .await;
    assert_eq!(
        smp.body["spec"]["containers"],
        json!([{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"}])
    );
    let unsupported = patch(&c, &format!("{base}/configmaps/p"), "text/plain", json!({})).await;
    assert_eq!(unsupported.code, 415);
    cp.shutdown().await;
}

#[tokio::test]
async fn server_side_apply() {
    let cp = start().await;
    let c = admin(&cp).await;
    let url = "/api/v1/namespaces/default/configmaps/ssa";
    let apply = "application/apply-patch+yaml";
    let cfg = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "labels": {"team": "a"}}, "data": data});
    let no_manager = patch(&c, url, apply, cfg(json!({"a": "1"}))).await;
    assert_eq!(no_manager.code, 400);
    let created = patch(
        &c,
        &format!("{url}?fieldManager=one"),
        apply,
        cfg(json!({"a": "1", "b": "2"})),
    )
    .await;
    assert_eq!(created.code, 201);
    let mf = &created.body["metadata"]["managedFields"][0];
    assert_eq!(
        (
            mf["manager"].as_str(),
            mf["operation"].as_str(),
            mf["fieldsType"].as_str()
        ),
        (Some("one"), Some("Apply"), Some("FieldsV1"))
    );
    assert_eq!(
        mf["fieldsV1"],
        json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:team": {}}}})
    );
    // The same apply again changes nothing: same resourceVersion.
    let again = patch(
        &c,
        &format!("{url}?fieldManager=one"),
        apply,
        cfg(json!({"a": "1", "b": "2"})),
    )
    .await;
    assert_eq!(
        again.body["metadata"]["resourceVersion"],
        created.body["metadata"]["resourceVersion"]
    );
    // Dropping a field from the applied config removes it.
    let dropped = patch(
        &c,
        &format!("{url}?fieldManager=one"),
        apply,
        cfg(json!({"a": "1"})),
    )
    .await;
    assert_eq!(dropped.body["data"], json!({"a": "1"}));
    let conflict = patch(&c, &format!("{url}?fieldManager=two"), apply, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "9"}})).await;
    assert_eq!(
        (conflict.code, conflict.body["reason"].as_str()),
        (409, Some("Conflict"))
    );
    assert_eq!(
        conflict.body["message"],
        "Apply failed with 1 conflict: conflict with \"one\": .data.a"
    );
    assert_eq!(conflict.body["details"]["causes"][0]["field"], ".data.a");
    let forced = patch(&c, &format!("{url}?fieldManager=two&force=true"), apply, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "9"}})).await;
    assert_eq!(
        (forced.code, forced.body["data"]["a"].as_str()),
        (200, Some("9"))
    );
    let managers: Vec<&str> = forced.body["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, vec!["one", "two"]);
    // A merge patch by another manager is recorded as an Update.
    let upd = patch(
        &c,
        &format!("{url}?fieldManager=editor"),
        "application/merge-patch+json",
        json!({"data": {"z": "1"}}),
    )
    .await;
    assert!(
        upd.body["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["manager"] == "editor" && m["operation"] == "Update")
    );
    // YAML bodies are accepted for apply.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n";
    let req = http::Request::builder()
        .method("PATCH")
        .uri("/api/v1/namespaces/default/configmaps/from-yaml?fieldManager=y")
        .header("content-type", apply)
        .body(yaml.as_bytes().to_vec())
        .expect("req");
    let resp = c
        .send(req.map(kube::client::Body::from))
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 201);
    cp.shutdown().await;
}

#[tokio::test]
async fn kube_rs_apply_and_status_patch_on_custom_resources() {
    use kube::api::{DynamicObject, Patch, PatchParams};
    use kube::discovery::ApiResource;
    let cp = start().await;
    let c = admin(&cp).await;
    assert_eq!(
        post(
            &c,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            widget_crd()
        )
        .await
        .code,
        201
    );
    let ar = ApiResource {
        group: "example.io".into(),
        version: "v1".into(),
        api_version: "example.io/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let pp = PatchParams::apply("inference-access").force();
    let w: DynamicObject = serde_json::from_value(widget("default", "w1", 2)).expect("widget");
    let applied = api
        .patch("w1", &pp, &Patch::Apply(&w))
        .await
        .expect("apply");
    assert_eq!(applied.metadata.generation, Some(1));
    assert_eq!(applied.data["spec"]["maxSize"], 10, "default applied");
    let status =
        json!({"apiVersion": "example.io/v1", "kind": "Widget", "status": {"phase": "Ready"}});
    let with_status = api
        .patch_status("w1", &pp, &Patch::Apply(&status))
        .await
        .expect("status apply");
    assert_eq!(with_status.data["status"]["phase"], "Ready");
    assert_eq!(
        with_status.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );
    let merged = api
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Done"}, "spec": {"size": 5}})),
        )
        .await
        .expect("merge status");
    assert_eq!(
        (
            merged.data["status"]["phase"].as_str(),
            merged.data["spec"]["size"].as_i64()
        ),
        (Some("Done"), Some(2)),
        "status patch ignores spec"
    );
    let spec = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 3}, "status": {"phase": "Ignored"}})),
        )
        .await
        .expect("merge spec");
    assert_eq!(
        (
            spec.data["status"]["phase"].as_str(),
            spec.metadata.generation
        ),
        (Some("Done"), Some(2)),
        "spec patch ignores status, bumps generation"
    );
    let meta_only = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("label");
    assert_eq!(meta_only.metadata.generation, Some(2));
    let smp = patch(
        &c,
        "/apis/example.io/v1/namespaces/default/widgets/w1",
        "application/strategic-merge-patch+json",
        json!({"spec": {"size": 4}}),
    )
    .await;
    assert_eq!(smp.code, 415);
    cp.shutdown().await;
}

#[tokio::test]
async fn dry_run_and_delete_collection() {
    let cp = start().await;
    let c = admin(&cp).await;
    let url = "/api/v1/namespaces/default/configmaps";
    let dry = post(
        &c,
        &format!("{url}?dryRun=All"),
        json!({"metadata": {"name": "dry"}}),
    )
    .await;
    assert_eq!(dry.code, 201);
    assert_eq!(get(&c, &format!("{url}/dry")).await.code, 404);
    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        post(
            &c,
            url,
            json!({"metadata": {"name": name, "labels": {"app": app}}}),
        )
        .await;
    }
    let gone = delete(&c, &format!("{url}?labelSelector=app%3Dx"), None).await;
    assert_eq!(
        (gone.code, gone.body["items"].as_array().map(Vec::len)),
        (200, Some(2))
    );
    let left: Vec<String> = get(&c, url).await.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(left, vec!["c".to_string()]);
    let lease = post(&c, "/apis/coordination.k8s.io/v1/namespaces/default/leases", json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).await;
    assert_eq!(lease.code, 201);
    let mut taken = lease.body.clone();
    taken["spec"]["holderIdentity"] = json!("b");
    assert_eq!(
        put(
            &c,
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/leader",
            taken.clone()
        )
        .await
        .code,
        200
    );
    assert_eq!(
        put(
            &c,
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/leader",
            taken
        )
        .await
        .code,
        409,
        "a second holder with the stale version loses"
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn malformed_bodies_get_errors_not_crashes() {
    let cp = start().await;
    let c = admin(&cp).await;
    let url = "/api/v1/namespaces/default/secrets";
    assert_eq!(
        post(
            &c,
            url,
            json!({"metadata": {"name": "s", "labels": "oops"}})
        )
        .await
        .code,
        400
    );
    assert_eq!(
        post(&c, url, json!({"metadata": {"name": "s"}, "data": "oops"}))
            .await
            .code,
        400
    );
    assert_eq!(
        post(
            &c,
            url,
            json!({"metadata": {"name": "s"}, "data": {"k": "not base64!"}})
        )
        .await
        .code,
        400
    );
    assert_eq!(
        post(
            &c,
            "/api/v1/namespaces",
            json!({"metadata": {"name": "n", "labels": ["x"]}})
        )
        .await
        .code,
        400
    );
    post(&c, url, json!({"metadata": {"name": "s"}})).await;
    let root = patch(
        &c,
        &format!("{url}/s"),
        "application/json-patch+json",
        json!([{"op": "replace", "path": "", "value": "x"}]),
    )
    .await;
    assert_eq!(root.code, 422);
    let not_json = call(&c, "POST", url, "application/json", None).await;
    assert_eq!(not_json.code, 400);
    // Still serving, state intact.
    assert_eq!(get(&c, &format!("{url}/s")).await.code, 200);
    cp.shutdown().await;
}

#[tokio::test]
async fn apply_merges_list_map_items_by_key_between_managers() {
    let cp = start().await;
    let c = admin(&cp).await;
    post(
        &c,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        widget_crd(),
    )
    .await;
    let url = "/apis/example.io/v1/namespaces/default/widgets/w";
    let apply = "application/apply-patch+yaml";
    assert_eq!(
        patch(
            &c,
            &format!("{url}?fieldManager=spec"),
            apply,
            widget("default", "w", 1)
        )
        .await
        .code,
        201
    );
    let cond = |t: &str, st: &str| json!({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "status": {"conditions": [{"type": t, "status": st}]}});
    assert_eq!(
        patch(
            &c,
            &format!("{url}/status?fieldManager=one"),
            apply,
            cond("A", "True")
        )
        .await
        .code,
        200
    );
    let both = patch(
        &c,
        &format!("{url}/status?fieldManager=two"),
        apply,
        cond("B", "False"),
    )
    .await;
    assert_eq!(
        both.body["status"]["conditions"],
        json!([{"type": "A", "status": "True"}, {"type": "B", "status": "False"}])
    );
    let clash = patch(
        &c,
        &format!("{url}/status?fieldManager=one"),
        apply,
        cond("B", "True"),
    )
    .await;
    assert_eq!(clash.code, 409);
    assert_eq!(
        clash.body["message"],
        "Apply failed with 1 conflict: conflict with \"two\": .status.conditions[type=\"B\"].status"
    );
    let dup = patch(
        &c,
        &format!("{url}/status?fieldManager=three"),
        "application/merge-patch+json",
        json!({"status": {"conditions": [{"type": "A"}, {"type": "A"}]}}),
    )
    .await;
    assert_eq!(dup.code, 422, "{}", dup.text);
    cp.shutdown().await;
}

#[tokio::test]
async fn periodic_bookmarks_carry_the_newest_version() {
    let cp = kube_local::ControlPlane::builder()
        .watch_bookmark_interval(Duration::from_millis(300))
        .start()
        .await
        .expect("start");
    let c = admin(&cp).await;
    let rv = cp.store().resource_version();
    let writer = cp.store().clone();
    // A change of another kind moves the version the quiet configmap watch bookmarks.
    let secret = writer.create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}})).expect("secret");
    let secret_rv: u64 = secret["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    let watch = get(&c, &format!("/api/v1/namespaces/default/configmaps?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=1")).await;
    let bookmarks: Vec<Value> = watch
        .text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "BOOKMARK")
        .collect();
    assert!(!bookmarks.is_empty(), "{}", watch.text);
    let last: u64 = bookmarks
        .last()
        .and_then(|b| b["object"]["metadata"]["resourceVersion"].as_str())
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    assert!(last >= secret_rv, "bookmark {last} < {secret_rv}");
    assert_eq!(bookmarks[0]["object"]["kind"], "ConfigMap");
    cp.shutdown().await;
}

/// Metadata-only get, list and watch (kube's `*_metadata` calls) answer PartialObjectMetadata,
/// as the API server does: a metadata-only Secret watch carries no Secret data.
#[tokio::test]
async fn metadata_only_requests_get_partial_object_metadata() {
    let cp = start().await;
    let c = admin(&cp).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "labels": {"a": "b"}},
        "data": {"k": "c2VjcmV0"}});
    assert_eq!(
        post(&c, "/api/v1/namespaces/default/secrets", secret)
            .await
            .code,
        201
    );
    let request = kube::core::Request::new("/api/v1/namespaces/default/secrets");
    let one: Value = c
        .request(request.get_metadata("s", &Default::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(one["kind"], "PartialObjectMetadata");
    assert_eq!(one["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(one["metadata"]["labels"], json!({"a": "b"}));
    assert!(one.get("data").is_none(), "{one}");
    let list: Value = c
        .request(request.list_metadata(&ListParams::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(list["items"][0]["metadata"]["name"], "s");
    assert!(list["items"][0].get("data").is_none(), "{list}");
    let events = c
        .request_events::<Value>(
            request
                .watch_metadata(&WatchParams::default().timeout(5), "0")
                .unwrap(),
        )
        .await
        .unwrap();
    let first = std::pin::pin!(events).try_next().await.unwrap().unwrap();
    let WatchEvent::Added(object) = first else {
        panic!("expected ADDED, got {first:?}")
    };
    assert_eq!(object["kind"], "PartialObjectMetadata");
    assert!(object.get("data").is_none(), "{object}");
    // Without the Accept parameter, the whole object.
    let whole = get(&c, "/api/v1/namespaces/default/secrets/s").await;
    assert_eq!(whole.body["data"]["k"], "c2VjcmV0");
}
