//! docs/argocd-health.lua run the way Argo CD runs a resource-health script: the object as the
//! global `obj`, the script's return value a table with `status` and `message`. The interpreter
//! is Lua 5.1 (Argo CD uses gopher-lua, a Lua 5.1); JSON nulls arrive as nil, as in Argo CD.

use mlua::{Lua, LuaSerdeExt, SerializeOptions, Table};
use packaging_tests::repo_root;
use serde_json::{Value, json};

fn health(object: &Value) -> (String, String) {
    let script = std::fs::read_to_string(repo_root().join("docs/argocd-health.lua"))
        .unwrap_or_else(|err| panic!("cannot read docs/argocd-health.lua: {err}"));
    let lua = Lua::new();
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let result: Table = lua
        .to_value_with(object, options)
        .and_then(|obj| lua.globals().set("obj", obj))
        .and_then(|()| lua.load(&script).set_name("argocd-health.lua").eval())
        .unwrap_or_else(|err| panic!("the script failed: {err}"));
    let field = |name: &str| -> String {
        result
            .get::<Option<String>>(name)
            .unwrap_or_else(|err| panic!("hs.{name}: {err}"))
            .unwrap_or_else(|| panic!("hs.{name} is not set"))
    };
    (field("status"), field("message"))
}

fn condition(status: &str, reason: &str, message: &str, observed_generation: i64) -> Value {
    json!({
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": observed_generation,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    })
}

/// An InferenceAccess at `generation` with the given status.
fn access(generation: i64, status: Option<Value>) -> Value {
    let mut object = json!({
        "apiVersion": "inference-access.io/v1alpha1",
        "kind": "InferenceAccess",
        "metadata": {"name": "sklearn-iris-client", "namespace": "team", "generation": generation},
        "spec": {"inferenceService": {"name": "sklearn-iris"}},
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    object
}

fn status_with(observed_generation: i64, ready: Value) -> Value {
    json!({
        "observedGeneration": observed_generation,
        "url": "http://sklearn-iris.team.example.com",
        "secretName": "sklearn-iris-client-credential",
        "conditions": [
            {"type": "InferenceServiceReady", "status": "True", "reason": "Ready",
             "message": "ready", "observedGeneration": observed_generation},
            ready,
        ],
    })
}

fn pair(status: &str, message: &str) -> (String, String) {
    (status.to_owned(), message.to_owned())
}

#[test]
fn ready_at_the_current_generation_is_healthy() {
    let ready = condition(
        "True",
        "Ready",
        "the credential in the Secret reaches the InferenceService",
        3,
    );
    assert_eq!(
        health(&access(3, Some(status_with(3, ready)))),
        pair(
            "Healthy",
            "the credential in the Secret reaches the InferenceService"
        )
    );
}

#[test]
fn ready_for_an_older_generation_is_still_progressing() {
    let generation_behind = access(4, Some(status_with(3, condition("True", "Ready", "ok", 3))));
    assert_eq!(
        health(&generation_behind),
        pair(
            "Progressing",
            "Waiting for the operator to observe generation 4"
        )
    );
    // The status is current but the Ready condition was computed for an older spec.
    let condition_behind = access(4, Some(status_with(4, condition("True", "Ready", "ok", 3))));
    assert_eq!(
        health(&condition_behind),
        pair(
            "Progressing",
            "Waiting for the operator to observe generation 4"
        )
    );
    // Without any observedGeneration nothing proves the status is current.
    let mut ready = condition("True", "Ready", "ok", 1);
    ready["observedGeneration"] = Value::Null;
    let mut status = status_with(1, ready);
    status["observedGeneration"] = Value::Null;
    assert_eq!(
        health(&access(1, Some(status))),
        pair(
            "Progressing",
            "Waiting for the operator to observe generation 1"
        )
    );
}

#[test]
fn a_new_object_without_status_is_progressing() {
    assert_eq!(
        health(&access(1, None)),
        pair(
            "Progressing",
            "Waiting for the inference-access operator to report status"
        )
    );
    assert_eq!(
        health(&access(
            1,
            Some(json!({"observedGeneration": 1, "conditions": []}))
        )),
        pair("Progressing", "Waiting for the Ready condition")
    );
}

#[test]
fn waiting_for_kserve_or_the_first_token_is_progressing() {
    for (status, reason) in [
        ("False", "InferenceServiceNotReady"),
        ("False", "WaitingForURL"),
        ("Unknown", "Pending"),
        ("Unknown", "TokenRequestFailed"),
    ] {
        let object = access(
            2,
            Some(status_with(2, condition(status, reason, "waiting", 2))),
        );
        assert_eq!(
            health(&object),
            pair("Progressing", &format!("{reason}: waiting")),
            "{reason}"
        );
    }
}

#[test]
fn problems_a_person_must_fix_are_degraded() {
    for reason in [
        "InvalidSpec",
        "InferenceServiceNotFound",
        "ServiceAccountNotFound",
        "SecretConflict",
        "TemplateConflict",
        "TokenRequestFailed",
        "PolicyConflict",
    ] {
        let message = "Secret sklearn-iris-client-credential exists and is not ours";
        let object = access(
            5,
            Some(status_with(5, condition("False", reason, message, 5))),
        );
        assert_eq!(
            health(&object),
            pair("Degraded", &format!("{reason}: {message}")),
            "{reason}"
        );
    }
}

#[test]
fn a_ready_condition_without_reason_or_message_still_gives_a_message() {
    let ready = json!({"type": "Ready", "status": "True", "observedGeneration": 1});
    assert_eq!(
        health(&access(1, Some(status_with(1, ready)))),
        pair("Healthy", "Ready")
    );
    let failed = json!({"type": "Ready", "status": "False", "observedGeneration": 1});
    assert_eq!(
        health(&access(1, Some(status_with(1, failed)))),
        pair("Degraded", "")
    );
}
