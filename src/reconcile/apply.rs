//! The one ownership-guarded applier: every object the operator writes goes through it, with
//! one conflict rule and one way of wrapping errors.
//!
//! The rule: an object the access does not control (no controller reference with its uid) is
//! never written; the caller gets [`Applied::Conflict`] naming the owner. Objects it does
//! control are server-side applied with the operator's one field manager, and only when they
//! lack something wanted, so a reconcile with nothing to do writes nothing.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::{controller_of, is_controlled_by};
use super::error::{Error, Kind, api_status};
use crate::api::keys::FIELD_MANAGER;
use crate::api::{InferenceAccess, InferenceAccessStatus};

/// What became of one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied<K> {
    /// Created or changed by this call.
    Changed(K),
    /// Already held everything wanted: nothing was written.
    Unchanged(K),
    /// Exists and is not controlled by this access: left untouched. `owner` names the
    /// controller when there is one.
    Conflict { owner: Option<String> },
    /// The kind is not served: its CRD is not installed.
    NotServed,
}

impl<K> Applied<K> {
    pub fn changed(&self) -> bool {
        matches!(self, Applied::Changed(_))
    }
}

/// Namespaced kinds the applier handles.
pub trait Object:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
{
}

impl<K> Object for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
{
}

/// Writes the objects of one access, in its namespace, guarded by its uid.
pub struct Applier {
    client: Client,
    namespace: String,
    owner_uid: String,
}

impl Applier {
    pub fn new(client: Client, namespace: &str, owner_uid: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            owner_uid: owner_uid.to_owned(),
        }
    }

    pub fn api<K: Object>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The current object, `None` when absent (or its kind is not served).
    pub async fn get<K: Object>(&self, kind: Kind, name: &str) -> Result<Option<K>, Error> {
        self.api::<K>()
            .get_opt(name)
            .await
            .map_err(Error::api(kind))
    }

    /// `wanted` exists as wanted: read, then written only if it lacks something.
    pub async fn ensure<K: Object>(&self, kind: Kind, wanted: &K) -> Result<Applied<K>, Error> {
        let current = self.get(kind, &wanted.name_any()).await?;
        self.ensure_over(kind, current, wanted).await
    }

    /// As [`Applier::ensure`], over an object the caller has just read.
    pub async fn ensure_over<K: Object>(
        &self,
        kind: Kind,
        current: Option<K>,
        wanted: &K,
    ) -> Result<Applied<K>, Error> {
        match current {
            Some(current) if !self.controls(&current) => Ok(self.conflict(&current)),
            Some(current) if contains(&current, wanted) => Ok(Applied::Unchanged(current)),
            _ => {
                let params = PatchParams::apply(FIELD_MANAGER).force();
                match self
                    .api::<K>()
                    .patch(&wanted.name_any(), &params, &Patch::Apply(wanted))
                    .await
                {
                    Ok(applied) => Ok(Applied::Changed(applied)),
                    Err(err) if api_status(&err) == Some(404) => Ok(Applied::NotServed),
                    Err(err) => Err(Error::Api { kind, source: err }),
                }
            }
        }
    }

    /// `wanted` exists, created if absent; an existing one is kept as it is. Creation (not
    /// apply) so that an object someone else creates meanwhile is never taken over: the create
    /// fails instead.
    pub async fn ensure_exists<K: Object>(
        &self,
        kind: Kind,
        wanted: &K,
    ) -> Result<Applied<K>, Error> {
        match self.get::<K>(kind, &wanted.name_any()).await? {
            Some(current) if !self.controls(&current) => Ok(self.conflict(&current)),
            Some(current) => Ok(Applied::Unchanged(current)),
            None => {
                let params = PostParams {
                    dry_run: false,
                    field_manager: Some(FIELD_MANAGER.into()),
                };
                self.api::<K>()
                    .create(&params, wanted)
                    .await
                    .map(Applied::Changed)
                    .map_err(Error::api(kind))
            }
        }
    }

    /// Deletes `current` if the access controls it; anything else is left alone. Whether it
    /// deleted.
    pub async fn remove<K: Object>(&self, kind: Kind, current: Option<K>) -> Result<bool, Error> {
        match current {
            Some(current) if self.controls(&current) => {
                self.api::<K>()
                    .delete(&current.name_any(), &DeleteParams::default())
                    .await
                    .map_err(Error::api(kind))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The access's status, written only when it changed.
    pub async fn publish_status(
        &self,
        access: &InferenceAccess,
        status: &InferenceAccessStatus,
    ) -> Result<Applied<()>, Error> {
        if access.status.as_ref() == Some(status) {
            return Ok(Applied::Unchanged(()));
        }
        let patch = serde_json::json!({
            "apiVersion": InferenceAccess::api_version(&()),
            "kind": InferenceAccess::kind(&()),
            "metadata": {"name": access.name_any()},
            "status": status,
        });
        self.api::<InferenceAccess>()
            .patch_status(
                &access.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(Error::api(Kind::Status))?;
        Ok(Applied::Changed(()))
    }

    fn controls<K: Object>(&self, object: &K) -> bool {
        is_controlled_by(object.meta(), &self.owner_uid)
    }

    fn conflict<K: Object, T>(&self, object: &K) -> Applied<T> {
        Applied::Conflict {
            owner: controller_of(object.meta()),
        }
    }
}

/// Whether `actual` already holds every field `wanted` sets, so applying would change nothing.
pub fn contains<A: Serialize, W: Serialize>(actual: &A, wanted: &W) -> bool {
    match (serde_json::to_value(actual), serde_json::to_value(wanted)) {
        (Ok(actual), Ok(wanted)) => is_subset(&wanted, &actual),
        _ => false,
    }
}

fn is_subset(wanted: &serde_json::Value, actual: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (wanted, actual) {
        (Value::Object(w), Value::Object(a)) => w.iter().all(|(k, v)| match a.get(k) {
            Some(actual) => is_subset(v, actual),
            // An empty map or list wanted is the same as one absent.
            None => {
                v.is_null()
                    || v.as_object().is_some_and(|o| o.is_empty())
                    || v.as_array().is_some_and(|l| l.is_empty())
            }
        }),
        (Value::Array(w), Value::Array(a)) => {
            w.len() == a.len() && w.iter().zip(a).all(|(w, a)| is_subset(w, a))
        }
        (w, a) => w == a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_table() {
        let cases = [
            (json!({"a": 1}), json!({"a": 1, "b": 2}), true),
            (json!({"a": 1}), json!({"a": 2}), false),
            (
                json!({"a": {"b": [1, {"c": 1}]}}),
                json!({"a": {"b": [1, {"c": 1, "d": 2}]}}),
                true,
            ),
            (json!({"a": [1]}), json!({"a": [1, 2]}), false),
            (json!({"a": {}}), json!({}), true),
            (json!({"a": []}), json!({}), true),
            (json!({"a": null}), json!({}), true),
            (json!({"a": "x"}), json!({}), false),
        ];
        for (wanted, actual, expected) in cases {
            assert_eq!(is_subset(&wanted, &actual), expected, "{wanted} ⊆ {actual}");
        }
    }
}
