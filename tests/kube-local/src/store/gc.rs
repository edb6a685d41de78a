//! The garbage collector, the namespace controller's content deletion and the CRD cleanup
//! finalizer, run synchronously inside the write that gives them work.
//!
//! Every commit queues the objects whose collection may have changed (`note_for_gc`): an object
//! whose owner references changed, one that started deletion with a finalizer the collector
//! serves, the dependents and waiting owners of a removed object, a terminating namespace or CRD
//! that lost content. `collect_garbage` works the queue until it is empty, so a write costs in
//! proportion to what it affects, never to the size of the store.

use std::collections::VecDeque;

use serde_json::Value;

use super::objects::{Obj, ObjRef, Owner};
use super::{CRD_CLEANUP, DeleteOptions, EventType, State, finalizers, is_terminating, meta_str};

const NAMESPACES: &str = "namespaces";
const CRDS: &str = "customresourcedefinitions.apiextensions.k8s.io";

/// Objects to look at again.
#[derive(Debug, Default)]
pub struct Queue {
    todo: VecDeque<ObjRef>,
    /// Set while the queue is worked: writes made by the collector add to it instead of
    /// starting another pass.
    running: bool,
}

fn has_finalizer(obj: &Value, name: &str) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == name))
}

/// Whether a terminating object waits for the collector (or the namespace/CRD cleanup).
fn waits_for_collector(at: &ObjRef, obj: &Value) -> bool {
    is_terminating(obj)
        && (has_finalizer(obj, "orphan")
            || has_finalizer(obj, "foregroundDeletion")
            || at.key == NAMESPACES
            || at.key == CRDS)
}

impl State {
    /// Queues what a change at `at` (from `old` to `new`, None when removed) may have made
    /// collectable.
    pub(super) fn note_for_gc(
        &mut self,
        at: &ObjRef,
        old: Option<&Obj>,
        new: Option<(&Value, &Obj)>,
    ) {
        match new {
            Some((obj, stored)) => {
                let owners_changed = old.is_none_or(|o| o.owners() != stored.owners());
                if (owners_changed && !stored.owners().is_empty()) || waits_for_collector(at, obj) {
                    self.gc.todo.push_back(at.clone());
                }
                if owners_changed && let Some(old) = old {
                    // An owner in foreground deletion may no longer be blocked by it.
                    self.queue_waiting_owners(old.owners());
                }
            }
            None => {
                let Some(old) = old else { return };
                if !old.uid().is_empty() {
                    let dependents = self.objects.dependents(old.uid());
                    self.gc.todo.extend(dependents);
                }
                self.queue_waiting_owners(old.owners());
                if !at.ns.is_empty() && self.is_terminating(NAMESPACES, "", &at.ns) {
                    self.gc.todo.push_back(ObjRef {
                        key: NAMESPACES.into(),
                        ns: String::new(),
                        name: at.ns.clone(),
                    });
                }
                // A CRD is named like the storage key of what it serves.
                if self.is_terminating(CRDS, "", &at.key) {
                    self.gc.todo.push_back(ObjRef {
                        key: CRDS.into(),
                        ns: String::new(),
                        name: at.key.clone(),
                    });
                }
            }
        }
    }

    fn is_terminating(&self, key: &str, ns: &str, name: &str) -> bool {
        self.objects
            .get(key, ns, name)
            .is_some_and(|o| o.is_terminating())
    }

    fn queue_waiting_owners(&mut self, owners: &[Owner]) {
        let waiting: Vec<ObjRef> = owners
            .iter()
            .filter_map(|o| self.objects.by_uid(&o.uid))
            .filter(|o| self.is_terminating(&o.key, &o.ns, &o.name))
            .cloned()
            .collect();
        self.gc.todo.extend(waiting);
    }

    /// Works the collector's queue until nothing is left to do.
    pub fn collect_garbage(&mut self) {
        if self.gc.running {
            return;
        }
        self.gc.running = true;
        while let Some(at) = self.gc.todo.pop_front() {
            self.collect(&at);
        }
        self.gc.running = false;
    }

    fn get_ref(&self, at: &ObjRef) -> Option<Value> {
        self.raw(&at.key, &at.ns, &at.name)
    }

    fn is_terminating_ref(&self, at: &ObjRef) -> Option<bool> {
        self.objects
            .get(&at.key, &at.ns, &at.name)
            .map(|o| o.is_terminating())
    }

    /// What the collector, namespace controller or CRD cleanup does about one object now.
    fn collect(&mut self, at: &ObjRef) {
        let Some(stored) = self.objects.get(&at.key, &at.ns, &at.name).cloned() else {
            return;
        };
        let uid = stored.uid().to_string();
        if stored.is_terminating() {
            let obj = stored.value();
            if has_finalizer(&obj, "orphan") {
                for dep in self.objects.dependents(&uid) {
                    let Some(mut d) = self.get_ref(&dep) else {
                        continue;
                    };
                    if let Some(refs) = d["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"].as_str() != Some(&uid));
                    }
                    self.commit(&dep.key, &dep.ns, &dep.name, Some(d), EventType::Modified);
                }
                self.drop_finalizer(at, &obj, "orphan");
                return;
            }
            if has_finalizer(&obj, "foregroundDeletion") {
                for dep in self.objects.dependents(&uid) {
                    if self.is_terminating_ref(&dep) == Some(false) {
                        self.delete_key(&dep, Some("Foreground"));
                    }
                }
                let blocking = self.objects.dependents(&uid).iter().any(|dep| {
                    self.objects
                        .get(&dep.key, &dep.ns, &dep.name)
                        .is_some_and(|d| d.owners().iter().any(|o| *o.uid == *uid && o.blocks))
                });
                if !blocking && let Some(now) = self.get_ref(at) {
                    self.drop_finalizer(at, &now, "foregroundDeletion");
                }
                return;
            }
            if at.key == NAMESPACES {
                self.empty_namespace(&at.name);
                return;
            }
            if at.key == CRDS {
                self.empty_crd(at, &obj);
                return;
            }
        }
        let owners = stored.owners();
        if owners.is_empty() {
            return;
        }
        let live = owners
            .iter()
            .filter(|o| self.objects.has_uid(&o.uid))
            .count();
        if live == 0 {
            if !stored.is_terminating() {
                self.delete_key(at, None);
            }
        } else if live < owners.len() {
            let mut d = stored.value();
            if let Some(list) = d["metadata"]["ownerReferences"].as_array_mut() {
                list.retain(|r| r["uid"].as_str().is_some_and(|u| self.objects.has_uid(u)));
            }
            self.commit(&at.key, &at.ns, &at.name, Some(d), EventType::Modified);
        }
    }

    /// The namespace controller: deletes a terminating namespace's content, then the namespace
    /// once nothing is left in it.
    fn empty_namespace(&mut self, ns: &str) {
        let contents: Vec<ObjRef> = self
            .objects
            .keys()
            .into_iter()
            .flat_map(|key| {
                self.objects
                    .iter(&key, Some(ns), None)
                    .filter(|(_, _, o)| !o.is_terminating())
                    .map(|(_, name, _)| ObjRef {
                        key: key.clone(),
                        ns: ns.to_string(),
                        name: name.to_string(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        for c in &contents {
            self.delete_key(c, None);
        }
        let empty = self
            .objects
            .keys()
            .iter()
            .all(|key| self.objects.count(key, Some(ns)) == 0);
        if empty {
            let gone = self.commit(NAMESPACES, "", ns, None, EventType::Deleted);
            self.after_remove(&gone);
        }
    }

    /// The CRD cleanup finalizer: deletes a terminating CRD's instances, then lets it go.
    fn empty_crd(&mut self, at: &ObjRef, crd: &Value) {
        let served_key = crate::error::qualified(
            crd["spec"]["group"].as_str().unwrap_or_default(),
            crd["spec"]["names"]["plural"].as_str().unwrap_or_default(),
        );
        let instances: Vec<ObjRef> = self
            .objects
            .iter(&served_key, None, None)
            .filter(|(_, _, o)| !o.is_terminating())
            .map(|(ns, name, _)| ObjRef {
                key: served_key.clone(),
                ns: ns.to_string(),
                name: name.to_string(),
            })
            .collect();
        for i in &instances {
            self.delete_key(i, None);
        }
        if self.objects.count(&served_key, None) == 0
            && has_finalizer(crd, CRD_CLEANUP)
            && let Some(now) = self.get_ref(at)
        {
            self.drop_finalizer(at, &now, CRD_CLEANUP);
        }
    }

    /// Follow-up of a removal: a CRD's kinds stop being served; the collector runs.
    pub(super) fn after_remove(&mut self, gone: &Value) {
        if gone["kind"] == "CustomResourceDefinition" {
            self.registry.remove_crd(meta_str(gone, "name"));
        }
        self.collect_garbage();
    }

    /// Deletes an object the way the garbage collector or namespace controller does.
    fn delete_key(&mut self, at: &ObjRef, propagation: Option<&str>) {
        let Some(rt) = self
            .registry
            .by_storage_key(&at.key)
            .or_else(|| self.registry.all().find(|r| r.storage_key() == at.key))
        else {
            // Kind no longer served (its CRD is gone): drop the object.
            let gone = self.commit(&at.key, &at.ns, &at.name, None, EventType::Deleted);
            self.after_remove(&gone);
            return;
        };
        let opts = DeleteOptions {
            propagation: propagation.map(str::to_string),
            ..Default::default()
        };
        let _ = self.delete(&rt, &at.ns, &at.name, &opts);
    }

    fn drop_finalizer(&mut self, at: &ObjRef, obj: &Value, finalizer: &str) {
        let mut o = obj.clone();
        let fin: Vec<String> = finalizers(obj)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        if fin.is_empty() {
            if let Some(m) = o["metadata"].as_object_mut() {
                m.remove("finalizers");
            }
            if is_terminating(&o) {
                let gone = self.commit(&at.key, &at.ns, &at.name, None, EventType::Deleted);
                self.after_remove(&gone);
                return;
            }
        } else {
            o["metadata"]["finalizers"] = serde_json::json!(fin);
        }
        self.commit(&at.key, &at.ns, &at.name, Some(o), EventType::Modified);
    }
}
