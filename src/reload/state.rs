//! The sidecar's bookkeeping between decisions, pure: what the target loaded, whether the
//! fallback applies, whether a signal killed it; and the messages a person reads.

use crate::api::ReloadSignal;
use crate::api::reloader::{ReloaderDecision, ReloaderStatus};

use super::Decision;

/// Decision name: no process to signal.
pub const NO_TARGET: &str = "NoTarget";
/// Decision name: the certificate and key do not load or match.
pub const INVALID_KEY_PAIR: &str = "InvalidKeyPair";
/// Decision name: `pidfd_open` or `pidfd_send_signal` failed.
pub const SIGNAL_FAILED: &str = "SignalFailed";
/// Decision name: a signalled target exited within the watch window (and every later
/// decision once that happened).
pub const SIGNAL_KILLED_TARGET: &str = "SignalKilledTarget";

/// Every decision name, for the metric's pre-created series and the docs.
pub const DECISIONS: [&str; 9] = [
    "Signal",
    "Unchanged",
    "StartedAfterChange",
    "SignalNotCaught",
    "SignalHandlingUnknown",
    SIGNAL_KILLED_TARGET,
    NO_TARGET,
    INVALID_KEY_PAIR,
    SIGNAL_FAILED,
];

/// The state served at `/status`, and the PID a signal killed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    /// What `/status` serves.
    pub status: ReloaderStatus,
    killed_pid: Option<u32>,
}

impl Book {
    /// At start-up: the target loaded what is on disk now (`sha256`).
    pub fn new(sha256: &str) -> Self {
        Self {
            status: ReloaderStatus {
                current_sha256: Some(sha256.to_owned()),
                loaded_sha256: Some(sha256.to_owned()),
                ..ReloaderStatus::default()
            },
            killed_pid: None,
        }
    }

    /// The PID a signal killed, once that happened: no more signals.
    pub fn killed_pid(&self) -> Option<u32> {
        self.killed_pid
    }

    /// The hash on disk now.
    pub fn current(&self) -> &str {
        self.status.current_sha256.as_deref().unwrap_or_default()
    }

    /// The hash the target last loaded.
    pub fn loaded(&self) -> &str {
        self.status.loaded_sha256.as_deref().unwrap_or_default()
    }

    /// Records the hash now on disk.
    pub fn set_current(&mut self, sha256: &str) {
        self.status.current_sha256 = Some(sha256.to_owned());
    }

    /// Records a decision as `/status`'s `lastDecision`.
    pub fn record(&mut self, decision: &str, message: &str, pid: Option<u32>, at: String) {
        self.status.last_decision = Some(ReloaderDecision {
            decision: decision.to_owned(),
            message: message.to_owned(),
            at,
            pid,
        });
    }

    /// Applies a [`Decision`] that sent nothing: a target started after the change
    /// loaded the current files (and needs no fallback); a signal it would not survive
    /// needs the fallback.
    pub fn skipped(&mut self, decision: Decision) {
        if decision == Decision::SkipStartedAfterChange {
            self.status
                .loaded_sha256
                .clone_from(&self.status.current_sha256);
            self.status.needs_fallback = self.status.killed_target;
        } else if decision.needs_fallback() {
            self.status.needs_fallback = true;
        }
    }

    /// A signal was sent: the target loads the current files; the fallback no longer
    /// applies unless a signal killed a target before.
    pub fn signalled(&mut self) {
        self.status.signals_sent += 1;
        self.status
            .loaded_sha256
            .clone_from(&self.status.current_sha256);
        self.status.needs_fallback = self.status.killed_target;
    }

    /// The signalled `pid` exited: never signal again, the fallback applies from now on.
    pub fn killed(&mut self, pid: u32) {
        self.killed_pid = Some(pid);
        self.status.killed_target = true;
        self.status.needs_fallback = true;
    }
}

/// What a person reads for `decision` about `pid`: why, and what to do. `exe_error` is
/// why `/proc/<pid>/exe` could not be read (the target was then taken for a Go program).
pub fn message(
    decision: Decision,
    pid: u32,
    signal: ReloadSignal,
    sig_cgt: u64,
    exe_error: Option<&str>,
) -> String {
    let sig = signal.as_str();
    match decision {
        Decision::Signal => {
            format!("sent {sig} to PID {pid}: the files changed and it catches {sig}")
        }
        Decision::SkipUnchanged => "the watched files did not change; nothing sent".to_owned(),
        Decision::SkipStartedAfterChange => format!(
            "PID {pid} started after the change, so it already read the new files; nothing sent"
        ),
        Decision::SkipNotCaught => format!(
            "PID {pid} does not catch {sig} (SigCgt {sig_cgt:016x}): the signal would kill it; not sent, the fallback applies"
        ),
        Decision::SkipSignalHandlingUnknown => match exe_error {
            Some(err) => format!(
                "could not read /proc/{pid}/exe: {err}; taken for a Go program, whose SigCgt cannot tell whether it handles {sig}: not sent, the fallback applies; set spec.rotation.handlesSignal: true if the server reloads on {sig}"
            ),
            None => format!(
                "PID {pid} is a Go program, whose SigCgt cannot tell whether it handles {sig}: not sent, the fallback applies; set spec.rotation.handlesSignal: true if the server reloads on {sig}"
            ),
        },
    }
}

/// The message of [`SIGNAL_KILLED_TARGET`] when the signalled `pid` exited within
/// `seconds`.
pub fn killed_message(pid: u32, signal: ReloadSignal, seconds: u64) -> String {
    format!(
        "PID {pid} exited within {seconds}s of {}: it does not survive the signal; no more signals, the fallback applies",
        signal.as_str()
    )
}

/// The message of [`SIGNAL_KILLED_TARGET`] for every change after that.
pub fn killed_earlier_message(pid: u32) -> String {
    format!("a signal killed PID {pid} earlier; the fallback applies")
}
