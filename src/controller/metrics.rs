//! The controller's metrics: the reconcile loop, counters of what it did, and one set of
//! series per McpServer (labelled `namespace`, `name`) in the shape cert-manager's users
//! alert on. All are registered into the admin port's registry ([`crate::metrics::Metrics`],
//! prefix `mcptrust_`), so the names below are what `/metrics` shows.
//!
//! | name | type | labels | value |
//! |------|------|--------|-------|
//! | `mcptrust_reconciles_total` | counter | | McpServer reconciles started |
//! | `mcptrust_reconcile_errors_total` | counter | `reason` | reconciles that failed ([`super::Error::reason`]) |
//! | `mcptrust_reconcile_duration_seconds` | histogram | | time in one reconcile |
//! | `mcptrust_api_writes_total` | counter | `resource`, `method` | write requests this process sent to the API server ([`api_write_resource`]) |
//! | `mcptrust_controller_leader` | gauge | | 1 while this replica runs the controllers |
//! | `mcptrust_certificate_issuances_total` | counter | `role`, `reason` | certificates issued, by cert-manager's reasons (`DoesNotExist` is a first issuance, the others reissues) |
//! | `mcptrust_rolling_restarts_total` | counter | `kind` | workloads restarted after a rotation |
//! | `mcptrust_endpoint_probe_failures_total` | counter | `reason` | endpoint probes that ended `EndpointVerified=False` |
//! | `mcptrust_stale_certificate_detections_total` | counter | | transitions of `EndpointVerified` to `ServingStaleCertificate`: an endpoint served a previous certificate past the grace period |
//! | `mcptrust_federation_ca_expiration_timestamp_seconds` | gauge | | the federation CA's notAfter (0 until loaded, and on non-leaders) |
//! | `mcptrust_webhook_ca_expiration_timestamp_seconds` | gauge | | the self-managed webhook CA's notAfter (0 until loaded, and on non-leaders) |
//! | `mcptrust_certificate_expiration_timestamp_seconds` | gauge | `namespace`, `name`, `role`, `secret`, `secret_namespace` | an issued certificate's notAfter |
//! | `mcptrust_certificate_renewal_timestamp_seconds` | gauge | same | when it is renewed (`notAfter - renewBefore`) |
//! | `mcptrust_mcpserver_status_condition` | gauge | `namespace`, `name`, `type`, `status` | 1 for the condition's status, 0 for the two others |
//! | `mcptrust_trust_bundle_certificates` | gauge | `namespace`, `name` | certificates in `ca-bundle.pem` |
//! | `mcptrust_trust_bundle_private_ca_expiration_timestamp_seconds` | gauge | `namespace`, `name` | the earliest notAfter among the bundle's private CAs and pinned certificates |
//! | `mcptrust_endpoint_probe_result` | gauge | `namespace`, `name`, `reason` | 1, for the last probe's `EndpointVerified` reason (one series) |
//! | `mcptrust_endpoint_probe_duration_seconds` | gauge | `namespace`, `name` | how long the last probe took |
//! | `mcptrust_endpoint_probe_timestamp_seconds` | gauge | `namespace`, `name` | when the last probe ran |
//! | `mcptrust_endpoint_peer_certificate_expiration_timestamp_seconds` | gauge | `namespace`, `name` | the notAfter of the certificate the endpoint presented |
//!
//! Times are Unix seconds, not "seconds until": a timestamp stays right between two
//! reconciles, and `x - time()` in PromQL gives the seconds left at query time.
//!
//! Per-McpServer series come from [`ServerSnapshot::from_status`], a pure function of the
//! status the reconcile just wrote (and of the bundle it built), recorded with
//! [`ControllerMetrics::record_server`]. They are removed when the McpServer is deleted
//! ([`ControllerMetrics::retain_servers`], run by [`super::run`] against the controller's
//! cache) and all at once when this replica stops leading ([`ControllerMetrics::clear_servers`]):
//! a non-leader's `/metrics` has the counters it counted while it led,
//! `mcptrust_controller_leader 0`, the CA gauges at 0, and no per-McpServer family (a family
//! without a sample is left out, here as for any empty `Family` of the registry).
//!
//! The per-McpServer families are not one prometheus-client `Family` each, which kept a
//! label set of several `String`s per series (about 10 KiB per McpServer): one collector
//! keeps each McpServer's values and encodes the nine families at scrape time, after the
//! registry's other metrics, in a stable order (McpServers by namespace and name), holding
//! its lock for a few hundred McpServers at a time.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::pki::issue::IssueReason;

mod series;
mod snapshot;
use series::ServerSeries;
pub use snapshot::{CONDITION_STATUSES, CertificateSeries, ProbeSeries, ServerSnapshot};

/// Labels of `mcptrust_reconcile_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// [`super::Error::reason`].
    pub reason: String,
}

/// Labels of `mcptrust_api_writes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    /// The resource's plural name, with `/subresource` (`configmaps`, `mcpservers/status`).
    resource: String,
    /// `POST`, `PUT`, `PATCH` or `DELETE`.
    method: &'static str,
}

/// The resource a request path names, for `mcptrust_api_writes_total`: its plural name,
/// plus `/<subresource>` when there is one (`/api/v1/namespaces/a/configmaps/x` is
/// `configmaps`, `/apis/mcptrust.io/v1alpha1/namespaces/a/mcpservers/x/status` is
/// `mcpservers/status`, `/api/v1/namespaces/a` is `namespaces`). `None` for paths that are
/// not resource paths (`/version`, `/openapi/v3`).
pub fn api_write_resource(path: &str) -> Option<String> {
    let segs: Vec<&str> = path
        .split('?')
        .next()
        .unwrap_or_default()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let rest = match segs.first().copied() {
        Some("api") => segs.get(2..)?,
        Some("apis") => segs.get(3..)?,
        _ => return None,
    };
    let rest = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        &rest[2..]
    } else {
        rest
    };
    let resource = rest.first()?;
    Some(match rest.get(2) {
        Some(sub) => format!("{resource}/{sub}"),
        None => (*resource).to_string(),
    })
}

/// Labels of `mcptrust_certificate_issuances_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuanceLabels {
    role: &'static str,
    reason: &'static str,
}

/// Labels of `mcptrust_rolling_restarts_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Labels of `mcptrust_endpoint_probe_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Controller metrics. Cheap to clone: every metric is shared.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    /// `mcptrust_reconciles_total`.
    pub reconciles: Counter,
    /// `mcptrust_reconcile_errors_total{reason}`.
    pub errors: Family<ErrorLabels, Counter>,
    /// `mcptrust_reconcile_duration_seconds`.
    pub duration: Histogram,
    api_writes: Family<WriteLabels, Counter>,
    leader: Gauge,
    issuances: Family<IssuanceLabels, Counter>,
    rolling_restarts: Family<KindLabels, Counter>,
    probe_failures: Family<ReasonLabels, Counter>,
    stale_detections: Counter,
    federation_ca_not_after: Gauge,
    webhook_ca_not_after: Gauge,
    /// The per-McpServer families, encoded at scrape time.
    series: Arc<ServerSeries>,
}

/// The workload kinds a rolling restart patches.
pub const ROLLED_KINDS: [&str; 3] = ["Deployment", "StatefulSet", "DaemonSet"];

impl Default for ControllerMetrics {
    fn default() -> Self {
        let issuances = Family::<IssuanceLabels, Counter>::default();
        for role in ["server", "client"] {
            for reason in IssueReason::ALL {
                let _ = issuances.get_or_create(&IssuanceLabels {
                    role,
                    reason: reason.as_str(),
                });
            }
        }
        let rolling_restarts = Family::<KindLabels, Counter>::default();
        for kind in ROLLED_KINDS {
            let _ = rolling_restarts.get_or_create(&KindLabels { kind });
        }
        let probe_failures = Family::<ReasonLabels, Counter>::default();
        for reason in crate::probe::Reason::ALL
            .into_iter()
            .filter(|r| r.is_failure())
        {
            let _ = probe_failures.get_or_create(&ReasonLabels {
                reason: reason.as_str().to_string(),
            });
        }
        let _ = probe_failures.get_or_create(&ReasonLabels {
            reason: super::endpoint::REASON_SERVING_STALE_CERTIFICATE.to_string(),
        });
        Self {
            reconciles: Counter::default(),
            errors: Family::default(),
            duration: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            api_writes: Family::default(),
            leader: Gauge::default(),
            issuances,
            rolling_restarts,
            probe_failures,
            stale_detections: Counter::default(),
            federation_ca_not_after: Gauge::default(),
            webhook_ca_not_after: Gauge::default(),
            series: Arc::default(),
        }
    }
}

impl ControllerMetrics {
    /// Registers every metric of the [module table](self) into `registry`, whose prefix
    /// (`mcptrust`) the names here do not repeat.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "reconciles",
            "McpServer reconciles started",
            self.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "McpServer reconciles that failed, by reason",
            self.errors.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time spent in one McpServer reconcile",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register(
            "api_writes",
            "Write requests (POST, PUT, PATCH, DELETE) this process sent to the API server, by resource and method",
            self.api_writes.clone(),
        );
        registry.register(
            "controller_leader",
            "1 while this replica holds the Lease and runs the controllers, else 0",
            self.leader.clone(),
        );
        registry.register(
            "certificate_issuances",
            "Certificates issued, by role and cert-manager's reason (DoesNotExist: first issuance; others: reissue or renewal)",
            self.issuances.clone(),
        );
        registry.register(
            "rolling_restarts",
            "Workloads restarted (pod template annotated) after a bundle or certificate rotation, by kind",
            self.rolling_restarts.clone(),
        );
        registry.register(
            "endpoint_probe_failures",
            "Endpoint probes that set EndpointVerified to False, by reason",
            self.probe_failures.clone(),
        );
        registry.register(
            "stale_certificate_detections",
            "Times an endpoint probe found an McpServer serving a previous certificate past the grace period (EndpointVerified turned ServingStaleCertificate)",
            self.stale_detections.clone(),
        );
        registry.register(
            "federation_ca_expiration_timestamp_seconds",
            "notAfter of the federation CA that signs McpServer certificates, as Unix seconds (0 until loaded; leader only)",
            self.federation_ca_not_after.clone(),
        );
        registry.register(
            "webhook_ca_expiration_timestamp_seconds",
            "notAfter of the self-managed webhook CA, as Unix seconds (0 until loaded or in other cert modes; leader only)",
            self.webhook_ca_not_after.clone(),
        );
        // Last: a collector is encoded after the registry's metrics, so the per-McpServer
        // families keep their place at the end of the controller's.
        registry.register_collector(Box::new(self.series.clone()));
    }

    /// Counts a reconcile and returns a guard that observes its duration when dropped.
    pub fn reconcile_started(&self) -> DurationGuard {
        self.reconciles.inc();
        DurationGuard {
            start: std::time::Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    /// Counts a request this process sends to the API server when it is a write (`POST`,
    /// `PUT`, `PATCH`, `DELETE` on a resource path, see [`api_write_resource`]); reads
    /// are not counted.
    pub fn api_request(&self, method: &hyper::Method, path: &str) {
        let method = match *method {
            hyper::Method::POST => "POST",
            hyper::Method::PUT => "PUT",
            hyper::Method::PATCH => "PATCH",
            hyper::Method::DELETE => "DELETE",
            _ => return,
        };
        if let Some(resource) = api_write_resource(path) {
            self.api_writes
                .get_or_create(&WriteLabels { resource, method })
                .inc();
        }
    }

    /// Counts a failed reconcile under `reason` ([`super::Error::reason`]).
    pub fn reconcile_failed(&self, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Sets `mcptrust_controller_leader`; losing the lead also drops every per-McpServer
    /// series and the CA expiry gauges, which only the leader reports.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        if !leader {
            self.clear_servers();
            self.federation_ca_not_after.set(0);
            self.webhook_ca_not_after.set(0);
        }
    }

    /// Whether `mcptrust_controller_leader` is 1.
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    /// Counts one issued certificate (`role` `server` or `client`).
    pub fn certificate_issued(&self, role: &'static str, reason: IssueReason) {
        self.issuances
            .get_or_create(&IssuanceLabels {
                role,
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The current `mcptrust_certificate_issuances_total{role, reason}`.
    pub fn certificate_issuances(&self, role: &'static str, reason: IssueReason) -> u64 {
        self.issuances
            .get(&IssuanceLabels {
                role,
                reason: reason.as_str(),
            })
            .map_or(0, |c| c.get())
    }

    /// Counts one restarted workload of `kind` (one of [`ROLLED_KINDS`]).
    pub fn rolling_restart(&self, kind: &'static str) {
        self.rolling_restarts
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts one transition of an McpServer's `EndpointVerified` to
    /// `ServingStaleCertificate`.
    pub fn serving_stale_certificate(&self) {
        self.stale_detections.inc();
    }

    /// Records a probe that just ran for `namespace/name`: how long it took, and, when it
    /// set `EndpointVerified` to False, a failure under `reason`.
    pub fn probe_finished(
        &self,
        namespace: &str,
        name: &str,
        verified: bool,
        reason: &str,
        elapsed: Duration,
    ) {
        if !verified {
            self.probe_failures
                .get_or_create(&ReasonLabels {
                    reason: reason.to_string(),
                })
                .inc();
        }
        self.series
            .probe_finished(namespace, name, elapsed.as_secs_f64());
    }

    /// Sets the federation CA's notAfter (Unix seconds).
    pub fn set_federation_ca_not_after(&self, unix_seconds: i64) {
        self.federation_ca_not_after.set(unix_seconds);
    }

    /// Sets the self-managed webhook CA's notAfter (Unix seconds).
    pub fn set_webhook_ca_not_after(&self, unix_seconds: i64) {
        self.webhook_ca_not_after.set(unix_seconds);
    }

    /// Exports `snapshot`, replacing what was exported for that McpServer: label sets that
    /// no longer apply (a removed client, a condition's former status, a former probe
    /// reason) are removed, not left at a stale value.
    pub fn record_server(&self, snapshot: &ServerSnapshot) {
        self.series.record(snapshot);
    }

    /// Removes every series of `namespace/name`.
    pub fn forget_server(&self, namespace: &str, name: &str) {
        self.series.forget(namespace, name);
    }

    /// Keeps the series of the McpServers for which `exists(namespace, name)` holds and
    /// removes the others' (deleted McpServers). Returns how many were removed.
    pub fn retain_servers(&self, exists: impl Fn(&str, &str) -> bool) -> usize {
        self.series.retain(exists)
    }

    /// Removes every per-McpServer series (this replica no longer leads).
    pub fn clear_servers(&self) {
        self.series.retain(|_, _| false);
    }

    /// The McpServers (`namespace`, `name`) that have series, sorted.
    pub fn servers(&self) -> Vec<(String, String)> {
        self.series.servers()
    }
}

/// Observes a duration into a histogram when dropped.
pub struct DurationGuard {
    start: std::time::Instant,
    histogram: Histogram,
}

impl Drop for DurationGuard {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::McpServerStatus;
    use crate::metrics::Metrics;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// The status of an mTLS McpServer with one client, a probed endpoint and a
    /// not-Ready condition, as the reconcile writes it.
    fn status() -> McpServerStatus {
        serde_json::from_value(json!({
            "observedGeneration": 2,
            "conditions": [
                {"type": "TrustBundleReady", "status": "True", "reason": "BundleReady", "message": "m", "lastTransitionTime": "2026-11-21T00:00:00Z"},
                {"type": "CertificatesReady", "status": "True", "reason": "Issued", "message": "m", "lastTransitionTime": "2026-11-21T00:00:00Z"},
                {"type": "EndpointVerified", "status": "False", "reason": "UnknownAuthority", "message": "m", "lastTransitionTime": "2026-11-21T00:00:00Z"},
                {"type": "Ready", "status": "False", "reason": "UnknownAuthority", "message": "m", "lastTransitionTime": "2026-11-21T00:00:00Z"}
            ],
            "trustBundle": {"configMapName": "mcptrust-lab-trust", "sha256": "ab", "certificates": 147},
            "serverCertificate": {"secretName": "lab-server-tls", "notAfter": "2027-02-19T00:00:00Z", "renewalTime": "2027-01-20T00:00:00Z", "sha256": "cd"},
            "clientCertificates": [{"name": "gateway", "namespace": "gw", "secretName": "lab-agents-gateway-client-tls", "notAfter": "2027-02-19T00:00:00Z", "renewalTime": "2027-01-20T00:00:00Z"}],
            "endpoint": {"lastProbeTime": "2026-11-21T00:00:00Z", "peer": {"subject": "CN=lab", "issuer": "CN=x", "notAfter": "2027-03-01T00:00:00Z"}}
        }))
        .expect("status")
    }

    fn sample(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    /// The controller's registry as `exposition_text_of_recorded_servers` leaves it while
    /// leading, through [`canonical`]: captured from the implementation that kept one
    /// prometheus-client `Family` per series kind (as of bc85ff5), before the per-McpServer
    /// series moved into `series::ServerSeries`. The output is the same, samples and all.
    const LEADING: &str = r##"# HELP mcptrust_reconciles McpServer reconciles started.
# TYPE mcptrust_reconciles counter
mcptrust_reconciles_total 0
# HELP mcptrust_reconcile_duration_seconds Time spent in one McpServer reconcile.
# TYPE mcptrust_reconcile_duration_seconds histogram
# UNIT mcptrust_reconcile_duration_seconds seconds
mcptrust_reconcile_duration_seconds_bucket{le="+Inf"} 0
mcptrust_reconcile_duration_seconds_bucket{le="0.001"} 0
mcptrust_reconcile_duration_seconds_bucket{le="0.005"} 0
mcptrust_reconcile_duration_seconds_bucket{le="0.01"} 0
mcptrust_reconcile_duration_seconds_bucket{le="0.05"} 0
mcptrust_reconcile_duration_seconds_bucket{le="0.1"} 0
mcptrust_reconcile_duration_seconds_bucket{le="0.5"} 0
mcptrust_reconcile_duration_seconds_bucket{le="1.0"} 0
mcptrust_reconcile_duration_seconds_bucket{le="5.0"} 0
mcptrust_reconcile_duration_seconds_count 0
mcptrust_reconcile_duration_seconds_sum 0.0
# HELP mcptrust_controller_leader 1 while this replica holds the Lease and runs the controllers, else 0.
# TYPE mcptrust_controller_leader gauge
mcptrust_controller_leader 1
# HELP mcptrust_certificate_issuances Certificates issued, by role and cert-manager's reason (DoesNotExist: first issuance; others: reissue or renewal).
# TYPE mcptrust_certificate_issuances counter
mcptrust_certificate_issuances_total{role="client",reason="DoesNotExist"} 0
mcptrust_certificate_issuances_total{role="client",reason="Expired"} 0
mcptrust_certificate_issuances_total{role="client",reason="IncorrectIssuer"} 0
mcptrust_certificate_issuances_total{role="client",reason="InvalidKeyPair"} 0
mcptrust_certificate_issuances_total{role="client",reason="ManuallyTriggered"} 0
mcptrust_certificate_issuances_total{role="client",reason="MissingData"} 0
mcptrust_certificate_issuances_total{role="client",reason="Renewing"} 0
mcptrust_certificate_issuances_total{role="client",reason="RequestChanged"} 0
mcptrust_certificate_issuances_total{role="server",reason="DoesNotExist"} 0
mcptrust_certificate_issuances_total{role="server",reason="Expired"} 0
mcptrust_certificate_issuances_total{role="server",reason="IncorrectIssuer"} 0
mcptrust_certificate_issuances_total{role="server",reason="InvalidKeyPair"} 0
mcptrust_certificate_issuances_total{role="server",reason="ManuallyTriggered"} 0
mcptrust_certificate_issuances_total{role="server",reason="MissingData"} 0
mcptrust_certificate_issuances_total{role="server",reason="Renewing"} 0
mcptrust_certificate_issuances_total{role="server",reason="RequestChanged"} 0
# HELP mcptrust_rolling_restarts Workloads restarted (pod template annotated) after a bundle or certificate rotation, by kind.
# TYPE mcptrust_rolling_restarts counter
mcptrust_rolling_restarts_total{kind="DaemonSet"} 0
mcptrust_rolling_restarts_total{kind="Deployment"} 0
mcptrust_rolling_restarts_total{kind="StatefulSet"} 0
# HELP mcptrust_endpoint_probe_failures Endpoint probes that set EndpointVerified to False, by reason.
# TYPE mcptrust_endpoint_probe_failures counter
mcptrust_endpoint_probe_failures_total{reason="ClientCertificateRequired"} 0
mcptrust_endpoint_probe_failures_total{reason="ConnectionFailed"} 0
mcptrust_endpoint_probe_failures_total{reason="ConnectionRefused"} 0
mcptrust_endpoint_probe_failures_total{reason="DnsFailure"} 0
mcptrust_endpoint_probe_failures_total{reason="Expired"} 0
mcptrust_endpoint_probe_failures_total{reason="HostnameMismatch"} 0
mcptrust_endpoint_probe_failures_total{reason="HttpError"} 0
mcptrust_endpoint_probe_failures_total{reason="InvalidCertificate"} 0
mcptrust_endpoint_probe_failures_total{reason="InvalidOptions"} 0
mcptrust_endpoint_probe_failures_total{reason="McpError"} 0
mcptrust_endpoint_probe_failures_total{reason="NotAnMcpEndpoint"} 0
mcptrust_endpoint_probe_failures_total{reason="NotYetValid"} 0
mcptrust_endpoint_probe_failures_total{reason="PinnedCertificateChanged"} 0
mcptrust_endpoint_probe_failures_total{reason="ProxyConnectFailed"} 0
mcptrust_endpoint_probe_failures_total{reason="ProxyReSigned"} 0
mcptrust_endpoint_probe_failures_total{reason="SchemeDowngradeRedirect"} 0
mcptrust_endpoint_probe_failures_total{reason="SelfSigned"} 0
mcptrust_endpoint_probe_failures_total{reason="ServingStaleCertificate"} 0
mcptrust_endpoint_probe_failures_total{reason="Timeout"} 1
mcptrust_endpoint_probe_failures_total{reason="TlsHandshakeFailed"} 0
mcptrust_endpoint_probe_failures_total{reason="UnknownAuthority"} 1
# HELP mcptrust_stale_certificate_detections Times an endpoint probe found an McpServer serving a previous certificate past the grace period (EndpointVerified turned ServingStaleCertificate).
# TYPE mcptrust_stale_certificate_detections counter
mcptrust_stale_certificate_detections_total 0
# HELP mcptrust_federation_ca_expiration_timestamp_seconds notAfter of the federation CA that signs McpServer certificates, as Unix seconds (0 until loaded; leader only).
# TYPE mcptrust_federation_ca_expiration_timestamp_seconds gauge
mcptrust_federation_ca_expiration_timestamp_seconds 1900000000
# HELP mcptrust_webhook_ca_expiration_timestamp_seconds notAfter of the self-managed webhook CA, as Unix seconds (0 until loaded or in other cert modes; leader only).
# TYPE mcptrust_webhook_ca_expiration_timestamp_seconds gauge
mcptrust_webhook_ca_expiration_timestamp_seconds 1850000000
# HELP mcptrust_certificate_expiration_timestamp_seconds notAfter of a certificate issued for an McpServer, as Unix seconds.
# TYPE mcptrust_certificate_expiration_timestamp_seconds gauge
mcptrust_certificate_expiration_timestamp_seconds{namespace="agents",name="lab",role="server",secret="lab-server-tls",secret_namespace="agents"} 1802995200
mcptrust_certificate_expiration_timestamp_seconds{namespace="agents",name="web",role="server",secret="web-server-tls",secret_namespace="agents"} 1802000000
# HELP mcptrust_certificate_renewal_timestamp_seconds When a certificate issued for an McpServer is renewed (notAfter - renewBefore), as Unix seconds.
# TYPE mcptrust_certificate_renewal_timestamp_seconds gauge
mcptrust_certificate_renewal_timestamp_seconds{namespace="agents",name="lab",role="server",secret="lab-server-tls",secret_namespace="agents"} 1800403200
mcptrust_certificate_renewal_timestamp_seconds{namespace="agents",name="web",role="server",secret="web-server-tls",secret_namespace="agents"} 1799408000
# HELP mcptrust_mcpserver_status_condition An McpServer condition: 1 for its current status, 0 for the two others.
# TYPE mcptrust_mcpserver_status_condition gauge
mcptrust_mcpserver_status_condition{namespace="agents",name="lab",type="CertificatesReady",status="False"} 0
mcptrust_mcpserver_status_condition{namespace="agents",name="lab",type="CertificatesReady",status="True"} 1
mcptrust_mcpserver_status_condition{namespace="agents",name="lab",type="CertificatesReady",status="Unknown"} 0
mcptrust_mcpserver_status_condition{namespace="agents",name="lab",type="Ready",status="False"} 0
mcptrust_mcpserver_status_condition{namespace="agents",name="lab",type="Ready",status="True"} 1
mcptrust_mcpserver_status_condition{namespace="agents",name="lab",type="Ready",status="Unknown"} 0
mcptrust_mcpserver_status_condition{namespace="agents",name="lab",type="TrustBundleReady",status="False"} 0
mcptrust_mcpserver_status_condition{namespace="agents",name="lab",type="TrustBundleReady",status="True"} 1
mcptrust_mcpserver_status_condition{namespace="agents",name="lab",type="TrustBundleReady",status="Unknown"} 0
mcptrust_mcpserver_status_condition{namespace="agents",name="web",type="Custom",status="False"} 0
mcptrust_mcpserver_status_condition{namespace="agents",name="web",type="Custom",status="True"} 0
mcptrust_mcpserver_status_condition{namespace="agents",name="web",type="Custom",status="Unknown"} 0
mcptrust_mcpserver_status_condition{namespace="agents",name="web",type="Ready",status="False"} 0
mcptrust_mcpserver_status_condition{namespace="agents",name="web",type="Ready",status="True"} 0
mcptrust_mcpserver_status_condition{namespace="agents",name="web",type="Ready",status="Unknown"} 1
mcptrust_mcpserver_status_condition{namespace="tools",name="x",type="Ready",status="False"} 0
mcptrust_mcpserver_status_condition{namespace="tools",name="x",type="Ready",status="True"} 1
mcptrust_mcpserver_status_condition{namespace="tools",name="x",type="Ready",status="Unknown"} 0
# HELP mcptrust_trust_bundle_certificates Certificates in an McpServer's ca-bundle.pem.
# TYPE mcptrust_trust_bundle_certificates gauge
mcptrust_trust_bundle_certificates{namespace="agents",name="lab"} 147
mcptrust_trust_bundle_certificates{namespace="agents",name="web"} 3
# HELP mcptrust_trust_bundle_private_ca_expiration_timestamp_seconds Earliest notAfter among an McpServer's private CAs and pinned certificates, as Unix seconds.
# TYPE mcptrust_trust_bundle_private_ca_expiration_timestamp_seconds gauge
mcptrust_trust_bundle_private_ca_expiration_timestamp_seconds{namespace="agents",name="lab"} 1850000000
mcptrust_trust_bundle_private_ca_expiration_timestamp_seconds{namespace="agents",name="web"} 1900000000
# HELP mcptrust_endpoint_probe_result 1 with the reason of the last endpoint probe (EndpointVerified's reason).
# TYPE mcptrust_endpoint_probe_result gauge
mcptrust_endpoint_probe_result{namespace="agents",name="lab",reason="Verified"} 1
mcptrust_endpoint_probe_result{namespace="tools",name="x",reason="Verified"} 1
# HELP mcptrust_endpoint_probe_duration_seconds Duration of the last endpoint probe.
# TYPE mcptrust_endpoint_probe_duration_seconds gauge
# UNIT mcptrust_endpoint_probe_duration_seconds seconds
mcptrust_endpoint_probe_duration_seconds{namespace="agents",name="lab"} 0.25
mcptrust_endpoint_probe_duration_seconds{namespace="idle",name="p"} 2.0
mcptrust_endpoint_probe_duration_seconds{namespace="tools",name="x"} 0.0015
# HELP mcptrust_endpoint_probe_timestamp_seconds When the last endpoint probe ran, as Unix seconds.
# TYPE mcptrust_endpoint_probe_timestamp_seconds gauge
mcptrust_endpoint_probe_timestamp_seconds{namespace="agents",name="lab"} 1795219260
mcptrust_endpoint_probe_timestamp_seconds{namespace="tools",name="x"} 1795219200
# HELP mcptrust_endpoint_peer_certificate_expiration_timestamp_seconds notAfter of the certificate the endpoint presented at the last probe, as Unix seconds.
# TYPE mcptrust_endpoint_peer_certificate_expiration_timestamp_seconds gauge
mcptrust_endpoint_peer_certificate_expiration_timestamp_seconds{namespace="agents",name="lab"} 1803859200
# EOF
"##;

    /// `text` with the samples of each family sorted. prometheus-client's `Family` encodes
    /// its series in `HashMap` order, which changes from run to run.
    fn canonical(text: &str) -> String {
        fn flush(out: &mut String, samples: &mut Vec<&str>) {
            samples.sort_unstable();
            for s in samples.drain(..) {
                out.push_str(s);
                out.push('\n');
            }
        }
        let (mut out, mut samples) = (String::new(), Vec::new());
        for line in text.lines() {
            if line.starts_with('#') {
                flush(&mut out, &mut samples);
                out.push_str(line);
                out.push('\n');
            } else {
                samples.push(line);
            }
        }
        flush(&mut out, &mut samples);
        out
    }

    /// A snapshot without the status around it.
    fn snapshot(
        namespace: &str,
        name: &str,
        certificates: &[(&'static str, &str, &str, i64)],
        conditions: &[(&str, &str)],
    ) -> ServerSnapshot {
        ServerSnapshot {
            namespace: namespace.to_string(),
            name: name.to_string(),
            certificates: certificates
                .iter()
                .map(
                    |&(role, secret, secret_namespace, not_after)| CertificateSeries {
                        role,
                        secret: secret.to_string(),
                        secret_namespace: secret_namespace.to_string(),
                        not_after,
                        renewal: not_after - 30 * 86_400,
                    },
                )
                .collect(),
            conditions: conditions
                .iter()
                .map(|&(t, s)| (t.to_string(), s.to_string()))
                .collect(),
            bundle_certificates: None,
            private_ca_not_after: None,
            probe: None,
        }
    }

    /// The whole exposition of the controller's registry after servers are recorded,
    /// changed (a client certificate, a condition and a probe reason go away), pruned,
    /// forgotten and cleared, compared with the text captured in [`LEADING`].
    #[test]
    fn exposition_text_of_recorded_servers() {
        let c = ControllerMetrics::default();
        let mut registry = Registry::with_prefix("mcptrust");
        c.register(&mut registry);
        let encode = || canonical(&crate::metrics::encode_registry(&registry));
        c.set_leader(true);
        c.set_federation_ca_not_after(1_900_000_000);
        c.set_webhook_ca_not_after(1_850_000_000);

        // agents/lab: mTLS with a client in another namespace, probed, not Ready.
        c.record_server(&ServerSnapshot::from_status(
            "agents",
            "lab",
            &status(),
            None,
        ));
        c.probe_finished(
            "agents",
            "lab",
            false,
            "UnknownAuthority",
            Duration::from_millis(250),
        );
        // agents/web: a private CA in its bundle, a condition type and a status the
        // operator does not write, a probe duration that its next record removes.
        let mut web = snapshot(
            "agents",
            "web",
            &[("server", "web-server-tls", "agents", 1_802_000_000)],
            &[("Ready", "Unknown"), ("Custom", "Maybe")],
        );
        web.bundle_certificates = Some(3);
        web.private_ca_not_after = Some(Some(1_900_000_000));
        c.record_server(&web);
        c.probe_finished("agents", "web", false, "Timeout", Duration::from_millis(10));
        web.private_ca_not_after = None; // not rebuilt: the exported value stays
        c.record_server(&web);
        // tools/x: no certificate, probed without a peer certificate.
        let mut x = snapshot("tools", "x", &[], &[("Ready", "True")]);
        x.private_ca_not_after = Some(None);
        x.probe = Some(ProbeSeries {
            reason: "Verified".to_string(),
            timestamp: Some(1_795_219_200),
            peer_not_after: None,
        });
        c.record_server(&x);
        c.probe_finished("tools", "x", true, "Verified", Duration::from_micros(1_500));
        // idle/p: only probed, never recorded.
        c.probe_finished("idle", "p", true, "Verified", Duration::from_secs(2));

        // agents/lab changes: its client and EndpointVerified go, the probe verifies.
        let mut st = status();
        st.client_certificates.clear();
        st.conditions.retain(|c| c.type_ != "EndpointVerified");
        for cond in &mut st.conditions {
            cond.status = "True".into();
        }
        let mut lab = ServerSnapshot::from_status("agents", "lab", &st, None);
        lab.probe = Some(ProbeSeries {
            reason: "Verified".to_string(),
            timestamp: Some(1_795_219_260),
            peer_not_after: Some(1_803_859_200),
        });
        lab.private_ca_not_after = Some(Some(1_850_000_000));
        c.record_server(&lab);

        // gone/a is deleted (retain), tools/y forgotten.
        c.record_server(&snapshot(
            "gone",
            "a",
            &[("server", "a-server-tls", "gone", 1_802_000_000)],
            &[("Ready", "True")],
        ));
        c.record_server(&snapshot("tools", "y", &[], &[("Ready", "False")]));
        assert_eq!(c.retain_servers(|ns, _| ns != "gone"), 1);
        c.forget_server("tools", "y");
        assert_eq!(
            c.servers(),
            [
                ("agents", "lab"),
                ("agents", "web"),
                ("idle", "p"),
                ("tools", "x")
            ]
            .map(|(ns, n)| (ns.to_string(), n.to_string()))
        );
        assert_eq!(encode(), LEADING);

        // No longer leading: every per-McpServer series goes, and so do their families (an
        // empty family is not encoded); the leader gauge and the CA expiries read 0.
        c.set_leader(false);
        assert!(c.servers().is_empty());
        let per_server = LEADING
            .find("# HELP mcptrust_certificate_expiration_timestamp_seconds")
            .expect("the first per-McpServer family");
        let expected = LEADING[..per_server]
            .replace(
                "mcptrust_controller_leader 1\n",
                "mcptrust_controller_leader 0\n",
            )
            .replace(
                "mcptrust_federation_ca_expiration_timestamp_seconds 1900000000\n",
                "mcptrust_federation_ca_expiration_timestamp_seconds 0\n",
            )
            .replace(
                "mcptrust_webhook_ca_expiration_timestamp_seconds 1850000000\n",
                "mcptrust_webhook_ca_expiration_timestamp_seconds 0\n",
            )
            + "# EOF\n";
        assert_eq!(encode(), expected);
    }

    /// The per-McpServer samples come in one order whatever the order of the records
    /// (McpServers by namespace and name, then each one's certificates and conditions in
    /// its snapshot's order), and a certificate or condition named twice in a snapshot is
    /// one series with the last values, as a `Family` made it.
    #[test]
    fn server_series_have_a_stable_order_and_keep_the_last_duplicate() {
        let x = snapshot(
            "b",
            "x",
            &[("server", "x-tls", "b", 1), ("server", "x-tls", "b", 2)],
            &[("Ready", "False"), ("Ready", "True")],
        );
        let y = snapshot(
            "a",
            "y",
            &[
                ("client", "y-client-tls", "gw", 5),
                ("server", "y-tls", "a", 3),
            ],
            &[("Ready", "True"), ("CertificatesReady", "False")],
        );
        let per_server = |records: [&ServerSnapshot; 2]| {
            let c = ControllerMetrics::default();
            let mut registry = Registry::with_prefix("mcptrust");
            c.register(&mut registry);
            for s in records {
                c.record_server(s);
            }
            let text = crate::metrics::encode_registry(&registry);
            let start = text
                .find("# HELP mcptrust_certificate_expiration_timestamp_seconds")
                .expect("the first per-McpServer family");
            text[start..].to_string()
        };
        let text = per_server([&x, &y]);
        assert_eq!(text, per_server([&y, &x]));
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("mcptrust_certificate_expiration_timestamp_seconds{")
                    || l.starts_with("mcptrust_mcpserver_status_condition{")
            })
            .collect();
        assert_eq!(
            samples,
            [
                r#"mcptrust_certificate_expiration_timestamp_seconds{namespace="a",name="y",role="client",secret="y-client-tls",secret_namespace="gw"} 5"#,
                r#"mcptrust_certificate_expiration_timestamp_seconds{namespace="a",name="y",role="server",secret="y-tls",secret_namespace="a"} 3"#,
                r#"mcptrust_certificate_expiration_timestamp_seconds{namespace="b",name="x",role="server",secret="x-tls",secret_namespace="b"} 2"#,
                r#"mcptrust_mcpserver_status_condition{namespace="a",name="y",type="Ready",status="True"} 1"#,
                r#"mcptrust_mcpserver_status_condition{namespace="a",name="y",type="Ready",status="False"} 0"#,
                r#"mcptrust_mcpserver_status_condition{namespace="a",name="y",type="Ready",status="Unknown"} 0"#,
                r#"mcptrust_mcpserver_status_condition{namespace="a",name="y",type="CertificatesReady",status="True"} 0"#,
                r#"mcptrust_mcpserver_status_condition{namespace="a",name="y",type="CertificatesReady",status="False"} 1"#,
                r#"mcptrust_mcpserver_status_condition{namespace="a",name="y",type="CertificatesReady",status="Unknown"} 0"#,
                r#"mcptrust_mcpserver_status_condition{namespace="b",name="x",type="Ready",status="True"} 1"#,
                r#"mcptrust_mcpserver_status_condition{namespace="b",name="x",type="Ready",status="False"} 0"#,
                r#"mcptrust_mcpserver_status_condition{namespace="b",name="x",type="Ready",status="Unknown"} 0"#,
            ]
        );
    }

    #[test]
    fn snapshot_is_computed_from_the_status() {
        let snap = ServerSnapshot::from_status("agents", "lab", &status(), None);
        assert_eq!(snap.certificates.len(), 2);
        assert_eq!(snap.certificates[0].role, "server");
        assert_eq!(snap.certificates[0].secret_namespace, "agents");
        assert_eq!(snap.certificates[1].role, "client");
        assert_eq!(snap.certificates[1].secret_namespace, "gw");
        assert_eq!(
            snap.certificates[0].not_after - snap.certificates[0].renewal,
            30 * 86_400
        );
        assert_eq!(snap.bundle_certificates, Some(147));
        assert_eq!(snap.private_ca_not_after, None, "no bundle built: keep");
        let probe = snap.probe.expect("probed");
        assert_eq!(probe.reason, "UnknownAuthority");
        assert_eq!(probe.peer_not_after, Some(1_803_859_200));
    }

    #[test]
    fn series_follow_the_status_and_disappear_with_the_server() {
        let metrics = Metrics::new();
        let c = ControllerMetrics::default();
        metrics.register_with(|r| c.register(r));
        let mut st = status();
        c.record_server(&ServerSnapshot::from_status("agents", "lab", &st, None));
        c.probe_finished(
            "agents",
            "lab",
            false,
            "UnknownAuthority",
            Duration::from_millis(250),
        );
        let text = metrics.encode();
        let ready = sample(&text, "mcptrust_mcpserver_status_condition{");
        assert!(ready.contains(&r#"mcptrust_mcpserver_status_condition{namespace="agents",name="lab",type="Ready",status="False"} 1"#.to_string()), "{ready:?}");
        assert!(ready.contains(&r#"mcptrust_mcpserver_status_condition{namespace="agents",name="lab",type="Ready",status="True"} 0"#.to_string()));
        assert_eq!(ready.len(), 4 * 3, "three statuses per condition");
        assert!(text.contains(r#"mcptrust_certificate_expiration_timestamp_seconds{namespace="agents",name="lab",role="client",secret="lab-agents-gateway-client-tls",secret_namespace="gw"} 1802995200"#), "{text}");
        assert!(text.contains(r#"mcptrust_endpoint_probe_result{namespace="agents",name="lab",reason="UnknownAuthority"} 1"#));
        assert!(text.contains(
            r#"mcptrust_endpoint_probe_duration_seconds{namespace="agents",name="lab"} 0.25"#
        ));
        assert!(
            text.contains(r#"mcptrust_endpoint_probe_failures_total{reason="UnknownAuthority"} 1"#)
        );

        // The probe verifies and the client is removed: stale label sets go away.
        st.client_certificates.clear();
        for cond in &mut st.conditions {
            cond.status = "True".into();
            cond.reason = "Verified".into();
        }
        c.record_server(&ServerSnapshot::from_status("agents", "lab", &st, None));
        let text = metrics.encode();
        assert!(
            !text.contains(
                r#"probe_result{namespace="agents",name="lab",reason="UnknownAuthority"}"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"reason="Verified"} 1"#));
        assert!(!text.contains("secret_namespace=\"gw\""), "{text}");
        assert!(text.contains(r#"type="Ready",status="True"} 1"#));

        // Another server, then the first is deleted.
        c.record_server(&ServerSnapshot::from_status("other", "b", &st, None));
        assert_eq!(c.retain_servers(|ns, _| ns == "other"), 1);
        let text = metrics.encode();
        assert!(!text.contains("name=\"lab\""), "{text}");
        assert!(text.contains("name=\"b\""));
        c.set_leader(false);
        let text = metrics.encode();
        assert!(!text.contains("namespace=\""), "non-leader: {text}");
        assert!(text.contains("mcptrust_controller_leader 0"));
    }

    /// A deleted McpServer leaves the controller's cache, and its series go with it.
    #[test]
    fn deleted_servers_are_pruned_against_the_cache() {
        use kube::runtime::{reflector, watcher};
        let server = |ns: &str, name: &str| -> crate::api::McpServer {
            serde_json::from_value(json!({
                "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
                "metadata": {"name": name, "namespace": ns}, "spec": {}
            }))
            .expect("McpServer")
        };
        let (store, mut writer) = reflector::store::<crate::api::McpServer>();
        let (kept, deleted) = (server("agents", "lab"), server("tools", "lab"));
        writer.apply_watcher_event(&watcher::Event::Apply(kept.clone()));
        writer.apply_watcher_event(&watcher::Event::Apply(deleted.clone()));
        let c = ControllerMetrics::default();
        for ns in ["agents", "tools"] {
            c.record_server(&ServerSnapshot::from_status(ns, "lab", &status(), None));
        }
        assert_eq!(crate::controller::prune_deleted(&c, &store), 0);
        writer.apply_watcher_event(&watcher::Event::Delete(deleted));
        assert_eq!(crate::controller::prune_deleted(&c, &store), 1);
        assert_eq!(c.servers(), vec![("agents".to_string(), "lab".to_string())]);
        let metrics = Metrics::new();
        metrics.register_with(|r| c.register(r));
        let text = metrics.encode();
        assert!(!text.contains("namespace=\"tools\""), "{text}");
        assert!(text.contains("namespace=\"agents\""));
    }

    #[test]
    fn write_resources_from_paths() {
        for (path, want) in [
            ("/api/v1/namespaces/a/configmaps/x", Some("configmaps")),
            ("/api/v1/namespaces/a/configmaps", Some("configmaps")),
            (
                "/api/v1/namespaces/a/secrets/x?fieldManager=m&force=true",
                Some("secrets"),
            ),
            (
                "/apis/mcptrust.io/v1alpha1/namespaces/a/mcpservers/x/status",
                Some("mcpservers/status"),
            ),
            ("/apis/events.k8s.io/v1/namespaces/a/events", Some("events")),
            ("/api/v1/namespaces/a", Some("namespaces")),
            ("/api/v1/namespaces", Some("namespaces")),
            (
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/w",
                Some("mutatingwebhookconfigurations"),
            ),
            ("/version", None),
            ("/api/v1", None),
        ] {
            assert_eq!(api_write_resource(path).as_deref(), want, "{path}");
        }
        let c = ControllerMetrics::default();
        let metrics = Metrics::new();
        metrics.register_with(|r| c.register(r));
        c.api_request(&hyper::Method::GET, "/api/v1/namespaces/a/configmaps/x");
        c.api_request(&hyper::Method::PATCH, "/api/v1/namespaces/a/configmaps/x");
        c.api_request(&hyper::Method::PATCH, "/api/v1/namespaces/b/configmaps/y");
        let text = metrics.encode();
        assert!(
            text.contains("mcptrust_api_writes_total{resource=\"configmaps\",method=\"PATCH\"} 2"),
            "{text}"
        );
        assert!(!text.contains("method=\"GET\""), "{text}");
    }

    /// Every family name the operator's registry renders follows the Prometheus
    /// conventions: one `mcptrust_` prefix, snake case, `_total` only on counter samples,
    /// units (`_seconds`) as the last word, timestamps as `_timestamp_seconds`.
    #[test]
    fn names_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        let c = ControllerMetrics::default();
        metrics.register_with(|r| c.register(r));
        c.set_leader(true);
        c.reconcile_failed("Kube");
        drop(c.reconcile_started());
        c.record_server(&ServerSnapshot::from_status(
            "agents",
            "lab",
            &status(),
            None,
        ));
        c.probe_finished(
            "agents",
            "lab",
            false,
            "UnknownAuthority",
            Duration::from_millis(5),
        );
        let text = metrics.encode();
        let mut families = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                families.insert(name.to_string(), kind.to_string());
            }
        }
        assert!(families.len() >= 20, "{families:?}");
        for (name, kind) in &families {
            assert!(name.starts_with("mcptrust_"), "{name}");
            assert!(
                !name.starts_with("mcptrust_mcptrust"),
                "prefix twice: {name}"
            );
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && !name.contains("__")
                    && !name.ends_with('_'),
                "{name}"
            );
            let words: Vec<&str> = name.split('_').collect();
            assert!(
                words.windows(2).all(|w| w[0] != w[1]),
                "repeated word: {name}"
            );
            assert!(!name.ends_with("_total"), "the family name of {name}");
            if name.contains("timestamp") {
                assert!(name.ends_with("_timestamp_seconds"), "{name}");
            }
            if name.contains("duration") {
                assert!(name.ends_with("_duration_seconds"), "{name}");
            }
            assert!(
                !["_secs", "_ms", "_milliseconds", "_count", "_sum", "_bucket"]
                    .iter()
                    .any(|s| name.ends_with(s)),
                "{name}"
            );
            if kind == "histogram" {
                assert!(
                    name.ends_with("_seconds"),
                    "histograms carry a unit: {name}"
                );
            }
        }
        // Every sample belongs to a declared family, with the suffix its type allows.
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let sample = line.split(['{', ' ']).next().expect("sample name");
            let ok = families.iter().any(|(f, kind)| {
                let suffixes: &[&str] = match kind.as_str() {
                    "counter" => &["_total", "_created"],
                    "histogram" => &["_bucket", "_sum", "_count", "_created"],
                    _ => &[""],
                };
                suffixes.iter().any(|s| sample == format!("{f}{s}"))
            });
            assert!(ok, "sample {sample} has no family");
        }
        for name in [
            "mcptrust_reconciles",
            "mcptrust_reconcile_duration_seconds",
            "mcptrust_reconcile_errors",
        ] {
            assert!(families.contains_key(name), "{name} in {families:?}");
        }
    }
}
