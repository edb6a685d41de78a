//! The `status` report, as people and scripts read it.

use super::*;
use crate::fixtures::ts;

fn report() -> Report {
    Report {
        name: "sklearn-iris-client".into(),
        namespace: "kubeflow-user-example-com".into(),
        conditions: vec![ConditionView {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Ready".into(),
            message: "the credential in the Secret reaches the InferenceService".into(),
            last_transition_time: ts("2026-11-27T19:00:00Z"),
        }],
        inference_service: InferenceServiceView {
            name: "sklearn-iris".into(),
            found: true,
            ready: Some(true),
            url: Some("http://sklearn-iris.kubeflow-user-example-com.example.com".into()),
            ..Default::default()
        },
        credential: CredentialView {
            secret_name: "sklearn-iris-client-credential".into(),
            secret_found: true,
            keys: vec!["authorization".into(), "token".into()],
            service_account: Some("sklearn-iris-client".into()),
            expires_at: Some(ts("2026-11-27T21:00:00Z")),
            renewal_time: Some(ts("2026-11-27T20:40:00Z")),
            error: None,
        },
        policy: PolicyView {
            mode: "AuthorizationPolicy".into(),
            authorization_policy: Some("sklearn-iris-client".into()),
            found: Some(true),
            error: None,
        },
        consumers: vec![crate::api::Consumer {
            kind: "Deployment".into(),
            name: "client".into(),
            via: vec!["env".into()],
            restart_on_renewal: true,
            started_with: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(
                "2026-11-27T19:40:00Z",
            ))),
        }],
        events: vec![EventView {
            type_: "Normal".into(),
            reason: "Issued".into(),
            time: Some(ts("2026-11-27T19:58:00Z")),
            from: "inference-access".into(),
            note: "issued a token".into(),
        }],
    }
}

#[test]
fn human_report() {
    let text = human(&report(), ts("2026-11-27T20:00:00Z"));
    assert_eq!(
        text,
        "Name:       sklearn-iris-client\n\
         Namespace:  kubeflow-user-example-com\n\
         Conditions:\n  Ready: True, Reason: Ready, Message: the credential in the Secret reaches the InferenceService\n\
         InferenceService: sklearn-iris\n  Ready:  True\n  URL:    http://sklearn-iris.kubeflow-user-example-com.example.com\n\
         Credential:\n  ServiceAccount:  sklearn-iris-client\n\
         \x20 Expires:         2026-11-27T21:00:00Z (in 1h)\n\
         \x20 Renewal:         2026-11-27T20:40:00Z (in 40m)\n\
         \x20 Secret:          sklearn-iris-client-credential\n\
         \x20 Keys (values hidden): authorization, token\n\
         Access policy:\n  Mode:  AuthorizationPolicy\n  AuthorizationPolicy:  sklearn-iris-client (exists)\n\
         Consumers (workloads reading the Secret):\n  Deployment client (via env; restarted on renewal, runs the credential of 2026-11-27T19:40:00Z)\n\
         Events:\n  TYPE    REASON  AGE  FROM              MESSAGE\n  Normal  Issued  2m   inference-access  issued a token\n"
    );
}

#[test]
fn an_event_stamped_just_ahead_of_this_clock_is_0s_old_as_kubectl_shows_it() {
    let mut r = report();
    let now = ts("2026-11-27T20:00:00Z");
    r.events[0].time = Some(ts("2026-11-27T20:00:01Z"));
    r.events.push(EventView {
        time: None,
        ..r.events[0].clone()
    });
    let text = human(&r, now);
    assert!(
        text.contains("  Normal  Issued  0s         inference-access  issued a token\n"),
        "{text}"
    );
    assert!(
        text.contains("  Normal  Issued  <unknown>  inference-access  issued a token\n"),
        "{text}"
    );
    assert!(!text.contains("in 0s"), "{text}");
}

#[test]
fn human_report_of_a_fresh_access() {
    let mut r = report();
    r.conditions.clear();
    r.inference_service = InferenceServiceView {
        name: "m".into(),
        ..Default::default()
    };
    r.credential = CredentialView {
        secret_name: "s".into(),
        ..Default::default()
    };
    r.policy = PolicyView {
        mode: "Unmanaged".into(),
        ..Default::default()
    };
    r.events.clear();
    r.consumers.clear();
    let text = human(&r, ts("2026-11-27T20:00:00Z"));
    for needle in [
        "none yet: the operator has not reconciled",
        "InferenceService: m\n  Not found",
        "Expires:         -",
        "Secret:          s (not found)",
        "Mode:  Unmanaged\nConsumers (workloads reading the Secret):\n  <none>\nEvents:\n  <none>",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
}

#[test]
fn json_report_shape() {
    let value = serde_json::to_value(report()).unwrap();
    assert_eq!(
        value["credential"]["keys"],
        serde_json::json!(["authorization", "token"])
    );
    assert_eq!(value["credential"]["expiresAt"], "2026-11-27T21:00:00Z");
    assert_eq!(value["conditions"][0]["type"], "Ready");
    assert_eq!(value["inferenceService"]["ready"], true);
    assert_eq!(value["policy"]["found"], true);
}
