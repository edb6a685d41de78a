//! The reconcile driver. One pass, top to bottom:
//!
//! validate → target → identity → issue → consumers → mesh → verify → status → events → schedule
//!
//! `plan` turns the spec into a validated [`plan::Plan`]; each step (one module each) returns a
//! typed outcome and shares nothing mutable with the others; `status` turns the outcomes into
//! conditions and `events` into Events, both pure. Every write goes through the one
//! ownership-guarded [`apply::Applier`].

pub mod apply;
pub mod backoff;
pub mod build;
pub mod cache;
pub mod conditions;
pub mod consent;
pub mod consumers;
pub mod context;
pub mod detect;
pub mod error;
pub mod events;
pub mod gateway_policy;
pub mod identity;
pub mod issue;
pub mod limits;
pub mod mesh;
pub mod obtain;
pub mod plan;
pub mod readers;
pub mod report;
pub mod schedule;
pub mod status;
pub mod target;
pub mod verify;
pub mod wakeups;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::warn;

use crate::api::{AccessMeta, InferenceAccess};
use crate::core;
use apply::Applier;
pub use context::Context;
use error::Error;
use plan::Plan;
use status::Outcomes;

/// Entry point for the controller, which knows an access by its metadata only.
pub async fn reconcile(scheduled: Arc<AccessMeta>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.caches.ready().await;
    let namespace = scheduled.namespace().unwrap_or_default();
    // The newest the operator knows of, its own last status write included; one of the same
    // name made after the controller saw this one waits for its own trigger.
    let Some(access) = ctx
        .caches
        .accesses
        .get(&namespace, &scheduled.name_any())
        .filter(|access| access.metadata.uid == scheduled.metadata.uid)
    else {
        return Ok(Action::await_change());
    };
    let started = Instant::now();
    let result = reconcile_access(&access, &ctx).await;
    let category = result.as_ref().err().map(Error::category);
    ctx.metrics.reconciled(started.elapsed(), category);
    let key = backoff::key(Some(&namespace), &access.name_any());
    ctx.failures.record(&key, result.is_err());
    // The next pass is the wakeups' to start, not a requeue in the controller's scheduler; a
    // failure keeps the wakeup it had and retries through the error policy.
    let next = result?;
    ctx.wakeups.set(&key, next);
    Ok(Action::await_change())
}

/// The probe, with the credential this reconcile obtained, or else the one in the Secret.
async fn probe(
    applier: &Applier<'_>,
    plan: &Plan,
    ctx: &Context,
    endpoint: &core::endpoint::Endpoint,
    known: Option<&core::credential::Credential>,
) -> verify::VerifyOutcome {
    let stored = match known {
        Some(_) => None,
        None => issue::stored_credential(applier, plan).await.ok().flatten(),
    };
    match known.or(stored.as_ref()) {
        Some(credential) => {
            let gateway = ctx.gateway.as_ref();
            verify::run(gateway, &ctx.verify_failures, plan, endpoint, credential).await
        }
        // Nothing to probe with yet: the next issue probes.
        None => verify::VerifyOutcome::NotDue,
    }
}

/// Failures back off exponentially per access; spec errors never reach here.
pub fn error_policy(access: Arc<AccessMeta>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = backoff::key(access.namespace().as_deref(), &access.name_any());
    let delay = backoff::backoff(schedule::BACKOFF_BASE, ctx.failures.failures(&key));
    warn!(access = %access.name_any(), namespace = access.namespace().unwrap_or_default(), category = error.category(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The pass, and when to wake the access next (`None`: only on a change).
async fn reconcile_access(
    access: &InferenceAccess,
    ctx: &Context,
) -> Result<Option<Duration>, Error> {
    let now = (ctx.clock)();
    let namespace = access.namespace().unwrap_or_default();
    let uid = access.uid().unwrap_or_default();
    let applier = Applier::new(ctx.client.clone(), &ctx.caches, &namespace, &uid);
    // Owned objects go with owner references; only a policy at a Gateway needs this.
    if access.metadata.deletion_timestamp.is_some() {
        mesh::finalize(&applier, access).await?;
        return Ok(None);
    }
    let plan = match plan::validate(access, &ctx.limits) {
        Ok(plan) => plan,
        Err(refusal) => {
            // Nothing else runs, nothing is sent: the spec waits for the user to change it.
            let checks = status::invalid(&refusal);
            let events = vec![events::refused(&refusal)];
            report::publish(ctx, &applier, access, &checks, events, now).await?;
            return Ok(None);
        }
    };
    let outcomes = run_steps(&applier, &plan, ctx, access, now).await;
    let checks = status::checks(&plan, &outcomes, now);
    let events = events::of(&plan, &outcomes, &checks.credential.message);
    if let Some(wait) = schedule::hold_first_report(access, &outcomes, &checks, now) {
        report::hold(ctx, access, events);
        return Ok(Some(wait));
    }
    let published = report::publish(ctx, &applier, access, &checks, events, now).await;
    report::count_minted(ctx, &plan, &outcomes);
    let next = schedule::next_wakeup(&plan, &outcomes, now);
    match (outcomes.into_error(), published) {
        // The API server refused what the spec produced: retrying cannot help.
        (Some(err), _) if err.is_invalid() => Ok(None),
        (Some(err), _) | (None, Err(err)) => Err(err),
        (None, Ok(())) => Ok(next),
    }
}

/// The steps in the order they run; a step that blocks ends the run.
async fn run_steps(
    applier: &Applier<'_>,
    plan: &Plan,
    ctx: &Context,
    access: &InferenceAccess,
    now: Timestamp,
) -> Outcomes {
    let target = target::resolve(applier, plan).await;
    let Some(isvc) = target.found() else {
        return Outcomes::new(target);
    };
    let identity = identity::resolve(applier, plan).await;
    let Some(who) = identity.ready() else {
        let mut outcomes = Outcomes::new(target);
        outcomes.identity = Some(identity);
        return outcomes;
    };
    let gateway = ctx.gateway.as_ref();
    let issue = issue::ensure(
        applier,
        plan,
        issue::Inputs {
            status_url: isvc.url(),
            identity: who,
            gateway,
            now,
        },
    )
    .await;
    // Only the access's own Secret has its readers listed (naming someone else's Secret must
    // not reveal who reads it), and only a credential the Secret holds restarts them.
    let consumers = match issue.result {
        issue::IssueResult::Ready { .. } => {
            Some(consumers::ensure(applier, plan, issue.held.as_ref(), now).await)
        }
        issue::IssueResult::ObtainFailed(_) | issue::IssueResult::LoginStopped => {
            Some(consumers::ensure(applier, plan, None, now).await)
        }
        _ => None,
    };
    let mesh = mesh::ensure(applier, plan, isvc, &who.user_id(&plan.access.namespace)).await;
    let verify = match (&issue.result, &issue.endpoint, &mesh) {
        (_, _, mesh::MeshOutcome::Failed(_)) => None,
        (issue::IssueResult::Ready { written, .. }, Some(endpoint), _) => {
            let last_succeeded = conditions::endpoint_verified(access);
            Some(match verify::skipped(plan, *written, last_succeeded) {
                Some(outcome) => outcome,
                None => probe(applier, plan, ctx, endpoint, issue.credential.as_ref()).await,
            })
        }
        _ => None,
    };
    Outcomes {
        identity: Some(identity),
        issue: Some(issue),
        consumers,
        mesh: Some(mesh),
        verify,
        ..Outcomes::new(target)
    }
}
