//! The Deployment and StatefulSet stand-in: generation, rollouts of a new pod template, status,
//! owner references and the garbage collector.
// Helpers outside #[test] fns: a failed setup step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use kube_local::ControlPlane;
use serde_json::{Value, json};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/default/statefulsets";

fn workload(kind: &str, name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "labels": {"team": "a"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "client", "image": "busybox",
                    "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "cred", "key": "token"}}}]}]}}}})
}

fn pods(cp: &ControlPlane, app: &str) -> Vec<Value> {
    cp.store()
        .list("v1", "pods", Some("default"), &format!("app={app}"))
        .unwrap_or_default()
}

/// Waits until the workload reports its current generation rolled out to `replicas` Pods.
async fn rolled_out(c: &kube::Client, path: &str, replicas: i64) -> Value {
    eventually(Duration::from_secs(10), "rolled out", || async {
        let o = get(c, path).await.body;
        let s = &o["status"];
        (s["observedGeneration"] == o["metadata"]["generation"]
            && s["updatedReplicas"] == replicas
            && s["replicas"] == replicas
            && s["availableReplicas"] == replicas)
            .then_some(o)
    })
    .await
}

#[tokio::test]
async fn a_deployment_runs_its_template_and_a_new_template_rolls_new_pods() {
    let cp = start().await;
    let c = admin(&cp).await;
    let created = post(&c, DEPLOYMENTS, workload("Deployment", "web", 2)).await;
    assert_eq!(created.code, 201, "{}", created.text);
    assert_eq!(created.body["metadata"]["generation"], 1);
    assert!(created.body["status"].is_null());
    let path = format!("{DEPLOYMENTS}/web");
    let d = rolled_out(&c, &path, 2).await;
    let first = pods(&cp, "web");
    assert_eq!(first.len(), 2);
    let hash = first[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap()
        .to_owned();
    for p in &first {
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash.as_str());
        assert!(
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("web-{hash}-"))
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["name"],
            format!("web-{hash}")
        );
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["spec"]["containers"][0]["env"][0]["name"], "TOKEN");
    }
    // The ReplicaSet of this template, owned by the Deployment, as the deployment controller
    // makes it (what `helm install --wait` and `kubectl describe deployment` read).
    let rs = get(
        &c,
        &format!("/apis/apps/v1/namespaces/default/replicasets/web-{hash}"),
    )
    .await;
    assert_eq!(rs.code, 200, "{}", rs.text);
    let rs = rs.body;
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(
        rs["metadata"]["ownerReferences"][0]["uid"],
        d["metadata"]["uid"]
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"],
        json!({"app": "web", "pod-template-hash": hash})
    );
    assert_eq!(
        (
            &rs["status"]["replicas"],
            &rs["status"]["readyReplicas"],
            &rs["status"]["availableReplicas"]
        ),
        (&json!(2), &json!(2), &json!(2))
    );
    let available = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Available")
        .cloned()
        .unwrap();
    assert_eq!(available["status"], "True");

    // Metadata alone is no new generation and no rollout.
    let labelled = patch(
        &c,
        &path,
        "application/merge-patch+json",
        json!({"metadata": {"annotations": {"note": "x"}}}),
    )
    .await;
    assert_eq!(labelled.body["metadata"]["generation"], 1);

    // What `kubectl rollout restart` sends: a new template, new Pods, the old ones gone.
    let restarted = patch(
        &c,
        &path,
        "application/strategic-merge-patch+json",
        json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}}),
    )
    .await;
    assert_eq!(restarted.code, 200, "{}", restarted.text);
    assert_eq!(restarted.body["metadata"]["generation"], 2);
    rolled_out(&c, &path, 2).await;
    let second = pods(&cp, "web");
    assert_eq!(second.len(), 2);
    // The new template's ReplicaSet is revision 2; the old one is gone with its Pods.
    let sets = cp
        .store()
        .list("apps/v1", "replicasets", Some("default"), "app=web")
        .unwrap();
    assert_eq!(sets.len(), 1);
    assert_ne!(sets[0]["metadata"]["name"], format!("web-{hash}").as_str());
    assert_eq!(
        sets[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    for p in &second {
        assert_ne!(p["metadata"]["labels"]["pod-template-hash"], hash.as_str());
        assert_eq!(
            p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "2026-01-01T00:00:00Z"
        );
    }

    // Scaled down, then a deleted Pod is replaced.
    patch(
        &c,
        &path,
        "application/merge-patch+json",
        json!({"spec": {"replicas": 1}}),
    )
    .await;
    rolled_out(&c, &path, 1).await;
    let one = pods(&cp, "web");
    assert_eq!(one.len(), 1);
    let gone = one[0]["metadata"]["name"].as_str().unwrap().to_owned();
    delete(&c, &format!("/api/v1/namespaces/default/pods/{gone}"), None).await;
    eventually(Duration::from_secs(5), "a replacement pod", || async {
        let now = pods(&cp, "web");
        (now.len() == 1 && now[0]["metadata"]["name"] != gone.as_str()).then_some(())
    })
    .await;

    // A deleted ReplicaSet is made again.
    let rs_name = sets[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let rs_path = format!("/apis/apps/v1/namespaces/default/replicasets/{rs_name}");
    let old_uid = sets[0]["metadata"]["uid"].clone();
    delete(&c, &rs_path, None).await;
    eventually(Duration::from_secs(5), "the ReplicaSet again", || async {
        let rs = get(&c, &rs_path).await.body;
        (rs["metadata"]["uid"].is_string() && rs["metadata"]["uid"] != old_uid).then_some(())
    })
    .await;
    rolled_out(&c, &path, 1).await;

    // The garbage collector takes the ReplicaSet and Pods with the Deployment.
    assert_eq!(delete(&c, &path, None).await.code, 200);
    eventually(Duration::from_secs(5), "pods collected", || async {
        pods(&cp, "web").is_empty().then_some(())
    })
    .await;
    assert_eq!(get(&c, &rs_path).await.code, 404);
    cp.shutdown().await;
}

#[tokio::test]
async fn a_stateful_set_names_its_pods_by_ordinal_and_replaces_them_on_a_new_template() {
    let cp = start().await;
    let c = admin(&cp).await;
    let created = post(&c, STATEFULSETS, workload("StatefulSet", "db", 2)).await;
    assert_eq!(created.code, 201, "{}", created.text);
    let path = format!("{STATEFULSETS}/db");
    let s = rolled_out(&c, &path, 2).await;
    let mut names: Vec<String> = pods(&cp, "db")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1"]);
    let revision = s["status"]["updateRevision"].as_str().unwrap().to_owned();
    assert!(revision.starts_with("db-"));
    patch(
        &c,
        &path,
        "application/merge-patch+json",
        json!({"spec": {"template": {"metadata": {"annotations": {"r": "1"}}}}}),
    )
    .await;
    let s = rolled_out(&c, &path, 2).await;
    assert_ne!(s["status"]["updateRevision"], revision.as_str());
    for p in pods(&cp, "db") {
        assert_eq!(
            p["metadata"]["labels"]["controller-revision-hash"],
            s["status"]["updateRevision"]
        );
    }
    cp.shutdown().await;
}

#[tokio::test]
async fn workloads_are_checked_as_the_api_server_checks_them() {
    let cp = start().await;
    let c = admin(&cp).await;
    let mut unselected = workload("Deployment", "web", 1);
    unselected["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    let refused = post(&c, DEPLOYMENTS, unselected).await;
    assert_eq!(refused.code, 422, "{}", refused.text);
    assert!(
        refused
            .text
            .contains("`selector` does not match template `labels`")
    );
    let mut defaulted = workload("Deployment", "web", 1);
    defaulted["spec"]
        .as_object_mut()
        .unwrap()
        .remove("replicas");
    let created = post(&c, DEPLOYMENTS, defaulted).await;
    assert_eq!(created.body["spec"]["replicas"], 1);
    let moved = patch(
        &c,
        &format!("{DEPLOYMENTS}/web"),
        "application/merge-patch+json",
        json!({"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}}}}),
    )
    .await;
    assert_eq!(moved.code, 422, "{}", moved.text);
    assert!(moved.text.contains("field is immutable"));
    cp.shutdown().await;
}
