//! `mcptrust renew NAME [-n NS]`: asks the controller to renew an McpServer's certificates
//! now, as `cmctl renew` does for a cert-manager Certificate.
//!
//! The request is the annotation [`crate::api::ANNOTATION_RENEW_REQUESTED`] on the
//! McpServer, set by server-side apply (field manager [`FIELD_MANAGER_RENEW`]) to the
//! current time with nanoseconds, so that every invocation is a new value. The controller
//! honours each value once: it re-issues the certificates, records the value on each
//! Secret ([`crate::api::ANNOTATION_RENEWED_FOR`]) and emits a `Renewed` Event with the
//! reason `ManuallyTriggered`.

use std::path::PathBuf;

use anyhow::Context as _;
use kube::api::{Api, Patch, PatchParams};

use crate::api::{ANNOTATION_RENEW_REQUESTED, McpServer};

/// Field manager of `mcptrust renew`'s apply.
pub const FIELD_MANAGER_RENEW: &str = "mcptrust-renew";

/// `mcptrust renew` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct RenewArgs {
    /// The McpServer whose certificates to renew.
    pub name: String,
    /// Its namespace (default: the kubeconfig context's namespace, else `default`).
    #[arg(short = 'n', long, env = "MCPTRUST_NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubeconfig file; without it, in-cluster config or the usual discovery
    /// ($KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "MCPTRUST_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current one).
    #[arg(long, env = "MCPTRUST_KUBE_CONTEXT")]
    pub context: Option<String>,
}

/// The apply body that sets the renewal request `value` on McpServer `name`.
pub fn renew_patch(name: &str, namespace: &str, value: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "mcptrust.io/v1alpha1",
        "kind": "McpServer",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {ANNOTATION_RENEW_REQUESTED: value},
        },
    })
}

/// Requests a renewal; returns the line to print.
///
/// # Errors
/// No cluster configuration, the McpServer does not exist (it is read first, so that the
/// apply never creates an empty one), or the API server refuses the apply.
pub async fn run(args: &RenewArgs) -> anyhow::Result<String> {
    let config =
        crate::operator::kube_config(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config)?;
    let api: Api<McpServer> = Api::namespaced(client, &namespace);
    api.get_opt(&args.name)
        .await
        .with_context(|| format!("reading McpServer {namespace}/{}", args.name))?
        .with_context(|| format!("McpServer {namespace}/{} not found", args.name))?;
    let value = k8s_openapi::jiff::Timestamp::now().to_string();
    api.patch(
        &args.name,
        &PatchParams::apply(FIELD_MANAGER_RENEW).force(),
        &Patch::Apply(renew_patch(&args.name, &namespace, &value)),
    )
    .await
    .with_context(|| format!("annotating McpServer {namespace}/{}", args.name))?;
    Ok(format!(
        "Manually triggered renewal of McpServer {namespace}/{} ({ANNOTATION_RENEW_REQUESTED}={value})",
        args.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_sets_only_the_annotation() {
        let p = renew_patch("github", "agents", "2026-12-06T14:00:00.123456789Z");
        assert_eq!(p["kind"], "McpServer");
        assert_eq!(p["metadata"]["namespace"], "agents");
        assert_eq!(
            p["metadata"]["annotations"][ANNOTATION_RENEW_REQUESTED],
            "2026-12-06T14:00:00.123456789Z"
        );
        assert!(
            p.get("spec").is_none(),
            "the apply must not own any spec field"
        );
    }
}
