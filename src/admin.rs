//! The plain-HTTP admin port: `GET /livez`, `GET /readyz` and `GET /metrics`.
//!
//! It is kept off the webhook's TLS port so that probes and scrapes need no certificate and
//! never compete with admission traffic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
/// and not ready again when it starts draining. While not ready it may say what it waits
/// for ([`Readiness::set_waiting`]). Clones share the flag and the reason.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    waiting_for: Arc<Mutex<Option<String>>>,
}

impl Readiness {
    /// A new flag, not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks ready (and forgets what it waited for).
    pub fn set_ready(&self) {
        *self.lock_reason() = None;
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Marks not ready.
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }

    /// Marks not ready, waiting for `what` (e.g. a file path); `/readyz` then answers
    /// `not ready: waiting for <what>`.
    pub fn set_waiting(&self, what: impl Into<String>) {
        self.ready.store(false, Ordering::SeqCst);
        *self.lock_reason() = Some(what.into());
    }

    /// True when ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Why not ready, as `/readyz` says it: `waiting for <what>` after
    /// [`Readiness::set_waiting`], else `TLS not loaded`.
    pub fn reason(&self) -> String {
        match self.lock_reason().as_deref() {
            Some(what) => format!("waiting for {what}"),
            None => "TLS not loaded".to_owned(),
        }
    }

    fn lock_reason(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A panic while holding this lock cannot leave the Option half-written.
        self.waiting_for
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The admin routes:
/// - `GET /livez`: 200 `ok` while the process serves HTTP at all;
/// - `GET /readyz`: 200 `ready`, or 503 `not ready: TLS not loaded` before the webhook is
///   up (and while it drains), `not ready: waiting for <path>` while it waits for its
///   certificate files ([`Readiness::reason`]);
/// - `GET /metrics`: [`Metrics::encode`] with content type
///   `application/openmetrics-text; version=1.0.0; charset=utf-8`.
pub fn router(metrics: Arc<Metrics>, readiness: Readiness) -> Router {
    let metrics = Router::new()
        .route("/metrics", get(metrics_handler))
        .with_state(metrics);
    probes(readiness).merge(metrics)
}

/// `GET /livez` and `GET /readyz` alone, as [`router`] serves them (the reloader sidecar
/// adds its own `/metrics`).
pub fn probes(readiness: Readiness) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    if readiness.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        let reason = readiness.reason();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        )
            .into_response()
    }
}

/// The size of the chunks `/metrics` is streamed in, in bytes.
const METRICS_CHUNK_BYTES: usize = 64 * 1024;

/// A `fmt::Write` that hands the text on in [`METRICS_CHUNK_BYTES`] chunks, and stops (a
/// `fmt::Error`) when the scraper has gone. The channel is unbounded on purpose: the
/// encoder holds the registry's and the per-McpServer collector's locks while it writes,
/// and reconciles take the collector's lock on runtime workers, so waiting here for the
/// scraper (which a runtime worker serves) could deadlock a two-worker runtime. A slow
/// scraper can make the chunks pile up to the whole text, never twice it.
struct ChunkWriter {
    buf: String,
    tx: tokio::sync::mpsc::UnboundedSender<bytes::Bytes>,
}

impl ChunkWriter {
    fn flush(&mut self) -> std::fmt::Result {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, String::with_capacity(METRICS_CHUNK_BYTES));
        self.tx
            .send(bytes::Bytes::from(chunk))
            .map_err(|_| std::fmt::Error)
    }
}

impl std::fmt::Write for ChunkWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.buf.push_str(s);
        if self.buf.len() >= METRICS_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }
}

/// `GET /metrics`: the OpenMetrics text, encoded on a blocking thread (with 10,000
/// McpServers it takes a few hundred milliseconds, which would hold up a runtime worker
/// and the admissions queued on it) and streamed in 64 KiB chunks as they come (the text,
/// about 28 MB then, was a `String` grown by doubling: up to twice its size at once).
async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<bytes::Bytes>();
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            buf: String::with_capacity(METRICS_CHUNK_BYTES),
            tx,
        };
        if metrics
            .encode_to(&mut out)
            .and_then(|()| out.flush())
            .is_err()
        {
            tracing::debug!("a /metrics scrape ended before its text was sent");
        }
    });
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        axum::body::Body::from_stream(chunks),
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
