//! The objects an access wants to exist, built from its [`Plan`]: no client, no clock. The
//! reconciler applies them and `render` prints them, so both always agree.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::gateway_policy::foreign_meta;
pub use super::gateway_policy::{
    ModelAtGateway, consumer_policy_name, gateway_policy, gateway_policy_name,
};
use super::plan::{Plan, PolicyPlan, policy_name};
use crate::api::authorization_policy::{self as ap, AuthorizationPolicy};
use crate::api::inference_service::{InferenceService, SIDECAR_INJECT_ANNOTATION};
use crate::api::keys;
use crate::core::credential::TokenRequestInputs;
use crate::core::secret_codec::{Encoded, SecretFields};

/// Whether `meta` names the access with this uid as its controlling owner.
pub fn is_controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid)
}

/// The controlling owner, if any, as `Kind/name`, to name it in a condition.
pub fn controller_of(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| format!("{}/{}", r.kind, r.name))
}

/// Metadata of an object the access owns: labelled for the operator's watches, owned for
/// garbage collection.
pub fn owned_meta(plan: &Plan, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(plan.access.namespace.clone()),
        labels: Some(keys::owned_labels(&plan.access.name)),
        owner_references: Some(vec![plan.access.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The dedicated ServiceAccount: an identity for the mesh with no RBAC bindings, no token
/// Secret and no automount, since its tokens are only ever minted for the gateway's audience.
pub fn service_account(plan: &Plan, name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(plan, name),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// The Secret before any credential is in it: it must exist first so the token can be bound
/// to its uid.
pub fn empty_secret(plan: &Plan) -> Secret {
    let mut metadata = owned_meta(plan, &plan.secret.name);
    let template = &plan.secret.template;
    let mut labels = template.labels.clone();
    labels.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(labels);
    metadata.annotations = Some(template.annotations.clone()).filter(|a| !a.is_empty());
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// The Secret with a ready credential: every key a client needs, written together.
pub fn credential_secret(plan: &Plan, encoded: &Encoded) -> Secret {
    let mut secret = empty_secret(plan);
    let mut annotations = secret.metadata.annotations.take().unwrap_or_default();
    annotations.extend(encoded.annotations.clone());
    secret.metadata.annotations = Some(annotations);
    secret.data = Some(
        encoded
            .data
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
            .collect(),
    );
    secret
}

impl SecretFields for Secret {
    fn data(&self, key: &str) -> Option<&[u8]> {
        self.data.as_ref()?.get(key).map(|v| v.0.as_slice())
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }
}

/// The TokenRequest body, bound to the credential Secret so the token dies with it for
/// TokenReview consumers.
pub fn token_request(
    inputs: &TokenRequestInputs,
    secret_name: &str,
    secret_uid: &str,
) -> TokenRequest {
    TokenRequest {
        spec: TokenRequestSpec {
            audiences: inputs.audiences.clone(),
            expiration_seconds: Some(inputs.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some(secret_name.into()),
                uid: Some(secret_uid.into()),
            }),
        },
        ..TokenRequest::default()
    }
}

/// The InferenceService from the access's template, owned by the access.
pub fn templated_inference_service(plan: &Plan) -> Option<InferenceService> {
    let template = plan.target.template.as_ref()?;
    let mut metadata = owned_meta(plan, &plan.target.name);
    let mut labels = template.metadata.labels.clone();
    labels.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(labels);
    let mut annotations = template.metadata.annotations.clone();
    if plan.mesh.mode() == crate::api::MeshMode::DisableSidecarInjection {
        annotations.insert(SIDECAR_INJECT_ANNOTATION.into(), "false".into());
    }
    metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
    Some(InferenceService {
        metadata,
        spec: template.spec.clone(),
        ..InferenceService::default()
    })
}

/// An ALLOW policy on the InferenceService's pods: requests the gateway forwarded (its mesh
/// principal) for exactly this identity (`user_id`, the header the gateway set from the
/// verified token's `sub` or the Dex session's email), plus Knative's probe paths. Both
/// conditions are needed: the header alone could be forged by any pod in the mesh, the
/// principal alone lets every authenticated user through.
pub fn authorization_policy(
    plan: &Plan,
    policy: &PolicyPlan,
    user_id: &str,
) -> AuthorizationPolicy {
    AuthorizationPolicy {
        metadata: owned_meta(plan, policy_name(plan)),
        spec: ap::AuthorizationPolicySpec {
            selector: Some(ap::WorkloadSelector {
                match_labels: BTreeMap::from([(
                    "serving.kserve.io/inferenceservice".to_owned(),
                    plan.target.name.clone(),
                )]),
            }),
            action: Some("ALLOW".into()),
            rules: identity_rules(policy, user_id),
            ..ap::AuthorizationPolicySpec::default()
        },
        ..AuthorizationPolicy::default()
    }
}

/// A model in another namespace, with its owner's consent: the same policy, in the model's
/// namespace, named after the consumer and labelled instead of owned.
pub fn consumer_policy(
    plan: &Plan,
    policy: &PolicyPlan,
    user_id: &str,
    model_namespace: &str,
) -> AuthorizationPolicy {
    let mut wanted = authorization_policy(plan, policy, user_id);
    wanted.metadata = foreign_meta(plan, model_namespace, consumer_policy_name(plan));
    wanted
}

/// Ambient: the same rules, attached to the predictor Service so its waypoint enforces them. A
/// selector would hand them to ztunnel, which cannot read L7 attributes and denies everyone.
pub fn waypoint_policy(
    plan: &Plan,
    policy: &PolicyPlan,
    user_id: &str,
    service: &str,
) -> AuthorizationPolicy {
    AuthorizationPolicy {
        metadata: owned_meta(plan, policy_name(plan)),
        spec: ap::AuthorizationPolicySpec {
            target_refs: vec![ap::PolicyTargetReference {
                group: String::new(),
                kind: "Service".into(),
                name: service.to_owned(),
            }],
            action: Some("ALLOW".into()),
            rules: identity_rules(policy, user_id),
            ..ap::AuthorizationPolicySpec::default()
        },
        ..AuthorizationPolicy::default()
    }
}

fn identity_rules(policy: &PolicyPlan, user_id: &str) -> Vec<ap::Rule> {
    let mut rules = vec![ap::Rule {
        from: vec![ap::From {
            source: ap::Source {
                principals: policy.source_principals.clone(),
                ..ap::Source::default()
            },
        }],
        when: vec![ap::Condition {
            key: format!("request.headers[{}]", policy.user_id_header),
            values: vec![user_id.to_owned()],
        }],
        ..ap::Rule::default()
    }];
    if !policy.probe_paths.is_empty() {
        rules.push(ap::Rule {
            to: vec![ap::To {
                operation: ap::Operation {
                    paths: policy.probe_paths.clone(),
                    ..ap::Operation::default()
                },
            }],
            ..ap::Rule::default()
        });
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::access;
    use crate::reconcile::limits::Limits;
    use crate::reconcile::plan::{MeshPlan, service_account_user, validate};
    use serde_json::json;

    const OWNER: &str = r#"[{"apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess", "name": "client", "uid": "access-uid", "controller": true}]"#;

    fn owner() -> serde_json::Value {
        serde_json::from_str(OWNER).unwrap()
    }

    fn plan(spec: serde_json::Value) -> Plan {
        validate(&access(spec).build(), &Limits::default()).unwrap()
    }

    #[test]
    fn templated_inference_service_carries_template_and_mesh_mode() {
        let p = plan(json!({
            "inferenceService": {"name": "sklearn-iris", "template": {
                "metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
                "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}}
            }},
            "mesh": {"mode": "DisableSidecarInjection"}
        }));
        assert_eq!(
            serde_json::to_value(templated_inference_service(&p).unwrap()).unwrap(),
            json!({
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {
                    "name": "sklearn-iris",
                    "namespace": "ns",
                    "labels": {"team": "a", "app.kubernetes.io/managed-by": "inference-access", "inference-access.io/access": "client"},
                    "annotations": {"note": "x", "sidecar.istio.io/inject": "false"},
                    "ownerReferences": owner()
                },
                "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}}
            })
        );
        assert!(
            templated_inference_service(&plan(json!({"inferenceService": {"name": "m"}})))
                .is_none()
        );
    }

    #[test]
    fn secret_template_adds_labels_but_never_replaces_ours() {
        let p = plan(json!({
            "inferenceService": {"name": "m"},
            "secretName": "creds",
            "secretTemplate": {"labels": {"app.kubernetes.io/managed-by": "someone-else", "team": "a"}, "annotations": {"reflector": "yes"}}
        }));
        assert_eq!(
            serde_json::to_value(empty_secret(&p)).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": "creds",
                    "namespace": "ns",
                    "labels": {"team": "a", "app.kubernetes.io/managed-by": "inference-access", "inference-access.io/access": "client"},
                    "annotations": {"reflector": "yes"},
                    "ownerReferences": owner()
                },
                "type": "Opaque"
            })
        );
    }

    #[test]
    fn policy_uses_the_configured_header_principals_and_probe_paths() {
        let limits = Limits {
            allowed_user_id_headers: vec!["x-user".into()],
            allowed_source_principals: vec!["cluster.local/ns/gw/sa/gw".into()],
            ..Limits::default()
        };
        let spec = json!({
            "inferenceService": {"name": "m"},
            "mesh": {"userIdHeader": "x-user", "sourcePrincipals": ["cluster.local/ns/gw/sa/gw"], "probePaths": []}
        });
        let p = validate(&access(spec).build(), &limits).unwrap();
        let MeshPlan::AuthorizationPolicy(policy) = &p.mesh else {
            panic!("{:?}", p.mesh)
        };
        assert_eq!(
            serde_json::to_value(
                authorization_policy(&p, policy, &service_account_user("ns", "robot")).spec
            )
            .unwrap(),
            json!({
                "selector": {"matchLabels": {"serving.kserve.io/inferenceservice": "m"}},
                "action": "ALLOW",
                "rules": [{
                    "from": [{"source": {"principals": ["cluster.local/ns/gw/sa/gw"]}}],
                    "when": [{"key": "request.headers[x-user]", "values": ["system:serviceaccount:ns:robot"]}]
                }]
            })
        );
    }

    #[test]
    fn waypoint_policy_attaches_the_rules_to_the_service() {
        let p = plan(
            json!({"inferenceService": {"name": "m"}, "mesh": {"mode": "Auto", "probePaths": []}}),
        );
        let MeshPlan::Auto(policy) = &p.mesh else {
            panic!("{:?}", p.mesh)
        };
        assert_eq!(
            serde_json::to_value(waypoint_policy(&p, policy, "u", "m-predictor").spec).unwrap(),
            json!({
                "targetRefs": [{"group": "", "kind": "Service", "name": "m-predictor"}],
                "action": "ALLOW",
                "rules": [{
                    "from": [{"source": {"principals": ["cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"]}}],
                    "when": [{"key": "request.headers[kubeflow-userid]", "values": ["u"]}]
                }]
            })
        );
    }

    #[test]
    fn token_request_is_bound_to_the_secret_and_never_audience_less() {
        let p = plan(json!({"inferenceService": {"name": "m"}}));
        let crate::reconcile::plan::IdentityPlan::ServiceAccount { request, .. } = &p.identity
        else {
            panic!()
        };
        assert_eq!(
            serde_json::to_value(token_request(request, "client-credential", "uid-1")).unwrap(),
            json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "metadata": {},
                "spec": {
                    "audiences": ["istio-ingressgateway.istio-system.svc.cluster.local"],
                    "expirationSeconds": 3600,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": "client-credential", "uid": "uid-1"}
                }
            })
        );
    }

    #[test]
    fn ownership_is_by_controller_uid() {
        let mut meta = ObjectMeta {
            owner_references: serde_json::from_str(OWNER).unwrap(),
            ..Default::default()
        };
        assert!(is_controlled_by(&meta, "access-uid"));
        assert_eq!(
            controller_of(&meta).as_deref(),
            Some("InferenceAccess/client")
        );
        meta.owner_references.as_mut().unwrap()[0].uid = "other".into();
        assert!(!is_controlled_by(&meta, "access-uid"));
        assert!(!is_controlled_by(&ObjectMeta::default(), "access-uid"));
    }
}
