//! The files of `make demo-standard` (hack/demo-standard/), applied with the real kubectl as the
//! demo applies them: KServe's Standard mode with Gateway API in an ambient namespace, the
//! access in mode Auto. The owner's credential predicts through the Gateway, another
//! ServiceAccount's is refused there, so the demo's files keep doing what it shows.

use crate::harness::*;
use crate::serving_modes::{
    GATEWAY, GATEWAY_NS, assert_predicts, assert_refused_by, gateway_api_crds, host_of, mesh_path,
    owner_token, predict, stranger_token, wait_policy,
};

#[tokio::test]
async fn the_standard_mode_demo_files_grant_only_the_owner_at_the_gateway() {
    if skip_on_real_cluster("the_standard_mode_demo_files_grant_only_the_owner_at_the_gateway") {
        return;
    }
    // As hack/demo.sh starts them: the Gateway API served, KServe with enableGatewayApi, a
    // gateway double without Kubeflow's mesh-wide deny-all.
    let mut data = DataPath::start_configured(
        kube_local::ControlPlane::builder()
            .load_crds(&gateway_api_crds())
            .kserve_gateway_api(true),
        |gateway| {
            gateway
                .gateway_api(GATEWAY_NS, GATEWAY)
                .global_deny_all(false)
        },
    )
    .await;
    let gateway_url = data.gateway.gateway_api_url(GATEWAY_NS, GATEWAY).unwrap();
    data.env
        .restart_operator_with(&["--allowed-gateways", &gateway_url])
        .await;
    let env = &data.env;
    for file in ["platform.yaml", "access.yaml"] {
        let path = repo(&format!("hack/demo-standard/{file}"));
        env.kubectl(vec![
            "apply".into(),
            "-f".into(),
            path.display().to_string(),
        ])
        .await;
    }
    let patch = format!(r#"{{"spec":{{"gateway":{{"url":"{gateway_url}"}}}}}}"#);
    env.kubectl(
        [
            "patch",
            "inferenceaccess",
            ACCESS,
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            &patch,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let access = wait_policy(env, "GatewayPolicyApplied").await;
    assert_eq!(mesh_path(&access).as_deref(), Some("Gateway"));
    let access = env.wait_ready(ACCESS).await;
    let host = host_of(&access.status.unwrap().url.unwrap());
    assert_predicts(
        &predict(&gateway_url, &host, Some(&owner_token(env).await)).await,
        "owner",
    );
    assert_refused_by(
        &predict(&gateway_url, &host, Some(&stranger_token(env).await)).await,
        403,
        "gateway",
        "another ServiceAccount",
    );
}
