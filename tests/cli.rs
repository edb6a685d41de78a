//! The client commands as people run them: the real binary as a subprocess, against kube-local
//! (a real HTTP Kubernetes API), the mesh-local gateway and Dex doubles, and the real KServe
//! model server. Exit codes, human output and `-o json` are asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use inference_access::api::keys as labels;
use inference_access::api::{AuthorizationPolicy, InferenceService};
use inference_access::api::{DEFAULT_AUDIENCE, InferenceAccess};
use inference_access::core::credential::Credential;
use inference_access::core::credential::{Inputs, IssuedCredential, Record, TokenRequestInputs};
use inference_access::core::endpoint::Endpoint;
use inference_access::core::secret_codec::encode;
use inference_access::core::url::HttpUrl;
use inference_access::gateway::client::GatewayClient;
use inference_access::gateway::probe;
use inference_access::reconcile::build as desired;
use inference_access::reconcile::limits::Limits;
use inference_access::reconcile::plan::{self, IdentityPlan, MeshPlan, Plan, service_account_user};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use mesh_local::{Flavour, Gateway, LdapUser, LoginConfig, ModelServer, StaticUser};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

const NS: &str = "kubeflow-user-example-com";
const MODEL: &str = "sklearn-iris";
const HOST: &str = "sklearn-iris.kubeflow-user-example-com.example.com";
const USER: &str = "user@example.com";
const PASSWORD: &str = "12341234";
const WAIT: Duration = Duration::from_secs(30);
const V2_INPUT: &str = r#"{"inputs":[{"name":"input-0","shape":[2,4],"datatype":"FP32","data":[6.8,2.8,4.8,1.4,6.0,3.4,4.5,1.6]}]}"#;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "inference-access-cli-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "exit {}; stderr: {}", self.code, self.stderr);
        &self.stdout
    }

    fn failed(&self) -> &str {
        assert_ne!(self.code, 0, "expected a failure; stdout: {}", self.stdout);
        &self.stderr
    }
}

/// Runs the binary (as `program`, for the kubectl plugin name) without blocking the runtime the
/// control plane and gateway serve on.
async fn run_as(program: &Path, args: &[&str], kubeconfig: Option<&Path>, stdin: &str) -> Run {
    let env: Vec<(&str, &OsStr)> = kubeconfig
        .map(|path| ("KUBECONFIG", path.as_os_str()))
        .into_iter()
        .collect();
    run_with_env(program, args, &env, stdin).await
}

/// Runs `program` with `env` (and KUBECONFIG only when `env` sets it), as [`run_as`].
async fn run_with_env(program: &Path, args: &[&str], env: &[(&str, &OsStr)], stdin: &str) -> Run {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_remove("KUBECONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the command finishes")
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_inference-access"))
}

async fn run(args: &[&str], kubeconfig: Option<&Path>) -> Run {
    run_as(&binary(), args, kubeconfig, "").await
}

// --- offline commands ---------------------------------------------------------------------

#[tokio::test]
async fn render_prints_the_objects_with_secret_values_redacted() {
    let example = repo("examples/sklearn-iris.yaml");
    let example = example.to_str().unwrap();
    let human = run(&["render", "-f", example], None).await;
    let text = human.ok();
    assert!(text.starts_with("---\n"), "{text}");
    for needle in [
        "kind: InferenceService",
        "kind: ServiceAccount",
        "kind: Secret",
        "kind: AuthorizationPolicy",
        "token: <redacted>",
        "authorization: <redacted>",
        "predict-url: http://istio-ingressgateway.istio-system.svc.cluster.local/v1/models/sklearn-iris:predict",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    assert!(!text.contains("\ndata:"), "{text}");

    let json_run = run(&["render", "-f", example, "-o", "json"], None).await;
    let list: Value = serde_json::from_str(json_run.ok()).unwrap();
    let kinds: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "InferenceService",
            "ServiceAccount",
            "Secret",
            "AuthorizationPolicy"
        ]
    );
    assert_eq!(
        list["items"][3]["spec"]["rules"][0]["when"][0]["values"],
        json!(["system:serviceaccount:kubeflow-user-example-com:sklearn-iris-client"])
    );
}

#[tokio::test]
async fn invalid_input_and_usage_errors_exit_non_zero_and_say_what_to_do() {
    let dir = TempDir::new();
    let bad = dir.0.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: inference-access.io/v1alpha1\nkind: InferenceAccess\nmetadata: {name: a}\n\
         spec: {inferenceService: {name: m}, token: {duration: 5m}}\n",
    )
    .unwrap();
    let invalid = run(&["render", "-f", bad.to_str().unwrap()], None).await;
    assert_eq!(invalid.code, 1);
    assert!(
        invalid.failed().contains("at least 10m"),
        "{}",
        invalid.stderr
    );

    let missing = run(&["render", "-f", "/nonexistent/access.yaml"], None).await;
    assert!(
        missing
            .failed()
            .contains("cannot read /nonexistent/access.yaml")
    );

    // clap's usage errors: exit 2 and the flag that is missing.
    let no_body = run(&["predict", "x"], None).await;
    assert_eq!(no_body.code, 2, "{}", no_body.stderr);
    assert!(no_body.stderr.contains("--data"), "{}", no_body.stderr);
    let no_stdin_flag = run(
        &["login", "--url", "http://127.0.0.1:1", "--username", "u"],
        None,
    )
    .await;
    assert_eq!(no_stdin_flag.code, 2);
    assert!(
        no_stdin_flag.stderr.contains("--password-stdin"),
        "{}",
        no_stdin_flag.stderr
    );

    // No cluster configured: the error names the setting to fix.
    let dir_kubeconfig = dir.0.join("missing.kubeconfig");
    let no_cluster = run(&["status", "x"], Some(&dir_kubeconfig)).await;
    assert!(
        no_cluster.failed().contains("kubeconfig"),
        "{}",
        no_cluster.stderr
    );
}

#[tokio::test]
async fn the_binary_works_as_the_kubectl_plugin() {
    let dir = TempDir::new();
    let plugin = dir.0.join("kubectl-inference_access");
    std::os::unix::fs::symlink(binary(), &plugin).unwrap();
    let example = repo("examples/sklearn-iris.yaml");
    let direct = run(
        &["render", "-f", example.to_str().unwrap(), "-o", "yaml"],
        None,
    )
    .await;
    let as_plugin = run_as(
        &plugin,
        &["render", "-f", example.to_str().unwrap(), "-o", "yaml"],
        None,
        "",
    )
    .await;
    // Only the example token's issue time differs between two runs.
    let strip = |text: &str| {
        text.lines()
            .filter(|l| !l.contains("issued-at") && !l.contains("expires-at"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(as_plugin.ok()), strip(direct.ok()));
    let help = run_as(&plugin, &["--help"], None, "").await;
    assert!(
        help.ok().contains("kubectl-inference_access"),
        "{}",
        help.stdout
    );
}

// --- Dex login through the gateway --------------------------------------------------------

async fn login_gateway(plane: &kube_local::ControlPlane, flavour: Flavour) -> Gateway {
    Gateway::builder()
        .api_server(&plane.url(), &plane.admin_token())
        .upstream("http://127.0.0.1:9")
        .login(LoginConfig {
            flavour,
            // Both connectors: Dex shows its connector list, so --connector matters.
            static_users: vec![StaticUser {
                email: USER.into(),
                password: PASSWORD.into(),
            }],
            ldap_users: vec![LdapUser {
                username: "jane".into(),
                password: "ldap-secret".into(),
                email: "jane@example.com".into(),
            }],
            ..LoginConfig::default()
        })
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn login_prints_the_session_cookie_for_both_front_ends() {
    let plane = kube_local::ControlPlane::builder().start().await.unwrap();
    for flavour in [Flavour::OAuth2Proxy, Flavour::AuthService] {
        let gateway = login_gateway(&plane, flavour).await;
        let url = gateway.url();
        let cookie_name = flavour.session_cookie();

        let local = run_as(
            &binary(),
            &[
                "login",
                "--url",
                &url,
                "--username",
                USER,
                "--password-stdin",
            ],
            None,
            &format!("{PASSWORD}\n"),
        )
        .await;
        let cookie = local.ok().trim().to_owned();
        let value = cookie
            .strip_prefix(&format!("{cookie_name}="))
            .unwrap_or_else(|| panic!("{cookie}"));
        assert!(!value.is_empty());
        // The cookie is a live session: the gateway lets it through to the dashboard.
        let client = GatewayClient::new().unwrap();
        let home = client
            .get(&format!("{url}/"), &[("cookie", &cookie)])
            .await
            .unwrap();
        assert_eq!(home.status, 200, "{flavour:?}");

        let ldap = run_as(
            &binary(),
            &[
                "login",
                "--url",
                &url,
                "--username",
                "jane",
                "--password-stdin",
                "--connector",
                "ldap",
                "-o",
                "json",
            ],
            None,
            "ldap-secret",
        )
        .await;
        let session: Value = serde_json::from_str(ldap.ok()).unwrap();
        assert_eq!(session["cookieName"], cookie_name, "{flavour:?}");
        let expires: jiff::Timestamp = session["expiresAt"].as_str().unwrap().parse().unwrap();
        let in_a_day = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
        assert!(
            expires.duration_since(in_a_day).abs() < jiff::SignedDuration::from_mins(5),
            "{expires}"
        );

        let wrong = run_as(
            &binary(),
            &[
                "login",
                "--url",
                &url,
                "--username",
                USER,
                "--password-stdin",
            ],
            None,
            "not-the-password-4711\n",
        )
        .await;
        let stderr = wrong.failed();
        assert_eq!(wrong.code, 1);
        assert!(
            stderr.contains("login was refused")
                && stderr.contains("check the username and password"),
            "{stderr}"
        );
        assert!(!stderr.contains("not-the-password-4711"), "{stderr}");
        assert!(wrong.stdout.is_empty());
        gateway.shutdown().await;
    }
}

// --- predict, token, curl, status, renew end to end ---------------------------------------

/// kube-local with the InferenceAccess CRD, the sample's InferenceService made ready by the
/// KServe stand-in, and a kubeconfig for the CLI.
struct World {
    plane: kube_local::ControlPlane,
    client: kube::Client,
    kubeconfig: PathBuf,
    _dir: TempDir,
}

impl World {
    async fn start() -> Self {
        let plane = kube_local::ControlPlane::builder()
            .load_crds(&[repo("crds/inference-access.io_inferenceaccesses.yaml")])
            .start()
            .await
            .unwrap();
        let dir = TempDir::new();
        let kubeconfig = dir.0.join("kubeconfig");
        plane.write_kubeconfig(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let world = Self {
            plane,
            client,
            kubeconfig,
            _dir: dir,
        };
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
        Api::<Namespace>::all(world.client.clone())
            .create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
            .await
            .unwrap();
        let isvc: InferenceService = serde_json::from_value(json!({
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": MODEL, "namespace": NS},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}
        }))
        .unwrap();
        let isvcs = world.api::<InferenceService>();
        isvcs.create(&PostParams::default(), &isvc).await.unwrap();
        let ready = |i: Option<&InferenceService>| i.is_some_and(|i| i.url().is_some());
        tokio::time::timeout(WAIT, await_condition(isvcs, MODEL, ready))
            .await
            .unwrap()
            .unwrap();
        world
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    /// An access as a user applies it, with the status the operator would publish.
    async fn access(&self, name: &str, spec: Value) -> InferenceAccess {
        let access: InferenceAccess = serde_json::from_value(json!({
            "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
            "metadata": {"name": name, "namespace": NS}, "spec": spec,
        }))
        .unwrap();
        let api = self.api::<InferenceAccess>();
        let created = api.create(&PostParams::default(), &access).await.unwrap();
        let status = json!({"status": {
            "secretName": plan::secret_name(&created),
            "serviceAccountName": match plan_of(&created).identity {
                IdentityPlan::ServiceAccount { name, .. } => name,
                IdentityPlan::DexUser { .. } => String::new(),
            },
            "tokenExpirationTime": "2030-01-01T00:00:00Z",
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap()
    }

    async fn token_for(&self, service_account: &str) -> (String, jiff::Timestamp) {
        let sas = self.api::<ServiceAccount>();
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account}});
        sas.patch(
            service_account,
            &PatchParams::apply("cli-test"),
            &Patch::Apply(&sa),
        )
        .await
        .unwrap();
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![DEFAULT_AUDIENCE.into()],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let issued: TokenRequest = sas
            .create_subresource("token", service_account, &PostParams::default(), &request)
            .await
            .unwrap();
        let status = issued.status.unwrap();
        (status.token, status.expiration_timestamp.0)
    }

    /// The Secret exactly as the operator writes it (desired::credential_secret), for a token of
    /// `service_account`, with the InferenceService URL `status_url` (a wrong one gives a 404).
    async fn credential(
        &self,
        access: &InferenceAccess,
        gateway: &str,
        status_url: &str,
        service_account: &str,
    ) -> String {
        let (token, expires_at) = self.token_for(service_account).await;
        let endpoint = Endpoint::resolve(status_url, gateway, MODEL).unwrap();
        let issued = IssuedCredential {
            value: Credential::Bearer(token.clone()),
            record: Record {
                issued_at: jiff::Timestamp::now(),
                expires_at,
                inputs: Inputs::ServiceAccountToken(TokenRequestInputs {
                    service_account: service_account.into(),
                    audiences: vec![DEFAULT_AUDIENCE.into()],
                    expiration_seconds: 3600,
                }),
                renew_request: None,
            },
        };
        let secret = desired::credential_secret(&plan_of(access), &encode(&issued, &endpoint));
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        token
    }

    async fn policy(&self, access: &InferenceAccess, service_account: &str) {
        let plan = plan_of(access);
        let MeshPlan::AuthorizationPolicy(mesh) = &plan.mesh else {
            panic!("{:?}", plan.mesh)
        };
        let policy =
            desired::authorization_policy(&plan, mesh, &service_account_user(NS, service_account));
        self.api::<AuthorizationPolicy>()
            .create(&PostParams::default(), &policy)
            .await
            .unwrap();
    }

    async fn cli(&self, args: &[&str]) -> Run {
        run(args, Some(&self.kubeconfig)).await
    }
}

/// The plan the operator would make, with the cluster admin allowing the test's gateway.
fn plan_of(access: &InferenceAccess) -> Plan {
    let gateway = HttpUrl::parse(&access.spec.gateway.url).unwrap();
    let limits = Limits {
        allowed_gateways: vec![gateway.origin()],
        ..Limits::default()
    };
    plan::validate(access, &limits).unwrap()
}

fn spec(gateway: &str) -> Value {
    json!({"inferenceService": {"name": MODEL}, "gateway": {"url": gateway}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_through_the_gateway_to_the_real_model() {
    let model = ModelServer::start().await.unwrap();
    let world = World::start().await;
    let gateway = Gateway::builder()
        .api_server(&world.plane.url(), &world.plane.admin_token())
        .upstream(&model.url())
        .audience(DEFAULT_AUDIENCE)
        .start()
        .await
        .unwrap();
    let gw = gateway.url();
    let url = format!("http://{HOST}");
    let iris = repo("tests/model-server/iris-input.json");
    let iris = iris.to_str().unwrap();

    // The sample, through the operator's Secret: {"predictions":[1,1]}.
    let access = world.access("sklearn-iris-client", spec(&gw)).await;
    let token = world
        .credential(&access, &gw, &url, "sklearn-iris-client")
        .await;
    world.policy(&access, "sklearn-iris-client").await;
    let predicted = world
        .cli(&["predict", "sklearn-iris-client", "-n", NS, "-f", iris])
        .await;
    assert_eq!(predicted.ok(), "{\"predictions\":[1,1]}\n");
    let as_json = world
        .cli(&[
            "predict",
            "sklearn-iris-client",
            "-n",
            NS,
            "--data",
            r#"{"instances":[[6.8,2.8,4.8,1.4]]}"#,
            "-o",
            "json",
        ])
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(as_json.ok()).unwrap(),
        json!({"predictions": [1]})
    );
    let v2 = world
        .cli(&[
            "predict",
            "sklearn-iris-client",
            "-n",
            NS,
            "--v2",
            "--data",
            V2_INPUT,
            "-o",
            "json",
        ])
        .await;
    let v2: Value = serde_json::from_str(v2.ok()).unwrap();
    assert_eq!(v2["outputs"][0]["data"], json!([1, 1]), "{v2}");
    // --gateway: the same paths on another address (as with a port-forward).
    let via = world
        .cli(&[
            "predict",
            "sklearn-iris-client",
            "-n",
            NS,
            "-f",
            iris,
            "--gateway",
            &gw,
        ])
        .await;
    assert_eq!(via.ok(), "{\"predictions\":[1,1]}\n");
    let from_stdin = run_as(
        &binary(),
        &["predict", "sklearn-iris-client", "-n", NS, "-f", "-"],
        Some(&world.kubeconfig),
        &std::fs::read_to_string(iris).unwrap(),
    )
    .await;
    assert_eq!(from_stdin.ok(), "{\"predictions\":[1,1]}\n");
    let not_json = world
        .cli(&[
            "predict",
            "sklearn-iris-client",
            "-n",
            NS,
            "--data",
            "instances",
        ])
        .await;
    assert!(
        not_json.failed().contains("not JSON"),
        "{}",
        not_json.stderr
    );

    // token: the token alone, for $(...).
    let printed = world.cli(&["token", "sklearn-iris-client", "-n", NS]).await;
    assert_eq!(printed.ok(), format!("{token}\n"));

    // curl: the sample's command, reading the token at run time.
    let curl = world.cli(&["curl", "sklearn-iris-client", "-n", NS]).await;
    let command = curl.ok();
    assert!(!command.contains(&token));
    assert!(command.contains(&format!("-H 'Host: {HOST}'")), "{command}");
    assert!(command.contains("kubectl get secret sklearn-iris-client-credential -n kubeflow-user-example-com -o jsonpath='{.data.token}' | base64 -d"), "{command}");
    assert!(
        command.contains(&format!("{gw}/v1/models/sklearn-iris:predict")),
        "{command}"
    );

    // status: keys without values, the policy, the InferenceService.
    let status = world
        .cli(&["status", "sklearn-iris-client", "-n", NS])
        .await;
    let text = status.ok();
    assert!(!text.contains(&token));
    for needle in [
        "Name:       sklearn-iris-client",
        "Keys (values hidden): authorization, expires-at, gateway-url, host, infer-url, predict-url, token, url",
        "AuthorizationPolicy:  sklearn-iris-client (exists)",
        &format!("URL:    {url}"),
        "Ready:  True",
        "Expires:         2030-01-01T00:00:00Z",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    let status_json = world
        .cli(&["status", "sklearn-iris-client", "-n", NS, "-o", "json"])
        .await;
    let report: Value = serde_json::from_str(status_json.ok()).unwrap();
    assert_eq!(report["credential"]["secretFound"], true);
    assert_eq!(report["inferenceService"]["url"], url.as_str());
    assert_eq!(report["policy"]["found"], true);

    // 403: a token of another identity, no policy lets it through the predictor's sidecar.
    let stranger = world.access("stranger", json!({"inferenceService": {"name": MODEL}, "gateway": {"url": gw}, "secretName": "stranger-credential"})).await;
    let stranger_token = world.credential(&stranger, &gw, &url, "stranger").await;
    let denied = world
        .cli(&["predict", "stranger", "-n", NS, "-f", iris])
        .await;
    let stderr = denied.failed();
    assert_eq!(denied.code, 1);
    assert!(
        stderr.contains("answered 403: AccessDenied")
            && stderr.contains("RBAC: access denied")
            && stderr.contains("DisableSidecarInjection"),
        "{stderr}"
    );
    assert!(!stderr.contains(&stranger_token));
    assert!(denied.stdout.is_empty());

    // 404: a Host the gateway has no route for.
    let lost = world.access("lost", spec(&gw)).await;
    world
        .credential(
            &lost,
            &gw,
            "http://sklearn-iris.kubeflow-user-example-com.svc.cluster.local",
            "lost",
        )
        .await;
    let not_found = world.cli(&["predict", "lost", "-n", NS, "-f", iris]).await;
    let stderr = not_found.failed();
    assert!(
        stderr.contains("answered 404: HostNotFound")
            && stderr.contains("sklearn-iris.kubeflow-user-example-com.svc.cluster.local")
            && stderr.contains("Knative"),
        "{stderr}"
    );

    // A DexSession credential: the cookie from `login`, sent as the Cookie header. Kubeflow's
    // profile policy (ns-owner-access-istio) lets the namespace owner's email through.
    let login = run_as(
        &binary(),
        &[
            "login",
            "--url",
            &gw,
            "--username",
            USER,
            "--password-stdin",
        ],
        None,
        PASSWORD,
    )
    .await;
    let cookie = login.ok().trim().to_owned();
    let owner = world.access("by-cookie", spec(&gw)).await;
    let endpoint = Endpoint::resolve(&url, &gw, MODEL).unwrap();
    let (name, value) = cookie.split_once('=').unwrap();
    let session = IssuedCredential {
        value: Credential::Cookie {
            name: name.into(),
            value: value.into(),
        },
        record: Record {
            issued_at: jiff::Timestamp::now(),
            expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
            inputs: Inputs::ServiceAccountToken(TokenRequestInputs {
                service_account: "unused".into(),
                audiences: vec![DEFAULT_AUDIENCE.into()],
                expiration_seconds: 3600,
            }),
            renew_request: None,
        },
    };
    let secret = desired::credential_secret(&plan_of(&owner), &encode(&session, &endpoint));
    world
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let ns_owner: AuthorizationPolicy = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "ns-owner-access-istio", "namespace": NS},
        "spec": {"rules": [{"when": [{"key": "request.headers[kubeflow-userid]", "values": [USER]}]}]}
    }))
    .unwrap();
    world
        .api::<AuthorizationPolicy>()
        .create(&PostParams::default(), &ns_owner)
        .await
        .unwrap();
    let by_cookie = world
        .cli(&["predict", "by-cookie", "-n", NS, "-f", iris])
        .await;
    assert_eq!(by_cookie.ok(), "{\"predictions\":[1,1]}\n");
    let curl = world.cli(&["curl", "by-cookie", "-n", NS]).await;
    assert!(
        curl.ok()
            .contains("\"Cookie: $(kubectl get secret by-cookie-credential"),
        "{}",
        curl.stdout
    );
    assert!(!curl.stdout.contains(&cookie));

    // The operator's endpoint probe against the same gateway: one diagnosis per FAQ entry.
    let client = GatewayClient::new().unwrap();
    let good = Endpoint::resolve(&url, &gw, MODEL).unwrap();
    let wrong_host = Endpoint::resolve(
        "http://sklearn-iris.kubeflow-user-example-com.svc.cluster.local",
        &gw,
        MODEL,
    )
    .unwrap();
    // The route exists (the Host is the model's), the model server knows no such model.
    let unknown_model = Endpoint::resolve(&url, &gw, "no-such-model").unwrap();
    let cookie_credential = {
        let (name, value) = cookie.split_once('=').unwrap();
        Credential::Cookie {
            name: name.into(),
            value: value.into(),
        }
    };
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let unreachable = Endpoint::resolve(&url, &closed, MODEL).unwrap();
    let cases = [
        (
            &good,
            Credential::Bearer(token.clone()),
            "EndpointReachable",
        ),
        (&good, cookie_credential, "EndpointReachable"),
        (
            &good,
            Credential::Bearer(stranger_token.clone()),
            "AccessDenied",
        ),
        (
            &wrong_host,
            Credential::Bearer(token.clone()),
            "HostNotFound",
        ),
        (
            &good,
            Credential::Bearer("not-a-jwt".into()),
            "Unauthenticated",
        ),
        (
            &good,
            Credential::Cookie {
                name: "oauth2_proxy_kubeflow".into(),
                value: "stale".into(),
            },
            "RedirectedToLogin",
        ),
        (
            &unknown_model,
            Credential::Bearer(token.clone()),
            "ModelNotFound",
        ),
        (
            &unreachable,
            Credential::Bearer(token.clone()),
            "GatewayUnreachable",
        ),
    ];
    for (endpoint, credential, reason) in cases {
        let diagnosis = probe::verify(&client, endpoint, &credential).await;
        assert_eq!(
            diagnosis.reason(),
            reason,
            "{credential:?} at {}: {diagnosis:?}",
            endpoint.host
        );
        assert!(!diagnosis.message(endpoint).contains(&token));
    }

    // No gateway at the Secret's address: the diagnosis, and the port-forward that fixes it.
    let offline = world.access("offline", spec(&closed)).await;
    world.credential(&offline, &closed, &url, "offline").await;
    let unreachable_run = world
        .cli(&["predict", "offline", "-n", NS, "-f", iris])
        .await;
    let stderr = unreachable_run.failed();
    assert!(
        stderr.contains("GatewayUnreachable")
            && stderr.contains("port-forward")
            && stderr.contains("--gateway"),
        "{stderr}"
    );

    // Errors that say what to do.
    let unknown = world.cli(&["predict", "nope", "-n", NS, "-f", iris]).await;
    assert!(
        unknown
            .failed()
            .contains("InferenceAccess nope not found in namespace kubeflow-user-example-com"),
        "{}",
        unknown.stderr
    );
    gateway.shutdown().await;
    model.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_sets_the_annotation_and_waits_for_the_new_credential() {
    let world = World::start().await;
    world.access("client", spec("http://127.0.0.1:9")).await;
    let api = world.api::<InferenceAccess>();

    // Stands in for the operator: once asked, it publishes a new expiry and names the request
    // it served, as the operator does.
    let operator = {
        let api = api.clone();
        tokio::spawn(async move {
            let asked = |a: Option<&InferenceAccess>| {
                a.is_some_and(|a| {
                    a.metadata
                        .annotations
                        .iter()
                        .flatten()
                        .any(|(k, _)| k == labels::ANNOTATION_RENEW_REQUESTED_AT)
                })
            };
            let asked = await_condition(api.clone(), "client", asked)
                .await
                .unwrap()
                .unwrap();
            let request =
                asked.metadata.annotations.unwrap()[labels::ANNOTATION_RENEW_REQUESTED_AT].clone();
            let requested: jiff::Timestamp = request.parse().unwrap();
            let status = json!({"status": {"tokenExpirationTime": "2031-01-01T00:00:00Z", "lastRenewRequest": request}});
            api.patch_status("client", &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
            requested
        })
    };
    let before = jiff::Timestamp::now();
    let renewed = world
        .cli(&["renew", "client", "-n", NS, "--wait", "--timeout", "20"])
        .await;
    let text = renewed.ok();
    assert!(
        text.contains("renewal of InferenceAccess kubeflow-user-example-com/client requested at"),
        "{text}"
    );
    assert!(
        text.contains("new credential issued; it expires at 2031-01-01T00:00:00Z"),
        "{text}"
    );
    let requested = tokio::time::timeout(WAIT, operator).await.unwrap().unwrap();
    assert!(requested >= before, "{requested} {before}");

    // status shows recent events regarding the access (events.k8s.io/v1), newest last.
    let access = api.get("client").await.unwrap();
    for (name, reason, note, at) in [
        (
            "client.2",
            "Renewed",
            "renewed the token",
            "2026-01-01T00:00:02.000000Z",
        ),
        (
            "client.1",
            "Issued",
            "issued a token",
            "2026-01-01T00:00:01.000000Z",
        ),
        (
            "other.1",
            "Issued",
            "about another access",
            "2026-01-01T00:00:03.000000Z",
        ),
    ] {
        let event: Event = serde_json::from_value(json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": name, "namespace": NS},
            "eventTime": at, "type": "Normal", "reason": reason, "note": note, "action": reason,
            "reportingController": "inference-access", "reportingInstance": "inference-access-0",
            "regarding": {"apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess", "name": name.split('.').next().unwrap(), "namespace": NS, "uid": access.metadata.uid},
        }))
        .unwrap();
        world
            .api::<Event>()
            .create(&PostParams::default(), &event)
            .await
            .unwrap();
    }
    let status = world.cli(&["status", "client", "-n", NS]).await;
    let text = status.ok();
    let events = text
        .split("Events:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!events.contains("about another access"), "{events}");
    let lines: Vec<&str> = events.lines().collect();
    assert!(
        lines[0].contains("TYPE") && lines[0].contains("MESSAGE"),
        "{events}"
    );
    assert!(
        lines[1].contains("Issued") && lines[1].contains("issued a token"),
        "{events}"
    );
    assert!(
        lines[2].contains("Renewed") && lines[2].contains("inference-access"),
        "{events}"
    );
    assert!(
        text.contains("Expires:         2031-01-01T00:00:00Z"),
        "{text}"
    );

    // Nobody renews: --wait gives up with a pointer to status.
    let stuck = world
        .cli(&["renew", "client", "-n", NS, "--wait", "--timeout", "1"])
        .await;
    assert!(
        stuck
            .failed()
            .contains("did not renew the credential within 1s"),
        "{}",
        stuck.stderr
    );
}

// --- shell completion -----------------------------------------------------------------------

#[tokio::test]
async fn completion_prints_a_script_for_each_shell() {
    for (shell, registers) in [
        (
            "bash",
            "-F _clap_complete_inference_access inference-access",
        ),
        ("zsh", "#compdef inference-access"),
        (
            "fish",
            "complete --keep-order --exclusive --command inference-access",
        ),
    ] {
        let script = run(&["completion", shell], None).await;
        let text = script.ok();
        assert!(text.contains(registers), "{shell}:\n{text}");
        assert!(
            text.contains("INFERENCE_ACCESS_COMPLETE"),
            "{shell}:\n{text}"
        );
    }
    let unknown = run(&["completion", "tcsh"], None).await;
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
}

#[tokio::test]
async fn completion_lists_the_accesses_of_the_namespace_in_bash_and_through_kubectl() {
    let world = World::start().await;
    for (namespace, name) in [(NS, "alpha"), (NS, "beta"), ("team-b", "gamma")] {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        let _ = Api::<Namespace>::all(world.client.clone())
            .create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
            .await;
        let access: InferenceAccess = serde_json::from_value(json!({
            "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"inferenceService": {"name": MODEL}}
        }))
        .unwrap();
        Api::<InferenceAccess>::namespaced(world.client.clone(), namespace)
            .create(&PostParams::default(), &access)
            .await
            .unwrap();
    }
    let dir = TempDir::new();
    // The binary under the names the shell and kubectl look for on PATH, put first.
    let bin = dir.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in [
        "inference-access",
        "kubectl-inference_access",
        "kubectl_complete-inference_access",
    ] {
        std::os::unix::fs::symlink(binary(), bin.join(name)).unwrap();
    }
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let env = [
        ("KUBECONFIG", world.kubeconfig.as_os_str()),
        ("PATH", path.as_os_str()),
    ];

    // The protocol the scripts speak (fish's: the line so far, the last word being completed).
    let mut fish = env.to_vec();
    fish.push(("INFERENCE_ACCESS_COMPLETE", OsStr::new("fish")));
    let line = ["--", "inference-access", "status", "-n", NS, ""];
    let listed = run_with_env(&bin.join("inference-access"), &line, &fish, "").await;
    // The namespace's accesses with their model and state, then (the word is empty) the flags.
    let lines: Vec<&str> = listed.ok().lines().collect();
    assert_eq!(
        lines[..2],
        [
            "alpha\tInferenceService sklearn-iris, not reconciled yet",
            "beta\tInferenceService sklearn-iris, not reconciled yet"
        ]
    );
    assert!(lines[2..].iter().all(|l| l.starts_with("--")), "{lines:?}");

    // Real bash with the script `completion bash` prints: `inference-access token -n NS b<TAB>`.
    let script = format!(
        r#"source <(inference-access completion bash)
           COMP_WORDS=(inference-access token -n {NS} b); COMP_CWORD=4; COMP_TYPE=9
           _clap_complete_inference_access inference-access b {NS}
           printf '%s\n' "${{COMPREPLY[@]}}""#
    );
    let bash = run_with_env(Path::new("bash"), &["-c", &script], &env, "").await;
    assert_eq!(
        bash.ok().split_whitespace().collect::<Vec<_>>(),
        ["beta"],
        "{}",
        bash.stderr
    );

    // Real kubectl, completing its plugin: `kubectl inference-access status -n team-b <TAB>`.
    let kubectl = packaging_tests::tool_path(packaging_tests::Tool::Kubectl)
        .unwrap_or_else(|err| panic!("{err}"));
    let line = [
        "__complete",
        "inference-access",
        "status",
        "-n",
        "team-b",
        "",
    ];
    let completed = run_with_env(&kubectl, &line, &env, "").await;
    let lines: Vec<&str> = completed.ok().lines().collect();
    assert_eq!(
        lines,
        [
            "gamma\tInferenceService sklearn-iris, not reconciled yet",
            ":4"
        ],
        "{}",
        completed.stderr
    );
}
