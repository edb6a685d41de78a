//! The Events one reconcile publishes, derived from its outcomes: what changed, and what failed
//! in a way a person must see. Pure; never a credential in a note.

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
    let mut events = Vec::new();
    if let TargetOutcome::Found { applied: true, .. } = outcomes.target {
        events.push(event(
            EventType::Normal,
            "InferenceServiceApplied",
            "Apply",
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
        events.push(event(
            EventType::Normal,
            "ServiceAccountApplied",
            "Apply",
            format!("applied dedicated ServiceAccount {name}"),
        ));
    }
    if let Some(issue) = &outcomes.issue {
        let who = outcomes
            .identity
            .as_ref()
            .and_then(IdentityOutcome::ready)
            .map(|i| i.describe())
            .unwrap_or_default();
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
                events.push(event(
                    EventType::Normal,
                    reason,
                    "IssueCredential",
                    format!(
                        "{verb} a {} for {who}, expires at {}",
                        held.value.noun(),
                        held.expires_at
                    ),
                ));
            }
            (IssueResult::ObtainFailed(_), _) => {
                let reason = match plan.identity {
                    IdentityPlan::ServiceAccount { .. } => "TokenRequestFailed",
                    IdentityPlan::DexUser { .. } => "DexLoginFailed",
                };
                events.push(event(
                    EventType::Warning,
                    reason,
                    "IssueCredential",
                    credential_message.to_owned(),
                ));
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
        }) => events.push(event(
            EventType::Normal,
            "PolicyApplied",
            "Apply",
            format!("applied AuthorizationPolicy {policy} for {user_id}"),
        )),
        Some(MeshOutcome::SidecarDisabled {
            deleted_policy: true,
        }) => events.push(policy_deleted(plan)),
        Some(MeshOutcome::Unmanaged {
            deleted_policy: true,
        }) => events.push(policy_deleted(plan)),
        _ => {}
    }
    events
}

fn policy_deleted(plan: &Plan) -> Event {
    event(
        EventType::Normal,
        "PolicyDeleted",
        "Delete",
        format!(
            "deleted AuthorizationPolicy {}: mesh.mode is now {:?}",
            policy_name(plan),
            plan.mesh.mode()
        ),
    )
}
