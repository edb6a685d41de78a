//! An owner's consent across namespaces, in the ecosystem's own shape: a Gateway API
//! ReferenceGrant in the owner's namespace that lets InferenceAccesses of one namespace refer to
//! an object there (all of its kind, or one by name). The one reading of it serves both uses: a
//! policy at a shared Gateway (mesh.mode Auto) and a model in another namespace.
//!
//! A grant is read from the API server when a reconcile needs it (one LIST in the owner's
//! namespace); the operator watches ReferenceGrants only to know when to look again
//! (`runtime::controller`), so a revoked consent is acted on at once.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::core::PartialObjectMeta;
use serde_json::Value;

use super::apply::Applier;
use super::conditions::{Check, reason};
use super::detect::{in_ns, list_or_empty};
use super::error::{Error, Kind};
use super::mesh;
use super::plan::Plan;

/// The group and kind a grant's `from` names for InferenceAccesses.
pub const FROM_GROUP: &str = "inference-access.io";
pub const FROM_KIND: &str = "InferenceAccess";

/// The object a grant lets accesses refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Referent<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl<'a> Referent<'a> {
    pub fn gateway(name: &'a str) -> Self {
        Self {
            group: "gateway.networking.k8s.io",
            kind: "Gateway",
            name,
        }
    }

    pub fn inference_service(name: &'a str) -> Self {
        Self {
            group: "serving.kserve.io",
            kind: "InferenceService",
            name,
        }
    }
}

/// ReferenceGrant, in the version every Gateway API release serves (v1 is newer and optional).
pub fn reference_grants() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1beta1", "ReferenceGrant"),
        "referencegrants",
    )
}

/// Whether a ReferenceGrant in `owner_namespace` lets InferenceAccesses of `access_namespace`
/// refer to `referent`. Not served (no Gateway API) is no consent; a refused read is
/// `Error::Forbidden` naming the right.
pub async fn consents(
    client: &Client,
    owner_namespace: &str,
    referent: Referent<'_>,
    access_namespace: &str,
) -> Result<bool, Error> {
    let api =
        Api::<DynamicObject>::namespaced_with(client.clone(), owner_namespace, &reference_grants());
    let right = format!(
        "list referencegrants.gateway.networking.k8s.io {}",
        in_ns(owner_namespace)
    );
    let grants = list_or_empty(&api, &ListParams::default(), right).await?;
    Ok(grants
        .iter()
        .any(|grant| grant_admits(&grant.data, referent, access_namespace)))
}

/// Pure part of [`consents`]: the grant names this namespace's InferenceAccesses in `from`
/// and, in `to`, the referent's group and kind, and its name or no name (all of that kind).
pub fn grant_admits(grant: &Value, referent: Referent<'_>, access_namespace: &str) -> bool {
    let spec = &grant["spec"];
    let from = spec["from"].as_array().is_some_and(|from| {
        from.iter().any(|f| {
            f["group"] == FROM_GROUP && f["kind"] == FROM_KIND && f["namespace"] == access_namespace
        })
    });
    let to = spec["to"].as_array().is_some_and(|to| {
        to.iter().any(|t| {
            t["group"] == referent.group
                && t["kind"] == referent.kind
                && t["name"].as_str().is_none_or(|n| n == referent.name)
        })
    });
    from && to
}

/// Whether the model's owner lets this access reach it; `true` for a model in the access's
/// own namespace.
pub async fn model_consents(client: &Client, plan: &Plan) -> Result<bool, Error> {
    let Some(model_namespace) = &plan.target.other_namespace else {
        return Ok(true);
    };
    consents(
        client,
        model_namespace,
        Referent::inference_service(&plan.target.name),
        &plan.access.namespace,
    )
    .await
}

/// No consent (never given, or revoked): what the consent let the access have goes. Its
/// policy in the model's namespace (found by its labels and uid, as at a Gateway) and the
/// credential Secret it holds; the Secret is deleted only when the access controls it.
pub async fn withdraw(applier: &Applier<'_>, plan: &Plan) -> Result<(), Error> {
    mesh::remove_gateway_policies(applier, plan).await?;
    let secret = applier.cached::<PartialObjectMeta<Secret>>(&plan.secret.name);
    applier.remove(Kind::Secret, secret).await?;
    Ok(())
}

/// The check for an access whose model's owner has not consented: who can fix it, and how.
pub fn pending(plan: &Plan) -> Check {
    let ns = plan.target.other_namespace.as_deref().unwrap_or_default();
    Check::failed(
        reason::CONSENT_PENDING,
        format!(
            "{}; until then no token and no policy",
            missing_model_grant(ns, &plan.target.name, &plan.access.namespace)
        ),
    )
}

/// What is missing for a model in `model_namespace` to admit accesses of `access_namespace`,
/// and who adds it (the status and `doctor` say it alike).
pub fn missing_model_grant(model_namespace: &str, model: &str, access_namespace: &str) -> String {
    format!(
        "no ReferenceGrant in namespace {model_namespace} lets InferenceAccesses from namespace {access_namespace} refer to InferenceService {model}; its owner creates one (from group {FROM_GROUP}, kind {FROM_KIND}, namespace {access_namespace}; to group serving.kserve.io, kind InferenceService, name {model})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant(namespace: &str, to: Value) -> Value {
        json!({"spec": {"from": [{"group": FROM_GROUP, "kind": FROM_KIND, "namespace": namespace}], "to": [to]}})
    }

    #[test]
    fn a_grant_names_the_access_namespace_and_the_gateway() {
        let gateway = |name: Option<&str>| match name {
            Some(n) => json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": n}),
            None => json!({"group": "gateway.networking.k8s.io", "kind": "Gateway"}),
        };
        let g = Referent::gateway("kserve-ingress-gateway");
        assert!(grant_admits(
            &grant("team", gateway(Some(g.name))),
            g,
            "team"
        ));
        assert!(grant_admits(&grant("team", gateway(None)), g, "team"));
        assert!(!grant_admits(
            &grant("other", gateway(Some(g.name))),
            g,
            "team"
        ));
        assert!(!grant_admits(&grant("team", gateway(Some("x"))), g, "team"));
        assert!(!grant_admits(
            &grant("team", json!({"group": "", "kind": "Service"})),
            g,
            "team"
        ));
    }

    /// Each way a grant can fall short of admitting namespace `team-b` to model `m`.
    #[test]
    fn a_grant_for_a_model_admits_only_what_it_names() {
        let m = Referent::inference_service("m");
        let isvc = |name: Option<&str>| {
            let mut to = json!({"group": "serving.kserve.io", "kind": "InferenceService"});
            if let Some(name) = name {
                to["name"] = json!(name);
            }
            to
        };
        let cases = [
            ("names the model", grant("team-b", isvc(Some("m"))), true),
            ("every InferenceService", grant("team-b", isvc(None)), true),
            ("another namespace", grant("team-c", isvc(Some("m"))), false),
            ("another model", grant("team-b", isvc(Some("other"))), false),
            (
                "another kind of referrer",
                json!({"spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "team-b"}], "to": [isvc(Some("m"))]}}),
                false,
            ),
            (
                "another group of the same kind",
                grant(
                    "team-b",
                    json!({"group": "example.com", "kind": "InferenceService", "name": "m"}),
                ),
                false,
            ),
            (
                "a Gateway, not the model",
                grant(
                    "team-b",
                    json!({"group": "gateway.networking.k8s.io", "kind": "Gateway"}),
                ),
                false,
            ),
            ("no spec", json!({}), false),
        ];
        for (what, grant, admits) in cases {
            assert_eq!(grant_admits(&grant, m, "team-b"), admits, "{what}");
        }
    }

    /// Without consent the chain stops at the model, Ready says why and who can fix it; with it,
    /// the policy is named where it lives.
    #[test]
    fn the_status_says_consent_pending_and_names_the_policy_in_the_model_namespace() {
        use crate::fixtures::{access, ts};
        use crate::reconcile::conditions::{build_status, reason};
        use crate::reconcile::limits::Limits;
        use crate::reconcile::mesh::MeshOutcome;
        use crate::reconcile::status::{Outcomes, checks};
        use crate::reconcile::target::TargetOutcome;
        let plan = crate::reconcile::plan::validate(
            &access(json!({"inferenceService": {"name": "m", "namespace": "team-a"}})).build(),
            &Limits::default(),
        )
        .unwrap();
        let now = ts("2026-01-01T00:00:00Z");
        let pending = Outcomes::new(TargetOutcome::ConsentPending {
            withdraw_failed: None,
        });
        let status = build_status(&checks(&plan, &pending, now), None, Some(1), now);
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason::CONSENT_PENDING)
        );
        for needle in [
            "namespace team-a",
            "from namespace ns",
            "InferenceService m",
            "no token and no policy",
        ] {
            assert!(
                ready.message.contains(needle),
                "{needle}: {}",
                ready.message
            );
        }
        let applied = Outcomes {
            mesh: Some(MeshOutcome::PolicyReady {
                user_id: "system:serviceaccount:ns:client".into(),
                applied: true,
                no_sidecar: false,
            }),
            ..Outcomes::new(TargetOutcome::NotFound)
        };
        let policy = checks(&plan, &applied, now).access_policy;
        assert_eq!(
            policy.message,
            "AuthorizationPolicy team-a/from-ns.client allows system:serviceaccount:ns:client through the gateway"
        );
    }
}
