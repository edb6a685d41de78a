//! mesh.mode Auto's outcomes in the status: helpers for `every_documented_reason`, and the path
//! recorded with why.

use super::checks;
use super::tests::{all_ready, token_plan, with_mesh};
use crate::fixtures::ts;
use crate::reconcile::detect::{Detected, MeshPath};
use crate::reconcile::mesh::{AutoResult, MeshOutcome};

pub(super) fn auto(path: MeshPath, result: AutoResult) -> MeshOutcome {
    MeshOutcome::Auto {
        detected: Detected {
            path,
            why: "because".into(),
        },
        result,
    }
}

pub(super) fn applied() -> AutoResult {
    AutoResult::Applied {
        user_id: "u".into(),
        applied: true,
    }
}

pub(super) fn sidecar() -> MeshPath {
    MeshPath::Sidecar
}

pub(super) fn waypoint(ingress_uses_it: bool) -> MeshPath {
    MeshPath::Waypoint {
        service: "m-predictor".into(),
        waypoint: "waypoint".into(),
        ingress_uses_it,
    }
}

pub(super) fn gateway() -> MeshPath {
    MeshPath::Gateway {
        gateway: crate::reconcile::detect::GatewayRef {
            namespace: "kserve".into(),
            name: "kserve-ingress-gateway".into(),
        },
        route: "m".into(),
    }
}

pub(super) fn ambient() -> MeshPath {
    MeshPath::AmbientWithoutWaypoint
}

pub(super) fn unprotected() -> MeshPath {
    MeshPath::Unprotected
}

#[test]
fn auto_records_the_path_and_why() {
    let token = token_plan();
    let found = checks(
        &token,
        &with_mesh(auto(waypoint(true), applied())),
        ts("2026-01-01T00:30:00Z"),
    );
    assert_eq!(found.mesh_path.as_deref(), Some("Waypoint"));
    assert!(
        found
            .access_policy
            .message
            .starts_with("path Waypoint: because;"),
        "{}",
        found.access_policy.message
    );
    // Explicit modes record no path.
    assert_eq!(
        checks(&token, &all_ready(&token), ts("2026-01-01T00:30:00Z")).mesh_path,
        None
    );
}

#[test]
fn a_refused_read_names_the_missing_right() {
    let token = token_plan();
    let right = "get namespaces (cluster-scoped)".to_owned();
    let outcome = MeshOutcome::Auto {
        detected: Detected {
            path: MeshPath::Unknown,
            why: format!("the operator may not {right}"),
        },
        result: AutoResult::Forbidden {
            right: right.clone(),
        },
    };
    let found = checks(&token, &with_mesh(outcome), ts("2026-01-01T00:30:00Z"));
    assert_eq!(found.mesh_path.as_deref(), Some("Unknown"));
    let check = &found.access_policy;
    assert_eq!(
        (check.reason.as_str(), check.state),
        (
            "DataPathForbidden",
            crate::reconcile::conditions::State::False
        )
    );
    for needle in [
        &*right,
        "watchNamespaces",
        "docs/install.md",
        "spec.mesh.mode",
    ] {
        assert!(check.message.contains(needle), "{}", check.message);
    }
}
