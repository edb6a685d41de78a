//! `inference-access doctor` against the gateway double: for each failure users report (403 from
//! the sidecar, 404 route not found, an expired token, 401 issuer mismatch, 302 to Dex), doctor
//! names the hop that refused the request, and for a refusal the double attributes to a hop
//! (`x-mesh-local-denied-by`) it names the same one. The token never appears in its output.

use std::time::Duration;

use inference_access::gateway::client::GatewayClient;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::harness::*;

const GATEWAY_ISSUER: &str = "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE";

/// The report's failing hop and reason, after checking what every report must hold.
async fn diagnose(env: &Env, name: &str, token: Option<&str>) -> (Option<String>, Option<String>) {
    let (ok, report, stdout) = doctor(env, name).await;
    if let Some(token) = token {
        assert!(!stdout.contains(token), "doctor printed the token");
    }
    let hop = report["failingHop"].as_str().map(str::to_owned);
    assert_eq!(
        ok,
        hop.is_none(),
        "exit status follows the verdict: {report:#}"
    );
    let named = report["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| Some(h["hop"].as_str().unwrap()) == hop.as_deref());
    if let Some(named) = named {
        assert_eq!(named["verdict"], "fail", "{report:#}");
        assert!(
            named["fix"].is_string(),
            "the failing hop says what to do: {report:#}"
        );
    }
    (hop, report["reason"].as_str().map(str::to_owned))
}

fn pair(hop: &str, reason: &str) -> (Option<String>, Option<String>) {
    (Some(hop.to_owned()), Some(reason.to_owned()))
}

/// The hop the double says refused a GET of the model with the Secret's credential.
async fn refused_by(data: &DataPath, secret: &str) -> Option<String> {
    let secret = data.env.api::<Secret>().get(secret).await.unwrap();
    let host = secret_text(&secret, "host");
    let bearer = format!("Bearer {}", secret_text(&secret, "token"));
    let answer = GatewayClient::new()
        .unwrap()
        .get(
            &format!("{}/v1/models/sklearn-iris", data.gateway.url()),
            &[("host", host.as_str()), ("authorization", bearer.as_str())],
        )
        .await
        .unwrap();
    answer
        .header(mesh_local::DENIED_BY_HEADER)
        .map(str::to_owned)
}

#[tokio::test]
async fn doctor_names_the_sidecar_the_route_and_the_expired_token() {
    if skip_on_real_cluster("doctor_names_the_sidecar_the_route_and_the_expired_token") {
        return;
    }
    let mut data = DataPath::start(kube_local::ControlPlane::builder()).await;
    // No policy and a sidecar: Kubeflow's deny-all refuses at the sidecar (FAQ 2).
    data.apply("Unmanaged").await;
    data.wait_endpoint("AccessDenied").await;
    let token = secret_text(
        &data.env.api::<Secret>().get(SECRET).await.unwrap(),
        "token",
    );
    assert_eq!(
        diagnose(&data.env, ACCESS, Some(&token)).await,
        pair("sidecar", "AccessDenied")
    );
    assert_eq!(refused_by(&data, SECRET).await.as_deref(), Some("sidecar"));

    // The operator's policy: doctor finds nothing wrong and lists the policy that admits it.
    data.apply("AuthorizationPolicy").await;
    data.wait_endpoint("EndpointReachable").await;
    let (ok, report, _) = doctor(&data.env, ACCESS).await;
    assert!(ok, "{report:#}");
    let admitting = report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == format!("{NS}/{ACCESS}"))
        .unwrap_or_else(|| panic!("the access's policy is listed: {report:#}"));
    assert_eq!(
        (
            &admitting["hop"],
            &admitting["action"],
            &admitting["namesIdentity"]
        ),
        (&json!("sidecar"), &json!("ALLOW"), &json!(true))
    );
    assert_eq!(
        report["token"]["subject"],
        format!("system:serviceaccount:{NS}:{ACCESS}")
    );

    // Knative's cluster-local domain: the gateway has no route for the Host (NR route_not_found).
    data.env.plane().set_kserve_domain("svc.cluster.local");
    data.wait_endpoint("HostNotFound").await;
    assert_eq!(
        diagnose(&data.env, ACCESS, None).await,
        pair("route", "HostNotFound")
    );

    // The token outlives nothing: with the operator stopped (no renewal), two days later the
    // gateway refuses it as expired.
    data.env.stop_operator().await;
    data.gateway.clock().advance(Duration::from_secs(48 * 3600));
    assert_eq!(
        diagnose(&data.env, ACCESS, None).await,
        pair("token", "TokenExpired")
    );
}

#[tokio::test]
async fn doctor_names_the_gateway_for_an_issuer_mismatch_and_a_redirect_to_dex() {
    if skip_on_real_cluster("doctor_names_the_gateway_for_an_issuer_mismatch") {
        return;
    }
    // A gateway configured for the provider's OIDC issuer (EKS) while tokens come from the
    // cluster's: the 401 users meet on managed clusters.
    let mut data = DataPath::start_configured(kube_local::ControlPlane::builder(), |gateway| {
        gateway.issuer(GATEWAY_ISSUER)
    })
    .await;
    let env = &data.env;
    // Kubeflow's m2m-token-issuer as the gateway double is configured (doctor reads it).
    apply_object(
        env,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
    )
    .await;
    apply_object(env, json!({
        "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
        "metadata": {"name": "m2m-token-issuer", "namespace": "istio-system"},
        "spec": {"selector": {"matchLabels": {"istio": "ingressgateway"}},
                 "jwtRules": [{"issuer": GATEWAY_ISSUER, "forwardOriginalToken": true,
                               "outputClaimToHeaders": [{"header": "kubeflow-userid", "claim": "sub"}]}]}
    })).await;
    data.apply("AuthorizationPolicy").await;
    data.wait_endpoint("IssuerNotAccepted").await;
    let (ok, report, _) = doctor(env, ACCESS).await;
    assert!(!ok);
    assert_eq!(
        (&report["failingHop"], &report["reason"]),
        (&json!("gateway"), &json!("IssuerNotAccepted"))
    );
    let gateway = report["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == "gateway")
        .unwrap();
    let finding = gateway["finding"].as_str().unwrap();
    assert!(
        finding.contains("https://kubernetes.default.svc.cluster.local")
            && finding.contains(GATEWAY_ISSUER),
        "names both issuers: {finding}"
    );
    assert_eq!(refused_by(&data, SECRET).await.as_deref(), Some("gateway"));

    // A person's Dex session, expired: the gateway sends the request into the login.
    env.api::<Secret>()
        .patch(
            "dex-user",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "dex-user", "namespace": NS, "labels": {"inference-access.io/dex-login": "true"}},
                "stringData": {"username": "user@example.com", "password": "12341234"},
            })),
        )
        .await
        .unwrap();
    env.apply_value(json!({
        "apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess",
        "metadata": {"name": "by-session", "namespace": NS},
        "spec": {"inferenceService": {"name": "sklearn-iris"}, "gateway": {"url": data.gateway.url()},
                 "auth": {"type": "DexSession", "dexSession": {"credentialsSecret": {"name": "dex-user"}}}},
    }))
    .await;
    wait_for(
        &env.api::<inference_access::api::InferenceAccess>(),
        "by-session",
        condition_reason("EndpointVerified", "EndpointReachable"),
    )
    .await;
    assert_eq!(diagnose(env, "by-session", None).await, (None, None));
    data.env.stop_operator().await;
    data.gateway.clock().advance(Duration::from_secs(25 * 3600));
    assert_eq!(
        diagnose(&data.env, "by-session", None).await,
        pair("gateway", "RedirectedToLogin")
    );
}
