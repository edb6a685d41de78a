//! Step 4 (after issue): the workloads that read the credential Secret. Each is listed in the
//! status with how it reads it; after a renewal, those that read it through env (their running
//! Pods keep the old token) and whose own annotation opted in get one rolling restart, as
//! `kubectl rollout restart` does. Volume readers are left alone (the kubelet updates the
//! file), and nothing is restarted without the workload owner's consent.
//!
//! Once per renewal and never in a loop: an opted-in workload carries the issue time of the
//! credential its Pods started with (recorded when the operator first sees it with a
//! credential, and with each restart in the same write). A restart happens only when the
//! Secret holds a newer one, so the restart's own watch event, a later reconcile or a
//! restarted operator finds nothing to do.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

use super::apply::{Applier, Object};
use super::cache::Cached;
use super::error::Error;
use super::plan::Plan;
use crate::api::workload::{
    Via, Workload, WorkloadKind, restart_consented, started_with, workload_reads,
};
use crate::core::credential::Record;

/// One workload that reads the Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct Consumer {
    pub kind: WorkloadKind,
    pub name: String,
    pub via: BTreeSet<Via>,
    /// Reads through env and opted in for this access.
    pub restart_on_renewal: bool,
    /// The issue time of the credential its Pods started with, as recorded (after this
    /// reconcile).
    pub started_with: Option<Timestamp>,
}

#[derive(Debug, Default)]
pub struct ConsumersOutcome {
    pub consumers: Vec<Consumer>,
    /// Restarted by this reconcile, for `issued_at`.
    pub restarted: Vec<Consumer>,
    pub issued_at: Option<Timestamp>,
    /// The first failed write; the other workloads were still looked at.
    pub failed: Option<Error>,
}

/// What an opted-in env reader needs for the credential issued at `issued_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// First seen with a credential: its Pods started with this one or will (env is read when
    /// a container starts); record it, restart nothing.
    Record,
    /// Its Pods started with an older credential.
    Restart,
}

pub fn due<W: Workload>(
    workload: &W,
    access: &str,
    via: &BTreeSet<Via>,
    issued_at: Timestamp,
) -> Option<Due> {
    if workload.meta().deletion_timestamp.is_some()
        || !via.iter().any(|v| v.needs_restart())
        || !restart_consented(workload, access)
    {
        return None;
    }
    match started_with(workload, access) {
        None => Some(Due::Record),
        Some(at) if at < issued_at => Some(Due::Restart),
        Some(_) => None,
    }
}

/// Lists the Secret's readers and restarts those due. `held`: the credential the Secret holds
/// now (`None` while none is issued: nothing to restart for).
pub async fn ensure(
    applier: &Applier<'_>,
    plan: &Plan,
    held: Option<&Record>,
    now: Timestamp,
) -> ConsumersOutcome {
    let mut outcome = ConsumersOutcome {
        issued_at: held.map(|h| h.issued_at),
        ..ConsumersOutcome::default()
    };
    for (kind, _, name) in applier.readers_of(&plan.secret.name) {
        match kind {
            WorkloadKind::Deployment => {
                visit::<Deployment>(applier, plan, &name, now, &mut outcome).await
            }
            WorkloadKind::StatefulSet => {
                visit::<StatefulSet>(applier, plan, &name, now, &mut outcome).await
            }
        }
    }
    outcome
}

async fn visit<W: Object + Cached + Workload>(
    applier: &Applier<'_>,
    plan: &Plan,
    name: &str,
    now: Timestamp,
    outcome: &mut ConsumersOutcome,
) {
    let Some(workload) = applier.cached::<W>(name) else {
        return;
    };
    let access = &plan.access.name;
    let Some(via) = workload_reads(&*workload).remove(&plan.secret.name) else {
        return;
    };
    let mut consumer = Consumer {
        kind: W::KIND,
        name: name.to_owned(),
        restart_on_renewal: restart_consented(&*workload, access)
            && via.iter().any(|v| v.needs_restart()),
        started_with: started_with(&*workload, access),
        via,
    };
    if let Some(issued_at) = outcome.issued_at
        && let Some(due) = due(&*workload, access, &consumer.via, issued_at)
    {
        let restart = (due == Due::Restart).then_some(now);
        match applier
            .record_or_restart(&*workload, access, issued_at, restart)
            .await
        {
            Ok(true) => {
                consumer.started_with = Some(issued_at);
                if due == Due::Restart {
                    outcome.restarted.push(consumer.clone());
                }
            }
            Ok(false) => {}
            Err(err) => {
                outcome.failed.get_or_insert(err);
            }
        }
    }
    outcome.consumers.push(consumer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::keys::{ANNOTATION_RESTART_ON_RENEWAL, started_with_annotation};
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn deployment(opt_in: Option<&str>, started: Option<&str>) -> Deployment {
        let mut annotations = serde_json::Map::new();
        if let Some(v) = opt_in {
            annotations.insert(ANNOTATION_RESTART_ON_RENEWAL.into(), json!(v));
        }
        if let Some(v) = started {
            annotations.insert(started_with_annotation("client"), json!(v));
        }
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "ns", "annotations": annotations}}),
        )
        .unwrap()
    }

    #[test]
    fn a_restart_is_due_once_per_credential_with_consent_for_env_readers() {
        let env = BTreeSet::from([Via::Env]);
        let env_from = BTreeSet::from([Via::EnvFrom, Via::Volume]);
        let volume = BTreeSet::from([Via::Volume, Via::Projected]);
        let renewed = ts("2026-01-01T02:00:00Z");
        let cases = [
            // (opt-in, recorded, via, due, why)
            (
                Some("true"),
                None,
                &env,
                Some(Due::Record),
                "first seen: record, no restart",
            ),
            (
                Some("client"),
                Some("2026-01-01T01:00:00Z"),
                &env,
                Some(Due::Restart),
                "started with an older one",
            ),
            (
                Some("true"),
                Some("2026-01-01T01:00:00Z"),
                &env_from,
                Some(Due::Restart),
                "envFrom too",
            ),
            (
                Some("true"),
                Some("2026-01-01T02:00:00Z"),
                &env,
                None,
                "already runs with it",
            ),
            (
                Some("true"),
                Some("2026-01-01T01:00:00Z"),
                &volume,
                None,
                "volume readers see it without a restart",
            ),
            (None, Some("2026-01-01T01:00:00Z"), &env, None, "no consent"),
            (
                Some("other"),
                Some("2026-01-01T01:00:00Z"),
                &env,
                None,
                "consent for another access",
            ),
        ];
        for (opt_in, recorded, via, expected, why) in cases {
            let d = deployment(opt_in, recorded);
            assert_eq!(due(&d, "client", via, renewed), expected, "{why}");
        }
        let mut deleting = deployment(Some("true"), Some("2026-01-01T01:00:00Z"));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(renewed),
        );
        assert_eq!(
            due(&deleting, "client", &env, renewed),
            None,
            "being deleted"
        );
    }

    #[test]
    fn a_restart_is_an_event_and_every_reader_is_in_the_status() {
        use crate::reconcile::limits::Limits;
        use crate::reconcile::status::{Outcomes, checks};
        use crate::reconcile::target::TargetOutcome;
        let plan = crate::reconcile::plan::validate(
            &crate::fixtures::access(json!({"inferenceService": {"name": "m"}})).build(),
            &Limits::default(),
        )
        .unwrap();
        let renewed = ts("2026-01-01T02:00:00Z");
        let reader = |name: &str, via: Via, restart: bool| Consumer {
            kind: WorkloadKind::Deployment,
            name: name.into(),
            via: BTreeSet::from([via]),
            restart_on_renewal: restart,
            started_with: restart.then_some(renewed),
        };
        let mut outcomes = Outcomes::new(TargetOutcome::NotFound);
        outcomes.consumers = Some(ConsumersOutcome {
            consumers: vec![
                reader("web", Via::Env, true),
                reader("files", Via::Volume, false),
            ],
            restarted: vec![reader("web", Via::Env, true)],
            issued_at: Some(renewed),
            failed: None,
        });
        let events = crate::reconcile::events::of(&plan, &outcomes, "");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "WorkloadRestarted");
        assert_eq!(
            events[0].note.as_deref(),
            Some(
                "restarted Deployment web: it reads Secret client-credential through env, and the credential was renewed at 2026-01-01T02:00:00Z; the workload's inference-access.io/restart-on-renewal annotation asked for it"
            )
        );
        let listed = checks(&plan, &outcomes, renewed).consumers.unwrap();
        assert_eq!(
            serde_json::to_value(&listed).unwrap(),
            json!([
                {"kind": "Deployment", "name": "web", "via": ["env"], "restartOnRenewal": true, "startedWith": "2026-01-01T02:00:00Z"},
                {"kind": "Deployment", "name": "files", "via": ["volume"], "restartOnRenewal": false},
            ])
        );
        // Nothing restarted: no Event.
        if let Some(c) = outcomes.consumers.as_mut() {
            c.restarted.clear();
        }
        assert!(crate::reconcile::events::of(&plan, &outcomes, "").is_empty());
    }
}
