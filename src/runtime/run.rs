//! The controller process: signals, the ops endpoint, waiting for the CRD, leader election and
//! the controllers, as one structured set of futures (no detached tasks).

use std::net::SocketAddr;
use std::sync::Arc;

use kube::Client;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::api::InferenceAccess;
use crate::runtime::controller;
use crate::runtime::leader::{self, Elector};
use crate::runtime::metrics::Metrics;
use crate::runtime::ops::{self, Health};

/// How often to look whether the InferenceAccess API is served yet, at start.
const API_POLL: std::time::Duration = std::time::Duration::from_secs(2);

pub struct Options {
    pub controller: controller::Settings,
    pub metrics_addr: SocketAddr,
    /// Leader election, when more than one replica may run.
    pub leader: Option<leader::Settings>,
}

/// Runs until SIGTERM/SIGINT (graceful: reconciles finish, the Lease is released) or until
/// leadership is lost (an error, so the process restarts as client-go's do).
pub async fn run(client: Client, options: Options) -> Result<(), String> {
    let listener = ops::bind(options.metrics_addr).await?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let (stop, stopped) = watch::channel(false);

    let signals = {
        let mut stopped = stopped.clone();
        let stop = stop.clone();
        async move {
            tokio::select! {
                () = terminate_signal() => {
                    info!("shutting down");
                    let _ = stop.send(true);
                }
                _ = stopped.wait_for(|s| *s) => {}
            }
        }
    };
    let ops = ops::serve(listener, metrics.clone(), health.clone(), stopped.clone());
    let work = async {
        let result = work(
            client,
            options,
            metrics.clone(),
            health.clone(),
            stopped.clone(),
        )
        .await;
        let _ = stop.send(true);
        result
    };
    let ((), served, worked) = tokio::join!(signals, ops, work);
    served.map_err(|e| format!("ops endpoint: {e}"))?;
    worked
}

async fn work(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), String> {
    // A list in a watched namespace (or the cluster) rather than a watch of the CRD: the
    // operator needs no cluster-wide rights when it watches listed namespaces.
    let probe = options.controller.namespaces.first().cloned();
    info!("waiting for the InferenceAccess API to be served");
    loop {
        match controller::served::<InferenceAccess>(&client, probe.as_deref()).await {
            Ok(true) => break,
            Ok(false) => debug!("the InferenceAccess API is not served yet"),
            Err(err) => {
                warn!(error = %crate::reconcile::error::describe(&err), "cannot list InferenceAccesses yet")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(API_POLL) => {}
            _ = stopped.wait_for(|s| *s) => return Ok(()),
        }
    }
    if options.leader.is_none() {
        health.controllers_starting();
    }
    health.crd_established();
    let run_controllers = controller::run(
        client.clone(),
        options.controller,
        metrics.clone(),
        health.clone(),
        stopped.clone(),
    );
    let Some(settings) = options.leader else {
        metrics.leading(true);
        run_controllers.await;
        metrics.leading(false);
        return Ok(());
    };
    let elector = Elector::new(client, settings);
    if !elector.acquire(&mut stopped).await {
        return Ok(());
    }
    // A standby is ready; a new leader is not until its caches have synced.
    health.controllers_starting();
    metrics.leading(true);
    let result = tokio::select! {
        () = run_controllers => {
            elector.release().await;
            Ok(())
        }
        () = elector.hold() => {
            error!("lost leadership: exiting so a standby replica takes over");
            Err("lost the leader Lease".into())
        }
    };
    metrics.leading(false);
    result
}

async fn terminate_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
