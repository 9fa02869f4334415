//! Watching the mounted directories (inotify through `notify`), not their files: kubelet
//! swaps a volume by renaming `..data`.

use std::path::PathBuf;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

use super::ReloadError;

/// Whether an event in a watched directory may change its content: every event but an
/// access that writes nothing (the reloader's own reads, or the server's, open and close
/// the files).
pub fn counts(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches each of `dirs` (non-recursive) and sends `()` on `changes` for each event that
/// [`counts`], and for a watch error (to re-hash, to be safe). Keep the watcher alive.
///
/// # Errors
/// [`ReloadError::Watch`] naming the directory that cannot be watched.
pub fn watch(
    dirs: &[PathBuf],
    changes: UnboundedSender<()>,
) -> Result<notify::RecommendedWatcher, ReloadError> {
    let handler = move |res: notify::Result<Event>| match res {
        Ok(event) => {
            if counts(&event.kind) {
                tracing::trace!(?event, "watched directory changed");
                let _ = changes.send(());
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "file watch error; re-hashing to be safe");
            let _ = changes.send(());
        }
    };
    let first = dirs.first().cloned().unwrap_or_default();
    let mut watcher =
        notify::recommended_watcher(handler).map_err(|source| ReloadError::Watch {
            path: first,
            source,
        })?;
    for dir in dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| ReloadError::Watch {
                path: dir.clone(),
                source,
            })?;
    }
    Ok(watcher)
}
