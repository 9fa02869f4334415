//! The `RotationReady` step (`spec.rotation.strategy: Signal` only): read the
//! `mcptrust-reloader` sidecars of the McpServer's pods (`GET /status` on their admin
//! port, [`crate::api::reloader::ReloaderStatus`]) and sum them up in one condition.
//!
//! The decisions are pure ([`pod_view`], [`aggregate`]); the network call goes through the
//! [`ReloaderReader`] in the [`super::Context`], which tests replace.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::{BodyExt as _, Empty};
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::api::conditions::{DesiredCondition, types};
use crate::api::reloader::{
    ANNOTATION_RELOADER_SKIPPED, RELOADER_CONTAINER, RELOADER_PORT_NAME, ReloaderStatus,
};

/// How long one `GET /status` may take, connection included.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest `/status` body read (bytes); the JSON is a few hundred.
const MAX_STATUS_BYTES: usize = 64 * 1024;

/// Reads one sidecar's status. The live implementation is [`LiveReloaderReader`]; tests
/// inject their own.
pub trait ReloaderReader: Send + Sync {
    /// `GET http://<ip>:<port>/status`; the error is a sentence for the condition message.
    fn status(&self, ip: String, port: u16) -> BoxFuture<'_, Result<ReloaderStatus, String>>;
}

/// A shared reader.
pub type SharedReloaderReader = Arc<dyn ReloaderReader>;

/// Plain HTTP/1.1 over TCP to the pod IP (the sidecar's admin port has no TLS), with
/// [`STATUS_TIMEOUT`] for the whole exchange.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveReloaderReader;

impl ReloaderReader for LiveReloaderReader {
    fn status(&self, ip: String, port: u16) -> BoxFuture<'_, Result<ReloaderStatus, String>> {
        Box::pin(async move {
            match tokio::time::timeout(STATUS_TIMEOUT, get_status(&ip, port)).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "GET http://{}/status timed out after {} s",
                    host_port(&ip, port),
                    STATUS_TIMEOUT.as_secs()
                )),
            }
        })
    }
}

fn host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

async fn get_status(ip: &str, port: u16) -> Result<ReloaderStatus, String> {
    let authority = host_port(ip, port);
    let url = format!("http://{authority}/status");
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get("/status")
        .header(http::header::HOST, &authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_STATUS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("GET {url}: reading the body: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        serde_json::from_slice::<ReloaderStatus>(&body)
            .map_err(|e| format!("GET {url}: not a reloader status: {e}"))
    }
    .await;
    driver.abort();
    result
}

/// One pod marked for the McpServer, as far as `RotationReady` cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    /// The pod's name.
    pub name: String,
    /// The webhook's [`ANNOTATION_RELOADER_SKIPPED`] reason.
    pub skipped: Option<String>,
    /// `status.phase` is `Running`.
    pub running: bool,
    /// `status.podIP`.
    pub ip: Option<String>,
    /// The sidecar's admin port ([`RELOADER_PORT_NAME`]); `None` without the sidecar or
    /// the named port.
    pub port: Option<u16>,
    /// The pod has a [`RELOADER_CONTAINER`] (init container or container).
    pub has_reloader: bool,
}

/// What the controller needs of `pod` ([`PodView`]). The sidecar is looked for among the
/// init containers (a native sidecar) and the containers.
pub fn pod_view(pod: &Pod) -> PodView {
    let spec = pod.spec.as_ref();
    let reloader: Option<&Container> = spec.and_then(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
            .find(|c| c.name == RELOADER_CONTAINER)
    });
    let port = reloader.and_then(|c| {
        c.ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(RELOADER_PORT_NAME))
            .and_then(|p| u16::try_from(p.container_port).ok())
    });
    let status = pod.status.as_ref();
    PodView {
        name: pod.metadata.name.clone().unwrap_or_default(),
        skipped: pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_RELOADER_SKIPPED).cloned()),
        running: status.and_then(|s| s.phase.as_deref()) == Some("Running"),
        ip: status
            .and_then(|s| s.pod_ip.clone())
            .filter(|i| !i.is_empty()),
        port,
        has_reloader: reloader.is_some(),
    }
}

/// What the controller learnt about one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// The webhook gave it no sidecar, for this reason.
    Skipped(String),
    /// It has no [`RELOADER_CONTAINER`] (or the container has no [`RELOADER_PORT_NAME`]
    /// port): created before the McpServer selected it, or injection is off.
    NoReloader,
    /// `/status` could not be read: why.
    Unreachable(String),
    /// The sidecar's status.
    Status(ReloaderStatus),
}

/// Which pods to read: the running ones; a skipped or sidecar-less pod is known without a
/// request. Returns each running pod with its reading, or `None` where a request is needed
/// (then [`PodView::ip`] and [`PodView::port`] are set).
pub fn plan(pods: &[PodView]) -> Vec<(&PodView, Option<Reading>)> {
    pods.iter()
        .filter(|p| p.running)
        .map(|p| {
            let known = if let Some(reason) = &p.skipped {
                Some(Reading::Skipped(reason.clone()))
            } else if !p.has_reloader || p.port.is_none() {
                Some(Reading::NoReloader)
            } else if p.ip.is_none() {
                Some(Reading::Unreachable("the pod has no IP yet".into()))
            } else {
                None
            };
            (p, known)
        })
        .collect()
}

/// The `RotationReady` verdict over all pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    /// The `RotationReady` condition.
    pub condition: DesiredCondition,
    /// A sidecar asks for `spec.rotation.fallback` (`needsFallback`, or a killed target).
    pub needs_fallback: bool,
    /// Why the server may still serve an old certificate, when a sidecar says so (for the
    /// `ServingStaleCertificate` message).
    pub explanation: Option<String>,
}

/// Reason of `RotationReady=False` when a signal killed the target.
pub const REASON_SIGNAL_KILLED_TARGET: &str = "SignalKilledTarget";

/// Sums up the readings (pod name, [`Reading`]) of the running pods, worst first:
/// `SignalKilledTarget`, then a last decision with `needsFallback` (named after the
/// decision: `SignalHandlingUnknown`, `SignalNotCaught`...; `FallbackNeeded` when it has
/// no usable name), then `ReloaderMissing` (skipped by the webhook, or
/// no sidecar), then `ReloaderUnreachable`; else True `Reloaded` (some last decision is
/// `Signal`) or `Watching`. Messages name the pod and say what to do.
pub fn aggregate(readings: &[(String, Reading)]) -> Aggregate {
    let cond = |ok: bool, reason: &str, message: String| {
        DesiredCondition::new(types::ROTATION_READY, ok, reason, message)
    };
    let statuses = || {
        readings.iter().filter_map(|(pod, r)| match r {
            Reading::Status(s) => Some((pod, s)),
            _ => None,
        })
    };
    if let Some((pod, s)) = statuses().find(|(_, s)| s.killed_target) {
        let pid = s
            .last_decision
            .as_ref()
            .and_then(|d| d.pid)
            .or_else(|| s.target.as_ref().map(|t| t.pid))
            .map_or_else(|| "?".to_string(), |p| p.to_string());
        let message = format!(
            "in pod {pod}, the signal killed the target process (PID {pid}): it does not handle the signal; the sidecar sends no more signals, the fallback applies (set spec.rotation.fallback: RollingRestart to restart the pods), and the server must reload another way (or set spec.rotation.strategy: RollingRestart)"
        );
        return Aggregate {
            explanation: Some(format!(
                "pod {pod}: a signal killed the server (SignalKilledTarget)"
            )),
            condition: cond(false, REASON_SIGNAL_KILLED_TARGET, message),
            needs_fallback: true,
        };
    }
    if let Some((pod, s)) = statuses().find(|(_, s)| s.needs_fallback) {
        let decision = s.last_decision.as_ref();
        // The sidecar's decision names the reason (`SignalHandlingUnknown`,
        // `SignalNotCaught`, `NoTarget`, `InvalidKeyPair`, `SignalFailed`) when it is a
        // valid condition reason.
        let reason = decision
            .map(|d| d.decision.as_str())
            .filter(|r| {
                r.starts_with(|c: char| c.is_ascii_uppercase())
                    && r.len() <= 64
                    && r.chars().all(|c| c.is_ascii_alphanumeric())
            })
            .unwrap_or("FallbackNeeded");
        let said = decision.map_or("the sidecar asks for the fallback", |d| d.message.as_str());
        return Aggregate {
            condition: cond(false, reason, format!("pod {pod}: {said}")),
            needs_fallback: true,
            explanation: Some(format!(
                "the reloader in pod {pod} did not signal ({reason}): {said}"
            )),
        };
    }
    for (pod, r) in readings {
        let missing = match r {
            Reading::Skipped(why) => Some(format!(
                "pod {pod} has no mcptrust-reloader: the webhook skipped it ({why}); fix the pod spec and recreate the pod, or use spec.rotation.strategy: RollingRestart"
            )),
            Reading::NoReloader => Some(format!(
                "pod {pod} has no mcptrust-reloader sidecar with a port named {RELOADER_PORT_NAME}: it was created before this McpServer selected it, or injection is off for its namespace; recreate it"
            )),
            _ => None,
        };
        if let Some(message) = missing {
            return Aggregate {
                explanation: Some(message.clone()),
                condition: cond(false, "ReloaderMissing", message),
                needs_fallback: false,
            };
        }
    }
    if let Some((pod, e)) = readings.iter().find_map(|(pod, r)| match r {
        Reading::Unreachable(e) => Some((pod, e)),
        _ => None,
    }) {
        return Aggregate {
            condition: cond(
                false,
                "ReloaderUnreachable",
                format!(
                    "cannot read the mcptrust-reloader status of pod {pod}: {e}; check the sidecar (kubectl logs {pod} -c {RELOADER_CONTAINER}) and NetworkPolicies to its admin port"
                ),
            ),
            needs_fallback: false,
            explanation: None,
        };
    }
    let n = readings.len();
    let reloaded = statuses()
        .filter(|(_, s)| {
            s.last_decision
                .as_ref()
                .is_some_and(|d| d.decision == "Signal")
        })
        .count();
    let condition = if reloaded > 0 {
        cond(
            true,
            "Reloaded",
            format!(
                "{reloaded} of {n} pod(s) signalled their server to reload its certificate; all {n} sidecar(s) report no problem"
            ),
        )
    } else {
        cond(
            true,
            "Watching",
            format!(
                "{n} pod(s) with an mcptrust-reloader watching the certificate; no change signalled yet"
            ),
        )
    };
    Aggregate {
        condition,
        needs_fallback: false,
        explanation: None,
    }
}

/// Reads the sidecars of McpServer `ns/name`: one list of the namespace's pods, those
/// annotated `mcptrust.io/mcpserver: <ns>/<name>` (the webhook's mark), then one
/// `GET /status` per running pod with a sidecar, all at once through
/// [`super::Context::reloaders`]; summed up by [`aggregate`].
///
/// # Errors
/// [`super::Error::Kube`] when the pods cannot be listed.
pub async fn read(ctx: &super::Context, ns: &str, name: &str) -> super::Result<Aggregate> {
    let pods: kube::Api<Pod> = kube::Api::namespaced(ctx.client.clone(), ns);
    let marker = format!("{ns}/{name}");
    let views: Vec<PodView> = pods
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .iter()
        .filter(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::inject::ANNOTATION_MCPSERVER))
                == Some(&marker)
        })
        .map(pod_view)
        .collect();
    let planned = plan(&views);
    let readings = futures::future::join_all(planned.into_iter().map(|(pod, known)| async move {
        let reading = match (known, pod.ip.clone(), pod.port) {
            (Some(r), _, _) => r,
            (None, Some(ip), Some(port)) => match ctx.reloaders.status(ip, port).await {
                Ok(s) => Reading::Status(s),
                Err(e) => Reading::Unreachable(e),
            },
            (None, _, _) => Reading::NoReloader,
        };
        (pod.name.clone(), reading)
    }))
    .await;
    Ok(aggregate(&readings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::reloader::{ReloaderDecision, ReloaderTarget};
    use serde_json::json;

    fn status(decision: &str, needs_fallback: bool, killed: bool) -> ReloaderStatus {
        ReloaderStatus {
            target: Some(ReloaderTarget {
                pid: 7,
                cmdline: "nginx: master process".into(),
                go: false,
                sig_cgt: "0000000000000001".into(),
            }),
            last_decision: Some(ReloaderDecision {
                decision: decision.into(),
                message: format!("{decision} said the sidecar"),
                at: "2026-12-06T16:00:00Z".into(),
                pid: Some(42),
            }),
            needs_fallback,
            killed_target: killed,
            ..Default::default()
        }
    }

    fn r(pod: &str, reading: Reading) -> (String, Reading) {
        (pod.to_string(), reading)
    }

    #[test]
    fn worst_reading_wins_in_order() {
        let ok = r("a", Reading::Status(status("Signal", false, false)));
        let killed = r(
            "b",
            Reading::Status(status("SignalKilledTarget", true, true)),
        );
        let unknown = r(
            "c",
            Reading::Status(status("SignalHandlingUnknown", true, false)),
        );
        let skipped = r(
            "d",
            Reading::Skipped("shareProcessNamespace is false".into()),
        );
        let down = r("e", Reading::Unreachable("connection refused".into()));

        let all = [
            ok.clone(),
            down.clone(),
            skipped.clone(),
            unknown.clone(),
            killed,
        ];
        let a = aggregate(&all);
        assert_eq!(a.condition.reason, "SignalKilledTarget");
        assert_eq!(a.condition.status, "False");
        assert!(a.condition.message.contains("pod b") && a.condition.message.contains("PID 42"));
        assert!(a.needs_fallback);

        let a = aggregate(&[ok.clone(), down.clone(), skipped.clone(), unknown]);
        assert_eq!(a.condition.reason, "SignalHandlingUnknown");
        assert!(
            a.condition
                .message
                .contains("pod c: SignalHandlingUnknown said the sidecar")
        );
        assert!(a.needs_fallback);
        assert!(a.explanation.is_some_and(|e| e.contains("pod c")));

        let a = aggregate(&[ok.clone(), down.clone(), skipped]);
        assert_eq!(a.condition.reason, "ReloaderMissing");
        assert!(
            a.condition
                .message
                .contains("shareProcessNamespace is false")
        );
        assert!(!a.needs_fallback);

        let a = aggregate(&[ok.clone(), down]);
        assert_eq!(a.condition.reason, "ReloaderUnreachable");
        assert!(a.condition.message.contains("pod e") && a.condition.message.contains("refused"));

        let a = aggregate(&[ok, r("f", Reading::Status(ReloaderStatus::default()))]);
        assert_eq!(
            (a.condition.status.as_str(), a.condition.reason.as_str()),
            ("True", "Reloaded")
        );
        assert!(a.condition.message.contains("1 of 2"));

        let a = aggregate(&[r("f", Reading::Status(ReloaderStatus::default()))]);
        assert_eq!(a.condition.reason, "Watching");
        let a = aggregate(&[r("g", Reading::NoReloader)]);
        assert_eq!(a.condition.reason, "ReloaderMissing");
    }

    #[test]
    fn signal_not_caught_keeps_its_name() {
        let a = aggregate(&[r(
            "a",
            Reading::Status(status("SignalNotCaught", true, false)),
        )]);
        assert_eq!(a.condition.reason, "SignalNotCaught");
        let a = aggregate(&[r(
            "a",
            Reading::Status(status("InvalidKeyPair", true, false)),
        )]);
        assert_eq!(a.condition.reason, "InvalidKeyPair");
        let a = aggregate(&[r("a", Reading::Status(status("bad reason!", true, false)))]);
        assert_eq!(a.condition.reason, "FallbackNeeded");
        // A decision that needs no fallback is not a failure.
        let a = aggregate(&[r("a", Reading::Status(status("Unchanged", false, false)))]);
        assert_eq!(a.condition.reason, "Watching");
    }

    #[test]
    fn pods_are_read_only_when_running_with_a_sidecar_port() {
        let pod =
            |name: &str, phase: &str, annotations: serde_json::Value, init: bool, port: bool| {
                let mut c = json!({"name": RELOADER_CONTAINER, "image": "mcptrust"});
                if port {
                    c["ports"] = json!([{"name": RELOADER_PORT_NAME, "containerPort": 9899}]);
                }
                let mut spec = json!({"containers": [{"name": "server", "image": "nginx"}]});
                if init {
                    c["restartPolicy"] = json!("Always");
                    spec["initContainers"] = json!([c]);
                }
                serde_json::from_value::<Pod>(json!({
                    "metadata": {"name": name, "annotations": annotations},
                    "spec": spec,
                    "status": {"phase": phase, "podIP": "10.0.0.7"}
                }))
                .expect("pod")
            };
        let views: Vec<PodView> = [
            pod("ok", "Running", json!({}), true, true),
            pod("pending", "Pending", json!({}), true, true),
            pod(
                "skipped",
                "Running",
                json!({ANNOTATION_RELOADER_SKIPPED: "hostPID is true"}),
                false,
                false,
            ),
            pod("noport", "Running", json!({}), true, false),
            pod("none", "Running", json!({}), false, false),
        ]
        .iter()
        .map(pod_view)
        .collect();
        assert_eq!(views[0].port, Some(9899));
        assert_eq!(views[0].ip.as_deref(), Some("10.0.0.7"));
        let planned: Vec<(&str, Option<Reading>)> = plan(&views)
            .into_iter()
            .map(|(p, r)| (p.name.as_str(), r))
            .collect();
        assert_eq!(
            planned,
            vec![
                ("ok", None),
                ("skipped", Some(Reading::Skipped("hostPID is true".into()))),
                ("noport", Some(Reading::NoReloader)),
                ("none", Some(Reading::NoReloader)),
            ]
        );
    }
}
