//! `mcptrust webhook`: the admission webhook and the admin port in one process, injecting
//! from a fixed [`InjectConfig`] (no cluster, no McpServer view), until SIGTERM or Ctrl-C.

use std::sync::Arc;

use anyhow::Context as _;

use crate::admin::AdminArgs;
use crate::inject::{InjectConfig, Mutator, StaticMutator};
use crate::shutdown::{on_signal, wait_stop};

use super::WebhookArgs;

/// Serves the webhook (`webhook`: listener and TLS files) and the admin port (`admin`)
/// from `config` until SIGTERM or Ctrl-C; both servers share one shutdown and drain.
///
/// # Errors
/// The admin port cannot be bound, or [`super::run`] fails (TLS files, bind).
pub async fn run(
    webhook: &WebhookArgs,
    admin: &AdminArgs,
    config: &InjectConfig,
) -> anyhow::Result<()> {
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let readiness = crate::admin::Readiness::default();
    let mutator: Arc<dyn Mutator> = Arc::new(StaticMutator::new(config, None));
    let admin_listener = tokio::net::TcpListener::bind(admin.admin_listen)
        .await
        .with_context(|| format!("binding the admin port {}", admin.admin_listen))?;
    let stop_rx = on_signal();
    let admin = tokio::spawn(crate::admin::serve(
        admin_listener,
        crate::admin::router(metrics.clone(), readiness.clone()),
        wait_stop(stop_rx.clone()),
    ));
    let result = super::run(webhook, mutator, metrics, readiness, wait_stop(stop_rx)).await;
    let _ = admin.await;
    result.map_err(anyhow::Error::from)
}
