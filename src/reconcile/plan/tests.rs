//! The plan of an access: defaults, derived names, and every refusal.

use super::*;
use crate::fixtures::access;
use serde_json::json;

fn validate_default(access: &InferenceAccess) -> Result<Plan, SpecError> {
    validate(access, &Limits::default())
}

#[test]
fn the_defaults_plan_a_dedicated_service_account_and_a_policy() {
    let plan =
        validate_default(&access(json!({"inferenceService": {"name": "m"}})).build()).unwrap();
    assert_eq!(
        plan.identity,
        IdentityPlan::ServiceAccount {
            name: "client".into(),
            dedicated: true,
            request: TokenRequestInputs {
                service_account: "client".into(),
                audiences: vec!["istio-ingressgateway.istio-system.svc.cluster.local".into()],
                expiration_seconds: 3600,
            },
        }
    );
    assert_eq!(plan.secret.name, "client-credential");
    assert_eq!(plan.secret.kind, CredentialKind::Token);
    assert_eq!(
        plan.identity.user_id("ns").as_deref(),
        Some("system:serviceaccount:ns:client")
    );
    assert_eq!(plan.mesh.mode(), MeshMode::AuthorizationPolicy);
    assert_eq!(plan.access.owner.uid, "access-uid");
    assert_eq!(
        plan.gateway_url,
        "http://istio-ingressgateway.istio-system.svc.cluster.local"
    );
    assert!(plan.verification);
}

#[test]
fn a_dex_session_plans_a_session_secret_and_no_service_account() {
    let limits = Limits {
        allowed_gateways: vec!["http://gw.example".into()],
        ..Limits::default()
    };
    let plan = validate(
        &access(json!({
            "inferenceService": {"name": "m"},
            "auth": {"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "dex-user"}, "connector": "ldap"}},
            "gateway": {"url": "http://gw.example/"}
        }))
        .build(),
        &limits,
    )
    .unwrap();
    assert_eq!(plan.secret.kind, CredentialKind::Session);
    let IdentityPlan::DexUser {
        connector,
        login_url,
        user_id,
        credentials,
    } = &plan.identity
    else {
        panic!("{:?}", plan.identity)
    };
    assert_eq!(
        (
            *connector,
            login_url.as_str(),
            user_id,
            credentials.name.as_str()
        ),
        (Connector::Ldap, "http://gw.example/", &None, "dex-user")
    );
    assert_eq!(plan.gateway_url, "http://gw.example");
}

#[test]
fn names_derive_from_the_access_unless_set() {
    let named = validate_default(
        &access(json!({
            "inferenceService": {"name": "m"},
            "secretName": "mine",
            "serviceAccount": {"name": "default-editor"}
        }))
        .build(),
    )
    .unwrap();
    assert_eq!(named.secret.name, "mine");
    assert!(matches!(
        &named.identity,
        IdentityPlan::ServiceAccount { name, dedicated: false, .. } if name == "default-editor"
    ));
}

#[test]
fn a_renew_request_is_read_from_the_annotation() {
    let plan = validate_default(
        &access(json!({"inferenceService": {"name": "m"}}))
            .annotation(ANNOTATION_RENEW_REQUESTED_AT, "2026-01-01T00:05:00Z")
            .build(),
    )
    .unwrap();
    assert_eq!(plan.renew_request.as_deref(), Some("2026-01-01T00:05:00Z"));
}

#[test]
fn refusals_name_the_field() {
    let cases = [
        (
            json!({"inferenceService": {"name": ""}}),
            "inferenceService.name",
        ),
        (
            json!({"inferenceService": {"name": "m"}, "token": {"duration": "9m"}}),
            "minimum of 10m",
        ),
        (
            json!({"inferenceService": {"name": "m"}, "token": {"duration": "1h", "renewBefore": "1h"}}),
            "renewBefore",
        ),
        (
            json!({"inferenceService": {"name": "m"}, "token": {"audiences": []}}),
            "audiences",
        ),
        (
            json!({"inferenceService": {"name": "m", "template": {"spec": []}}}),
            "must be an object",
        ),
        (
            json!({"inferenceService": {"name": "m"}, "auth": {"type": "DexSession"}}),
            "dexSession is required",
        ),
        (
            json!({"inferenceService": {"name": "m"}, "mesh": {"sourcePrincipals": []}}),
            "sourcePrincipals",
        ),
        (
            json!({"inferenceService": {"name": "m"}, "gateway": {"url": "gateway:80"}}),
            "spec.gateway.url",
        ),
    ];
    for (spec, needle) in cases {
        let err = validate_default(&access(spec.clone()).build()).unwrap_err();
        assert!(err.message.contains(needle), "{spec}: {err}");
    }
}

#[test]
fn an_llm_inference_service_is_read_and_reached_with_openai_paths() {
    let llm = |extra: serde_json::Value| {
        let mut spec = json!({"inferenceService": {"name": "llm", "kind": "LLMInferenceService"}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        validate_default(&access(spec).build())
    };
    let plan = llm(json!({"mesh": {"mode": "Auto"}})).unwrap();
    assert_eq!(
        plan.target.kind,
        crate::api::TargetKind::LlmInferenceService
    );
    let endpoint = plan
        .target
        .endpoint("http://llm-ns.example.com", &plan.gateway_url)
        .unwrap();
    assert_eq!(
        endpoint.predict_url(),
        "http://istio-ingressgateway.istio-system.svc.cluster.local/v1/completions"
    );
    assert!(llm(json!({"mesh": {"mode": "Unmanaged"}})).is_ok());
    // A selector policy would select no LLM workload: refused, as is a template.
    let refused = llm(json!({})).unwrap_err();
    assert!(refused.message.contains("Auto"), "{}", refused.message);
    let mut templated = json!({"inferenceService": {"name": "llm", "kind": "LLMInferenceService",
        "template": {"spec": {}}}, "mesh": {"mode": "Auto"}});
    let refused = validate_default(&access(templated.take()).build()).unwrap_err();
    assert!(refused.message.contains("only read"), "{}", refused.message);
}

#[test]
fn a_model_in_another_namespace_is_planned_only_as_a_consumer_of_it() {
    let plan = |spec: serde_json::Value, limits: &Limits| validate(&access(spec).build(), limits);
    let allowed = Limits::default();
    let other = plan(
        json!({"inferenceService": {"name": "m", "namespace": "team-a"}}),
        &allowed,
    )
    .unwrap();
    assert_eq!(other.target.other_namespace.as_deref(), Some("team-a"));
    assert_eq!(other.target.namespace(&other.access), "team-a");
    // Its own namespace, named: no consent needed.
    let own = plan(
        json!({"inferenceService": {"name": "m", "namespace": "ns"}}),
        &allowed,
    )
    .unwrap();
    assert_eq!(own.target.other_namespace, None);
    let refused = |spec: serde_json::Value, limits: &Limits| plan(spec, limits).unwrap_err();
    let cases = [
        (
            json!({"inferenceService": {"name": "m", "namespace": "team-a", "template": {"spec": {}}}}),
            reason::INVALID_SPEC,
            "template",
        ),
        (
            json!({"inferenceService": {"name": "m", "namespace": "team-a", "kind": "LLMInferenceService"}, "mesh": {"mode": "Auto"}}),
            reason::INVALID_SPEC,
            "only an InferenceService",
        ),
        (
            json!({"inferenceService": {"name": "m", "namespace": "team-a"}, "mesh": {"mode": "Auto"}}),
            reason::INVALID_SPEC,
            "mesh.mode",
        ),
        (
            json!({"inferenceService": {"name": "m", "namespace": "team-a"}, "auth": {"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "s"}}}}),
            reason::INVALID_SPEC,
            "ServiceAccountToken",
        ),
    ];
    for (spec, why, needle) in cases {
        let error = refused(spec.clone(), &allowed);
        assert_eq!(error.reason, why, "{spec}");
        assert!(error.message.contains(needle), "{spec}: {}", error.message);
    }
    // An operator that cannot follow consents (a scoped install) refuses every such access.
    let scoped = Limits {
        cross_namespace: false,
        ..Limits::default()
    };
    let error = refused(
        json!({"inferenceService": {"name": "m", "namespace": "team-a"}}),
        &scoped,
    );
    assert_eq!(error.reason, reason::CROSS_NAMESPACE_NOT_AVAILABLE);
    assert!(
        plan(
            json!({"inferenceService": {"name": "m", "namespace": "ns"}}),
            &scoped
        )
        .is_ok()
    );
}
