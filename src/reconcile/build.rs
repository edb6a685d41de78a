//! The objects an access wants to exist, built from plain values: no client, no clock.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::api::InferenceAccess;
use crate::api::authorization_policy::{self as ap, AuthorizationPolicy};
use crate::api::inference_service::{InferenceService, SIDECAR_INJECT_ANNOTATION};
use crate::api::keys;
use crate::core::credential::IssuedCredential;
use crate::core::endpoint::Endpoint;
use crate::gateway::probe::Credential;

/// Whether `meta` names this access as its controlling owner.
pub fn is_controlled_by(meta: &ObjectMeta, access: &InferenceAccess) -> bool {
    let uid = access.meta().uid.as_deref();
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

/// The controlling owner, if any, as `Kind/name`, to name it in a condition.
pub fn controller_of(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| format!("{}/{}", r.kind, r.name))
}

fn owner_reference(access: &InferenceAccess) -> Vec<OwnerReference> {
    access.controller_owner_ref(&()).into_iter().collect()
}

fn owned_meta(access: &InferenceAccess, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: access.meta().namespace.clone(),
        labels: Some(keys::owned_labels(
            access.meta().name.as_deref().unwrap_or_default(),
        )),
        owner_references: Some(owner_reference(access)),
        ..ObjectMeta::default()
    }
}

/// The dedicated ServiceAccount: an identity for the mesh with no RBAC bindings, no token
/// Secret and no automount, since its tokens are only ever minted for the gateway's audience.
pub fn service_account(access: &InferenceAccess, name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(access, name),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// The Secret before any credential is in it: it must exist first so the token can be bound
/// to its uid.
pub fn empty_secret(access: &InferenceAccess) -> Secret {
    let mut metadata = owned_meta(access, &access.secret_name());
    if let Some(template) = &access.spec.secret_template {
        let mut labels = template.labels.clone();
        labels.extend(metadata.labels.take().unwrap_or_default());
        metadata.labels = Some(labels);
        metadata.annotations = Some(template.annotations.clone()).filter(|a| !a.is_empty());
    }
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// The Secret with a ready credential: every key a client needs, written together.
pub fn credential_secret(
    access: &InferenceAccess,
    endpoint: &Endpoint,
    issued: &IssuedCredential,
) -> Secret {
    let mut secret = empty_secret(access);
    let mut annotations = secret.metadata.annotations.take().unwrap_or_default();
    annotations.extend(issued.annotations());
    secret.metadata.annotations = Some(annotations);
    let credential = match &issued.value {
        Credential::Bearer(token) => [
            (keys::KEY_TOKEN, token.clone()),
            (keys::KEY_AUTHORIZATION, format!("Bearer {token}")),
        ],
        Credential::Cookie { name, value } => [
            (keys::KEY_COOKIE, format!("{name}={value}")),
            (keys::KEY_COOKIE_NAME, name.clone()),
        ],
    };
    let data = credential.into_iter().chain([
        (keys::KEY_URL, endpoint.url.clone()),
        (keys::KEY_HOST, endpoint.host.clone()),
        (keys::KEY_PREDICT_URL, endpoint.predict_url()),
        (keys::KEY_INFER_URL, endpoint.infer_url()),
        (keys::KEY_GATEWAY_URL, endpoint.gateway_url.clone()),
        (keys::KEY_EXPIRES_AT, issued.expires_at.to_string()),
    ]);
    secret.data = Some(
        data.map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
            .collect(),
    );
    secret
}

/// The user id Kubeflow's gateway puts in the user-id header for a ServiceAccount token: the
/// token's `sub`.
pub fn service_account_user(namespace: &str, service_account: &str) -> String {
    format!("system:serviceaccount:{namespace}:{service_account}")
}

/// The InferenceService from the access's template, owned by the access.
pub fn templated_inference_service(access: &InferenceAccess) -> Option<InferenceService> {
    let template = access.spec.inference_service.template.as_ref()?;
    let mut metadata = owned_meta(access, &access.spec.inference_service.name);
    let mut labels = template.metadata.labels.clone();
    labels.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(labels);
    let mut annotations = template.metadata.annotations.clone();
    if access.spec.mesh.mode == crate::api::MeshMode::DisableSidecarInjection {
        annotations.insert(SIDECAR_INJECT_ANNOTATION.into(), "false".into());
    }
    metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
    Some(InferenceService {
        metadata,
        spec: template.spec.clone(),
        ..InferenceService::default()
    })
}

/// The one annotation applied to an InferenceService the access only references.
pub fn sidecar_annotation_patch(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": {SIDECAR_INJECT_ANNOTATION: "false"}},
    })
}

/// The name of the policy an access owns: its own name, so `kubectl get authorizationpolicy`
/// lines up with `kubectl get ia`.
pub fn policy_name(access: &InferenceAccess) -> String {
    access.meta().name.clone().unwrap_or_default()
}

/// An ALLOW policy on the InferenceService's pods: requests the gateway forwarded (its mesh
/// principal) for exactly this identity (`user_id`, the header the gateway set from the
/// verified token's `sub` or the Dex session's email), plus Knative's probe paths. Both
/// conditions are needed: the header alone could be forged by any pod in the mesh, the
/// principal alone lets every authenticated user through.
pub fn authorization_policy(access: &InferenceAccess, user_id: &str) -> AuthorizationPolicy {
    let mesh = &access.spec.mesh;
    let mut rules = vec![ap::Rule {
        from: vec![ap::From {
            source: ap::Source {
                principals: mesh.source_principals.clone(),
            },
        }],
        when: vec![ap::Condition {
            key: format!("request.headers[{}]", mesh.user_id_header),
            values: vec![user_id.to_owned()],
        }],
        ..ap::Rule::default()
    }];
    if !mesh.probe_paths.is_empty() {
        rules.push(ap::Rule {
            to: vec![ap::To {
                operation: ap::Operation {
                    paths: mesh.probe_paths.clone(),
                },
            }],
            ..ap::Rule::default()
        });
    }
    AuthorizationPolicy {
        metadata: owned_meta(access, &policy_name(access)),
        spec: ap::AuthorizationPolicySpec {
            selector: Some(ap::WorkloadSelector {
                match_labels: BTreeMap::from([(
                    "serving.kserve.io/inferenceservice".to_owned(),
                    access.spec.inference_service.name.clone(),
                )]),
            }),
            action: Some("ALLOW".into()),
            rules,
        },
        ..AuthorizationPolicy::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::api::fixtures::access;

    const OWNER: &str = r#"[{"apiVersion": "inference-access.io/v1alpha1", "kind": "InferenceAccess", "name": "client", "uid": "access-uid", "controller": true}]"#;

    fn owner() -> serde_json::Value {
        serde_json::from_str(OWNER).unwrap()
    }

    #[test]
    fn templated_inference_service_carries_template_and_mesh_mode() {
        let a = access(json!({
            "inferenceService": {"name": "sklearn-iris", "template": {
                "metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
                "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}}}}
            }},
            "mesh": {"mode": "DisableSidecarInjection"}
        }));
        assert_eq!(
            serde_json::to_value(templated_inference_service(&a).unwrap()).unwrap(),
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
            templated_inference_service(&access(json!({"inferenceService": {"name": "m"}})))
                .is_none()
        );
    }

    #[test]
    fn secret_template_adds_labels_but_never_replaces_ours() {
        let a = access(json!({
            "inferenceService": {"name": "m"},
            "secretName": "creds",
            "secretTemplate": {"labels": {"app.kubernetes.io/managed-by": "someone-else", "team": "a"}, "annotations": {"reflector": "yes"}}
        }));
        assert_eq!(
            serde_json::to_value(empty_secret(&a)).unwrap(),
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
        let a = access(json!({
            "inferenceService": {"name": "m"},
            "mesh": {"userIdHeader": "x-user", "sourcePrincipals": ["cluster.local/ns/gw/sa/gw"], "probePaths": []}
        }));
        assert_eq!(
            serde_json::to_value(
                authorization_policy(&a, &service_account_user("ns", "robot")).spec
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
    fn ownership_is_by_controller_uid() {
        let a = access(json!({"inferenceService": {"name": "m"}}));
        let mut meta = ObjectMeta {
            owner_references: serde_json::from_str(OWNER).unwrap(),
            ..Default::default()
        };
        assert!(is_controlled_by(&meta, &a));
        assert_eq!(
            controller_of(&meta).as_deref(),
            Some("InferenceAccess/client")
        );
        meta.owner_references.as_mut().unwrap()[0].uid = "other".into();
        assert!(!is_controlled_by(&meta, &a));
        assert!(!is_controlled_by(&ObjectMeta::default(), &a));
    }
}
