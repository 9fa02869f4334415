//! The plain-HTTP admin port: `GET /livez`, `GET /readyz` and `GET /metrics`.
//!
//! It is kept off the webhook's TLS port so that probes and scrapes need no certificate and
//! never compete with admission traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};

/// Flags of the admin port.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminArgs {
    /// Address of the plain-HTTP admin port (/livez, /readyz, /metrics).
    #[arg(
        long = "admin-listen",
        env = "MCPTRUST_ADMIN_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_listen: SocketAddr,
}

/// Whether the process is ready to take admission traffic (`/readyz`). Starts not ready;
/// the webhook marks it ready once its TLS certificate is loaded and its listener bound,
/// and not ready again when it starts draining. Clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A new flag, not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Marks not ready.
    pub fn set_not_ready(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// True when ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// The admin routes:
/// - `GET /livez`: 200 `ok` while the process serves HTTP at all;
/// - `GET /readyz`: 200 `ready`, or 503 `not ready: TLS not loaded` before the webhook is
///   up (and while it drains);
/// - `GET /metrics`: [`Metrics::encode`] with content type
///   `application/openmetrics-text; version=1.0.0; charset=utf-8`.
pub fn router(metrics: Arc<Metrics>, readiness: Readiness) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AdminState { metrics, readiness })
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: TLS not loaded").into_response()
    }
}

async fn metrics_handler(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

/// Serves `router` on `listener` (plain HTTP/1.1) until `shutdown` resolves, then lets
/// in-flight requests finish.
///
/// # Errors
/// The I/O error if serving fails.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin port listening");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
