//! The real kubectl (v1.35) against kube-local, and the `kube-local serve` binary.
//! kubectl comes from scripts/install-kubectl.sh (into <repo>/.tools/bin) or $KUBECTL.
// Helpers outside #[test] fns: a failed setup step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use kube_local::ControlPlane;

fn kubectl_path() -> PathBuf {
    if let Ok(p) = std::env::var("KUBECTL") {
        return PathBuf::from(p);
    }
    let installed = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.tools/bin/kubectl"
    ));
    assert!(
        installed.exists(),
        "kubectl not found: run tests/kube-local/scripts/install-kubectl.sh (installs into .tools/bin) or set KUBECTL"
    );
    installed
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
    _dir: TempDir,
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("kube-local-{tag}-{}", uuid_like()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> String {
    format!(
        "{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

impl Kubectl {
    fn new(cp: &ControlPlane) -> Self {
        let dir = TempDir::new("kubectl");
        let kubeconfig = dir.0.join("kubeconfig");
        cp.write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        Self {
            bin: kubectl_path(),
            kubeconfig,
            cache: dir.0.join("cache"),
            _dir: dir,
        }
    }

    /// Runs kubectl off the async runtime's threads.
    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || cmd.output().expect("kubectl runs"))
            .await
            .expect("join")
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

fn sample() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sklearn.yaml").to_string()
}

#[tokio::test]
async fn kubectl_applies_waits_gets_describes_and_deletes() {
    let cp = start().await;
    let k = Kubectl::new(&cp);
    assert!(k.ok(&["version"]).await.contains("Server Version: v1.35"));
    k.ok(&["create", "namespace", "kubeflow-user-example-com"])
        .await;
    let ns = ["-n", "kubeflow-user-example-com"];
    let applied = k.ok(&[&["apply", "-f", &sample()][..], &ns].concat()).await;
    assert!(
        applied.contains("inferenceservice.serving.kserve.io/sklearn-iris created"),
        "{applied}"
    );
    let again = k.ok(&[&["apply", "-f", &sample()][..], &ns].concat()).await;
    assert!(again.contains("unchanged"), "{again}");
    k.ok(&[
        &[
            "wait",
            "--for=condition=Ready",
            "inferenceservice/sklearn-iris",
            "--timeout=20s",
        ][..],
        &ns,
    ]
    .concat())
        .await;
    let table = k.ok(&[&["get", "isvc"][..], &ns].concat()).await;
    assert!(
        table.contains("http://sklearn-iris.kubeflow-user-example-com.example.com"),
        "{table}"
    );
    assert!(
        table.lines().next().unwrap_or_default().starts_with("NAME"),
        "{table}"
    );
    let url = k
        .ok(&[
            &[
                "get",
                "isvc",
                "sklearn-iris",
                "-o",
                "jsonpath={.status.url}",
            ][..],
            &ns,
        ]
        .concat())
        .await;
    assert_eq!(
        url,
        "http://sklearn-iris.kubeflow-user-example-com.example.com"
    );
    let ssa = k
        .ok(&[&["apply", "--server-side", "-f", &sample()][..], &ns].concat())
        .await;
    assert!(ssa.contains("serverside-applied"), "{ssa}");
    let isvc = cp
        .store()
        .get(
            "serving.kserve.io/v1beta1",
            "InferenceService",
            Some("kubeflow-user-example-com"),
            "sklearn-iris",
        )
        .expect("isvc");
    cp.store()
        .create(serde_json::json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "ev1", "namespace": "kubeflow-user-example-com"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "test", "reportingInstance": "t", "action": "Check",
            "reason": "CheckedByTest", "type": "Normal", "note": "hello from a test",
            "regarding": {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "sklearn-iris",
                "namespace": "kubeflow-user-example-com", "uid": isvc["metadata"]["uid"]}}))
        .expect("event");
    let described = k
        .ok(&[&["describe", "isvc", "sklearn-iris"][..], &ns].concat())
        .await;
    assert!(
        described.contains("Storage Uri:") && described.contains("Ready"),
        "{described}"
    );
    assert!(
        described.contains("CheckedByTest") && described.contains("hello from a test"),
        "{described}"
    );
    let pods = k
        .ok(&[
            &[
                "get",
                "pods",
                "-l",
                "serving.kserve.io/inferenceservice=sklearn-iris",
                "-o",
                "name",
            ][..],
            &ns,
        ]
        .concat())
        .await;
    assert!(pods.starts_with("pod/sklearn-iris-predictor-"), "{pods}");
    let token = k
        .ok(&[
            &[
                "create",
                "token",
                "default",
                "--audience=istio-ingressgateway.istio-system.svc.cluster.local",
                "--duration=24h",
            ][..],
            &ns,
        ]
        .concat())
        .await;
    assert_eq!(token.trim().split('.').count(), 3, "a JWT");
    let deleted = k
        .ok(&[&["delete", "-f", &sample()][..], &ns].concat())
        .await;
    assert!(deleted.contains("deleted"), "{deleted}");
    let none = k
        .run(&[&["get", "isvc", "sklearn-iris"][..], &ns].concat())
        .await;
    assert!(!none.status.success() && String::from_utf8_lossy(&none.stderr).contains("NotFound"));
    cp.shutdown().await;
}

#[tokio::test]
async fn kubectl_create_secret_configmap_serviceaccount_and_auth_can_i() {
    let cp = start().await;
    let k = Kubectl::new(&cp);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=token=abc",
    ])
    .await;
    assert_eq!(
        k.ok(&["get", "secret", "s1", "-o", "jsonpath={.data.token}"])
            .await,
        "YWJj"
    );
    k.ok(&["create", "configmap", "c1", "--from-literal=x=y"])
        .await;
    k.ok(&["create", "serviceaccount", "robot"]).await;
    assert!(k.ok(&["get", "sa"]).await.contains("robot"));
    assert_eq!(
        k.ok(&["auth", "can-i", "list", "secrets"]).await.trim(),
        "yes"
    );
    k.ok(&["label", "configmap", "c1", "app=demo"]).await;
    assert!(
        k.ok(&["get", "cm", "-l", "app=demo", "-o", "name"])
            .await
            .contains("configmap/c1")
    );
    let protected = k.run(&["delete", "namespace", "default"]).await;
    assert!(
        String::from_utf8_lossy(&protected.stderr).contains("this namespace may not be deleted")
    );
    cp.shutdown().await;
}

/// `kubectl create -f` validates a kind without a PATCH (TokenReview) on the client, with the
/// OpenAPI v2 document it downloads as protobuf: it must be served, as a real API server does.
#[tokio::test]
async fn kubectl_create_f_of_a_token_review_validates_and_reviews_the_token() {
    let cp = start().await;
    let k = Kubectl::new(&cp);
    k.ok(&["create", "serviceaccount", "robot"]).await;
    let token = k.ok(&["create", "token", "robot"]).await;
    let dir = TempDir::new("tokenreview");
    let file = dir.0.join("review.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {}\n",
            token.trim()
        ),
    )
    .unwrap();
    let review = k
        .ok(&[
            "create",
            "-f",
            file.to_str().unwrap(),
            "-o",
            "jsonpath={.status.authenticated} {.status.user.username}",
        ])
        .await;
    assert_eq!(
        review, "true system:serviceaccount:default:robot",
        "kubectl downloaded /openapi/v2, validated and created the review"
    );
    cp.shutdown().await;
}

#[tokio::test]
async fn binary_serves_writes_kubeconfig_and_stops_on_sigterm() {
    let dir = TempDir::new("bin");
    let kubeconfig = dir.0.join("kc");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-local"))
        .args(["serve", "--port", "0", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let url = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line.trim().to_string())
    })
    .await
    .expect("join")
    .expect("url line");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let kc = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    assert!(kc.contains(&format!("server: {url}")) && kc.contains("token: "));
    let bin = kubectl_path();
    let out = tokio::task::spawn_blocking({
        let kubeconfig = kubeconfig.clone();
        let cache = dir.0.join("cache");
        move || {
            Command::new(bin)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .arg("--cache-dir")
                .arg(cache)
                .args(["get", "ns", "-o", "name"])
                .output()
                .expect("kubectl")
        }
    })
    .await
    .expect("join");
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/default"));
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success());
    let status = eventually(Duration::from_secs(10), "binary exits", || {
        let s = child.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert!(status.success());
}

#[tokio::test]
async fn kubectl_over_tls_authenticates_as_a_service_account_under_rbac() {
    let cp = ControlPlane::builder()
        .rbac(true)
        .start()
        .await
        .expect("start");
    let c = admin(&cp).await;
    post(
        &c,
        "/api/v1/namespaces/default/serviceaccounts",
        serde_json::json!({"metadata": {"name": "robot"}}),
    )
    .await;
    let token = post(
        &c,
        "/api/v1/namespaces/default/serviceaccounts/robot/token",
        serde_json::json!({"spec": {}}),
    )
    .await
    .body["status"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let k = Kubectl::new(&cp);
    ControlPlane::write_kubeconfig_text(&k.kubeconfig, &cp.kubeconfig_tls_for_token(&token))
        .expect("kubeconfig");
    assert!(
        std::fs::read_to_string(&k.kubeconfig)
            .expect("read")
            .contains("server: https://127.0.0.1:")
    );
    let whoami = k
        .ok(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .await;
    assert_eq!(whoami, "system:serviceaccount:default:robot");
    let denied = k.run(&["get", "secrets"]).await;
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("secrets is forbidden: User \"system:serviceaccount:default:robot\" cannot list resource \"secrets\""), "{stderr}");
    let cannot = k.run(&["auth", "can-i", "list", "secrets"]).await;
    assert_eq!(String::from_utf8_lossy(&cannot.stdout).trim(), "no");
    // The admin over TLS works too.
    ControlPlane::write_kubeconfig_text(&k.kubeconfig, &cp.kubeconfig_tls_yaml())
        .expect("kubeconfig");
    assert!(k.ok(&["get", "secrets"]).await.is_empty());
    cp.shutdown().await;
}

#[tokio::test]
async fn kubectl_rolls_out_and_restarts_a_deployment() {
    let cp = start().await;
    let k = Kubectl::new(&cp);
    let manifest = k.kubeconfig.with_file_name("web.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
    )
    .expect("manifest");
    let applied = k.ok(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(applied.contains("deployment.apps/web created"), "{applied}");
    let status = k
        .ok(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await;
    assert!(status.contains("successfully rolled out"), "{status}");
    let before = k.ok(&["get", "pods", "-l", "app=web", "-o", "name"]).await;
    let restarted = k.ok(&["rollout", "restart", "deployment/web"]).await;
    assert!(
        restarted.contains("deployment.apps/web restarted"),
        "{restarted}"
    );
    k.ok(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await;
    let after = k.ok(&["get", "pods", "-l", "app=web", "-o", "name"]).await;
    assert_eq!(after.lines().count(), 1, "{after}");
    assert_ne!(before, after);
    let stamp = k
        .ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
        ])
        .await;
    assert!(!stamp.is_empty());
    cp.shutdown().await;
}
