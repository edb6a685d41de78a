//! Step 4: tell the mesh to let this identity through, as `spec.mesh.mode` says. It runs even
//! before `status.url` exists: Knative may need the policy's probe paths before it publishes
//! the URL at all.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use super::apply::{Applied, Applier, contains};
use super::build::{self, ModelAtGateway};
use super::consent::{self, Referent};
use super::detect::{self, Detected, MeshPath};
use super::error::{Error, Kind};
use super::plan::{IdentityPlan, MeshPlan, Plan, PolicyPlan, policy_name};
use crate::api::keys;
use crate::api::{AuthorizationPolicy, InferenceAccess, InferenceService};
use crate::core::endpoint::Endpoint;

#[derive(Debug)]
pub enum MeshOutcome {
    PolicyReady {
        user_id: String,
        /// This reconcile applied the policy.
        applied: bool,
        /// The predictor runs without a sidecar: the policy is never enforced.
        no_sidecar: bool,
    },
    /// A policy of that name exists and this access did not create it.
    PolicyConflict,
    /// AuthorizationPolicy is not served: Istio is not installed.
    IstioNotInstalled,
    /// The templated InferenceService carries `sidecar.istio.io/inject: "false"`.
    SidecarDisabled {
        /// This reconcile deleted the access's policy from an earlier mode.
        deleted_policy: bool,
    },
    Unmanaged {
        deleted_policy: bool,
    },
    /// mesh.mode Auto: the path found, and what became of the object it needs.
    Auto {
        detected: Detected,
        result: AutoResult,
    },
    Failed(Error),
}

#[derive(Debug, PartialEq, Eq)]
pub enum AutoResult {
    /// The path's policy is in place; `applied`: this reconcile wrote it.
    Applied {
        user_id: String,
        applied: bool,
    },
    /// A policy of that name exists and this access did not create it.
    Conflict {
        owner: Option<String>,
    },
    /// Ambient without a waypoint: nothing was written (a selector policy would deny everyone).
    NoWaypoint,
    /// No ReferenceGrant in the Gateway's namespace admits accesses from this namespace.
    GatewayNotAllowed,
    /// No RequestAuthentication is attached to the Gateway: no request principal to match.
    GatewayNotAuthenticating,
    /// A Dex session has no request principal the Gateway can match.
    SessionAtGateway,
    /// Nothing on the path enforces a policy.
    Unprotected,
    IstioNotInstalled,
    /// The API server refused the operator a read the path needs (`verb resource where`); an
    /// install for listed namespaces has no cluster-wide reads. Nothing was written or removed.
    Forbidden {
        right: String,
    },
}

pub async fn ensure(
    applier: &Applier<'_>,
    plan: &Plan,
    isvc: &InferenceService,
    user_id: &str,
) -> MeshOutcome {
    match run(applier, plan, isvc, user_id).await {
        Ok(outcome) => outcome,
        Err(err) => MeshOutcome::Failed(err),
    }
}

async fn run(
    applier: &Applier<'_>,
    plan: &Plan,
    isvc: &InferenceService,
    user_id: &str,
) -> Result<MeshOutcome, Error> {
    // Read in every mode: a policy left from an earlier mode is deleted.
    let current = applier.cached::<AuthorizationPolicy>(policy_name(plan));
    let policy = match &plan.mesh {
        MeshPlan::AuthorizationPolicy(policy) => policy,
        MeshPlan::Auto(policy) => {
            if !applier.policies_served() {
                return Ok(MeshOutcome::Auto {
                    detected: Detected {
                        path: MeshPath::Unprotected,
                        why: "Istio is not installed".into(),
                    },
                    result: AutoResult::IstioNotInstalled,
                });
            }
            let observed = match detect::observe(
                applier.client(),
                &plan.access.namespace,
                &plan.target.name,
                &isvc.uid().unwrap_or_default(),
            )
            .await
            {
                Err(Error::Forbidden { right }) => {
                    return Ok(MeshOutcome::Auto {
                        detected: Detected {
                            path: MeshPath::Unknown,
                            why: format!("the operator may not {right}"),
                        },
                        result: AutoResult::Forbidden { right },
                    });
                }
                observed => observed?,
            };
            let detected = detect::choose(&observed);
            let result = match auto(
                applier,
                plan,
                policy,
                isvc,
                user_id,
                current,
                &detected.path,
            )
            .await
            {
                Err(Error::Forbidden { right }) => AutoResult::Forbidden { right },
                result => result?,
            };
            return Ok(MeshOutcome::Auto { detected, result });
        }
        MeshPlan::Unmanaged => {
            remove_gateway_policies(applier, plan).await?;
            let deleted_policy = applier.remove(Kind::AuthorizationPolicy, current).await?;
            return Ok(MeshOutcome::Unmanaged { deleted_policy });
        }
        // The annotation is part of the template (the plan refuses this mode otherwise).
        MeshPlan::DisableSidecarInjection => {
            remove_gateway_policies(applier, plan).await?;
            let deleted_policy = applier.remove(Kind::AuthorizationPolicy, current).await?;
            return Ok(MeshOutcome::SidecarDisabled { deleted_policy });
        }
    };
    if !applier.policies_served() {
        return Ok(MeshOutcome::IstioNotInstalled);
    }
    if let Some(model_namespace) = &plan.target.other_namespace {
        // The policy goes where the model is; one left here from before the move goes.
        applier.remove(Kind::AuthorizationPolicy, current).await?;
        let wanted = build::consumer_policy(plan, policy, user_id, model_namespace);
        return Ok(
            match ensure_foreign_policy(applier, plan, &wanted, user_id).await? {
                AutoResult::Applied { user_id, applied } => MeshOutcome::PolicyReady {
                    user_id,
                    applied,
                    no_sidecar: isvc.sidecar_disabled(),
                },
                _ => MeshOutcome::PolicyConflict,
            },
        );
    }
    remove_gateway_policies(applier, plan).await?;
    let wanted = build::authorization_policy(plan, policy, user_id);
    let applied = match applier.ensure(Kind::AuthorizationPolicy, &wanted).await? {
        Applied::Conflict { .. } => return Ok(MeshOutcome::PolicyConflict),
        Applied::NotServed => return Ok(MeshOutcome::IstioNotInstalled),
        applied => applied.changed(),
    };
    Ok(MeshOutcome::PolicyReady {
        user_id: user_id.to_owned(),
        applied,
        no_sidecar: isvc.sidecar_disabled(),
    })
}

/// The Auto path's object: written for the path found, and the objects of other paths removed
/// (a selector policy left in an ambient namespace would deny everyone at ztunnel).
async fn auto(
    applier: &Applier<'_>,
    plan: &Plan,
    policy: &PolicyPlan,
    isvc: &InferenceService,
    user_id: &str,
    current: Option<Arc<AuthorizationPolicy>>,
    path: &MeshPath,
) -> Result<AutoResult, Error> {
    let local = match path {
        MeshPath::Sidecar => Some(build::authorization_policy(plan, policy, user_id)),
        MeshPath::Waypoint { service, .. } => {
            Some(build::waypoint_policy(plan, policy, user_id, service))
        }
        _ => None,
    };
    if let Some(wanted) = local {
        remove_gateway_policies(applier, plan).await?;
        return Ok(
            match applier.ensure(Kind::AuthorizationPolicy, &wanted).await? {
                Applied::Conflict { owner } => AutoResult::Conflict { owner },
                Applied::NotServed => AutoResult::IstioNotInstalled,
                applied => AutoResult::Applied {
                    user_id: user_id.to_owned(),
                    applied: applied.changed(),
                },
            },
        );
    }
    applier.remove(Kind::AuthorizationPolicy, current).await?;
    let MeshPath::Gateway { gateway, .. } = path else {
        remove_gateway_policies(applier, plan).await?;
        return Ok(match path {
            MeshPath::AmbientWithoutWaypoint => AutoResult::NoWaypoint,
            _ => AutoResult::Unprotected,
        });
    };
    let client = applier.client();
    let refused = if !matches!(plan.identity, IdentityPlan::ServiceAccount { .. }) {
        Some(AutoResult::SessionAtGateway)
    } else if !consent::consents(
        client,
        &gateway.namespace,
        Referent::gateway(&gateway.name),
        &plan.access.namespace,
    )
    .await?
    {
        Some(AutoResult::GatewayNotAllowed)
    } else {
        None
    };
    let issuers = match refused {
        Some(_) => Vec::new(),
        None => detect::gateway_issuers(client, gateway).await?,
    };
    let refused = refused.or_else(|| {
        issuers
            .is_empty()
            .then_some(AutoResult::GatewayNotAuthenticating)
    });
    // Until the URL is known there is no host to scope the policy to: write nothing yet.
    let model = isvc
        .url()
        .and_then(|url| Endpoint::resolve(url, &plan.gateway_url, &plan.target.name).ok())
        .map(|e| ModelAtGateway {
            host: e.host,
            path_prefix: e.path_prefix,
        });
    let (Some(model), None) = (model, &refused) else {
        remove_gateway_policies(applier, plan).await?;
        return Ok(refused.unwrap_or(AutoResult::Unprotected));
    };
    let wanted = build::gateway_policy(plan, gateway, &issuers, user_id, &model);
    ensure_foreign_policy(applier, plan, &wanted, user_id).await
}

/// A policy outside the access's namespace (at a Gateway, or where a model in another namespace
/// is): no owner reference can point at the access there, so the access carries a finalizer
/// that deletes it, and the policy names the access's uid (an object of that name without it
/// is someone else's and left alone). Only `Applied` and `Conflict` come back.
async fn ensure_foreign_policy(
    applier: &Applier<'_>,
    plan: &Plan,
    wanted: &AuthorizationPolicy,
    user_id: &str,
) -> Result<AutoResult, Error> {
    let client = applier.client();
    let namespace = wanted.namespace().unwrap_or_default();
    let api = Api::<AuthorizationPolicy>::namespaced(client.clone(), &namespace);
    let name = wanted.name_any();
    let fail = |err| Error::api(Kind::AuthorizationPolicy)(err);
    let current = api.get_opt(&name).await.map_err(fail)?;
    if let Some(current) = &current {
        if !is_ours(current, &plan.access.uid) {
            return Ok(AutoResult::Conflict {
                owner: current
                    .labels()
                    .get(keys::ACCESS_NAMESPACE_LABEL)
                    .zip(current.labels().get(keys::ACCESS_LABEL))
                    .map(|(ns, name)| format!("InferenceAccess {ns}/{name}")),
            });
        }
        if contains(current, wanted) {
            return Ok(AutoResult::Applied {
                user_id: user_id.to_owned(),
                applied: false,
            });
        }
    }
    add_finalizer(applier, plan).await?;
    // Another Gateway (the route moved) or model namespace: the policy there goes.
    remove_gateway_policies_except(applier, &Owner::of(plan), Some(&namespace)).await?;
    api.patch(
        &name,
        &PatchParams::apply(keys::FIELD_MANAGER).force(),
        &Patch::Apply(wanted),
    )
    .await
    .map_err(fail)?;
    Ok(AutoResult::Applied {
        user_id: user_id.to_owned(),
        applied: true,
    })
}

fn is_ours(policy: &AuthorizationPolicy, uid: &str) -> bool {
    policy
        .annotations()
        .get(keys::ANNOTATION_ACCESS_UID)
        .is_some_and(|u| u == uid)
}

/// The finalizer that makes deleting the access delete its policy at the Gateway.
async fn add_finalizer(applier: &Applier<'_>, plan: &Plan) -> Result<(), Error> {
    let cached = applier.cached::<InferenceAccess>(&plan.access.name);
    if cached.is_some_and(|a| holds_finalizer(&a)) {
        return Ok(());
    }
    set_finalizer(applier, &Owner::of(plan), true).await
}

/// Server-side apply of the finalizer alone, under the operator's field manager: applying
/// without it removes it.
async fn set_finalizer(applier: &Applier<'_>, who: &Owner<'_>, present: bool) -> Result<(), Error> {
    let finalizers: Vec<&str> = if present {
        vec![keys::GATEWAY_POLICY_FINALIZER]
    } else {
        Vec::new()
    };
    let patch = serde_json::json!({
        "apiVersion": "inference-access.io/v1alpha1",
        "kind": "InferenceAccess",
        "metadata": {"name": who.name, "finalizers": finalizers},
    });
    let written = applier
        .api::<InferenceAccess>()
        .patch(
            who.name,
            &PatchParams::apply(keys::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|err| Error::api(Kind::AuthorizationPolicy)(err))?;
    applier.wrote_access(written);
    Ok(())
}

/// Deletes every policy the access wrote at a Gateway (found by its labels, in any namespace),
/// then drops the finalizer.
pub async fn remove_gateway_policies(applier: &Applier<'_>, plan: &Plan) -> Result<(), Error> {
    remove_gateway_policies_except(applier, &Owner::of(plan), None).await
}

/// The access being deleted: its policies at Gateways go, then its finalizer.
pub async fn finalize(applier: &Applier<'_>, access: &InferenceAccess) -> Result<(), Error> {
    let namespace = access.namespace().unwrap_or_default();
    let name = access.name_any();
    let uid = access.uid().unwrap_or_default();
    let who = Owner {
        namespace: &namespace,
        name: &name,
        uid: &uid,
    };
    remove_gateway_policies_except(applier, &who, None).await
}

/// Who wrote a policy outside its namespace.
struct Owner<'a> {
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
}

impl<'a> Owner<'a> {
    fn of(plan: &'a Plan) -> Self {
        Self {
            namespace: &plan.access.namespace,
            name: &plan.access.name,
            uid: &plan.access.uid,
        }
    }
}

/// Whether the access holds the finalizer (so it may have written at a Gateway).
fn holds_finalizer(access: &InferenceAccess) -> bool {
    access
        .finalizers()
        .iter()
        .any(|f| f == keys::GATEWAY_POLICY_FINALIZER)
}

async fn remove_gateway_policies_except(
    applier: &Applier<'_>,
    who: &Owner<'_>,
    keep_in: Option<&str>,
) -> Result<(), Error> {
    // Without the finalizer nothing was written outside the namespace: no request at all.
    let access = applier.cached::<InferenceAccess>(who.name);
    if !access.is_some_and(|a| holds_finalizer(&a)) {
        return Ok(());
    }
    let client = applier.client();
    let selector = format!(
        "{}={},{}={}",
        keys::ACCESS_NAMESPACE_LABEL,
        who.namespace,
        keys::ACCESS_LABEL,
        who.name
    );
    let fail = |err| Error::api(Kind::AuthorizationPolicy)(err);
    let all = Api::<AuthorizationPolicy>::all(client.clone());
    let policies = all
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(fail)?;
    for policy in policies.items.iter().filter(|p| is_ours(p, who.uid)) {
        let namespace = policy.namespace().unwrap_or_default();
        if keep_in == Some(namespace.as_str()) {
            continue;
        }
        Api::<AuthorizationPolicy>::namespaced(client.clone(), &namespace)
            .delete(&policy.name_any(), &DeleteParams::default())
            .await
            .map(|_| ())
            .or_else(|err| match super::error::api_status(&err) {
                Some(404) => Ok(()),
                _ => Err(fail(err)),
            })?;
    }
    if keep_in.is_none() {
        set_finalizer(applier, who, false).await?;
    }
    Ok(())
}
