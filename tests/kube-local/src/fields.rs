//! managedFields and server-side apply: who owns which field, conflicts, and the apply merge.
//!
//! Simplification (documented in the README): lists are atomic (one owner for the whole list);
//! maps are tracked key by key, metadata only for labels, annotations, finalizers, ownerReferences.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

pub type Path = Vec<String>;

/// Which part of an object a write touches: the main resource or its status subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything but status (when the kind has a status subresource) and server-owned metadata.
    Main {
        status_separate: bool,
    },
    Status,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: BTreeSet<Path>,
}

impl Entry {
    fn scope_matches(&self, scope: Scope) -> bool {
        matches!(
            (scope, self.subresource.as_deref()),
            (Scope::Status, Some("status")) | (Scope::Main { .. }, None)
        )
    }

    pub fn to_json(&self) -> Value {
        let mut e = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": encode(&self.fields),
        });
        if let Some(s) = &self.subresource {
            e["subresource"] = json!(s);
        }
        e
    }

    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            manager: v["manager"].as_str()?.to_string(),
            operation: v["operation"].as_str().unwrap_or("Update").to_string(),
            api_version: v["apiVersion"].as_str().unwrap_or_default().to_string(),
            time: v["time"].as_str().unwrap_or_default().to_string(),
            subresource: v["subresource"].as_str().map(str::to_string),
            fields: decode(&v["fieldsV1"]),
        })
    }
}

pub fn read_entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().filter_map(Entry::from_json).collect())
        .unwrap_or_default()
}

pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(Entry::to_json)
        .collect();
    if let Some(meta) = obj["metadata"].as_object_mut() {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn encode(fields: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for seg in path {
            let child = node
                .entry(encode_segment(seg))
                .or_insert_with(|| Value::Object(Map::new()));
            match child.as_object_mut() {
                Some(m) => node = m,
                None => break,
            }
        }
    }
    Value::Object(root)
}

fn decode(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let children: Vec<(&String, &Value)> = v
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with("f:") || k.starts_with("k:"))
                    .collect()
            })
            .unwrap_or_default();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (k, child) in children {
            prefix.push(k.strip_prefix("f:").unwrap_or(k).to_string());
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// A path segment as fieldsV1 writes it: `f:name` for a field, `k:{...}` for a list-map item.
fn encode_segment(seg: &str) -> String {
    if seg.starts_with("k:") {
        seg.to_string()
    } else {
        format!("f:{seg}")
    }
}

/// The schema of a field of an object (properties, else additionalProperties).
fn child_schema<'a>(schema: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    let s = schema?;
    s["properties"]
        .get(key)
        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

/// The merge keys of a list whose schema says `x-kubernetes-list-type: map`.
fn list_map_keys(schema: Option<&Value>) -> Option<Vec<&str>> {
    let s = schema?;
    if s["x-kubernetes-list-type"].as_str() != Some("map") {
        return None;
    }
    Some(
        s["x-kubernetes-list-map-keys"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect(),
    )
}

/// `k:{"type":"Ready"}`: the segment naming one item of a list-map (keys sorted, as fieldsV1).
fn item_segment(item: &Value, keys: &[&str]) -> String {
    let key: std::collections::BTreeMap<&str, &Value> = keys
        .iter()
        .filter_map(|k| item.get(*k).map(|v| (*k, v)))
        .collect();
    format!("k:{}", serde_json::to_string(&key).unwrap_or_default())
}

fn find_item(list: &[Value], seg: &str) -> Option<usize> {
    let key: Map<String, Value> = serde_json::from_str(seg.strip_prefix("k:")?).ok()?;
    list.iter()
        .position(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
}

fn leaves(v: &Value, schema: Option<&Value>, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaves(child, child_schema(schema, k), prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            match list_map_keys(schema) {
                Some(keys) => {
                    for item in items {
                        prefix.push(item_segment(item, &keys));
                        leaves(item, schema.map(|s| &s["items"]), prefix, out);
                        prefix.pop();
                    }
                }
                None => {
                    out.insert(prefix.clone());
                }
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The tracked field paths of an object within a scope.
pub fn field_set(obj: &Value, scope: Scope, schema: Option<&Value>) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        let tracked = match (scope, k.as_str()) {
            (_, "apiVersion" | "kind") => false,
            (Scope::Status, key) => key == "status",
            (Scope::Main { status_separate }, "status") => !status_separate,
            (Scope::Main { .. }, "metadata") => {
                for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(mv) = v.get(mk) {
                        let mut prefix = vec!["metadata".to_string(), mk.to_string()];
                        match mv {
                            Value::Object(_) => leaves(mv, None, &mut prefix, &mut out),
                            _ => {
                                out.insert(prefix);
                            }
                        }
                    }
                }
                false
            }
            _ => true,
        };
        if tracked {
            leaves(v, child_schema(schema, k), &mut vec![k.clone()], &mut out);
        }
    }
    out
}

pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = match cur {
            Value::Array(list) => &list[find_item(list, seg)?],
            _ => cur.as_object()?.get(seg)?,
        };
    }
    Some(cur)
}

/// The value at `path`, for writing (list-map items found by their key).
fn navigate_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        cur = match cur {
            Value::Array(list) => {
                let i = find_item(list, seg)?;
                list.get_mut(i)?
            }
            _ => cur.as_object_mut()?.get_mut(seg)?,
        };
    }
    Some(cur)
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let Some(parent) = navigate_mut(v, parents) else {
        return;
    };
    match parent {
        Value::Array(list) => {
            if let Some(i) = find_item(list, last) {
                list.remove(i);
            }
        }
        _ => {
            if let Some(m) = parent.as_object_mut() {
                m.remove(last);
            }
        }
    }
    let item_emptied = parents.last().is_some_and(|p| p.starts_with("k:"))
        && parent.as_object().is_some_and(Map::is_empty);
    // A list-map item whose last owned field went is gone as a whole (its key went with it, so
    // it is found as the empty item of its list).
    if item_emptied
        && let Some(list) =
            navigate_mut(v, &parents[..parents.len() - 1]).and_then(Value::as_array_mut)
    {
        list.retain(|item| !item.as_object().is_some_and(Map::is_empty));
    }
}

/// Whether the applied path `applied` (a leaf of `config`) claims the owned path `owned`: the same
/// field, a descendant of a value it sets, or an ancestor of it. An empty map or list in the
/// config sets no value of its own, so it claims only itself, not what others own inside it.
fn claims(applied: &[String], owned: &[String], config: &Value) -> bool {
    if applied.len() < owned.len() && owned.starts_with(applied) {
        let container = get_path(config, applied).is_some_and(|v| {
            v.as_object().is_some_and(Map::is_empty) || v.as_array().is_some_and(Vec::is_empty)
        });
        return !container;
    }
    overlaps(applied, owned)
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// A field two managers disagree on.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub path: Path,
}

/// Merges `src` into `dst`: maps recursively, list-maps item by item (by their keys), every
/// other list and scalar replaced.
fn deep_merge(dst: &mut Value, src: &Value, schema: Option<&Value>) {
    if let (Some(keys), Value::Array(d), Value::Array(s)) = (list_map_keys(schema), &mut *dst, src)
    {
        let item_schema = schema.map(|sc| &sc["items"]);
        for item in s {
            match find_item(d, &item_segment(item, &keys)) {
                Some(i) => deep_merge(&mut d[i], item, item_schema),
                None => d.push(item.clone()),
            }
        }
        return;
    }
    match (dst.as_object_mut(), src.as_object()) {
        (Some(d), Some(s)) => {
            for (k, v) in s {
                let cs = child_schema(schema, k);
                match d.get_mut(k) {
                    Some(existing)
                        if (existing.is_object() && v.is_object())
                            || (existing.is_array()
                                && v.is_array()
                                && list_map_keys(cs).is_some()) =>
                    {
                        deep_merge(existing, v, cs)
                    }
                    _ => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *dst = src.clone(),
    }
}

/// The part of an apply configuration that a scope writes.
fn scoped_config(applied: &Value, scope: Scope) -> Value {
    let mut out = Map::new();
    if let Some(m) = applied.as_object() {
        for (k, v) in m {
            let keep = match (scope, k.as_str()) {
                (Scope::Status, "status") => true,
                (Scope::Status, _) => false,
                (Scope::Main { status_separate }, "status") => !status_separate,
                (Scope::Main { .. }, "metadata") => {
                    let mut meta = Map::new();
                    for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                        if let Some(mv) = v.get(mk) {
                            meta.insert(mk.to_string(), mv.clone());
                        }
                    }
                    if !meta.is_empty() {
                        out.insert("metadata".into(), Value::Object(meta));
                    }
                    false
                }
                (_, "apiVersion" | "kind") => false,
                _ => true,
            };
            if keep {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Server-side apply of `applied` by `manager` onto `current` (a full object, possibly a fresh
/// skeleton). Returns the merged object with its managedFields updated, or the conflicts.
/// Who writes, at which version and time, against which schema (None: lists are atomic).
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub now: &'a str,
    pub schema: Option<&'a Value>,
}

pub fn apply(
    current: &Value,
    applied: &Value,
    w: &Writer,
    force: bool,
    scope: Scope,
) -> Result<Value, Vec<Conflict>> {
    let Writer {
        manager,
        api_version,
        now,
        schema,
    } = *w;
    let config = scoped_config(applied, scope);
    let applied_set = field_set(&config, scope_for_config(scope), schema);
    let mut entries = read_entries(current);
    let subresource = matches!(scope, Scope::Status).then(|| "status".to_string());

    let mut conflicts = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.manager != manager && e.scope_matches(scope))
    {
        for owned in &e.fields {
            for p in applied_set.iter().filter(|p| claims(p, owned, &config)) {
                if get_path(current, p) != get_path(&config, p) {
                    conflicts.push(Conflict {
                        manager: e.manager.clone(),
                        path: p.clone(),
                    });
                }
            }
        }
    }
    conflicts.dedup();
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    if force {
        for e in entries
            .iter_mut()
            .filter(|e| e.manager != manager && e.scope_matches(scope))
        {
            e.fields
                .retain(|owned| !conflicts.iter().any(|c| claims(&c.path, owned, &config)));
        }
    }

    let mut merged = current.clone();
    let mine = entries
        .iter()
        .position(|e| e.manager == manager && e.operation == "Apply" && e.scope_matches(scope));
    if let Some(i) = mine {
        let previously: Vec<Path> = entries[i]
            .fields
            .iter()
            .filter(|p| !applied_set.iter().any(|a| claims(a, p, &config)))
            .cloned()
            .collect();
        for p in previously {
            let shared = entries.iter().enumerate().any(|(j, e)| {
                j != i && e.scope_matches(scope) && e.fields.iter().any(|o| overlaps(o, &p))
            });
            if !shared {
                remove_path(&mut merged, &p);
            }
        }
    }
    deep_merge(&mut merged, &config, schema);

    let entry = Entry {
        manager: manager.to_string(),
        operation: "Apply".to_string(),
        api_version: api_version.to_string(),
        time: now.to_string(),
        subresource,
        fields: applied_set,
    };
    match mine {
        Some(i) => {
            if entries[i].fields != entry.fields {
                entries[i] = entry;
            }
        }
        None => entries.push(entry),
    }
    write_entries(&mut merged, &entries);
    Ok(merged)
}

fn scope_for_config(scope: Scope) -> Scope {
    match scope {
        Scope::Main { status_separate } => Scope::Main { status_separate },
        Scope::Status => Scope::Status,
    }
}

/// Records a non-apply write (create, update, patch): changed fields move to `manager`.
pub fn track_update(old: Option<&Value>, new: &mut Value, w: &Writer, scope: Scope) {
    let Writer {
        manager,
        api_version,
        now,
        schema,
    } = *w;
    let mut entries = old.map(read_entries).unwrap_or_default();
    let new_set = field_set(new, scope, schema);
    let old_set = old.map(|o| field_set(o, scope, schema)).unwrap_or_default();
    let changed: BTreeSet<Path> = new_set
        .iter()
        .filter(|p| old.and_then(|o| get_path(o, p)) != get_path(new, p))
        .cloned()
        .collect();
    let removed: BTreeSet<Path> = old_set.difference(&new_set).cloned().collect();
    if changed.is_empty() && removed.is_empty() {
        write_entries(new, &entries);
        return;
    }
    for e in entries.iter_mut().filter(|e| e.scope_matches(scope)) {
        e.fields
            .retain(|p| !removed.contains(p) && !changed.iter().any(|c| overlaps(c, p)));
    }
    let subresource = matches!(scope, Scope::Status).then(|| "status".to_string());
    match entries
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == subresource)
    {
        Some(e) => {
            e.fields.extend(changed);
            e.time = now.to_string();
            e.api_version = api_version.to_string();
        }
        None if !changed.is_empty() => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Update".to_string(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource,
            fields: changed,
        }),
        None => {}
    }
    write_entries(new, &entries);
}

/// `.spec.x` rendering of a path, as conflict messages print it.
pub fn dotted(path: &[String]) -> String {
    path.iter()
        .map(|seg| {
            match seg
                .strip_prefix("k:")
                .and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok())
            {
                // A list-map item prints as `[type="Ready"]`, as structured-merge-diff prints it.
                Some(key) => format!(
                    "[{}]",
                    key.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                None => format!(".{seg}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope::Main {
        status_separate: true,
    };

    fn w(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            now: "t",
            schema: None,
        }
    }

    #[test]
    fn list_maps_merge_by_key_across_managers() {
        let schema = json!({"type": "object", "properties": {"status": {"type": "object", "properties": {"conditions": {
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
            "items": {"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}}}}}}}});
        let writer = |m| Writer {
            manager: m,
            api_version: "v1",
            now: "t",
            schema: Some(&schema),
        };
        let base = json!({"metadata": {"name": "x"}});
        let scope = Scope::Main {
            status_separate: false,
        };
        let a = apply(
            &base,
            &json!({"status": {"conditions": [{"type": "A", "status": "True"}]}}),
            &writer("one"),
            false,
            scope,
        )
        .unwrap_or_default();
        let b = apply(
            &a,
            &json!({"status": {"conditions": [{"type": "B", "status": "False"}]}}),
            &writer("two"),
            false,
            scope,
        )
        .unwrap_or_default();
        assert_eq!(
            b["status"]["conditions"],
            json!([{"type": "A", "status": "True"}, {"type": "B", "status": "False"}])
        );
        let entries = read_entries(&b);
        assert_eq!(
            entries[1].to_json()["fieldsV1"],
            json!({"f:status": {"f:conditions": {"k:{\"type\":\"B\"}": {"f:status": {}, "f:type": {}}}}})
        );
        // "one" changing B conflicts; dropping A removes only A.
        assert!(
            apply(
                &b,
                &json!({"status": {"conditions": [{"type": "B", "status": "True"}]}}),
                &writer("one"),
                false,
                scope
            )
            .is_err()
        );
        let dropped = apply(
            &b,
            &json!({"status": {"conditions": []}}),
            &writer("one"),
            false,
            scope,
        )
        .unwrap_or_default();
        assert_eq!(
            dropped["status"]["conditions"],
            json!([{"type": "B", "status": "False"}])
        );
    }

    #[test]
    fn apply_owns_removes_and_conflicts() {
        let base = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let a1 = json!({"metadata": {"labels": {"x": "1"}}, "data": {"a": "1", "b": "2"}});
        let v1 = apply(&base, &a1, &w("one"), false, MAIN).unwrap_or_default();
        assert_eq!(v1["data"], json!({"a": "1", "b": "2"}));
        // Dropping b from the next apply removes it; the label stays owned.
        let a2 = json!({"metadata": {"labels": {"x": "1"}}, "data": {"a": "1"}});
        let v2 = apply(&v1, &a2, &w("one"), false, MAIN).unwrap_or_default();
        assert_eq!(v2["data"], json!({"a": "1"}));
        // Another manager changing a conflicts unless forced; same value co-owns.
        let other = json!({"data": {"a": "9"}});
        let err = apply(&v2, &other, &w("two"), false, MAIN)
            .err()
            .unwrap_or_default();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "one".into(),
                path: vec!["data".into(), "a".into()]
            }]
        );
        let same = apply(&v2, &json!({"data": {"a": "1"}}), &w("two"), false, MAIN);
        assert!(same.is_ok());
        let forced = apply(&v2, &other, &w("two"), true, MAIN).unwrap_or_default();
        assert_eq!(forced["data"]["a"], "9");
        let owners: Vec<String> = read_entries(&forced)
            .iter()
            .map(|e| e.manager.clone())
            .collect();
        assert_eq!(owners, vec!["one".to_string(), "two".to_string()]);
        assert_eq!(dotted(&err_path()), ".data.a");
    }

    fn err_path() -> Path {
        vec!["data".into(), "a".into()]
    }

    #[test]
    fn fields_v1_round_trip() {
        let obj = json!({"metadata": {"labels": {"a": "b"}}, "spec": {"x": 1, "list": [1, 2]}});
        let set = field_set(&obj, MAIN, None);
        assert_eq!(decode(&encode(&set)), set);
        assert_eq!(
            encode(&set),
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:list": {}, "f:x": {}}})
        );
    }

    #[test]
    fn update_moves_ownership() {
        let base = json!({"metadata": {"name": "c"}});
        let v1 =
            apply(&base, &json!({"data": {"a": "1"}}), &w("one"), false, MAIN).unwrap_or_default();
        let mut v2 = v1.clone();
        v2["data"]["a"] = json!("2");
        track_update(Some(&v1), &mut v2, &w("editor"), MAIN);
        let entries = read_entries(&v2);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager, "editor");
    }
}
