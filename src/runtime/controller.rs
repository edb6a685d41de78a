//! Wires the reconcile pipeline to the watches that trigger it.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::runtime::controller::{Controller, Error as ControllerError};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::api::InferenceAccess;
use crate::api::keys::{DEX_LOGIN_LABEL, FIELD_MANAGER, OWNED_SELECTOR};
use crate::api::{AuthorizationPolicy, InferenceService};
use crate::reconcile::limits::Limits;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::runtime::metrics::Metrics;
use crate::runtime::ops::Health;

pub struct Settings {
    /// Namespaces to watch; empty watches the whole cluster.
    pub namespaces: Vec<String>,
    /// Accesses reconciled at once.
    pub concurrency: u16,
    /// What an access may ask for.
    pub limits: Limits,
}

/// Runs one controller per watched namespace (or one for the cluster) until `shutdown` turns
/// true; reconciles in flight finish first.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) {
    let probe = settings.namespaces.first().map(String::as_str);
    let istio_installed = match served::<AuthorizationPolicy>(&client, probe).await {
        Ok(served) => served,
        Err(err) => {
            warn!(error = %crate::reconcile::error::describe(&err), "cannot tell whether Istio is installed; assuming it is");
            true
        }
    };
    if !istio_installed {
        warn!(
            "AuthorizationPolicy (security.istio.io) is not served: accesses in AuthorizationPolicy mode will report IstioNotInstalled"
        );
    }
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    // The issuer this cluster signs tokens with is one more audience never to mint for.
    let limits = match cluster_issuer(&client).await {
        Some(issuer) => settings.limits.clone().with_api_audience(&issuer),
        None => settings.limits.clone(),
    };
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            Recorder::new(client.clone(), reporter),
            jiff::Timestamp::now,
        )
        .with_metrics(metrics.clone())
        .with_limits(limits),
    );
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|namespace| {
        info!(
            namespace = namespace.as_deref().unwrap_or("<all>"),
            "watching InferenceAccesses"
        );
        let scope = Scope {
            namespace,
            istio_installed,
            concurrency: settings.concurrency,
        };
        controller(
            &client,
            scope,
            ctx.clone(),
            &metrics,
            &health,
            shutdown.clone(),
        )
    });
    futures::future::join_all(controllers).await;
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

struct Scope {
    namespace: Option<String>,
    istio_installed: bool,
    concurrency: u16,
}

async fn controller(
    client: &Client,
    scope: Scope,
    ctx: Arc<Context>,
    metrics: &Metrics,
    health: &Health,
    mut shutdown: watch::Receiver<bool>,
) {
    let namespace = scope.namespace.as_deref();
    let (istio_installed, concurrency) = (scope.istio_installed, scope.concurrency);
    // Only objects carrying the operator's label: never every Secret in the cluster.
    let owned = watcher::Config::default().labels(OWNED_SELECTOR);
    let mut controller = Controller::new(
        api::<InferenceAccess>(client, namespace),
        watcher::Config::default(),
    )
    .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
    .owns(api::<Secret>(client, namespace), owned.clone())
    .owns(api::<ServiceAccount>(client, namespace), owned.clone());
    if istio_installed {
        controller = controller.owns(api::<AuthorizationPolicy>(client, namespace), owned);
    }
    // Owned and merely referenced InferenceServices alike: a changed status.url must reach the
    // Secret of every access that points at it.
    let accesses = controller.store();
    metrics.watch_expiry(accesses.clone());
    health.cache_started();
    let synced = {
        let store = accesses.clone();
        async move {
            if store.wait_until_ready().await.is_ok() {
                health.cache_synced();
            }
        }
    };
    let stop = async move {
        // A closed channel means the process is going away too.
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let by_model = accesses.clone();
    let by_login = accesses.clone();
    let run = controller
        .watches(api::<InferenceService>(client, namespace), watcher::Config::default(), move |isvc| {
            referencing(&by_model, &isvc, |a| Some(a.spec.inference_service.name.as_str()))
        })
        // Only Secrets marked as Dex logins: a changed password retries a stopped login.
        .watches(api::<Secret>(client, namespace), watcher::Config::default().labels(&format!("{DEX_LOGIN_LABEL}=true")), move |secret| {
            referencing(&by_login, &secret, |a| {
                a.spec.auth.dex_session.as_ref().map(|d| d.credentials_secret.name.as_str())
            })
        })
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            let forget = ctx.clone();
            async move {
            match result {
                Ok((access, _)) => debug!(access = %access.name, namespace = access.namespace.as_deref().unwrap_or_default(), "reconciled"),
                // Already logged, with its category, by the error policy.
                Err(ControllerError::ReconcilerFailed(_, _)) => {}
                // A trigger for an access deleted meanwhile: nothing to do but forget it.
                Err(ControllerError::ObjectNotFound(object)) => {
                    debug!(access = %object.name, "gone before its reconcile");
                    forget.forget(object.namespace.as_deref(), &object.name);
                }
                Err(err) => warn!(error = %err, "controller"),
            }
            }
        });
    futures::join!(run, synced);
}

/// The accesses in `object`'s namespace whose `reference` names it.
fn referencing<K: Resource>(
    accesses: &kube::runtime::reflector::Store<InferenceAccess>,
    object: &K,
    reference: impl Fn(&InferenceAccess) -> Option<&str>,
) -> Vec<ObjectRef<InferenceAccess>> {
    let namespace = object.meta().namespace.as_deref();
    let name = object.meta().name.as_deref();
    accesses
        .state()
        .into_iter()
        .filter(|a| a.metadata.namespace.as_deref() == namespace && reference(a) == name)
        .map(|a| ObjectRef::from_obj(&*a))
        .collect()
}

/// Whether a kind is served (its CRD installed and established): a list of at most one object
/// in the namespace (or the cluster), so no rights on CustomResourceDefinitions are needed.
pub async fn served<K>(client: &Client, namespace: Option<&str>) -> Result<bool, kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match api::<K>(client, namespace)
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
    {
        Ok(_) => Ok(true),
        Err(err) if crate::reconcile::error::api_status(&err) == Some(404) => Ok(false),
        Err(err) => Err(err),
    }
}

/// The `issuer` of the cluster's OpenID discovery document (the API audience on most
/// distributions), or `None` when it cannot be read.
async fn cluster_issuer(client: &Client) -> Option<String> {
    let request = http::Request::get("/.well-known/openid-configuration")
        .body(Vec::new())
        .ok()?;
    match client.request::<serde_json::Value>(request).await {
        Ok(document) => document["issuer"].as_str().map(str::to_owned),
        Err(err) => {
            warn!(error = %crate::reconcile::error::describe(&err), "cannot read the cluster's token issuer; only the well-known API audiences are refused");
            None
        }
    }
}
