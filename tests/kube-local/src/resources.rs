//! The kinds the control plane serves: built-ins plus whatever established CRDs add.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::cel_validation::CelRules;

/// What a CRD version adds to a served resource.
#[derive(Debug, Clone)]
pub struct CustomSchema {
    /// `openAPIV3Schema` of this version (None: schemaless, everything preserved).
    pub schema: Option<Value>,
    pub printer_columns: Vec<Value>,
    /// Name of the CRD (`plural.group`).
    pub crd_name: String,
    /// The schema's CEL rules, compiled (None: it has none, so writes skip the CEL walk).
    pub cel: Option<Arc<CelRules>>,
}

#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// Only `create` is served (TokenReview, SelfSubjectAccessReview).
    pub create_only: bool,
    pub custom: Option<CustomSchema>,
    /// The version objects are stored in (all versions of one resource share storage).
    pub storage_version: String,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether `metadata.generation` is kept: custom resources and the built-ins whose
    /// controllers report `status.observedGeneration` (the workloads).
    pub fn tracks_generation(&self) -> bool {
        self.custom.is_some() || self.group == "apps"
    }

    /// The storage key shared by every version: `plural` or `plural.group`.
    pub fn storage_key(&self) -> String {
        if self.is_new_event() {
            // events.k8s.io/v1 Events are core Events in another shape, as in the API server.
            return "events".to_string();
        }
        crate::error::qualified(&self.group, &self.plural)
    }

    /// events.k8s.io Events, stored as core/v1 Events and converted on the way in and out.
    pub fn is_new_event(&self) -> bool {
        self.group == "events.k8s.io" && self.plural == "events"
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        if self.create_only {
            vec!["create"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }

    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        short: &[&str],
    ) -> Self {
        Self {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            kind: kind.to_string(),
            list_kind: format!("{kind}List"),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            status_subresource: false,
            create_only: false,
            custom: None,
            storage_version: version.to_string(),
        }
    }
}

/// Built-in resources, in discovery order.
pub fn builtins() -> Vec<ResourceType> {
    let mut list = vec![
        ResourceType::builtin("", "v1", "namespaces", "Namespace", false, &["ns"]),
        ResourceType::builtin("", "v1", "serviceaccounts", "ServiceAccount", true, &["sa"]),
        ResourceType::builtin("", "v1", "secrets", "Secret", true, &[]),
        ResourceType::builtin("", "v1", "configmaps", "ConfigMap", true, &["cm"]),
        ResourceType::builtin("", "v1", "pods", "Pod", true, &["po"]),
        ResourceType::builtin("", "v1", "services", "Service", true, &["svc"]),
        ResourceType::builtin("", "v1", "events", "Event", true, &["ev"]),
        ResourceType::builtin("events.k8s.io", "v1", "events", "Event", true, &["ev"]),
        ResourceType::builtin("coordination.k8s.io", "v1", "leases", "Lease", true, &[]),
        ResourceType::builtin("apps", "v1", "deployments", "Deployment", true, &["deploy"]),
        ResourceType::builtin("apps", "v1", "statefulsets", "StatefulSet", true, &["sts"]),
        ResourceType::builtin("apps", "v1", "replicasets", "ReplicaSet", true, &["rs"]),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
        ),
        ResourceType::builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
        ),
        ResourceType::builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
        ),
        ResourceType::builtin(
            "authentication.k8s.io",
            "v1",
            "tokenreviews",
            "TokenReview",
            false,
            &[],
        ),
        ResourceType::builtin(
            "authentication.k8s.io",
            "v1",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
            &[],
        ),
        ResourceType::builtin(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
            &[],
        ),
        ResourceType::builtin(
            "authorization.k8s.io",
            "v1",
            "subjectaccessreviews",
            "SubjectAccessReview",
            false,
            &[],
        ),
    ];
    for rt in &mut list {
        if matches!(
            rt.plural.as_str(),
            "namespaces"
                | "pods"
                | "services"
                | "customresourcedefinitions"
                | "deployments"
                | "statefulsets"
                | "replicasets"
        ) {
            rt.status_subresource = true;
        }
        if rt.group.starts_with("authentication.") || rt.group.starts_with("authorization.") {
            rt.create_only = true;
        }
        if matches!(
            rt.plural.as_str(),
            "pods" | "services" | "deployments" | "statefulsets" | "replicasets"
        ) {
            rt.categories = vec!["all".to_string()];
        }
    }
    list
}

/// The served resources, keyed by (group, version, plural).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_gvr: BTreeMap<(String, String, String), Arc<ResourceType>>,
    /// Insertion order for discovery output.
    order: Vec<(String, String, String)>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        for rt in builtins() {
            r.insert(rt);
        }
        r
    }

    pub fn insert(&mut self, rt: ResourceType) {
        let key = (rt.group.clone(), rt.version.clone(), rt.plural.clone());
        if !self.by_gvr.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.by_gvr.insert(key, Arc::new(rt));
    }

    /// Removes every version a CRD added.
    pub fn remove_crd(&mut self, crd_name: &str) {
        let gone: Vec<_> = self
            .by_gvr
            .iter()
            .filter(|(_, rt)| rt.custom.as_ref().is_some_and(|c| c.crd_name == crd_name))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.by_gvr.remove(&k);
            self.order.retain(|o| o != &k);
        }
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.by_gvr
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// The resource for an apiVersion + kind, or + plural.
    pub fn find(&self, api_version: &str, kind_or_plural: &str) -> Option<Arc<ResourceType>> {
        let (group, version) = split_api_version(api_version);
        self.by_gvr
            .values()
            .find(|rt| {
                rt.group == group
                    && rt.version == version
                    && (rt.kind == kind_or_plural || rt.plural == kind_or_plural)
            })
            .cloned()
    }

    /// Any served version of a storage key (used by the garbage collector and RBAC).
    pub fn by_storage_key(&self, key: &str) -> Option<Arc<ResourceType>> {
        self.by_gvr
            .values()
            .find(|rt| rt.storage_key() == key && rt.version == rt.storage_version)
            .cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = Arc<ResourceType>> + '_ {
        self.order
            .iter()
            .filter_map(|k| self.by_gvr.get(k).cloned())
    }

    /// Group → versions (preferred first), in discovery order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for rt in self.all() {
            if rt.group.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(g, _)| g == &rt.group) {
                Some((_, versions)) => {
                    if !versions.contains(&rt.version) {
                        versions.push(rt.version.clone());
                    }
                }
                None => out.push((rt.group.clone(), vec![rt.version.clone()])),
            }
        }
        for (_, versions) in &mut out {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }
}

pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Kubernetes version ordering: GA > beta > alpha, higher numbers first.
fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        (3, major, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, major, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, major, n.parse().unwrap_or(0))
    } else {
        (0, major, 0)
    }
}

/// The resource types one CRD object serves (one per served version).
pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    let crd_name = crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_string();
    versions
        .iter()
        .filter(|v| v["served"].as_bool() != Some(false))
        .map(|v| ResourceType {
            group: group.clone(),
            version: v["name"].as_str().unwrap_or_default().to_string(),
            plural: plural.clone(),
            singular: names["singular"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.clone(),
            list_kind: names["listKind"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{kind}List")),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status_subresource: v["subresources"]["status"].is_object(),
            create_only: false,
            custom: Some(CustomSchema {
                schema: v["schema"]["openAPIV3Schema"]
                    .as_object()
                    .map(|_| v["schema"]["openAPIV3Schema"].clone()),
                printer_columns: v["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                crd_name: crd_name.clone(),
                cel: CelRules::compile(&v["schema"]["openAPIV3Schema"]).map(Arc::new),
            }),
            storage_version: storage_version.clone(),
        })
        .collect()
}
