//! Admission: what the API server checks and defaults before storing an object. Built-in kinds
//! get their kind-specific rules from `admit_kind` (add a new built-in kind's rules there);
//! custom resources get schema pruning, defaulting, validation and CEL from their CRD.

use base64::Engine as _;
use serde_json::{Value, json};

use super::meta_str;
use crate::error::{ApiError, FieldError};
use crate::resources::ResourceType;
use crate::validation;

/// Kind-specific defaulting and checks for built-ins (a new built-in kind's rules go here).
pub(super) fn admit_kind(
    rt: &ResourceType,
    old: Option<&Value>,
    obj: &mut Value,
) -> Result<(), ApiError> {
    let name = meta_str(obj, "name").to_string();
    decodes(rt, obj)?;
    let mut errs = validation::validate_metadata(obj, rt.plural == "namespaces");
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "secrets") => {
            if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                for (k, v) in sd.as_object().into_iter().flatten() {
                    let text = v.as_str().unwrap_or_default();
                    obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
            if let Some(data) = obj["data"].as_object() {
                for (k, v) in data {
                    if v.as_str().is_none_or(|s| {
                        base64::engine::general_purpose::STANDARD.decode(s).is_err()
                    }) {
                        return Err(ApiError::bad_request(format!(
                            "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at key {k:?}"
                        )));
                    }
                }
            }
            if obj["type"].is_null() {
                obj["type"] = json!("Opaque");
            }
            if let Some(o) = old
                && o["type"] != obj["type"]
            {
                errs.push(FieldError::invalid(
                    "type",
                    &obj["type"],
                    "field is immutable",
                ));
            }
        }
        ("", "namespaces") if old.is_none() => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
        }
        ("", "pods") => {
            if old.is_none() && obj["status"].is_null() {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
            if obj["spec"]["containers"]
                .as_array()
                .is_none_or(|c| c.is_empty())
            {
                errs.push(FieldError::required("spec.containers", ""));
            }
        }
        ("apps", "deployments" | "statefulsets" | "replicasets") => {
            admit_workload(old, obj, &mut errs)
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let spec = &obj["spec"];
            let group = spec["group"].as_str().unwrap_or_default();
            let plural = spec["names"]["plural"].as_str().unwrap_or_default();
            if name != format!("{plural}.{group}") {
                errs.push(FieldError::invalid(
                    "metadata.name",
                    &json!(name),
                    "must be spec.names.plural+\".\"+spec.group",
                ));
            }
            if spec["versions"].as_array().is_none_or(|v| v.is_empty()) {
                errs.push(FieldError::required(
                    "spec.versions",
                    "must have exactly one version marked as storage version",
                ));
            }
            if spec["names"]["kind"].as_str().is_none_or(str::is_empty) {
                errs.push(FieldError::required("spec.names.kind", ""));
            }
            crate::cel_rules::check_crd(spec, &mut errs);
        }
        _ => {}
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&rt.group, &rt.kind, &name, &errs))
    }
}

/// Deployments, StatefulSets and ReplicaSets: `replicas` defaults to 1; the selector is required, must
/// select the template's labels and never changes; the template needs a container.
fn admit_workload(old: Option<&Value>, obj: &mut Value, errs: &mut Vec<FieldError>) {
    if obj["spec"]["replicas"].is_null() {
        obj["spec"]["replicas"] = json!(1);
    }
    let spec = &obj["spec"];
    let selector = &spec["selector"]["matchLabels"];
    match selector.as_object() {
        Some(wanted) if !wanted.is_empty() => {
            let labels = &spec["template"]["metadata"]["labels"];
            if wanted.iter().any(|(k, v)| &labels[k] != v) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    labels,
                    "`selector` does not match template `labels`",
                ));
            }
        }
        _ if spec["selector"]["matchExpressions"]
            .as_array()
            .is_some_and(|e| !e.is_empty()) => {}
        _ => errs.push(FieldError::required("spec.selector", "")),
    }
    if let Some(old) = old
        && old["spec"]["selector"] != spec["selector"]
    {
        errs.push(FieldError::invalid(
            "spec.selector",
            &spec["selector"],
            "field is immutable",
        ));
    }
    if spec["template"]["spec"]["containers"]
        .as_array()
        .is_none_or(|c| c.is_empty())
    {
        errs.push(FieldError::required("spec.template.spec.containers", ""));
    }
}

/// Schema pruning, defaulting, structural validation and CEL for custom resources.
pub(super) fn admit_custom(
    rt: &ResourceType,
    old: Option<&Value>,
    obj: &mut Value,
    strict: bool,
) -> Result<(), ApiError> {
    let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.as_ref()) else {
        return Ok(());
    };
    let name = meta_str(obj, "name").to_string();
    let pruned = validation::prune_and_default(schema, obj);
    let mut errs: Vec<FieldError> = Vec::new();
    if strict && !pruned.is_empty() {
        let unknown: Vec<String> = pruned
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            unknown.join(", "),
            kind = rt.kind,
            version = rt.version
        )));
    }
    errs.extend(validation::validate_schema(schema, obj));
    if errs.is_empty()
        && let Some(rules) = rt.custom.as_ref().and_then(|c| c.cel.as_ref())
    {
        errs.extend(rules.validate(obj, old));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&rt.group, &rt.kind, &name, &errs))
    }
}
/// The type checks the API server's JSON decoding makes before anything else (400 when a field
/// has the wrong JSON type): string maps in metadata, Secret data, object-valued spec/status.
pub(super) fn decodes(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let string_map = |v: &Value| {
        v.is_null()
            || v.as_object()
                .is_some_and(|m| m.values().all(Value::is_string))
    };
    let object = |v: &Value| v.is_null() || v.is_object();
    let bad = |field: &str| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: json: cannot unmarshal {field}",
            rt.kind, rt.version, rt.kind
        ))
    };
    let meta = &obj["metadata"];
    for field in ["labels", "annotations"] {
        if !string_map(&meta[field]) {
            return Err(bad(&format!("metadata.{field} (must be a map of strings)")));
        }
    }
    if rt.custom.is_none() {
        if !object(&obj["spec"]) || !object(&obj["status"]) {
            return Err(bad("spec/status (must be objects)"));
        }
        if matches!(rt.plural.as_str(), "secrets" | "configmaps")
            && !(string_map(&obj["data"])
                && string_map(&obj["stringData"])
                && string_map(&obj["binaryData"]))
        {
            return Err(bad("data (must be a map of strings)"));
        }
    }
    Ok(())
}

/// The structural schema managedFields follow (list-maps merge by key); built-ins have none here.
pub(super) fn schema_of(rt: &ResourceType) -> Option<&Value> {
    rt.custom.as_ref().and_then(|c| c.schema.as_ref())
}
