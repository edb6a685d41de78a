//! Which Istio proxies stand before a model's pod, decided from the labels and objects Istio reads:
//! an injected sidecar, or ambient mode (ztunnel, plus the waypoint the model's Service uses);
//! and the identities (mTLS principals) of the proxies the double plays.

use std::collections::BTreeMap;

use crate::policy::{ObjectRef, WAYPOINT_CLASS, principal};

pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";
pub const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
pub const INGRESS_USE_WAYPOINT: &str = "istio.io/ingress-use-waypoint";
pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
pub const SIDECAR_INJECT: &str = "sidecar.istio.io/inject";
pub const SIDECAR_STATUS: &str = "sidecar.istio.io/status";
pub const INJECTION_LABEL: &str = "istio-injection";
pub const GATEWAY_SERVICE_ACCOUNT: &str = "gateway.istio.io/service-account";
/// The label Istio puts on the pods of a Gateway it deploys.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

type Labels = BTreeMap<String, String>;

/// How a pod is meshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataplane {
    /// An Envoy sidecar enforces L7 policy at the pod.
    Sidecar,
    /// Captured by ztunnel (L4); L7 only at a waypoint.
    Ambient,
    /// Not in the mesh: nothing is enforced at the pod.
    None,
}

/// What Istio would have made of a pod.
///
/// An injected pod (an `istio-proxy` container or the injector's `sidecar.istio.io/status`
/// annotation) has a sidecar and is never captured by ztunnel. Otherwise: opted out of injection
/// (`sidecar.istio.io/inject: "false"` as label or annotation) → ambient when its namespace (or
/// the pod) is labelled `istio.io/dataplane-mode: ambient`, else out of the mesh; in an ambient
/// namespace → a sidecar only when injection is asked for (pod label `sidecar.istio.io/inject:
/// "true"`, namespace label `istio-injection: enabled`), else ambient; anywhere else → a sidecar,
/// as in Kubeflow's profile namespaces (labelled `istio-injection: enabled`; the double does not
/// require the label). A pod labelled `istio.io/dataplane-mode: none` is never ambient.
pub fn dataplane(
    pod_labels: &Labels,
    pod_annotations: &Labels,
    containers: &[&str],
    namespace_labels: &Labels,
) -> Dataplane {
    if containers.contains(&"istio-proxy") || pod_annotations.contains_key(SIDECAR_STATUS) {
        return Dataplane::Sidecar;
    }
    let is = |map: &Labels, key: &str, value: &str| map.get(key).is_some_and(|v| v == value);
    let ambient = !is(pod_labels, DATAPLANE_MODE, "none")
        && (is(namespace_labels, DATAPLANE_MODE, "ambient")
            || is(pod_labels, DATAPLANE_MODE, "ambient"));
    let opted_out =
        is(pod_labels, SIDECAR_INJECT, "false") || is(pod_annotations, SIDECAR_INJECT, "false");
    if opted_out {
        return if ambient {
            Dataplane::Ambient
        } else {
            Dataplane::None
        };
    }
    if ambient {
        let injected = is(pod_labels, SIDECAR_INJECT, "true")
            || is(namespace_labels, INJECTION_LABEL, "enabled");
        return if injected {
            Dataplane::Sidecar
        } else {
            Dataplane::Ambient
        };
    }
    Dataplane::Sidecar
}

/// The waypoint a Service names (`istio.io/use-waypoint`, in `istio.io/use-waypoint-namespace`
/// or the Service's namespace), else the one its namespace names; `none` opts out. Without a
/// Service, the namespace's labels decide.
pub fn waypoint_named(
    namespace: &str,
    service_labels: Option<&Labels>,
    namespace_labels: &Labels,
) -> Option<ObjectRef> {
    let from = |labels: &Labels| {
        let name = labels.get(USE_WAYPOINT)?;
        let waypoint_namespace = labels
            .get(USE_WAYPOINT_NAMESPACE)
            .map_or(namespace, String::as_str);
        Some(ObjectRef::new(waypoint_namespace, name))
    };
    let named = service_labels
        .and_then(from)
        .or_else(|| from(namespace_labels))?;
    (named.name != "none").then_some(named)
}

/// Whether a Gateway is a waypoint that takes Service traffic: class `istio-waypoint` and
/// `istio.io/waypoint-for` `service` (the default) or `all`.
pub fn serves_services(gateway_class: &str, gateway_labels: &Labels) -> bool {
    gateway_class == WAYPOINT_CLASS
        && gateway_labels
            .get(WAYPOINT_FOR)
            .is_none_or(|v| v == "service" || v == "all")
}

/// Ingress gateways skip waypoints unless the Service (or its namespace) opts in with
/// `istio.io/ingress-use-waypoint: "true"`.
pub fn ingress_uses_waypoint(service_labels: Option<&Labels>, namespace_labels: &Labels) -> bool {
    let opted_in = |labels: &Labels| {
        labels
            .get(INGRESS_USE_WAYPOINT)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    service_labels.is_some_and(opted_in) || opted_in(namespace_labels)
}

/// The principal of the pods Istio deploys for a Gateway: its `gateway.istio.io/service-account`
/// annotation, else `<name>-<class>`, or `<name>` for a waypoint.
pub fn gateway_principal(gateway: &ObjectRef, class: &str, annotations: &Labels) -> String {
    let service_account = match annotations.get(GATEWAY_SERVICE_ACCOUNT) {
        Some(sa) => sa.clone(),
        None if class == WAYPOINT_CLASS => gateway.name.clone(),
        None => format!("{}-{class}", gateway.name),
    };
    principal(&gateway.namespace, &service_account)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn dataplane_table() {
        use Dataplane::*;
        let none = labels(&[]);
        let ambient_ns = labels(&[(DATAPLANE_MODE, "ambient")]);
        let opt_out = labels(&[(SIDECAR_INJECT, "false")]);
        /// (name, pod labels, pod annotations, containers, namespace labels, expected)
        type Case<'a> = (&'a str, Labels, Labels, Vec<&'a str>, Labels, Dataplane);
        let cases: Vec<Case> = vec![
            (
                "default: Kubeflow injects",
                none.clone(),
                none.clone(),
                vec![],
                none.clone(),
                Sidecar,
            ),
            (
                "annotation opts out",
                none.clone(),
                opt_out.clone(),
                vec![],
                none.clone(),
                None,
            ),
            (
                "label opts out",
                opt_out.clone(),
                none.clone(),
                vec![],
                none.clone(),
                None,
            ),
            (
                "an istio-proxy container is a sidecar, whatever the labels",
                opt_out.clone(),
                none.clone(),
                vec!["kserve-container", "istio-proxy"],
                ambient_ns.clone(),
                Sidecar,
            ),
            (
                "the injector's status annotation",
                none.clone(),
                labels(&[(SIDECAR_STATUS, "{}")]),
                vec![],
                ambient_ns.clone(),
                Sidecar,
            ),
            (
                "ambient namespace",
                none.clone(),
                none.clone(),
                vec![],
                ambient_ns.clone(),
                Ambient,
            ),
            (
                "ambient namespace, the sample's inject=false",
                none.clone(),
                opt_out.clone(),
                vec![],
                ambient_ns.clone(),
                Ambient,
            ),
            (
                "ambient pod label",
                labels(&[(DATAPLANE_MODE, "ambient")]),
                opt_out.clone(),
                vec![],
                none.clone(),
                Ambient,
            ),
            (
                "pod opts out of ambient",
                labels(&[(DATAPLANE_MODE, "none"), (SIDECAR_INJECT, "false")]),
                none.clone(),
                vec![],
                ambient_ns.clone(),
                None,
            ),
            (
                "injection asked for in an ambient namespace wins",
                labels(&[(SIDECAR_INJECT, "true")]),
                none.clone(),
                vec![],
                ambient_ns.clone(),
                Sidecar,
            ),
            (
                "namespace with both labels injects",
                none.clone(),
                none.clone(),
                vec![],
                labels(&[(DATAPLANE_MODE, "ambient"), (INJECTION_LABEL, "enabled")]),
                Sidecar,
            ),
        ];
        for (name, pod_labels, annotations, containers, ns, want) in cases {
            assert_eq!(
                dataplane(&pod_labels, &annotations, &containers, &ns),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn waypoint_choice() {
        let ns = labels(&[(USE_WAYPOINT, "waypoint")]);
        let svc = labels(&[(USE_WAYPOINT, "model-waypoint")]);
        let shared = labels(&[(USE_WAYPOINT, "shared"), (USE_WAYPOINT_NAMESPACE, "mesh")]);
        let none = labels(&[(USE_WAYPOINT, "none")]);
        let empty = labels(&[]);
        let cases = [
            (
                "namespace label",
                None,
                &ns,
                Some(ObjectRef::new("m", "waypoint")),
            ),
            (
                "service label wins",
                Some(&svc),
                &ns,
                Some(ObjectRef::new("m", "model-waypoint")),
            ),
            ("service opts out", Some(&none), &ns, None),
            (
                "other namespace",
                Some(&shared),
                &empty,
                Some(ObjectRef::new("mesh", "shared")),
            ),
            ("unlabelled", Some(&empty), &empty, None),
        ];
        for (name, service, namespace, want) in cases {
            assert_eq!(waypoint_named("m", service, namespace), want, "{name}");
        }
        assert!(serves_services(WAYPOINT_CLASS, &empty));
        assert!(serves_services(
            WAYPOINT_CLASS,
            &labels(&[(WAYPOINT_FOR, "all")])
        ));
        assert!(!serves_services(
            WAYPOINT_CLASS,
            &labels(&[(WAYPOINT_FOR, "workload")])
        ));
        assert!(!serves_services("istio", &empty));
        let opted = labels(&[(INGRESS_USE_WAYPOINT, "true")]);
        assert!(ingress_uses_waypoint(Some(&opted), &empty));
        assert!(ingress_uses_waypoint(None, &opted));
        assert!(!ingress_uses_waypoint(Some(&empty), &empty));
    }

    #[test]
    fn principals() {
        let gw = ObjectRef::new("kserve", "kserve-ingress-gateway");
        assert_eq!(
            gateway_principal(&gw, "istio", &labels(&[])),
            "cluster.local/ns/kserve/sa/kserve-ingress-gateway-istio"
        );
        assert_eq!(
            gateway_principal(
                &ObjectRef::new("m", "waypoint"),
                WAYPOINT_CLASS,
                &labels(&[])
            ),
            "cluster.local/ns/m/sa/waypoint"
        );
        assert_eq!(
            gateway_principal(
                &gw,
                "istio",
                &labels(&[(GATEWAY_SERVICE_ACCOUNT, "custom")])
            ),
            "cluster.local/ns/kserve/sa/custom"
        );
    }
}
