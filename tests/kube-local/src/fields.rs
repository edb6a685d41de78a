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
                .entry(format!("f:{seg}"))
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
            .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
            .unwrap_or_default();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (k, child) in children {
            prefix.push(k[2..].to_string());
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn leaves(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The tracked field paths of an object within a scope.
pub fn field_set(obj: &Value, scope: Scope) -> BTreeSet<Path> {
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
                            Value::Object(_) => leaves(mv, &mut prefix, &mut out),
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
            leaves(v, &mut vec![k.clone()], &mut out);
        }
    }
    out
}

pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        match cur.as_object_mut().and_then(|m| m.get_mut(seg)) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
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

/// Merges `src` into `dst`: maps recursively, everything else replaced (lists are atomic).
fn deep_merge(dst: &mut Value, src: &Value) {
    match (dst.as_object_mut(), src.as_object()) {
        (Some(d), Some(s)) => {
            for (k, v) in s {
                match d.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
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
pub fn apply(
    current: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    api_version: &str,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let config = scoped_config(applied, scope);
    let applied_set = field_set(&config, scope_for_config(scope));
    let mut entries = read_entries(current);
    let subresource = matches!(scope, Scope::Status).then(|| "status".to_string());

    let mut conflicts = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.manager != manager && e.scope_matches(scope))
    {
        for owned in &e.fields {
            for p in applied_set.iter().filter(|p| overlaps(p, owned)) {
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
                .retain(|owned| !conflicts.iter().any(|c| overlaps(&c.path, owned)));
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
            .filter(|p| !applied_set.iter().any(|a| overlaps(a, p)))
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
    deep_merge(&mut merged, &config);

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
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    scope: Scope,
    api_version: &str,
    now: &str,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let new_set = field_set(new, scope);
    let old_set = old.map(|o| field_set(o, scope)).unwrap_or_default();
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
    path.iter().map(|s| format!(".{s}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope::Main {
        status_separate: true,
    };

    #[test]
    fn apply_owns_removes_and_conflicts() {
        let base = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let a1 = json!({"metadata": {"labels": {"x": "1"}}, "data": {"a": "1", "b": "2"}});
        let v1 = apply(&base, &a1, "one", false, MAIN, "v1", "t").unwrap_or_default();
        assert_eq!(v1["data"], json!({"a": "1", "b": "2"}));
        // Dropping b from the next apply removes it; the label stays owned.
        let a2 = json!({"metadata": {"labels": {"x": "1"}}, "data": {"a": "1"}});
        let v2 = apply(&v1, &a2, "one", false, MAIN, "v1", "t").unwrap_or_default();
        assert_eq!(v2["data"], json!({"a": "1"}));
        // Another manager changing a conflicts unless forced; same value co-owns.
        let other = json!({"data": {"a": "9"}});
        let err = apply(&v2, &other, "two", false, MAIN, "v1", "t")
            .err()
            .unwrap_or_default();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "one".into(),
                path: vec!["data".into(), "a".into()]
            }]
        );
        let same = apply(
            &v2,
            &json!({"data": {"a": "1"}}),
            "two",
            false,
            MAIN,
            "v1",
            "t",
        );
        assert!(same.is_ok());
        let forced = apply(&v2, &other, "two", true, MAIN, "v1", "t").unwrap_or_default();
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
        let set = field_set(&obj, MAIN);
        assert_eq!(decode(&encode(&set)), set);
        assert_eq!(
            encode(&set),
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:list": {}, "f:x": {}}})
        );
    }

    #[test]
    fn update_moves_ownership() {
        let base = json!({"metadata": {"name": "c"}});
        let v1 = apply(
            &base,
            &json!({"data": {"a": "1"}}),
            "one",
            false,
            MAIN,
            "v1",
            "t",
        )
        .unwrap_or_default();
        let mut v2 = v1.clone();
        v2["data"]["a"] = json!("2");
        track_update(Some(&v1), &mut v2, "editor", MAIN, "v1", "t");
        let entries = read_entries(&v2);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager, "editor");
    }
}
