use super::*;
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
