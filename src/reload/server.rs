//! The sidecar's admin port: `/livez`, `/readyz` (shared with the webhook's,
//! [`crate::admin`]), `/metrics` and `/status`.
//!
//! | metric | type | labels |
//! |--------|------|--------|
//! | `mcptrust_reloader_decisions_total` | counter | `decision` (every name of [`DECISIONS`]) |
//! | `mcptrust_reloader_signals_total` | counter | none; signals sent |
//! | `mcptrust_reloader_changes_total` | counter | none; settled changes evaluated (one per debounce) |
//! | `mcptrust_reloader_killed_target` | gauge | none; 1 once a signal killed the target |

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::state::{Book, DECISIONS};
use crate::admin::Readiness;
use crate::metrics::OPENMETRICS_CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: String,
}

/// The sidecar's metrics (see the [module documentation](self)).
#[derive(Debug)]
pub struct ReloaderMetrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    signals: Counter,
    changes: Counter,
    killed_target: Gauge,
}

impl Default for ReloaderMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ReloaderMetrics {
    /// Registers the metrics (prefix `mcptrust_reloader`), every decision series at 0.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mcptrust_reloader");
        let decisions = Family::<DecisionLabels, Counter>::default();
        for d in DECISIONS {
            let _ = decisions.get_or_create(&DecisionLabels {
                decision: d.to_owned(),
            });
        }
        registry.register(
            "decisions",
            "Decisions taken, by decision",
            decisions.clone(),
        );
        let signals = Counter::default();
        registry.register("signals", "Signals sent to the target", signals.clone());
        let changes = Counter::default();
        registry.register(
            "changes",
            "Settled changes of the watched directories evaluated (one per debounce)",
            changes.clone(),
        );
        let killed_target = Gauge::default();
        registry.register(
            "killed_target",
            "1 once a signal killed the target (no more signals are sent)",
            killed_target.clone(),
        );
        Self {
            registry,
            decisions,
            signals,
            changes,
            killed_target,
        }
    }

    /// Counts a decision by its stable name.
    pub fn decision(&self, name: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: name.to_owned(),
            })
            .inc();
    }

    /// Counts a signal sent.
    pub fn signal(&self) {
        self.signals.inc();
    }

    /// Counts a settled change.
    pub fn change(&self) {
        self.changes.inc();
    }

    /// Sets the killed-target gauge to 1.
    pub fn killed_target(&self) {
        self.killed_target.set(1);
    }

    /// OpenMetrics text, ending in `# EOF\n`.
    pub fn encode(&self) -> String {
        crate::metrics::encode_registry(&self.registry)
    }
}

/// What the loop and the admin port share: the book (for `/status`) and the metrics.
#[derive(Debug)]
pub struct Shared {
    book: Mutex<Book>,
    /// The metrics.
    pub metrics: ReloaderMetrics,
}

impl Shared {
    /// Starts with `book`.
    pub fn new(book: Book) -> Self {
        Self {
            book: Mutex::new(book),
            metrics: ReloaderMetrics::new(),
        }
    }

    /// The book, locked.
    pub fn book(&self) -> MutexGuard<'_, Book> {
        // Every change to the book is a few field writes; a panic cannot leave it torn.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The admin routes: [`crate::admin::probes`] plus `GET /metrics` (OpenMetrics) and
/// `GET /status` ([`crate::api::reloader::ReloaderStatus`] as JSON).
pub fn router(shared: Arc<Shared>, readiness: Readiness) -> Router {
    let own = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(shared);
    crate::admin::probes(readiness).merge(own)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let status = shared.book().status.clone();
    Json(status).into_response()
}
