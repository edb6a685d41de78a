//! `choose` and the pure parts of the reads, table-tested.
use super::*;
use serde_json::json;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn gw() -> GatewayRef {
    GatewayRef {
        namespace: "kserve".into(),
        name: "kserve-ingress-gateway".into(),
    }
}

fn service(pairs: &[(&str, &str)]) -> Option<(String, BTreeMap<String, String>)> {
    Some(("m-predictor".into(), labels(pairs)))
}

#[test]
fn choose_table() {
    let ambient = labels(&[(DATAPLANE_MODE_LABEL, "ambient")]);
    let route = |istio: bool| RouteView {
        name: "m".into(),
        istio_gateway: istio.then(gw),
        parent: Some(gw()),
    };
    let cases: Vec<(&str, Observed, &str)> = vec![
        (
            "an Istio Gateway's route wins over a sidecar",
            Observed {
                pod_sidecars: vec![true],
                route: Some(route(true)),
                ..Observed::default()
            },
            "Gateway",
        ),
        (
            "a sidecar",
            Observed {
                pod_sidecars: vec![false, true],
                route: Some(route(false)),
                ..Observed::default()
            },
            "Sidecar",
        ),
        (
            "ambient, the Service names an existing waypoint",
            Observed {
                namespace_labels: ambient.clone(),
                pod_sidecars: vec![false],
                service: service(&[(USE_WAYPOINT_LABEL, "waypoint")]),
                waypoint_exists: true,
                ..Observed::default()
            },
            "Waypoint",
        ),
        (
            "ambient, the waypoint does not exist",
            Observed {
                namespace_labels: ambient.clone(),
                service: service(&[(USE_WAYPOINT_LABEL, "waypoint")]),
                ..Observed::default()
            },
            "Ambient",
        ),
        (
            "ambient, the Service opts out of the namespace's waypoint",
            Observed {
                namespace_labels: labels(&[
                    (DATAPLANE_MODE_LABEL, "ambient"),
                    (USE_WAYPOINT_LABEL, "waypoint"),
                ]),
                service: service(&[(USE_WAYPOINT_LABEL, "none")]),
                waypoint_exists: true,
                ..Observed::default()
            },
            "Ambient",
        ),
        (
            "ambient, no Service yet",
            Observed {
                namespace_labels: ambient,
                ..Observed::default()
            },
            "Ambient",
        ),
        (
            "no sidecar, not ambient, a route on another implementation",
            Observed {
                pod_sidecars: vec![false],
                route: Some(route(false)),
                ..Observed::default()
            },
            "None",
        ),
    ];
    for (name, observed, want) in cases {
        assert_eq!(choose(&observed).path.name(), want, "{name}");
    }
}

#[test]
fn the_waypoint_path_says_whether_ingress_uses_it() {
    let mut observed = Observed {
        namespace_labels: labels(&[
            (DATAPLANE_MODE_LABEL, "ambient"),
            (USE_WAYPOINT_LABEL, "waypoint"),
        ]),
        service: service(&[]),
        waypoint_exists: true,
        ..Observed::default()
    };
    let ingress = |o: &Observed| match choose(o).path {
        MeshPath::Waypoint {
            ingress_uses_it,
            waypoint,
            service,
        } => (ingress_uses_it, waypoint, service),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        ingress(&observed),
        (false, "waypoint".into(), "m-predictor".into())
    );
    observed.service = service(&[(INGRESS_USE_WAYPOINT_LABEL, "true")]);
    assert!(ingress(&observed).0);
}

#[test]
fn issuers_come_from_request_authentications_attached_to_the_gateway() {
    let ras = [
        json!({"spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "kserve-ingress-gateway"}],
                        "jwtRules": [{"issuer": "https://b"}, {"issuer": "https://a"}]}}),
        json!({"spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "other"}],
                        "jwtRules": [{"issuer": "https://c"}]}}),
        json!({"spec": {"selector": {"matchLabels": {"app": "x"}}, "jwtRules": [{"issuer": "https://d"}]}}),
    ];
    assert_eq!(
        issuers_for(ras.iter(), "kserve-ingress-gateway"),
        ["https://a", "https://b"]
    );
}
