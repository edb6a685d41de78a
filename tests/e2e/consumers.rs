//! The workloads that read the credential: listed in the status; an env reader that opted in
//! is restarted once per renewal, never by a restarted operator; a volume reader and a
//! workload without consent never are.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Resource;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::harness::*;
use inference_access::api::InferenceAccess;

const OPT_IN: &str = "inference-access.io/restart-on-renewal";

/// A Deployment reading the Secret's token through env or a volume, opted in or not.
fn deployment(name: &str, via_env: bool, opt_in: Option<&str>) -> serde_json::Value {
    let annotations: BTreeMap<&str, &str> = opt_in.map(|v| (OPT_IN, v)).into_iter().collect();
    let container = if via_env {
        json!({"name": "client", "image": "curlimages/curl",
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "token"}}}]})
    } else {
        json!({"name": "client", "image": "curlimages/curl",
            "volumeMounts": [{"name": "credential", "mountPath": "/var/run/credential"}]})
    };
    let volumes = if via_env {
        json!([])
    } else {
        json!([{"name": "credential", "secret": {"secretName": SECRET}}])
    };
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [container], "volumes": volumes}}}})
}

fn restarted_at(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("kubectl.kubernetes.io/restartedAt")
        .cloned()
}

fn generation(d: &Deployment) -> i64 {
    d.metadata.generation.unwrap_or_default()
}

async fn renew(env: &Env) -> Secret {
    let secrets = env.api::<Secret>();
    let before = secrets.get(SECRET).await.unwrap();
    let token = secret_text(&before, "token");
    let now = jiff::Timestamp::now().to_string();
    env.api::<InferenceAccess>()
        .patch(
            ACCESS,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"inference-access.io/renew-requested-at": now}}})),
        )
        .await
        .unwrap();
    wait_secret_key_changed(&secrets, "token", token).await
}

/// The note of the first Event with `reason` in the namespace, watched for until `WAIT`.
async fn wait_event(env: &Env, reason: &str) -> String {
    let events = watcher::watcher(env.api::<Event>(), watcher::Config::default())
        .applied_objects()
        .try_filter_map(|e| async move {
            Ok((e.reason.as_deref() == Some(reason)).then(|| e.note.unwrap_or_default()))
        });
    let mut events = std::pin::pin!(events);
    tokio::time::timeout(WAIT, events.try_next())
        .await
        .unwrap_or_else(|_| panic!("no {reason} event within {WAIT:?}"))
        .unwrap()
        .unwrap()
}

fn issued_at(secret: &Secret) -> String {
    secret.metadata.annotations.as_ref().unwrap()["inference-access.io/issued-at"].clone()
}

/// Waits until the env reader records that its Pods run with `secret`'s credential.
async fn wait_restarted_for(env: &Env, secret: &Secret) -> Deployment {
    wait_started_with(env, "env-reader", secret).await
}

/// Waits until the workload `name` records that its Pods run with `secret`'s credential.
async fn wait_started_with<K>(env: &Env, name: &str, secret: &Secret) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let wanted = issued_at(secret);
    let record = format!("started-with.inference-access.io/{ACCESS}");
    wait_for(&env.api::<K>(), name, move |d: Option<&K>| {
        d.and_then(|d| d.meta().annotations.as_ref())
            .and_then(|a| a.get(&record))
            .is_some_and(|at| at.parse::<jiff::Timestamp>().ok() == wanted.parse().ok())
    })
    .await
}

#[tokio::test]
async fn an_opted_in_env_reader_is_restarted_once_per_renewal_and_no_other_workload_is() {
    let mut env = Env::start().await;
    env.apply_example().await;
    env.wait_ready(ACCESS).await;
    env.apply_value(deployment("env-reader", true, Some(ACCESS)))
        .await;
    env.apply_value(deployment("volume-reader", false, Some("true")))
        .await;
    env.apply_value(deployment("no-consent", true, None)).await;
    let mut stateful = deployment("sts-reader", true, Some("true"));
    stateful["kind"] = json!("StatefulSet");
    env.apply_value(stateful).await;

    // The status lists all three, with how they read the Secret.
    let listed = wait_for(
        &env.api::<InferenceAccess>(),
        ACCESS,
        |a: Option<&InferenceAccess>| {
            a.and_then(|a| a.status.as_ref())
                .is_some_and(|s| s.consumers.len() == 4)
        },
    )
    .await;
    let consumers = listed.status.unwrap().consumers;
    let summary: Vec<(String, String, bool)> = consumers
        .iter()
        .map(|c| {
            (
                format!("{}/{}", c.kind, c.name),
                c.via.join(","),
                c.restart_on_renewal,
            )
        })
        .collect();
    let expected = [
        ("Deployment/env-reader", "env", true),
        ("Deployment/no-consent", "env", false),
        ("Deployment/volume-reader", "volume", false),
        ("StatefulSet/sts-reader", "env", true),
    ];
    let expected: Vec<(String, String, bool)> = expected
        .iter()
        .map(|(n, v, r)| ((*n).to_owned(), (*v).to_owned(), *r))
        .collect();
    assert_eq!(summary, expected);
    let deployments = env.api::<Deployment>();
    // Seen with the current credential: recorded, nothing restarted.
    let secret = env.api::<Secret>().get(SECRET).await.unwrap();
    let seen = wait_restarted_for(&env, &secret).await;
    assert_eq!(generation(&seen), 1, "a record is no rollout");
    // The StatefulSet's record too: a reader first seen after a renewal is recorded with the
    // new credential, not restarted, so renewing before it is recorded would test nothing.
    let sts: StatefulSet = wait_started_with(&env, "sts-reader", &secret).await;
    assert_eq!(sts.metadata.generation, Some(1), "a record is no rollout");
    for name in ["env-reader", "volume-reader", "no-consent"] {
        let d = deployments.get(name).await.unwrap();
        assert_eq!(restarted_at(&d), None, "{name}");
    }

    let renewed = renew(&env).await;
    let restarted = wait_restarted_for(&env, &renewed).await;
    assert!(restarted_at(&restarted).is_some());
    assert_eq!(generation(&restarted), 2, "one restart for one renewal");
    let sts: StatefulSet = wait_started_with(&env, "sts-reader", &renewed).await;
    assert_eq!(sts.metadata.generation, Some(2), "the StatefulSet too");
    let note = wait_event(&env, "WorkloadRestarted").await;
    assert!(
        note.contains("Deployment env-reader") && note.contains("through env"),
        "{note}"
    );
    assert!(
        !note.contains("volume-reader") && !note.contains("no-consent"),
        "{note}"
    );

    // A restarted operator finds the restart recorded: nothing again.
    env.stop_operator().await;
    let log = env.log_mark();
    env.start_operator();
    env.wait_log(log, &format!("reconciled access={ACCESS}"))
        .await;
    let after = deployments.get("env-reader").await.unwrap();
    assert_eq!(
        generation(&after),
        2,
        "no second restart for the same credential"
    );

    // The next renewal restarts it once more; the others are never touched.
    let again = renew(&env).await;
    let restarted = wait_restarted_for(&env, &again).await;
    assert_eq!(generation(&restarted), 3);
    for name in ["volume-reader", "no-consent"] {
        let d = deployments.get(name).await.unwrap();
        assert_eq!(restarted_at(&d), None, "{name}");
        assert_eq!(generation(&d), 1, "{name}");
    }
    // The status says which credential the env reader's Pods run with (to the second: a
    // status time has whole seconds).
    let wanted = issued_at(&again)
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second());
    wait_for(
        &env.api::<InferenceAccess>(),
        ACCESS,
        move |a: Option<&InferenceAccess>| {
            a.and_then(|a| a.status.as_ref()).is_some_and(|s| {
                s.consumers.iter().any(|c| {
                    c.name == "env-reader"
                        && c.started_with.as_ref().map(|t| t.0.as_second()) == wanted
                })
            })
        },
    )
    .await;
}
