use serde_json::json;

use super::*;

const SUB: &str = "system:serviceaccount:team:client";
const ISS: &str = "https://kubernetes.default.svc.cluster.local";

fn jwt(payload: Value) -> String {
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    format!("{}.{}.sig", b64(&json!({"alg": "RS256"})), b64(&payload))
}

fn pods() -> Place {
    Place::Pods {
        namespace: "team".into(),
        labels: BTreeMap::from([
            ("serving.kserve.io/inferenceservice".into(), "m".into()),
            ("component".into(), "predictor".into()),
        ]),
    }
}

fn gateway() -> Place {
    Place::Gateway {
        namespace: "kserve".into(),
        name: "gw".into(),
    }
}

fn waypoint() -> Place {
    Place::Waypoint {
        namespace: "team".into(),
        service: "m-predictor".into(),
        waypoint: "waypoint".into(),
    }
}

#[test]
fn claims_are_read_without_verifying() {
    let token = jwt(json!({"iss": ISS, "sub": SUB, "aud": ["a", "b"], "exp": 1_700_000_000}));
    assert_eq!(
        claims(&token).unwrap(),
        Claims {
            issuer: Some(ISS.into()),
            subject: Some(SUB.into()),
            audiences: vec!["a".into(), "b".into()],
            expires: Some(1_700_000_000),
        }
    );
    let single = claims(&jwt(json!({"aud": "a"}))).unwrap();
    assert_eq!(single.audiences, ["a"]);
    assert_eq!(claims("not-a-jwt"), None);
    assert_eq!(claims("a.%%%.c"), None);
}

#[test]
fn attachment_table() {
    let selector = json!({"selector": {"matchLabels": {"component": "predictor"}}});
    let other_selector = json!({"selector": {"matchLabels": {"app": "x"}}});
    let to_gateway = json!({"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]});
    let to_service = json!({"targetRefs": [{"kind": "Service", "name": "m-predictor"}]});
    let to_waypoint = json!({"targetRef": {"kind": "Gateway", "name": "waypoint"}});
    let gateway_pods =
        json!({"selector": {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "gw"}}});
    let cases = [
        ("team", &selector, pods(), Some("selector")),
        ("team", &other_selector, pods(), None),
        ("team", &json!({}), pods(), Some("namespace-wide")),
        ("istio-system", &json!({}), pods(), Some("mesh-wide")),
        ("elsewhere", &json!({}), pods(), None),
        ("team", &to_service, pods(), None),
        ("kserve", &to_gateway, gateway(), Some("targetRefs Gateway")),
        ("team", &to_gateway, gateway(), None),
        ("kserve", &gateway_pods, gateway(), Some("selector")),
        ("kserve", &json!({}), gateway(), Some("namespace-wide")),
        ("team", &to_service, waypoint(), Some("targetRefs Service")),
        (
            "team",
            &to_waypoint,
            waypoint(),
            Some("targetRefs waypoint"),
        ),
        // Selector and namespace-wide policies never bind a waypoint.
        ("team", &selector, waypoint(), None),
        ("team", &json!({}), waypoint(), None),
        (
            "istio-system",
            &json!({}),
            Place::kubeflow_gateway(),
            Some("namespace-wide"),
        ),
    ];
    for (ns, spec, place, expected) in cases {
        assert_eq!(binds(ns, spec, &place), expected, "{ns} {spec} {place:?}");
    }
}

fn policy(ns: &str, name: &str, spec: Value) -> (String, String, Value) {
    (ns.into(), name.into(), spec)
}

#[test]
fn policies_are_judged_for_this_identity() {
    let identity = identity_names(&Claims {
        issuer: Some(ISS.into()),
        subject: Some(SUB.into()),
        ..Claims::default()
    });
    let ours = policy(
        "team",
        "ours",
        json!({"selector": {"matchLabels": {"component": "predictor"}}, "rules": [{"when": [{"key": "request.headers[kubeflow-userid]", "values": [SUB]}]}]}),
    );
    let owner = policy(
        "team",
        "ns-owner-access-istio",
        json!({"rules": [{"when": [{"key": "request.headers[kubeflow-userid]", "values": ["user@example.com"]}]}]}),
    );
    let deny_others = policy(
        "kserve",
        "deny",
        json!({"action": "DENY", "targetRefs": [{"kind": "Gateway", "name": "gw"}], "rules": [{"from": [{"source": {"notRequestPrincipals": [format!("{ISS}/{SUB}")]}}]}]}),
    );
    let deny_all = policy(
        "kserve",
        "deny-all",
        json!({"action": "DENY", "targetRefs": [{"kind": "Gateway", "name": "gw"}], "rules": [{}]}),
    );
    let custom = policy("team", "ext", json!({"action": "CUSTOM", "rules": [{}]}));

    let only_owner = policies_at("sidecar", &pods(), &[owner.clone(), custom], &identity);
    assert_eq!(only_owner.len(), 1, "CUSTOM is not listed");
    let judged = judge_policies("sidecar", &only_owner);
    assert_eq!(judged.verdict, Verdict::Warn);
    assert!(
        judged
            .finding
            .contains("ALLOW team/ns-owner-access-istio (namespace-wide)"),
        "{}",
        judged.finding
    );
    assert!(judged.finding.contains("no ALLOW names this identity"));

    let with_ours = policies_at("sidecar", &pods(), &[owner, ours], &identity);
    assert_eq!(judge_policies("sidecar", &with_ours).verdict, Verdict::Ok);

    let exempt = policies_at(
        "gateway",
        &gateway(),
        std::slice::from_ref(&deny_others),
        &identity,
    );
    assert!(exempt[0].names_identity);
    assert_eq!(judge_policies("gateway", &exempt).verdict, Verdict::Ok);
    let denied = policies_at("gateway", &gateway(), &[deny_others, deny_all], &identity);
    let judged = judge_policies("gateway", &denied);
    assert_eq!(judged.verdict, Verdict::Warn);
    assert!(
        judged
            .finding
            .contains("does not exempt this identity: DENY kserve/deny-all"),
        "{}",
        judged.finding
    );
    assert_eq!(judge_policies("waypoint", &denied).verdict, Verdict::Ok);
}

#[test]
fn the_token_against_the_gateway_request_authentication() {
    let requests = [policy(
        "kserve",
        "cluster-tokens",
        json!({"targetRefs": [{"kind": "Gateway", "name": "gw"}], "jwtRules": [{"issuer": ISS, "audiences": ["gw-aud"], "jwksUri": "https://api/openid/v1/jwks"}]}),
    )];
    let rules = jwt_rules_at(&gateway(), &requests);
    assert_eq!(rules.len(), 1);
    assert!(jwt_rules_at(&pods(), &requests).is_empty());
    let token = |iss: &str, aud: &str| Claims {
        issuer: Some(iss.into()),
        audiences: vec![aud.into()],
        ..Claims::default()
    };
    let (verdict, finding) = judge_authentication(&rules, &token(ISS, "gw-aud"));
    assert_eq!(verdict, Verdict::Ok, "{finding}");
    assert!(finding.contains("https://api/openid/v1/jwks"));
    let (verdict, finding) =
        judge_authentication(&rules, &token("https://oidc.eks.example", "gw-aud"));
    assert_eq!(verdict, Verdict::Fail);
    assert!(
        finding.contains("https://oidc.eks.example") && finding.contains(ISS),
        "{finding}"
    );
    let (verdict, finding) = judge_authentication(&rules, &token(ISS, "other"));
    assert_eq!(verdict, Verdict::Fail);
    assert!(finding.contains("spec.token.audiences"), "{finding}");
    assert_eq!(judge_authentication(&[], &token(ISS, "x")).0, Verdict::Warn);
}

#[test]
fn each_answer_points_at_a_hop() {
    let token = |problem| Diagnosis::TokenRejected { problem };
    let cases = [
        (Diagnosis::Reachable, None),
        (token(TokenProblem::Expired), Some("token")),
        (token(TokenProblem::Issuer), Some("gateway")),
        (token(TokenProblem::Audience), Some("gateway")),
        (Diagnosis::SignInPage, Some("gateway")),
        (
            Diagnosis::RedirectedToLogin {
                status: 302,
                location: String::new(),
            },
            Some("gateway"),
        ),
        (Diagnosis::HostNotFound { host: "h".into() }, Some("route")),
        (
            Diagnosis::AccessDenied {
                at: DeniedAt::Gateway,
            },
            Some("gateway"),
        ),
        (
            Diagnosis::AccessDenied {
                at: DeniedAt::BehindGateway,
            },
            Some("waypoint"),
        ),
        (Diagnosis::ModelNotFound, Some("target")),
        (Diagnosis::Unexpected { status: 503 }, Some("target")),
    ];
    for (diagnosis, hop) in cases {
        assert_eq!(failing_hop(&diagnosis, "waypoint"), hop, "{diagnosis:?}");
    }
}
