//! The stored objects and what they are looked up by: kind and namespace (ordered as lists are),
//! uid, owner uid (garbage collection) and label (selector lists, the stand-in controllers).
//! Every index is kept in step by `put` and `remove`, so no lookup walks objects it does not
//! return (beyond those a selector's other requirements then filter out).
//!
//! Objects are kept as JSON text ([`Obj`]) with the few fields the indexes, selectors and the
//! collector read: a parsed `serde_json::Value` costs about ten times the memory (every JSON
//! object is a B-tree node of at least 600 bytes), and responses and watch events send the text
//! as it is. Writes parse the one object they change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::Value;

use crate::selectors::Filter;

/// Where an object is stored: storage key (`plural` or `plural.group`), namespace (empty for
/// cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjRef {
    pub key: String,
    pub ns: String,
    pub name: String,
}

/// Names by namespace, both ordered: the order lists return objects in.
#[derive(Debug, Default)]
struct NameSet(BTreeMap<String, BTreeSet<String>>);

impl NameSet {
    fn insert(&mut self, ns: &str, name: &str) {
        self.0
            .entry(ns.to_string())
            .or_default()
            .insert(name.to_string());
    }

    fn remove(&mut self, ns: &str, name: &str) {
        if let Some(names) = self.0.get_mut(ns) {
            names.remove(name);
            if names.is_empty() {
                self.0.remove(ns);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn count(&self, ns: Option<&str>) -> usize {
        match ns {
            Some(ns) => self.0.get(ns).map_or(0, BTreeSet::len),
            None => self.0.values().map(BTreeSet::len).sum(),
        }
    }

    fn iter<'a>(
        &'a self,
        ns: Option<&'a str>,
        after: Option<&'a (String, String)>,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        ordered(&self.0, ns, after, |names, bound| {
            names
                .range::<str, _>((bound, Bound::Unbounded))
                .map(String::as_str)
        })
    }
}

/// Walks a namespace → ordered-names map in list order, optionally in one namespace and after a
/// continue position, without touching the namespaces before it.
fn ordered<'a, M, I, F>(
    map: &'a BTreeMap<String, M>,
    ns: Option<&'a str>,
    after: Option<&'a (String, String)>,
    names: F,
) -> Box<dyn Iterator<Item = (&'a str, I::Item)> + 'a>
where
    M: 'a,
    I: Iterator + 'a,
    F: Fn(&'a M, Bound<&'a str>) -> I + Copy + 'a,
{
    let start: Bound<&str> = match (ns, after) {
        (_, Some((after_ns, _))) => match ns {
            Some(n) if n > after_ns.as_str() => Bound::Included(n),
            _ => Bound::Included(after_ns.as_str()),
        },
        (Some(n), None) => Bound::Included(n),
        (None, None) => Bound::Unbounded,
    };
    Box::new(
        map.range::<str, _>((start, Bound::Unbounded))
            .take_while(move |(n, _)| ns.is_none_or(|want| want == n.as_str()))
            .flat_map(move |(n, inner)| {
                let from = match after {
                    Some((after_ns, after_name)) if after_ns == n => {
                        Bound::Excluded(after_name.as_str())
                    }
                    _ => Bound::Unbounded,
                };
                names(inner, from).map(move |item| (n.as_str(), item))
            }),
    )
}

/// One namespace's objects of a kind, by name.
type Names = BTreeMap<String, Arc<Obj>>;

#[derive(Debug, Default)]
struct Kind {
    /// namespace → name → object.
    objects: BTreeMap<String, Names>,
    len: usize,
    /// label key → value → objects carrying that label.
    labels: HashMap<String, HashMap<String, NameSet>>,
}

impl Kind {
    fn count(&self, ns: Option<&str>) -> usize {
        match ns {
            Some(ns) => self.objects.get(ns).map_or(0, BTreeMap::len),
            None => self.len,
        }
    }
}

#[derive(Debug, Default)]
pub struct Objects {
    kinds: HashMap<String, Kind>,
    /// uid → where the object is.
    uids: HashMap<String, ObjRef>,
    /// owner uid → the objects whose ownerReferences name it (whether or not it still exists).
    dependents: HashMap<String, BTreeSet<ObjRef>>,
}

/// One ownerReference as the collector reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: Box<str>,
    /// `blockOwnerDeletion: true`: a foreground deletion of the owner waits for this object.
    pub blocks: bool,
}

/// One stored version of an object: its JSON text and what is read without parsing it.
#[derive(Debug, PartialEq)]
pub struct Obj {
    json: Box<str>,
    rv: u64,
    api_version: Box<str>,
    namespace: Box<str>,
    name: Box<str>,
    uid: Box<str>,
    labels: Box<[(Box<str>, Box<str>)]>,
    owners: Box<[Owner]>,
    terminating: bool,
}

impl Obj {
    pub fn new(v: &Value) -> Self {
        let meta = &v["metadata"];
        let text = |v: &Value| -> Box<str> { v.as_str().unwrap_or_default().into() };
        Self {
            json: v.to_string().into(),
            rv: super::object_rv(v),
            api_version: text(&v["apiVersion"]),
            namespace: text(&meta["namespace"]),
            name: text(&meta["name"]),
            uid: text(&meta["uid"]),
            labels: meta["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str().into(), v.into())))
                .collect(),
            owners: meta["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    r["uid"].as_str().map(|uid| Owner {
                        uid: uid.into(),
                        blocks: r["blockOwnerDeletion"].as_bool() == Some(true),
                    })
                })
                .collect(),
            terminating: meta["deletionTimestamp"].is_string(),
        }
    }

    pub fn json(&self) -> &str {
        &self.json
    }

    /// The object parsed (its text is always valid JSON).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    pub fn owners(&self) -> &[Owner] {
        &self.owners
    }

    pub fn is_terminating(&self) -> bool {
        self.terminating
    }

    /// Whether `filter` selects this object; only field selectors need it parsed.
    pub fn matches(&self, filter: &Filter) -> bool {
        filter.matches_with(&self.namespace, |k| self.label(k), || self.value())
    }
}

impl Objects {
    pub fn get(&self, key: &str, ns: &str, name: &str) -> Option<&Arc<Obj>> {
        self.kinds.get(key)?.objects.get(ns)?.get(name)
    }

    /// Stores `obj` at `at` (replacing what was there) and returns the previous object.
    pub fn put(&mut self, at: &ObjRef, obj: Arc<Obj>) -> Option<Arc<Obj>> {
        let old = self.take(at);
        let kind = self.kinds.entry(at.key.clone()).or_default();
        for (k, v) in obj.labels.iter() {
            kind.labels
                .entry(k.to_string())
                .or_default()
                .entry(v.to_string())
                .or_default()
                .insert(&at.ns, &at.name);
        }
        if !obj.uid.is_empty() {
            self.uids.insert(obj.uid.to_string(), at.clone());
        }
        for owner in obj.owners.iter() {
            self.dependents
                .entry(owner.uid.to_string())
                .or_default()
                .insert(at.clone());
        }
        kind.len += 1;
        kind.objects
            .entry(at.ns.clone())
            .or_default()
            .insert(at.name.clone(), obj);
        old
    }

    /// Removes the object at `at`, returning it.
    pub fn remove(&mut self, at: &ObjRef) -> Option<Arc<Obj>> {
        self.take(at)
    }

    fn take(&mut self, at: &ObjRef) -> Option<Arc<Obj>> {
        let kind = self.kinds.get_mut(&at.key)?;
        let names = kind.objects.get_mut(&at.ns)?;
        let old = names.remove(&at.name)?;
        if names.is_empty() {
            kind.objects.remove(&at.ns);
        }
        kind.len -= 1;
        for (k, v) in old.labels.iter() {
            if let Some(values) = kind.labels.get_mut(&**k) {
                if let Some(set) = values.get_mut(&**v) {
                    set.remove(&at.ns, &at.name);
                    if set.is_empty() {
                        values.remove(&**v);
                    }
                }
                if values.is_empty() {
                    kind.labels.remove(&**k);
                }
            }
        }
        if self.uids.get(old.uid()) == Some(at) {
            self.uids.remove(old.uid());
        }
        for owner in old.owners.iter() {
            if let Some(deps) = self.dependents.get_mut(&*owner.uid) {
                deps.remove(at);
                if deps.is_empty() {
                    self.dependents.remove(&*owner.uid);
                }
            }
        }
        Some(old)
    }

    /// Whether an object with this uid exists.
    pub fn has_uid(&self, uid: &str) -> bool {
        self.uids.contains_key(uid)
    }

    pub fn by_uid(&self, uid: &str) -> Option<&ObjRef> {
        self.uids.get(uid)
    }

    /// The objects whose ownerReferences name `owner_uid`, in (key, namespace, name) order.
    pub fn dependents(&self, owner_uid: &str) -> Vec<ObjRef> {
        self.dependents
            .get(owner_uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The storage keys that hold objects.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .kinds
            .iter()
            .filter(|(_, k)| k.len > 0)
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    pub fn count(&self, key: &str, ns: Option<&str>) -> usize {
        self.kinds.get(key).map_or(0, |k| k.count(ns))
    }

    /// Objects of a kind, optionally in one namespace, in list order, after a continue position.
    pub fn iter<'a>(
        &'a self,
        key: &str,
        ns: Option<&'a str>,
        after: Option<&'a (String, String)>,
    ) -> Box<dyn Iterator<Item = (&'a str, &'a str, &'a Arc<Obj>)> + 'a> {
        let Some(kind) = self.kinds.get(key) else {
            return Box::new(std::iter::empty());
        };
        Box::new(
            ordered(&kind.objects, ns, after, |names, bound| {
                names.range::<str, _>((bound, Bound::Unbounded))
            })
            .map(|(ns, (name, obj))| (ns, name.as_str(), obj)),
        )
    }

    /// The objects `filter` selects, in list order after `after`: candidates come from the
    /// narrowest index the filter allows (a pinned name, a label value, a namespace), and every
    /// candidate is then checked against the whole filter.
    pub fn select<'a>(
        &'a self,
        key: &str,
        filter: &'a Filter,
        after: Option<&'a (String, String)>,
    ) -> Box<dyn Iterator<Item = (&'a str, &'a str, &'a Arc<Obj>)> + 'a> {
        let Some(kind) = self.kinds.get(key) else {
            return Box::new(std::iter::empty());
        };
        let ns = filter.namespace_pin();
        if let Some(name) = filter.fields.pinned("metadata.name") {
            // At most one candidate per namespace.
            let namespaces: Box<dyn Iterator<Item = (&String, &Names)>> = match ns {
                Some(n) => Box::new(kind.objects.get_key_value(n).into_iter()),
                None => Box::new(kind.objects.iter()),
            };
            return Box::new(
                namespaces
                    .filter_map(move |(n, names)| {
                        names
                            .get_key_value(name)
                            .map(|(name, o)| (n.as_str(), name.as_str(), o))
                    })
                    .filter(move |(n, name, _)| {
                        after.is_none_or(|(an, am)| (*n, *name) > (an.as_str(), am.as_str()))
                    })
                    .filter(move |(_, _, o)| o.matches(filter)),
            );
        }
        // The label requirement with the fewest candidates, if it beats the namespace's size.
        let mut best: Option<(usize, Vec<&NameSet>)> = None;
        for (label, values) in filter.labels.required_values() {
            let sets: Vec<&NameSet> = values
                .iter()
                .filter_map(|v| kind.labels.get(label).and_then(|by_value| by_value.get(*v)))
                .collect();
            let n: usize = sets.iter().map(|s| s.count(ns)).sum();
            if best.as_ref().is_none_or(|(m, _)| n < *m) {
                best = Some((n, sets));
            }
        }
        match best {
            Some((n, sets)) if n < kind.count(ns) => {
                let ids: Box<dyn Iterator<Item = (&str, &str)>> = if sets.len() == 1 {
                    Box::new(sets[0].iter(ns, after))
                } else {
                    let mut ids: Vec<(&str, &str)> =
                        sets.iter().flat_map(|s| s.iter(ns, after)).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    Box::new(ids.into_iter())
                };
                Box::new(
                    ids.filter_map(move |(ns, name)| {
                        kind.objects
                            .get(ns)
                            .and_then(|m| m.get_key_value(name))
                            .map(|(name, o)| (ns, name.as_str(), o))
                    })
                    .filter(move |(_, _, o)| o.matches(filter)),
                )
            }
            _ => Box::new(
                self.iter(key, ns, after)
                    .filter(move |(_, _, o)| o.matches(filter)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selectors::{FieldSelector, LabelSelector};
    use serde_json::json;

    fn obj(ns: &str, name: &str, labels: Value, owners: &[&str]) -> Arc<Obj> {
        let refs: Vec<Value> = owners.iter().map(|u| json!({"uid": u})).collect();
        Arc::new(Obj::new(
            &json!({"metadata": {"namespace": ns, "name": name, "uid": format!("{ns}/{name}"), "labels": labels, "ownerReferences": refs}}),
        ))
    }

    fn at(key: &str, ns: &str, name: &str) -> ObjRef {
        ObjRef {
            key: key.into(),
            ns: ns.into(),
            name: name.into(),
        }
    }

    fn names<'a>(it: impl Iterator<Item = (&'a str, &'a str, &'a Arc<Obj>)>) -> Vec<String> {
        it.map(|(ns, name, _)| format!("{ns}/{name}")).collect()
    }

    fn filter(ns: Option<&str>, labels: &str, fields: &str) -> Filter {
        Filter {
            namespace: ns.map(str::to_string),
            labels: LabelSelector::parse(labels).unwrap_or_default(),
            fields: FieldSelector::parse(fields).unwrap_or_default(),
        }
    }

    #[test]
    fn label_selected_lists_follow_changes_across_namespaces_in_list_order() {
        let mut o = Objects::default();
        for (ns, name, app) in [
            ("b", "x", "web"),
            ("a", "y", "web"),
            ("a", "x", "db"),
            ("c", "z", "web"),
        ] {
            o.put(
                &at("pods", ns, name),
                obj(ns, name, json!({"app": app}), &[]),
            );
        }
        o.put(
            &at("configmaps", "a", "w"),
            obj("a", "w", json!({"app": "web"}), &[]),
        );
        let web = filter(None, "app=web", "");
        assert_eq!(names(o.select("pods", &web, None)), ["a/y", "b/x", "c/z"]);
        let in_b = filter(Some("b"), "app in (web,db)", "");
        assert_eq!(names(o.select("pods", &in_b, None)), ["b/x"]);
        let both = filter(None, "app in (db,web)", "");
        assert_eq!(
            names(o.select("pods", &both, None)),
            ["a/x", "a/y", "b/x", "c/z"]
        );
        let after = ("a".to_string(), "y".to_string());
        assert_eq!(names(o.select("pods", &both, Some(&after))), ["b/x", "c/z"]);
        assert_eq!(names(o.select("pods", &web, Some(&after))), ["b/x", "c/z"]);
        // A relabel moves the object between index entries; a delete drops it.
        o.put(
            &at("pods", "b", "x"),
            obj("b", "x", json!({"app": "db"}), &[]),
        );
        o.remove(&at("pods", "c", "z"));
        assert_eq!(names(o.select("pods", &web, None)), ["a/y"]);
        assert_eq!(
            names(o.select("pods", &filter(None, "app=db", ""), None)),
            ["a/x", "b/x"]
        );
        assert_eq!(
            names(o.select("pods", &filter(None, "app!=db", ""), None)),
            ["a/y"]
        );
        assert_eq!(
            names(o.select("pods", &filter(None, "", "metadata.name=x"), None)),
            ["a/x", "b/x"]
        );
        assert_eq!(
            names(o.select("pods", &filter(None, "", "metadata.namespace=b"), None)),
            ["b/x"]
        );
        assert_eq!(o.count("pods", None), 3);
    }

    #[test]
    fn namespace_walks_start_at_the_continue_position() {
        let mut o = Objects::default();
        for (ns, name) in [("a", "1"), ("a", "2"), ("b", "1"), ("c", "1"), ("c", "2")] {
            o.put(&at("secrets", ns, name), obj(ns, name, json!({}), &[]));
        }
        let after = ("a".to_string(), "2".to_string());
        assert_eq!(
            names(o.iter("secrets", None, Some(&after))),
            ["b/1", "c/1", "c/2"]
        );
        let after = ("b".to_string(), "0".to_string());
        assert_eq!(
            names(o.iter("secrets", Some("c"), Some(&after))),
            ["c/1", "c/2"]
        );
        assert_eq!(
            names(o.iter("secrets", Some("a"), Some(&after))),
            Vec::<String>::new()
        );
        assert_eq!(names(o.iter("secrets", Some("b"), None)), ["b/1"]);
    }

    #[test]
    fn owners_and_uids_are_indexed_until_the_object_goes() {
        let mut o = Objects::default();
        o.put(
            &at("configmaps", "n", "d1"),
            obj("n", "d1", json!({}), &["u1", "u2"]),
        );
        o.put(
            &at("secrets", "n", "d2"),
            obj("n", "d2", json!({}), &["u1"]),
        );
        assert_eq!(
            o.dependents("u1"),
            [at("configmaps", "n", "d1"), at("secrets", "n", "d2")]
        );
        o.put(
            &at("configmaps", "n", "d1"),
            obj("n", "d1", json!({}), &["u2"]),
        );
        assert_eq!(o.dependents("u1"), [at("secrets", "n", "d2")]);
        assert!(o.has_uid("n/d2"));
        o.remove(&at("secrets", "n", "d2"));
        assert!(o.dependents("u1").is_empty());
        assert!(!o.has_uid("n/d2"));
        assert_eq!(o.by_uid("n/d1"), Some(&at("configmaps", "n", "d1")));
    }
}
