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
use crate::api::{
    CertificateStatus, EndpointStatus, McpServer, McpServerStatus, PeerCertificate,
    RotationStrategy, Transport,
};
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
            // RFC 3339 (`…Z`); jiff's strptime would want an offset directive.
            not_after: c
                .not_after
                .parse::<k8s_openapi::jiff::Timestamp>()
                .ok()
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            self_signed: c.self_signed,
            sha256: Some(c.sha256.clone()),
            serial: Some(c.serial.clone()).filter(|s| !s.is_empty()),
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

/// Reason of `EndpointVerified=False` when the endpoint still serves a previous
/// certificate after the grace period.
pub const REASON_SERVING_STALE_CERTIFICATE: &str = "ServingStaleCertificate";

/// The certificate an endpoint serves, against the one its Secret holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staleness {
    /// It serves the Secret's certificate, or there is nothing to compare (no certificate
    /// issued by mcptrust, no peer certificate, no fingerprint).
    Current,
    /// It serves another certificate, `elapsed` seconds after the Secret changed, within
    /// the grace period, which ends at `until` (Unix seconds).
    InGrace {
        /// Seconds since the Secret changed.
        elapsed: i64,
        /// End of the grace period, Unix seconds.
        until: i64,
    },
    /// It serves another certificate past the grace period; `since` is when the Secret
    /// changed (Unix seconds; `None` when unknown).
    Stale {
        /// When the Secret changed, Unix seconds.
        since: Option<i64>,
    },
}

/// Compares the served leaf (`peer`, from the probe) with the server certificate mcptrust
/// issued (`current`, whose `changedAt` starts the `grace` seconds) at `now` (Unix
/// seconds). Fingerprints (sha256 of the DER) decide; serials are only for people.
///
/// Only a leaf that `issuer` signed is compared: `issuer` is the federation CA's subject
/// DN (RFC 4514, as x509-parser prints it, which is how the probe prints the peer's
/// issuer). A server that presents a certificate from another CA (its own, or a public
/// one) does not use mcptrust's Secret, so it cannot be stale against it.
pub fn staleness(
    current: Option<&CertificateStatus>,
    peer: Option<&PeerCertificate>,
    issuer: &str,
    grace: i64,
    now: i64,
) -> Staleness {
    let (Some(current), Some(peer)) = (current, peer) else {
        return Staleness::Current;
    };
    if peer.issuer != issuer {
        return Staleness::Current;
    }
    let (Some(want), Some(got)) = (current.sha256.as_deref(), peer.sha256.as_deref()) else {
        return Staleness::Current;
    };
    if want.eq_ignore_ascii_case(got) {
        return Staleness::Current;
    }
    match current.changed_at.as_ref().map(|t| t.0.as_second()) {
        Some(changed) if now < changed + grace => Staleness::InGrace {
            elapsed: now - changed,
            until: changed + grace,
        },
        since => Staleness::Stale { since },
    }
}

/// When a probe is due because the server certificate changed: one second after the grace
/// period (`changedAt + grace + 1`), unless the last probe (`endpoint`) already saw the
/// current certificate or ran after that time. Unix seconds.
pub fn grace_probe_time(
    current: Option<&CertificateStatus>,
    endpoint: Option<&EndpointStatus>,
    grace: i64,
) -> Option<i64> {
    let current = current?;
    let at = current.changed_at.as_ref()?.0.as_second() + grace + 1;
    let seen = endpoint
        .and_then(|e| e.peer.as_ref())
        .and_then(|p| p.sha256.as_deref());
    if seen.is_some() && seen == current.sha256.as_deref() {
        return None;
    }
    let last = endpoint
        .and_then(|e| e.last_probe_time.as_ref())
        .map(|t| t.0.as_second());
    match last {
        Some(l) if l >= at => None,
        _ => Some(at),
    }
}

fn describe_cert(
    serial: Option<&str>,
    not_after: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
) -> String {
    format!(
        "serial {}, notAfter {}",
        serial.unwrap_or("?"),
        not_after.map_or_else(|| "?".to_string(), |t| t.0.to_string())
    )
}

/// What a person should do about a stale endpoint, by rotation strategy.
pub fn stale_advice(strategy: RotationStrategy) -> &'static str {
    match strategy {
        RotationStrategy::None => {
            "rotation strategy None does not tell the server: restart its pods (kubectl rollout restart), or set spec.rotation.strategy to Signal (the server reloads on a signal) or RollingRestart"
        }
        RotationStrategy::Signal => {
            "the mcptrust-reloader did not get the server to load it: see the RotationReady condition and the sidecar's log (kubectl logs POD -c mcptrust-reloader), or set spec.rotation.fallback: RollingRestart"
        }
        RotationStrategy::RollingRestart => {
            "the rolling restart has not replaced the pods that serve it: check the rollout (kubectl rollout status) and the pods' events"
        }
    }
}

/// Adjusts the condition of a successful probe (`verified`) for [`staleness`]: within the
/// grace period it stays as it is, with a note; past it, `EndpointVerified` False with
/// reason [`REASON_SERVING_STALE_CERTIFICATE`] (served and current serial and notAfter,
/// since when, what to do per `strategy`, and `reloader`'s explanation when one is given).
/// `secret` names the Secret. A failed probe, or [`Staleness::Current`], is returned as is.
pub fn stale_condition(
    verified: DesiredCondition,
    staleness: Staleness,
    current: &CertificateStatus,
    peer: Option<&PeerCertificate>,
    strategy: RotationStrategy,
    reloader: Option<&str>,
) -> DesiredCondition {
    if verified.status != "True" {
        return verified;
    }
    let served = describe_cert(
        peer.and_then(|p| p.serial.as_deref()),
        peer.and_then(|p| p.not_after.as_ref()),
    );
    let wanted = describe_cert(current.serial.as_deref(), current.not_after.as_ref());
    match staleness {
        Staleness::Current => verified,
        Staleness::InGrace { elapsed, until } => DesiredCondition {
            message: format!(
                "{}; the endpoint still serves the previous certificate ({served}) {elapsed} s after Secret {} changed to {wanted}, within the grace period (until {}); probing again then",
                verified.message,
                current.secret_name,
                super::build::rfc3339(until)
            ),
            ..verified
        },
        Staleness::Stale { since } => {
            let since = since.map_or_else(
                || "since an unknown time".to_string(),
                |s| format!("since {}", super::build::rfc3339(s)),
            );
            let mut message = format!(
                "the endpoint serves {served}, but Secret {} holds {wanted} {since}, past the grace period; {}",
                current.secret_name,
                stale_advice(strategy)
            );
            if let Some(r) = reloader {
                message.push_str("; ");
                message.push_str(r);
            }
            DesiredCondition::new(
                types::ENDPOINT_VERIFIED,
                false,
                REASON_SERVING_STALE_CERTIFICATE,
                message,
            )
        }
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
        let peer = e.endpoint.peer.as_ref().expect("peer");
        assert_eq!(
            peer.not_after.as_ref().map(|t| t.0.to_string()).as_deref(),
            Some("2035-01-01T00:00:00Z"),
            "the peer's notAfter is read"
        );
        assert_eq!(peer.serial.as_deref(), Some("01"));
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

    fn cert(sha: &str, changed_at: Option<i64>) -> CertificateStatus {
        CertificateStatus {
            secret_name: "lab-server-tls".into(),
            not_after: Some(crate::controller::build::time(T + 90 * 86_400)),
            sha256: Some(sha.into()),
            serial: Some("0bcd".into()),
            changed_at: changed_at.map(crate::controller::build::time),
            ..Default::default()
        }
    }

    fn peer(sha: &str) -> PeerCertificate {
        PeerCertificate {
            subject: "CN=lab".into(),
            issuer: "CN=ca".into(),
            not_after: Some(crate::controller::build::time(T + 10 * 86_400)),
            self_signed: false,
            sha256: Some(sha.into()),
            serial: Some("0aaa".into()),
        }
    }

    #[test]
    fn served_certificate_is_stale_only_past_the_grace_period() {
        let cur = cert("bb", Some(T));
        assert_eq!(
            staleness(Some(&cur), Some(&peer("BB")), "CN=ca", 120, T + 500),
            Staleness::Current
        );
        assert_eq!(
            staleness(Some(&cur), Some(&peer("aa")), "CN=ca", 120, T + 30),
            Staleness::InGrace {
                elapsed: 30,
                until: T + 120
            }
        );
        assert_eq!(
            staleness(Some(&cur), Some(&peer("aa")), "CN=ca", 120, T + 120),
            Staleness::Stale { since: Some(T) }
        );
        assert_eq!(
            staleness(Some(&cert("bb", None)), Some(&peer("aa")), "CN=ca", 120, T),
            Staleness::Stale { since: None }
        );
        assert_eq!(
            staleness(None, Some(&peer("aa")), "CN=ca", 120, T),
            Staleness::Current
        );
        assert_eq!(
            staleness(Some(&cur), None, "CN=ca", 120, T),
            Staleness::Current
        );
        // A leaf from another CA does not use the Secret: never stale against it.
        let foreign = PeerCertificate {
            issuer: "CN=public".into(),
            ..peer("aa")
        };
        assert_eq!(
            staleness(Some(&cur), Some(&foreign), "CN=ca", 120, T + 500),
            Staleness::Current
        );

        let ok = DesiredCondition::new(types::ENDPOINT_VERIFIED, true, "Verified", "ok");
        let p = peer("aa");
        let in_grace = stale_condition(
            ok.clone(),
            Staleness::InGrace {
                elapsed: 30,
                until: T + 120,
            },
            &cur,
            Some(&p),
            RotationStrategy::Signal,
            None,
        );
        assert_eq!(
            (in_grace.status.as_str(), in_grace.reason.as_str()),
            ("True", "Verified")
        );
        assert!(
            in_grace
                .message
                .contains("30 s after Secret lab-server-tls changed"),
            "{}",
            in_grace.message
        );

        let stale = stale_condition(
            ok.clone(),
            Staleness::Stale { since: Some(T) },
            &cur,
            Some(&p),
            RotationStrategy::None,
            Some("pod x: no handler"),
        );
        assert_eq!(stale.status, "False");
        assert_eq!(stale.reason, REASON_SERVING_STALE_CERTIFICATE);
        for needle in [
            "serial 0aaa",
            "serial 0bcd",
            "since 2026-11-21T00:00:00Z",
            "rollout restart",
            "pod x: no handler",
        ] {
            assert!(
                stale.message.contains(needle),
                "{needle}: {}",
                stale.message
            );
        }
        for (strategy, needle) in [
            (RotationStrategy::Signal, "RotationReady"),
            (RotationStrategy::RollingRestart, "rollout status"),
        ] {
            let c = stale_condition(
                ok.clone(),
                Staleness::Stale { since: Some(T) },
                &cur,
                Some(&p),
                strategy,
                None,
            );
            assert!(c.message.contains(needle), "{strategy:?}: {}", c.message);
        }
        // A failed probe stays what it is.
        let failed =
            DesiredCondition::new(types::ENDPOINT_VERIFIED, false, "ConnectionRefused", "m");
        assert_eq!(
            stale_condition(
                failed.clone(),
                Staleness::Stale { since: None },
                &cur,
                Some(&p),
                RotationStrategy::None,
                None
            ),
            failed
        );
    }

    #[test]
    fn a_certificate_change_schedules_a_probe_when_the_grace_ends() {
        let cur = cert("bb", Some(T));
        let probed = |at: i64, sha: &str| EndpointStatus {
            last_probe_time: Some(crate::controller::build::time(at)),
            peer: Some(peer(sha)),
            ..Default::default()
        };
        assert_eq!(
            grace_probe_time(Some(&cur), Some(&probed(T - 10, "aa")), 120),
            Some(T + 121)
        );
        assert_eq!(grace_probe_time(Some(&cur), None, 120), Some(T + 121));
        assert_eq!(
            grace_probe_time(Some(&cur), Some(&probed(T + 30, "bb")), 120),
            None,
            "already seen"
        );
        assert_eq!(
            grace_probe_time(Some(&cur), Some(&probed(T + 121, "aa")), 120),
            None,
            "probed after the grace"
        );
        assert_eq!(grace_probe_time(Some(&cert("bb", None)), None, 120), None);
    }
}
