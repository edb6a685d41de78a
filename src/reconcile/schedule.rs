//! When to look at an access again. Pure.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::conditions::{Checks, State, reason};
use super::issue::IssueResult;
use super::plan::Plan;
use super::status::Outcomes;
use super::target::TargetOutcome;
use super::verify::VerifyOutcome;
use crate::api::InferenceAccess;

/// How long to wait before looking again at something outside the operator's watches (a named
/// ServiceAccount, a foreign Secret in the way).
pub const RECHECK_BLOCKED: Duration = Duration::from_secs(60);
/// The first retry after a failed reconcile; doubled per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);

/// How long a new access waits for KServe to give a new InferenceService its URL before it
/// reports `WaitingForURL`. KServe usually answers within moments of the InferenceService's
/// creation; a report in between would cost every new access a status write and an Event for a
/// state that lasts milliseconds, both written again by the pass that issues.
pub const FIRST_REPORT_GRACE: Duration = Duration::from_secs(2);

/// `Some(wait)`: hold back this pass's report (status and Events) and look again after `wait`,
/// because the access has never reported and only waits for the URL of an InferenceService
/// created less than [`FIRST_REPORT_GRACE`] ago (the grace runs from the InferenceService's
/// creation, not the access's: behind a backlog, an access is older than the grace before its
/// first pass applies its template). Anything a person should act on is reported at once: the
/// credential's check must say only `WaitingForURL`, and the policy's must hold.
pub fn hold_first_report(
    access: &InferenceAccess,
    outcomes: &Outcomes,
    checks: &Checks,
    now: Timestamp,
) -> Option<Duration> {
    let only_waiting_for_url = checks.credential.reason == reason::WAITING_FOR_URL
        && checks.access_policy.state == State::True;
    if access.status.is_some() || !only_waiting_for_url {
        return None;
    }
    let created = outcomes
        .target
        .found()?
        .metadata
        .creation_timestamp
        .as_ref()?
        .0;
    let age = Duration::try_from(now.duration_since(created)).unwrap_or(Duration::ZERO);
    FIRST_REPORT_GRACE
        .checked_sub(age)
        .filter(|wait| !wait.is_zero())
}

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
