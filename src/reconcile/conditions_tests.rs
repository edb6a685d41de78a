//! The readiness chain and the status it builds.

use super::*;
use crate::fixtures::ts;

fn all_ok() -> Checks {
    Checks {
        inference_service: Check::ok(reason::READY, "ready"),
        credential: Check::ok(reason::ISSUED, "issued"),
        access_policy: Check::ok(reason::POLICY_APPLIED, "applied"),
        ..Checks::default()
    }
}

#[test]
fn ready_is_the_first_unsatisfied_check() {
    let cases = [
        (all_ok(), State::True, reason::READY),
        (
            Checks {
                inference_service: Check::failed(reason::INFERENCE_SERVICE_NOT_FOUND, "x"),
                ..all_ok()
            },
            State::False,
            reason::INFERENCE_SERVICE_NOT_FOUND,
        ),
        (
            Checks {
                credential: Check::failed(reason::TOKEN_REQUEST_FAILED, "x"),
                access_policy: Check::failed(reason::ISTIO_NOT_INSTALLED, "y"),
                ..all_ok()
            },
            State::False,
            reason::TOKEN_REQUEST_FAILED,
        ),
        (
            Checks {
                access_policy: Check::failed(reason::NO_SIDECAR, "x"),
                ..all_ok()
            },
            State::False,
            reason::NO_SIDECAR,
        ),
        (Checks::default(), State::Unknown, reason::PENDING),
    ];
    for (checks, state, reason) in cases {
        let ready = checks.ready(None);
        assert_eq!(
            (ready.state, ready.reason.as_str()),
            (state, reason),
            "{checks:?}"
        );
    }
}

#[test]
fn the_whole_status_is_built_from_the_checks() {
    let checks = Checks {
        url: Some("http://m.ns.example.com".into()),
        host: Some("m.ns.example.com".into()),
        secret_name: Some("client-credential".into()),
        service_account_name: Some("client".into()),
        token_expiration_time: Some(ts("2026-01-01T01:00:00Z")),
        renewal_time: Some(ts("2026-01-01T00:40:00Z")),
        ..all_ok()
    };
    let status = build_status(&checks, None, Some(3), ts("2026-01-01T00:00:00Z"));
    let condition = |t: &str, s: &str, r: &str, m: &str| {
        serde_json::json!({"type": t, "status": s, "reason": r, "message": m,
            "observedGeneration": 3, "lastTransitionTime": "2026-01-01T00:00:00Z"})
    };
    assert_eq!(
        serde_json::to_value(&status).unwrap(),
        serde_json::json!({
            "observedGeneration": 3,
            "url": "http://m.ns.example.com",
            "host": "m.ns.example.com",
            "secretName": "client-credential",
            "serviceAccountName": "client",
            "tokenExpirationTime": "2026-01-01T01:00:00Z",
            "renewalTime": "2026-01-01T00:40:00Z",
            "conditions": [
                condition("Ready", "True", "Ready", "the credential is issued and the access policy is in place (not verified through the gateway)"),
                condition("InferenceServiceReady", "True", "Ready", "ready"),
                condition("CredentialIssued", "True", "Issued", "issued"),
                condition("AccessPolicyReady", "True", "PolicyApplied", "applied"),
            ]
        })
    );
}

#[test]
fn a_status_with_sub_second_times_equals_itself_read_back() {
    let checks = Checks {
        token_expiration_time: Some(ts("2026-01-01T01:00:00.25Z")),
        renewal_time: Some(ts("2026-01-01T00:40:00.123456789Z")),
        ..all_ok()
    };
    let now = ts("2026-01-01T00:00:00.5Z");
    let first = build_status(&checks, None, Some(1), now);
    let read_back: InferenceAccessStatus =
        serde_json::from_value(serde_json::to_value(&first).unwrap()).unwrap();
    assert_eq!(read_back, first);
    // The next reconcile, from what the API server returned, builds the same status.
    assert_eq!(
        build_status(&checks, Some(&read_back), Some(1), now),
        read_back
    );
}

#[test]
fn last_transition_time_moves_only_when_a_condition_flips() {
    let first = build_status(&all_ok(), None, Some(1), ts("2026-01-01T00:00:00Z"));
    // Same states an hour later, new messages: times stay.
    let mut later = all_ok();
    later.credential = Check::ok(reason::ISSUED, "renewed");
    let second = build_status(&later, Some(&first), Some(1), ts("2026-01-01T01:00:00Z"));
    assert!(
        second
            .conditions
            .iter()
            .all(|c| c.last_transition_time.0 == ts("2026-01-01T00:00:00Z"))
    );
    // The policy breaks: it and Ready flip, the others keep their time.
    let mut broken = all_ok();
    broken.access_policy = Check::failed(reason::POLICY_FAILED, "x");
    let third = build_status(&broken, Some(&second), Some(2), ts("2026-01-01T02:00:00Z"));
    let times: Vec<_> = third
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.last_transition_time.0.to_string()))
        .collect();
    assert_eq!(
        times,
        [
            ("Ready", "2026-01-01T02:00:00Z".to_owned()),
            ("InferenceServiceReady", "2026-01-01T00:00:00Z".to_owned()),
            ("CredentialIssued", "2026-01-01T00:00:00Z".to_owned()),
            ("AccessPolicyReady", "2026-01-01T02:00:00Z".to_owned()),
        ]
    );
    assert!(
        third
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
}

#[test]
fn an_unchanged_checks_builds_an_equal_status() {
    let first = build_status(&all_ok(), None, Some(1), ts("2026-01-01T00:00:00Z"));
    let again = build_status(&all_ok(), Some(&first), Some(1), ts("2026-01-01T05:00:00Z"));
    assert_eq!(first, again);
}

mod endpoint {
    use super::super::*;
    use crate::fixtures::ts;

    #[test]
    fn endpoint_verified_is_carried_until_probed_again_and_never_gates_ready() {
        let ok = Checks {
            inference_service: Check::ok(reason::READY, "ready"),
            credential: Check::ok(reason::ISSUED, "issued"),
            access_policy: Check::ok(reason::POLICY_APPLIED, "applied"),
            endpoint: Some(Check::failed("AccessDenied", "403")),
            ..Checks::default()
        };
        let first = build_status(&ok, None, Some(1), ts("2026-01-01T00:00:00Z"));
        let find = |s: &InferenceAccessStatus, t: &str| {
            s.conditions.iter().find(|c| c.type_ == t).cloned().unwrap()
        };
        assert_eq!(find(&first, READY).status, "True");
        assert_eq!(find(&first, ENDPOINT_VERIFIED).reason, "AccessDenied");
        // Not probed this time: the last result stands, time and all.
        let unprobed = Checks {
            endpoint: None,
            ..ok.clone()
        };
        let second = build_status(&unprobed, Some(&first), Some(1), ts("2026-01-01T00:05:00Z"));
        assert_eq!(second, first);
        // Probed and fixed: it flips.
        let fixed = Checks {
            endpoint: Some(Check::ok("EndpointReachable", "200")),
            ..ok
        };
        let third = build_status(&fixed, Some(&second), Some(1), ts("2026-01-01T00:06:00Z"));
        let verified = find(&third, ENDPOINT_VERIFIED);
        assert_eq!(
            (verified.status.as_str(), verified.last_transition_time.0),
            ("True", ts("2026-01-01T00:06:00Z"))
        );
        // Never probed: no condition at all.
        let never = build_status(
            &Checks::default(),
            None,
            Some(1),
            ts("2026-01-01T00:00:00Z"),
        );
        assert!(
            never
                .conditions
                .iter()
                .all(|c| c.type_ != ENDPOINT_VERIFIED)
        );
    }
}
