//! Step 4: tell the mesh to let this identity through, as `spec.mesh.mode` says. It runs even
//! before `status.url` exists: Knative may need the policy's probe paths before it publishes
//! the URL at all.

use super::apply::{Applied, Applier};
use super::build;
use super::error::{Error, Kind};
use super::plan::{MeshPlan, Plan, policy_name};
use crate::api::{AuthorizationPolicy, InferenceService};

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
    Failed(Error),
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
        MeshPlan::Unmanaged => {
            let deleted_policy = applier.remove(Kind::AuthorizationPolicy, current).await?;
            return Ok(MeshOutcome::Unmanaged { deleted_policy });
        }
        // The annotation is part of the template (the plan refuses this mode otherwise).
        MeshPlan::DisableSidecarInjection => {
            let deleted_policy = applier.remove(Kind::AuthorizationPolicy, current).await?;
            return Ok(MeshOutcome::SidecarDisabled { deleted_policy });
        }
    };
    if !applier.policies_served() {
        return Ok(MeshOutcome::IstioNotInstalled);
    }
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
