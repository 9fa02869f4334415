//! The contract between the webhook, the `mcptrust-reloader` sidecar (`mcptrust reload`)
//! and the controller for `spec.rotation.strategy: Signal`: names the webhook injects, and
//! the JSON the sidecar serves at `GET /status` on its admin port, which the controller
//! reads to explain a server that still serves an old certificate.

use serde::{Deserialize, Serialize};

/// Name of the injected native sidecar (an init container with `restartPolicy: Always`).
pub const RELOADER_CONTAINER: &str = "mcptrust-reloader";

/// The sidecar's admin port (`/livez`, `/readyz`, `/metrics`, `/status`), on the pod IP.
/// Pods share one network namespace, so this port must not clash with the server's; the
/// operator config's `reloader.adminPort` changes it.
pub const RELOADER_ADMIN_PORT: u16 = 9899;

/// Name of the sidecar's admin `containerPort` (IANA service names are at most 15
/// characters), by which the controller finds it.
pub const RELOADER_PORT_NAME: &str = "mcptrust-reload";

/// Environment variable the webhook sets in the target container (value: the container's
/// name). The sidecar finds the container's processes (and so its cgroup) by it in
/// `/proc/<pid>/environ`, which it can read because it runs as the target's UID.
pub const ENV_RELOADER_TARGET: &str = "MCPTRUST_RELOADER_TARGET";

/// Pod annotation the webhook sets when a pod selected by a `Signal` McpServer gets no
/// sidecar, with the reason a person can act on (e.g. `shareProcessNamespace is false`).
/// The webhook never overrides the user's spec and never fails the pod for this.
pub const ANNOTATION_RELOADER_SKIPPED: &str = "mcptrust.io/reloader-skipped";

/// Optional pod annotation: the sidecar's debounce in seconds (default 2), passed as
/// `--debounce-seconds`.
pub const ANNOTATION_RELOAD_DEBOUNCE: &str = "mcptrust.io/reload-debounce-seconds";

/// What the sidecar serves at `GET /status` (JSON, camelCase).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReloaderStatus {
    /// The process the sidecar would signal; `None` when none was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ReloaderTarget>,
    /// sha256 (hex) of the watched files now on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_sha256: Option<String>,
    /// sha256 (hex) of the files the target last loaded (at its start or at the last
    /// signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_sha256: Option<String>,
    /// The last decision taken for a settled change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<ReloaderDecision>,
    /// Signals sent since the sidecar started.
    #[serde(default)]
    pub signals_sent: u64,
    /// A signalled target died within the watch window (`SignalKilledTarget`): the sidecar
    /// sends no more signals, and the fallback applies from then on.
    #[serde(default)]
    pub killed_target: bool,
    /// The McpServer's `spec.rotation.fallback` should be applied (the last change could
    /// not be signalled safely, or a signal killed the target).
    #[serde(default)]
    pub needs_fallback: bool,
}

/// The target process as the sidecar sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReloaderTarget {
    /// PID in the pod's shared PID namespace.
    pub pid: u32,
    /// `/proc/<pid>/cmdline`, arguments joined by spaces.
    pub cmdline: String,
    /// A Go binary (`.go.buildinfo` in `/proc/<pid>/exe`).
    pub go: bool,
    /// `SigCgt` of `/proc/<pid>/status`, 16 hex digits.
    pub sig_cgt: String,
}

/// One decision of the sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReloaderDecision {
    /// Stable name: `Signal`, `Unchanged`, `StartedAfterChange`, `SignalNotCaught`,
    /// `SignalHandlingUnknown` (`crate::reload::Decision::as_str`), or
    /// `SignalKilledTarget`, `NoTarget`, `InvalidKeyPair`, `SignalFailed`.
    pub decision: String,
    /// What happened and what to do, for a person.
    pub message: String,
    /// When (RFC 3339).
    pub at: String,
    /// The target's PID, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}
