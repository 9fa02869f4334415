//! `mcptrust webhook`: the admission webhook and the admin port in one process, injecting
//! from a fixed [`InjectConfig`] (no cluster, no McpServer view), until SIGTERM or Ctrl-C.
//!
//! Start-up fails fast: unusable or expired TLS files fail before any port is bound, and a
//! webhook that fails after the admin port is up stops the admin port before returning, so
//! the process exits at once instead of serving probes without a webhook.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::admin::AdminArgs;
use crate::inject::{InjectConfig, Mutator, StaticMutator};
use crate::shutdown::{on_signal, wait_stop};

use super::{WebhookArgs, WebhookError};

/// Serves the webhook (`webhook`: listener and TLS files) and the admin port (`admin`)
/// from `config` until SIGTERM or Ctrl-C; both servers share one shutdown and drain.
///
/// # Errors
/// The TLS files are unusable or the certificate has expired ([`WebhookError::Tls`]), the
/// admin port cannot be bound, or [`super::run`] fails (bind). Either way every task this
/// function started has stopped when it returns.
pub async fn run(
    webhook: &WebhookArgs,
    admin: &AdminArgs,
    config: &InjectConfig,
) -> anyhow::Result<()> {
    // Check the files before anything listens; `super::run` loads them again to serve.
    let key = crate::tls::load_certified_key(&webhook.tls_cert_file, &webhook.tls_key_file)
        .map_err(WebhookError::from)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    crate::tls::check_not_expired(&key, &webhook.tls_cert_file, now).map_err(WebhookError::from)?;

    let metrics = Arc::new(crate::metrics::Metrics::new());
    let readiness = crate::admin::Readiness::default();
    let mutator: Arc<dyn Mutator> = Arc::new(StaticMutator::new(config, None));
    let admin_listener = tokio::net::TcpListener::bind(admin.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin port)", admin.admin_listen))?;
    // One stop flag for both servers: set by SIGTERM/Ctrl-C, or by a failed webhook.
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal = on_signal();
    let forward = stop_tx.clone();
    tokio::spawn(async move {
        wait_stop(signal).await;
        let _ = forward.send(true);
    });
    let admin = tokio::spawn(crate::admin::serve(
        admin_listener,
        crate::admin::router(metrics.clone(), readiness.clone()),
        wait_stop(stop_rx.clone()),
    ));
    let result = super::run(webhook, mutator, metrics, readiness, wait_stop(stop_rx)).await;
    let _ = stop_tx.send(true);
    let _ = admin.await;
    result.map_err(anyhow::Error::from)
}
