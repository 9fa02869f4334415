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
    /// Readable, without the mark (or empty: kernel threads, zombies).
    Unmarked,
    /// EACCES: the process has capabilities (or another UID), so a reloader without any
    /// may not read it.
    Unreadable,
}

/// The container name in a `/proc/<pid>/environ` text (`NAME=value` entries separated by
/// NUL bytes), if it carries [`ENV_RELOADER_TARGET`].
pub fn target_mark(environ: &[u8]) -> Environ {
    let prefix = format!("{ENV_RELOADER_TARGET}=");
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map_or(Environ::Unmarked, |name| {
            Environ::Target(String::from_utf8_lossy(name).into_owned())
        })
}

/// Chooses the process of container `container` to signal: of the processes marked
/// `MCPTRUST_RELOADER_TARGET=<container>` in `environ` (never PID 1, never `self_pid`)
/// whose command line `process_name` matches, the topmost. When none is marked, falls back
/// to [`choose_target`]'s cgroup rule: the mark may be hidden ([`Environ::Unreadable`]: a
/// target with capabilities hides its environment from a reloader without any) or
/// overwritten (nginx, PostgreSQL and other programs that set a process title write it
/// over their original argv and environ, which is what `/proc/<pid>/environ` reads, so the
/// mark reads as [`Environ::Unmarked`]; measured with Debian's nginx on the real node).
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
    let marked: Vec<&Process> = procs
        .iter()
        .filter(|p| p.pid != 1 && p.pid != self_pid)
        .filter(|p| matches!(environ.get(&p.pid), Some(Environ::Target(n)) if n == container))
        .filter(|p| process_name.is_none_or(|re| re.is_match(&p.cmdline)))
        .collect();
    if marked.is_empty() {
        choose_target(procs, self_pid, process_name)
    } else {
        topmost(&marked)
    }
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
