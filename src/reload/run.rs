//! The `mcptrust reload` loop: watch, debounce, hash, check the pair, find the target,
//! decide, signal, watch for the target's death; and the admin port.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use super::cli::ReloadArgs;
use super::server::{Shared, router};
use super::state::{
    Book, INVALID_KEY_PAIR, NO_TARGET, SIGNAL_FAILED, SIGNAL_KILLED_TARGET, killed_earlier_message,
    killed_message, message,
};
use super::target::{choose_container_target, started_after};
use super::{
    Debounce, Decision, Facts, NoTarget, PidHandle, ReloadError, check_pair, decide, hash, procfs,
};
use crate::admin::Readiness;
use crate::api::reloader::ReloaderTarget;

/// How often a pair seen changing between two reads is read again, 1 s apart.
const PAIR_TRIES: u32 = 5;

/// Runs the sidecar until SIGTERM or Ctrl-C (then returns `Ok`).
///
/// # Errors
/// A start-up failure, named with its flag, file or address: an invalid `--process-name`,
/// the admin address in use, a watch directory that cannot be watched or read.
pub async fn run(args: ReloadArgs) -> anyhow::Result<()> {
    let process_name = args
        .process_name
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("invalid --process-name")?;
    let stop = crate::shutdown::on_signal();
    let readiness = Readiness::new();
    readiness.set_waiting("the directory watches and the first hash");
    let listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("cannot listen on {} (admin port)", args.admin_addr))?;
    // The book is replaced once the first hash is known; until then /status is empty.
    let shared = Arc::new(Shared::new(Book::default()));
    let server = tokio::spawn(crate::admin::serve(
        listener,
        router(shared.clone(), readiness.clone()),
        crate::shutdown::wait_stop(stop.clone()),
    ));

    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = super::watch::watch(&args.watch, tx)?;
    let first = hash::content_sha256(&args.watch)?;
    *shared.book() = Book::new(&first);
    let args_debounce = args.debounce_seconds;
    let mut sidecar = Sidecar {
        args,
        process_name,
        shared,
        debounce: Debounce::new(Duration::from_secs(args_debounce)),
        first_seen: None,
        seen_sha256: first.clone(),
    };
    sidecar.log_start(&first);
    readiness.set_ready();
    sidecar.run(rx, stop).await;
    drop(watcher);
    server
        .await
        .context("admin port task")?
        .context("serving the admin port")?;
    Ok(())
}

struct Sidecar {
    args: ReloadArgs,
    process_name: Option<regex::Regex>,
    shared: Arc<Shared>,
    debounce: Debounce,
    /// Wall clock (Unix seconds) of the first change since the last decision.
    first_seen: Option<f64>,
    /// The last hash computed (at start-up, by a decision or by the resync).
    seen_sha256: String,
}

/// The target, held by a pidfd opened before its facts were read (so that they and the
/// signal are about the same process, whatever happens to its PID), and what `/proc`
/// says about it.
struct Found {
    handle: PidHandle,
    pid: u32,
    cmdline: String,
    sig_cgt: u64,
    go: bool,
    exe_error: Option<String>,
    start_ticks: u64,
}

impl Sidecar {
    fn dirs(&self) -> String {
        self.args
            .watch
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log_start(&self, sha256: &str) {
        let watch = self.dirs();
        let signal = self.args.signal.as_str();
        match self.find() {
            Ok(t) => {
                self.set_target(&t);
                tracing::info!(
                    watch,
                    signal,
                    current_sha256 = sha256,
                    pid = t.pid,
                    cmdline = t.cmdline,
                    go = t.go,
                    sig_cgt = format!("{:016x}", t.sig_cgt),
                    "reloader started: watching {watch}, target PID {}",
                    t.pid
                );
            }
            Err(why) => tracing::info!(
                watch,
                signal,
                current_sha256 = sha256,
                "reloader started: watching {watch}, no target yet ({why})"
            ),
        }
    }

    fn changed(&mut self) {
        self.debounce.changed(Instant::now());
        self.first_seen.get_or_insert_with(procfs::unix_now);
    }

    async fn run(
        &mut self,
        mut changes: mpsc::UnboundedReceiver<()>,
        mut stop: watch::Receiver<bool>,
    ) {
        let resync = Duration::from_secs(self.args.resync_seconds.max(1));
        let mut resync_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + resync, resync);
        loop {
            let deadline = self.debounce.deadline();
            let due = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let due_now = tokio::select! {
                _ = stop.wait_for(|v| *v) => return,
                Some(()) = changes.recv() => {
                    self.changed();
                    false
                }
                _ = resync_tick.tick() => {
                    self.resync();
                    false
                }
                () = due => self.debounce.take_due(Instant::now()),
            };
            if due_now {
                // A shutdown cancels a decision in progress (the pair check's waits, the
                // kill watch).
                tokio::select! {
                    _ = stop.wait_for(|v| *v) => return,
                    () = self.settled() => {}
                }
            }
        }
    }

    /// The backstop: a hash that differs from the last one counts as a change.
    fn resync(&mut self) {
        match hash::content_sha256(&self.args.watch) {
            // Compared with the last hash seen (not the book's, which changes only when
            // the change settles): else each tick would push the debounce further out.
            Ok(h) if h != self.seen_sha256 => {
                tracing::info!(current_sha256 = h, "resync found a change the watch missed");
                self.seen_sha256 = h;
                self.changed();
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %crate::report::one_line(&err), "resync: cannot hash the watched files")
            }
        }
    }

    /// Logs, records and counts one decision.
    fn decided(&self, decision: &str, message: &str, target: Option<(u32, &str)>) {
        let signal = self.args.signal.as_str();
        let (pid, cmdline) = (target.map(|t| t.0), target.map(|t| t.1));
        let mut book = self.shared.book();
        tracing::info!(
            decision,
            pid,
            cmdline,
            current_sha256 = book.current(),
            loaded_sha256 = book.loaded(),
            signal,
            "{message}"
        );
        book.record(
            decision,
            message,
            pid,
            crate::pki::pem::rfc3339(procfs::unix_now() as i64),
        );
        drop(book);
        self.shared.metrics.decision(decision);
    }

    /// One settled change: hash, check, find, decide, signal.
    async fn settled(&mut self) {
        let seen = self.first_seen.take().unwrap_or_else(procfs::unix_now);
        self.shared.metrics.change();
        let Some(current) = self.hash_or_retry() else {
            return;
        };
        let killed = self.shared.book().killed_pid();
        if let Some(pid) = killed {
            self.decided(SIGNAL_KILLED_TARGET, &killed_earlier_message(pid), None);
            return;
        }
        let unchanged = current == self.shared.book().loaded();
        if unchanged {
            let text = message(Decision::SkipUnchanged, 0, self.args.signal, 0, None);
            self.decided(Decision::SkipUnchanged.as_str(), &text, None);
            return;
        }
        if let Err(err) = self.check_pair().await {
            let text = format!("not signalling: {}", crate::report::one_line(&err));
            self.decided(INVALID_KEY_PAIR, &text, None);
            return;
        }
        // The pair check may have waited out a swap: hash what is there now.
        if self.hash_or_retry().is_none() {
            return;
        }
        let found = match self.find() {
            Ok(found) => found,
            Err(why) => {
                self.shared.book().status.target = None;
                self.decided(NO_TARGET, &why, None);
                return;
            }
        };
        self.set_target(&found);
        let after = procfs::boot_time(&self.args.proc_root).is_ok_and(|boot| {
            started_after(
                boot,
                found.start_ticks,
                rustix::param::clock_ticks_per_second(),
                seen,
            )
        });
        let facts = {
            let book = self.shared.book();
            Facts {
                loaded_sha256: book.loaded().to_owned(),
                current_sha256: book.current().to_owned(),
                started_after_change: after,
                sig_cgt: found.sig_cgt,
                go: found.go,
                handles_signal: self.args.handles_signal,
            }
        };
        let decision = decide(&facts, self.args.signal.number());
        let text = message(
            decision,
            found.pid,
            self.args.signal,
            found.sig_cgt,
            found.exe_error.as_deref(),
        );
        let target = Some((found.pid, found.cmdline.as_str()));
        if decision != Decision::Signal {
            self.shared.book().skipped(decision);
            self.decided(decision.as_str(), &text, target);
            return;
        }
        if let Err(err) = found.handle.signal(self.args.signal) {
            self.decided(SIGNAL_FAILED, &crate::report::one_line(&err), target);
            return;
        }
        self.shared.book().signalled();
        self.shared.metrics.signal();
        self.decided(decision.as_str(), &text, target);
        let window = Duration::from_secs(self.args.kill_watch_seconds);
        match exits_within(&found.handle, window).await {
            Ok(true) => {
                self.shared.book().killed(found.pid);
                self.shared.metrics.killed_target();
                let text =
                    killed_message(found.pid, self.args.signal, self.args.kill_watch_seconds);
                self.decided(SIGNAL_KILLED_TARGET, &text, target);
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(pid = found.pid, error = %err, "cannot watch the signalled target's pidfd")
            }
        }
    }

    /// Hashes the watched files into the book; on failure (a swap in progress) logs it and
    /// tries again after the debounce.
    fn hash_or_retry(&mut self) -> Option<String> {
        match hash::content_sha256(&self.args.watch) {
            Ok(h) => {
                self.shared.book().set_current(&h);
                self.seen_sha256.clone_from(&h);
                Some(h)
            }
            Err(err) => {
                tracing::warn!(error = %crate::report::one_line(&err), "cannot hash the watched files; trying again");
                self.changed();
                None
            }
        }
    }

    /// [`check_pair`] with `--cert/--key`, read again 1 s later while a swap is in
    /// progress.
    async fn check_pair(&self) -> Result<(), ReloadError> {
        let (Some(cert), Some(key)) = (&self.args.cert, &self.args.key) else {
            return Ok(());
        };
        let mut tries = 1;
        loop {
            match check_pair(cert, key) {
                Err(ReloadError::PairChanging) if tries < PAIR_TRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => return other.map(|_| ()),
            }
        }
    }

    /// Finds the target and reads its facts; the error says why there is none.
    fn find(&self) -> Result<Found, String> {
        let root = &self.args.proc_root;
        let container = self.args.container.as_deref();
        let (procs, environ) =
            procfs::scan(root, container.is_some()).map_err(|e| crate::report::one_line(&e))?;
        let self_pid = std::process::id();
        let re = self.process_name.as_ref();
        let chosen = match container {
            Some(name) => choose_container_target(&procs, &environ, self_pid, name, re),
            None => super::choose_target(&procs, self_pid, re),
        };
        let pid = chosen.map_err(|why| no_target(&why, container, re))?;
        let handle = PidHandle::open(pid).map_err(|e| crate::report::one_line(&e))?;
        let dir: PathBuf = root.join(pid.to_string());
        let gone = |e: ReloadError| format!("PID {pid} vanished: {}", crate::report::one_line(&e));
        let sig_cgt = procfs::read_sig_cgt(&dir).map_err(gone)?;
        let start_ticks = procfs::read_stat(&dir).map_err(gone)?.start_ticks;
        let (go, exe_error) = match procfs::read_is_go(&dir) {
            Ok(go) => (go, None),
            // Unknown Go-ness is taken for Go: signal only with --handles-signal.
            Err(ReloadError::Read { source, .. }) => (true, Some(source.to_string())),
            Err(other) => (true, Some(other.to_string())),
        };
        let cmdline = procs
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| p.cmdline.clone())
            .unwrap_or_default();
        Ok(Found {
            handle,
            pid,
            cmdline,
            sig_cgt,
            go,
            exe_error,
            start_ticks,
        })
    }

    fn set_target(&self, t: &Found) {
        self.shared.book().status.target = Some(ReloaderTarget {
            pid: t.pid,
            cmdline: t.cmdline.clone(),
            go: t.go,
            sig_cgt: format!("{:016x}", t.sig_cgt),
        });
    }
}

/// Why there is no target, for a person.
fn no_target(why: &NoTarget, container: Option<&str>, re: Option<&regex::Regex>) -> String {
    let whose = match (container, re) {
        (Some(c), Some(re)) => format!("of container {c} matching /{re}/"),
        (Some(c), None) => format!("of container {c}"),
        (None, Some(re)) => format!("matching /{re}/"),
        (None, None) => "outside the reloader's and the pause container".to_owned(),
    };
    match why {
        NoTarget::NoMatch => format!("no process {whose}; nothing sent"),
        NoTarget::Ambiguous(pids) => format!(
            "several unrelated processes {whose} ({pids:?}); nothing sent: set spec.rotation.processName"
        ),
    }
}

/// How often the pidfd is polled during the kill watch.
const EXIT_POLL: Duration = Duration::from_millis(50);

/// Whether the process behind `handle` exits within `window`: its pidfd polls readable.
/// Polled without blocking every 50 ms (tokio's `AsyncFd` would need `unsafe` for a
/// borrowed descriptor), so that a shutdown cancels it at once.
async fn exits_within(handle: &PidHandle, window: Duration) -> std::io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let end = tokio::time::Instant::now() + window;
    loop {
        let fd = handle.as_fd();
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if poll(&mut fds, Some(&zero))? > 0 {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= end {
            return Ok(false);
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
}
