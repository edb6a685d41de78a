//! `doctor`: walks the path a request with the access's credential takes to the model, hop by
//! hop (the access and its Secret, the target, the token, the detected mesh path, the gateway and
//! its RequestAuthentication, the route, the policies at each enforcement point, the pods'
//! sidecar or ambient state), then sends one live request through the gateway and names the hop
//! that refused it, with the fix. Reads only; the token is decoded, never printed.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::Value;

use super::access::{Cluster, client_secret, endpoint};
use super::doctor_checks::{
    self as checks, Claims, Hop, Place, PolicyView, ROOT_NAMESPACE, Verdict,
};
use super::doctor_hops::{gateway_hop, human, pod_hop_report, route_hop, target_hop, token_hop};
use super::{Output, Target};
use crate::api::{InferenceAccess, InferenceService, TargetKind};
use crate::core::credential::Credential;
use crate::core::diagnosis::{Diagnosis, diagnose};
use crate::core::secret_codec::ClientSecret;
use crate::gateway::client::GatewayClient;
use crate::gateway::probe;
use crate::reconcile::consent::{self, Referent};
use crate::reconcile::detect::{self, Detected, MeshPath, Observed};
use crate::reconcile::target;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the InferenceAccess.
    pub name: String,
    /// Send the live request to this gateway address instead of the Secret's gateway-url (e.g.
    /// a port-forward: http://localhost:8080).
    #[arg(long)]
    pub gateway: Option<String>,
    /// Output format: human text, or json/yaml for scripts.
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub name: String,
    pub namespace: String,
    pub mode: String,
    /// The path detected now (`status.meshPath`'s values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh_path: Option<String>,
    pub hops: Vec<Hop>,
    /// Every ALLOW and DENY AuthorizationPolicy that binds a hop of the path.
    pub policies: Vec<PolicyView>,
    /// The token's claims (never the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Claims>,
    /// The hop that refused the live request (or the first that fails without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_hop: Option<String>,
    /// The live request's diagnosis (`EndpointVerified`'s reasons).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub async fn run(args: Args) -> Result<(), String> {
    let cluster = Cluster::connect(&args.target).await?;
    let access = cluster.access(&args.name).await?;
    let report = examine(&cluster, &access, args.gateway.as_deref(), Timestamp::now()).await;
    let text = match args.output.render(&report)? {
        Some(text) => text,
        None => human(&report),
    };
    print!("{text}");
    match &report.failing_hop {
        Some(hop) => Err(format!(
            "the request fails at the {hop} hop{}",
            report
                .reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )),
        None => Ok(()),
    }
}

fn security(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("security.istio.io", "v1", kind),
        plural,
    )
}

/// `(namespace, name, spec)` of every object of `resource` in `namespaces`; a namespace that
/// cannot be read is reported in `errors` and skipped.
async fn list_specs(
    client: &Client,
    resource: &ApiResource,
    namespaces: &[String],
    errors: &mut Vec<String>,
) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for ns in namespaces {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, resource);
        match api.list(&ListParams::default()).await {
            Ok(list) => found.extend(
                list.items
                    .into_iter()
                    .map(|o| (ns.clone(), o.name_any(), o.data["spec"].clone())),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(error) => errors.push(format!("{} in {ns}: {error}", resource.plural)),
        }
    }
    found
}

/// The hop behind the gateway and where its policies bind.
fn pod_side(observed: &Observed, namespace: &str, labels: Place) -> (&'static str, Place) {
    // The pods' own enforcement, whatever the ingress: the same choice without the route.
    let behind = detect::choose(&Observed {
        route: None,
        ..observed.clone()
    });
    match behind.path {
        MeshPath::Waypoint {
            service, waypoint, ..
        } => (
            "waypoint",
            Place::Waypoint {
                namespace: namespace.to_owned(),
                service,
                waypoint,
            },
        ),
        MeshPath::AmbientWithoutWaypoint => ("ztunnel", labels),
        MeshPath::Unprotected => ("pod", labels),
        MeshPath::Sidecar | MeshPath::Gateway { .. } | MeshPath::Unknown => ("sidecar", labels),
    }
}

async fn examine(
    cluster: &Cluster,
    access: &InferenceAccess,
    gateway_override: Option<&str>,
    now: Timestamp,
) -> Report {
    let client = &cluster.client;
    let ns = cluster.namespace.clone();
    let name = access.metadata.name.clone().unwrap_or_default();
    let model = access.spec.inference_service.name.clone();
    let mut hops = Vec::new();

    // A model in another namespace: its pods, path and policies are there. Without its
    // owner's consent nothing else can work, so that hop comes first.
    let model_ns = access
        .spec
        .inference_service
        .namespace
        .clone()
        .unwrap_or_else(|| ns.clone());
    if model_ns != ns {
        hops.push(consent_hop(client, &model_ns, &model, &ns).await);
    }

    let stored = match cluster.access_and_secret(&name).await {
        Ok((_, secret)) => client_secret(&secret, &name, &ns),
        Err(error) => Err(error),
    };
    hops.push(match &stored {
        Ok(stored) => Hop::new(
            "access",
            Verdict::Ok,
            format!(
                "InferenceAccess {ns}/{name}; its Secret holds a {} for {}",
                match stored.credential {
                    Credential::Bearer(_) => "ServiceAccount token",
                    Credential::Cookie { .. } => "Dex session cookie",
                },
                stored.url
            ),
        ),
        Err(error) => Hop::new("access", Verdict::Fail, error.clone()),
    });
    let stored = stored.ok();

    let llm = access.spec.inference_service.kind == TargetKind::LlmInferenceService;
    let isvc = read_target(client, &model_ns, &model, llm).await;
    hops.push(target_hop(&model_ns, &model, &isvc, stored.as_ref()));
    let isvc = isvc.ok().flatten();

    let claims = match stored.as_ref().map(|s| &s.credential) {
        Some(Credential::Bearer(token)) => checks::claims(token),
        _ => None,
    };
    hops.push(token_hop(stored.as_ref(), claims.as_ref(), now));

    // How the model is reached: the operator's own detection.
    let detected: Result<(Observed, Detected), String> = match &isvc {
        Some(isvc) => {
            let uid = isvc.metadata.uid.clone().unwrap_or_default();
            detect::observe(client, &model_ns, &model, &uid)
                .await
                .map(|o| {
                    let d = detect::choose(&o);
                    (o, d)
                })
                .map_err(|e| e.to_string())
        }
        None => Err(format!("InferenceService {model} not found")),
    };
    let mode = format!("{:?}", access.spec.mesh.mode);
    let status_path = access.status.as_ref().and_then(|s| s.mesh_path.clone());
    hops.push(match &detected {
        Ok((_, d)) if status_path.as_deref().is_some_and(|p| p != d.path.name()) => Hop::new(
            "path",
            Verdict::Warn,
            format!(
                "mode {mode}; now {}: {}; the operator last recorded {}",
                d.path.name(),
                d.why,
                status_path.as_deref().unwrap_or_default()
            ),
        )
        .fix("the operator sees the change at its next reconcile; touch the access to hurry it"),
        Ok((_, d)) => Hop::new(
            "path",
            Verdict::Ok,
            format!("mode {mode}; path {}: {}", d.path.name(), d.why),
        ),
        Err(error) => Hop::new(
            "path",
            Verdict::Warn,
            format!("mode {mode}; the path could not be read: {error}"),
        )
        .fix("doctor reads pods, the namespace, Services and Gateway API objects with your kubeconfig's rights"),
    });

    let gateway_ref = match &detected {
        Ok((
            _,
            Detected {
                path: MeshPath::Gateway { gateway, .. },
                ..
            },
        )) => Some(gateway.clone()),
        _ => None,
    };
    let gateway_place = match &gateway_ref {
        Some(g) => Place::Gateway {
            namespace: g.namespace.clone(),
            name: g.name.clone(),
        },
        None => Place::kubeflow_gateway(),
    };
    let pod_labels = predictor_labels(client, &model_ns, &model).await;
    let observed = detected
        .as_ref()
        .map(|(o, _)| o.clone())
        .unwrap_or_default();
    let (pod_hop, pod_place) = pod_side(&observed, &model_ns, pod_labels);

    let mut errors = Vec::new();
    let mut namespaces = vec![model_ns.clone(), ROOT_NAMESPACE.to_owned()];
    if let Some(g) = &gateway_ref {
        namespaces.push(g.namespace.clone());
    }
    namespaces.sort();
    namespaces.dedup();
    let authentications = list_specs(
        client,
        &security("RequestAuthentication", "requestauthentications"),
        &namespaces,
        &mut errors,
    )
    .await;
    let policies = list_specs(
        client,
        &security("AuthorizationPolicy", "authorizationpolicies"),
        &namespaces,
        &mut errors,
    )
    .await;
    let identity = claims
        .as_ref()
        .map(checks::identity_names)
        .unwrap_or_default();
    let mut views = checks::policies_at("gateway", &gateway_place, &policies, &identity);
    views.extend(checks::policies_at(
        pod_hop, &pod_place, &policies, &identity,
    ));

    let rules = checks::jwt_rules_at(&gateway_place, &authentications);
    hops.push(gateway_hop(
        stored.as_ref(),
        gateway_ref
            .as_ref()
            .map(|g| format!("{}/{}", g.namespace, g.name)),
        &rules,
        claims.as_ref(),
        &views,
    ));
    hops.push(route_hop(&observed, gateway_ref.is_some(), stored.as_ref()));
    hops.push(pod_hop_report(pod_hop, &observed, &views));
    if !errors.is_empty() {
        hops.push(
            Hop::new(
                "policies",
                Verdict::Warn,
                format!("some policies could not be read: {}", errors.join("; ")),
            )
            .fix("the verdicts above may miss them"),
        );
    }

    // The live request, judged as EndpointVerified judges it.
    let diagnosis = match &stored {
        Some(stored) => Some(live_request(stored, &model, llm, gateway_override).await),
        None => None,
    };
    let mut failing = None;
    if let (Some(stored), Some(diagnosis)) = (&stored, &diagnosis) {
        let endpoint = endpoint(stored, &model, gateway_override)
            .ok()
            .map(|e| if llm { e.openai() } else { e });
        let message = endpoint
            .as_ref()
            .map(|e| diagnosis.message(e))
            .unwrap_or_default();
        failing = checks::failing_hop(diagnosis, pod_hop);
        if let Some(hop) = failing.and_then(|f| hops.iter_mut().find(|h| h.hop == f)) {
            hop.verdict = Verdict::Fail;
            hop.fix = Some(message.clone());
        }
        hops.push(Hop::new(
            "request",
            if diagnosis.is_reachable() {
                Verdict::Ok
            } else {
                Verdict::Fail
            },
            format!("{}: {message}", diagnosis.reason()),
        ));
    }
    let failing_hop = failing.map(str::to_owned).or_else(|| {
        hops.iter()
            .find(|h| h.verdict == Verdict::Fail)
            .map(|h| h.hop.to_owned())
    });
    Report {
        name,
        namespace: ns,
        mode,
        mesh_path: detected.ok().map(|(_, d)| d.path.name().to_owned()),
        hops,
        policies: views,
        token: claims,
        failing_hop,
        reason: diagnosis
            .filter(|d| !d.is_reachable())
            .map(|d| d.reason().to_owned()),
    }
}

/// Whether the owner of a model in `model_ns` consented to accesses of `access_ns`, as the
/// operator reads it.
async fn consent_hop(client: &Client, model_ns: &str, model: &str, access_ns: &str) -> Hop {
    match consent::consents(
        client,
        model_ns,
        Referent::inference_service(model),
        access_ns,
    )
    .await
    {
        Ok(true) => Hop::new(
            "consent",
            Verdict::Ok,
            format!(
                "a ReferenceGrant in namespace {model_ns} lets InferenceAccesses from {access_ns} refer to InferenceService {model}"
            ),
        ),
        Ok(false) => Hop::new(
            "consent",
            Verdict::Fail,
            consent::missing_model_grant(model_ns, model, access_ns),
        )
        .fix("ask the model's owner for the ReferenceGrant; until then the operator mints nothing"),
        Err(error) => Hop::new(
            "consent",
            Verdict::Warn,
            format!("the consent could not be read: {error}"),
        )
        .fix("doctor reads ReferenceGrants in the model's namespace with your kubeconfig's rights"),
    }
}

async fn predictor_labels(client: &Client, namespace: &str, model: &str) -> Place {
    let selector = format!("serving.kserve.io/inferenceservice={model}");
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await;
    let labels = pods
        .ok()
        .and_then(|list| list.items.into_iter().next())
        .map(|pod| pod.labels().clone())
        .unwrap_or_else(|| {
            [
                ("serving.kserve.io/inferenceservice", model),
                ("component", "predictor"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        });
    Place::Pods {
        namespace: namespace.to_owned(),
        labels,
    }
}

/// The target as the reconcile sees it (an LLMInferenceService in the InferenceService view).
async fn read_target(
    client: &Client,
    ns: &str,
    model: &str,
    llm: bool,
) -> Result<Option<InferenceService>, kube::Error> {
    if !llm {
        return Api::<InferenceService>::namespaced(client.clone(), ns)
            .get_opt(model)
            .await;
    }
    let api =
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &target::llm_inference_service());
    Ok(api.get_opt(model).await?.map(target::llm_view))
}

async fn live_request(
    stored: &ClientSecret,
    model: &str,
    llm: bool,
    gateway: Option<&str>,
) -> Diagnosis {
    let endpoint = match endpoint(stored, model, gateway) {
        Ok(e) if llm => e.openai(),
        Ok(e) => e,
        Err(error) => return Diagnosis::GatewayUnreachable { error },
    };
    let client = match GatewayClient::new() {
        Ok(c) => c.with_timeout(probe::PROBE_TIMEOUT),
        Err(error) => {
            return Diagnosis::GatewayUnreachable {
                error: error.to_string(),
            };
        }
    };
    let (name, value) = stored.credential.header();
    let headers = [("host", stored.host.as_str()), (name, value.as_str())];
    match client.get(&endpoint.model_url(), &headers).await {
        Ok(response) => diagnose(&probe::answer(&response, &response.text()), &endpoint.host),
        Err(error) => Diagnosis::GatewayUnreachable {
            error: error.to_string(),
        },
    }
}
