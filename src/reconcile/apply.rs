//! The one ownership-guarded applier: every object the operator writes goes through it, with
//! one conflict rule and one way of wrapping errors.
//!
//! The rule: an object the access does not control (no controller reference with its uid) is
//! never written; the caller gets [`Applied::Conflict`] naming the owner. The one exception is
//! a workload's restart after a renewal, and only with the consent of the workload's own
//! annotation ([`Applier::restart`]). Objects it does
//! control are server-side applied with the operator's one field manager, and only when they
//! lack something wanted, so a reconcile with nothing to do writes nothing. What is current is
//! read from the watch caches ([`Caches`]); every write is recorded there at once.

use std::fmt::Debug;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::{controller_of, is_controlled_by};
use super::cache::{Cached, Caches};
use super::error::{Error, Kind, api_status};
use super::readers::WorkloadKey;
use crate::api::keys::{ANNOTATION_RESTARTED_AT, FIELD_MANAGER, started_with_annotation};
use crate::api::workload::{Workload, restart_consented};
use crate::api::{InferenceAccess, InferenceAccessStatus};

/// What became of one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied<K> {
    /// Created or changed by this call.
    Changed(Arc<K>),
    /// Already held everything wanted: nothing was written.
    Unchanged(Arc<K>),
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

enum Created<K> {
    Done(Applied<K>),
    Exists(Arc<K>),
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
pub struct Applier<'a> {
    client: Client,
    namespace: String,
    owner_uid: String,
    caches: &'a Caches,
}

impl<'a> Applier<'a> {
    pub fn new(client: Client, caches: &'a Caches, namespace: &str, owner_uid: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            owner_uid: owner_uid.to_owned(),
            caches,
        }
    }

    pub fn api<K: Object>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The client, for reads of kinds no cache covers (the data path) and for objects outside
    /// the access's namespace.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Records the access as a write (its finalizers) returned it.
    pub fn wrote_access(&self, access: InferenceAccess) {
        self.caches.accesses.wrote(access);
    }

    /// Whether AuthorizationPolicies are served in this scope (Istio installed).
    pub fn policies_served(&self) -> bool {
        self.caches.policies_served
    }

    /// The current object as the caches know it (no request).
    pub fn cached<K: Cached>(&self, name: &str) -> Option<Arc<K>> {
        K::cache(self.caches).get(&self.namespace, name)
    }

    /// The object in another namespace as the caches know it: a model another namespace's
    /// owner lets this access reach (the caches cover every namespace when that is allowed).
    pub fn cached_in<K: Cached>(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        K::cache(self.caches).get(namespace, name)
    }

    /// The object as the API server has it now (one request): for objects no watch covers.
    pub async fn fetch<K: Object>(&self, kind: Kind, name: &str) -> Result<Option<K>, Error> {
        self.api::<K>()
            .get_opt(name)
            .await
            .map_err(Error::api(kind))
    }

    /// `wanted` exists as wanted: written only if the cached object lacks something.
    pub async fn ensure<K: Object + Cached>(
        &self,
        kind: Kind,
        wanted: &K,
    ) -> Result<Applied<K>, Error> {
        let current = match self.cached::<K>(&wanted.name_any()) {
            Some(current) => current,
            None if K::COMPLETE => return self.apply_and_record(kind, wanted).await,
            None => match self.create(kind, wanted).await? {
                Created::Done(applied) => return Ok(applied),
                Created::Exists(existing) => existing,
            },
        };
        if !self.controls(&*current) {
            Ok(self.conflict(&*current))
        } else if contains(&*current, wanted) {
            Ok(Applied::Unchanged(current))
        } else {
            self.apply_and_record(kind, wanted).await
        }
    }

    async fn apply_and_record<K: Object + Cached>(
        &self,
        kind: Kind,
        wanted: &K,
    ) -> Result<Applied<K>, Error> {
        match self.apply(wanted).await {
            Ok(applied) => Ok(Applied::Changed(K::cache(self.caches).wrote(applied))),
            Err(err) if api_status(&err) == Some(404) => Ok(Applied::NotServed),
            Err(err) => Err(Error::Api { kind, source: err }),
        }
    }

    /// Creates an object the cache does not show; one that exists after all (someone else's,
    /// or the operator's own that the watch has not delivered yet) is read instead.
    async fn create<K: Object + Cached>(
        &self,
        kind: Kind,
        wanted: &K,
    ) -> Result<Created<K>, Error> {
        let params = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        match self.api::<K>().create(&params, wanted).await {
            Ok(created) => Ok(Created::Done(Applied::Changed(
                K::cache(self.caches).wrote(created),
            ))),
            Err(err) if api_status(&err) == Some(404) => Ok(Created::Done(Applied::NotServed)),
            Err(err) if api_status(&err) == Some(409) => {
                match self.fetch::<K>(kind, &wanted.name_any()).await? {
                    Some(existing) => Ok(Created::Exists(Arc::new(existing))),
                    None => Err(Error::Api { kind, source: err }),
                }
            }
            Err(err) => Err(Error::Api { kind, source: err }),
        }
    }

    async fn apply<K: Object>(&self, wanted: &K) -> Result<K, kube::Error> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api::<K>()
            .patch(&wanted.name_any(), &params, &Patch::Apply(wanted))
            .await
    }

    /// The Secret exists, created if absent; an existing one is kept as it is. Creation (not
    /// apply) so that a Secret someone else creates meanwhile is never taken over: the create
    /// fails instead, and the Secret is read to say whose it is.
    pub async fn ensure_secret(
        &self,
        wanted: &Secret,
    ) -> Result<Applied<PartialObjectMeta<Secret>>, Error> {
        let name = wanted.name_any();
        let current = match self.cached::<PartialObjectMeta<Secret>>(&name) {
            Some(current) => current,
            None => {
                let params = PostParams {
                    dry_run: false,
                    field_manager: Some(FIELD_MANAGER.into()),
                };
                match self.api::<Secret>().create(&params, wanted).await {
                    Ok(created) => return Ok(Applied::Changed(self.wrote_secret(created))),
                    // The cache had not seen it yet.
                    Err(err) if api_status(&err) == Some(409) => {
                        match self.fetch::<Secret>(Kind::Secret, &name).await? {
                            Some(existing) => Arc::new(metadata_of(existing)),
                            None => {
                                return Err(Error::Api {
                                    kind: Kind::Secret,
                                    source: err,
                                });
                            }
                        }
                    }
                    Err(err) => {
                        return Err(Error::Api {
                            kind: Kind::Secret,
                            source: err,
                        });
                    }
                }
            }
        };
        if self.controls(&*current) {
            Ok(Applied::Unchanged(current))
        } else {
            Ok(self.conflict(&*current))
        }
    }

    /// Writes the Secret's data (the Secret is the access's: `ensure_secret` said so).
    pub async fn apply_secret(&self, wanted: &Secret) -> Result<(), Error> {
        let applied = self.apply(wanted).await.map_err(Error::api(Kind::Secret))?;
        self.wrote_secret(applied);
        Ok(())
    }

    fn wrote_secret(&self, secret: Secret) -> Arc<PartialObjectMeta<Secret>> {
        self.caches.secrets.wrote(metadata_of(secret))
    }

    /// Deletes `current` if the access controls it; anything else is left alone. Whether it
    /// deleted.
    pub async fn remove<K: Object + Cached>(
        &self,
        kind: Kind,
        current: Option<Arc<K>>,
    ) -> Result<bool, Error> {
        match current {
            Some(current) if self.controls(&*current) => {
                self.api::<K>()
                    .delete(&current.name_any(), &DeleteParams::default())
                    .await
                    .map_err(Error::api(kind))?;
                K::cache(self.caches).removed(&current);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Records that a workload's Pods run with the credential issued at `issued_at` and, with
    /// `restart`, restarts them first as `kubectl rollout restart` does (a new `restartedAt` on
    /// the pod template), in one write, so the next reconcile, or another operator process,
    /// does not restart again. Only a workload whose own annotation consents for `access`: it
    /// is not the access's object, and whoever may create accesses must not be able to make
    /// the operator patch it. The write is conditional on the version consent was read from.
    /// Whether it wrote (false: no consent, or the workload is gone).
    pub async fn record_or_restart<W: Object + Cached + Workload>(
        &self,
        current: &W,
        access: &str,
        issued_at: Timestamp,
        restart: Option<Timestamp>,
    ) -> Result<bool, Error> {
        if !restart_consented(current, access) {
            return Ok(false);
        }
        let mut patch = serde_json::json!({
            "metadata": {
                "resourceVersion": current.meta().resource_version,
                "annotations": {(started_with_annotation(access)): issued_at.to_string()},
            },
        });
        if let Some(now) = restart {
            // Not truncated to seconds as kubectl's: two renewals within a second must still
            // change the template twice.
            patch["spec"] = serde_json::json!({"template": {"metadata": {"annotations": {
                ANNOTATION_RESTARTED_AT: now.to_string(),
            }}}});
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match self
            .api::<W>()
            .patch(&current.name_any(), &params, &Patch::Merge(&patch))
            .await
        {
            Ok(patched) => {
                W::cache(self.caches).wrote(patched);
                Ok(true)
            }
            Err(err) if api_status(&err) == Some(404) => Ok(false),
            Err(err) => Err(Error::api(Kind::Workload)(err)),
        }
    }

    /// The workloads that read the Secret `name` in this namespace (no request).
    pub fn readers_of(&self, name: &str) -> Vec<WorkloadKey> {
        self.caches.readers.of_secret(&self.namespace, name)
    }

    /// The access's status, written only when it differs from the newest one known.
    pub async fn publish_status(
        &self,
        access: &InferenceAccess,
        status: &InferenceAccessStatus,
    ) -> Result<Applied<InferenceAccess>, Error> {
        let name = access.name_any();
        let newest = self
            .cached::<InferenceAccess>(&name)
            .filter(|cached| cached.metadata.uid == access.metadata.uid);
        let previous = newest
            .as_ref()
            .map_or(access.status.as_ref(), |n| n.status.as_ref());
        if previous == Some(status) {
            return Ok(Applied::Unchanged(
                newest.unwrap_or_else(|| Arc::new(access.clone())),
            ));
        }
        let patch = serde_json::json!({
            "apiVersion": InferenceAccess::api_version(&()),
            "kind": InferenceAccess::kind(&()),
            "metadata": {"name": name},
            "status": status,
        });
        let written = self
            .api::<InferenceAccess>()
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(Error::api(Kind::Status))?;
        Ok(Applied::Changed(self.caches.accesses.wrote(written)))
    }

    fn controls<K: Resource>(&self, object: &K) -> bool {
        is_controlled_by(object.meta(), &self.owner_uid)
    }

    fn conflict<K: Resource, T>(&self, object: &K) -> Applied<T> {
        Applied::Conflict {
            owner: controller_of(object.meta()),
        }
    }
}

/// A Secret as the metadata cache holds it.
pub fn metadata_of(secret: Secret) -> PartialObjectMeta<Secret> {
    secret.metadata.into_response_partial()
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
