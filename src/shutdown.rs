//! Shared shutdown: one `watch` flag set on SIGTERM or Ctrl-C, and the future every server
//! and loop awaits to stop. Used by `mcptrust webhook` and `mcptrust run` alike.

use tokio::sync::watch;

/// A shutdown flag that turns `true` on SIGTERM or Ctrl-C (see
/// [`crate::webhook::shutdown_signal`]); the watcher task is spawned on the current runtime.
#[must_use]
pub fn on_signal() -> watch::Receiver<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::webhook::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Resolves once the shutdown flag is set, or once its sender is dropped (nothing can set
/// it any more).
pub async fn wait_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
