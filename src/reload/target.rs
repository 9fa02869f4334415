//! Finding the target by the webhook's environment mark, and telling whether it started
//! after a change: pure functions over what `/proc` says ([`super::procfs`] reads it).

use std::collections::HashMap;

use super::{NoTarget, Process, choose_target, topmost};
use crate::api::reloader::ENV_RELOADER_TARGET;

/// What `/proc/<pid>/environ` says about a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Environ {
    /// `MCPTRUST_RELOADER_TARGET=<name>`: a process of container `<name>`.
    Target(String),
    /// Readable, with `NAME=value` entries, none of them the mark: a program whose
    /// environment is intact, so not of the marked container (every process of it inherits
    /// the mark, unless its parent cleared the environment).
    Unmarked,
    /// Readable and without a single `NAME=value` entry: empty (kernel threads, zombies, a
    /// child started with `env -i`), gone, or overwritten by a process title (nginx,
    /// PostgreSQL and other programs write their title over argv and environ, which is
    /// what `/proc/<pid>/environ` reads; measured with Debian's nginx on the real node).
    Blank,
    /// EACCES: the process has capabilities (or another UID), so a reloader without any
    /// may not read it.
    Unreadable,
}

/// The container name in a `/proc/<pid>/environ` text (`NAME=value` entries separated by
/// NUL bytes), if it carries [`ENV_RELOADER_TARGET`].
pub fn target_mark(environ: &[u8]) -> Environ {
    let prefix = format!("{ENV_RELOADER_TARGET}=");
    let mut entries = environ
        .split(|b| *b == 0)
        .filter(|e| is_variable(e))
        .peekable();
    if entries.peek().is_none() {
        return Environ::Blank;
    }
    entries
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map_or(Environ::Unmarked, |name| {
            Environ::Target(String::from_utf8_lossy(name).into_owned())
        })
}

/// Whether an environ entry is `NAME=value` with a POSIX-portable name (letters, digits,
/// `_`, not starting with a digit): a process title written over the environment is not.
fn is_variable(entry: &[u8]) -> bool {
    let Some(eq) = entry.iter().position(|b| *b == b'=') else {
        return false;
    };
    let name = &entry[..eq];
    !name.is_empty()
        && !name[0].is_ascii_digit()
        && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Chooses the process of container `container` to signal: of the processes marked
/// `MCPTRUST_RELOADER_TARGET=<container>` in `environ` (never PID 1, never `self_pid`)
/// whose command line `process_name` matches, the topmost.
///
/// When none is marked, the mark may be hidden ([`Environ::Unreadable`]: a target with
/// capabilities hides its environment from a reloader without any) or overwritten
/// ([`Environ::Blank`]: a process title). Then [`choose_target`]'s cgroup rule decides
/// among the processes of the cgroups (containers) that hold no [`Environ::Unmarked`]
/// process, i.e. no program with an intact environment without the mark, which would
/// belong to another container (another sidecar, or the host outside a pod).
///
/// # Errors
/// [`NoTarget`] when nothing matches, or when several topmost processes do (then
/// `spec.rotation.processName` tells them apart).
pub fn choose_container_target(
    procs: &[Process],
    environ: &HashMap<u32, Environ>,
    self_pid: u32,
    container: &str,
    process_name: Option<&regex::Regex>,
) -> Result<u32, NoTarget> {
    let mark_of = |p: &Process| environ.get(&p.pid);
    let marked: Vec<&Process> = procs
        .iter()
        .filter(|p| p.pid != 1 && p.pid != self_pid)
        .filter(|p| matches!(mark_of(p), Some(Environ::Target(n)) if n == container))
        .filter(|p| process_name.is_none_or(|re| re.is_match(&p.cmdline)))
        .collect();
    if !marked.is_empty() {
        return topmost(&marked);
    }
    // Cgroups with an intact environment that lacks the mark (or marks another container).
    let foreign: Vec<&str> = procs
        .iter()
        .filter(|p| matches!(mark_of(p), Some(Environ::Unmarked | Environ::Target(_))))
        .map(|p| p.cgroup.as_str())
        .collect();
    let rest: Vec<Process> = procs
        .iter()
        .filter(|p| p.pid == 1 || p.pid == self_pid || !foreign.contains(&p.cgroup.as_str()))
        .cloned()
        .collect();
    choose_target(&rest, self_pid, process_name)
}

/// `btime` (boot time, whole Unix seconds, rounded down) of a `/proc/stat` text.
pub fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime"))
        .and_then(|v| v.trim().parse().ok())
}

/// Seconds since boot, the first field of `/proc/uptime` (two decimals).
pub fn parse_uptime(uptime: &str) -> Option<f64> {
    uptime.split_whitespace().next()?.parse().ok()
}

/// A lower bound of the boot instant, in Unix seconds: `btime` is rounded down to the
/// second; `now - uptime` (both read at about the same instant, `uptime` rounded down to
/// 10 ms) is finer, less 10 ms for its rounding. The larger of the two bounds.
pub fn boot_lower_bound(btime: u64, now_and_uptime: Option<(f64, f64)>) -> f64 {
    let coarse = btime as f64;
    now_and_uptime.map_or(coarse, |(now, up)| coarse.max(now - up - 0.01))
}

/// Whether a process whose start is `start_ticks` clock ticks after boot (stat field 22,
/// `ticks_per_second` from `sysconf(_SC_CLK_TCK)`) surely started after `seen` (Unix
/// seconds): its earliest possible start, `boot_lower_bound + ticks / hz`, is after
/// `seen`. A start that the granularity cannot place after the change counts as before
/// (the target may have read the old files).
pub fn started_after(
    boot_lower_bound: f64,
    start_ticks: u64,
    ticks_per_second: u64,
    seen: f64,
) -> bool {
    let hz = ticks_per_second.max(1) as f64;
    boot_lower_bound + start_ticks as f64 / hz > seen
}
