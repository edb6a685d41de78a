//! Behaviour that rests on the store's indexes and per-kind watch history: the garbage collector
//! over many owners, label-selected lists across namespaces and kinds, and watches that fall
//! behind or resume from old versions.
// Helpers outside #[test] fns: a failed setup step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::TryStreamExt;
use kube::api::{Api, WatchEvent, WatchParams};
use serde_json::{Value, json};

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";

fn owner_ref(owner: &Value, block: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "blockOwnerDeletion": block})
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap_or_default(),
                i["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn garbage_collection_of_dependents_of_many_owners() {
    let cp = start().await;
    let c = admin(&cp).await;
    const OWNERS: usize = 40;
    let mut owners = Vec::new();
    for i in 0..OWNERS {
        owners.push(
            post(&c, CMS, json!({"metadata": {"name": format!("owner-{i}")}}))
                .await
                .body,
        );
    }
    // Each owner has a dependent of its own, and shares one with the next owner.
    for i in 0..OWNERS {
        let (a, b) = (&owners[i], &owners[(i + 1) % OWNERS]);
        let own = post(&c, SECRETS, json!({"metadata": {"name": format!("own-{i}"), "ownerReferences": [owner_ref(a, false)]}})).await;
        assert_eq!(own.code, 201, "{}", own.text);
        let shared = post(&c, SECRETS, json!({"metadata": {"name": format!("shared-{i}"), "ownerReferences": [owner_ref(a, false), owner_ref(b, false)]}})).await;
        assert_eq!(shared.code, 201, "{}", shared.text);
    }
    // Deleting the even owners takes their own dependents; a shared one loses the reference to
    // the deleted owner and stays for the odd one.
    for i in (0..OWNERS).step_by(2) {
        assert_eq!(
            delete(&c, &format!("{CMS}/owner-{i}"), None).await.code,
            200
        );
    }
    for i in 0..OWNERS {
        let own = get(&c, &format!("{SECRETS}/own-{i}")).await;
        assert_eq!(own.code, if i % 2 == 0 { 404 } else { 200 }, "own-{i}");
        let shared = get(&c, &format!("{SECRETS}/shared-{i}")).await;
        assert_eq!(shared.code, 200, "shared-{i} has a live owner");
        let refs: Vec<&str> = shared.body["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        let odd = if i % 2 == 1 { i } else { (i + 1) % OWNERS };
        assert_eq!(refs, [format!("owner-{odd}")], "shared-{i}");
    }
    // Once every owner is gone, so is every dependent.
    for i in (1..OWNERS).step_by(2) {
        delete(&c, &format!("{CMS}/owner-{i}"), None).await;
    }
    let left = get(&c, SECRETS).await;
    assert_eq!(
        names(&left.body)
            .iter()
            .filter(|n| n.contains("own-") || n.contains("shared-"))
            .count(),
        0,
        "{}",
        left.text
    );
    // A dependent created for an owner that is already gone is collected at once.
    let orphan = post(
        &c,
        SECRETS,
        json!({"metadata": {"name": "late", "ownerReferences": [owner_ref(&owners[0], false)]}}),
    )
    .await;
    assert_eq!(orphan.code, 201);
    assert_eq!(get(&c, &format!("{SECRETS}/late")).await.code, 404);
    cp.shutdown().await;
}

#[tokio::test]
async fn foreground_deletion_goes_leaf_first_through_a_chain_and_waits_for_blockers() {
    let cp = start().await;
    let c = admin(&cp).await;
    let rv = cp.store().resource_version().to_string();
    let a = post(&c, CMS, json!({"metadata": {"name": "a"}})).await.body;
    let b = post(
        &c,
        CMS,
        json!({"metadata": {"name": "b", "ownerReferences": [owner_ref(&a, true)]}}),
    )
    .await
    .body;
    post(
        &c,
        CMS,
        json!({"metadata": {"name": "c", "ownerReferences": [owner_ref(&b, true)]}}),
    )
    .await;
    // Twenty more blocking dependents of a, one held by a finalizer.
    for i in 0..20 {
        let mut dep = json!({"metadata": {"name": format!("d{i}"), "ownerReferences": [owner_ref(&a, true)]}});
        if i == 7 {
            dep["metadata"]["finalizers"] = json!(["example.io/hold"]);
        }
        post(&c, SECRETS, dep).await;
    }
    let del = delete(
        &c,
        &format!("{CMS}/a"),
        Some(json!({"propagationPolicy": "Foreground"})),
    )
    .await;
    assert_eq!(del.code, 202, "{}", del.text);
    assert_eq!(get(&c, &format!("{CMS}/b")).await.code, 404);
    assert_eq!(get(&c, &format!("{CMS}/c")).await.code, 404);
    assert_eq!(
        get(&c, &format!("{CMS}/a")).await.code,
        200,
        "d7 still blocks a"
    );
    let d7 = get(&c, &format!("{SECRETS}/d7")).await;
    assert!(
        d7.body["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        d7.text
    );
    patch(
        &c,
        &format!("{SECRETS}/d7"),
        "application/merge-patch+json",
        json!({"metadata": {"finalizers": null}}),
    )
    .await;
    assert_eq!(get(&c, &format!("{CMS}/a")).await.code, 404);
    // Watches saw the chain go leaf first.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), "default");
    let deleted: Vec<String> = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .expect("watch")
        .try_collect::<Vec<_>>()
        .await
        .expect("events")
        .into_iter()
        .filter_map(|e| match e {
            WatchEvent::Deleted(o) => o.metadata.name,
            _ => None,
        })
        .collect();
    assert_eq!(deleted, ["c", "b", "a"]);
    cp.shutdown().await;
}

#[tokio::test]
async fn label_selected_lists_span_namespaces_not_kinds() {
    let cp = start().await;
    let c = admin(&cp).await;
    for ns in ["ns-b", "ns-a", "ns-c"] {
        post(&c, "/api/v1/namespaces", namespace(ns)).await;
        for (name, team) in [("x1", "x"), ("y1", "y"), ("x2", "x")] {
            let cm = post(&c, &format!("/api/v1/namespaces/{ns}/configmaps"), json!({"metadata": {"name": name, "labels": {"team": team, "tier": if name == "x2" { "db" } else { "web" }}}})).await;
            assert_eq!(cm.code, 201, "{}", cm.text);
        }
        // Another kind with the same labels never shows up in configmap lists.
        post(
            &c,
            &format!("/api/v1/namespaces/{ns}/secrets"),
            json!({"metadata": {"name": "x1", "labels": {"team": "x"}}}),
        )
        .await;
    }
    let x = get(&c, "/api/v1/configmaps?labelSelector=team%3Dx").await;
    assert_eq!(
        names(&x.body),
        [
            "ns-a/x1", "ns-a/x2", "ns-b/x1", "ns-b/x2", "ns-c/x1", "ns-c/x2"
        ]
    );
    let x_web = get(&c, "/api/v1/configmaps?labelSelector=team%3Dx,tier!%3Ddb").await;
    assert_eq!(names(&x_web.body), ["ns-a/x1", "ns-b/x1", "ns-c/x1"]);
    let both = get(
        &c,
        "/api/v1/configmaps?labelSelector=team%20in%20(y,x),tier%3Dweb",
    )
    .await;
    assert_eq!(
        names(&both.body),
        [
            "ns-a/x1", "ns-a/y1", "ns-b/x1", "ns-b/y1", "ns-c/x1", "ns-c/y1"
        ]
    );
    let in_b = get(
        &c,
        "/api/v1/namespaces/ns-b/configmaps?labelSelector=team%3Dx",
    )
    .await;
    assert_eq!(names(&in_b.body), ["ns-b/x1", "ns-b/x2"]);
    let by_name = get(
        &c,
        "/api/v1/configmaps?fieldSelector=metadata.name%3Dy1&labelSelector=team",
    )
    .await;
    assert_eq!(names(&by_name.body), ["ns-a/y1", "ns-b/y1", "ns-c/y1"]);
    let none = get(&c, "/api/v1/configmaps?labelSelector=team%3Dnobody").await;
    assert_eq!(names(&none.body), Vec::<String>::new());
    // Pages of a label-selected list across namespaces add up to the whole, in order.
    let mut paged = Vec::new();
    let mut path = "/api/v1/configmaps?labelSelector=team%3Dx&limit=4".to_string();
    loop {
        let page = get(&c, &path).await;
        paged.extend(names(&page.body));
        match page.body["metadata"]["continue"].as_str() {
            Some(token) => {
                assert_eq!(page.body["metadata"]["remainingItemCount"], 2);
                path =
                    format!("/api/v1/configmaps?labelSelector=team%3Dx&limit=4&continue={token}");
            }
            None => break,
        }
    }
    assert_eq!(paged, names(&x.body));
    // Relabelled and deleted objects leave the selection.
    patch(
        &c,
        "/api/v1/namespaces/ns-a/configmaps/x1",
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"team": "y"}}}),
    )
    .await;
    delete(&c, "/api/v1/namespaces/ns-c/configmaps/x2", None).await;
    let x = get(&c, "/api/v1/configmaps?labelSelector=team%3Dx").await;
    assert_eq!(names(&x.body), ["ns-a/x2", "ns-b/x1", "ns-b/x2", "ns-c/x1"]);
    let y = get(
        &c,
        "/api/v1/namespaces/ns-a/configmaps?labelSelector=team%3Dy",
    )
    .await;
    assert_eq!(names(&y.body), ["ns-a/x1", "ns-a/y1"]);
    // A label-selected watch's initial state comes from the same selection.
    let initial = get(
        &c,
        "/api/v1/configmaps?watch=true&labelSelector=team%3Dx&timeoutSeconds=1",
    )
    .await;
    let added: Vec<String> = initial
        .text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "ADDED")
        .map(|e| {
            format!(
                "{}/{}",
                e["object"]["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default(),
                e["object"]["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(added, names(&x.body));
    cp.shutdown().await;
}

#[tokio::test]
async fn watch_history_is_kept_per_kind() {
    let cp = kube_local::ControlPlane::builder()
        .watch_history(20)
        .start()
        .await
        .expect("start");
    let c = admin(&cp).await;
    let quiet_rv = cp.store().resource_version();
    post(&c, CMS, json!({"metadata": {"name": "quiet"}})).await;
    // Much churn of another kind does not push the configmaps' changes out.
    post(&c, SECRETS, json!({"metadata": {"name": "busy"}})).await;
    for i in 0..60 {
        patch(
            &c,
            &format!("{SECRETS}/busy"),
            "application/merge-patch+json",
            json!({"data": {"n": b64(&i.to_string())}}),
        )
        .await;
    }
    let resumed = get(
        &c,
        &format!("{CMS}?watch=true&resourceVersion={quiet_rv}&timeoutSeconds=1"),
    )
    .await;
    let first: Value =
        serde_json::from_str(resumed.text.lines().next().unwrap_or_default()).expect("event");
    assert_eq!(
        (
            first["type"].as_str(),
            first["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("quiet"))
    );
    // The busy kind's own early versions are gone: a resume from before them gets 410.
    let gone = get(
        &c,
        &format!("{SECRETS}?watch=true&resourceVersion={quiet_rv}&timeoutSeconds=1"),
    )
    .await;
    let ev: Value =
        serde_json::from_str(gone.text.lines().next().unwrap_or_default()).expect("event");
    assert_eq!(
        (ev["type"].as_str(), ev["object"]["code"].as_i64()),
        (Some("ERROR"), Some(410))
    );
    // So does a continue token of that kind from before the window.
    for i in 0..3 {
        post(&c, SECRETS, json!({"metadata": {"name": format!("s{i}")}})).await;
    }
    let page = get(&c, &format!("{SECRETS}?limit=1")).await;
    let token = page.body["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_string();
    for i in 0..25 {
        patch(
            &c,
            &format!("{SECRETS}/busy"),
            "application/merge-patch+json",
            json!({"data": {"m": b64(&i.to_string())}}),
        )
        .await;
    }
    let expired = get(&c, &format!("{SECRETS}?limit=1&continue={token}")).await;
    assert_eq!(expired.code, 410, "{}", expired.text);
    cp.shutdown().await;
}

/// A watch that falls further behind its kind's changes than the history keeps is ended (its
/// next change is gone), and resuming from the last version it saw gets 410, so the client
/// relists; the server held nothing for it meanwhile.
#[tokio::test]
async fn a_watcher_that_falls_behind_the_history_is_ended_and_told_to_relist() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cp = kube_local::ControlPlane::builder()
        .watch_history(10)
        .start()
        .await
        .expect("start");
    let c = admin(&cp).await;
    for i in 0..50 {
        post(&c, CMS, json!({"metadata": {"name": format!("cm{i}")}})).await;
    }
    let rv = cp.store().resource_version();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", cp.port()))
        .await
        .expect("connect");
    let req = format!(
        "GET {CMS}?watch=true&resourceVersion={rv}&timeoutSeconds=30 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
        cp.admin_token()
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    // The watch is live once it has passed this marker.
    let marker = post(&c, CMS, json!({"metadata": {"name": "marker"}})).await;
    let marker_rv = marker.body["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"marker\"") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("the marker arrives")
            .expect("read");
        assert!(
            n > 0,
            "watch ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&chunk[..n]);
    }
    // Fifty-one deletions in one transaction: the watch cannot read any of them before the
    // window of ten has moved past them.
    let gone = delete(&c, CMS, None).await;
    assert_eq!(gone.code, 200, "{}", gone.text);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
        .await
        .expect("the watch ends")
        .expect("read");
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("DELETED"), "no partial replay: {rest}");
    let resumed = get(
        &c,
        &format!("{CMS}?watch=true&resourceVersion={marker_rv}&timeoutSeconds=1"),
    )
    .await;
    let ev: Value =
        serde_json::from_str(resumed.text.lines().next().unwrap_or_default()).expect("event");
    assert_eq!(
        (ev["type"].as_str(), ev["object"]["code"].as_i64()),
        (Some("ERROR"), Some(410))
    );
    cp.shutdown().await;
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}
