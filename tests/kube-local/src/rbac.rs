//! RBAC authorization: Roles, ClusterRoles and their bindings, as the RBAC authorizer reads them.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::store::State;
use crate::tokens::User;

/// What a request asks to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn subject_matches(subject: &Value, user: &User) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"].as_str().unwrap_or_default();
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = strings(&rule["verbs"]);
    let groups = strings(&rule["apiGroups"]);
    let resources = strings(&rule["resources"]);
    let names = strings(&rule["resourceNames"]);
    let full = match &a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.clone(),
    };
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == full
            || (a.subresource.is_some() && *r == format!("{}/*", a.resource))
            || (a
                .subresource
                .as_ref()
                .is_some_and(|s| *r == format!("*/{s}")))
    });
    verbs.iter().any(|v| *v == "*" || *v == a.verb)
        && groups.iter().any(|g| *g == "*" || *g == a.group)
        && resource_ok
        && (names.is_empty() || a.name.as_deref().is_some_and(|n| names.contains(&n)))
}

fn role_rules(st: &State, role_ref: &Value, namespace: &str) -> Vec<Value> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let role = match role_ref["kind"].as_str() {
        Some("ClusterRole") => st.raw("clusterroles.rbac.authorization.k8s.io", "", name),
        Some("Role") => st.raw("roles.rbac.authorization.k8s.io", namespace, name),
        _ => None,
    };
    role.and_then(|r| r["rules"].as_array().cloned())
        .unwrap_or_default()
}

/// Whether RBAC allows the request. Members of system:masters are always allowed, and every
/// authenticated user may review itself (system:basic-user) and read discovery.
pub fn allows(st: &State, user: &User, a: &Attributes) -> bool {
    if user.is_admin() {
        return true;
    }
    if a.verb == "create"
        && matches!(
            a.resource.as_str(),
            "selfsubjectaccessreviews" | "selfsubjectrulesreviews" | "selfsubjectreviews"
        )
    {
        return true;
    }
    for binding in st.objects_of("clusterrolebindings.rbac.authorization.k8s.io") {
        let binding = binding.value();
        if binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| subject_matches(s, user))
            && role_rules(st, &binding["roleRef"], "")
                .iter()
                .any(|r| rule_allows(r, a))
        {
            return true;
        }
    }
    if let Some(ns) = &a.namespace {
        for binding in st.objects_in("rolebindings.rbac.authorization.k8s.io", ns) {
            let binding = binding.value();
            if binding["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| subject_matches(s, user))
                && role_rules(st, &binding["roleRef"], ns)
                    .iter()
                    .any(|r| rule_allows(r, a))
            {
                return true;
            }
        }
    }
    false
}

/// The 403 the API server sends for a denied request.
pub fn forbidden(user: &User, a: &Attributes) -> ApiError {
    let qualified = crate::error::qualified(&a.group, &a.resource);
    let full = match &a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.clone(),
    };
    let subject = match &a.name {
        Some(n) => format!("{qualified} \"{n}\" is forbidden"),
        None => format!("{qualified} is forbidden"),
    };
    let scope = match &a.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let message = format!(
        "{subject}: User \"{}\" cannot {} resource \"{full}\" in API group \"{}\" {scope}",
        user.name, a.verb, a.group
    );
    let mut details = json!({"kind": a.resource});
    if let Some(n) = &a.name {
        details["name"] = json!(n);
    }
    if !a.group.is_empty() {
        details["group"] = json!(a.group);
    }
    ApiError::forbidden(message).with_details(details)
}

/// POST selfsubjectaccessreviews (what `kubectl auth can-i` sends).
pub fn self_subject_access_review(st: &State, user: &User, body: &Value) -> Value {
    let ra = &body["spec"]["resourceAttributes"];
    let allowed = if ra.is_object() {
        let opt = |k: &str| ra[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let a = Attributes {
            verb: ra["verb"].as_str().unwrap_or_default().to_string(),
            group: ra["group"].as_str().unwrap_or_default().to_string(),
            resource: ra["resource"].as_str().unwrap_or_default().to_string(),
            subresource: opt("subresource"),
            namespace: opt("namespace"),
            name: opt("name"),
        };
        allows(st, user, &a)
    } else {
        // Non-resource URLs: discovery and health endpoints are open to authenticated users.
        true
    };
    let mut status = json!({"allowed": allowed});
    if allowed && !user.is_admin() {
        status["reason"] = json!("RBAC: allowed by a binding");
    }
    json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "metadata": {"creationTimestamp": null}, "spec": body["spec"], "status": status})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_matching() {
        let rule = json!({"verbs": ["create"], "apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": ["sa1"]});
        let mut a = Attributes {
            verb: "create".into(),
            resource: "serviceaccounts".into(),
            subresource: Some("token".into()),
            name: Some("sa1".into()),
            ..Default::default()
        };
        assert!(rule_allows(&rule, &a));
        a.name = Some("sa2".into());
        assert!(!rule_allows(&rule, &a));
        a.subresource = None;
        a.name = Some("sa1".into());
        assert!(!rule_allows(&rule, &a));
        let star = json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]});
        assert!(rule_allows(&star, &a));
    }

    #[test]
    fn forbidden_message_matches_the_api_server() {
        let user = User {
            name: "system:serviceaccount:ns:op".into(),
            uid: String::new(),
            groups: vec![],
        };
        let a = Attributes {
            verb: "list".into(),
            resource: "secrets".into(),
            namespace: Some("ns".into()),
            ..Default::default()
        };
        assert_eq!(
            forbidden(&user, &a).message,
            "secrets is forbidden: User \"system:serviceaccount:ns:op\" cannot list resource \"secrets\" in API group \"\" in the namespace \"ns\""
        );
    }
}
