//! `mesh.mode: Auto`: how is the model reached, and what can enforce a grant there? `observe`
//! reads the cluster (pods, namespace, Service, Gateway API objects); `choose` is pure and
//! table-tested.
//!
//! Order of the checks, and why:
//! 1. An HTTPRoute that the InferenceService owns (KServe Standard mode with `enableGatewayApi`)
//!    attached to a Gateway run by Istio: requests arrive there, and that Gateway does not set the
//!    user-id header the pod-side policy matches, so only a policy at the Gateway can tell callers
//!    apart.
//! 2. Predictor pods with an Istio sidecar: today's selector policy on the pods.
//! 3. An ambient namespace (`istio.io/dataplane-mode: ambient`, pods without a sidecar): only a
//!    waypoint enforces L7 rules; a selector policy with L7 rules would be enforced by ztunnel,
//!    which cannot read them and denies everyone.
//! 4. Nothing enforces: no sidecar, not ambient, no Istio Gateway.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::error::{Error, Kind, api_status};

pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
pub const INGRESS_USE_WAYPOINT_LABEL: &str = "istio.io/ingress-use-waypoint";
/// The controllerName of Istio's GatewayClasses (`istio`, `istio-waypoint`).
pub const ISTIO_CONTROLLER: &str = "istio.io/gateway-controller";
const INFERENCE_SERVICE_LABEL: &str = "serving.kserve.io/inferenceservice";

/// A Gateway API Gateway by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
}

/// What `observe` read. Plain values, so `choose` needs no client.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub namespace_labels: BTreeMap<String, String>,
    /// Per predictor pod: whether it runs an Istio sidecar.
    pub pod_sidecars: Vec<bool>,
    /// The predictor Service (`<name>-predictor`) and its labels, when it exists.
    pub service: Option<(String, BTreeMap<String, String>)>,
    /// The waypoint the Service or namespace names, when a Gateway of that name exists.
    pub waypoint_exists: bool,
    /// The HTTPRoute the InferenceService owns, and its parent Gateway when Istio runs it.
    pub route: Option<RouteView>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteView {
    pub name: String,
    /// The parent Gateway, when it exists and its class's controller is Istio's.
    pub istio_gateway: Option<GatewayRef>,
    /// The parent it names, for the message when it is not Istio's.
    pub parent: Option<GatewayRef>,
}

/// The path requests take to the model, as far as a grant is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshPath {
    /// A policy at this Istio Gateway, scoped to the model's host.
    Gateway { gateway: GatewayRef, route: String },
    /// The predictor's sidecar: the selector policy.
    Sidecar,
    /// Ambient with a waypoint: a policy attached to the Service.
    Waypoint {
        service: String,
        waypoint: String,
        /// Ingress traffic goes through the waypoint only when opted in.
        ingress_uses_it: bool,
    },
    /// Ambient without a (usable) waypoint: nothing can enforce L7 rules.
    AmbientWithoutWaypoint,
    /// No sidecar, not ambient, no Istio Gateway.
    Unprotected,
    /// The operator may not read what decides the path (`observe` was refused).
    Unknown,
}

impl MeshPath {
    /// The value of `status.meshPath`.
    pub fn name(&self) -> &'static str {
        match self {
            MeshPath::Gateway { .. } => "Gateway",
            MeshPath::Sidecar => "Sidecar",
            MeshPath::Waypoint { .. } => "Waypoint",
            MeshPath::AmbientWithoutWaypoint => "Ambient",
            MeshPath::Unprotected => "None",
            MeshPath::Unknown => "Unknown",
        }
    }
}

/// The path and a sentence saying why, for the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    pub path: MeshPath,
    pub why: String,
}

/// The waypoint the Service (first) or the namespace names; `none` opts out.
fn waypoint_name(observed: &Observed) -> Option<String> {
    let from_service = observed
        .service
        .as_ref()
        .and_then(|(_, labels)| labels.get(USE_WAYPOINT_LABEL));
    from_service
        .or_else(|| observed.namespace_labels.get(USE_WAYPOINT_LABEL))
        .filter(|w| w.as_str() != "none")
        .cloned()
}

fn label_true(labels: &BTreeMap<String, String>, key: &str) -> bool {
    labels.get(key).is_some_and(|v| v == "true")
}

pub fn choose(observed: &Observed) -> Detected {
    let detected = |path: MeshPath, why: String| Detected { path, why };
    if let Some(route) = &observed.route
        && let Some(gateway) = &route.istio_gateway
    {
        return detected(
            MeshPath::Gateway {
                gateway: gateway.clone(),
                route: route.name.clone(),
            },
            format!(
                "HTTPRoute {} attaches the model to Gateway {}/{}, run by Istio",
                route.name, gateway.namespace, gateway.name
            ),
        );
    }
    let sidecars = observed.pod_sidecars.iter().filter(|s| **s).count();
    if sidecars > 0 {
        return detected(
            MeshPath::Sidecar,
            format!(
                "{sidecars} of {} predictor pods run an Istio sidecar",
                observed.pod_sidecars.len()
            ),
        );
    }
    let ambient = observed
        .namespace_labels
        .get(DATAPLANE_MODE_LABEL)
        .is_some_and(|m| m == "ambient");
    if ambient {
        return match (&observed.service, waypoint_name(observed)) {
            (Some((service, labels)), Some(waypoint)) if observed.waypoint_exists => detected(
                MeshPath::Waypoint {
                    service: service.clone(),
                    waypoint: waypoint.clone(),
                    ingress_uses_it: label_true(labels, INGRESS_USE_WAYPOINT_LABEL)
                        || label_true(&observed.namespace_labels, INGRESS_USE_WAYPOINT_LABEL),
                },
                format!("the namespace is ambient and Service {service} uses waypoint {waypoint}"),
            ),
            (None, _) => detected(
                MeshPath::AmbientWithoutWaypoint,
                "the namespace is ambient and the predictor Service does not exist yet".into(),
            ),
            (_, Some(waypoint)) => detected(
                MeshPath::AmbientWithoutWaypoint,
                format!(
                    "the namespace is ambient and names waypoint {waypoint}, but no Gateway {waypoint} exists in it"
                ),
            ),
            (_, None) => detected(
                MeshPath::AmbientWithoutWaypoint,
                format!(
                    "the namespace is ambient and neither it nor the predictor Service is labelled {USE_WAYPOINT_LABEL}"
                ),
            ),
        };
    }
    let why = match &observed.route {
        Some(RouteView {
            name,
            parent: Some(parent),
            ..
        }) => format!(
            "the predictor pods run no sidecar, the namespace is not ambient, and HTTPRoute {name}'s Gateway {}/{} is not run by Istio",
            parent.namespace, parent.name
        ),
        _ if observed.pod_sidecars.is_empty() => {
            "no predictor pod runs yet, the namespace is not ambient and no HTTPRoute of the model attaches to an Istio Gateway".into()
        }
        _ => "the predictor pods run no sidecar, the namespace is not ambient and no HTTPRoute of the model attaches to an Istio Gateway".into(),
    };
    detected(MeshPath::Unprotected, why)
}

/// Whether a pod runs Istio's sidecar: the injector's status annotation or the container.
pub fn has_sidecar(pod: &Pod) -> bool {
    pod.annotations().contains_key("sidecar.istio.io/status")
        || pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .any(|c| c.name == "istio-proxy")
}

pub fn gateway_api(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", kind),
        plural,
    )
}

/// A read of the data path failed: a 403 names the right the operator lacks (`verb resource
/// where`, as RBAC would grant it), anything else is an API failure retried with backoff.
fn read_failed(right: String) -> impl FnOnce(kube::Error) -> Error {
    move |err| match api_status(&err) {
        Some(403) => Error::Forbidden { right },
        _ => Error::api(Kind::DataPath)(err),
    }
}

/// Where a namespaced read happens, for the right it needs.
pub(super) fn in_ns(namespace: &str) -> String {
    format!("in namespace {namespace}")
}

const CLUSTER_WIDE: &str = "(cluster-scoped)";

/// A GET that takes "not found" and "kind not served" as absent; `right` names it for a 403.
async fn get_opt<K>(api: &Api<K>, name: &str, right: String) -> Result<Option<K>, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(found) => Ok(found),
        Err(err) if api_status(&err) == Some(404) => Ok(None),
        Err(err) => Err(read_failed(right)(err)),
    }
}

/// A LIST that takes "kind not served" as empty; `right` names it for a 403.
pub(super) async fn list_or_empty(
    api: &Api<DynamicObject>,
    params: &ListParams,
    right: String,
) -> Result<Vec<DynamicObject>, Error> {
    match api.list(params).await {
        Ok(list) => Ok(list.items),
        // Gateway API or Istio is not installed.
        Err(err) if api_status(&err) == Some(404) => Ok(Vec::new()),
        Err(err) => Err(read_failed(right)(err)),
    }
}

/// Whether the HTTPRoute names the InferenceService as its controller.
fn owned_by(route: &DynamicObject, isvc_uid: &str) -> bool {
    route
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == isvc_uid)
}

/// The first parentRef that is a Gateway, with its namespace defaulted to the route's.
fn parent_gateway(route: &DynamicObject, namespace: &str) -> Option<GatewayRef> {
    let parents = route.data["spec"]["parentRefs"].as_array()?;
    parents.iter().find_map(|p| {
        let group = p["group"].as_str().unwrap_or("gateway.networking.k8s.io");
        let kind = p["kind"].as_str().unwrap_or("Gateway");
        (group == "gateway.networking.k8s.io" && kind == "Gateway").then(|| GatewayRef {
            namespace: p["namespace"].as_str().unwrap_or(namespace).to_owned(),
            name: p["name"].as_str().unwrap_or_default().to_owned(),
        })
    })
}

/// Reads what `choose` needs for the InferenceService `isvc` (name, uid) in `namespace`.
pub async fn observe(
    client: &Client,
    namespace: &str,
    isvc: &str,
    isvc_uid: &str,
) -> Result<Observed, Error> {
    let namespace_labels = get_opt(
        &Api::<Namespace>::all(client.clone()),
        namespace,
        format!("get namespaces {CLUSTER_WIDE}"),
    )
    .await?
    .map(|n| n.labels().clone())
    .unwrap_or_default();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{INFERENCE_SERVICE_LABEL}={isvc}")))
        .await
        .map_err(read_failed(format!("list pods {}", in_ns(namespace))))?;
    let service_name = format!("{isvc}-predictor");
    let service = get_opt(
        &Api::<Service>::namespaced(client.clone(), namespace),
        &service_name,
        format!("get services {}", in_ns(namespace)),
    )
    .await?
    .map(|s| (service_name.clone(), s.labels().clone()));
    let mut observed = Observed {
        namespace_labels,
        pod_sidecars: pods.items.iter().map(has_sidecar).collect(),
        service,
        ..Observed::default()
    };
    let gateways = |ns: &str| {
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            ns,
            &gateway_api("Gateway", "gateways"),
        )
    };
    let gateway_right = |ns: &str| format!("get gateways.gateway.networking.k8s.io {}", in_ns(ns));
    if let Some(waypoint) = waypoint_name(&observed) {
        observed.waypoint_exists =
            get_opt(&gateways(namespace), &waypoint, gateway_right(namespace))
                .await?
                .is_some();
    }
    let routes = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        namespace,
        &gateway_api("HTTPRoute", "httproutes"),
    );
    let listed = list_or_empty(
        &routes,
        &ListParams::default(),
        format!(
            "list httproutes.gateway.networking.k8s.io {}",
            in_ns(namespace)
        ),
    )
    .await?;
    if let Some(route) = listed.iter().find(|r| owned_by(r, isvc_uid)) {
        let parent = parent_gateway(route, namespace);
        let mut istio_gateway = None;
        if let Some(parent) = &parent
            && let Some(gateway) = get_opt(
                &gateways(&parent.namespace),
                &parent.name,
                gateway_right(&parent.namespace),
            )
            .await?
        {
            let class = gateway.data["spec"]["gatewayClassName"]
                .as_str()
                .unwrap_or_default();
            let classes = Api::<DynamicObject>::all_with(
                client.clone(),
                &gateway_api("GatewayClass", "gatewayclasses"),
            );
            let controller = get_opt(
                &classes,
                class,
                format!("get gatewayclasses.gateway.networking.k8s.io {CLUSTER_WIDE}"),
            )
            .await?
            .and_then(|c| c.data["spec"]["controllerName"].as_str().map(str::to_owned));
            if controller.as_deref() == Some(ISTIO_CONTROLLER) {
                istio_gateway = Some(parent.clone());
            }
        }
        observed.route = Some(RouteView {
            name: route.name_any(),
            istio_gateway,
            parent,
        });
    }
    Ok(observed)
}

/// The issuers of the RequestAuthentications attached to the Gateway (`targetRefs`), whose
/// verified tokens give `request.auth.principal` there.
pub async fn gateway_issuers(client: &Client, gateway: &GatewayRef) -> Result<Vec<String>, Error> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("security.istio.io", "v1", "RequestAuthentication"),
        "requestauthentications",
    );
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), &gateway.namespace, &resource);
    let right = format!(
        "list requestauthentications.security.istio.io {}",
        in_ns(&gateway.namespace)
    );
    let list = list_or_empty(&api, &ListParams::default(), right).await?;
    Ok(issuers_for(list.iter().map(|r| &r.data), &gateway.name))
}

/// Pure part of `gateway_issuers`.
pub fn issuers_for<'a>(specs: impl Iterator<Item = &'a Value>, gateway: &str) -> Vec<String> {
    let mut issuers: Vec<String> = specs
        .filter(|ra| {
            ra["spec"]["targetRefs"].as_array().is_some_and(|refs| {
                refs.iter().any(|r| {
                    r["group"] == "gateway.networking.k8s.io"
                        && r["kind"] == "Gateway"
                        && r["name"] == gateway
                })
            })
        })
        .flat_map(|ra| {
            ra["spec"]["jwtRules"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|rule| rule["issuer"].as_str().map(str::to_owned))
        .collect();
    issuers.sort();
    issuers.dedup();
    issuers
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
