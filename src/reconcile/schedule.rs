//! When to look at an access again. Pure.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;

use super::issue::IssueResult;
use super::plan::Plan;
use super::status::Outcomes;
use super::target::TargetOutcome;
use super::verify::VerifyOutcome;

/// How long to wait before looking again at something outside the operator's watches (a named
/// ServiceAccount, a foreign Secret in the way).
pub const RECHECK_BLOCKED: Duration = Duration::from_secs(60);
/// The first retry after a failed reconcile; doubled per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);

/// When to look again: at the renewal time (jitter included), sooner while the probe fails,
/// later while something outside the watches blocks the access, never for a spec error.
pub fn next_action(plan: &Plan, outcomes: &Outcomes, now: Timestamp) -> Action {
    let login_stopped = outcomes
        .issue
        .as_ref()
        .is_some_and(|i| matches!(i.result, IssueResult::LoginStopped));
    if login_stopped || matches!(outcomes.target, TargetOutcome::InvalidTemplate { .. }) {
        return Action::await_change();
    }
    let Some(held) = outcomes.issue.as_ref().and_then(|i| {
        matches!(i.result, IssueResult::Ready { .. })
            .then_some(i.held.as_ref())
            .flatten()
    }) else {
        return Action::requeue(RECHECK_BLOCKED);
    };
    let renewal = held.scheduled_renewal(plan.renew_before, &plan.access.uid);
    let wait = renewal
        .duration_since(now)
        .max(SignedDuration::from_secs(1));
    let until_renewal = Duration::try_from(wait).unwrap_or(RECHECK_BLOCKED);
    match &outcomes.verify {
        Some(VerifyOutcome::Probed {
            retry_in: Some(retry),
            ..
        }) => Action::requeue(until_renewal.min(*retry)),
        _ => Action::requeue(until_renewal),
    }
}
