//! When to look at an access again. Pure.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

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

/// When to look again ([`super::wakeups`]): at the renewal time (jitter included), sooner
/// while the probe fails, later while something outside the watches blocks the access, never
/// (`None`) for a spec error.
pub fn next_wakeup(plan: &Plan, outcomes: &Outcomes, now: Timestamp) -> Option<Duration> {
    let login_stopped = outcomes
        .issue
        .as_ref()
        .is_some_and(|i| matches!(i.result, IssueResult::LoginStopped));
    if login_stopped || matches!(outcomes.target, TargetOutcome::InvalidTemplate { .. }) {
        return None;
    }
    let Some(held) = outcomes.issue.as_ref().and_then(|i| {
        matches!(i.result, IssueResult::Ready { .. })
            .then_some(i.held.as_ref())
            .flatten()
    }) else {
        return Some(RECHECK_BLOCKED);
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
        }) => Some(until_renewal.min(*retry)),
        _ => Some(until_renewal),
    }
}
