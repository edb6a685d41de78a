//! The operations endpoint: `/metrics` (Prometheus), `/healthz` (the process serves) and
//! `/readyz` (the CRD is established and, on the leader, the caches are synced).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::runtime::metrics::Metrics;

/// Readiness, as the process learns it.
#[derive(Debug, Default)]
pub struct Health {
    crd_established: AtomicBool,
    /// Controller caches still syncing; only the leader runs controllers.
    caches_syncing: AtomicUsize,
}

impl Health {
    pub fn crd_established(&self) {
        self.crd_established.store(true, Ordering::SeqCst);
    }

    /// Controllers are about to start: not ready until they have registered their caches
    /// (`controllers_registered`). Without it `/readyz` answered 200 between the CRD check and
    /// the controllers' first cache, before anything was listed.
    pub fn controllers_starting(&self) {
        self.caches_syncing.fetch_add(1, Ordering::SeqCst);
    }

    pub fn controllers_registered(&self) {
        self.caches_syncing.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn cache_started(&self) {
        self.caches_syncing.fetch_add(1, Ordering::SeqCst);
    }

    pub fn cache_synced(&self) {
        self.caches_syncing.fetch_sub(1, Ordering::SeqCst);
    }

    /// `None` when ready, else why not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.crd_established.load(Ordering::SeqCst) {
            Some("the InferenceAccess CRD is not established yet")
        } else if self.caches_syncing.load(Ordering::SeqCst) > 0 {
            Some("the controller caches are still syncing")
        } else {
            None
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn respond(status: StatusCode, content_type: &str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn text(body: impl Into<String>) -> Body {
    Full::new(Bytes::from(body.into())).boxed()
}

fn route(path: &str, metrics: &Arc<Metrics>, health: &Health) -> Response<Body> {
    match path {
        "/healthz" => respond(StatusCode::OK, "text/plain", text("ok\n")),
        "/readyz" => match health.not_ready() {
            None => respond(StatusCode::OK, "text/plain", text("ok\n")),
            Some(why) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                text(format!("{why}\n")),
            ),
        },
        // Written as it is sent: the per-access series are most of a large operator's scrape.
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            BodyExt::boxed(StreamBody::new(
                metrics
                    .clone()
                    .stream()
                    .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk))),
            )),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", text("not found\n")),
    }
}

/// Serves until `shutdown` turns true; connections in flight finish first.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = shutdown.changed() => break,
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        let service = service_fn(move |request: Request<Incoming>| {
            let response = route(request.uri().path(), &metrics, &health);
            async move { Ok::<_, Infallible>(response) }
        });
        connections.spawn(async move {
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %err, "ops connection");
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Binds the ops address, with a clear error when it is taken.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on --metrics-addr {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_follows_crd_and_caches() {
        let health = Health::default();
        let metrics = Arc::new(Metrics::default());
        let status = |h: &Health| route("/readyz", &metrics, h).status();
        assert_eq!(status(&health), StatusCode::SERVICE_UNAVAILABLE);
        // A standby replica runs no controllers: the CRD is all it waits for.
        health.crd_established();
        assert_eq!(status(&health), StatusCode::OK);
        // A leader (or a replica without election) is not ready from the moment its
        // controllers start until their caches hold the first list.
        health.controllers_starting();
        assert_eq!(status(&health), StatusCode::SERVICE_UNAVAILABLE);
        health.cache_started();
        health.controllers_registered();
        assert_eq!(status(&health), StatusCode::SERVICE_UNAVAILABLE);
        health.cache_synced();
        assert_eq!(status(&health), StatusCode::OK);
        assert_eq!(
            route("/healthz", &metrics, &health).status(),
            StatusCode::OK
        );
        assert_eq!(
            route("/metrics", &metrics, &health).status(),
            StatusCode::OK
        );
        assert_eq!(
            route("/nope", &metrics, &health).status(),
            StatusCode::NOT_FOUND
        );
    }
}
