//! Hot reload of the serving certificate: directory watch (debounced) and explicit
//! triggers (SIGHUP).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{CertInfo, CertResolver, TlsError, load_certified_key};
use crate::metrics::Metrics;

/// How long the directory must be quiet after a change before the files are read: long
/// enough for a writer to finish the certificate and the key, short enough not to matter.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

/// What the reloader has done so far. Published on a [`watch`] channel
/// ([`CertReloader::subscribe`]) so that callers (and tests) can await a reload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Reload attempts, whatever their result (including files found unchanged).
    pub attempts: u64,
    /// Reloads that replaced the certificate.
    pub successes: u64,
    /// Reloads that were rejected; the previous certificate was kept each time.
    pub failures: u64,
    /// The certificate served now.
    pub current: Option<CertInfo>,
    /// Why the most recent failed reload failed; cleared by the next success.
    pub last_error: Option<String>,
}

/// Reloads a [`CertResolver`] from its certificate and key files.
///
/// Build it with [`CertReloader::new`], [`subscribe`](CertReloader::subscribe) if you need
/// to observe reloads, then drive it with [`run`](CertReloader::run) (usually in its own
/// task). [`reload`](CertReloader::reload) is the single reload step, usable directly.
#[derive(Debug)]
pub struct CertReloader {
    resolver: Arc<CertResolver>,
    cert_path: PathBuf,
    key_path: PathBuf,
    metrics: Option<Arc<Metrics>>,
    debounce: Duration,
    watch_files: bool,
    status: watch::Sender<ReloadStatus>,
}

impl CertReloader {
    /// A reloader for `resolver` reading `cert_path` and `key_path` (same formats as
    /// [`load_certified_key`]). Watches the files' directories, with [`DEFAULT_DEBOUNCE`].
    pub fn new(
        resolver: Arc<CertResolver>,
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Self {
        let status = ReloadStatus {
            current: resolver.info(),
            ..ReloadStatus::default()
        };
        Self {
            resolver,
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            metrics: None,
            debounce: DEFAULT_DEBOUNCE,
            watch_files: true,
            status: watch::Sender::new(status),
        }
    }

    /// Reports reloads to `mcptrust_tls_reloads_total` and the served certificate's notAfter
    /// to `mcptrust_tls_certificate_not_after_timestamp_seconds` (set at once).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        if let Some(info) = self.resolver.info() {
            metrics.set_tls_not_after(info.not_after);
        }
        self.metrics = Some(metrics);
        self
    }

    /// Sets how long the watched directories must stay quiet before a reload.
    #[must_use]
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Turns the directory watch on (the default) or off; with it off, only the triggers
    /// given to [`run`](Self::run) cause reloads.
    #[must_use]
    pub fn with_file_watch(mut self, enabled: bool) -> Self {
        self.watch_files = enabled;
        self
    }

    /// A receiver of the [`ReloadStatus`], updated after every reload attempt.
    pub fn subscribe(&self) -> watch::Receiver<ReloadStatus> {
        self.status.subscribe()
    }

    /// The directories watched: the parents of the two files, deduplicated.
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let dirs: BTreeSet<PathBuf> = [&self.cert_path, &self.key_path]
            .into_iter()
            .map(|p| match p.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.into_iter().collect()
    }

    /// One reload: reads both files and, if they are valid and belong together, swaps the
    /// certificate in. Logs the outcome (info on a change, warn on a failure), updates the
    /// status channel and the metrics.
    ///
    /// Returns `Ok(Some(info))` when the certificate was replaced and `Ok(None)` when the
    /// files hold the certificate already served (not counted as a reload).
    ///
    /// # Errors
    /// The [`load_certified_key`] error; the previous certificate stays in place.
    pub fn reload(&self) -> Result<Option<CertInfo>, TlsError> {
        let loaded = match load_certified_key(&self.cert_path, &self.key_path) {
            Ok(loaded) => loaded,
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    serving = ?self.resolver.info().map(|i| i.serial),
                    "webhook certificate reload failed; keeping the previous certificate"
                );
                if let Some(metrics) = &self.metrics {
                    metrics.observe_tls_reload(false);
                }
                let message = err.to_string();
                self.status.send_modify(|s| {
                    s.attempts += 1;
                    s.failures += 1;
                    s.last_error = Some(message);
                });
                return Err(err);
            }
        };
        if loaded.cert == self.resolver.current().cert {
            tracing::debug!("webhook certificate files unchanged");
            self.status.send_modify(|s| s.attempts += 1);
            return Ok(None);
        }
        let info = CertInfo::of(&loaded);
        self.resolver.store(loaded);
        if let Some(info) = &info {
            tracing::info!(
                serial = %info.serial,
                subject = %info.subject,
                not_after = %info.not_after_text,
                "reloaded webhook serving certificate"
            );
        }
        if let Some(metrics) = &self.metrics {
            metrics.observe_tls_reload(true);
            if let Some(info) = &info {
                metrics.set_tls_not_after(info.not_after);
            }
        }
        self.status.send_modify(|s| {
            s.attempts += 1;
            s.successes += 1;
            s.current = info.clone();
            s.last_error = None;
        });
        Ok(info)
    }

    /// Runs until `shutdown` resolves: reloads [`debounce`](Self::with_debounce) after the
    /// last relevant change in a watched directory, and at once for every `()` received on
    /// `triggers` (for example from [`sighup_triggers`]). A closed `triggers` channel just
    /// stops that source. Failed reloads are logged and counted, never fatal.
    ///
    /// A change is relevant when it creates, writes, renames, deletes or changes the
    /// attributes of the certificate file, the key file or a `..`-prefixed entry (the
    /// `..data` symlink and timestamped directories of a Kubernetes Secret volume); reads are
    /// ignored, so the reloader's own reads do not retrigger it.
    ///
    /// # Errors
    /// [`TlsError::Watch`] if a directory cannot be watched (with the file watch on).
    pub async fn run(
        self,
        triggers: mpsc::Receiver<()>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), TlsError> {
        let (watcher, events) = self.prepare()?;
        self.event_loop(watcher, events, triggers, shutdown).await;
        Ok(())
    }

    /// Like [`run`](Self::run), in a new task: the directory watch is set up before this
    /// returns (so a setup error is reported here, and changes made after this returns are
    /// seen), then the loop runs until [`ReloaderTask::stop`].
    ///
    /// Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`TlsError::Watch`] if a directory cannot be watched (with the file watch on).
    pub fn spawn(self, triggers: mpsc::Receiver<()>) -> Result<ReloaderTask, TlsError> {
        let (watcher, events) = self.prepare()?;
        let status = self.subscribe();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.event_loop(watcher, events, triggers, async {
            let _ = stopped.await;
        }));
        Ok(ReloaderTask {
            stop: Some(stop),
            task,
            status,
        })
    }

    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
    ) -> Result<
        (
            Option<notify::RecommendedWatcher>,
            mpsc::UnboundedReceiver<()>,
        ),
        TlsError,
    > {
        let (events_tx, events) = mpsc::unbounded_channel::<()>();
        let watcher = if self.watch_files {
            Some(self.start_watcher(events_tx)?)
        } else {
            None
        };
        Ok((watcher, events))
    }

    async fn event_loop(
        self,
        // Held for the duration of the loop: dropping it stops the watch.
        _watcher: Option<notify::RecommendedWatcher>,
        mut events: mpsc::UnboundedReceiver<()>,
        mut triggers: mpsc::Receiver<()>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut deadline: Option<Instant> = None;
        let mut triggers_open = true;
        loop {
            let debounce_elapsed = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                Some(()) = events.recv() => {
                    deadline = Some(Instant::now() + self.debounce);
                }
                trigger = triggers.recv(), if triggers_open => match trigger {
                    Some(()) => {
                        tracing::info!("reload of the webhook certificate requested");
                        deadline = None;
                        let _ = self.reload();
                    }
                    None => triggers_open = false,
                },
                () = debounce_elapsed => {
                    deadline = None;
                    let _ = self.reload();
                }
            }
        }
    }

    fn start_watcher(
        &self,
        events: mpsc::UnboundedSender<()>,
    ) -> Result<notify::RecommendedWatcher, TlsError> {
        let names: Vec<std::ffi::OsString> = [&self.cert_path, &self.key_path]
            .into_iter()
            .filter_map(|p| p.file_name().map(ToOwned::to_owned))
            .collect();
        let handler = move |res: notify::Result<Event>| match res {
            Ok(event) => {
                if is_relevant(&event, &names) {
                    tracing::trace!(?event, "webhook certificate directory changed");
                    let _ = events.send(());
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "file watch error; reloading the webhook certificate to be safe");
                let _ = events.send(());
            }
        };
        let first = self.watched_dirs().into_iter().next().unwrap_or_default();
        let mut watcher =
            notify::recommended_watcher(handler).map_err(|source| TlsError::Watch {
                path: first,
                source,
            })?;
        for dir in self.watched_dirs() {
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|source| TlsError::Watch {
                    path: dir.clone(),
                    source,
                })?;
            tracing::debug!(dir = %dir.display(), "watching for webhook certificate changes");
        }
        Ok(watcher)
    }
}

fn is_relevant(event: &Event, names: &[std::ffi::OsString]) -> bool {
    let kind_matters = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Any
        | EventKind::Other => true,
    };
    if !kind_matters {
        return false;
    }
    if event.need_rescan() || event.paths.is_empty() {
        return true;
    }
    event.paths.iter().any(|p| path_matters(p, names))
}

fn path_matters(path: &Path, names: &[std::ffi::OsString]) -> bool {
    match path.file_name() {
        Some(name) => names.iter().any(|n| n == name) || name.to_string_lossy().starts_with(".."),
        None => true,
    }
}

/// A [`CertReloader`] running in its own task, from [`CertReloader::spawn`]. Dropping it
/// leaves the task running; call [`stop`](Self::stop) to end it.
#[derive(Debug)]
pub struct ReloaderTask {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    status: watch::Receiver<ReloadStatus>,
}

impl ReloaderTask {
    /// A receiver of the reloader's [`ReloadStatus`].
    pub fn status(&self) -> watch::Receiver<ReloadStatus> {
        self.status.clone()
    }

    /// Stops the reloader and waits for its task to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(err) = (&mut self.task).await {
            tracing::warn!(error = %err, "the certificate reloader task failed");
        }
    }
}

/// Turns SIGHUP into reload triggers for [`CertReloader::run`]: spawns a task that sends
/// `()` on the returned channel for each SIGHUP (coalescing bursts). From the moment this
/// returns, SIGHUP no longer terminates the process.
///
/// Must be called inside a Tokio runtime.
///
/// # Errors
/// The I/O error if the signal handler cannot be installed.
pub fn sighup_triggers() -> std::io::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP received");
            if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                break;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    fn names() -> Vec<std::ffi::OsString> {
        vec!["tls.crt".into(), "tls.key".into()]
    }

    #[test]
    fn reads_are_ignored_writes_and_renames_count() {
        let open = Event::new(EventKind::Access(AccessKind::Open(AccessMode::Read)))
            .add_path("/d/tls.crt".into());
        assert!(!is_relevant(&open, &names()));
        let close_read = Event::new(EventKind::Access(AccessKind::Close(AccessMode::Read)))
            .add_path("/d/tls.crt".into());
        assert!(!is_relevant(&close_read, &names()));
        let close_write = Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)))
            .add_path("/d/tls.key".into());
        assert!(is_relevant(&close_write, &names()));
        let rename = Event::new(EventKind::Modify(ModifyKind::Name(RenameMode::To)))
            .add_path("/d/..data".into());
        assert!(is_relevant(&rename, &names()));
        let other_file =
            Event::new(EventKind::Create(CreateKind::File)).add_path("/d/unrelated.txt".into());
        assert!(!is_relevant(&other_file, &names()));
    }
}
