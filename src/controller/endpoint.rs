//! The `EndpointVerified` step: probe `spec.endpoint.url` with the McpServer's own bundle
//! and, with mTLS, a client certificate, exactly as a gateway would; pin a verified
//! self-signed certificate when `spec.trust.pinServerCertificate` asks for it, and never
//! re-pin silently.
//!
//! The decisions are pure ([`evaluate`], [`is_due`]); the network call goes through the
//! [`Prober`] in the [`super::Context`], which tests replace.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::api::conditions::{DesiredCondition, types};
use crate::api::{EndpointStatus, McpServer, McpServerStatus, PeerCertificate, Transport};
use crate::probe::{ProbeOptions, ProbeReport, Reason};

/// Default seconds between two probes of an unchanged McpServer (5 minutes), before jitter.
pub const PROBE_INTERVAL_SECS: i64 = 300;

/// Seconds before the first retry of a failed probe. Retries then double (5, 10, 20, 40...
/// seconds after the first failure) up to [`interval`]: a server usually starts after its
/// certificate Secret exists, so the first probe of a new McpServer often meets a refused
/// connection, and the status should turn True within seconds of the server answering,
/// not after a whole interval.
pub const PROBE_RETRY_SECS: i64 = 5;

/// Runs a probe. The live implementation is [`LiveProber`]; tests inject their own.
pub trait Prober: Send + Sync {
    /// Probes with `opts`; never fails (every problem is in the report).
    fn probe(&self, opts: ProbeOptions) -> BoxFuture<'_, ProbeReport>;
}

/// The real network probe ([`crate::probe::probe`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveProber;

impl Prober for LiveProber {
    fn probe(&self, opts: ProbeOptions) -> BoxFuture<'_, ProbeReport> {
        Box::pin(async move { crate::probe::probe(&opts).await })
    }
}

/// A shared prober.
pub type SharedProber = Arc<dyn Prober>;

/// Seconds between probes for this McpServer: [`PROBE_INTERVAL_SECS`] plus up to 59 s of
/// jitter derived from its namespace and name, so that many servers do not probe in step.
pub fn interval(server: &McpServer) -> i64 {
    let key = format!(
        "{}/{}",
        server.metadata.namespace.as_deref().unwrap_or_default(),
        server.metadata.name.as_deref().unwrap_or_default()
    );
    let h = crate::pki::sha256_hex(key.as_bytes());
    let jitter = i64::from_str_radix(&h[..4], 16).unwrap_or(0) % 60;
    PROBE_INTERVAL_SECS + jitter
}

/// Seconds from a probe at `at` (Unix seconds) to the next one: [`interval`] after a
/// success (`verified`), and after a failure the time `EndpointVerified` has been False
/// by then (its `lastTransitionTime` in `old`; none yet means the failure starts at `at`),
/// clamped to [`PROBE_RETRY_SECS`]..=[`interval`]: retries 5, 10, 20, 40... s after the
/// first failure, then every interval.
pub fn next_delay(server: &McpServer, old: &McpServerStatus, verified: bool, at: i64) -> i64 {
    let interval = interval(server);
    if verified {
        return interval;
    }
    let failing_since = old
        .conditions
        .iter()
        .find(|c| c.type_ == types::ENDPOINT_VERIFIED && c.status != "True")
        .map_or(at, |c| c.last_transition_time.0.as_second());
    (at - failing_since).clamp(PROBE_RETRY_SECS.min(interval), interval)
}

/// Whether `old` reports the endpoint verified (`EndpointVerified=True`, or no such
/// condition yet).
fn verified(old: &McpServerStatus) -> bool {
    old.conditions
        .iter()
        .find(|c| c.type_ == types::ENDPOINT_VERIFIED)
        .is_none_or(|c| c.status == "True")
}

/// When the probe after the last one (`old`'s `lastProbeTime`) is due, in Unix seconds;
/// `None` when it never ran.
pub fn next_probe_time(server: &McpServer, old: &McpServerStatus) -> Option<i64> {
    let last = old
        .endpoint
        .as_ref()
        .and_then(|e| e.last_probe_time.as_ref())
        .map(|t| t.0.as_second())?;
    Some(last + next_delay(server, old, verified(old), last))
}

/// Whether a probe is due: never probed, the delay after the last probe elapsed
/// ([`next_delay`]: the interval, or a retry's backoff after a failure), the spec changed
/// (`generation` ≠ `observedGeneration`), or the bundle changed.
pub fn is_due(server: &McpServer, old: &McpServerStatus, bundle_changed: bool, now: i64) -> bool {
    match next_probe_time(server, old) {
        None => true,
        Some(next) => {
            now >= next || server.metadata.generation != old.observed_generation || bundle_changed
        }
    }
}

/// The material a probe uses.
#[derive(Clone, Debug, Default)]
pub struct ProbeMaterial {
    /// `ca-bundle.pem` of the McpServer, plus the federation CA with mTLS.
    pub ca_bundle_pem: Option<String>,
    /// A client certificate and key (PEM), with mTLS.
    pub client: Option<(String, String)>,
}

/// The probe options for `server` (no proxy: the controller reaches endpoints as an
/// in-cluster gateway does).
pub fn options(
    server: &McpServer,
    material: &ProbeMaterial,
    pinned: Option<&str>,
    now: i64,
) -> Option<ProbeOptions> {
    let url = server.spec.endpoint.as_ref()?.url.clone();
    let transport = match server.spec.transport {
        Transport::Stdio => return None,
        Transport::StreamableHttp => crate::probe::Transport::StreamableHttp,
        Transport::Sse => crate::probe::Transport::Sse,
    };
    let mut opts = ProbeOptions::new(url);
    opts.transport = transport;
    opts.ca_bundle_pem = material
        .ca_bundle_pem
        .as_ref()
        .map(|p| p.clone().into_bytes());
    if let Some((cert, key)) = &material.client {
        opts.client_cert_pem = Some(cert.clone().into_bytes());
        opts.client_key_pem = Some(key.clone().into_bytes());
    }
    opts.proxy = None;
    opts.pinned_sha256 = pinned.map(str::to_string);
    opts.now = Some(now);
    Some(opts)
}

/// A certificate to pin (into `status.pinnedSha256` and `status.pinnedCertificate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// SHA-256 (hex) of the DER.
    pub sha256: String,
    /// PEM.
    pub pem: String,
}

/// What the step decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The `EndpointVerified` condition.
    pub condition: DesiredCondition,
    /// A new pin, when one was taken.
    pub pin: Option<Pin>,
    /// `status.endpoint`.
    pub endpoint: EndpointStatus,
}

/// The pin to probe against: the spec's expected fingerprint when set, else the status pin.
pub fn pinned_fingerprint(server: &McpServer) -> Option<String> {
    let trust = server
        .spec
        .trust
        .as_ref()
        .filter(|t| t.pin_server_certificate)?;
    trust
        .pinned_sha256
        .as_ref()
        .map(|s| s.to_ascii_lowercase())
        .or_else(|| server.status.as_ref().and_then(|s| s.pinned_sha256.clone()))
}

/// Turns a probe report into the condition, `status.endpoint` and maybe a new pin.
///
/// Pinning (`spec.trust.pinServerCertificate: true`):
/// - nothing pinned yet and the probe found a *verified* self-signed certificate
///   (issuer == subject and its own key verifies the signature): pin it;
/// - `spec.trust.pinnedSha256` set and different from the status pin: pin only a
///   self-signed certificate with exactly that fingerprint;
/// - a pin exists and the server presents another certificate: `PinnedCertificateChanged`
///   with old and new fingerprints; never re-pinned silently.
pub fn evaluate(server: &McpServer, report: &ProbeReport, now: i64) -> Evaluation {
    let leaf = report.tls.as_ref().and_then(|t| t.chain.first());
    let endpoint = EndpointStatus {
        last_probe_time: Some(super::build::time(now)),
        tls_version: report.tls.as_ref().and_then(|t| t.version.clone()),
        peer: leaf.map(|c| PeerCertificate {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            not_after: k8s_openapi::jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%SZ", &c.not_after)
                .ok()
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            self_signed: c.self_signed,
            sha256: Some(c.sha256.clone()),
        }),
        server_info: report
            .mcp
            .as_ref()
            .and_then(|m| match (&m.server_name, &m.server_version) {
                (Some(n), Some(v)) => Some(format!("{n} {v}")),
                (Some(n), None) => Some(n.clone()),
                _ => None,
            }),
        protocol_version: report.mcp.as_ref().and_then(|m| m.protocol_version.clone()),
    };
    let pin_wanted = server
        .spec
        .trust
        .as_ref()
        .is_some_and(|t| t.pin_server_certificate);
    let status_pin = server.status.as_ref().and_then(|s| s.pinned_sha256.clone());
    let spec_pin = server
        .spec
        .trust
        .as_ref()
        .and_then(|t| t.pinned_sha256.as_ref())
        .map(|s| s.to_ascii_lowercase());
    let cond = |ok: bool, reason: &str, message: String| {
        DesiredCondition::new(types::ENDPOINT_VERIFIED, ok, reason, message)
    };

    if pin_wanted && let Some(leaf) = leaf {
        let repin_requested = spec_pin.is_some() && spec_pin != status_pin;
        if repin_requested || status_pin.is_none() {
            match &spec_pin {
                Some(expected) if *expected != leaf.sha256 => {
                    return Evaluation {
                        condition: cond(
                            false,
                            Reason::PinnedCertificateChanged.as_str(),
                            format!(
                                "the server presents {} (sha256 {}), but spec.trust.pinnedSha256 is {expected}; check the server, then set spec.trust.pinnedSha256 to the new fingerprint to re-pin",
                                leaf.subject, leaf.sha256
                            ),
                        ),
                        pin: None,
                        endpoint,
                    };
                }
                _ if leaf.self_signed => {
                    let pin = Pin {
                        sha256: leaf.sha256.clone(),
                        pem: leaf.pem.clone(),
                    };
                    return Evaluation {
                        condition: cond(
                            true,
                            "Pinned",
                            format!(
                                "pinned the self-signed certificate {} (sha256 {}): its issuer equals its subject and its own key verifies its signature; it is now in the trust bundle",
                                leaf.subject, leaf.sha256
                            ),
                        ),
                        pin: Some(pin),
                        endpoint,
                    };
                }
                _ => {}
            }
        }
    }

    let message = report
        .verdict_step()
        .map(|s| s.message.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| report.summary.clone());
    let condition = if report.ok {
        let reason = if report.verdict == Reason::Ok {
            "Verified"
        } else {
            report.verdict.as_str()
        };
        let mut m = report.summary.clone();
        if report.verdict != Reason::Ok {
            m = format!("{m}: {message}");
        }
        cond(true, reason, m)
    } else if report.verdict == Reason::PinnedCertificateChanged {
        cond(
            false,
            report.verdict.as_str(),
            format!(
                "{message} (pinned {}); not re-pinned: clear status.pinnedSha256 or set spec.trust.pinnedSha256 to the new fingerprint after checking the server",
                status_pin.as_deref().unwrap_or("?")
            ),
        )
    } else {
        cond(false, report.verdict.as_str(), message)
    };
    Evaluation {
        condition,
        pin: None,
        endpoint,
    }
}

/// The old `EndpointVerified` condition as a desired one (when no probe was due).
pub fn carried_over(old: &McpServerStatus) -> Option<DesiredCondition> {
    old.conditions
        .iter()
        .find(|c| c.type_ == types::ENDPOINT_VERIFIED)
        .map(|c| DesiredCondition {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server(status: serde_json::Value, generation: i64, trust: serde_json::Value) -> McpServer {
        serde_json::from_value(json!({
            "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
            "metadata": {"name": "lab", "namespace": "agents", "generation": generation},
            "spec": {"endpoint": {"url": "https://lab.agents.svc/mcp"}, "trust": trust},
            "status": status
        }))
        .expect("McpServer")
    }

    fn report(verdict: &str, ok: bool, leaf_sha: &str, self_signed: bool) -> ProbeReport {
        serde_json::from_value(json!({
            "url": "https://lab.agents.svc/mcp", "transport": "streamable-http", "verdict": verdict,
            "ok": ok, "exitCode": 0, "summary": "s", "steps": [],
            "tls": {"serverName": "lab", "version": "TLSv1.3", "chain": [{
                "subject": "CN=lab", "issuer": "CN=lab", "serial": "01", "notBefore": "2025-01-01T00:00:00Z",
                "notAfter": "2035-01-01T00:00:00Z", "sha256": leaf_sha, "selfSigned": self_signed, "isCa": false,
                "sans": [], "pem": "PEM"}],
                "clientCertificateRequested": false, "acceptableClientIssuers": []}
        }))
        .expect("report")
    }

    const T: i64 = 1_795_219_200;

    #[test]
    fn probe_is_due_on_interval_generation_and_bundle_change() {
        let s = server(
            json!({"observedGeneration": 2, "endpoint": {"lastProbeTime": "2026-11-21T00:00:00Z"}}),
            2,
            json!({}),
        );
        let old = s.status.clone().unwrap_or_default();
        assert!(!is_due(&s, &old, false, T + 60));
        assert!(is_due(&s, &old, true, T + 60), "bundle changed");
        assert!(
            is_due(&s, &old, false, T + interval(&s)),
            "interval elapsed"
        );
        let newer = server(
            json!({"observedGeneration": 2, "endpoint": {"lastProbeTime": "2026-11-21T00:00:00Z"}}),
            3,
            json!({}),
        );
        assert!(is_due(&newer, &old, false, T + 60), "spec changed");
        assert!(
            is_due(&s, &McpServerStatus::default(), false, T),
            "never probed"
        );
        assert!((PROBE_INTERVAL_SECS..PROBE_INTERVAL_SECS + 60).contains(&interval(&s)));
    }

    #[test]
    fn a_failed_probe_is_retried_with_doubling_backoff_up_to_the_interval() {
        // EndpointVerified False since T; probes at T, T+5, T+10, T+20...
        let failing = |last: i64| {
            server(
                json!({"observedGeneration": 2,
                    "endpoint": {"lastProbeTime": k8s_openapi::jiff::Timestamp::from_second(last).expect("time").to_string()},
                    "conditions": [{"type": "EndpointVerified", "status": "False", "reason": "ConnectionRefused",
                        "message": "m", "lastTransitionTime": k8s_openapi::jiff::Timestamp::from_second(T).expect("time").to_string()}]}),
                2,
                json!({}),
            )
        };
        let mut at = T;
        let mut delays = Vec::new();
        for _ in 0..9 {
            let s = failing(at);
            let old = s.status.clone().unwrap_or_default();
            let next = next_probe_time(&s, &old).expect("probed before");
            assert!(!is_due(&s, &old, false, next - 1), "not before {next}");
            assert!(is_due(&s, &old, false, next));
            delays.push(next - at);
            at = next;
        }
        let i = interval(&failing(T));
        assert_eq!(&delays[..6], &[5, 5, 10, 20, 40, 80]);
        assert_eq!(delays[8], i, "capped at the interval: {delays:?}");
        // The first failure of a probe that was verified (or never ran) retries in 5 s;
        // a success waits the interval.
        let s = failing(T);
        let fresh = McpServerStatus::default();
        assert_eq!(next_delay(&s, &fresh, false, T), PROBE_RETRY_SECS);
        assert_eq!(next_delay(&s, &fresh, true, T), i);
    }

    #[test]
    fn pins_only_verified_self_signed_and_never_silently_repins() {
        let want = json!({"pinServerCertificate": true});
        let fresh = server(json!({}), 1, want.clone());
        let e = evaluate(&fresh, &report("SelfSigned", false, "aa", true), T);
        assert_eq!(e.pin.as_ref().map(|p| p.sha256.as_str()), Some("aa"));
        assert_eq!(e.condition.reason, "Pinned");

        let forged = evaluate(&fresh, &report("UnknownAuthority", false, "bb", false), T);
        assert!(forged.pin.is_none());
        assert_eq!(forged.condition.status, "False");

        let pinned = server(json!({"pinnedSha256": "aa"}), 1, want.clone());
        let changed = evaluate(
            &pinned,
            &report("PinnedCertificateChanged", false, "cc", true),
            T,
        );
        assert!(changed.pin.is_none(), "not re-pinned silently");
        assert_eq!(changed.condition.reason, "PinnedCertificateChanged");
        assert!(changed.condition.message.contains("aa"));

        let repin = server(
            json!({"pinnedSha256": "aa"}),
            1,
            json!({"pinServerCertificate": true, "pinnedSha256": "CC"}),
        );
        assert_eq!(pinned_fingerprint(&repin).as_deref(), Some("cc"));
        let e = evaluate(&repin, &report("Ok", true, "cc", true), T);
        assert_eq!(e.pin.map(|p| p.sha256), Some("cc".to_string()));
        let wrong = evaluate(&repin, &report("Ok", true, "dd", true), T);
        assert!(wrong.pin.is_none());
        assert_eq!(wrong.condition.reason, "PinnedCertificateChanged");

        let off = server(json!({}), 1, json!({}));
        assert!(
            evaluate(&off, &report("SelfSigned", false, "aa", true), T)
                .pin
                .is_none(),
            "pinning is opt-in"
        );
    }
}
