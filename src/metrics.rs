//! Prometheus metrics of the webhook and its TLS reloader, served by the admin port
//! (see [`crate::admin`]) in the OpenMetrics text format.
//!
//! | name | type | labels |
//! |------|------|--------|
//! | `mcptrust_admission_requests_total` | counter | `outcome` = `patched`, `unchanged`, `skipped`, `invalid`, `error` |
//! | `mcptrust_admission_duration_seconds` | histogram | none; buckets 50µs × 2ⁿ, n = 0..15 (up to ~1.6s) |
//! | `mcptrust_tls_reloads_total` | counter | `result` = `success`, `failure` |
//! | `mcptrust_tls_certificate_not_after_timestamp_seconds` | gauge | none; Unix seconds of the served leaf's notAfter |
//!
//! Other components add their own metrics to the same registry with
//! [`Metrics::register_with`], without repeating the prefix: the controller's are listed in
//! [`crate::controller::metrics`].

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label set of `mcptrust_admission_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Label set of `mcptrust_tls_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The process's metrics and the registry that encodes them.
///
/// Cheap to share behind an `Arc`: every metric is a set of atomics, and the registry is
/// only locked to register or encode.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    admission_requests: Family<OutcomeLabels, Counter>,
    admission_duration: Histogram,
    tls_reloads: Family<ResultLabels, Counter>,
    tls_not_after: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the registry (prefix `mcptrust`) and registers every metric listed in the
    /// [module documentation](self). All label values of the counters are pre-created at
    /// zero, so dashboards see every series from the first scrape.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mcptrust");

        let admission_requests = Family::<OutcomeLabels, Counter>::default();
        for outcome in ["patched", "unchanged", "skipped", "invalid", "error"] {
            let _ = admission_requests.get_or_create(&OutcomeLabels { outcome });
        }
        registry.register(
            "admission_requests",
            "AdmissionReview requests answered, by outcome",
            admission_requests.clone(),
        );

        let admission_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register_with_unit(
            "admission_duration",
            "Time to answer one AdmissionReview, from the full body being read to the answer being encoded",
            Unit::Seconds,
            admission_duration.clone(),
        );

        let tls_reloads = Family::<ResultLabels, Counter>::default();
        for result in ["success", "failure"] {
            let _ = tls_reloads.get_or_create(&ResultLabels { result });
        }
        registry.register(
            "tls_reloads",
            "Reloads of the webhook serving certificate, by result (a failure keeps the old certificate)",
            tls_reloads.clone(),
        );

        let tls_not_after = Gauge::default();
        registry.register(
            "tls_certificate_not_after_timestamp_seconds",
            "notAfter of the webhook serving certificate currently served, as Unix seconds",
            tls_not_after.clone(),
        );

        Self {
            registry: Mutex::new(registry),
            admission_requests,
            admission_duration,
            tls_reloads,
            tls_not_after,
        }
    }

    /// Counts one answered AdmissionReview under `outcome` (one of `patched`, `unchanged`,
    /// `skipped`, `invalid`, `error`; see [`crate::webhook::ReviewOutcome::as_str`]) and
    /// records how long answering took.
    pub fn observe_admission(&self, outcome: &'static str, elapsed: Duration) {
        self.admission_requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.admission_duration.observe(elapsed.as_secs_f64());
    }

    /// The current value of `mcptrust_admission_requests_total{outcome}`.
    pub fn admission_requests(&self, outcome: &'static str) -> u64 {
        self.admission_requests
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    /// Counts one reload of the serving certificate: `success = false` when the new files
    /// were rejected and the old certificate kept.
    pub fn observe_tls_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The current value of `mcptrust_tls_reloads_total{result}` (`success` or `failure`).
    pub fn tls_reloads(&self, success: bool) -> u64 {
        let result = if success { "success" } else { "failure" };
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .get()
    }

    /// Sets the served certificate's notAfter, in Unix seconds.
    pub fn set_tls_not_after(&self, unix_seconds: i64) {
        self.tls_not_after.set(unix_seconds);
    }

    /// Gives `f` the registry, to register further metrics (for example the controller's).
    /// Names are prefixed with `mcptrust_`.
    pub fn register_with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut registry)
    }

    /// Encodes every registered metric in the OpenMetrics text format (ending in
    /// `# EOF\n`), to be served with [`OPENMETRICS_CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        encode_registry(&registry)
    }

    /// [`Metrics::encode`] into `out` as it goes, for a scrape streamed in chunks: with
    /// 10,000 McpServers the text is about 28 MB, which a `String` grown by doubling held
    /// twice over at its peak. `out` must not wait on anything a runtime worker does: the
    /// registry's lock and the per-McpServer collector's are held while it writes.
    ///
    /// # Errors
    /// `out`'s error, which stops the encoding (the scraper went away).
    pub fn encode_to(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        prometheus_client::encoding::text::encode(out, &registry)
    }
}

/// Encodes `registry` in the OpenMetrics text format (ending in `# EOF\n`), to be served
/// with [`OPENMETRICS_CONTENT_TYPE`] (also the reloader sidecar's own registry).
pub fn encode_registry(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut out, registry) {
        // Only a `fmt::Write` error can get here, and writing to a String does not fail.
        tracing::warn!(error = %err, "failed to encode metrics");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_all_families_with_expected_names() {
        let metrics = Metrics::new();
        metrics.observe_admission("patched", Duration::from_micros(70));
        metrics.observe_tls_reload(false);
        metrics.set_tls_not_after(1_700_000_000);
        let text = metrics.encode();
        assert!(text.contains("mcptrust_admission_requests_total{outcome=\"patched\"} 1"));
        assert!(text.contains("mcptrust_admission_requests_total{outcome=\"invalid\"} 0"));
        assert!(text.contains("# TYPE mcptrust_admission_duration_seconds histogram"));
        assert!(text.contains("mcptrust_admission_duration_seconds_bucket{le=\"0.00005\"} 0"));
        assert!(text.contains("mcptrust_tls_reloads_total{result=\"failure\"} 1"));
        assert!(text.contains("mcptrust_tls_certificate_not_after_timestamp_seconds 1700000000"));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(metrics.admission_requests("patched"), 1);
        assert_eq!(metrics.tls_reloads(false), 1);
    }
}
