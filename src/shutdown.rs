//! Shared shutdown: one `watch` flag set on SIGTERM or Ctrl-C, and the future every server
//! and loop awaits to stop. Used by `mcptrust webhook` and `mcptrust run` alike.

use tokio::sync::watch;

/// A shutdown flag that turns `true` on SIGTERM or Ctrl-C (see
/// [`shutdown_signal`]); the watcher task is spawned on the current runtime.
#[must_use]
pub fn on_signal() -> watch::Receiver<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Resolves once the shutdown flag is set, or once its sender is dropped (nothing can set
/// it any more).
pub async fn wait_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Resolves on the first SIGTERM or Ctrl-C (SIGINT). If the SIGTERM handler cannot be
/// installed, logs it and waits for Ctrl-C only. Must be called inside a Tokio runtime.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot handle SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot handle Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
        () = interrupt => tracing::info!("Ctrl-C received; shutting down"),
    }
}
