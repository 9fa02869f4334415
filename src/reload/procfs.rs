//! Reading the shared PID namespace's `/proc` (`--proc-root`): the processes, their
//! environment marks, and the facts the decision needs about the target.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::target::{Environ, boot_lower_bound, parse_btime, parse_uptime, target_mark};
use super::{Process, ReloadError, Stat, parse_stat, sig_cgt};

/// Every process of `proc_root`, and, when `marks` is set, what each one's
/// `/proc/<pid>/environ` says ([`target_mark`]). A process that exits during the scan is
/// left out.
///
/// # Errors
/// [`ReloadError::Read`] when `proc_root` cannot be listed.
pub fn scan(
    proc_root: &Path,
    marks: bool,
) -> Result<(Vec<Process>, HashMap<u32, Environ>), ReloadError> {
    let entries = std::fs::read_dir(proc_root).map_err(|source| ReloadError::Read {
        path: proc_root.to_path_buf(),
        source,
    })?;
    let mut procs = Vec::new();
    let mut environ = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let Ok(Stat { ppid, .. }) = read_stat(&dir) else {
            continue;
        };
        let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        procs.push(Process {
            pid,
            ppid,
            cmdline: read_cmdline(&dir),
            cgroup,
        });
        if marks {
            let mark = match std::fs::read(dir.join("environ")) {
                Ok(bytes) => target_mark(&bytes),
                Err(e) if e.kind() == ErrorKind::PermissionDenied => Environ::Unreadable,
                Err(_) => Environ::Blank,
            };
            environ.insert(pid, mark);
        }
    }
    Ok((procs, environ))
}

/// `/proc/<pid>/cmdline`, arguments joined by spaces (empty for kernel threads and
/// zombies, or when unreadable).
pub fn read_cmdline(pid_dir: &Path) -> String {
    std::fs::read(pid_dir.join("cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn read_text(path: PathBuf) -> Result<String, ReloadError> {
    std::fs::read_to_string(&path).map_err(|source| ReloadError::Read { path, source })
}

/// [`parse_stat`] of `<pid_dir>/stat`.
///
/// # Errors
/// [`ReloadError::Read`] (the process is gone) or [`ReloadError::BadStat`].
pub fn read_stat(pid_dir: &Path) -> Result<Stat, ReloadError> {
    parse_stat(&read_text(pid_dir.join("stat"))?)
}

/// [`sig_cgt`] of `<pid_dir>/status`.
///
/// # Errors
/// [`ReloadError::Read`] (the process is gone) or [`ReloadError::NoSigCgt`].
pub fn read_sig_cgt(pid_dir: &Path) -> Result<u64, ReloadError> {
    sig_cgt(&read_text(pid_dir.join("status"))?)
}

/// Whether `<pid_dir>/exe` is a Go binary ([`super::is_go_file`], which reads its headers only); the error when the
/// executable cannot be read (EACCES for a target with capabilities).
///
/// # Errors
/// [`ReloadError::Read`] with the path.
pub fn read_is_go(pid_dir: &Path) -> Result<bool, ReloadError> {
    let path = pid_dir.join("exe");
    let file = std::fs::File::open(&path).map_err(|source| ReloadError::Read { path, source })?;
    Ok(super::is_go_file(&file))
}

/// A lower bound of the boot instant in Unix seconds, from `<proc_root>/stat`'s `btime`
/// refined by `<proc_root>/uptime` ([`boot_lower_bound`]).
///
/// # Errors
/// [`ReloadError::Read`] when `/proc/stat` cannot be read or has no `btime`.
pub fn boot_time(proc_root: &Path) -> Result<f64, ReloadError> {
    let stat_path = proc_root.join("stat");
    let btime = parse_btime(&read_text(stat_path.clone())?).ok_or_else(|| ReloadError::Read {
        path: stat_path,
        source: std::io::Error::new(ErrorKind::InvalidData, "no btime line"),
    })?;
    let now = unix_now();
    let uptime = std::fs::read_to_string(proc_root.join("uptime"))
        .ok()
        .and_then(|t| parse_uptime(&t));
    Ok(boot_lower_bound(btime, uptime.map(|u| (now, u))))
}

/// The wall clock in Unix seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
