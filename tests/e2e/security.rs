//! The operator as a deputy, tried as an attacker would (issue: confused deputy; GUIDE §5).
//!
//! kube-local enforces RBAC; the operator runs with exactly the shipped rights; Mallory is a
//! ServiceAccount bound only to the shipped `inference-access-editor` role in the namespace, so
//! she cannot read Secrets, mint tokens or write policies herself. Each test has her write an
//! InferenceAccess that asks the operator to do one of those things for her, then checks that
//! the harm did not happen: no token minted, nothing sent to her host, nothing readable.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use inference_access::api::{AuthorizationPolicy, InferenceAccess, InferenceService};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::harness::*;

/// A value that must never leave the Secret it is in.
const PROD_PASSWORD: &str = "hunter2-prod-db";

/// A host Mallory controls: counts every connection made to it.
struct Host {
    url: String,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Host {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Self {
            url,
            connections,
            task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Attack {
    env: Env,
    mallory: Client,
    host: Host,
}

impl Attack {
    /// The operator with the shipped RBAC and `operator_args`; Mallory; a victim ServiceAccount
    /// and a Secret she may not read; her host.
    async fn start(operator_args: &[&str]) -> Self {
        Self::start_in(kube_local::ControlPlane::builder(), operator_args).await
    }

    /// As [`Attack::start`], on a control plane built from `builder` (e.g. with more CRDs).
    async fn start_in(builder: kube_local::Builder, operator_args: &[&str]) -> Self {
        let mut env = Env::start_with(builder.rbac(true), Some(shipped_role())).await;
        env.apply_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
            .await;
        if !operator_args.is_empty() {
            env.restart_operator_with(operator_args).await;
        }
        let admin_sas = env.api::<ServiceAccount>();
        for name in ["default-editor", "mallory"] {
            let sa =
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}});
            admin_sas
                .patch(name, &PatchParams::apply("e2e-test"), &Patch::Apply(&sa))
                .await
                .unwrap();
        }
        let prod = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "prod-db", "namespace": NS},
            "stringData": {"username": "app", "password": PROD_PASSWORD},
        });
        env.api::<Secret>()
            .patch(
                "prod-db",
                &PatchParams::apply("e2e-test"),
                &Patch::Apply(&prod),
            )
            .await
            .unwrap();
        let editor: ClusterRole = serde_yaml::from_str(
            &std::fs::read_to_string(repo("config/rbac/inferenceaccess_editor_role.yaml")).unwrap(),
        )
        .unwrap();
        Api::<ClusterRole>::all(env.client.clone())
            .patch(
                "inference-access-editor",
                &PatchParams::apply("e2e-test").force(),
                &Patch::Apply(&editor),
            )
            .await
            .unwrap();
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "mallory-edits-accesses", "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "inference-access-editor"},
            "subjects": [{"kind": "ServiceAccount", "name": "mallory", "namespace": NS}],
        });
        Api::<RoleBinding>::namespaced(env.client.clone(), NS)
            .patch(
                "mallory-edits-accesses",
                &PatchParams::apply("e2e-test"),
                &Patch::Apply(&binding),
            )
            .await
            .unwrap();
        let token = api_token(&env, "mallory").await;
        let path = env.dir.path().join("mallory.kubeconfig");
        std::fs::write(&path, env.plane().kubeconfig_for_token(&token)).unwrap();
        let mallory = client_for(&path).await;
        let attack = Self {
            env,
            mallory,
            host: Host::start().await,
        };
        attack.mallory_holds_only_the_editor_role().await;
        attack
    }

    /// What `kubectl auth can-i` tells her: accesses yes, anything the operator could do for
    /// her no.
    async fn mallory_holds_only_the_editor_role(&self) {
        for (verb, resource, subresource, allowed) in [
            ("create", "inferenceaccesses", "", true),
            ("get", "secrets", "", false),
            ("list", "secrets", "", false),
            ("create", "serviceaccounts", "token", false),
            ("patch", "serviceaccounts", "", false),
            ("create", "authorizationpolicies", "", false),
            ("patch", "inferenceservices", "", false),
        ] {
            let group = match resource {
                "inferenceaccesses" => "inference-access.io",
                "authorizationpolicies" => "security.istio.io",
                "inferenceservices" => "serving.kserve.io",
                _ => "",
            };
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        namespace: Some(NS.into()),
                        verb: Some(verb.into()),
                        group: Some(group.into()),
                        resource: Some(resource.into()),
                        subresource: Some(subresource.into()).filter(|s: &String| !s.is_empty()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = Api::<SelfSubjectAccessReview>::all(self.mallory.clone())
                .create(&PostParams::default(), &review)
                .await
                .unwrap();
            assert_eq!(
                answer.status.unwrap().allowed,
                allowed,
                "can-i {verb} {resource}/{subresource}"
            );
        }
    }

    /// Mallory applies an access; `Err` carries the API server's refusal.
    async fn apply(&self, name: &str, spec: Value) -> Result<(), String> {
        let access = json!({
            "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
            "metadata": {"name": name, "namespace": NS}, "spec": spec,
        });
        Api::<InferenceAccess>::namespaced(self.mallory.clone(), NS)
            .patch(name, &PatchParams::apply("mallory"), &Patch::Apply(&access))
            .await
            .map(|_| ())
            .map_err(|e| match e {
                kube::Error::Api(status) => format!("{} {}", status.code, status.message),
                other => other.to_string(),
            })
    }

    async fn refused_at_apply(&self, name: &str, spec: Value, message: &str) {
        let err = self
            .apply(name, spec.clone())
            .await
            .expect_err(&format!("{spec} was accepted"));
        assert!(
            err.starts_with("422") && err.contains(message),
            "{spec}: {err}"
        );
    }

    async fn wait_reason(&self, name: &str, reason: &'static str) -> InferenceAccess {
        wait_for(
            &self.env.api::<InferenceAccess>(),
            name,
            condition_reason("Ready", reason),
        )
        .await
    }

    /// Whether Mallory's own RBAC lets her create ReferenceGrants (give a consent) in
    /// `namespace`.
    async fn may_create_reference_grants_in(&self, namespace: &str) -> bool {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.into()),
                    verb: Some("create".into()),
                    group: Some("gateway.networking.k8s.io".into()),
                    resource: Some("referencegrants".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SelfSubjectAccessReview>::all(self.mallory.clone())
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        answer.status.unwrap().allowed
    }

    /// TokenRequests the operator sent for `service_account`.
    fn tokens_minted_for(&self, service_account: &str) -> usize {
        self.env
            .plane()
            .requests()
            .snapshot()
            .into_iter()
            .filter(|r| {
                r.caller == operator_caller()
                    && r.verb == "create"
                    && r.subresource.as_deref() == Some("token")
                    && r.name.as_deref() == Some(service_account)
            })
            .count()
    }

    /// Everything a `view` user can read that the operator wrote: statuses, Events, policies.
    async fn readable(&self) -> String {
        let accesses = self
            .env
            .api::<InferenceAccess>()
            .list(&ListParams::default())
            .await
            .unwrap();
        let events = self
            .env
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap();
        let policies = self
            .env
            .api::<AuthorizationPolicy>()
            .list(&ListParams::default())
            .await
            .unwrap();
        format!(
            "{}{}{}",
            serde_json::to_string(&accesses.items).unwrap(),
            serde_json::to_string(&events.items).unwrap(),
            serde_json::to_string(&policies.items).unwrap()
        )
    }
}

/// A token for `service_account` that authenticates to the API server (its own audience).
async fn api_token(env: &Env, service_account: &str) -> String {
    let request: k8s_openapi::api::authentication::v1::TokenRequest = serde_json::from_value(
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": [], "expirationSeconds": 3600}}),
    )
    .unwrap();
    let answer: k8s_openapi::api::authentication::v1::TokenRequest = env
        .api::<ServiceAccount>()
        .create_subresource("token", service_account, &PostParams::default(), &request)
        .await
        .unwrap();
    answer.status.unwrap().token
}

/// What the API server says of a token presented to it (TokenReview without audiences).
async fn authenticates_to_the_api_server(env: &Env, token: &str) -> bool {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: None,
        },
        ..Default::default()
    };
    let answer = Api::<TokenReview>::all(env.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.unwrap().authenticated == Some(true)
}

fn sample_model() -> Value {
    json!({"name": "sklearn-iris", "template": {"spec": {"predictor": {"model": {
        "modelFormat": {"name": "sklearn"},
        "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}}})
}

#[tokio::test]
async fn no_token_for_the_api_server_or_for_a_service_account_that_did_not_consent() {
    if skip_on_real_cluster("no_token_for_the_api_server") {
        return;
    }
    let attack = Attack::start(&[]).await;
    // Her own model, and the API server's audience on the sample's ServiceAccount for a year.
    attack
        .apply(
            "as-editor",
            json!({
                "inferenceService": sample_model(),
                "serviceAccount": {"name": "default-editor"},
                "token": {"audiences": ["https://kubernetes.default.svc.cluster.local"], "duration": "8760h"},
                "verification": {"enabled": false}
            }),
        )
        .await
        .unwrap();
    let refused = attack.wait_reason("as-editor", "AudienceNotAllowed").await;
    assert!(
        reason_message(&refused, "CredentialIssued").contains("Kubernetes API credential"),
        "{refused:?}"
    );
    // The gateway's audience, still on someone else's ServiceAccount.
    let spec = json!({
        "inferenceService": sample_model(),
        "serviceAccount": {"name": "default-editor"},
        "verification": {"enabled": false}
    });
    attack.apply("as-editor-2", spec).await.unwrap();
    attack
        .wait_reason("as-editor-2", "ServiceAccountNotAllowed")
        .await;
    assert_eq!(attack.tokens_minted_for("default-editor"), 0);
    // Its owner consents: now, and only now, the operator mints for it.
    let consent = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "default-editor", "annotations": {"inference-access.io/allowed-accesses": "as-editor-2"}}});
    attack
        .env
        .api::<ServiceAccount>()
        .patch(
            "default-editor",
            &PatchParams::apply("namespace-admin"),
            &Patch::Apply(&consent),
        )
        .await
        .unwrap();
    attack.env.wait_ready("as-editor-2").await;
    assert_eq!(attack.tokens_minted_for("default-editor"), 1);
    // Whatever was minted, nothing authenticates to the API server.
    let secrets = attack
        .env
        .api::<Secret>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let tokens: Vec<String> = secrets
        .items
        .iter()
        .filter(|s| s.data.as_ref().is_some_and(|d| d.contains_key("token")))
        .map(|s| secret_text(s, "token"))
        .collect();
    assert!(!tokens.is_empty());
    for token in tokens {
        assert!(!authenticates_to_the_api_server(&attack.env, &token).await);
    }
}

#[tokio::test]
async fn a_year_long_token_is_capped_to_the_admins_maximum() {
    if skip_on_real_cluster("a_year_long_token_is_capped_to_the_admins_maximum") {
        return;
    }
    let attack = Attack::start(&[]).await;
    attack
        .apply(
            "long-lived",
            json!({"inferenceService": sample_model(), "token": {"duration": "87600h"}, "verification": {"enabled": false}}),
        )
        .await
        .unwrap();
    let access = attack.env.wait_ready("long-lived").await;
    assert!(
        reason_message(&access, "CredentialIssued")
            .contains("capped to the cluster admin's maximum"),
        "{access:?}"
    );
    let secret = attack
        .env
        .api::<Secret>()
        .get("long-lived-credential")
        .await
        .unwrap();
    let claims = jwt_claims(&secret_text(&secret, "token"));
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(lifetime <= 24 * 3600, "a token of {lifetime}s");
}

#[tokio::test]
async fn credentials_go_only_to_gateways_the_admin_allowed() {
    if skip_on_real_cluster("credentials_go_only_to_gateways_the_admin_allowed") {
        return;
    }
    let attack = Attack::start(&[]).await;
    let host = attack.host.url.clone();
    attack
        .apply(
            "exfiltrate",
            json!({"inferenceService": sample_model(), "gateway": {"url": host}}),
        )
        .await
        .unwrap();
    attack.wait_reason("exfiltrate", "GatewayNotAllowed").await;
    // A Dex login at her host, with a Secret she cannot read.
    let dex = json!({
        "inferenceService": {"name": "sklearn-iris"},
        "auth": {"type": "DexSession", "dexSession": {
            "loginURL": host,
            "credentialsSecret": {"name": "prod-db", "usernameKey": "password", "passwordKey": "username"}}},
        "mesh": {"mode": "Unmanaged"}
    });
    attack.apply("phish", dex).await.unwrap();
    attack.wait_reason("phish", "GatewayNotAllowed").await;
    // URLs with user info or spaces are refused at apply.
    for url in [
        "http://user:pass@istio-ingressgateway.istio-system.svc.cluster.local",
        "http://gw/ x",
    ] {
        attack
            .refused_at_apply(
                "bad-url",
                json!({"inferenceService": {"name": "m"}, "gateway": {"url": url}}),
                "without user info or spaces",
            )
            .await;
    }
    assert_eq!(
        attack.host.connections(),
        0,
        "something was sent to her host"
    );
    assert_eq!(attack.tokens_minted_for("exfiltrate"), 0);
}

#[tokio::test]
async fn another_secret_is_never_read_or_published() {
    if skip_on_real_cluster("another_secret_is_never_read_or_published") {
        return;
    }
    let attack = Attack::start(&[]).await;
    // The same key twice would publish the password as the user id: refused at apply.
    attack
        .refused_at_apply(
            "leak",
            json!({"inferenceService": {"name": "sklearn-iris"},
                "auth": {"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "prod-db", "usernameKey": "password", "passwordKey": "password"}}}}),
            "usernameKey and passwordKey must differ",
        )
        .await;
    // Swapped keys on an unmarked Secret: not read at all.
    attack
        .apply(
            "leak",
            json!({"inferenceService": sample_model(),
                "auth": {"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "prod-db", "usernameKey": "password", "passwordKey": "username"}}}}),
        )
        .await
        .unwrap();
    attack
        .wait_reason("leak", "CredentialsSecretNotAllowed")
        .await;
    let readable = attack.readable().await;
    assert!(
        !readable.contains(PROD_PASSWORD),
        "the password is readable"
    );
    let log = std::fs::read_to_string(attack.env.dir.path().join("operator.log")).unwrap();
    assert!(!log.contains(PROD_PASSWORD), "the password reached the log");
}

#[tokio::test]
async fn naming_someone_elses_secret_neither_restarts_nor_reveals_its_readers() {
    if skip_on_real_cluster("naming_someone_elses_secret_neither_restarts_nor_reveals_its_readers")
    {
        return;
    }
    let attack = Attack::start(&[]).await;
    // The victim's workload reads prod-db through env and consents to restarts by any access.
    let deployments = attack.env.api::<k8s_openapi::api::apps::v1::Deployment>();
    attack
        .env
        .apply_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "prod-app", "namespace": NS, "annotations": {"inference-access.io/restart-on-renewal": "true"}},
            "spec": {"selector": {"matchLabels": {"app": "prod-app"}},
                "template": {"metadata": {"labels": {"app": "prod-app"}},
                    "spec": {"containers": [{"name": "app", "image": "app",
                        "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "prod-db", "key": "password"}}}]}]}}}}))
        .await;
    attack
        .apply(
            "grab",
            json!({"inferenceService": sample_model(), "secretName": "prod-db"}),
        )
        .await
        .unwrap();
    // The whole pass has run once the status says so: nothing restarted, no reader listed.
    let conflicted = attack.wait_reason("grab", "SecretConflict").await;
    assert!(conflicted.status.unwrap().consumers.is_empty());
    let app = deployments.get("prod-app").await.unwrap();
    assert_eq!(app.metadata.generation, Some(1));
    assert!(
        !serde_json::to_string(&app.metadata.annotations)
            .unwrap()
            .contains("started-with")
    );
    let patched: Vec<_> = attack
        .env
        .plane()
        .requests()
        .writes_since(0)
        .into_iter()
        .filter(|r| r.caller == operator_caller() && r.resource == "deployments")
        .collect();
    assert!(
        patched.is_empty(),
        "the operator wrote a workload: {patched:#?}"
    );
    assert!(
        !attack.readable().await.contains("prod-app"),
        "the reader was revealed"
    );
}

#[tokio::test]
async fn no_hole_in_a_policy() {
    if skip_on_real_cluster("no_hole_in_a_policy") {
        return;
    }
    let attack = Attack::start(&[]).await;
    let model = || json!({"name": "sklearn-iris"});
    for (mesh, message) in [
        (json!({"probePaths": ["/v1/models/*"]}), "exact paths"),
        (json!({"probePaths": ["*"]}), "exact paths"),
        (
            json!({"probePaths": ["/v2/health/ready"]}),
            "must not open the model APIs",
        ),
        (
            json!({"probePaths": ["/v1/models/sklearn-iris:predict"]}),
            "must not open the model APIs",
        ),
        (json!({"sourcePrincipals": ["*"]}), "exact mesh identities"),
        (
            json!({"sourcePrincipals": ["cluster.local/ns/*"]}),
            "exact mesh identities",
        ),
    ] {
        attack
            .refused_at_apply(
                "holes",
                json!({"inferenceService": model(), "mesh": mesh}),
                message,
            )
            .await;
    }
    // A header the gateway does not overwrite, or another gateway identity: refused by the
    // operator, and no policy exists at all.
    for (name, mesh) in [
        ("forged-header", json!({"userIdHeader": "x-user"})),
        (
            "other-principal",
            json!({"sourcePrincipals": ["cluster.local/ns/mallory/sa/proxy"]}),
        ),
    ] {
        attack
            .apply(name, json!({"inferenceService": model(), "mesh": mesh}))
            .await
            .unwrap();
        attack.wait_reason(name, "MeshSettingNotAllowed").await;
        assert!(
            attack
                .env
                .api::<AuthorizationPolicy>()
                .get_opt(name)
                .await
                .unwrap()
                .is_none(),
            "{name}: a policy was written"
        );
    }
}

#[tokio::test]
async fn someone_elses_model_keeps_its_sidecar() {
    if skip_on_real_cluster("someone_elses_model_keeps_its_sidecar") {
        return;
    }
    let attack = Attack::start(&[]).await;
    // The model's owner templates it through their own access.
    attack.env.apply_example().await;
    attack.env.wait_ready(ACCESS).await;
    attack
        .refused_at_apply(
            "no-sidecar",
            json!({"inferenceService": {"name": "sklearn-iris"}, "mesh": {"mode": "DisableSidecarInjection"}}),
            "only changes an InferenceService this access creates",
        )
        .await;
    attack
        .apply(
            "no-sidecar",
            json!({"inferenceService": sample_model(), "mesh": {"mode": "DisableSidecarInjection"}}),
        )
        .await
        .unwrap();
    attack.wait_reason("no-sidecar", "TemplateConflict").await;
    let isvc = attack
        .env
        .api::<InferenceService>()
        .get("sklearn-iris")
        .await
        .unwrap();
    assert!(!isvc.sidecar_disabled(), "{:?}", isvc.metadata.annotations);
}

#[tokio::test]
async fn a_wrong_password_is_tried_three_times_then_waits_for_a_change() {
    if skip_on_real_cluster("a_wrong_password_is_tried_three_times") {
        return;
    }
    let data = DataPath::start(kube_local::ControlPlane::builder()).await;
    let secret = |password: &str| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "dex-user", "namespace": NS, "labels": {"inference-access.io/dex-login": "true"}},
            "stringData": {"username": "user@example.com", "password": password},
        })
    };
    let secrets = data.env.api::<Secret>();
    let apply = |value: Value| {
        let secrets = secrets.clone();
        async move {
            secrets
                .patch(
                    "dex-user",
                    &PatchParams::apply("e2e-test").force(),
                    &Patch::Apply(&value),
                )
                .await
                .unwrap();
        }
    };
    apply(secret("wrong-password")).await;
    data.apply_sample(json!({"auth": {"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "dex-user"}}}}))
        .await;
    let stopped = wait_for(
        &data.env.api::<InferenceAccess>(),
        ACCESS,
        condition_reason("CredentialIssued", "DexLoginStopped"),
    )
    .await;
    assert_eq!(stopped.status.unwrap().login_refusals, Some(3));
    // The password is fixed in the Secret: the operator tries again, and succeeds.
    apply(secret("12341234")).await;
    let ready = data.env.wait_ready(ACCESS).await;
    assert_eq!(ready.status.unwrap().login_refusals, None);
}

/// The policies in `namespace`, name and spec, as their owners wrote them.
async fn policies_in(env: &Env, namespace: &str) -> Vec<(String, Value)> {
    let mut policies: Vec<(String, Value)> =
        Api::<AuthorizationPolicy>::namespaced(env.client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|p| {
                let spec = serde_json::to_value(&p.spec).unwrap();
                (p.metadata.name.unwrap_or_default(), spec)
            })
            .collect();
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    policies
}

/// Mallory names team A's model from her namespace. A consented to another namespace and, for
/// hers, to another model only: she gets no token and the operator neither writes nor deletes
/// anything of A's, not a policy named as hers would be, not one carrying her labels (no uid).
#[tokio::test]
async fn a_model_in_another_namespace_gives_nothing_without_its_owner_consent() {
    if skip_on_real_cluster("a_model_in_another_namespace_gives_nothing_without_its_owner_consent")
    {
        return;
    }
    let attack = Attack::start_in(
        kube_local::ControlPlane::builder().load_crds(&crate::serving_modes::gateway_api_crds()),
        &[],
    )
    .await;
    let env = &attack.env;
    let victim = env.second_ns("team-a").await;
    apply_object(
        env,
        json!({
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "sklearn-iris", "namespace": victim}, "spec": sample_model()["template"]["spec"],
        }),
    )
    .await;
    let theirs = json!({"action": "ALLOW", "rules": [{"from": [{"source": {"principals": [format!("cluster.local/ns/{victim}/sa/own")]}}]}]});
    let labels = json!({"app.kubernetes.io/managed-by": "inference-access",
        "inference-access.io/access": "steal", "inference-access.io/access-namespace": NS});
    for (name, labels) in [
        (format!("from-{NS}.steal"), json!({})),
        ("forged".to_owned(), labels),
    ] {
        apply_object(
            env,
            json!({
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": name, "namespace": victim, "labels": labels}, "spec": theirs,
            }),
        )
        .await;
    }
    let before = policies_in(env, &victim).await;
    for (name, from, to) in [
        (
            "team-c-may",
            "team-c",
            json!({"group": "serving.kserve.io", "kind": "InferenceService"}),
        ),
        (
            "another-model",
            NS,
            json!({"group": "serving.kserve.io", "kind": "InferenceService", "name": "another"}),
        ),
    ] {
        apply_object(env, json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": name, "namespace": victim},
            "spec": {"from": [{"group": "inference-access.io", "kind": "InferenceAccess", "namespace": from}], "to": [to]},
        }))
        .await;
    }
    attack
        .apply(
            "steal",
            json!({"inferenceService": {"name": "sklearn-iris", "namespace": victim}}),
        )
        .await
        .unwrap();
    let access = attack.wait_reason("steal", "ConsentPending").await;
    assert_eq!(access.status.unwrap().token_expiration_time, None);
    assert_eq!(attack.tokens_minted_for("steal"), 0);
    assert_eq!(policies_in(env, &victim).await, before);
    // Her own consent is not hers to give: the editor role creates no ReferenceGrant there.
    assert!(!attack.may_create_reference_grants_in(&victim).await);
    // Deleting her access deletes nothing of A's either.
    Api::<InferenceAccess>::namespaced(attack.mallory.clone(), NS)
        .delete("steal", &Default::default())
        .await
        .unwrap();
    wait_deleted(&env.api::<InferenceAccess>(), "steal").await;
    assert_eq!(policies_in(env, &victim).await, before);
}

/// Mallory sets `mesh.mode: Auto` on a model served through the shared Gateway: a policy
/// there is written in the Gateway owner's namespace, so without that owner's ReferenceGrant
/// the operator writes nothing there, and she cannot give the consent herself.
#[tokio::test]
async fn auto_writes_nothing_at_a_shared_gateway_without_its_owner_consent() {
    if skip_on_real_cluster("auto_writes_nothing_at_a_shared_gateway_without_its_owner_consent") {
        return;
    }
    use crate::serving_modes::{
        GATEWAY_NS, gateway_api_crds, install_shared_gateway, standard_model,
    };
    let attack = Attack::start_in(
        kube_local::ControlPlane::builder()
            .load_crds(&gateway_api_crds())
            .kserve_gateway_api(true),
        &[],
    )
    .await;
    let env = &attack.env;
    install_shared_gateway(env).await;
    standard_model(env, "routed").await;
    let before = policies_in(env, GATEWAY_NS).await;
    attack
        .apply(
            "gate",
            json!({"inferenceService": {"name": "routed"}, "mesh": {"mode": "Auto"}}),
        )
        .await
        .unwrap();
    let access = wait_for(
        &env.api::<InferenceAccess>(),
        "gate",
        condition_reason("AccessPolicyReady", "GatewayPolicyNotAllowed"),
    )
    .await;
    assert_eq!(
        access.status.and_then(|s| s.mesh_path).as_deref(),
        Some("Gateway")
    );
    assert_eq!(policies_in(env, GATEWAY_NS).await, before);
    assert!(!attack.may_create_reference_grants_in(GATEWAY_NS).await);
}

fn reason_message(access: &InferenceAccess, type_: &str) -> String {
    access
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}
