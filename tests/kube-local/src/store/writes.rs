//! Writes: create, update, patch (JSON merge, JSON patch, strategic merge, server-side apply)
//! and delete, with resource versions, generation, managedFields and finalizers. Each write
//! ends by running the garbage collector on the work it queued.

use serde_json::{Value, json};

use super::admission::{admit_custom, admit_kind, schema_of};
use super::{
    CRD_CLEANUP, DeleteOptions, EventType, State, WriteOptions, finalizers, meta_str, present,
    to_storage,
};
use crate::error::{ApiError, FieldError};
use crate::fields::{self, Scope};
use crate::patch::{self, PatchType};
use crate::resources::{self, ResourceType};
use crate::selectors::Filter;
use crate::util;

/// How a write's managedFields come about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracking {
    /// Changed fields move to the writer (create, update, non-apply patch).
    Update,
    /// Server-side apply already computed them.
    DoneByApply,
}

/// The object as the request's version shows it, owned for the response.
fn shown(rt: &ResourceType, obj: &Value) -> Value {
    present(rt, obj).into_owned()
}

impl State {
    fn namespace_exists(&self, ns: &str) -> bool {
        self.exists("namespaces", "", ns)
    }

    /// POST: creates an object.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut obj = to_storage(rt, obj);
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        if let Some(av) = obj["apiVersion"].as_str() {
            let (g, _) = resources::split_api_version(av);
            if g != rt.group || obj["kind"].as_str().is_some_and(|k| k != rt.kind) {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    rt.api_version()
                )));
            }
        }
        obj["apiVersion"] = json!(resource_api_version(rt));
        obj["kind"] = json!(rt.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let meta_ns = meta_str(&obj, "namespace").to_string();
        let ns = if rt.namespaced {
            let ns = if ns.is_empty() {
                meta_ns.clone()
            } else {
                ns.to_string()
            };
            if !meta_ns.is_empty() && meta_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if ns.is_empty() {
                return Err(ApiError::bad_request(
                    "the namespace of the object must be set",
                ));
            }
            obj["metadata"]["namespace"] = json!(ns);
            ns
        } else {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            String::new()
        };
        if meta_str(&obj, "name").is_empty() {
            let prefix = meta_str(&obj, "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    "",
                    &[FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ));
            }
            obj["metadata"]["name"] = json!(format!("{prefix}{}", util::random_suffix()));
        }
        let name = meta_str(&obj, "name").to_string();
        if rt.namespaced && !self.namespace_exists(&ns) {
            return Err(ApiError::not_found("", "namespaces", &ns));
        }
        if rt.namespaced
            && self
                .objects
                .get("namespaces", "", &ns)
                .is_some_and(|n| n.is_terminating())
        {
            return Err(ApiError::forbidden(format!("{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", crate::error::qualified(&rt.group, &rt.plural))).with_details(json!({"name": name, "kind": rt.plural})));
        }
        if self.exists(&rt.storage_key(), &ns, &name) {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        if rt.status_subresource
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        let now = util::now_rfc3339();
        if let Some(m) = obj["metadata"].as_object_mut() {
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "managedFields",
                "selfLink",
            ] {
                m.remove(k);
            }
        }
        admit_kind(rt, None, &mut obj)?;
        admit_custom(rt, None, &mut obj, opts.strict)?;
        obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        obj["metadata"]["creationTimestamp"] = json!(now);
        if rt.tracks_generation() {
            obj["metadata"]["generation"] = json!(1);
        }
        let manager = default_manager(opts);
        let api_version = rt.api_version();
        let writer = fields::Writer {
            manager: &manager,
            api_version: &api_version,
            now: &now,
            schema: schema_of(rt),
        };
        fields::track_update(
            None,
            &mut obj,
            &writer,
            Scope::Main {
                status_separate: rt.status_subresource,
            },
        );
        if opts.dry_run {
            return Ok(shown(rt, &obj));
        }
        let stored = self.commit(&rt.storage_key(), &ns, &name, Some(obj), EventType::Added);
        let out = shown(rt, &stored);
        self.after_create(rt, &out)?;
        // An object whose owners are all gone is collected at once, as the collector would.
        self.collect_garbage();
        Ok(out)
    }

    fn after_create(&mut self, rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "namespaces") => {
                let ns = meta_str(obj, "name").to_string();
                if let Some(sa_rt) = self.registry.get("", "v1", "serviceaccounts") {
                    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
                    let opts = WriteOptions {
                        field_manager: Some("kube-controller-manager".into()),
                        ..Default::default()
                    };
                    match self.create(&sa_rt, &ns, sa, &opts) {
                        Ok(_) | Err(ApiError { code: 409, .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => self.establish_crd(obj),
            _ => {}
        }
        Ok(())
    }

    /// Serves the CRD's versions and reports it Established, as the apiextensions controllers do.
    fn establish_crd(&mut self, crd: &Value) {
        let name = meta_str(crd, "name").to_string();
        self.registry.remove_crd(&name);
        for rt in resources::from_crd(crd) {
            self.registry.insert(rt);
        }
        let Some(mut stored) =
            self.raw("customresourcedefinitions.apiextensions.k8s.io", "", &name)
        else {
            return;
        };
        let now = util::now_rfc3339();
        let names = stored["spec"]["names"].clone();
        let storage: Vec<Value> = stored["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["storage"].as_bool() == Some(true))
            .map(|v| v["name"].clone())
            .collect();
        let keep_time = |t: &str| -> String {
            stored["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == t)
                .and_then(|c| c["lastTransitionTime"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| now.clone())
        };
        let status = json!({
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": keep_time("NamesAccepted")},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": keep_time("Established")}
            ],
            "acceptedNames": names,
            "storedVersions": storage,
        });
        if stored["status"] == status {
            return;
        }
        stored["status"] = status;
        self.commit(
            "customresourcedefinitions.apiextensions.k8s.io",
            "",
            &name,
            Some(stored),
            EventType::Modified,
        );
    }

    /// PUT (main resource or `status`).
    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        obj: Value,
        sub: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let obj = to_storage(rt, obj);
        let old = self
            .raw(&rt.storage_key(), ns, name)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        let body_name = meta_str(&obj, "name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        let new = self.merge_scope(rt, &old, obj, sub);
        self.finish_write(rt, &old, new, sub, opts, Tracking::Update)
    }

    /// Builds the full new object of a write to `sub` (or the main resource): the status
    /// subresource only changes status; the main resource never changes status.
    fn merge_scope(&self, rt: &ResourceType, old: &Value, new: Value, sub: Option<&str>) -> Value {
        match sub {
            Some("status") => {
                let mut merged = old.clone();
                merged["status"] = new["status"].clone();
                if merged["status"].is_null()
                    && let Some(m) = merged.as_object_mut()
                {
                    m.remove("status");
                }
                merged
            }
            _ => {
                let mut merged = new;
                if rt.status_subresource {
                    match old.get("status") {
                        Some(s) => merged["status"] = s.clone(),
                        None => {
                            if let Some(m) = merged.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                merged
            }
        }
    }

    fn finish_write(
        &mut self,
        rt: &ResourceType,
        old: &Value,
        mut new: Value,
        sub: Option<&str>,
        opts: &WriteOptions,
        tracking: Tracking,
    ) -> Result<Value, ApiError> {
        let (ns, name) = (
            meta_str(old, "namespace").to_string(),
            meta_str(old, "name").to_string(),
        );
        new["apiVersion"] = json!(resource_api_version(rt));
        new["kind"] = json!(rt.kind);
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        // Server-owned metadata never changes through a write.
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        if old["metadata"]["deletionTimestamp"].is_string() {
            // A terminating object may only lose finalizers.
            let before = finalizers(old);
            let after = finalizers(&new);
            if after.iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    &name,
                    &[FieldError::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        admit_kind(rt, Some(old), &mut new)?;
        if sub.is_none() || rt.custom.is_some() {
            admit_custom(rt, Some(old), &mut new, opts.strict)?;
        }
        let now = util::now_rfc3339();
        if tracking == Tracking::Update {
            let scope = if sub == Some("status") {
                Scope::Status
            } else {
                Scope::Main {
                    status_separate: rt.status_subresource,
                }
            };
            let manager = default_manager(opts);
            let api_version = rt.api_version();
            let writer = fields::Writer {
                manager: &manager,
                api_version: &api_version,
                now: &now,
                schema: schema_of(rt),
            };
            fields::track_update(Some(old), &mut new, &writer, scope);
        }
        if rt.tracks_generation() && !same_generation_basis(old, &new, rt.status_subresource) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        if same_but_version(&new, old) {
            return Ok(shown(rt, old));
        }
        if opts.dry_run {
            return Ok(shown(rt, &new));
        }
        if new["metadata"]["deletionTimestamp"].is_string() && finalizers(&new).is_empty() {
            let gone = self.commit(&rt.storage_key(), &ns, &name, None, EventType::Deleted);
            self.after_remove(&gone);
            return Ok(shown(rt, &gone));
        }
        let stored = self.commit(
            &rt.storage_key(),
            &ns,
            &name,
            Some(new),
            EventType::Modified,
        );
        let out = shown(rt, &stored);
        if rt.plural == "customresourcedefinitions" && sub.is_none() {
            self.establish_crd(&out);
        }
        if old["metadata"]["deletionTimestamp"].is_string()
            || stored["metadata"]["ownerReferences"] != old["metadata"]["ownerReferences"]
        {
            self.collect_garbage();
        }
        Ok(out)
    }

    /// PATCH in any of the four formats. Returns the object and whether apply created it.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &Value,
        sub: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let current = self.raw(&rt.storage_key(), ns, name);
        if ptype == PatchType::Strategic && rt.custom.is_some() {
            return Err(ApiError::unsupported_media_type(
                "application/strategic-merge-patch+json",
            ));
        }
        if ptype == PatchType::Apply {
            let converted = to_storage(rt, body.clone());
            let body = &converted;
            let Some(manager) = opts.field_manager.as_deref().filter(|m| !m.is_empty()) else {
                return Err(ApiError::bad_request(
                    "PATCH, application/apply-patch+yaml requests require a fieldManager",
                ));
            };
            if !body.is_object() {
                return Err(ApiError::bad_request(
                    "the body of an apply request must be an object",
                ));
            }
            let body_name = meta_str(body, "name");
            if !body_name.is_empty() && body_name != name {
                return Err(ApiError::bad_request(
                    "the name of the object in the apply request does not match the name on the URL",
                ));
            }
            let now = util::now_rfc3339();
            let scope = if sub == Some("status") {
                Scope::Status
            } else {
                Scope::Main {
                    status_separate: rt.status_subresource,
                }
            };
            let Some(current) = current else {
                if sub.is_some() {
                    return Err(ApiError::not_found(&rt.group, &rt.plural, name));
                }
                // Apply to a missing object creates it, owned by this manager.
                let mut skeleton = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": name}});
                if rt.namespaced {
                    skeleton["metadata"]["namespace"] = json!(ns);
                }
                let api_version = rt.api_version();
                let writer = fields::Writer {
                    manager,
                    api_version: &api_version,
                    now: &now,
                    schema: schema_of(rt),
                };
                let merged = fields::apply(&skeleton, body, &writer, opts.force, scope)
                    .map_err(|c| conflict_error(rt, name, &c))?;
                let entries = fields::read_entries(&merged);
                let created = self.create(
                    rt,
                    ns,
                    merged,
                    &WriteOptions {
                        field_manager: Some(manager.to_string()),
                        ..opts.clone()
                    },
                )?;
                if opts.dry_run {
                    return Ok((created, true));
                }
                // Start from what is stored now: create hooks (a CRD's Established status) may
                // have written the object again after `created` was taken, and the collector
                // may have removed it already (its owners were gone).
                let Some(stored_now) = self.raw(&rt.storage_key(), ns, name) else {
                    return Ok((created, true));
                };
                let mut fixed = stored_now.clone();
                fields::write_entries(&mut fixed, &entries);
                if fixed != stored_now {
                    let stored = self.commit(
                        &rt.storage_key(),
                        ns,
                        name,
                        Some(fixed),
                        EventType::Modified,
                    );
                    return Ok((shown(rt, &stored), true));
                }
                return Ok((created, true));
            };
            if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
                && rv != meta_str(&current, "resourceVersion")
            {
                return Err(ApiError::stale(&rt.group, &rt.plural, name));
            }
            let api_version = rt.api_version();
            let writer = fields::Writer {
                manager,
                api_version: &api_version,
                now: &now,
                schema: schema_of(rt),
            };
            let merged = fields::apply(&current, body, &writer, opts.force, scope)
                .map_err(|c| conflict_error(rt, name, &c))?;
            return self
                .finish_write(rt, &current, merged, sub, opts, Tracking::DoneByApply)
                .map(|v| (v, false));
        }
        let current = current.ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        let mut doc = shown(rt, &current);
        match ptype {
            PatchType::Json => patch::json_patch(&mut doc, body)?,
            PatchType::Merge => patch::merge_patch(&mut doc, body),
            PatchType::Strategic => patch::strategic_merge(&mut doc, body),
            PatchType::Apply => {}
        }
        if !doc.is_object() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "the patch did not produce an object",
            ));
        }
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
            && rv != meta_str(&current, "resourceVersion")
        {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        let new = self.merge_scope(rt, &current, to_storage(rt, doc), sub);
        self.finish_write(rt, &current, new, sub, opts, Tracking::Update)
            .map(|v| (v, false))
    }

    /// DELETE: removes the object now, or marks it terminating while finalizers remain.
    /// Returns the object and whether it is gone.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let ns = if rt.namespaced { ns } else { "" };
        let current = self
            .raw(&rt.storage_key(), ns, name)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if rt.group.is_empty()
            && rt.plural == "namespaces"
            && matches!(name, "default" | "kube-system" | "kube-public")
        {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ))
            .with_details(json!({"name": name, "kind": "namespaces"})));
        }
        if let Some(uid) = &opts.precondition_uid
            && uid != meta_str(&current, "uid")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&current, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && rv != meta_str(&current, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&current, "resourceVersion")
                ),
            ));
        }
        let mut fin = finalizers(&current);
        match opts.propagation.as_deref() {
            Some("Foreground") if !fin.iter().any(|f| f == "foregroundDeletion") => {
                fin.push("foregroundDeletion".into())
            }
            Some("Orphan") if !fin.iter().any(|f| f == "orphan") => fin.push("orphan".into()),
            Some("Foreground" | "Orphan" | "Background") | None => {}
            Some(other) => {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "DeleteOptions",
                    "",
                    &[FieldError::not_supported(
                        "propagationPolicy",
                        &json!(other),
                        &[json!("Foreground"), json!("Background"), json!("Orphan")],
                    )],
                ));
            }
        }
        if rt.plural == "namespaces" && rt.group.is_empty() {
            fin.push("kubernetes".into());
        }
        if rt.plural == "customresourcedefinitions" && !fin.iter().any(|f| f == CRD_CLEANUP) {
            fin.push(CRD_CLEANUP.into());
        }
        if opts.dry_run {
            return Ok((shown(rt, &current), fin.is_empty()));
        }
        if current["metadata"]["deletionTimestamp"].is_string() {
            return Ok((shown(rt, &current), false));
        }
        if fin.is_empty() {
            let gone = self.commit(&rt.storage_key(), ns, name, None, EventType::Deleted);
            self.after_remove(&gone);
            return Ok((shown(rt, &gone), true));
        }
        let mut marked = current.clone();
        marked["metadata"]["deletionTimestamp"] = json!(util::now_rfc3339());
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if rt.tracks_generation() {
            let g = current["metadata"]["generation"].as_i64().unwrap_or(1);
            marked["metadata"]["generation"] = json!(g + 1);
        }
        if rt.plural == "namespaces" && rt.group.is_empty() {
            marked["status"]["phase"] = json!("Terminating");
            fin.retain(|f| f != "kubernetes");
        }
        if fin.is_empty() {
            if let Some(m) = marked["metadata"].as_object_mut() {
                m.remove("finalizers");
            }
        } else {
            marked["metadata"]["finalizers"] = json!(fin);
        }
        let stored = self.commit(
            &rt.storage_key(),
            ns,
            name,
            Some(marked),
            EventType::Modified,
        );
        self.collect_garbage();
        let still = self.raw(&rt.storage_key(), ns, name);
        Ok((
            shown(rt, still.as_ref().unwrap_or(&stored)),
            still.is_none(),
        ))
    }

    /// DELETE on a collection: deletes every matching object, returns them.
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        filter: &Filter,
        opts: &DeleteOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let items = self.list(rt, filter, None, None)?.items;
        let mut out = Vec::new();
        for item in &items {
            match self.delete(rt, item.namespace(), item.name(), opts) {
                Ok((v, _)) => out.push(v),
                Err(ApiError { code: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Whether two objects differ at most in metadata.resourceVersion (a no-op write), compared
/// in place rather than on copies.
fn same_but_version(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    a.len() == b.len()
        && a.iter().all(|(k, av)| match (k.as_str(), b.get(k)) {
            ("metadata", Some(bv)) => match (av.as_object(), bv.as_object()) {
                (Some(am), Some(bm)) => {
                    let rv = "resourceVersion";
                    am.iter()
                        .filter(|(k, _)| *k != rv)
                        .all(|(k, v)| bm.get(k) == Some(v))
                        && bm.keys().filter(|k| *k != rv).count()
                            == am.keys().filter(|k| *k != rv).count()
                }
                _ => av == bv,
            },
            (_, bv) => bv == Some(av),
        })
}

/// Whether two objects agree on everything whose change bumps metadata.generation (all but
/// metadata, apiVersion, kind and, with a status subresource, status).
fn same_generation_basis(a: &Value, b: &Value, status_separate: bool) -> bool {
    let skip = |k: &str| {
        matches!(k, "metadata" | "apiVersion" | "kind") || (status_separate && k == "status")
    };
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    a.iter()
        .filter(|(k, _)| !skip(k))
        .all(|(k, v)| b.get(k) == Some(v))
        && b.keys().filter(|k| !skip(k)).count() == a.keys().filter(|k| !skip(k)).count()
}

fn default_manager(opts: &WriteOptions) -> String {
    opts.field_manager
        .clone()
        .unwrap_or_else(|| "unknown".to_string())
}

fn resource_api_version(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.storage_version.clone()
    } else {
        format!("{}/{}", rt.group, rt.storage_version)
    }
}

fn conflict_error(rt: &ResourceType, name: &str, conflicts: &[fields::Conflict]) -> ApiError {
    let n = conflicts.len();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\": {}",
                c.manager,
                fields::dotted(&c.path)
            )
        })
        .collect();
    let message = if n == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\"", c.manager), "field": fields::dotted(&c.path)}))
        .collect();
    let mut details = json!({"name": name, "kind": rt.plural, "causes": causes});
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    ApiError::new(409, "Conflict", message).with_details(details)
}
