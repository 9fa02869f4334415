//! `mcptrust reload`, the `mcptrust-reloader` sidecar of `rotation.strategy: Signal`: the
//! pure decisions, each unit-tested without a process to signal.
//!
//! The sidecar shares its pod's PID namespace. When kubelet swaps a mounted Secret or
//! ConfigMap (`..data` rename), it waits for the files to settle ([`Debounce`]), checks
//! that the certificate and key parse and belong together on two reads ([`check_pair`]),
//! finds the server process ([`choose_target`]), and signals it only when that is safe
//! ([`decide`]): the content changed, the target was running before the change, it
//! catches the signal (`SigCgt`, [`sig_cgt`]) and, for a Go binary ([`is_go_binary`]),
//! the McpServer says it handles it (`spec.rotation.handlesSignal`).

pub mod cli;
pub mod hash;
pub mod procfs;
pub mod run;
pub mod server;
pub mod state;
pub mod target;
pub mod watch;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::tls::{CertInfo, TlsError, load_certified_key};

/// Why a reload step failed; [`ReloadError::reason`] is the stable name logged and counted.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// `/proc/<pid>/status` has no parsable `SigCgt:` line.
    #[error("no SigCgt line in /proc/<pid>/status")]
    NoSigCgt,
    /// `/proc/<pid>/stat` does not have the expected fields.
    #[error("unparsable /proc/<pid>/stat: {0}")]
    BadStat(String),
    /// The certificate or key does not load, or they do not match.
    #[error(transparent)]
    Pair(#[from] TlsError),
    /// The two reads of the certificate pair differ: a swap is still in progress.
    #[error("the certificate changed between two reads: the swap is still in progress")]
    PairChanging,
    /// `pidfd_open` or `pidfd_send_signal` failed (ESRCH: the process is gone).
    #[error("signalling PID {pid}: {source}")]
    Signal {
        /// The target's PID.
        pid: u32,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A watched directory or one of its files cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The directory or file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A watched directory cannot be watched (missing, not a directory, no permission).
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The watcher's error.
        #[source]
        source: notify::Error,
    },
}

impl ReloadError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoSigCgt => "NoSigCgt",
            Self::BadStat(_) => "BadStat",
            Self::Pair(_) => "InvalidKeyPair",
            Self::PairChanging => "PairChanging",
            Self::Signal { .. } => "SignalFailed",
            Self::Read { .. } => "ReadFailed",
            Self::Watch { .. } => "WatchFailed",
        }
    }
}

/// The `SigCgt` mask (caught signals, bit `n-1` for signal `n`) of a `/proc/<pid>/status`
/// text.
///
/// # Errors
/// [`ReloadError::NoSigCgt`] when the line is missing or not hexadecimal.
pub fn sig_cgt(status: &str) -> Result<u64, ReloadError> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or(ReloadError::NoSigCgt)
}

/// Whether `mask` (from [`sig_cgt`]) says signal number `signo` (1 to 64) is caught.
pub fn catches(mask: u64, signo: u8) -> bool {
    (1..=64).contains(&signo) && mask & (1u64 << (signo - 1)) != 0
}

/// What the reloader needs of `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Parent PID (field 4).
    pub ppid: u32,
    /// Start time in clock ticks after boot (field 22).
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`; the command name (field 2) may hold spaces and parentheses,
/// so the fields are counted after its last `)`.
///
/// # Errors
/// [`ReloadError::BadStat`] when the fields are missing or not numbers.
pub fn parse_stat(text: &str) -> Result<Stat, ReloadError> {
    let bad = || ReloadError::BadStat(text.chars().take(80).collect());
    let rest = &text[text.rfind(')').ok_or_else(bad)? + 1..];
    // rest starts at field 3 (state): ppid is field 4, starttime field 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1).and_then(|f| f.parse().ok()).ok_or_else(bad)?;
    let start_ticks = fields
        .get(19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    Ok(Stat { ppid, start_ticks })
}

/// One process of the shared PID namespace, as read from `/proc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// PID in the pod's namespace.
    pub pid: u32,
    /// Parent PID.
    pub ppid: u32,
    /// `/proc/<pid>/cmdline`, arguments joined by spaces.
    pub cmdline: String,
    /// `/proc/<pid>/cgroup` (cgroup v2: one line, `0::/path`), which names the container.
    pub cgroup: String,
}

/// Why no target was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoTarget {
    /// No process outside the reloader's and the pause process's cgroups matches.
    NoMatch,
    /// Several unrelated processes match (several containers, or several process trees):
    /// set `spec.rotation.processName`.
    Ambiguous(Vec<u32>),
}

/// Chooses the process to signal among `procs`: never PID 1 (the pause process), never
/// `self_pid`, never a process in the reloader's own cgroup or the pause process's; of the
/// rest, those whose command line `process_name` matches (all when `None`); of those, the
/// topmost, whose parent does not match (nginx's master, not its workers).
///
/// # Errors
/// [`NoTarget`] when nothing matches, or when several topmost processes do.
pub fn choose_target(
    procs: &[Process],
    self_pid: u32,
    process_name: Option<&regex::Regex>,
) -> Result<u32, NoTarget> {
    let cgroup_of = |pid: u32| procs.iter().find(|p| p.pid == pid).map(|p| &p.cgroup);
    let own = cgroup_of(self_pid);
    let pause = cgroup_of(1);
    let candidate = |p: &Process| {
        p.pid != 1
            && p.pid != self_pid
            && Some(&p.cgroup) != own
            && Some(&p.cgroup) != pause
            && process_name.is_none_or(|re| re.is_match(&p.cmdline))
    };
    let matching: Vec<&Process> = procs.iter().filter(|p| candidate(p)).collect();
    topmost(&matching)
}

/// The one process of `matching` whose parent is not in `matching`.
///
/// # Errors
/// [`NoTarget::NoMatch`] for none, [`NoTarget::Ambiguous`] for several.
pub(crate) fn topmost(matching: &[&Process]) -> Result<u32, NoTarget> {
    let topmost: Vec<u32> = matching
        .iter()
        .filter(|p| !matching.iter().any(|q| q.pid == p.ppid))
        .map(|p| p.pid)
        .collect();
    match topmost.as_slice() {
        [] => Err(NoTarget::NoMatch),
        [one] => Ok(*one),
        many => Err(NoTarget::Ambiguous(many.to_vec())),
    }
}

/// A process held by a pidfd: signals reach exactly the process that was opened, never
/// a later one that reused its PID (ESRCH once it is gone).
#[derive(Debug)]
pub struct PidHandle {
    pid: u32,
    fd: std::os::fd::OwnedFd,
}

impl PidHandle {
    /// Opens `pid` (`pidfd_open`).
    ///
    /// # Errors
    /// [`ReloadError::Signal`] when there is no such process (or it is not visible).
    pub fn open(pid: u32) -> Result<Self, ReloadError> {
        let err = |source: std::io::Error| ReloadError::Signal { pid, source };
        let raw = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
        let fd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
            .map_err(|e| err(e.into()))?;
        Ok(Self { pid, fd })
    }

    /// The PID it was opened for.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The pidfd: it polls readable once the process has exited.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// Sends `signal` (`pidfd_send_signal`).
    ///
    /// # Errors
    /// [`ReloadError::Signal`]: ESRCH when the process has exited, EPERM across UIDs.
    pub fn signal(&self, signal: crate::api::ReloadSignal) -> Result<(), ReloadError> {
        use crate::api::ReloadSignal as S;
        use rustix::process::Signal;
        let sig = match signal {
            S::Sighup => Signal::HUP,
            S::Sigusr1 => Signal::USR1,
            S::Sigusr2 => Signal::USR2,
        };
        rustix::process::pidfd_send_signal(&self.fd, sig).map_err(|e| ReloadError::Signal {
            pid: self.pid,
            source: e.into(),
        })
    }
}

/// Whether an ELF executable is a Go program: it has a `.go.buildinfo` section (every Go
/// binary since Go 1.13). Bytes that are not ELF are not Go.
pub fn is_go_binary(elf: &[u8]) -> bool {
    is_go_elf(elf)
}

/// [`is_go_binary`] of an open executable, reading only the ELF header, the section
/// headers and the section names (a few KiB), never the whole file: a Go server is tens
/// of MB, and the sidecar's memory limit is 64 MiB.
pub fn is_go_file(file: &std::fs::File) -> bool {
    is_go_elf(&object::ReadCache::new(file))
}

fn is_go_elf<'data, R: object::ReadRef<'data>>(data: R) -> bool {
    use object::{Object, ObjectSection};
    object::File::parse(data).is_ok_and(|f| {
        f.sections()
            .any(|s| s.name().is_ok_and(|n| n == ".go.buildinfo"))
    })
}

/// Reads the certificate and key twice and checks each time that they parse and match;
/// returns the leaf's facts when both reads agree.
///
/// # Errors
/// [`ReloadError::Pair`] when a read fails to load or match, [`ReloadError::PairChanging`]
/// when the two reads saw different certificates.
pub fn check_pair(cert: &Path, key: &Path) -> Result<CertInfo, ReloadError> {
    let first = load_certified_key(cert, key)?;
    let second = load_certified_key(cert, key)?;
    if first.cert != second.cert {
        return Err(ReloadError::PairChanging);
    }
    CertInfo::of(&second).ok_or(ReloadError::PairChanging)
}

/// A trailing-edge debounce: due `quiet` after the last change, however many came before,
/// so that a Secret and a bundle swapped at different times give one signal.
#[derive(Debug, Clone)]
pub struct Debounce {
    quiet: Duration,
    last: Option<Instant>,
}

impl Debounce {
    /// A debounce that waits `quiet` (the reloader's default is 2 s).
    pub fn new(quiet: Duration) -> Self {
        Self { quiet, last: None }
    }

    /// Records a change seen at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.last = Some(now);
    }

    /// When the pending change is due, or `None` when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.last.map(|t| t + self.quiet)
    }

    /// Whether a change is due at `now`; if so, it is consumed.
    pub fn take_due(&mut self, now: Instant) -> bool {
        if self.deadline().is_some_and(|d| now >= d) {
            self.last = None;
            true
        } else {
            false
        }
    }
}

/// What the reloader knows when a settled change is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The content hash the target last loaded (at its start, or at the last signal).
    pub loaded_sha256: String,
    /// The content hash now on disk.
    pub current_sha256: String,
    /// The target started after the change was first seen (it read the new files).
    pub started_after_change: bool,
    /// The target's `SigCgt` mask.
    pub sig_cgt: u64,
    /// The target is a Go binary.
    pub go: bool,
    /// `spec.rotation.handlesSignal`.
    pub handles_signal: bool,
}

/// The reloader's decision for one settled change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the signal.
    Signal,
    /// The files did not change.
    SkipUnchanged,
    /// The target started after the change, so it already reads the new files.
    SkipStartedAfterChange,
    /// The target does not catch the signal: it would die (apply the fallback).
    SkipNotCaught,
    /// A Go target without `handlesSignal`: `SigCgt` cannot tell (apply the fallback).
    SkipSignalHandlingUnknown,
}

impl Decision {
    /// Stable CamelCase name, logged and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "Signal",
            Self::SkipUnchanged => "Unchanged",
            Self::SkipStartedAfterChange => "StartedAfterChange",
            Self::SkipNotCaught => "SignalNotCaught",
            Self::SkipSignalHandlingUnknown => "SignalHandlingUnknown",
        }
    }

    /// Whether the McpServer's fallback applies.
    pub fn needs_fallback(self) -> bool {
        matches!(self, Self::SkipNotCaught | Self::SkipSignalHandlingUnknown)
    }
}

/// Decides whether to send `signo`, in this order: unchanged content, a target started
/// after the change, a signal the target does not catch, a Go target without
/// `handlesSignal`.
pub fn decide(facts: &Facts, signo: u8) -> Decision {
    if facts.loaded_sha256 == facts.current_sha256 {
        Decision::SkipUnchanged
    } else if facts.started_after_change {
        Decision::SkipStartedAfterChange
    } else if !catches(facts.sig_cgt, signo) {
        Decision::SkipNotCaught
    } else if facts.go && !facts.handles_signal {
        Decision::SkipSignalHandlingUnknown
    } else {
        Decision::Signal
    }
}

#[cfg(test)]
mod tests;
