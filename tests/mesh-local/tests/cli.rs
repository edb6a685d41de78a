//! `mesh-local gateway` as a process, configured by a kubeconfig, as the demo runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{AUD, Browser, Cluster, NS, host_of, named_echo_upstream};
use http::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[tokio::test]
async fn gateway_process_serves_with_a_kubeconfig() {
    let cluster = Cluster::start().await;
    let host = host_of(&cluster.add_model(NS, "sklearn-iris", false).await);
    let other_host = host_of(&cluster.add_model(NS, "other", false).await);
    let (default_upstream, _default_task) = named_echo_upstream("default").await;
    let (own_upstream, _own_task) = named_echo_upstream("sklearn-iris's own").await;
    let kubeconfig =
        std::env::temp_dir().join(format!("mesh-local-cli-{}.kubeconfig", std::process::id()));
    cluster.control_plane.write_kubeconfig(&kubeconfig).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-local"))
        .args(["gateway", "--port", "0", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--upstream", &default_upstream, "--upstream"])
        .arg(format!("{NS}/sklearn-iris={own_upstream}"))
        .args(["--audience", AUD, "--dex-flavour", "authservice"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("gateway prints its URL")
        .unwrap()
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let token = cluster.token(NS, "default-editor", AUD, 3600).await;
    let auth = format!("Bearer {token}");
    let answer = Browser::default()
        .get(
            &format!("{url}/v1/models/sklearn-iris"),
            &[("host", &host), ("authorization", &auth)],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json()["userid"],
        "system:serviceaccount:kubeflow-user-example-com:default-editor"
    );
    assert_eq!(answer.json()["upstream"], "sklearn-iris's own");
    let answer = Browser::default()
        .get(
            &format!("{url}/v1/models/other"),
            &[("host", &other_host), ("authorization", &auth)],
        )
        .await;
    assert_eq!(answer.json()["upstream"], "default");

    let unauthenticated = Browser::default()
        .send(
            http::Method::GET,
            &format!("{url}/"),
            &[],
            bytes::Bytes::new(),
            false,
        )
        .await;
    assert_eq!(unauthenticated.status, StatusCode::FOUND);
    let location = unauthenticated.headers["location"].to_str().unwrap();
    assert!(
        location.contains("redirect_uri=%2Fauthservice%2Foidc%2Fcallback"),
        "{location}"
    );

    terminate(child).await;
    std::fs::remove_file(&kubeconfig).unwrap();
}

#[tokio::test]
async fn gateway_process_plays_a_gateway_api_gateway() {
    let cluster = Cluster::start_with_gateway_api().await;
    cluster.add_model(NS, "sklearn-iris", false).await;
    cluster
        .predictor_service(NS, "sklearn-iris", json!({}))
        .await;
    cluster.ensure_namespace("kserve").await;
    cluster.create(common::kserve_gateway()).await;
    cluster
        .create(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "sklearn-iris", "namespace": NS},
            "spec": {"parentRefs": [{"namespace": "kserve", "name": "kserve-ingress-gateway"}],
                     "hostnames": ["sklearn-iris-kubeflow-user-example-com.example.com"],
                     "rules": [{"backendRefs": [{"name": "sklearn-iris-predictor", "port": 80}]}]}
        }))
        .await;
    let (upstream, _task) = named_echo_upstream("by service").await;
    let kubeconfig = std::env::temp_dir().join(format!(
        "mesh-local-cli-gwapi-{}.kubeconfig",
        std::process::id()
    ));
    cluster.control_plane.write_kubeconfig(&kubeconfig).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-local"))
        .args(["gateway", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--gateway-api",
            "kserve/kserve-ingress-gateway",
            "--upstream-service",
        ])
        .arg(format!("{NS}/sklearn-iris-predictor={upstream}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("gateway prints its URLs")
            .unwrap()
            .unwrap()
    };
    let kubeflow_url = next_line().await;
    assert!(
        kubeflow_url.starts_with("http://127.0.0.1:"),
        "{kubeflow_url}"
    );
    let second = next_line().await;
    let url = second
        .strip_prefix("kserve/kserve-ingress-gateway ")
        .expect("second line names the Gateway")
        .to_owned();
    assert_ne!(url, kubeflow_url);
    let answer = Browser::default()
        .get(
            &format!("{url}/v1/models/sklearn-iris"),
            &[("host", "sklearn-iris-kubeflow-user-example-com.example.com")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["upstream"], "by service");

    terminate(child).await;
    std::fs::remove_file(&kubeconfig).unwrap();
}

#[tokio::test]
async fn model_server_process_prints_its_url_and_serves() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-local"))
        .args(["model-server", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Printed once ready; the first run on a machine also creates the venv.
    let url = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
        .await
        .expect("model server prints its URL")
        .unwrap()
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let ready = Browser::default()
        .get(&format!("{url}/v1/models/sklearn-iris"), &[])
        .await;
    assert_eq!(
        ready.json(),
        serde_json::json!({"name": "sklearn-iris", "ready": true})
    );
    child.kill().await.unwrap();
}

/// SIGTERM, as a supervisor stops it; the process must exit cleanly and promptly.
async fn terminate(mut child: tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
