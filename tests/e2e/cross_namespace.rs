//! A model in one namespace (A, the model owner's profile), an access in another (B, a team's
//! pipeline): nothing until A consents with a ReferenceGrant, a policy in A for exactly B's
//! identity after, nothing again once A revokes it or B deletes the access. And the Kubeflow
//! profile owner's own path (the sample's Python login) through the profile controller's
//! `ns-owner-access-istio`.

use std::time::{Duration, Instant};

use inference_access::api::{AuthorizationPolicy, InferenceAccess};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::harness::*;
use crate::serving_modes::{assert_refused_by, gateway_api_crds};

const MODEL: &str = "sklearn-iris";
const PIPELINE: &str = "pipeline";

/// The InferenceService in `namespace`, as its owner applies the sample.
async fn model_in(env: &Env, namespace: &str) {
    apply_object(
        env,
        json!({
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": MODEL, "namespace": namespace},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}},
        }),
    )
    .await;
}

/// An access in `namespace` to the model in `model_namespace`.
async fn access_in(env: &Env, namespace: &str, name: &str, model_namespace: &str, spec: Value) {
    let mut access = json!({
        "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"inferenceService": {"name": MODEL, "namespace": model_namespace}},
    });
    for (key, value) in spec.as_object().into_iter().flatten() {
        access["spec"][key] = value.clone();
    }
    Api::<InferenceAccess>::namespaced(env.client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(&access),
        )
        .await
        .unwrap();
}

/// A ReferenceGrant `name` in the model's namespace: InferenceAccesses of `from` may refer to
/// the InferenceService `model` (every one when `None`).
async fn grant(env: &Env, namespace: &str, name: &str, from: &str, model: Option<&str>) {
    let mut to = json!({"group": "serving.kserve.io", "kind": "InferenceService"});
    if let Some(model) = model {
        to["name"] = json!(model);
    }
    apply_object(env, json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"from": [{"group": "inference-access.io", "kind": "InferenceAccess", "namespace": from}], "to": [to]},
    }))
    .await;
}

async fn revoke(env: &Env, namespace: &str, name: &str) {
    let api = Api::<kube::api::DynamicObject>::namespaced_with(
        env.client.clone(),
        namespace,
        &inference_access::reconcile::consent::reference_grants(),
    );
    api.delete(name, &DeleteParams::default()).await.unwrap();
}

/// The policies the operator wrote in `namespace` for accesses of namespace `from`.
async fn policies_for(env: &Env, namespace: &str, from: &str) -> Vec<String> {
    Api::<AuthorizationPolicy>::namespaced(env.client.clone(), namespace)
        .list(
            &ListParams::default().labels(&format!("inference-access.io/access-namespace={from}")),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap_or_default())
        .collect()
}

async fn all_policies(env: &Env, namespace: &str) -> Vec<String> {
    let mut names: Vec<String> =
        Api::<AuthorizationPolicy>::namespaced(env.client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.metadata.name.unwrap_or_default())
            .collect();
    names.sort();
    names
}

/// Nothing the consent would give is there: no token, no Secret in B, no policy in A.
async fn assert_nothing_granted(env: &Env, a: &str, b: &str, name: &str) {
    let access = Api::<InferenceAccess>::namespaced(env.client.clone(), b)
        .get(name)
        .await
        .unwrap();
    assert_eq!(reason_of(&access, "Ready"), "ConsentPending");
    let status = access.status.unwrap();
    assert_eq!(status.token_expiration_time, None);
    assert_eq!(status.secret_name, None);
    let secret = Api::<Secret>::namespaced(env.client.clone(), b)
        .get_opt(&format!("{name}-credential"))
        .await
        .unwrap();
    assert!(secret.is_none(), "a Secret without consent: {secret:?}");
    assert_eq!(policies_for(env, a, b).await, Vec::<String>::new());
}

async fn create_namespace(env: &Env, name: &str) {
    env.apply_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        .await;
}

/// A scenario's own kube-local with the Gateway API CRDs, or `None` on a shared cluster: there
/// each scenario's operator keeps to its namespace and cannot follow a consent elsewhere (the
/// scoped refusal below runs there instead).
async fn consent_env(test: &str) -> Option<Env> {
    if skip_on_real_cluster(test) {
        return None;
    }
    Some(
        Env::start_with(
            kube_local::ControlPlane::builder().load_crds(&gateway_api_crds()),
            None,
        )
        .await,
    )
}

#[tokio::test]
async fn a_model_in_another_namespace_is_reached_only_with_its_owner_consent() {
    let Some(env) =
        consent_env("a_model_in_another_namespace_is_reached_only_with_its_owner_consent").await
    else {
        return;
    };
    let a = env.ns().to_owned();
    create_namespace(&env, &a).await;
    let (b, c) = (env.second_ns("team-b").await, env.second_ns("team-c").await);
    model_in(&env, &a).await;
    let before_in_a = all_policies(&env, &a).await;
    let accesses = Api::<InferenceAccess>::namespaced(env.client.clone(), &b);
    let no_probe = json!({"verification": {"enabled": false}});
    access_in(&env, &b, PIPELINE, &a, no_probe.clone()).await;
    wait_for(
        &accesses,
        PIPELINE,
        condition_reason("Ready", "ConsentPending"),
    )
    .await;
    assert_nothing_granted(&env, &a, &b, PIPELINE).await;

    // The attacker's hopes: a consent for namespace C, and one for another model. Each is a
    // ReferenceGrant change the operator follows (the reconcile it triggers is awaited).
    let mark = env.log_mark();
    grant(&env, &a, "team-c-may", &c, None).await;
    env.wait_log(mark, &format!("reconciled access={PIPELINE}"))
        .await;
    assert_nothing_granted(&env, &a, &b, PIPELINE).await;
    let mark = env.log_mark();
    grant(&env, &a, "another-model", &b, Some("another-model")).await;
    env.wait_log(mark, &format!("reconciled access={PIPELINE}"))
        .await;
    assert_nothing_granted(&env, &a, &b, PIPELINE).await;

    // A consents: a token in B for B's identity, a policy in A for exactly that identity.
    grant(&env, &a, "team-b-may", &b, Some(MODEL)).await;
    let ready = wait_for(&accesses, PIPELINE, is_ready()).await;
    let subject = format!("system:serviceaccount:{b}:{PIPELINE}");
    let secret = Api::<Secret>::namespaced(env.client.clone(), &b)
        .get(&format!("{PIPELINE}-credential"))
        .await
        .unwrap();
    assert_eq!(
        jwt_claims(&secret_text(&secret, "token"))["sub"],
        json!(subject)
    );
    let policy_name = format!("from-{b}.{PIPELINE}");
    assert_eq!(policies_for(&env, &a, &b).await, vec![policy_name.clone()]);
    let policy = Api::<AuthorizationPolicy>::namespaced(env.client.clone(), &a)
        .get(&policy_name)
        .await
        .unwrap();
    assert_eq!(policy.spec.rules[0].when[0].values, [subject]);
    assert_eq!(
        policy.spec.selector.unwrap().match_labels["serving.kserve.io/inferenceservice"],
        MODEL
    );
    assert!(
        reason_of(&ready, "AccessPolicyReady") == "PolicyApplied",
        "{:?}",
        ready.status
    );
    assert_eq!(policies_for(&env, &b, &b).await, Vec::<String>::new());
    assert_eq!(all_policies(&env, &c).await, Vec::<String>::new());

    // A revokes: the policy goes, the token with it, and the access says why.
    revoke(&env, &a, "team-b-may").await;
    wait_for(
        &accesses,
        PIPELINE,
        condition_reason("Ready", "ConsentPending"),
    )
    .await;
    wait_deleted(
        &Api::<AuthorizationPolicy>::namespaced(env.client.clone(), &a),
        &policy_name,
    )
    .await;
    assert_nothing_granted(&env, &a, &b, PIPELINE).await;

    // Consent again, then B deletes the access: nothing is left in A or B.
    grant(&env, &a, "team-b-may", &b, None).await;
    wait_for(&accesses, PIPELINE, is_ready()).await;
    accesses
        .delete(PIPELINE, &DeleteParams::default())
        .await
        .unwrap();
    wait_deleted(&accesses, PIPELINE).await;
    wait_deleted(
        &Api::<AuthorizationPolicy>::namespaced(env.client.clone(), &a),
        &policy_name,
    )
    .await;
    wait_deleted(
        &Api::<Secret>::namespaced(env.client.clone(), &b),
        &format!("{PIPELINE}-credential"),
    )
    .await;
    assert_eq!(all_policies(&env, &a).await, before_in_a);
}

#[tokio::test]
async fn an_access_cannot_take_over_a_policy_of_the_model_owner() {
    let Some(env) = consent_env("an_access_cannot_take_over_a_policy_of_the_model_owner").await
    else {
        return;
    };
    let a = env.ns().to_owned();
    create_namespace(&env, &a).await;
    let b = env.second_ns("team-b").await;
    model_in(&env, &a).await;
    // A's own policy, named as B's access's would be.
    let squatted = format!("from-{b}.squatter");
    let own = json!({"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [format!("cluster.local/ns/{a}/sa/own")]}}]}]});
    apply_object(
        &env,
        json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": squatted, "namespace": a},
            "spec": own,
        }),
    )
    .await;
    grant(&env, &a, "team-b-may", &b, None).await;
    access_in(
        &env,
        &b,
        "squatter",
        &a,
        json!({"verification": {"enabled": false}}),
    )
    .await;
    let accesses = Api::<InferenceAccess>::namespaced(env.client.clone(), &b);
    wait_for(
        &accesses,
        "squatter",
        condition_reason("AccessPolicyReady", "PolicyConflict"),
    )
    .await;
    let policies = Api::<AuthorizationPolicy>::namespaced(env.client.clone(), &a);
    let kept = policies.get(&squatted).await.unwrap();
    assert_eq!(serde_json::to_value(&kept.spec).unwrap(), own);
    assert!(kept.metadata.labels.unwrap_or_default().is_empty());
    // Deleting the access deletes nothing of A's.
    accesses
        .delete("squatter", &DeleteParams::default())
        .await
        .unwrap();
    wait_deleted(&accesses, "squatter").await;
    assert_eq!(
        serde_json::to_value(&policies.get(&squatted).await.unwrap().spec).unwrap(),
        own
    );
}

#[tokio::test]
async fn consent_opens_the_gateway_and_revocation_closes_it() {
    if skip_on_real_cluster("consent_opens_the_gateway_and_revocation_closes_it") {
        return;
    }
    let data =
        DataPath::start(kube_local::ControlPlane::builder().load_crds(&gateway_api_crds())).await;
    let env = &data.env;
    let a = env.ns().to_owned();
    let b = env.second_ns("team-b").await;
    model_in(env, &a).await;
    let accesses = Api::<InferenceAccess>::namespaced(env.client.clone(), &b);
    access_in(
        env,
        &b,
        PIPELINE,
        &a,
        json!({"gateway": {"url": data.gateway.url()}}),
    )
    .await;
    wait_for(
        &accesses,
        PIPELINE,
        condition_reason("Ready", "ConsentPending"),
    )
    .await;
    // doctor names the missing consent as the failing hop, and who gives it.
    let (ok, report, _) = doctor_in(env, &b, PIPELINE).await;
    assert!(!ok, "{report:#}");
    assert_eq!(report["failingHop"], "consent", "{report:#}");
    let consent = hop(&report, "consent");
    assert_eq!(consent["verdict"], "fail", "{report:#}");
    assert!(
        consent["finding"]
            .as_str()
            .is_some_and(|f| f.contains(&format!("no ReferenceGrant in namespace {a}"))),
        "{report:#}"
    );

    grant(env, &a, "team-b-may", &b, Some(MODEL)).await;
    let access = wait_for(
        &accesses,
        PIPELINE,
        condition_reason("EndpointVerified", "EndpointReachable"),
    )
    .await;
    let host = access.status.unwrap().host.unwrap();
    let secret = Api::<Secret>::namespaced(env.client.clone(), &b)
        .get(&format!("{PIPELINE}-credential"))
        .await
        .unwrap();
    let token = secret_text(&secret, "token");
    let answer = crate::serving_modes::predict(&data.gateway.url(), &host, Some(&token)).await;
    assert_eq!(
        (answer.status, answer.text()),
        (200, r#"{"predictions":[1,1]}"#.to_owned())
    );
    // With consent doctor follows the model into A: its pods, and the policy there that
    // admits B's identity.
    let (ok, report, _) = doctor_in(env, &b, PIPELINE).await;
    assert!(ok, "{report:#}");
    assert_eq!(hop(&report, "consent")["verdict"], "ok", "{report:#}");
    assert!(
        report["policies"].as_array().is_some_and(|p| p
            .iter()
            .any(|p| p["name"] == format!("{a}/from-{b}.{PIPELINE}"))),
        "the consumer's policy in A is listed: {report:#}"
    );

    // Revoked: the policy is gone within seconds, and the token B still holds is refused.
    let revoked = Instant::now();
    revoke(env, &a, "team-b-may").await;
    wait_deleted(
        &Api::<AuthorizationPolicy>::namespaced(env.client.clone(), &a),
        &format!("from-{b}.{PIPELINE}"),
    )
    .await;
    wait_for(
        &accesses,
        PIPELINE,
        condition_reason("Ready", "ConsentPending"),
    )
    .await;
    let took = revoked.elapsed();
    eprintln!("revocation: policy gone and access ConsentPending after {took:?}");
    assert!(took < Duration::from_secs(5), "revocation took {took:?}");
    let refused = crate::serving_modes::predict(&data.gateway.url(), &host, Some(&token)).await;
    assert_refused_by(&refused, 403, "sidecar", "B's token after revocation");
}

#[tokio::test]
async fn the_profile_owner_gets_the_prediction_with_the_sample_login() {
    if skip_on_real_cluster("the_profile_owner_gets_the_prediction_with_the_sample_login") {
        return;
    }
    let data = DataPath::start_with_login(
        kube_local::ControlPlane::builder(),
        mesh_local::LoginConfig {
            flavour: mesh_local::Flavour::AuthService,
            ..mesh_local::LoginConfig::default()
        },
    )
    .await;
    let env = &data.env;
    let ns = env.ns().to_owned();
    model_in(env, &ns).await;
    let host = wait_for(
        &env.api::<inference_access::api::InferenceService>(),
        MODEL,
        |isvc: Option<&inference_access::api::InferenceService>| {
            isvc.and_then(|i| i.status.as_ref()?.url.clone()).is_some()
        },
    )
    .await
    .status
    .unwrap()
    .url
    .unwrap()
    .trim_start_matches("http://")
    .to_owned();
    let session =
        mesh_local::model_server::sample_login(&data.gateway.url(), "user@example.com", "12341234")
            .await
            .unwrap();
    let cookie = session["session_cookie"]
        .as_str()
        .expect("a session cookie")
        .to_owned();
    let predict = async || {
        inference_access::gateway::client::GatewayClient::new()
            .unwrap()
            .send(
                http::Method::POST,
                &format!("{}/v1/models/{MODEL}:predict", data.gateway.url()),
                &[
                    ("host", host.as_str()),
                    ("cookie", cookie.as_str()),
                    ("content-type", "application/json"),
                ],
                Some(bytes::Bytes::from_static(
                    br#"{"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}"#,
                )),
            )
            .await
            .unwrap()
    };
    // Not yet a profile: Kubeflow's deny-all at the predictor's sidecar.
    assert_refused_by(
        &predict().await,
        403,
        "sidecar",
        "the owner before the profile",
    );
    // The namespace as Kubeflow's profile controller leaves it; its stand-in adds the owner's policy.
    let (label, value) = kube_local::PROFILE_LABEL;
    Api::<Namespace>::all(env.client.clone())
        .patch(
            &ns,
            &PatchParams::apply("profile-controller"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": ns, "labels": {label: value},
                "annotations": {kube_local::PROFILE_OWNER_ANNOTATION: "user@example.com"}}}),
            ),
        )
        .await
        .unwrap();
    wait_for(
        &env.api::<AuthorizationPolicy>(),
        "ns-owner-access-istio",
        |p: Option<&AuthorizationPolicy>| p.is_some(),
    )
    .await;
    let answer = predict().await;
    assert_eq!(
        (answer.status, answer.text()),
        (200, r#"{"predictions":[1,1]}"#.to_owned())
    );
}

#[tokio::test]
async fn an_operator_kept_to_listed_namespaces_refuses_models_elsewhere() {
    let mut env = Env::start_with(
        kube_local::ControlPlane::builder().load_crds(&gateway_api_crds()),
        None,
    )
    .await;
    let a = env.ns().to_owned();
    create_namespace(&env, &a).await;
    let b = env.second_ns("team-b").await;
    model_in(&env, &b).await;
    if real_cluster().is_none() {
        env.restart_operator_with(&["--namespaces", &a]).await;
    }
    // Even with B's consent: a consent the operator does not watch could be revoked unseen.
    let grants = Api::<kube::api::DynamicObject>::all_with(
        env.client.clone(),
        &inference_access::reconcile::consent::reference_grants(),
    );
    if grants
        .list_metadata(&ListParams::default().limit(1))
        .await
        .is_ok()
    {
        grant(&env, &b, "team-a-may", &a, None).await;
    }
    access_in(
        &env,
        &a,
        PIPELINE,
        &b,
        json!({"verification": {"enabled": false}}),
    )
    .await;
    let access = wait_for(
        &env.api::<InferenceAccess>(),
        PIPELINE,
        condition_reason("Ready", "CrossNamespaceNotAvailable"),
    )
    .await;
    assert_eq!(access.status.unwrap().token_expiration_time, None);
    let secret = env
        .api::<Secret>()
        .get_opt(&format!("{PIPELINE}-credential"))
        .await
        .unwrap();
    assert!(secret.is_none());
    assert_eq!(policies_for(&env, &b, &a).await, Vec::<String>::new());
}

/// The hop named `name` in a doctor report.
fn hop<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["hops"]
        .as_array()
        .and_then(|hops| hops.iter().find(|h| h["hop"] == name))
        .unwrap_or_else(|| panic!("no {name} hop: {report:#}"))
}
