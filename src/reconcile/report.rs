//! Publishing what a reconcile found: the status (only when it changed), the Events, and the
//! credential metrics (minted, held) and log line.

use jiff::Timestamp;
use kube::runtime::events::Event;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::apply::Applier;
use super::conditions;
use super::context::Context;
use super::error::{Error, describe};
use super::issue::IssueResult;
use super::plan::Plan;
use super::status::Outcomes;
use crate::api::InferenceAccess;

/// The status (only when it changed), then the events.
pub async fn publish(
    ctx: &Context,
    applier: &Applier<'_>,
    access: &InferenceAccess,
    checks: &conditions::Checks,
    events: Vec<Event>,
    now: Timestamp,
) -> Result<(), Error> {
    let previous = access.status.as_ref();
    // The previous status is the newest the operator knows (the caller passes it).
    let status = conditions::build_status(checks, previous, access.meta().generation, now);
    let written = applier.publish_status(access, &status).await.map(|_| ());
    let reference = access.object_ref(&());
    for event in &events {
        if let Err(err) = ctx.recorder.publish(event, &reference).await {
            warn!(access = %access.name_any(), reason = %event.reason, error = %describe(&err), "cannot publish event");
        }
    }
    written
}

pub fn count_minted(ctx: &Context, plan: &Plan, outcomes: &Outcomes) {
    let Some(issue) = &outcomes.issue else { return };
    // The issue time of the credential the status reports, which gives the expiry alert its
    // lifetime (the status carries only the expiry).
    if let Some(held) = &issue.held {
        ctx.metrics.credential_held(
            &plan.access.namespace,
            &plan.access.name,
            held.issued_at,
            held.expires_at,
        );
    }
    if let (
        IssueResult::Ready {
            minted: Some(why), ..
        },
        Some(held),
    ) = (&issue.result, &issue.held)
    {
        ctx.metrics.credential_minted(why.is_renewal());
        info!(access = %plan.access.name, namespace = %plan.access.namespace, why = ?why, expires_at = %held.expires_at, "credential {}", if why.is_renewal() { "renewed" } else { "issued" });
    }
}
