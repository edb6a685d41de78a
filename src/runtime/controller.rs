//! Wires the reconcile pipeline to the watches that trigger it.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Controller, Error as ControllerError};
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::runtime::{Predicate, WatchStreamExt, predicates};
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::api::keys::{DEX_LOGIN_LABEL, FIELD_MANAGER, OWNED_SELECTOR};
use crate::api::{AccessMeta, InferenceAccess};
use crate::api::{AuthorizationPolicy, InferenceService};
use crate::reconcile::cache::{Cache, Caches, trim};
use crate::reconcile::limits::Limits;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::runtime::index::ReferenceIndex;
use crate::runtime::lean::{self, Lean};
use crate::runtime::metrics::Metrics;
use crate::runtime::ops::Health;
use crate::runtime::recorder::Recorder;
use crate::runtime::triggers::{self, owners};
use crate::runtime::watches::{access_meta, cached, changed, workload_triggers};

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
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    // Each scope's caches count as syncing from here, before the requests below.
    for _ in &scopes {
        health.cache_started();
    }
    health.controllers_registered();
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
    let mut limits = match cluster_issuer(&client).await {
        Some(issuer) => settings.limits.clone().with_api_audience(&issuer),
        None => settings.limits.clone(),
    };
    // A consent the operator does not watch could be revoked unseen: across namespaces only
    // when one controller watches the whole cluster and ReferenceGrants are served.
    let grants_served =
        settings.namespaces.is_empty() && triggers::reference_grants_served(&client).await;
    limits.cross_namespace = grants_served;
    let recorder = Recorder::new(client.clone(), reporter);
    let controllers = scopes.into_iter().map(|namespace| {
        info!(
            namespace = namespace.as_deref().unwrap_or("<all>"),
            "watching InferenceAccesses"
        );
        let scope = Scope {
            namespace,
            istio_installed,
            grants_served,
            concurrency: settings.concurrency,
        };
        let base = Base {
            recorder: recorder.clone(),
            metrics: metrics.clone(),
            limits: limits.clone(),
        };
        controller(&client, scope, base, &health, shutdown.clone())
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
    /// Watch ReferenceGrants (cluster-wide): consents to reach models across namespaces.
    grants_served: bool,
    concurrency: u16,
}

/// What every scope's context shares.
struct Base {
    recorder: Recorder,
    metrics: Arc<Metrics>,
    limits: Limits,
}

/// The controller's backoff over all its trigger watches together: none. Each watch backs off
/// on its own (`default_backoff`); a shared one paused every watch whenever one failed, so after
/// a compaction the six watches' 410s were answered one by one, 1 s, 3 s, 5 s, 13 s, 25 s and
/// 46 s apart, and a changed InferenceService waited a minute.
struct EachWatchBacksOff;

impl Iterator for EachWatchBacksOff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        Some(std::time::Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for EachWatchBacksOff {
    fn reset(&mut self) {}
}

async fn controller(
    client: &Client,
    scope: Scope,
    base: Base,
    health: &Health,
    mut shutdown: watch::Receiver<bool>,
) {
    let namespace = scope.namespace.as_deref();
    let (accesses, access_writer) = kube::runtime::reflector::store::<AccessMeta>();
    let (access_cache, mut access_shelf) = Cache::<InferenceAccess>::encoded();
    let (isvc_cache, isvc_writer) = Cache::<InferenceService>::encoded();
    let (sa_cache, sa_writer) = Cache::<ServiceAccount>::encoded();
    let (secret_cache, secret_writer) = Cache::<PartialObjectMeta<Secret>>::encoded();
    let (policy_cache, policy_writer) = Cache::<AuthorizationPolicy>::encoded();
    let (deployment_cache, deployment_writer) = Cache::<Deployment>::encoded();
    let (stateful_set_cache, stateful_set_writer) = Cache::<StatefulSet>::encoded();
    let mut series = base.metrics.watch_accesses();
    let caches = Caches {
        accesses: access_cache,
        inference_services: isvc_cache,
        service_accounts: sa_cache,
        secrets: secret_cache,
        policies: policy_cache,
        deployments: deployment_cache,
        stateful_sets: stateful_set_cache,
        readers: Default::default(),
        policies_served: scope.istio_installed,
    };
    let ctx = Arc::new(
        Context::with_caches(client.clone(), base.recorder, jiff::Timestamp::now, caches)
            .with_metrics(base.metrics)
            .with_limits(base.limits),
    );
    let models = Arc::new(ReferenceIndex::across(triggers::model_of));
    // Accesses by the namespace whose ReferenceGrants decide them (the key's name is empty).
    let consents = Arc::new(ReferenceIndex::across(triggers::consent_namespace));
    let identities = Arc::new(ReferenceIndex::new(|a| a.spec.service_account.name.clone()));
    let logins = Arc::new(ReferenceIndex::new(|a| {
        a.spec
            .auth
            .dex_session
            .as_ref()
            .map(|d| d.credentials_secret.name.clone())
    }));
    let credentials = Arc::new(ReferenceIndex::new(|a| {
        Some(crate::reconcile::plan::secret_name(a))
    }));
    // Only objects carrying the operator's label: never every Secret in the cluster.
    let owned = watcher::Config::default().labels(OWNED_SELECTOR);
    let access_events = {
        let (ctx, models, consents, logins, identities, credentials) = (
            ctx.clone(),
            models.clone(),
            consents.clone(),
            logins.clone(),
            identities.clone(),
            credentials.clone(),
        );
        let observed = lean::watcher(
            api::<Lean<InferenceAccess>>(client, namespace),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(trim)
        .map_ok(move |event| {
            access_shelf.apply_watcher_event(&event);
            ctx.caches.accesses.observe(&event);
            models.observe(&event);
            consents.observe(&event);
            logins.observe(&event);
            identities.observe(&event);
            credentials.observe(&event);
            series.apply_watcher_event(&event);
            access_meta(event)
        })
        .reflect(access_writer);
        changed(observed, accesses.clone())
            // The operator's own status writes change neither: they trigger nothing.
            .predicate_filter(
                predicates::generation.combine(predicates::annotations),
                Default::default(),
            )
            // The controller makes each trigger a reference to schedule, and copies a uid in
            // it into every requeue it keeps: 10,000 of them. The store's copy keeps the uid.
            .map_ok(|mut access| {
                access.metadata.uid = None;
                access
            })
    };
    let secrets = cached(
        lean::watcher(
            api::<Lean<PartialObjectMeta<Secret>>>(client, namespace),
            owned.clone(),
        ),
        secret_writer,
        ctx.clone(),
        |c| &c.secrets,
    );
    // Every ServiceAccount, not only the operator's: a named one's consent annotation is read
    // here, and a foreign one named like a dedicated one is seen before it could be applied to.
    let service_accounts = cached(
        lean::watcher(
            api::<Lean<ServiceAccount>>(client, namespace),
            watcher::Config::default(),
        ),
        sa_writer,
        ctx.clone(),
        |c| &c.service_accounts,
    );
    // Owned and merely referenced InferenceServices alike: a changed status.url must reach the
    // Secret of every access that points at it.
    let inference_services = cached(
        lean::watcher(
            api::<Lean<InferenceService>>(client, namespace),
            watcher::Config::default(),
        ),
        isvc_writer,
        ctx.clone(),
        |c| &c.inference_services,
    );
    // Only Secrets marked as Dex logins, metadata only: a changed password retries a stopped
    // login, and no password is kept in memory.
    let dex_logins = lean::watcher(
        api::<Lean<PartialObjectMeta<Secret>>>(client, namespace),
        watcher::Config::default().labels(&format!("{DEX_LOGIN_LABEL}=true")),
    )
    .default_backoff()
    .touched_objects();
    let mut controller = Controller::for_stream(access_events, accesses)
        .with_config(kube::runtime::controller::Config::default().concurrency(scope.concurrency))
        .trigger_backoff(EachWatchBacksOff)
        // Not `owns_stream`: its references carry the owner's uid into the scheduler.
        .watches_stream(secrets, |secret| owners(&secret))
        .watches_stream(service_accounts, move |sa| {
            let mut accesses = owners(&sa);
            accesses.extend(identities.accesses_of(&sa));
            accesses
        })
        .watches_stream(inference_services, move |isvc| models.accesses_of(&isvc))
        .watches_stream(dex_logins, move |secret| logins.accesses_of(&secret))
        .reconcile_on(workload_triggers(
            lean::watcher(
                api::<Lean<Deployment>>(client, namespace),
                watcher::Config::default(),
            ),
            deployment_writer,
            ctx.clone(),
            credentials.clone(),
        ))
        .reconcile_on(workload_triggers(
            lean::watcher(
                api::<Lean<StatefulSet>>(client, namespace),
                watcher::Config::default(),
            ),
            stateful_set_writer,
            ctx.clone(),
            credentials,
        ));
    controller = controller.reconcile_on(ctx.wakeups.clone().stream());
    if scope.grants_served {
        controller = controller.reconcile_on(triggers::grants(client, consents));
    }
    if scope.istio_installed {
        // A policy outside its access's namespace (a Gateway's, a model's in another
        // namespace) has no owner reference: its labels name the access.
        controller = controller.watches_stream(
            cached(
                lean::watcher(api::<Lean<AuthorizationPolicy>>(client, namespace), owned),
                policy_writer,
                ctx.clone(),
                |c| &c.policies,
            ),
            |policy| {
                let mut accesses = owners(&policy);
                accesses.extend(triggers::labelled_access(&policy));
                accesses
            },
        );
    } else {
        // Nothing will fill it: it is complete as it is.
        drop(policy_writer);
        ctx.caches.policies.mark_synced();
    }
    let synced = {
        let ctx = ctx.clone();
        async move {
            ctx.caches.ready().await;
            health.cache_synced();
        }
    };
    let stop = async move {
        // A closed channel means the process is going away too.
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let run = controller
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
