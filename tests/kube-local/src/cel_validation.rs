//! A CRD version's CEL rules run on each write: compiled once when the CRD is stored, as the API
//! server does, not on every write (compiling them per write was half of this server's CPU under
//! the operator benchmark), and ratcheted on updates as the API server does since 1.30
//! (KEP-4008: an error on a value the update did not change is ignored; transition rules, those
//! reading `oldSelf`, are never ratcheted).
//!
//! Differs from the API server: ratcheting here is by top-level property (`spec`, `status`): an
//! unchanged one is not evaluated at all, a changed one is evaluated whole (the root's own rules
//! run on every write). The API server
//! correlates deeper, so here an update that changes `spec.a` still fails on an invalid
//! unchanged `spec.b` that the API server would let through.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use crate::cel_patterns::{ConstantPatterns, Failure};
use crate::error::FieldError;

/// The compiled rules of one schema.
pub struct CelRules {
    compiled: kube_cel::CompiledSchema,
    /// Rules that only match a constant pattern, run here rather than by kube-cel.
    patterns: ConstantPatterns,
    root: Option<RootRules>,
    /// Top-level properties with a transition rule somewhere below them.
    transitions: BTreeSet<String>,
}

/// The root schema's own rules, compiled without those below it: they run on every write.
struct RootRules {
    compiled: kube_cel::CompiledSchema,
    /// The top-level properties they read (`self.metadata`, `self.spec`); `None`: the whole
    /// object. kube-cel converts every value a rule could see up front, where the API server
    /// converts lazily what a rule reads: `size(self.metadata.name) <= 63` must not cost a
    /// conversion of the whole status.
    reads: Option<BTreeSet<String>>,
}

impl fmt::Debug for CelRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CelRules").finish_non_exhaustive()
    }
}

impl CelRules {
    /// `None` when the schema has no rule.
    pub fn compile(schema: &Value) -> Option<Self> {
        if !schema.to_string().contains("x-kubernetes-validations") {
            return None;
        }
        let mut schema = schema.clone();
        let patterns = ConstantPatterns::take_from(&mut schema);
        Some(Self {
            patterns,
            ..Self::compile_in_kube_cel(&schema)
        })
    }

    /// Every rule of `schema` run by kube-cel.
    fn compile_in_kube_cel(schema: &Value) -> Self {
        let transitions = schema["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, child)| child.to_string().contains("oldSelf"))
            .map(|(key, _)| key.clone())
            .collect();
        let root = schema["x-kubernetes-validations"]
            .as_array()
            .filter(|rules| !rules.is_empty())
            .map(|rules| RootRules {
                compiled: kube_cel::compile_schema(&root_rules_only(schema)),
                reads: read_properties(rules),
            });
        Self {
            compiled: kube_cel::compile_schema(schema),
            patterns: ConstantPatterns::default(),
            root,
            transitions,
        }
    }

    /// The rules' errors for `obj` (with `old` on an update).
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let failures = if obj.is_object() {
            self.by_property(obj, old)
        } else {
            run(&self.compiled, obj, old)
        };
        failures
            .into_iter()
            .map(|e| {
                let field = if e.field_path.is_empty() {
                    "<nil>".to_string()
                } else {
                    e.field_path.clone()
                };
                let mut at = obj;
                for seg in e.field_path.split('.').filter(|s| !s.is_empty()) {
                    at = &at[seg];
                }
                FieldError::invalid(&field, &crate::validation::shown(at), e.message)
            })
            .collect()
    }

    /// The root's rules on what they read, then each top-level property on its own: on an
    /// update only the changed ones (and those with a transition rule).
    fn by_property(&self, obj: &Value, old: Option<&Value>) -> Vec<Failure> {
        let mut failures = match &self.root {
            Some(root) => {
                let old = old.map(|old| visible(old, root.reads.as_ref()));
                run(
                    &root.compiled,
                    &visible(obj, root.reads.as_ref()),
                    old.as_ref(),
                )
            }
            None => Vec::new(),
        };
        let keys: BTreeSet<&str> = (self.compiled.properties.keys().map(String::as_str))
            .chain(self.patterns.properties())
            .collect();
        for key in keys {
            let compiled = self.compiled.properties.get(key);
            let previous = old.and_then(|old| old.get(key));
            let Some(value) = obj.get(key) else {
                // Absent: the whole walk would only default it; let it.
                if compiled.is_some_and(|c| c.default.is_some()) {
                    return self.whole(obj, old);
                }
                continue;
            };
            let unchanged = old.is_some() && Some(value) == previous;
            if unchanged && !self.transitions.contains(key) {
                continue;
            }
            if let Some(compiled) = compiled {
                // Borrowed but for metadata, which rules see only in part.
                let (value, previous) = if key == "metadata" {
                    (
                        Cow::Owned(visible_metadata(value)),
                        previous.map(|p| Cow::Owned(visible_metadata(p))),
                    )
                } else {
                    (Cow::Borrowed(value), previous.map(Cow::Borrowed))
                };
                failures.extend(run(compiled, &value, previous.as_deref()).into_iter().map(
                    |mut e| {
                        e.field_path = under(key, &e.field_path);
                        e
                    },
                ));
            }
            self.patterns.check(key, value, &mut failures);
        }
        failures
    }

    /// Every rule on the whole object.
    fn whole(&self, obj: &Value, old: Option<&Value>) -> Vec<Failure> {
        let old = old.map(|old| visible(old, None));
        let mut failures = run(&self.compiled, &visible(obj, None), old.as_ref());
        for key in self.patterns.properties() {
            if let Some(value) = obj.get(key) {
                self.patterns.check(key, value, &mut failures);
            }
        }
        failures
    }
}

/// What rules see of `obj`: the properties in `reads` (all if `None`), and of its metadata only
/// what the API server shows CEL, the name and generateName.
fn visible(obj: &Value, reads: Option<&BTreeSet<String>>) -> Value {
    let Some(map) = obj.as_object() else {
        return obj.clone();
    };
    map.iter()
        .filter(|(key, _)| reads.is_none_or(|reads| reads.contains(*key)))
        .map(|(key, value)| {
            let value = if key == "metadata" {
                visible_metadata(value)
            } else {
                value.clone()
            };
            (key.clone(), value)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn visible_metadata(meta: &Value) -> Value {
    let mut shown = serde_json::Map::new();
    for key in ["name", "generateName"] {
        if let Some(value) = meta.get(key) {
            shown.insert(key.to_string(), value.clone());
        }
    }
    shown.into()
}

/// The top-level properties `rules` read as `self.x` or `oldSelf.x`; `None` when one uses
/// `self` (or `oldSelf`) otherwise, so it may read anything.
fn read_properties(rules: &[Value]) -> Option<BTreeSet<String>> {
    let mut reads = BTreeSet::new();
    for rule in rules {
        for text in [&rule["rule"], &rule["messageExpression"]]
            .into_iter()
            .filter_map(Value::as_str)
        {
            for variable in ["self", "oldSelf"] {
                for (at, _) in text.match_indices(variable) {
                    let before = text[..at].chars().next_back();
                    if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    let rest = &text[at + variable.len()..];
                    let Some(field) = rest.strip_prefix('.') else {
                        if rest.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                            continue; // a longer identifier (`selfLink`)
                        }
                        return None;
                    };
                    let name: String = field
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    reads.insert(name);
                }
            }
        }
    }
    Some(reads)
}

fn run(compiled: &kube_cel::CompiledSchema, obj: &Value, old: Option<&Value>) -> Vec<Failure> {
    thread_local! {
        static VALIDATOR: kube_cel::Validator = kube_cel::Validator::new();
    }
    let errors =
        VALIDATOR.with(
            |validator| match validator.validate_compiled(compiled, obj, old) {
                Ok(()) => Vec::new(),
                Err(errors) => errors.into_vec(),
            },
        );
    errors
        .into_iter()
        .map(|e| Failure {
            field_path: e.field_path,
            message: e.message,
        })
        .collect()
}

/// `schema` without the rules below its root.
fn root_rules_only(schema: &Value) -> Value {
    fn strip(node: &mut Value) {
        match node {
            Value::Object(map) => {
                map.remove("x-kubernetes-validations");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut root = schema.clone();
    let rules = root["x-kubernetes-validations"].take();
    strip(&mut root);
    root["x-kubernetes-validations"] = rules;
    root
}

/// `path` (relative to property `key`) from the root.
fn under(key: &str, path: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else if path.starts_with('[') {
        format!("{key}{path}")
    } else {
        format!("{key}.{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> CelRules {
        CelRules::compile(&json!({"type": "object", "properties": {
            "spec": {"type": "object",
                "x-kubernetes-validations": [{"rule": "self.a < self.b", "message": "a must be below b"}],
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"},
                    "name": {"type": "string", "x-kubernetes-validations":
                        [{"rule": "self.matches('^[a-z]+$')", "message": "lowercase"}]}}},
            "status": {"type": "object", "properties": {"n": {"type": "integer",
                "x-kubernetes-validations": [{"rule": "self >= oldSelf", "message": "n only grows"}]}}},
        }}))
        .unwrap()
    }

    #[test]
    fn rules_run_on_create() {
        let rules = rules();
        assert!(
            rules
                .validate(&json!({"spec": {"a": 1, "b": 2}}), None)
                .is_empty()
        );
        let errs = rules.validate(&json!({"spec": {"a": 3, "b": 2, "name": "X"}}), None);
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec", "spec.name"], "{errs:?}");
        assert!(errs[0].to_string().contains("a must be below b"));
    }

    #[test]
    fn a_changed_property_is_checked_with_its_path_from_the_root() {
        let old = json!({"spec": {"a": 1, "b": 2}});
        let errs = rules().validate(&json!({"spec": {"a": 1, "b": 2, "name": "X"}}), Some(&old));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.name");
        assert!(errs[0].to_string().contains("lowercase"));
    }

    #[test]
    fn an_unchanged_invalid_property_is_ratcheted() {
        // Stored before a rule was added: a status update still goes through.
        let invalid = json!({"a": 3, "b": 2});
        let old = json!({"spec": invalid, "status": {"n": 1}});
        let obj = json!({"spec": invalid, "status": {"n": 2}});
        assert!(rules().validate(&obj, Some(&old)).is_empty());
    }

    #[test]
    fn transition_rules_are_never_ratcheted() {
        let old = json!({"spec": {"a": 1, "b": 2}, "status": {"n": 5}});
        let errs = rules().validate(
            &json!({"spec": {"a": 1, "b": 2}, "status": {"n": 4}}),
            Some(&old),
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "status.n");
    }

    #[test]
    fn root_rules_see_the_whole_object_on_every_update() {
        let rules = CelRules::compile(&json!({"type": "object",
            "x-kubernetes-validations": [{"rule": "!has(self.spec) || has(self.status)", "message": "needs status"}],
            "properties": {"spec": {"type": "object", "properties": {"a": {"type": "integer",
                "x-kubernetes-validations": [{"rule": "self > 0", "message": "positive"}]}}},
                "status": {"type": "object"}}}))
        .unwrap();
        let old = json!({"spec": {"a": 0}});
        let errs = rules.validate(&json!({"spec": {"a": 0}}), Some(&old));
        // The root rule, once; the unchanged spec's own rule is ratcheted.
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].to_string().contains("needs status"));
        let errs = rules.validate(&json!({"spec": {"a": -1}}), Some(&old));
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn root_rules_see_only_the_name_and_generate_name_of_metadata() {
        let rules = CelRules::compile(&json!({"type": "object",
            "x-kubernetes-validations": [
                {"rule": "size(self.metadata.name) <= 5", "message": "short name"},
                {"rule": "!has(self.metadata.labels)", "message": "labels hidden"}],
            "properties": {"spec": {"type": "object"}}}))
        .unwrap();
        let obj = json!({"metadata": {"name": "too-long", "labels": {"a": "b"}}, "spec": {}});
        let errs = rules.validate(&obj, None);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].to_string().contains("short name"));
    }

    #[test]
    fn what_root_rules_read() {
        let reads = |rules: serde_json::Value| {
            read_properties(rules.as_array().unwrap()).map(|r| r.into_iter().collect::<Vec<_>>())
        };
        assert_eq!(
            reads(json!([{"rule": "size(self.metadata.name) <= 63"},
                {"rule": "has(self.spec) || oldSelf.status.x == 1", "messageExpression": "self.kind"}])),
            Some(vec![
                "kind".into(),
                "metadata".into(),
                "spec".into(),
                "status".into()
            ])
        );
        assert_eq!(reads(json!([{"rule": "self == oldSelf"}])), None);
        assert_eq!(reads(json!([{"rule": "self['spec'] != null"}])), None);
    }

    /// The operator's CRD, whose constant patterns run outside kube-cel: the same errors for
    /// every value the patterns check as with every rule in kube-cel.
    #[test]
    fn constant_patterns_fail_as_kube_cel_does() {
        let crd: Value = serde_yaml::from_str(include_str!(
            "../../../crds/inference-access.io_inferenceaccesses.yaml"
        ))
        .unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let split = CelRules::compile(schema).unwrap();
        let whole = CelRules::compile_in_kube_cel(schema);
        let mut left = schema.clone();
        ConstantPatterns::take_from(&mut left);
        let calls = |schema: &Value| schema.to_string().matches(".matches(").count();
        // Every pattern of the CRD is a constant.
        assert_eq!((calls(schema), calls(&left)), (17, 0));
        let valid = json!({"metadata": {"name": "a"}, "spec": {
            "inferenceService": {"name": "iris", "namespace": "team-a"},
            "serviceAccount": {"name": "iris-client"},
            "secretName": "iris-access",
            "gateway": {"url": "http://gateway.local:8080"},
            "mesh": {"probePaths": ["/healthz", "/ready"], "userIdHeader": "kubeflow-userid"},
            "token": {"duration": "1h"},
            "auth": {"dexSession": {"loginURL": "https://dex.local/dex",
                "credentialsSecret": {"name": "dex-user", "usernameKey": "user", "passwordKey": "pass"}}},
        }});
        let errors = |rules: &CelRules, obj: &Value| {
            let mut errs: Vec<String> = rules
                .validate(obj, None)
                .iter()
                .map(ToString::to_string)
                .collect();
            errs.sort();
            errs
        };
        assert_eq!(errors(&split, &valid), errors(&whole, &valid));
        for (path, bad) in [
            ("/spec/inferenceService/name", json!("Iris")),
            ("/spec/inferenceService/namespace", json!("team_a")),
            ("/spec/serviceAccount/name", json!("-client")),
            ("/spec/secretName", json!("x".repeat(254))),
            ("/spec/gateway/url", json!("gateway.local")),
            ("/spec/mesh/probePaths", json!(["/ok", "no-slash"])),
            ("/spec/mesh/probePaths", json!(["/ok", "/a/../b"])),
            ("/spec/token/duration", json!("5m")),
            ("/spec/token/duration", json!("1d")),
            (
                "/spec/token",
                json!({"duration": "1h", "renewBefore": "2h"}),
            ),
            (
                "/spec/token",
                json!({"duration": "1h", "renewBefore": "0s"}),
            ),
            (
                "/spec/token",
                json!({"duration": "1h", "renewBefore": "soon"}),
            ),
            (
                "/spec/token",
                json!({"duration": "1h", "renewBefore": null}),
            ),
            ("/spec/mesh/userIdHeader", json!("Kubeflow-Userid")),
            ("/spec/auth/dexSession/loginURL", json!("ftp://dex")),
            ("/spec/auth/dexSession/credentialsSecret/name", json!("Dex")),
            (
                "/spec/auth/dexSession/credentialsSecret/usernameKey",
                json!("us er"),
            ),
            (
                "/spec/auth/dexSession/credentialsSecret/passwordKey",
                json!(""),
            ),
        ] {
            let mut obj = valid.clone();
            *obj.pointer_mut(path).unwrap() = bad;
            let failed = errors(&split, &obj);
            assert!(!failed.is_empty(), "{path}");
            assert_eq!(failed, errors(&whole, &obj), "{path}");
            // An update that leaves spec as it was is ratcheted.
            assert!(split.validate(&obj, Some(&obj)).is_empty(), "{path}");
        }
        assert!(errors(&split, &valid).is_empty());
        // The API server runs no rule on a null value; kube-cel fails `matches` on it.
        let mut obj = valid.clone();
        obj["spec"]["serviceAccount"]["name"] = Value::Null;
        assert!(errors(&split, &obj).is_empty());
        assert!(!errors(&whole, &obj).is_empty());
    }

    #[test]
    fn a_schema_without_rules_compiles_to_nothing() {
        assert!(CelRules::compile(&json!({"type": "object"})).is_none());
    }
}
