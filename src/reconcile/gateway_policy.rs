//! Policies outside the access's namespace, built from the plan: pure. At a shared Gateway
//! (mesh.mode Auto, path Gateway), and on a model in another namespace (its consumer's policy).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::detect::GatewayRef;
use super::plan::Plan;
use crate::api::authorization_policy::{self as ap, AuthorizationPolicy};
use crate::api::keys;

/// The policy at a shared Gateway is named after the model, not the access: one grant per
/// model there (see `gateway_policy`). Namespace and model names are DNS labels, so the dots
/// keep `a-b/c` and `a/b-c` apart.
pub fn gateway_policy_name(plan: &Plan) -> String {
    format!(
        "inference-access.{}.{}",
        plan.access.namespace, plan.target.name
    )
}

/// The policy on a model in another namespace is named after its consumer: the access's
/// namespace and name (DNS labels and a DNS subdomain: the dot keeps them apart).
pub fn consumer_policy_name(plan: &Plan) -> String {
    format!("from-{}.{}", plan.access.namespace, plan.access.name)
}

/// Metadata of a policy the access writes outside its namespace: the operator's labels, the
/// access's namespace in a label (both found by selector when it goes) and its uid in an
/// annotation (an object of that name without it is someone else's).
pub fn foreign_meta(plan: &Plan, namespace: &str, name: String) -> ObjectMeta {
    let mut labels = keys::owned_labels(&plan.access.name);
    labels.insert(
        keys::ACCESS_NAMESPACE_LABEL.into(),
        plan.access.namespace.clone(),
    );
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            keys::ANNOTATION_ACCESS_UID.to_owned(),
            plan.access.uid.clone(),
        )])),
        ..ObjectMeta::default()
    }
}

/// What a request to this model at the Gateway looks like: its host (with any port) and, for
/// path-based URLs, its path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelAtGateway {
    pub host: String,
    /// `/serving/<ns>/<name>` for KServe's `pathTemplate`; empty for host-based URLs.
    pub path_prefix: String,
}

/// A DENY policy at the Gateway: a request for this model's host (and prefix) whose verified
/// token is not this identity's is refused. A DENY, not an ALLOW: once any ALLOW policy applies
/// to a Gateway, every request no ALLOW matches is denied, on every route of every model there;
/// a DENY scoped to one host changes nothing for the others. Requests without a verified token
/// have no request principal, so they are refused too. `issuers` are those of the
/// RequestAuthentications on the Gateway: a principal is `<iss>/<sub>`.
pub fn gateway_policy(
    plan: &Plan,
    gateway: &GatewayRef,
    issuers: &[String],
    subject: &str,
    model: &ModelAtGateway,
) -> AuthorizationPolicy {
    let metadata = foreign_meta(plan, &gateway.namespace, gateway_policy_name(plan));
    let paths = match model.path_prefix.as_str() {
        "" => Vec::new(),
        prefix => vec![prefix.to_owned(), format!("{prefix}/*")],
    };
    AuthorizationPolicy {
        metadata,
        spec: ap::AuthorizationPolicySpec {
            target_refs: vec![ap::PolicyTargetReference {
                group: "gateway.networking.k8s.io".into(),
                kind: "Gateway".into(),
                name: gateway.name.clone(),
            }],
            action: Some("DENY".into()),
            rules: vec![ap::Rule {
                from: vec![ap::From {
                    source: ap::Source {
                        not_request_principals: issuers
                            .iter()
                            .map(|iss| format!("{iss}/{subject}"))
                            .collect(),
                        ..ap::Source::default()
                    },
                }],
                to: vec![ap::To {
                    operation: ap::Operation {
                        hosts: vec![model.host.clone(), format!("{}:*", model.host)],
                        paths,
                    },
                }],
                ..ap::Rule::default()
            }],
            ..ap::AuthorizationPolicySpec::default()
        },
        ..AuthorizationPolicy::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::access;
    use crate::reconcile::limits::Limits;
    use crate::reconcile::plan::validate;
    use serde_json::json;

    fn plan(spec: serde_json::Value) -> Plan {
        validate(&access(spec).build(), &Limits::default()).unwrap()
    }

    #[test]
    fn gateway_policy_denies_everyone_else_this_model_only() {
        let p = plan(json!({"inferenceService": {"name": "m"}, "mesh": {"mode": "Auto"}}));
        let gateway = GatewayRef {
            namespace: "kserve".into(),
            name: "kserve-ingress-gateway".into(),
        };
        let model = ModelAtGateway {
            host: "m-ns.example.com".into(),
            path_prefix: String::new(),
        };
        let issuers = ["https://kubernetes.default.svc.cluster.local".to_owned()];
        assert_eq!(
            serde_json::to_value(gateway_policy(
                &p,
                &gateway,
                &issuers,
                "system:serviceaccount:ns:client",
                &model
            ))
            .unwrap(),
            json!({
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {
                    "name": "inference-access.ns.m",
                    "namespace": "kserve",
                    "labels": {"app.kubernetes.io/managed-by": "inference-access", "inference-access.io/access": "client", "inference-access.io/access-namespace": "ns"},
                    "annotations": {"inference-access.io/access-uid": "access-uid"}
                },
                "spec": {
                    "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "kserve-ingress-gateway"}],
                    "action": "DENY",
                    "rules": [{
                        "from": [{"source": {"notRequestPrincipals": ["https://kubernetes.default.svc.cluster.local/system:serviceaccount:ns:client"]}}],
                        "to": [{"operation": {"hosts": ["m-ns.example.com", "m-ns.example.com:*"]}}]
                    }]
                }
            })
        );
        // Path-based URLs share the host: the prefix scopes the rule.
        let shared = ModelAtGateway {
            host: "example.com".into(),
            path_prefix: "/serving/ns/m".into(),
        };
        let spec = gateway_policy(&p, &gateway, &issuers, "s", &shared).spec;
        assert_eq!(
            spec.rules[0].to[0].operation.paths,
            ["/serving/ns/m", "/serving/ns/m/*"]
        );
    }
}
