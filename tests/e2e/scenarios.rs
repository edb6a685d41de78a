//! The scenarios of the operator's life, each against its own control plane.

use std::time::Duration;

use inference_access::api::InferenceAccess;
use inference_access::api::{AuthorizationPolicy, InferenceService};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::wait::Condition;
use serde_json::json;

use crate::harness::*;

fn token_of(secret: &Secret) -> String {
    secret_text(secret, "token")
}

#[tokio::test]
async fn the_sample_end_to_end() {
    let env = Env::start().await;
    env.apply_example().await;
    let access = env.wait_ready(ACCESS).await;
    let status = access.status.clone().unwrap();
    assert_eq!(status.secret_name.as_deref(), Some(SECRET));
    assert_eq!(status.service_account_name.as_deref(), Some(ACCESS));

    // The templated InferenceService, owned by the access.
    let isvc = env
        .api::<InferenceService>()
        .get("sklearn-iris")
        .await
        .unwrap();
    assert_eq!(isvc.metadata.owner_references.unwrap()[0].name, ACCESS);
    let url = isvc.status.unwrap().url.unwrap();

    // The Secret: a token for the ingress audience, bound to this very Secret.
    let secret = env.api::<Secret>().get(SECRET).await.unwrap();
    let claims = jwt_claims(&token_of(&secret));
    assert_eq!(
        claims["aud"],
        json!(["istio-ingressgateway.istio-system.svc.cluster.local"])
    );
    assert_eq!(
        claims["sub"],
        json!(format!("system:serviceaccount:{}:{ACCESS}", env.ns()))
    );
    assert_eq!(claims["kubernetes.io"]["secret"]["name"], json!(SECRET));
    assert_eq!(
        claims["kubernetes.io"]["secret"]["uid"],
        json!(secret.metadata.uid.clone().unwrap())
    );
    assert_eq!(secret_text(&secret, "url"), url);
    let host = url.trim_start_matches("http://").to_owned();
    assert_eq!(secret_text(&secret, "host"), host);
    assert_eq!(
        secret_text(&secret, "predict-url"),
        "http://istio-ingressgateway.istio-system.svc.cluster.local/v1/models/sklearn-iris:predict"
    );
    assert_eq!(
        secret_text(&secret, "authorization"),
        format!("Bearer {}", token_of(&secret))
    );
    assert_eq!(
        secret_text(&secret, "expires-at"),
        status.token_expiration_time.unwrap().0.to_string()
    );

    // The policy, accepted by Istio's own schema (kube-local validates against it).
    let policy = env.api::<AuthorizationPolicy>().get(ACCESS).await.unwrap();
    assert_eq!(
        policy.spec.rules[0].when[0].values,
        [format!("system:serviceaccount:{}:{ACCESS}", env.ns())]
    );
    assert_eq!(reason_of(&access, "AccessPolicyReady"), "PolicyApplied");

    // Nothing in the status carries the token.
    let token = token_of(&secret);
    assert!(!serde_json::to_string(&access).unwrap().contains(&token));
}

#[tokio::test]
async fn renewal_mints_a_new_token_with_a_later_expiry() {
    let env = Env::start().await;
    env.apply_example().await;
    let api = env.api::<InferenceAccess>();
    env.wait_ready(ACCESS).await;
    let first = env.api::<Secret>().get(SECRET).await.unwrap();
    // Renew one second after issue.
    env.apply_value(json!({
        "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
        "metadata": {"name": ACCESS, "namespace": NS},
        "spec": {"inferenceService": {"name": "sklearn-iris"}, "token": {"duration": "10m", "renewBefore": "9m59s"}}
    }))
    .await;
    let first_token = token_of(&first);
    let renewed = wait_secret_key_changed(&env.api::<Secret>(), "token", first_token).await;
    // And once more, by the renewal time alone.
    let again = wait_secret_key_changed(&env.api::<Secret>(), "token", token_of(&renewed)).await;
    let expiry = |s: &Secret| {
        secret_text(s, "expires-at")
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    assert!(
        expiry(&renewed) < expiry(&first),
        "the 10m token replaced the 1h one"
    );
    assert!(
        expiry(&again) > expiry(&renewed),
        "each renewal expires later than the last"
    );
    let access = api.get(ACCESS).await.unwrap();
    assert_eq!(reason_of(&access, "CredentialIssued"), "Issued");
}

#[tokio::test]
async fn a_changed_status_url_reaches_the_secret() {
    if skip_on_real_cluster("a_changed_status_url_reaches_the_secret") {
        return;
    }
    let env = Env::start().await;
    env.apply_example().await;
    env.wait_ready(ACCESS).await;
    // KServe is reconfigured for path-based routing and republishes status.url.
    env.plane()
        .set_kserve_url_style(kube_local::UrlStyle::PathTemplate);
    let secret = wait_for(&env.api::<Secret>(), SECRET, |s: Option<&Secret>| {
        s.is_some_and(|s| secret_text(s, "host") == "example.com")
    })
    .await;
    assert_eq!(
        secret_text(&secret, "predict-url"),
        format!(
            "http://istio-ingressgateway.istio-system.svc.cluster.local/serving/{NS}/sklearn-iris/v1/models/sklearn-iris:predict"
        )
    );
}

#[tokio::test]
async fn deleting_the_access_deletes_everything_it_made() {
    let env = Env::start().await;
    env.apply_example().await;
    env.wait_ready(ACCESS).await;
    env.api::<InferenceAccess>()
        .delete(ACCESS, &DeleteParams::foreground())
        .await
        .unwrap();
    wait_deleted(&env.api::<Secret>(), SECRET).await;
    wait_deleted(&env.api::<ServiceAccount>(), ACCESS).await;
    wait_deleted(&env.api::<AuthorizationPolicy>(), ACCESS).await;
    wait_deleted(&env.api::<InferenceService>(), "sklearn-iris").await;
}

/// After the operator has seen the sample's access through since the log `mark`.
async fn wait_for_a_full_reconcile(env: &Env, mark: usize) {
    env.wait_log(mark, &format!("reconciled access={ACCESS}"))
        .await;
}

#[tokio::test]
async fn a_restarted_operator_resumes_without_minting_and_a_resync_writes_nothing() {
    if skip_on_real_cluster("a_restarted_operator_resumes_without_minting") {
        return;
    }
    let mut env = Env::start().await;
    env.apply_example().await;
    env.wait_ready(ACCESS).await;
    env.stop_operator().await;
    let mark = env.plane().requests().mark();
    let log = env.log_mark();
    env.start_operator();
    wait_for_a_full_reconcile(&env, log).await;
    let writes: Vec<_> = env
        .plane()
        .requests()
        .writes_since(mark)
        .into_iter()
        .filter(|r| {
            r.caller == operator_caller() && r.resource != "events" && r.resource != "leases"
        })
        .collect();
    assert!(
        writes.is_empty(),
        "a restarted operator must not write: {writes:#?}"
    );
}

/// One access per configuration (issue 9: verification on and off, DexSession,
/// DisableSidecarInjection, Unmanaged), converged, then the operator restarted: it reconciles
/// each again and sends no write at all, Events included. The verified ones reach the sample's
/// model through the gateway; the others skip verification (no other model is served here,
/// and Unmanaged leaves the sidecar's deny-all in place).
async fn a_restart_writes_nothing_in_any_configuration(builder: kube_local::Builder) {
    let mut data = DataPath::start(builder).await;
    dex_account(&data.env, "12341234").await;
    let model = json!({"name": "sklearn-iris"});
    let template = |name: &str| {
        json!({"name": name, "template": {"spec": {"predictor": {"model": {
            "modelFormat": {"name": "sklearn"},
            "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}}})
    };
    let off = json!({"enabled": false});
    let dex =
        json!({"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "dex-user"}}});
    let configurations = [
        (
            "verified",
            json!({"inferenceService": template("sklearn-iris")}),
        ),
        (
            "unverified",
            json!({"inferenceService": model, "verification": off}),
        ),
        (
            "dex-session",
            json!({"inferenceService": model, "auth": dex}),
        ),
        (
            "sidecar-disabled",
            json!({"inferenceService": template("sidecar-free"),
                "mesh": {"mode": "DisableSidecarInjection"}, "verification": off}),
        ),
        (
            "unmanaged",
            json!({"inferenceService": model, "mesh": {"mode": "Unmanaged"}, "verification": off}),
        ),
    ];
    for (name, spec) in &configurations {
        let mut spec = spec.clone();
        spec["gateway"] = json!({"url": data.gateway.url()});
        data.env
            .apply_value(json!({
                "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
                "metadata": {"name": name, "namespace": NS}, "spec": spec,
            }))
            .await;
    }
    for (name, spec) in &configurations {
        let verified = spec["verification"]["enabled"] != json!(false);
        wait_for(
            &data.env.api::<InferenceAccess>(),
            name,
            move |a: Option<&InferenceAccess>| {
                let (Some(a), Some(s)) = (a, a.and_then(|a| a.status.as_ref())) else {
                    return false;
                };
                let holds = |type_: &str| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == type_ && c.status == "True")
                };
                s.observed_generation == a.metadata.generation
                    && holds("Ready")
                    && (!verified || holds("EndpointVerified"))
            },
        )
        .await;
    }
    data.env.stop_operator().await;
    let mark = data.env.plane().requests().mark();
    let log = data.env.log_mark();
    data.env.start_operator();
    for (name, _) in &configurations {
        data.env
            .wait_log(log, &format!("reconciled access={name} "))
            .await;
    }
    let writes: Vec<_> = data
        .env
        .plane()
        .requests()
        .writes_since(mark)
        .into_iter()
        .filter(|r| r.caller == operator_caller())
        .collect();
    assert!(
        writes.is_empty(),
        "a restarted operator must not write: {writes:#?}"
    );
}

#[tokio::test]
async fn a_restart_writes_nothing_in_any_configuration_with_host_based_urls() {
    if skip_on_real_cluster("a_restart_writes_nothing_in_any_configuration") {
        return;
    }
    a_restart_writes_nothing_in_any_configuration(kube_local::ControlPlane::builder()).await;
}

#[tokio::test]
async fn a_restart_writes_nothing_in_any_configuration_with_path_based_urls() {
    if skip_on_real_cluster("a_restart_writes_nothing_in_any_configuration") {
        return;
    }
    a_restart_writes_nothing_in_any_configuration(
        kube_local::ControlPlane::builder().kserve_url_style(kube_local::UrlStyle::PathTemplate),
    )
    .await;
}

#[tokio::test]
async fn each_fault_is_recovered() {
    if skip_on_real_cluster("each_fault_is_recovered") {
        return;
    }
    let env = Env::start().await;
    let plane = env.plane();
    // The first token requests fail (500, then 429 with Retry-After), the policy write fails
    // once with 503, the Secret write once with 409, and the API answers slowly: the access
    // still ends Ready.
    plane.faults().fail_next(kube_local::FaultRule::new(
        "create",
        "serviceaccounts/token",
        2,
        500,
    ));
    plane.faults().fail_next(
        kube_local::FaultRule::new("create", "serviceaccounts/token", 1, 429).retry_after(1),
    );
    plane.faults().fail_next(kube_local::FaultRule::new(
        "patch",
        "authorizationpolicies",
        1,
        503,
    ));
    // A conflict on the first Secret write, and every answer 100 ms late.
    plane
        .faults()
        .fail_next(kube_local::FaultRule::new("patch", "secrets", 1, 409));
    plane.faults().latency(Duration::from_millis(100));
    env.apply_example().await;
    env.wait_ready(ACCESS).await;
    let failures = plane
        .requests()
        .snapshot()
        .into_iter()
        .filter(|r| {
            r.resource == "serviceaccounts"
                && r.subresource.as_deref() == Some("token")
                && r.code >= 400
        })
        .count();
    assert_eq!(failures, 3, "the injected token failures were really sent");
    plane.faults().latency(Duration::ZERO);

    // Watches dropped and history compacted: the operator relists and still sees a URL change.
    plane.faults().drop_watches();
    plane.faults().compact();
    plane.set_kserve_domain("example.org");
    wait_for(&env.api::<Secret>(), SECRET, |s: Option<&Secret>| {
        s.is_some_and(|s| secret_text(s, "host") == format!("sklearn-iris.{NS}.example.org"))
    })
    .await;

    // The API server goes away for a while and comes back with its state.
    plane
        .faults()
        .refuse_connections_for(Duration::from_secs(3));
    plane.set_kserve_domain("example.net");
    // KServe's stand-in first (a failure here is the substrate's), then the operator.
    wait_for(
        &env.api::<InferenceService>(),
        "sklearn-iris",
        |isvc: Option<&InferenceService>| {
            isvc.and_then(|i| i.status.as_ref()?.url.as_deref())
                .is_some_and(|url| url.ends_with(".example.net"))
        },
    )
    .await;
    wait_for(&env.api::<Secret>(), SECRET, |s: Option<&Secret>| {
        s.is_some_and(|s| secret_text(s, "host") == format!("sklearn-iris.{NS}.example.net"))
    })
    .await;
}

#[tokio::test]
async fn kubectl_drives_the_sample() {
    let env = Env::start().await;
    let run = |args: Vec<String>| env.kubectl(args);
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let crds = repo("crds").display().to_string();
    let example = env.example_file().display().to_string();
    run(args(&["apply", "-f", &crds, "-f", &example])).await;
    let target = format!("inferenceaccess/{ACCESS}");
    run(args(&[
        "wait",
        "--for=condition=Ready",
        &target,
        "-n",
        env.ns(),
        "--timeout=60s",
    ]))
    .await;
    let table = run(args(&["get", "ia", "-n", env.ns()])).await;
    assert!(table.contains(ACCESS) && table.contains("True"), "{table}");
    assert!(
        table.contains("URL") && table.contains("EXPIRES"),
        "{table}"
    );
}

#[tokio::test]
async fn the_operator_works_with_exactly_the_shipped_rbac() {
    if skip_on_real_cluster("the_operator_works_with_exactly_the_shipped_rbac") {
        return;
    }
    let env = Env::start_with_rbac(shipped_role()).await;
    env.apply_example().await;
    let access = env.wait_ready(ACCESS).await;
    assert_eq!(reason_of(&access, "AccessPolicyReady"), "PolicyApplied");
    let denied: Vec<_> = env
        .plane()
        .requests()
        .snapshot()
        .into_iter()
        .filter(|r| r.caller == operator_caller() && r.code == 403)
        .collect();
    assert!(
        denied.is_empty(),
        "the shipped rules must cover every call: {denied:#?}"
    );
}

#[tokio::test]
async fn without_the_token_rule_the_access_says_token_request_failed() {
    if skip_on_real_cluster("without_the_token_rule_the_access_says_token_request_failed") {
        return;
    }
    let mut role = shipped_role();
    let rules = role.rules.as_mut().unwrap();
    let before = rules.len();
    rules.retain(|r| {
        !r.resources
            .iter()
            .flatten()
            .any(|res| res == "serviceaccounts/token")
    });
    assert_eq!(
        rules.len(),
        before - 1,
        "the shipped role grants serviceaccounts/token exactly once"
    );
    let env = Env::start_with_rbac(role).await;
    env.apply_example().await;
    let access = wait_for(
        &env.api::<InferenceAccess>(),
        ACCESS,
        condition_reason("CredentialIssued", "TokenRequestFailed"),
    )
    .await;
    let message = access
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "CredentialIssued")
        .unwrap()
        .message;
    assert!(message.contains("forbidden"), "{message}");
}

fn lease_holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

fn held_by(name: &'static str) -> impl Condition<Lease> + Clone {
    move |lease: Option<&Lease>| lease.and_then(lease_holder).as_deref() == Some(name)
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    if skip_on_real_cluster("only_the_leader_reconciles_and_a_standby_takes_over") {
        return;
    }
    let mut env = Env::start_with_rbac(shipped_role()).await;
    env.stop_operator().await;
    let leases = Api::<Lease>::namespaced(env.client.clone(), OPERATOR_NS);
    let elect = ["--leader-elect", "--lease-duration", "3s"];
    let mut first = env.spawn_operator("operator-a", &elect);
    wait_for(&leases, "inference-access-leader", held_by("operator-a")).await;
    let second = env.spawn_operator("operator-b", &elect);
    env.apply_example().await;
    env.wait_ready(ACCESS).await;
    let lease = leases.get("inference-access-leader").await.unwrap();
    assert_eq!(lease_holder(&lease).as_deref(), Some("operator-a"));

    // The leader dies without releasing the Lease: the standby takes it once it expires,
    // then does the work (a spec change needs a new token).
    first.kill().await.unwrap();
    wait_for(&leases, "inference-access-leader", held_by("operator-b")).await;
    let before = env.api::<Secret>().get(SECRET).await.unwrap();
    let old_token = secret_text(&before, "token");
    env.apply_value(json!({
        "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
        "metadata": {"name": ACCESS, "namespace": NS},
        "spec": {"inferenceService": {"name": "sklearn-iris"}, "token": {"duration": "20m"}}
    }))
    .await;
    wait_secret_key_changed(&env.api::<Secret>(), "token", old_token).await;

    // SIGTERM: the standby-turned-leader shuts down cleanly and hands the Lease back.
    let pid = second.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let lease = wait_for(&leases, "inference-access-leader", |l: Option<&Lease>| {
        l.is_some_and(|l| lease_holder(l).is_none())
    })
    .await;
    assert_eq!(lease.spec.unwrap().lease_transitions, Some(1));
    let exit = tokio::time::timeout(WAIT, second.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.status.success(),
        "graceful shutdown exits 0: {:?}",
        exit.status
    );
}

#[tokio::test]
async fn endpoint_verification_follows_the_mesh_mode() {
    if skip_on_real_cluster("endpoint_verification_follows_the_mesh_mode") {
        return;
    }
    let data = DataPath::start(kube_local::ControlPlane::builder()).await;
    // No policy and a sidecar: Kubeflow's deny-all answers 403, as in the sample's FAQ 2.
    data.apply("Unmanaged").await;
    let access = data.wait_endpoint("AccessDenied").await;
    let message = access
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "EndpointVerified")
        .unwrap()
        .message;
    assert!(message.contains("mesh.mode"), "{message}");
    // The operator's policy lets exactly this identity through.
    data.apply("AuthorizationPolicy").await;
    let access = data.wait_endpoint("EndpointReachable").await;
    assert_eq!(reason_of(&access, "AccessPolicyReady"), "PolicyApplied");
    // No sidecar at all: reachable, and the condition says nothing is enforced.
    data.apply("DisableSidecarInjection").await;
    let access = data.wait_endpoint("EndpointReachable").await;
    assert_eq!(reason_of(&access, "AccessPolicyReady"), "SidecarDisabled");
    let isvc = data
        .env
        .api::<InferenceService>()
        .get("sklearn-iris")
        .await
        .unwrap();
    assert_eq!(
        isvc.metadata.annotations.unwrap()["sidecar.istio.io/inject"],
        "false"
    );
    wait_deleted(&data.env.api::<AuthorizationPolicy>(), ACCESS).await;
}

#[tokio::test]
async fn a_cluster_local_url_is_diagnosed_as_host_not_found() {
    if skip_on_real_cluster("a_cluster_local_url_is_diagnosed_as_host_not_found") {
        return;
    }
    // Knative left at its cluster-local default domain: the ingress gateway has no route.
    let data =
        DataPath::start(kube_local::ControlPlane::builder().kserve_domain("svc.cluster.local"))
            .await;
    data.apply("AuthorizationPolicy").await;
    let access = data.wait_endpoint("HostNotFound").await;
    let conditions = access.status.unwrap().conditions;
    let verified = conditions
        .iter()
        .find(|c| c.type_ == "EndpointVerified")
        .unwrap();
    assert!(
        verified
            .message
            .contains("sklearn-iris.kubeflow-user-example-com.svc.cluster.local"),
        "{}",
        verified.message
    );
    assert!(verified.message.contains("domain"), "{}", verified.message);
    // Verification never blocks the credential.
    let credential = conditions
        .iter()
        .find(|c| c.type_ == "CredentialIssued")
        .unwrap();
    assert_eq!(credential.status, "True");
}

/// A person's Dex account in a Secret, as the DexSession mode reads it.
async fn dex_account(env: &Env, password: &str) {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "dex-user", "namespace": NS, "labels": {"inference-access.io/dex-login": "true"}},
        "stringData": {"username": "user@example.com", "password": password},
    });
    env.api::<Secret>()
        .patch(
            "dex-user",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

async fn apply_dex(data: &DataPath, renew_before: &str) {
    data.apply_sample(json!({
        "auth": {"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "dex-user"}}},
        "token": {"renewBefore": renew_before}
    }))
    .await;
}

async fn dex_session_end_to_end(flavour: mesh_local::Flavour) {
    let login = mesh_local::LoginConfig {
        flavour,
        // Short sessions, renewed a second after login: renewal is seen within seconds.
        session_max_age: Duration::from_secs(120),
        ..mesh_local::LoginConfig::default()
    };
    let data = DataPath::start_with_login(kube_local::ControlPlane::builder(), login).await;
    dex_account(&data.env, "12341234").await;
    apply_dex(&data, "119s").await;
    let access = data.wait_endpoint("EndpointReachable").await;
    assert_eq!(reason_of(&access, "CredentialIssued"), "Issued");
    let secret = data.env.api::<Secret>().get(SECRET).await.unwrap();
    let cookie_name = flavour.session_cookie();
    assert_eq!(secret_text(&secret, "cookie-name"), cookie_name);
    let cookie = secret_text(&secret, "cookie");
    assert!(
        cookie.starts_with(&format!("{cookie_name}=")),
        "{cookie_name}"
    );
    assert!(secret.data.as_ref().unwrap().get("token").is_none());
    // The policy admits the person, by the user id the gateway sets from the session.
    let policy = data
        .env
        .api::<AuthorizationPolicy>()
        .get(ACCESS)
        .await
        .unwrap();
    assert_eq!(policy.spec.rules[0].when[0].values, ["user@example.com"]);
    // Renewal: a new session before the old one expires.
    let renewed = wait_secret_key_changed(&data.env.api::<Secret>(), "cookie", cookie).await;
    assert!(secret_text(&renewed, "cookie").starts_with(cookie_name));
    // Nothing the operator published carries the password or the cookie.
    let access = data.env.api::<InferenceAccess>().get(ACCESS).await.unwrap();
    let published = serde_json::to_string(&access).unwrap();
    assert!(
        !published.contains("12341234") && !published.contains(&secret_text(&renewed, "cookie"))
    );
}

#[tokio::test]
async fn dex_session_behind_oauth2_proxy() {
    if skip_on_real_cluster("dex_session_behind_oauth2_proxy") {
        return;
    }
    dex_session_end_to_end(mesh_local::Flavour::OAuth2Proxy).await;
}

#[tokio::test]
async fn dex_session_behind_the_legacy_authservice() {
    if skip_on_real_cluster("dex_session_behind_the_legacy_authservice") {
        return;
    }
    dex_session_end_to_end(mesh_local::Flavour::AuthService).await;
}

#[tokio::test]
async fn a_wrong_dex_password_is_dex_login_failed() {
    if skip_on_real_cluster("a_wrong_dex_password_is_dex_login_failed") {
        return;
    }
    let data = DataPath::start(kube_local::ControlPlane::builder()).await;
    dex_account(&data.env, "not-the-password").await;
    apply_dex(&data, "20m").await;
    let access = wait_for(
        &data.env.api::<InferenceAccess>(),
        ACCESS,
        condition_reason("CredentialIssued", "DexLoginFailed"),
    )
    .await;
    let published = serde_json::to_string(&access).unwrap();
    assert!(
        !published.contains("not-the-password"),
        "the password leaked: {published}"
    );
    let log = std::fs::read_to_string(data.env.dir.path().join("operator.log")).unwrap();
    assert!(
        !log.contains("not-the-password"),
        "the password reached the log"
    );
}

#[tokio::test]
async fn path_based_urls_reach_the_model() {
    if skip_on_real_cluster("path_based_urls_reach_the_model") {
        return;
    }
    let builder =
        kube_local::ControlPlane::builder().kserve_url_style(kube_local::UrlStyle::PathTemplate);
    let data = DataPath::start(builder).await;
    data.apply("AuthorizationPolicy").await;
    data.wait_endpoint("EndpointReachable").await;
    let secret = data.env.api::<Secret>().get(SECRET).await.unwrap();
    assert_eq!(secret_text(&secret, "host"), "example.com");
    assert_eq!(
        secret_text(&secret, "predict-url"),
        format!(
            "{}/serving/{NS}/sklearn-iris/v1/models/sklearn-iris:predict",
            data.gateway.url()
        )
    );
}

#[tokio::test]
async fn the_operator_serves_metrics_health_and_readiness() {
    if skip_on_real_cluster("the_operator_serves_metrics_health_and_readiness") {
        return;
    }
    let env = Env::start().await;
    env.apply_example().await;
    env.wait_ready(ACCESS).await;
    let addr = env.ops_addr().await;
    let client = inference_access::gateway::client::GatewayClient::new().unwrap();
    let get = |path: &str| {
        let url = format!("http://{addr}{path}");
        let client = client.clone();
        async move { client.get(&url, &[]).await.unwrap() }
    };
    assert_eq!(get("/healthz").await.status, 200);
    assert_eq!(get("/readyz").await.status, 200);
    let metrics = get("/metrics").await.text();
    for line in [
        "inference_access_credentials_total{reason=\"issued\"} 1",
        "inference_access_credential_expiration_timestamp_seconds{namespace=\"kubeflow-user-example-com\",name=\"sklearn-iris-client\",secret_name=\"sklearn-iris-client-credential\"}",
        "inference_access_reconcile_duration_seconds_count",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
    // Tokens never reach the metrics.
    let token = secret_text(&env.api::<Secret>().get(SECRET).await.unwrap(), "token");
    assert!(!metrics.contains(&token));
}

#[tokio::test]
async fn prometheus_fires_the_expiry_alert_when_renewal_is_blocked() {
    if skip_on_real_cluster("prometheus_fires_the_expiry_alert_when_renewal_is_blocked") {
        return;
    }
    // The API server caps every token at 45 s (as --service-account-max-token-expiration does;
    // it refuses to issue under 600 s), so the last third of a lifetime begins 30 s after issue.
    let builder =
        kube_local::ControlPlane::builder().token_max_expiration(Some(Duration::from_secs(45)));
    let env = Env::start_with(builder, None).await;
    let plane = env.plane();
    let mut prometheus =
        crate::prometheus::Prometheus::start(env.dir.path(), &env.ops_addr().await).await;
    env.apply_example().await;
    let status = env.wait_ready(ACCESS).await.status.unwrap();
    let expires = status.token_expiration_time.unwrap().0;
    let renewal = status.renewal_time.unwrap().0;
    let lifetime = expires.duration_since(renewal) * 3;
    assert!(
        lifetime <= jiff::SignedDuration::from_secs(60),
        "{lifetime:?}"
    );

    // From now on every TokenRequest fails: the renewal cannot happen.
    let mark = plane.requests().mark();
    plane.faults().fail_next(kube_local::FaultRule::new(
        "create",
        "serviceaccounts/token",
        10_000,
        500,
    ));
    let labels = [("namespace", NS), ("name", ACCESS)];
    // Prometheus scraped the credential's lifetime while it was young: no alert then.
    let until_expiry = || {
        let left = expires.duration_since(jiff::Timestamp::now());
        tokio::time::Instant::now()
            + Duration::try_from(left).unwrap_or_default()
            + Duration::from_secs(5)
    };
    let issued = format!(
        "inference_access_credential_issued_timestamp_seconds{{namespace=\"{NS}\",name=\"{ACCESS}\"}}"
    );
    prometheus.wait_for_series(&issued, until_expiry()).await;
    assert!(
        jiff::Timestamp::now() < renewal,
        "the machine was too slow to see the credential before its renewal time"
    );
    assert_eq!(
        prometheus
            .alerts("InferenceAccessCredentialExpiringSoon", &labels)
            .await,
        Vec::<serde_json::Value>::new()
    );

    let alert = prometheus
        .wait_for_firing(
            "InferenceAccessCredentialExpiringSoon",
            &labels,
            until_expiry(),
        )
        .await;
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["secret_name"], SECRET);
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap()
            .ends_with("docs/troubleshooting.md#inferenceaccesscredentialexpiringsoon"),
        "{alert}"
    );
    // It became active only once the renewal was due.
    let active_at: jiff::Timestamp = alert["activeAt"].as_str().unwrap().parse().unwrap();
    assert!(
        active_at >= renewal,
        "active at {active_at}, renewal due at {renewal}"
    );
    // The operator really tried to renew, and the Secret still holds the old credential.
    let refused = plane
        .requests()
        .since(mark)
        .into_iter()
        .filter(|r| r.subresource.as_deref() == Some("token") && r.code == 500)
        .count();
    assert!(refused >= 1, "no renewal was attempted");
    let secret = env.api::<Secret>().get(SECRET).await.unwrap();
    assert_eq!(secret_text(&secret, "expires-at"), expires.to_string());
}
