//! What maps a change of another kind to the accesses it concerns: owner references, the labels
//! of a policy outside its access's namespace, the model an access reaches, and the consents
//! (ReferenceGrants) an access across namespaces depends on.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tracing::warn;

use crate::api::keys::{ACCESS_LABEL, ACCESS_NAMESPACE_LABEL};
use crate::api::{AccessMeta, AuthorizationPolicy, InferenceAccess};
use crate::reconcile::consent::reference_grants;
use crate::runtime::index::ReferenceIndex;

/// The accesses that control `object` (owner references).
pub fn owners<K: Resource>(object: &K) -> Vec<ObjectRef<AccessMeta>> {
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.controller == Some(true) && r.kind == InferenceAccess::kind(&()))
        .map(|r| ObjectRef::new(&r.name).within(&namespace))
        .collect()
}

/// The model an access reaches: `(namespace, name)`, its own namespace unless it names another.
pub fn model_of(access: &InferenceAccess) -> Option<(String, String)> {
    let target = &access.spec.inference_service;
    let namespace = target
        .namespace
        .clone()
        .or_else(|| access.metadata.namespace.clone())?;
    Some((namespace, target.name.clone()))
}

/// The access a policy outside its namespace names in its labels.
pub fn labelled_access(policy: &AuthorizationPolicy) -> Option<ObjectRef<AccessMeta>> {
    let labels = policy.metadata.labels.as_ref()?;
    let namespace = labels.get(ACCESS_NAMESPACE_LABEL)?;
    let name = labels.get(ACCESS_LABEL)?;
    (policy.metadata.namespace.as_ref() != Some(namespace))
        .then(|| ObjectRef::new(name).within(namespace))
}

/// Whether ReferenceGrants are served cluster-wide (a list of at most one).
pub async fn reference_grants_served(client: &Client) -> bool {
    let api = Api::<DynamicObject>::all_with(client.clone(), &reference_grants());
    match api
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
    {
        Ok(_) => true,
        Err(err) => {
            warn!(error = %crate::reconcile::error::describe(&err), "ReferenceGrants (gateway.networking.k8s.io) cannot be listed cluster-wide: no access may reach a model in another namespace");
            false
        }
    }
}

/// The namespace whose ReferenceGrants decide an access: its model's, when that is another
/// (the index key's name is empty: every grant there concerns it).
pub fn consent_namespace(access: &InferenceAccess) -> Option<(String, String)> {
    let other = access.spec.inference_service.namespace.clone()?;
    (Some(&other) != access.metadata.namespace.as_ref()).then(|| (other, String::new()))
}

/// Every ReferenceGrant in the cluster, watched: a change (a revocation above all) triggers the
/// accesses whose model is in the grant's namespace, found in `consents`.
pub fn grants(
    client: &Client,
    consents: Arc<ReferenceIndex>,
) -> impl Stream<Item = ObjectRef<AccessMeta>> + Send + 'static {
    watcher::watcher(
        Api::<DynamicObject>::all_with(client.clone(), &reference_grants()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(move |grant| {
        let accesses = match grant {
            Ok(grant) => {
                let namespace = grant.metadata.namespace.unwrap_or_default();
                Some(futures::stream::iter(
                    consents.accesses_named(&namespace, ""),
                ))
            }
            Err(err) => {
                warn!(error = %err, "ReferenceGrant watch");
                None
            }
        };
        std::future::ready(accesses)
    })
    .flatten()
}
