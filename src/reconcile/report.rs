//! Publishing what a reconcile found: the status (only when it changed), the Events, and the
//! credential metrics (minted, held) and log line.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use jiff::Timestamp;
use kube::runtime::events::Event;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::apply::Applier;
use super::context::Context;
use super::error::{Error, describe};
use super::issue::IssueResult;
use super::plan::Plan;
use super::status::Outcomes;
use super::{backoff, conditions, events as events_of};
use crate::api::InferenceAccess;

/// The Events of held-back reports, by access key (`namespace/name`), until the access's next
/// report tells them. Only a new access's first pass is held back, for at most
/// [`super::schedule::FIRST_REPORT_GRACE`], so this holds the accesses created in the last
/// moments; a restart in between loses them (the credential's Event still comes).
#[derive(Default)]
pub struct HeldEvents(Mutex<HashMap<Box<str>, Vec<Event>>>);

impl HeldEvents {
    fn held(&self) -> MutexGuard<'_, HashMap<Box<str>, Vec<Event>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn hold(&self, key: &str, events: Vec<Event>) {
        if !events.is_empty() {
            self.held().entry(key.into()).or_default().extend(events);
        }
    }

    /// `events`, with what was held for the access told in them.
    pub fn release(&self, key: &str, events: Vec<Event>) -> Vec<Event> {
        match self.held().remove(key) {
            Some(held) => events_of::merge(held, events),
            None => events,
        }
    }

    pub fn forget(&self, key: &str) {
        self.held().remove(key);
    }
}

/// The key the access's held Events and wakeups are kept under.
fn key_of(access: &InferenceAccess) -> String {
    backoff::key(access.namespace().as_deref(), &access.name_any())
}

/// Holds back this pass's report: its Events are told with the next one.
pub fn hold(ctx: &Context, access: &InferenceAccess, events: Vec<Event>) {
    ctx.held_events.hold(&key_of(access), events);
}

/// The status (only when it changed), then the events, with any held back before.
pub async fn publish(
    ctx: &Context,
    applier: &Applier<'_>,
    access: &InferenceAccess,
    checks: &conditions::Checks,
    events: Vec<Event>,
    now: Timestamp,
) -> Result<(), Error> {
    let events = ctx.held_events.release(&key_of(access), events);
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

#[cfg(test)]
mod tests {
    use kube::runtime::events::EventType;

    use super::*;

    fn applied(note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: "PolicyApplied".into(),
            note: Some(note.into()),
            action: "Apply".into(),
            secondary: None,
        }
    }

    fn notes(events: &[Event]) -> Vec<Option<&str>> {
        events.iter().map(|e| e.note.as_deref()).collect()
    }

    #[test]
    fn held_events_are_released_once_to_their_own_access_and_forgotten_with_it() {
        let held = HeldEvents::default();
        held.hold("ns/a", vec![applied("for a")]);
        held.hold("ns/b", vec![applied("for b")]);
        held.hold("ns/c", Vec::new());
        assert_eq!(notes(&held.release("ns/a", Vec::new())), [Some("for a")]);
        assert!(held.release("ns/a", Vec::new()).is_empty(), "told once");
        assert!(held.release("ns/c", Vec::new()).is_empty());
        held.forget("ns/b");
        assert!(held.release("ns/b", Vec::new()).is_empty());
    }
}
