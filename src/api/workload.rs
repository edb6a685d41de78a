//! The workloads that read an access's Secret (Deployments and StatefulSets), and how a pod
//! template reads a Secret: the one place that walks a pod spec for it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use kube::ResourceExt;

use super::keys::{ANNOTATION_RESTART_ON_RENEWAL, started_with_annotation};

/// How a pod reads a Secret. Env readers see a new value only when their Pods restart; volume
/// readers get it from the kubelet's sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// `env[].valueFrom.secretKeyRef`.
    Env,
    /// `envFrom[].secretRef`.
    EnvFrom,
    /// `volumes[].secret`.
    Volume,
    /// `volumes[].projected.sources[].secret`.
    Projected,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Env => "env",
            Via::EnvFrom => "envFrom",
            Via::Volume => "volume",
            Via::Projected => "projected",
        }
    }

    /// Whether a running Pod keeps the value it started with.
    pub fn needs_restart(self) -> bool {
        matches!(self, Via::Env | Via::EnvFrom)
    }
}

/// The Secrets a pod spec reads (names in its namespace), and how.
pub fn secrets_read(spec: &PodSpec) -> BTreeMap<String, BTreeSet<Via>> {
    let mut read: BTreeMap<String, BTreeSet<Via>> = BTreeMap::new();
    let mut add = |name: Option<&String>, via| {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            read.entry(name.clone()).or_default().insert(via);
        }
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in containers {
        for env in container.env.iter().flatten() {
            let secret = env
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref());
            add(secret.map(|s| &s.name), Via::Env);
        }
        for from in container.env_from.iter().flatten() {
            add(from.secret_ref.as_ref().map(|s| &s.name), Via::EnvFrom);
        }
    }
    for volume in spec.volumes.iter().flatten() {
        let secret = volume.secret.as_ref().and_then(|s| s.secret_name.as_ref());
        add(secret, Via::Volume);
        let sources = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
        for source in sources.into_iter().flatten() {
            add(source.secret.as_ref().map(|s| &s.name), Via::Projected);
        }
    }
    read
}

/// A kind of workload whose Pods come from a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }
}

/// Deployments and StatefulSets alike.
pub trait Workload: kube::Resource<DynamicType = ()> + Clone {
    const KIND: WorkloadKind;

    fn template(&self) -> Option<&PodTemplateSpec>;

    /// Drops the status and, from the pod template, all but what says which Secrets it reads
    /// (every workload in scope is cached: most of each is of no use to the operator).
    fn keep_secret_references(&mut self);
}

impl Workload for Deployment {
    const KIND: WorkloadKind = WorkloadKind::Deployment;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }

    fn keep_secret_references(&mut self) {
        self.status = None;
        if let Some(spec) = self.spec.as_mut() {
            trim_template(&mut spec.template);
        }
    }
}

impl Workload for StatefulSet {
    const KIND: WorkloadKind = WorkloadKind::StatefulSet;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }

    fn keep_secret_references(&mut self) {
        self.status = None;
        if let Some(spec) = self.spec.as_mut() {
            spec.volume_claim_templates = None;
            trim_template(&mut spec.template);
        }
    }
}

fn trim_template(template: &mut PodTemplateSpec) {
    template.metadata = None;
    if let Some(spec) = template.spec.as_mut() {
        let trim_all = |containers: &[Container]| containers.iter().map(trim_container).collect();
        *spec = PodSpec {
            containers: trim_all(&spec.containers),
            init_containers: spec.init_containers.as_deref().map(trim_all),
            volumes: spec.volumes.as_ref().map(|volumes| {
                volumes
                    .iter()
                    .filter(|v| v.secret.is_some() || v.projected.is_some())
                    .cloned()
                    .collect()
            }),
            ..PodSpec::default()
        };
    }
}

fn trim_container(container: &Container) -> Container {
    Container {
        name: container.name.clone(),
        env: container.env.as_ref().map(|env| {
            env.iter()
                .filter(|e| {
                    e.value_from
                        .as_ref()
                        .is_some_and(|v| v.secret_key_ref.is_some())
                })
                .cloned()
                .collect()
        }),
        env_from: container.env_from.as_ref().map(|from| {
            from.iter()
                .filter(|f| f.secret_ref.is_some())
                .cloned()
                .collect()
        }),
        ..Container::default()
    }
}

/// The Secrets a workload's Pods read.
pub fn workload_reads<W: Workload>(workload: &W) -> BTreeMap<String, BTreeSet<Via>> {
    workload
        .template()
        .and_then(|t| t.spec.as_ref())
        .map(secrets_read)
        .unwrap_or_default()
}

/// Whether the workload's owner asked for a restart when `access` renews: the annotation
/// `inference-access.io/restart-on-renewal` on the workload itself, `"true"` or a
/// comma-separated list of access names. Only someone who may edit the workload can set it, so
/// it is their consent to the operator patching it.
pub fn restart_consented<W: Workload>(workload: &W, access: &str) -> bool {
    workload
        .annotations()
        .get(ANNOTATION_RESTART_ON_RENEWAL)
        .is_some_and(|value| {
            let value = value.trim();
            value == "true" || value.split(',').any(|name| name.trim() == access)
        })
}

/// The issue time of `access`'s credential that the workload's Pods started with, as the
/// operator recorded it.
pub fn started_with<W: Workload>(workload: &W, access: &str) -> Option<jiff::Timestamp> {
    workload
        .annotations()
        .get(&started_with_annotation(access))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_spec(spec: serde_json::Value) -> PodSpec {
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn every_way_a_pod_reads_a_secret() {
        let spec = pod_spec(json!({
            "containers": [{"name": "a",
                "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "cred", "key": "token"}}},
                        {"name": "P", "value": "plain"},
                        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cred", "key": "x"}}}],
                "envFrom": [{"secretRef": {"name": "all"}}, {"configMapRef": {"name": "cm"}}]}],
            "initContainers": [{"name": "i", "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "init", "key": "token"}}}]}],
            "volumes": [{"name": "v", "secret": {"secretName": "cred"}},
                        {"name": "p", "projected": {"sources": [{"secret": {"name": "proj"}}, {"serviceAccountToken": {"path": "t"}}]}},
                        {"name": "e", "emptyDir": {}}],
        }));
        let read = secrets_read(&spec);
        let names: Vec<_> = read.keys().map(String::as_str).collect();
        assert_eq!(names, ["all", "cred", "init", "proj"]);
        assert_eq!(read["cred"], BTreeSet::from([Via::Env, Via::Volume]));
        assert_eq!(read["all"], BTreeSet::from([Via::EnvFrom]));
        assert_eq!(read["init"], BTreeSet::from([Via::Env]));
        assert_eq!(read["proj"], BTreeSet::from([Via::Projected]));
        assert!(Via::Env.needs_restart() && Via::EnvFrom.needs_restart());
        assert!(!Via::Volume.needs_restart() && !Via::Projected.needs_restart());
    }

    #[test]
    fn trimming_keeps_what_says_which_secrets_are_read() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": {"a": "b"}},
            "spec": {"selector": {}, "template": {"metadata": {"annotations": {"x": "y"}}, "spec": {
                "containers": [{"name": "a", "image": "big", "args": ["--many"],
                    "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "cred", "key": "token"}}},
                            {"name": "P", "value": "plain"}],
                    "envFrom": [{"secretRef": {"name": "all"}}, {"configMapRef": {"name": "cm"}}]}],
                "volumes": [{"name": "v", "secret": {"secretName": "vol"}}, {"name": "e", "emptyDir": {}}],
            }}},
            "status": {"replicas": 1},
        }))
        .unwrap();
        let before = workload_reads(&d);
        d.keep_secret_references();
        assert_eq!(workload_reads(&d), before);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "annotations": {"a": "b"}},
                "spec": {"selector": {}, "template": {"spec": {
                    "containers": [{"name": "a",
                        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "cred", "key": "token"}}}],
                        "envFrom": [{"secretRef": {"name": "all"}}]}],
                    "volumes": [{"name": "v", "secret": {"secretName": "vol"}}]}}}})
        );
    }

    #[test]
    fn consent_is_the_workloads_own_annotation() {
        let deployment = |annotations: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({"metadata": {"name": "web", "annotations": annotations}}))
                .unwrap()
        };
        let cases = [
            (json!({ANNOTATION_RESTART_ON_RENEWAL: "true"}), true),
            (
                json!({ANNOTATION_RESTART_ON_RENEWAL: "other, client"}),
                true,
            ),
            (json!({ANNOTATION_RESTART_ON_RENEWAL: "other"}), false),
            (json!({ANNOTATION_RESTART_ON_RENEWAL: "false"}), false),
            (json!({ANNOTATION_RESTART_ON_RENEWAL: "clients"}), false),
            (json!({}), false),
        ];
        for (annotations, expected) in cases {
            assert_eq!(
                restart_consented(&deployment(annotations.clone()), "client"),
                expected,
                "{annotations}"
            );
        }
    }

    #[test]
    fn the_record_is_per_access() {
        let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web",
            "annotations": {(started_with_annotation("client")): "2026-01-01T00:00:00Z"}}}))
        .unwrap();
        assert_eq!(
            started_with(&d, "client"),
            "2026-01-01T00:00:00Z".parse().ok()
        );
        assert_eq!(started_with(&d, "other"), None);
    }
}
