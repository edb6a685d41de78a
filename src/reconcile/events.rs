//! The Events one reconcile publishes, derived from its outcomes. Pure; never a credential in a
//! note.
//!
//! One Normal Event per reconcile that changed something, named after the most telling change
//! and listing all of them (an Event is an API write: one per reconcile keeps a fleet of
//! accesses cheap for the API server), and a Warning when a credential could not be obtained.

use kube::runtime::events::{Event, EventType};

use super::identity::IdentityOutcome;
use super::issue::IssueResult;
use super::mesh::MeshOutcome;
use super::plan::{IdentityPlan, Plan, SpecError, policy_name};
use super::status::Outcomes;
use super::target::TargetOutcome;

fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    }
}

/// The Warning for a spec that cannot be planned.
pub fn refused(refusal: &SpecError) -> Event {
    event(
        EventType::Warning,
        refusal.reason,
        "Validate",
        refusal.message.clone(),
    )
}

pub fn of(plan: &Plan, outcomes: &Outcomes, credential_message: &str) -> Vec<Event> {
    let mut events = changes(plan, outcomes, credential_message);
    events.extend(restarts(plan, outcomes));
    events
}

/// The Events of a pass whose report was held back ([`super::schedule::hold_first_report`]),
/// told with the next report's: their changes join its Normal Event, keeping one Normal Event
/// per report, most telling change first.
pub fn merge(held: Vec<Event>, mut events: Vec<Event>) -> Vec<Event> {
    for earlier in held {
        let normal = events
            .iter_mut()
            .find(|e| e.type_ == EventType::Normal && earlier.type_ == EventType::Normal);
        match (normal, earlier.note) {
            (Some(event), Some(note)) => {
                let joined = match event.note.take() {
                    Some(now) => format!("{now}; {note}"),
                    None => note,
                };
                event.note = Some(joined);
            }
            (Some(_), None) => {}
            (None, note) => events.push(Event { note, ..earlier }),
        }
    }
    events
}

/// One Normal Event naming every workload a renewal restarted, and why.
fn restarts(plan: &Plan, outcomes: &Outcomes) -> Option<Event> {
    let consumers = outcomes.consumers.as_ref()?;
    let issued_at = consumers.issued_at?;
    if consumers.restarted.is_empty() {
        return None;
    }
    let which: Vec<String> = consumers
        .restarted
        .iter()
        .map(|c| format!("{} {}", c.kind.as_str(), c.name))
        .collect();
    Some(event(
        EventType::Normal,
        "WorkloadRestarted",
        "Restart",
        format!(
            "restarted {}: {} Secret {} through env, and the credential was renewed at {issued_at}; the workload's {} annotation asked for it",
            which.join(", "),
            if which.len() == 1 {
                "it reads"
            } else {
                "they read"
            },
            plan.secret.name,
            crate::api::keys::ANNOTATION_RESTART_ON_RENEWAL,
        ),
    ))
}

fn changes(plan: &Plan, outcomes: &Outcomes, credential_message: &str) -> Vec<Event> {
    // (reason, what happened), most telling first.
    let mut changes: Vec<(&str, String)> = Vec::new();
    if let Some(issue) = &outcomes.issue {
        let who = outcomes
            .identity
            .as_ref()
            .and_then(IdentityOutcome::ready)
            .map(|i| i.describe())
            .unwrap_or_default();
        let noun = plan.secret.kind.noun();
        match (&issue.result, &issue.held) {
            (
                IssueResult::Ready {
                    minted: Some(why), ..
                },
                Some(held),
            ) => {
                let (reason, verb) = if why.is_renewal() {
                    ("CredentialRenewed", "renewed")
                } else {
                    ("CredentialIssued", "issued")
                };
                changes.push((
                    reason,
                    format!("{verb} a {noun} for {who}, expires at {}", held.expires_at),
                ));
            }
            (IssueResult::ObtainFailed(_), _) => {
                let reason = match plan.identity {
                    IdentityPlan::ServiceAccount { .. } => "TokenRequestFailed",
                    IdentityPlan::DexUser { .. } => "DexLoginFailed",
                };
                return vec![event(
                    EventType::Warning,
                    reason,
                    "IssueCredential",
                    credential_message.to_owned(),
                )];
            }
            _ => {}
        }
    }
    let policy = policy_name(plan);
    match &outcomes.mesh {
        Some(MeshOutcome::PolicyReady {
            applied: true,
            user_id,
            ..
        }) => changes.push((
            "PolicyApplied",
            format!("applied AuthorizationPolicy {policy} for {user_id}"),
        )),
        Some(
            MeshOutcome::SidecarDisabled {
                deleted_policy: true,
            }
            | MeshOutcome::Unmanaged {
                deleted_policy: true,
            },
        ) => changes.push((
            "PolicyDeleted",
            format!(
                "deleted AuthorizationPolicy {policy}: mesh.mode is now {:?}",
                plan.mesh.mode()
            ),
        )),
        _ => {}
    }
    if let TargetOutcome::Found { applied: true, .. } = outcomes.target {
        changes.push((
            "InferenceServiceApplied",
            format!(
                "applied InferenceService {} from the template",
                plan.target.name
            ),
        ));
    }
    if let (
        Some(IdentityOutcome::Ready { applied: true, .. }),
        IdentityPlan::ServiceAccount { name, .. },
    ) = (&outcomes.identity, &plan.identity)
    {
        changes.push((
            "ServiceAccountApplied",
            format!("applied dedicated ServiceAccount {name}"),
        ));
    }
    let Some((reason, _)) = changes.first() else {
        return Vec::new();
    };
    let note = changes
        .iter()
        .map(|(_, what)| what.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let action = if reason.starts_with("Credential") {
        "IssueCredential"
    } else if *reason == "PolicyDeleted" {
        "Delete"
    } else {
        "Apply"
    };
    vec![event(EventType::Normal, reason, action, note)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(reason: &str, note: &str) -> Event {
        event(EventType::Normal, reason, "Apply", note.into())
    }

    fn told(events: &[Event]) -> Vec<(String, Option<String>)> {
        events
            .iter()
            .map(|e| (e.reason.clone(), e.note.clone()))
            .collect()
    }

    #[test]
    fn held_changes_join_the_next_normal_event_after_its_own() {
        let held = vec![normal("PolicyApplied", "applied AuthorizationPolicy p")];
        let now = vec![normal("CredentialIssued", "issued a token")];
        assert_eq!(
            told(&merge(held, now)),
            [(
                "CredentialIssued".to_owned(),
                Some("issued a token; applied AuthorizationPolicy p".to_owned())
            )]
        );
    }

    #[test]
    fn held_changes_are_told_alone_when_the_next_report_has_no_normal_event() {
        let held = vec![normal("PolicyApplied", "applied AuthorizationPolicy p")];
        let warning = event(
            EventType::Warning,
            "TokenRequestFailed",
            "IssueCredential",
            "refused".into(),
        );
        let merged = told(&merge(held, vec![warning]));
        assert_eq!(
            merged,
            [
                ("TokenRequestFailed".to_owned(), Some("refused".to_owned())),
                (
                    "PolicyApplied".to_owned(),
                    Some("applied AuthorizationPolicy p".to_owned())
                ),
            ]
        );
        assert_eq!(told(&merge(Vec::new(), Vec::new())), []);
    }
}
