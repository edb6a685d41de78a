//! Starts a control plane and the operator binary, and waits on conditions.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use inference_access::api::InferenceAccess;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub const NS: &str = "kubeflow-user-example-com";
pub const ACCESS: &str = "sklearn-iris-client";
pub const SECRET: &str = "sklearn-iris-client-credential";
pub const WAIT: Duration = Duration::from_secs(60);
pub const OPERATOR_NS: &str = "inference-access-system";
const OPERATOR_SA: &str = "inference-access";

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// What the operator's ServiceAccount is granted on kube-local.
enum Rights {
    /// Nothing: without RBAC enforcement kube-local lets every caller do everything.
    Unbound,
    /// This ClusterRole bound cluster-wide, and the shipped leader-election Role.
    Cluster(Box<ClusterRole>),
    /// Exactly the RBAC objects among these (rendered by the chart).
    Rendered(Vec<serde_json::Value>),
    /// Whatever the real Helm installed from the chart (`helm install`, no values): its CRD,
    /// ServiceAccount and roles; the operator runs with the flags of the chart's Deployment and
    /// a token of its ServiceAccount bound to the Pod the Deployment runs.
    HelmRelease,
}

/// A test's world: a control plane (kube-local unless a cluster is given), an admin client and
/// the running operator.
pub struct Env {
    pub plane: Option<kube_local::ControlPlane>,
    pub client: Client,
    pub dir: tempdir::Dir,
    operator: Option<Child>,
    operator_kubeconfig: PathBuf,
    /// Extra controller flags for `start_operator`.
    operator_args: Vec<String>,
    /// The scenario's namespace: `NS` on its own kube-local; on a shared cluster one of its own,
    /// so scenarios (and the suite run twice) never meet.
    ns: String,
    /// More namespaces of this scenario ([`Env::second_ns`]), deleted with `ns`.
    more_ns: std::sync::Mutex<Vec<String>>,
}

/// The operator's identity on kube-local, so request accounting can tell it from the test.
pub fn operator_caller() -> String {
    format!("system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}")
}

/// Scenarios that inject faults or count requests need kube-local.
pub fn real_cluster() -> Option<PathBuf> {
    std::env::var_os("INFERENCE_ACCESS_E2E_KUBECONFIG").map(PathBuf::from)
}

/// A namespace no other scenario of any run uses.
fn scenario_namespace() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("ia-e2e-{}-{n}-{nanos:x}", std::process::id())
}

pub fn skip_on_real_cluster(name: &str) -> bool {
    if real_cluster().is_some() {
        eprintln!("skipped {name}: needs kube-local's fault injection or request accounting");
        return true;
    }
    false
}

impl Env {
    pub async fn start() -> Self {
        Self::start_with(kube_local::ControlPlane::builder(), None).await
    }

    /// kube-local with RBAC enforced; the operator gets exactly `role` (the shipped
    /// config/rbac/role.yaml, or a test's edit of it) and the shipped leader-election Role.
    pub async fn start_with_rbac(role: ClusterRole) -> Self {
        Self::start_with(kube_local::ControlPlane::builder().rbac(true), Some(role)).await
    }

    /// kube-local with RBAC enforced and the chart installed by the real Helm as a cluster admin
    /// does (`helm install --wait`, no values); the operator runs as the chart's Deployment
    /// would (see `Rights::HelmRelease`). kube-local only: the chart's image is not run.
    pub async fn start_with_helm_release() -> Self {
        Self::start_full(
            kube_local::ControlPlane::builder().rbac(true),
            Rights::HelmRelease,
            &[],
        )
        .await
    }

    /// kube-local with RBAC enforced; the operator gets exactly the RBAC objects among
    /// `rendered` (what `helm template` prints, applied as they are: a scoped install's Roles)
    /// and runs with `operator_args` from its first start.
    pub async fn start_with_rendered_rbac(
        rendered: &[serde_json::Value],
        operator_args: &[&str],
    ) -> Self {
        Self::start_full(
            kube_local::ControlPlane::builder().rbac(true),
            Rights::Rendered(rendered.to_vec()),
            operator_args,
        )
        .await
    }

    pub async fn start_with(
        builder: kube_local::Builder,
        operator_role: Option<ClusterRole>,
    ) -> Self {
        let rights = match operator_role {
            Some(role) => Rights::Cluster(Box::new(role)),
            None => Rights::Unbound,
        };
        Self::start_full(builder, rights, &[]).await
    }

    async fn start_full(
        builder: kube_local::Builder,
        rights: Rights,
        operator_args: &[&str],
    ) -> Self {
        let dir = tempdir::Dir::new();
        let admin_kubeconfig = dir.path().join("admin.kubeconfig");
        let plane = match real_cluster() {
            Some(path) => {
                std::fs::copy(path, &admin_kubeconfig).unwrap();
                None
            }
            None => {
                let plane = builder.start().await.unwrap();
                plane.write_kubeconfig(&admin_kubeconfig).unwrap();
                Some(plane)
            }
        };
        let client = client_for(&admin_kubeconfig).await;
        if matches!(rights, Rights::HelmRelease) {
            // The chart's crds/ is what installs the CRD.
            helm(
                &dir,
                &[
                    "install",
                    RELEASE,
                    &packaging_tests::chart_dir().to_string_lossy(),
                    "--namespace",
                    OPERATOR_NS,
                    "--create-namespace",
                    "--wait",
                    "--timeout",
                    "60s",
                ],
            )
            .await;
        } else {
            install_crd(&client).await;
        }
        let ns = match &plane {
            Some(_) => NS.to_owned(),
            None => {
                let name = scenario_namespace();
                apply_scenario_namespace(&client, &name).await;
                name
            }
        };
        let mut operator_args: Vec<String> =
            operator_args.iter().map(|a| (*a).to_owned()).collect();
        let operator_kubeconfig = match &plane {
            Some(plane) => {
                let token = match rights {
                    Rights::HelmRelease => {
                        let (token, flags) = chart_operator(&client).await;
                        operator_args = flags;
                        token
                    }
                    rights => {
                        let token = operator_token(&client).await;
                        match rights {
                            Rights::Cluster(role) => bind_operator_rbac(&client, *role).await,
                            Rights::Rendered(objects) => {
                                apply_rendered_rbac(&client, &objects).await
                            }
                            Rights::Unbound | Rights::HelmRelease => {}
                        }
                        token
                    }
                };
                let path = dir.path().join("operator.kubeconfig");
                std::fs::write(&path, plane.kubeconfig_for_token(&token)).unwrap();
                path
            }
            None => admin_kubeconfig.clone(),
        };
        let mut env = Self {
            plane,
            client,
            dir,
            operator: None,
            operator_kubeconfig,
            operator_args,
            ns,
            more_ns: std::sync::Mutex::default(),
        };
        env.start_operator();
        env
    }

    pub fn plane(&self) -> &kube_local::ControlPlane {
        self.plane
            .as_ref()
            .expect("this scenario runs on kube-local only")
    }

    /// Every request the operator sent, in order (kube-local's request log).
    pub fn operator_requests(&self) -> Vec<kube_local::Request> {
        self.plane()
            .requests()
            .snapshot()
            .into_iter()
            .filter(|r| r.caller == operator_caller())
            .collect()
    }

    /// A client with the operator's own credentials (on kube-local, its ServiceAccount token):
    /// what the operator's rights let it do.
    pub async fn operator_client(&self) -> Client {
        client_for(&self.operator_kubeconfig).await
    }

    pub fn start_operator(&mut self) {
        let extra: Vec<&str> = self.operator_args.iter().map(String::as_str).collect();
        self.operator = Some(self.spawn_operator("operator", &extra));
    }

    /// Restarts the operator with these controller flags from now on (e.g. the limits a test's
    /// gateway needs).
    pub async fn restart_operator_with(&mut self, args: &[&str]) {
        self.stop_operator().await;
        self.operator_args = args.iter().map(|a| (*a).to_owned()).collect();
        self.start_operator();
    }

    /// `helm upgrade --reuse-values --wait` of the release `start_with_helm_release` installed,
    /// with `set` values; then the operator runs as the rolled-out Deployment would: its new
    /// flags, and a token bound to its new Pod (the old Pod's token died with it).
    pub async fn helm_upgrade(&mut self, set: &[&str]) {
        self.stop_operator().await;
        let chart = packaging_tests::chart_dir();
        let mut args = vec![
            "upgrade",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            OPERATOR_NS,
            "--reuse-values",
            "--wait",
            "--timeout",
            "60s",
        ];
        for value in set {
            args.extend(["--set", value]);
        }
        helm(&self.dir, &args).await;
        let (token, flags) = chart_operator(&self.client).await;
        std::fs::write(
            &self.operator_kubeconfig,
            self.plane().kubeconfig_for_token(&token),
        )
        .unwrap();
        self.operator_args = flags;
        self.start_operator();
    }

    /// Another operator process, named `name` (its POD_NAME, so its Lease identity), with
    /// extra controller flags; the caller owns it and it dies with its handle.
    pub fn spawn_operator(&self, name: &str, extra: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_inference-access"))
            .args([
                "controller",
                "--log-level",
                "info,inference_access=debug",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            // On a shared cluster each scenario's operator keeps to its namespace.
            .args(
                self.plane
                    .is_none()
                    .then_some(["--namespaces", self.ns.as_str()])
                    .into_iter()
                    .flatten(),
            )
            .env("KUBECONFIG", &self.operator_kubeconfig)
            .env("POD_NAME", name)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.operator_log())
            .kill_on_drop(true)
            .spawn()
            .expect("the operator binary starts")
    }

    /// The operator's log, appended across restarts; printed when a test fails.
    fn operator_log(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("operator.log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::inherit())
    }

    pub async fn stop_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            child.kill().await.unwrap();
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The scenario's namespace (`NS` on kube-local).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Another namespace for this scenario (a consumer's, a third party's), created now: `role`
    /// itself on the scenario's own kube-local; on a shared cluster a fresh one of its own, so
    /// runs never meet, deleted with the scenario's namespace.
    pub async fn second_ns(&self, role: &str) -> String {
        let name = match &self.plane {
            Some(_) => role.to_owned(),
            None => format!("{}-{role}", scenario_namespace()),
        };
        apply_scenario_namespace(&self.client, &name).await;
        self.more_ns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.clone());
        name
    }

    /// Applies every document of a YAML file as the test user (server-side apply).
    pub async fn apply_file(&self, path: &Path) {
        let text = std::fs::read_to_string(path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            if value.is_null() {
                continue;
            }
            self.apply_value(value).await;
        }
    }

    pub async fn apply_value(&self, mut value: serde_json::Value) {
        // The examples name the sample's namespace: on a shared cluster, the scenario's own.
        if value["metadata"]["namespace"] == NS {
            value["metadata"]["namespace"] = json!(self.ns);
        }
        if value["kind"] == "Namespace" && value["metadata"]["name"] == NS {
            value["metadata"]["name"] = json!(self.ns);
        }
        let params = PatchParams::apply("e2e-test").force();
        let name = value["metadata"]["name"].as_str().unwrap().to_owned();
        match value["kind"].as_str().unwrap() {
            "Namespace" => {
                Api::<Namespace>::all(self.client.clone())
                    .patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .unwrap();
            }
            "InferenceAccess" => {
                self.api::<InferenceAccess>()
                    .patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .unwrap();
            }
            "Deployment" => {
                self.api::<k8s_openapi::api::apps::v1::Deployment>()
                    .patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .unwrap();
            }
            "StatefulSet" => {
                self.api::<k8s_openapi::api::apps::v1::StatefulSet>()
                    .patch(&name, &params, &Patch::Apply(&value))
                    .await
                    .unwrap();
            }
            other => panic!("apply_value: unexpected kind {other}"),
        }
    }

    /// The sample, as a user applies it.
    pub async fn apply_example(&self) {
        self.apply_file(&repo("examples/sklearn-iris.yaml")).await;
    }

    /// The sample's file as `kubectl apply -f` should get it here: the repository's, or on a
    /// shared cluster a copy naming the scenario's namespace.
    pub fn example_file(&self) -> PathBuf {
        let original = repo("examples/sklearn-iris.yaml");
        if self.plane.is_some() {
            return original;
        }
        let text = std::fs::read_to_string(&original).unwrap();
        let copy = self.dir.path().join("sklearn-iris.yaml");
        std::fs::write(
            &copy,
            text.replace(
                &format!("namespace: {NS}"),
                &format!("namespace: {}", self.ns),
            ),
        )
        .unwrap();
        copy
    }

    /// Runs the real kubectl as the admin; its output, or a failed test with it.
    pub async fn kubectl(&self, args: Vec<String>) -> String {
        let kubectl = packaging_tests::tool_path(packaging_tests::Tool::Kubectl)
            .unwrap_or_else(|err| panic!("{err}"));
        // Async: kube-local serves from this test's own runtime, so a blocking wait would
        // starve it.
        let out = Command::new(&kubectl)
            .args(&args)
            .env("KUBECONFIG", self.dir.path().join("admin.kubeconfig"))
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "kubectl {args:?} failed:\n{text}");
        text
    }

    pub async fn wait_ready(&self, name: &str) -> InferenceAccess {
        wait_for(&self.api::<InferenceAccess>(), name, is_ready()).await
    }

    /// How much the operator has logged so far: a mark for `wait_log`.
    pub fn log_mark(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("operator.log"))
            .map(|log| log.len())
            .unwrap_or_default()
    }

    /// The first line logged after `mark` that contains `needle`. The log has no change
    /// notification, so this reads it on a short tick until the deadline.
    pub async fn wait_log(&self, mark: usize, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            let log =
                std::fs::read_to_string(self.dir.path().join("operator.log")).unwrap_or_default();
            let line = log
                .get(mark..)
                .and_then(|new| new.lines().find(|l| l.contains(needle)));
            if let Some(line) = line {
                return line.to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the operator did not log {needle:?} within {WAIT:?}"
            );
            tick.tick().await;
        }
    }

    /// Where the operator serves /metrics, /healthz and /readyz: it logs the address before it
    /// does anything else.
    pub async fn ops_addr(&self) -> String {
        let line = self.wait_log(0, "serving /metrics").await;
        line.rsplit("addr=")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("operator.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("--- operator log (last {} lines) ---", tail.len());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        if let Some(child) = self.operator.as_mut() {
            let _ = child.start_kill();
        }
        if self.plane.is_none() {
            // Best effort, not waited for: the next run uses other namespaces anyway.
            if let Ok(kubectl) = packaging_tests::tool_path(packaging_tests::Tool::Kubectl) {
                let mut namespaces = vec!["delete".to_owned(), "namespace".to_owned()];
                namespaces.push(self.ns.clone());
                namespaces.extend(
                    self.more_ns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .cloned(),
                );
                namespaces.push("--wait=false".to_owned());
                let _ = std::process::Command::new(kubectl)
                    .args(&namespaces)
                    .env("KUBECONFIG", self.dir.path().join("admin.kubeconfig"))
                    .output();
            }
        }
    }
}

/// The data path: kube-local, the real KServe model server and the gateway double.
pub struct DataPath {
    pub env: Env,
    pub gateway: mesh_local::Gateway,
    _model: mesh_local::ModelServer,
}

impl DataPath {
    pub async fn start(builder: kube_local::Builder) -> Self {
        Self::start_with_login(builder, mesh_local::LoginConfig::default()).await
    }

    pub async fn start_with_login(
        builder: kube_local::Builder,
        login: mesh_local::LoginConfig,
    ) -> Self {
        Self::start_configured(builder, |gateway| gateway.login(login)).await
    }

    /// With the gateway double configured by `configure` (e.g. Gateway API gateways it plays).
    pub async fn start_configured(
        builder: kube_local::Builder,
        configure: impl FnOnce(mesh_local::GatewayBuilder) -> mesh_local::GatewayBuilder,
    ) -> Self {
        let mut data = Self::around(Env::start_with(builder, None).await, configure).await;
        // The cluster admin allows credentials to go to this gateway, as a real install allows
        // the in-cluster ingress gateway.
        let url = data.gateway.url();
        data.env
            .restart_operator_with(&["--allowed-gateways", &url])
            .await;
        data
    }

    /// The model server and the gateway double (configured by `configure`) around `env`, with
    /// the sample's namespace; the operator keeps the flags it has.
    pub async fn around(
        env: Env,
        configure: impl FnOnce(mesh_local::GatewayBuilder) -> mesh_local::GatewayBuilder,
    ) -> Self {
        env.apply_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
            .await;
        let model = mesh_local::ModelServer::start().await.unwrap();
        let gateway = configure(
            mesh_local::Gateway::builder()
                .kube_client(env.client.clone())
                .upstream(&model.url()),
        )
        .start()
        .await
        .unwrap();
        Self {
            env,
            gateway,
            _model: model,
        }
    }

    /// The sample's access, pointed at the local gateway, in `mode`.
    pub async fn apply(&self, mode: &str) {
        self.apply_sample(json!({"mesh": {"mode": mode}})).await;
    }

    /// The sample's access, pointed at the local gateway, with `extra` spec fields.
    pub async fn apply_sample(&self, extra: serde_json::Value) {
        let mut spec = json!({
            "inferenceService": {"name": "sklearn-iris", "template": {"spec": {"predictor": {"model": {
                "modelFormat": {"name": "sklearn"},
                "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}}},
            "gateway": {"url": self.gateway.url()},
        });
        for (key, value) in extra.as_object().into_iter().flatten() {
            spec[key] = value.clone();
        }
        self.env
            .apply_value(json!({
                "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
                "metadata": {"name": ACCESS, "namespace": NS},
                "spec": spec,
            }))
            .await;
    }

    pub async fn wait_endpoint(&self, reason: &'static str) -> InferenceAccess {
        wait_for(
            &self.env.api::<InferenceAccess>(),
            ACCESS,
            move |a: Option<&InferenceAccess>| {
                a.and_then(|a| a.status.as_ref()).is_some_and(|s| {
                    s.observed_generation == a.and_then(|a| a.metadata.generation)
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "EndpointVerified" && c.reason == reason)
                })
            },
        )
        .await
    }
}

pub async fn client_for(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

async fn install_crd(client: &Client) {
    let crd: CustomResourceDefinition = serde_yaml::from_str(
        &std::fs::read_to_string(repo("crds/inference-access.io_inferenceaccesses.yaml")).unwrap(),
    )
    .unwrap();
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    api.patch(
        "inferenceaccesses.inference-access.io",
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    wait_for(
        &api,
        "inferenceaccesses.inference-access.io",
        |crd: Option<&CustomResourceDefinition>| {
            crd.and_then(|c| c.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        },
    )
    .await;
}

/// The operator's shipped ClusterRole.
pub fn shipped_role() -> ClusterRole {
    serde_yaml::from_str(&std::fs::read_to_string(repo("config/rbac/role.yaml")).unwrap()).unwrap()
}

/// Grants the operator's ServiceAccount `role`, cluster-wide, as the chart's binding does.
async fn bind_operator_rbac(client: &Client, role: ClusterRole) {
    let params = PatchParams::apply("e2e-test").force();
    let name = role.metadata.name.clone().unwrap();
    Api::<ClusterRole>::all(client.clone())
        .patch(&name, &params, &Patch::Apply(&role))
        .await
        .unwrap();
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": OPERATOR_NS}],
    });
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(&name, &params, &Patch::Apply(&binding))
        .await
        .unwrap();
    // The shipped leader-election Role, in the operator's namespace.
    let role: Role = serde_yaml::from_str(
        &std::fs::read_to_string(repo("config/rbac/leader_election_role.yaml")).unwrap(),
    )
    .unwrap();
    let role_name = role.metadata.name.clone().unwrap();
    Api::<Role>::namespaced(client.clone(), OPERATOR_NS)
        .patch(&role_name, &params, &Patch::Apply(&role))
        .await
        .unwrap();
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": role_name, "namespace": OPERATOR_NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": OPERATOR_NS}],
    });
    Api::<RoleBinding>::namespaced(client.clone(), OPERATOR_NS)
        .patch(&role_name, &params, &Patch::Apply(&binding))
        .await
        .unwrap();
}

/// Applies the Roles, RoleBindings, ClusterRoles and ClusterRoleBindings among `objects` as they
/// are (creating the namespaces they name), and nothing else.
async fn apply_rendered_rbac(client: &Client, objects: &[serde_json::Value]) {
    let params = PatchParams::apply("e2e-test").force();
    for object in objects {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = object["metadata"]["namespace"].as_str();
        if let Some(namespace) = namespace {
            let ns =
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
            Api::<Namespace>::all(client.clone())
                .patch(namespace, &params, &Patch::Apply(&ns))
                .await
                .unwrap();
        }
        let namespace = namespace.unwrap_or_default();
        let patch = Patch::Apply(object);
        match object["kind"].as_str().unwrap_or_default() {
            "Role" => {
                Api::<Role>::namespaced(client.clone(), namespace)
                    .patch(name, &params, &patch)
                    .await
                    .unwrap();
            }
            "RoleBinding" => {
                Api::<RoleBinding>::namespaced(client.clone(), namespace)
                    .patch(name, &params, &patch)
                    .await
                    .unwrap();
            }
            "ClusterRole" => {
                Api::<ClusterRole>::all(client.clone())
                    .patch(name, &params, &patch)
                    .await
                    .unwrap();
            }
            "ClusterRoleBinding" => {
                Api::<ClusterRoleBinding>::all(client.clone())
                    .patch(name, &params, &patch)
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
}

/// The Helm release `start_with_helm_release` installs: named so that its objects are the
/// operator's usual `OPERATOR_NS/OPERATOR_SA`.
const RELEASE: &str = "inference-access";

/// Runs the real Helm as the admin, with its caches in the test's directory; fails the test
/// with Helm's output.
async fn helm(dir: &tempdir::Dir, args: &[&str]) -> String {
    let helm = packaging_tests::tool_path(packaging_tests::Tool::Helm)
        .unwrap_or_else(|err| panic!("{err}"));
    let home = dir.path().join("helm");
    // Async: kube-local serves from this test's own runtime.
    let out = Command::new(&helm)
        .args(args)
        .env("KUBECONFIG", dir.path().join("admin.kubeconfig"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {args:?} failed:\n{text}");
    text
}

/// The controller flags of the chart's container, but those the harness sets itself (where to
/// serve metrics, how to log).
pub fn controller_flags(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|arg| {
            *arg != "controller"
                && !["--metrics-addr", "--log-level", "--log-format"]
                    .iter()
                    .any(|flag| arg.starts_with(flag))
        })
        .map(str::to_owned)
        .collect()
}

/// What the kubelet would give the installed chart's operator: a token of the Deployment's
/// ServiceAccount bound to its running Pod; and the Deployment's controller flags.
async fn chart_operator(client: &Client) -> (String, Vec<String>) {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::authentication::v1::BoundObjectReference;
    use k8s_openapi::api::core::v1::Pod;
    let deployment = Api::<Deployment>::namespaced(client.clone(), OPERATOR_NS)
        .get(RELEASE)
        .await
        .unwrap();
    let deployment = serde_json::to_value(&deployment).unwrap();
    let pod_spec = &deployment["spec"]["template"]["spec"];
    let sa = pod_spec["serviceAccountName"].as_str().unwrap().to_owned();
    let selector: Vec<String> = deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    // `helm --wait` returned, so the rollout is done: one Pod of the current template.
    let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NS)
        .list(&kube::api::ListParams::default().labels(&selector.join(",")))
        .await
        .unwrap();
    let pod = match pods.items.as_slice() {
        [pod] => pod,
        other => panic!("the chart's Deployment runs {} Pods", other.len()),
    };
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let response: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), OPERATOR_NS)
        .create_subresource("token", &sa, &PostParams::default(), &request)
        .await
        .unwrap();
    (
        response.status.unwrap().token,
        controller_flags(&deployment),
    )
}

/// A ServiceAccount token for the operator, so requests are accounted to it.
async fn operator_token(client: &Client) -> String {
    let namespaces = Api::<Namespace>::all(client.clone());
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NS}});
    namespaces
        .patch(
            OPERATOR_NS,
            &PatchParams::apply("e2e-test"),
            &Patch::Apply(&ns),
        )
        .await
        .unwrap();
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), OPERATOR_NS);
    let sa = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": OPERATOR_SA}});
    sas.patch(
        OPERATOR_SA,
        &PatchParams::apply("e2e-test"),
        &Patch::Apply(&sa),
    )
    .await
    .unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600 * 24),
            ..Default::default()
        },
        ..Default::default()
    };
    let response: TokenRequest = sas
        .create_subresource("token", OPERATOR_SA, &PostParams::default(), &request)
        .await
        .unwrap();
    response.status.unwrap().token
}

/// Waits (on a watch) until `condition` holds for the object, or fails after `WAIT`. A watch
/// that breaks (the API server away during a fault test) is started again until the deadline.
pub async fn wait_for<K, C>(api: &Api<K>, name: &str, condition: C) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    C: Condition<K> + Clone,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut retry = tokio::time::interval(Duration::from_millis(200));
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, await_condition(api.clone(), name, condition.clone()))
            .await
        {
            Ok(Ok(Some(object))) => return object,
            Ok(Ok(None)) => panic!("{name} does not exist"),
            Ok(Err(err)) if !left.is_zero() => {
                eprintln!("watching {name} broke ({err}); watching again");
                retry.tick().await;
            }
            Ok(Err(err)) => panic!("watching {name}: {err}"),
            Err(_) => {
                let current = api.get_opt(name).await.ok().flatten();
                panic!("timed out after {WAIT:?} waiting on {name}; it is now: {current:#?}")
            }
        }
    }
}

/// Waits until the credential Secret's `key` holds something other than `old`.
pub async fn wait_secret_key_changed(api: &Api<Secret>, key: &'static str, old: String) -> Secret {
    let changed = move |s: Option<&Secret>| {
        s.and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(key))
            .is_some_and(|v| v.0 != old.as_bytes())
    };
    wait_for(api, SECRET, changed).await
}

/// Waits until an object is gone.
pub async fn wait_deleted<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let gone = tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), name, |o: Option<&K>| o.is_none()),
    )
    .await;
    assert!(
        matches!(gone, Ok(Ok(_))),
        "{name} was not deleted within {WAIT:?}"
    );
}

pub fn is_ready() -> impl Condition<InferenceAccess> + Clone {
    condition_is("Ready", "True")
}

pub fn condition_is(
    type_: &'static str,
    status: &'static str,
) -> impl Condition<InferenceAccess> + Clone {
    move |access: Option<&InferenceAccess>| {
        access.and_then(|a| a.status.as_ref()).is_some_and(|s| {
            s.observed_generation == access.and_then(|a| a.metadata.generation)
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == status)
        })
    }
}

pub fn condition_reason(
    type_: &'static str,
    reason: &'static str,
) -> impl Condition<InferenceAccess> + Clone {
    move |access: Option<&InferenceAccess>| {
        access.and_then(|a| a.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == type_ && c.reason == reason)
        })
    }
}

pub fn reason_of(access: &InferenceAccess, type_: &str) -> String {
    access
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

pub fn secret_text(secret: &Secret, key: &str) -> String {
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("Secret has no {key}"));
    String::from_utf8(value.0.clone()).unwrap()
}

/// The claims of a JWT, decoded without verification (the test reads what was minted).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Waits until the request log holds a request matching `pred` after `mark`. The log has no
/// change notification, so this checks it on a short tick until the deadline.
pub async fn wait_request(
    plane: &kube_local::ControlPlane,
    mark: u64,
    pred: impl Fn(&kube_local::Request) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !plane.requests().since(mark).iter().any(&pred) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no matching request within {WAIT:?}: {:#?}",
            plane.requests().since(mark)
        );
        tick.tick().await;
    }
}

/// Server-side applies any object as the test (the cluster admin, or KServe).
pub async fn apply_object(env: &Env, value: Value) -> DynamicObject {
    let api_version = value["apiVersion"].as_str().unwrap();
    let kind = value["kind"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "GatewayClass" => "gatewayclasses".to_owned(),
        "Gateway" | "Service" | "HTTPRoute" | "ReferenceGrant" | "RequestAuthentication" => {
            format!("{}s", kind.to_ascii_lowercase())
        }
        "InferenceService" => "inferenceservices".to_owned(),
        "AuthorizationPolicy" => "authorizationpolicies".to_owned(),
        "LLMInferenceService" => "llminferenceservices".to_owned(),
        "Pod" => "pods".to_owned(),
        "Namespace" => "namespaces".to_owned(),
        other => panic!("apply: unexpected kind {other}"),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
    let name = value["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match value["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(env.client.clone(), ns, &resource),
        None => Api::all_with(env.client.clone(), &resource),
    };
    api.patch(
        name,
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(&value),
    )
    .await
    .unwrap_or_else(|err| panic!("apply {kind} {name}: {err}"))
}

/// Runs `inference-access doctor NAME -o json` as the admin: whether it exited 0, its report,
/// and its output as printed.
pub async fn doctor(env: &Env, name: &str) -> (bool, serde_json::Value, String) {
    doctor_in(env, env.ns(), name).await
}

/// [`doctor`] for an access in `namespace`.
pub async fn doctor_in(
    env: &Env,
    namespace: &str,
    name: &str,
) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_inference-access"))
        .args([
            "doctor",
            name,
            "-n",
            namespace,
            "-o",
            "json",
            "--kubeconfig",
        ])
        .arg(env.dir.path().join("admin.kubeconfig"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}): {stdout}"));
    (out.status.success(), report, stdout)
}

pub mod tempdir {
    use std::path::{Path, PathBuf};

    /// A directory removed on drop, without another dependency.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let base = std::env::temp_dir().join(format!(
                "inference-access-e2e-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&base).unwrap();
            Self(base)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Creates (or keeps) one of a scenario's namespaces, labelled as the e2e suite's.
async fn apply_scenario_namespace(client: &Client, name: &str) {
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": name, "labels": {"inference-access.io/e2e": "true"}}});
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("e2e-test"),
            &Patch::Apply(&namespace),
        )
        .await
        .unwrap();
}
