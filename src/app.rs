//! The application: the state every route shares, the one router that composes the API and
//! the web UI, and the accept loop.

use std::future::Future;
use std::sync::Arc;

use axum::extract::FromRef;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::edge::Edge;
use crate::federation::{Federation, SyncContext};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::ui::session::Sessions;

/// What the routes share: the two services, the UI's sessions, metrics and the edge limits.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub federation: Arc<Federation>,
    pub sessions: Arc<Sessions>,
    pub metrics: Arc<Metrics>,
    pub edge: Arc<Edge>,
}

impl AppState {
    pub fn new(registry: Arc<Registry>, config: &Config) -> Self {
        let federation = Federation::new(
            SyncContext {
                artefacts: registry.store.clone(),
                remotes: registry.store.clone(),
                blobs: registry.blobs.clone(),
                signer: registry.signer.clone(),
                metrics: registry.metrics.clone(),
                audit: registry.audit.clone(),
                changes: registry.changes.clone(),
                body_limits: registry.body_limits.clone(),
                tarball_limits: registry.tarball_limits.clone(),
                peer_timeout: config.peer_timeout,
                history_per_slot: registry.history_per_slot,
                clock: registry.clock.clone(),
            },
            config.sync_lease,
        );
        Self {
            metrics: registry.metrics.clone(),
            federation: Arc::new(federation),
            sessions: Arc::default(),
            edge: Arc::new(Edge::new(config)),
            registry,
        }
    }
}

impl FromRef<AppState> for Arc<Registry> {
    fn from_ref(state: &AppState) -> Self {
        state.registry.clone()
    }
}

impl FromRef<AppState> for Arc<Edge> {
    fn from_ref(state: &AppState) -> Self {
        state.edge.clone()
    }
}

impl FromRef<AppState> for Arc<Federation> {
    fn from_ref(state: &AppState) -> Self {
        state.federation.clone()
    }
}

/// Every route: the HTTP API and the web UI, with the shared middleware.
pub fn router(state: AppState) -> Router {
    // A small body (JSON, a form) that stops arriving frees its request after the header
    // timeout, as headers that stop arriving do; uploads time themselves.
    let small_bodies = crate::http::router().merge(crate::ui::router()).layer(
        tower_http::timeout::RequestBodyTimeoutLayer::new(state.edge.header_timeout),
    );
    let routes = small_bodies
        .merge(crate::http::upload_router())
        .fallback(crate::http::not_found)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::http::JSON_BODY_LIMIT,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::track::track,
        ))
        .with_state(state);
    crate::http::traced(routes)
}

/// Serves an opened registry.
///
/// The accept loop is hyper's own connection builder rather than `axum::serve`, for the two
/// edge timeouts `axum::serve` does not expose: request headers must arrive within
/// `--header-timeout` (hyper's `header_read_timeout`), and a response write that makes no
/// progress for `--send-timeout` fails the connection (a write timeout on the socket). Together
/// they bound what slow-loris clients and readers that never read can hold.
pub async fn serve(
    app: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use tower::ServiceExt;

    let housekeeping = tokio::spawn(housekeeping(app.registry.clone()));
    app.federation.start_all().await;
    let workers = tokio::spawn({
        let federation = app.federation.clone();
        async move {
            let mut every = tokio::time::interval(federation.reconcile_interval());
            every.tick().await;
            loop {
                every.tick().await;
                federation.reconcile().await;
            }
        }
    });
    let state = app.clone();
    let app = router(app);
    tracing::info!(address = %listener.local_addr()?, "reliquary is serving");
    let mut connection = hyper::server::conn::http1::Builder::new();
    connection
        .timer(TokioTimer::new())
        .header_read_timeout(state.edge.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // TCP_NODELAY: without it, a response whose head and body go out as separate small
        // writes waits for the peer's delayed ACK (~40 ms) — measured as a 40 ms floor per
        // mirrored slot.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let stream = crate::edge::ClientSocket::new(stream, state.edge.send_timeout);
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                app.clone().oneshot(request.map(axum::body::Body::new))
            },
        );
        let served = connection.serve_connection(TokioIo::new(stream), service);
        let served = graceful.watch(served);
        let open = state.metrics.connection_opened();
        tokio::spawn(async move {
            let _open = open;
            if let Err(error) = served.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // In-flight requests, transfers included, finish; idle connections close.
    graceful.shutdown().await;
    housekeeping.abort();
    workers.abort();
    if let Err(error) = state.registry.flush_downloads().await {
        tracing::warn!(code = error.code, "could not record the last downloads");
    }
    state.federation.stop_all().await;
    Ok(())
}

/// Periodic upkeep while serving: noted downloads written every few seconds; branch retention
/// at start and every `--upkeep-interval`; audit-log retention at start and every six hours.
async fn housekeeping(registry: Arc<Registry>) {
    use std::time::Duration;
    use tokio::time::{interval, MissedTickBehavior};

    let mut flush = interval(registry.download_flush_interval);
    let mut upkeep = interval(registry.upkeep_interval);
    let mut audit = interval(Duration::from_secs(6 * 3600));
    for timer in [&mut flush, &mut upkeep, &mut audit] {
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = flush.tick() => {
                if let Err(error) = registry.flush_downloads().await {
                    tracing::warn!(code = error.code, "could not record downloads; will retry");
                }
            }
            _ = upkeep.tick() => match registry.upkeep().await {
                Ok(report) if !report.removed.is_empty() => tracing::info!(
                    removed = report.removed.len(),
                    "branch retention removed idle branch builds"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(code = error.code, "upkeep failed; will retry"),
            },
            _ = audit.tick() => match registry.prune_audit().await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "pruned audit entries past retention"),
                Err(error) => tracing::warn!(code = error.code, "could not prune the audit log"),
            },
        }
    }
}
