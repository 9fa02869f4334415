//! Namespaces that opt in (`mcptrust.io/injection=enabled`) without an McpServer get the
//! default trust ConfigMap (`mcptrust-trust`), built from the operator's private CAs (the
//! chart's `trust.extraCAs`, e.g. a sandbox proxy CA) and the Mozilla roots.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::error::{Error, Result};
use super::{Context, FIELD_MANAGER_TRUST, build};
use crate::pki::{BundleOptions, CaInput, TrustBundle};

/// The opt-in namespace label (also the webhook's namespaceSelector).
pub const LABEL_INJECTION: &str = "mcptrust.io/injection";

/// Builds the default bundle from the operator config.
///
/// # Errors
/// [`Error::InvalidCertificate`] when the configured PEM is not a set of CA certificates.
pub fn default_bundle(ctx: &Context) -> Result<std::sync::Arc<TrustBundle>> {
    let inputs = if ctx.config.default_cas_pem.trim().is_empty() {
        Vec::new()
    } else {
        vec![CaInput::new(
            "operator config defaultTrust.extraCasPem",
            ctx.config.default_cas_pem.clone().into_bytes(),
        )]
    };
    ctx.bundles
        .get_or_build(
            &inputs,
            &[],
            &BundleOptions {
                include_system_roots: ctx.config.default_include_system_roots,
                now_unix: ctx.now(),
            },
        )
        .map_err(|e| Error::InvalidCertificate(e.to_string()))
}

/// Writes `mcptrust-trust` into one opted-in namespace.
///
/// # Errors
/// API failures and an invalid operator CA configuration.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action> {
    let name = ns.name_any();
    let bundle = default_bundle(&ctx)?;
    let cm_name = &ctx.config.default_config_map;
    let labels = build::default_trust_labels();
    // Like the McpServer trust ConfigMaps: no write when the cached one is current, a
    // create when there is none.
    let cached = super::reconcile::trust_config_map_cached(
        &ctx,
        &name,
        cm_name,
        &labels,
        None,
        &bundle.sha256,
    )
    .await;
    if cached == super::reconcile::Cached::Current {
        return Ok(Action::requeue(Duration::from_secs(3600)));
    }
    let cm = build::default_trust_config_map(&name, cm_name, &bundle);
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let absent = cached == super::reconcile::Cached::Absent;
    super::reconcile::create_or_apply(&ctx, &api, cm_name, FIELD_MANAGER_TRUST, &cm, absent)
        .await?;
    Ok(Action::requeue(Duration::from_secs(3600)))
}

fn error_policy(ns: Arc<Namespace>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = %ns.name_any(), reason = error.reason(), "default bundle: {error}");
    ctx.metrics.reconcile_failed(error.reason());
    Action::requeue(ctx.backoff(&format!("namespace/{}", ns.name_any())))
}

/// Runs the namespace controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    Controller::new(
        namespaces,
        watcher::Config::default().labels(&format!("{LABEL_INJECTION}=enabled")),
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!("namespace controller: {e}");
        }
    })
    .await;
}
