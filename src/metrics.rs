//! Prometheus metrics (`GET /metrics`): requests by route and status, latency, bytes served,
//! upload rejections by reason. One registry per server, so several servers in one process
//! (tests, federation) never mix their numbers.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;

use reliquary_client::types::{SyncSummary, Timestamp};

use crate::store::RemoteState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemoteLabels {
    remote: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    delivery: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

pub struct Metrics {
    registry: Mutex<PromRegistry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    bytes_sent: Family<RouteLabels, Counter>,
    upload_rejections: Family<ReasonLabels, Counter>,
    store_unavailable: Family<RouteLabels, Counter>,
    sync_last_success: Family<RemoteLabels, Gauge>,
    sync_lag: Family<RemoteLabels, Gauge>,
    sync_artefacts: Family<RemoteLabels, Counter>,
    sync_bytes: Family<RemoteLabels, Counter>,
    sync_errors: Family<RemoteLabels, Counter>,
    open_connections: Gauge,
    downloads: Family<DeliveryLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = PromRegistry::with_prefix("reliquary");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let bytes_sent = Family::<RouteLabels, Counter>::default();
        let upload_rejections = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head",
            latency.clone(),
        );
        registry.register(
            "http_response_bytes",
            "Response bytes announced by Content-Length",
            bytes_sent.clone(),
        );
        registry.register(
            "upload_rejections",
            "Refused uploads by error code",
            upload_rejections.clone(),
        );
        let store_unavailable = Family::<RouteLabels, Counter>::default();
        registry.register(
            "store_unavailable",
            "Requests answered 503/507 because a store was unreachable or full",
            store_unavailable.clone(),
        );
        let sync_last_success = Family::<RemoteLabels, Gauge>::default();
        let sync_lag = Family::<RemoteLabels, Gauge>::default();
        let sync_artefacts = Family::<RemoteLabels, Counter>::default();
        let sync_bytes = Family::<RemoteLabels, Counter>::default();
        let sync_errors = Family::<RemoteLabels, Counter>::default();
        registry.register(
            "sync_last_success_timestamp_seconds",
            "When a pass over the remote last succeeded",
            sync_last_success.clone(),
        );
        registry.register(
            "sync_lag",
            "The peer's last seq minus the applied cursor",
            sync_lag.clone(),
        );
        registry.register(
            "sync_artefacts_mirrored",
            "Artefacts mirrored or deleted from the remote",
            sync_artefacts.clone(),
        );
        registry.register(
            "sync_bytes",
            "Tarball bytes downloaded from the remote",
            sync_bytes.clone(),
        );
        registry.register(
            "sync_errors",
            "Failed passes over the remote",
            sync_errors.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "http_open_connections",
            "Client connections open now (bounded by the header and send timeouts)",
            open_connections.clone(),
        );
        let downloads = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "tarball_downloads",
            "Tarball downloads by delivery: streamed through this replica, or redirected to object storage",
            downloads.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            bytes_sent,
            upload_rejections,
            store_unavailable,
            sync_last_success,
            sync_lag,
            sync_artefacts,
            sync_bytes,
            sync_errors,
            open_connections,
            downloads,
        }
    }
}

/// Counts one open connection until dropped.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Call when a connection is accepted; keep the guard for as long as it is served.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.open_connections.inc();
        ConnectionGuard(self.open_connections.clone())
    }

    /// Counts and times one answered request by its route template.
    pub fn request_served(
        &self,
        method: String,
        route: String,
        status: u16,
        latency_seconds: f64,
        bytes: Option<u64>,
    ) {
        let labels = RouteLabels {
            route: route.clone(),
        };
        self.latency.get_or_create(&labels).observe(latency_seconds);
        if let Some(bytes) = bytes {
            self.bytes_sent.get_or_create(&labels).inc_by(bytes);
        }
        // 503 and 507: a store was unreachable or full.
        if status == 503 || status == 507 {
            self.store_unavailable.get_or_create(&labels).inc();
        }
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    pub fn open_connections(&self) -> i64 {
        self.open_connections.get()
    }

    /// One tarball download, streamed here (`stream`) or redirected to storage (`redirect`).
    pub fn tarball_download(&self, delivery: &'static str) {
        self.downloads
            .get_or_create(&DeliveryLabels { delivery })
            .inc();
    }

    pub fn upload_rejected(&self, reason: &str) {
        self.upload_rejections
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records one sync pass over `remote`.
    pub fn sync_pass(
        &self,
        remote: &str,
        summary: &SyncSummary,
        state: &RemoteState,
        succeeded: bool,
    ) {
        let labels = RemoteLabels {
            remote: remote.to_owned(),
        };
        self.sync_artefacts
            .get_or_create(&labels)
            .inc_by(summary.mirrored + summary.deleted);
        self.sync_bytes.get_or_create(&labels).inc_by(summary.bytes);
        self.sync_lag
            .get_or_create(&labels)
            .set(state.peer_last_seq - state.cursor);
        if succeeded {
            self.sync_last_success
                .get_or_create(&labels)
                .set(Timestamp::now().millis() / 1000);
        } else {
            self.sync_errors.get_or_create(&labels).inc();
        }
    }

    /// Registers further metrics (e.g. the sync worker's) in this server's registry.
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut PromRegistry) -> T) -> T {
        f(&mut self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String");
        out
    }
}
