//! Patch formats: JSON merge patch, JSON patch, and strategic merge patch as kubectl sends it.

use serde_json::{Map, Value};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }
}

pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(doc, &ops).map_err(|e| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    })
}

pub fn merge_patch(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// The merge key of the lists built-in kinds merge by (Go struct tags `patchMergeKey`).
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "secrets" => Some("name"),
        "ports" => Some("containerPort"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// Primitive lists with `patchStrategy: merge` (set union).
fn merges_as_set(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge patch for built-in kinds: merge patch plus keyed list merges and the
/// `$patch`, `$setElementOrder`, `$retainKeys`, `$deleteFromPrimitiveList` directives.
pub fn strategic_merge(doc: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *doc = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = p.clone();
        replaced.remove("$patch");
        *doc = Value::Object(replaced);
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Some(target) = doc.as_object_mut() else {
        return;
    };
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()) || p.contains_key(k));
    }
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) = (
                target.get_mut(field).and_then(Value::as_array_mut),
                v.as_array(),
            ) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(o) if o.get("$patch").and_then(Value::as_str) == Some("delete") => {
                target.remove(k);
            }
            Value::Object(_) => strategic_merge(target.entry(k.clone()).or_insert(Value::Null), v),
            Value::Array(items) => {
                let existing = target.get(k).and_then(Value::as_array).cloned();
                match (merge_key(k), existing) {
                    (Some(key), Some(mut list)) => {
                        for item in items {
                            let id = item.get(key);
                            let pos = list.iter().position(|x| id.is_some() && x.get(key) == id);
                            let delete =
                                item.get("$patch").and_then(Value::as_str) == Some("delete");
                            match (pos, delete) {
                                (Some(i), true) => {
                                    list.remove(i);
                                }
                                (Some(i), false) => strategic_merge(&mut list[i], item),
                                (None, false) => {
                                    let mut fresh = Value::Null;
                                    strategic_merge(&mut fresh, item);
                                    list.push(fresh);
                                }
                                (None, true) => {}
                            }
                        }
                        target.insert(k.clone(), Value::Array(list));
                    }
                    (None, Some(mut list)) if merges_as_set(k) => {
                        for item in items {
                            if !list.contains(item) {
                                list.push(item.clone());
                            }
                        }
                        target.insert(k.clone(), Value::Array(list));
                    }
                    _ => {
                        target.insert(k.clone(), v.clone());
                    }
                }
            }
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_lists_by_key() {
        let mut doc = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}, "metadata": {"finalizers": ["x"]}});
        let patch = json!({
            "$setElementOrder/containers": [{"name": "a"}],
            "spec": {"containers": [{"name": "a", "image": "2"}, {"name": "b", "$patch": "delete"}, {"name": "c", "image": "3"}]},
            "metadata": {"finalizers": ["y"], "labels": {"l": "v"}}
        });
        strategic_merge(&mut doc, &patch);
        assert_eq!(
            doc["spec"]["containers"],
            json!([{"name": "a", "image": "2"}, {"name": "c", "image": "3"}])
        );
        assert_eq!(doc["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(doc["metadata"]["labels"]["l"], "v");
    }

    #[test]
    fn json_patch_errors_are_422() {
        let mut doc = json!({"a": 1});
        assert!(
            json_patch(
                &mut doc,
                &json!([{"op": "replace", "path": "/a", "value": 2}])
            )
            .is_ok()
        );
        assert_eq!(doc["a"], 2);
        let err = json_patch(&mut doc, &json!([{"op": "test", "path": "/a", "value": 3}]))
            .err()
            .map(|e| e.code);
        assert_eq!(err, Some(422));
    }
}
