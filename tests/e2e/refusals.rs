//! Bad inputs, each refused clearly: at `kubectl apply` by the CRD's schema and CEL rules (as
//! the API server words it), or by the operator's plan with a condition reason. Nothing here is
//! retried and nothing panics; every row names the message a person acts on.

use inference_access::api::InferenceAccess;
use inference_access::reconcile::limits::Limits;
use inference_access::reconcile::plan;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::harness::*;

enum Expect {
    /// Refused at apply (422) with a message containing this.
    Apply(&'static str),
    /// Accepted by the API server, refused by the operator with this condition reason and a
    /// message containing the text.
    Reason(&'static str, &'static str),
}

use Expect::{Apply, Reason};

fn isvc() -> Value {
    json!({"name": "sklearn-iris"})
}

fn template() -> Value {
    json!({"name": "sklearn-iris", "template": {"spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}}}})
}

/// A spec with `field` set to `value` on the sample's access.
fn with(field: &str, value: Value) -> Value {
    let mut spec = json!({"inferenceService": isvc()});
    let mut target = &mut spec;
    let parts: Vec<&str> = field.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if target.get(*part).is_none() {
            target[*part] = json!({});
        }
        target = &mut target[*part];
    }
    target[parts[parts.len() - 1]] = value;
    spec
}

fn dex(session: Value) -> Value {
    let mut dex_session = json!({"credentialsSecret": {"name": "dex-user"}});
    for (k, v) in session.as_object().into_iter().flatten() {
        dex_session[k] = v.clone();
    }
    json!({"inferenceService": isvc(), "auth": {"type": "DexSession", "dexSession": dex_session}})
}

fn long(n: usize) -> String {
    "a".repeat(n)
}

fn cases() -> Vec<(&'static str, Value, Expect)> {
    let gw = "http://istio-ingressgateway.istio-system.svc.cluster.local";
    let api = "https://kubernetes.default.svc.cluster.local";
    vec![
        // The access and its InferenceService.
        (
            "name-64",
            json!({"inferenceService": isvc()}),
            Apply("at most 63 characters"),
        ),
        (
            "isvc-upper",
            with("inferenceService.name", json!("Sklearn_Iris")),
            Apply("DNS-1035"),
        ),
        (
            "isvc-digit",
            with("inferenceService.name", json!("9model")),
            Apply("DNS-1035"),
        ),
        (
            "isvc-empty",
            with("inferenceService.name", json!("")),
            Apply("DNS-1035"),
        ),
        (
            "isvc-long",
            with("inferenceService.name", json!(long(64))),
            Apply("Too long"),
        ),
        (
            "isvc-missing",
            json!({"token": {"duration": "1h"}}),
            Apply("Required value"),
        ),
        (
            "isvc-number",
            with("inferenceService.name", json!(7)),
            Apply("must be of type string"),
        ),
        (
            "namespace-with-template",
            json!({"inferenceService": {"name": "sklearn-iris", "namespace": "team-a", "template": {"spec": {}}}}),
            Apply("a template creates the InferenceService in the access's own namespace"),
        ),
        (
            "namespace-llm",
            json!({"inferenceService": {"name": "sklearn-iris", "namespace": "team-a", "kind": "LLMInferenceService"}, "mesh": {"mode": "Auto"}}),
            Apply("only an InferenceService can be reached in another namespace"),
        ),
        (
            "namespace-upper",
            with("inferenceService.namespace", json!("Team_A")),
            Apply("must be a namespace name"),
        ),
        (
            "namespace-auto",
            json!({"inferenceService": {"name": "sklearn-iris", "namespace": "team-a"}, "mesh": {"mode": "Auto"}}),
            Reason("InvalidSpec", "mesh.mode AuthorizationPolicy"),
        ),
        (
            "template-not-object",
            with("inferenceService.template", json!({"spec": "x"})),
            Apply("must be of type object"),
        ),
        (
            "secret-upper",
            with("secretName", json!("My_Secret")),
            Apply("DNS-1123"),
        ),
        (
            "secret-dash",
            with("secretName", json!("-x")),
            Apply("DNS-1123"),
        ),
        (
            "secret-long",
            with("secretName", json!(long(254))),
            Apply("Too long"),
        ),
        (
            "sa-dash",
            with("serviceAccount.name", json!("-bad")),
            Apply("DNS-1123"),
        ),
        (
            "sa-upper",
            with("serviceAccount.name", json!("Default-Editor")),
            Apply("DNS-1123"),
        ),
        (
            "sa-long",
            with("serviceAccount.name", json!(long(254))),
            Apply("Too long"),
        ),
        // Durations: their form first, then their bounds.
        (
            "dur-abc",
            with("token.duration", json!("abc")),
            Apply("must be a Go duration"),
        ),
        (
            "dur-days",
            with("token.duration", json!("1d")),
            Apply("no days"),
        ),
        (
            "dur-negative",
            with("token.duration", json!("-1h")),
            Apply("must be a Go duration"),
        ),
        (
            "dur-empty",
            with("token.duration", json!("")),
            Apply("must be a Go duration"),
        ),
        (
            "dur-space",
            with("token.duration", json!("1h 30m")),
            Apply("must be a Go duration"),
        ),
        (
            "dur-huge",
            with("token.duration", json!("999999h")),
            Apply("must be a Go duration"),
        ),
        (
            "dur-number",
            with("token.duration", json!(3600)),
            Apply("must be of type string"),
        ),
        (
            "dur-short",
            with("token.duration", json!("9m59s")),
            Apply("at least 10m"),
        ),
        (
            "dur-5m",
            with("token.duration", json!("5m")),
            Apply("at least 10m"),
        ),
        (
            "dur-long-string",
            with("token.duration", json!(format!("1{}", "0".repeat(70)))),
            Apply("Too long"),
        ),
        (
            "renew-equal",
            json!({"inferenceService": isvc(), "token": {"duration": "1h", "renewBefore": "1h"}}),
            Apply("shorter than duration"),
        ),
        (
            "renew-longer",
            json!({"inferenceService": isvc(), "token": {"duration": "1h", "renewBefore": "2h"}}),
            Apply("shorter than duration"),
        ),
        (
            "renew-zero",
            json!({"inferenceService": isvc(), "token": {"duration": "1h", "renewBefore": "0s"}}),
            Apply("must be positive"),
        ),
        (
            "renew-days",
            with("token.renewBefore", json!("1d")),
            Apply("renewBefore must be a Go duration"),
        ),
        (
            "renew-word",
            with("token.renewBefore", json!("soon")),
            Apply("renewBefore must be a Go duration"),
        ),
        // Audiences: never the API server's, only the admin's.
        (
            "aud-none",
            with("token.audiences", json!([])),
            Apply("at least 1 items"),
        ),
        (
            "aud-empty",
            with("token.audiences", json!([""])),
            Apply("must not be empty strings"),
        ),
        (
            "aud-many",
            with(
                "token.audiences",
                json!(["a", "b", "c", "d", "e", "f", "g", "h", "i"]),
            ),
            Apply("at most 8 items"),
        ),
        (
            "aud-api",
            with("token.audiences", json!([api])),
            Reason("AudienceNotAllowed", "Kubernetes API credential"),
        ),
        (
            "aud-api-slash",
            with("token.audiences", json!([format!("{api}/")])),
            Reason("AudienceNotAllowed", "Kubernetes API credential"),
        ),
        (
            "aud-kubernetes",
            with("token.audiences", json!(["kubernetes"])),
            Reason("AudienceNotAllowed", "API server's own"),
        ),
        (
            "aud-svc",
            with("token.audiences", json!(["https://kubernetes.default.svc"])),
            Reason("AudienceNotAllowed", "API server's own"),
        ),
        (
            "aud-other",
            with("token.audiences", json!(["my-service"])),
            Reason("AudienceNotAllowed", "cluster admin allows"),
        ),
        (
            "aud-mixed",
            with(
                "token.audiences",
                json!(["istio-ingressgateway.istio-system.svc.cluster.local", api]),
            ),
            Reason("AudienceNotAllowed", "never minted"),
        ),
        // Where credentials go.
        (
            "gw-no-scheme",
            with("gateway.url", json!("localhost:8080")),
            Apply("http:// or https:// URL"),
        ),
        (
            "gw-ftp",
            with("gateway.url", json!("ftp://gw")),
            Apply("http:// or https:// URL"),
        ),
        (
            "gw-userinfo",
            with(
                "gateway.url",
                json!("http://user:pw@istio-ingressgateway.istio-system.svc.cluster.local"),
            ),
            Apply("without user info"),
        ),
        (
            "gw-space",
            with("gateway.url", json!("http://gw/ a")),
            Apply("spaces"),
        ),
        (
            "gw-long",
            with("gateway.url", json!(format!("{gw}/{}", long(2100)))),
            Apply("Too long"),
        ),
        (
            "gw-empty-host",
            with("gateway.url", json!("http://")),
            Apply("http:// or https:// URL"),
        ),
        (
            "gw-attacker",
            with("gateway.url", json!("http://attacker.example.com")),
            Reason("GatewayNotAllowed", "nothing is sent"),
        ),
        (
            "gw-https",
            with(
                "gateway.url",
                json!("https://istio-ingressgateway.istio-system.svc.cluster.local"),
            ),
            Reason("GatewayNotAllowed", "not a gateway"),
        ),
        (
            "gw-port",
            with("gateway.url", json!(format!("{gw}:8080"))),
            Reason("GatewayNotAllowed", "not a gateway"),
        ),
        (
            "gw-suffix",
            with("gateway.url", json!(format!("{gw}.evil.com"))),
            Reason("GatewayNotAllowed", "not a gateway"),
        ),
        (
            "gw-loopback",
            with("gateway.url", json!("http://127.0.0.1")),
            Reason("GatewayNotAllowed", "not a gateway"),
        ),
        (
            "gw-bad-port",
            with("gateway.url", json!("http://gw:99999")),
            Reason("InvalidSpec", "invalid port"),
        ),
        // Dex sessions.
        (
            "dex-missing",
            with("auth.type", json!("DexSession")),
            Apply("dexSession is required"),
        ),
        (
            "auth-unknown",
            with("auth.type", json!("Basic")),
            Apply("Unsupported value"),
        ),
        (
            "dex-login-url",
            dex(json!({"loginURL": "kubeflow"})),
            Apply("http:// or https:// URL"),
        ),
        (
            "dex-login-userinfo",
            dex(json!({"loginURL": format!("http://u:p@{}", &gw[7..])})),
            Apply("without user info"),
        ),
        (
            "dex-login-attacker",
            dex(json!({"loginURL": "https://login.attacker.example.com"})),
            Reason("GatewayNotAllowed", "loginURL"),
        ),
        (
            "dex-gateway-attacker",
            json!({"inferenceService": isvc(), "gateway": {"url": "http://attacker.example.com"}, "auth": {"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "dex-user"}}}}),
            Reason("GatewayNotAllowed", "spec.gateway.url"),
        ),
        (
            "dex-secret-name",
            dex(json!({"credentialsSecret": {"name": "Bad_Name"}})),
            Apply("DNS-1123"),
        ),
        (
            "dex-same-keys",
            dex(
                json!({"credentialsSecret": {"name": "prod-db", "usernameKey": "password", "passwordKey": "password"}}),
            ),
            Apply("must differ"),
        ),
        (
            "dex-key-slash",
            dex(json!({"credentialsSecret": {"name": "dex-user", "usernameKey": "a/b"}})),
            Apply("must be a Secret key"),
        ),
        (
            "dex-key-empty",
            dex(json!({"credentialsSecret": {"name": "dex-user", "passwordKey": ""}})),
            Apply("must be a Secret key"),
        ),
        (
            "dex-no-secret",
            json!({"inferenceService": isvc(), "auth": {"type": "DexSession", "dexSession": {"connector": "local"}}}),
            Apply("Required value"),
        ),
        (
            "dex-connector",
            dex(json!({"connector": "saml"})),
            Apply("Unsupported value"),
        ),
        (
            "dex-user-star",
            dex(json!({"userID": "*"})),
            Apply("no '*'"),
        ),
        (
            "dex-user-prefix",
            dex(json!({"userID": "admin*"})),
            Apply("no '*'"),
        ),
        (
            "dex-user-space",
            dex(json!({"userID": "a b"})),
            Apply("no spaces"),
        ),
        (
            "dex-user-empty",
            dex(json!({"userID": ""})),
            Apply("at least 1 chars"),
        ),
        // Holes in a policy.
        (
            "mode-unknown",
            with("mesh.mode", json!("Off")),
            Apply("Unsupported value"),
        ),
        (
            "probe-star",
            with("mesh.probePaths", json!(["*"])),
            Apply("exact paths"),
        ),
        (
            "probe-prefix",
            with("mesh.probePaths", json!(["/v1/models/*"])),
            Apply("exact paths"),
        ),
        (
            "probe-suffix",
            with("mesh.probePaths", json!(["*:predict"])),
            Apply("exact paths"),
        ),
        (
            "probe-predict",
            with(
                "mesh.probePaths",
                json!(["/v1/models/sklearn-iris:predict"]),
            ),
            Apply("model APIs"),
        ),
        (
            "probe-v2",
            with("mesh.probePaths", json!(["/v2/health/ready"])),
            Apply("model APIs"),
        ),
        (
            "probe-v1",
            with("mesh.probePaths", json!(["/v1"])),
            Apply("model APIs"),
        ),
        (
            "probe-openai",
            with("mesh.probePaths", json!(["/openai/v1/completions"])),
            Apply("model APIs"),
        ),
        (
            "probe-dotdot",
            with(
                "mesh.probePaths",
                json!(["/healthz/../v1/models/m:predict"]),
            ),
            Apply("exact paths"),
        ),
        (
            "probe-relative",
            with("mesh.probePaths", json!(["healthz"])),
            Apply("exact paths"),
        ),
        (
            "probe-query",
            with("mesh.probePaths", json!(["/ready?x=1"])),
            Apply("exact paths"),
        ),
        (
            "probe-encoded",
            with("mesh.probePaths", json!(["/v1%2Fmodels"])),
            Apply("exact paths"),
        ),
        (
            "probe-many",
            with(
                "mesh.probePaths",
                json!((0..17).map(|i| format!("/p{i}")).collect::<Vec<_>>()),
            ),
            Apply("at most 16 items"),
        ),
        (
            "principal-star",
            with("mesh.sourcePrincipals", json!(["*"])),
            Apply("exact mesh identities"),
        ),
        (
            "principal-prefix",
            with("mesh.sourcePrincipals", json!(["cluster.local/ns/*"])),
            Apply("exact mesh identities"),
        ),
        (
            "principal-space",
            with("mesh.sourcePrincipals", json!(["a b"])),
            Apply("exact mesh identities"),
        ),
        (
            "principal-none",
            with("mesh.sourcePrincipals", json!([])),
            Apply("at least 1 items"),
        ),
        (
            "principal-empty",
            with("mesh.sourcePrincipals", json!([""])),
            Apply("at least 1 chars"),
        ),
        (
            "principal-other",
            with(
                "mesh.sourcePrincipals",
                json!(["cluster.local/ns/mallory/sa/proxy"]),
            ),
            Reason("MeshSettingNotAllowed", "gateway identity"),
        ),
        (
            "header-upper",
            with("mesh.userIdHeader", json!("Kubeflow-UserID")),
            Apply("lowercase HTTP header"),
        ),
        (
            "header-space",
            with("mesh.userIdHeader", json!("kubeflow userid")),
            Apply("lowercase HTTP header"),
        ),
        (
            "header-forgeable",
            with("mesh.userIdHeader", json!("x-user")),
            Reason("MeshSettingNotAllowed", "any caller could set it"),
        ),
        (
            "sidecar-referenced",
            with("mesh.mode", json!("DisableSidecarInjection")),
            Apply("needs spec.inferenceService.template"),
        ),
        // Metadata the operator copies onto objects it writes.
        (
            "label-key",
            json!({"inferenceService": isvc(), "secretTemplate": {"labels": {"bad key!": "x"}}}),
            Reason("InvalidSpec", "not a valid label or annotation key"),
        ),
        (
            "label-value",
            json!({"inferenceService": isvc(), "secretTemplate": {"labels": {"team": "-x"}}}),
            Reason("InvalidSpec", "label values"),
        ),
        (
            "label-value-long",
            json!({"inferenceService": isvc(), "secretTemplate": {"labels": {"team": long(64)}}}),
            Reason("InvalidSpec", "label values"),
        ),
        (
            "annotation-key",
            json!({"inferenceService": template(), "mesh": {"mode": "AuthorizationPolicy"}, "secretTemplate": {"annotations": {"/x": "y"}}}),
            Reason("InvalidSpec", "not a valid label or annotation key"),
        ),
        (
            "template-label",
            json!({"inferenceService": {"name": "sklearn-iris", "template": {"metadata": {"labels": {"a/b/c": "x"}}, "spec": {}}}}),
            Reason("InvalidSpec", "spec.inferenceService.template.metadata"),
        ),
        (
            "labels-many",
            json!({"inferenceService": isvc(), "secretTemplate": {"labels": (0..65).map(|i| (format!("l{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}}),
            Apply("at most 64"),
        ),
        (
            "verification-type",
            with("verification.enabled", json!("yes")),
            Apply("must be of type boolean"),
        ),
    ]
}

#[tokio::test]
async fn every_bad_input_is_refused_with_a_message_a_person_can_act_on() {
    let env = Env::start().await;
    env.apply_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .await;
    let api: Api<InferenceAccess> = env.api();
    let cases = cases();
    assert!(cases.len() >= 70, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (name, spec, expect) in cases {
        // 64 characters that are still a valid object name (labels of at most 63).
        let object_name = if name == "name-64" {
            format!("{}.{}", long(40), long(23))
        } else {
            name.to_owned()
        };
        let object = json!({
            "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
            "metadata": {"name": object_name, "namespace": env.ns()}, "spec": spec,
        });
        let applied = api
            .patch(
                &object_name,
                &PatchParams::apply("refusals").force(),
                &Patch::Apply(&object),
            )
            .await;
        let outcome = match (expect, applied) {
            (Apply(needle), Err(kube::Error::Api(status))) => (status.code == 422
                && status.message.contains(needle))
            .then_some(())
            .ok_or(format!(
                "expected 422 with {needle:?}, got {} {}",
                status.code, status.message
            )),
            (Apply(needle), Ok(_)) => Err(format!("accepted; expected a 422 with {needle:?}")),
            (Reason(reason, needle), Ok(stored)) => {
                match plan::validate(&stored, &Limits::default()) {
                    Err(refusal)
                        if refusal.reason == reason && refusal.message.contains(needle) =>
                    {
                        Ok(())
                    }
                    Err(refusal) => Err(format!(
                        "expected {reason} with {needle:?}, got {} {}",
                        refusal.reason, refusal.message
                    )),
                    Ok(_) => Err(format!("planned; expected {reason}")),
                }
            }
            (_, Err(err)) => Err(format!("refused at apply: {err}")),
        };
        if let Err(why) = outcome {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_refused_spec_is_reported_once() {
    if skip_on_real_cluster("refused_specs_are_reported_once") {
        return;
    }
    let env = Env::start().await;
    env.apply_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .await;
    let mark = env.plane().requests().mark();
    env.apply_value(json!({
        "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
        "metadata": {"name": "far-away", "namespace": NS},
        "spec": {"inferenceService": isvc(), "gateway": {"url": "http://attacker.example.com"}}
    }))
    .await;
    let access = wait_for(
        &env.api::<InferenceAccess>(),
        "far-away",
        condition_reason("Ready", "GatewayNotAllowed"),
    )
    .await;
    assert_eq!(reason_of(&access, "CredentialIssued"), "GatewayNotAllowed");
    // One status write and one Warning Event; then the access waits for its spec to change.
    let by_operator = |r: &kube_local::Request| r.caller == operator_caller();
    wait_request(env.plane(), mark, |r| {
        by_operator(r) && r.resource == "events"
    })
    .await;
    let writes = env.plane().requests().writes_since(mark);
    let status_writes = writes
        .iter()
        .filter(|r| by_operator(r) && r.name.as_deref() == Some("far-away"))
        .count();
    let events = writes
        .iter()
        .filter(|r| by_operator(r) && r.resource == "events")
        .count();
    assert_eq!((status_writes, events), (1, 1), "{writes:#?}");
}
