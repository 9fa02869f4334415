//! The injector: a pure function from a Pod (or a workload's pod template) and an
//! [`Injection`] to an RFC 6902 JSONPatch ([`Patch`], typed operations written straight to
//! JSON).
//!
//! It is shared by the admission webhook and the offline `mcptrust inject`, in the way
//! `istioctl kube-inject` shares Istio's injector. It makes no API calls.

mod config;
pub mod manifest;
mod noproxy;
mod ops;
mod patch;
mod reloader;
pub mod view;

pub use config::*;
pub use noproxy::{build_no_proxy, java_non_proxy_hosts, normalize_no_proxy_entry};
pub use ops::Patch;
pub use patch::{
    ANNOTATION_BUNDLE_SHA256, ANNOTATION_ENV_OVERRIDDEN, ANNOTATION_INJECTED, ANNOTATION_MCPSERVER,
    ANNOTATION_OVERLAY, ANNOTATION_SKIP_ENV, ANNOTATION_SKIPPED, LABEL_INJECT, inject,
    inject_with_env, pod_template_pointer,
};

use std::sync::Arc;

/// The env block an [`Injection`] puts into every container, as (name, value) pairs in
/// injection order: CA variables, proxy variables, JAVA_TOOL_OPTIONS, then the extra env
/// (see [`inject`]). Computed once per set of settings and shared (an `Arc`, so a clone
/// costs one atomic increment) by [`inject_with_env`] and the patches it builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvBlock(Arc<[(String, String)]>);

impl EnvBlock {
    /// Computes the block of `inj`.
    pub fn new(inj: &Injection) -> Self {
        Self(patch::desired_env(inj).into())
    }

    /// The variables, as (name, value) pairs in injection order.
    pub fn vars(&self) -> &[(String, String)] {
        &self.0
    }

    pub(crate) fn shared(&self) -> Arc<[(String, String)]> {
        Arc::clone(&self.0)
    }
}

/// What the injector decided for one object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// The JSONPatch to apply to the object as received; empty when nothing changes.
    pub patch: Patch,
    /// Why the object (or some of its containers) was left alone, when it was.
    pub skipped: Vec<String>,
}

impl Outcome {
    /// True when the patch is empty.
    pub fn is_noop(&self) -> bool {
        self.patch.is_empty()
    }
}

/// Errors of the injector. Each has a stable [`InjectError::reason`].
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The object is not a JSON object, or a field has the wrong JSON type
    /// (e.g. `spec.containers` is not an array).
    #[error("malformed object: {0}")]
    Malformed(String),
}

impl InjectError {
    /// A stable, CamelCase reason for metrics, events and AdmissionReview status.
    pub fn reason(&self) -> &'static str {
        match self {
            InjectError::Malformed(_) => "MalformedObject",
        }
    }
}

/// Decides the injection for an admitted object. The webhook holds one behind an `Arc`;
/// implementations answer from memory (configuration or reflector caches), never from API
/// calls, because they run on the path of every pod creation.
pub trait Mutator: Send + Sync + 'static {
    /// Computes the patch for `object` (a Pod or workload as JSON) in `namespace`.
    ///
    /// The webhook passes the injector's view of the object ([`view`]): only the fields
    /// listed there are present. An implementation that reads another field must add it
    /// to [`view`] first.
    ///
    /// # Errors
    /// [`InjectError`] when the object is malformed.
    fn mutate(
        &self,
        namespace: Option<&str>,
        object: &serde_json::Value,
    ) -> Result<Outcome, InjectError>;
}

/// A [`Mutator`] that injects the same [`InjectConfig`] everywhere: the webhook's
/// standalone mode (no cluster) and the offline `mcptrust inject`.
#[derive(Clone, Debug)]
pub struct StaticMutator {
    injection: Injection,
    env: EnvBlock,
}

impl StaticMutator {
    /// Builds it from the operator config and an optional McpServer.
    pub fn new(config: &InjectConfig, server: Option<&crate::api::McpServer>) -> Self {
        let injection = Injection::resolve(config, server);
        let env = EnvBlock::new(&injection);
        Self { injection, env }
    }

    /// The resolved settings.
    pub fn injection(&self) -> &Injection {
        &self.injection
    }
}

impl Mutator for StaticMutator {
    fn mutate(
        &self,
        _namespace: Option<&str>,
        object: &serde_json::Value,
    ) -> Result<Outcome, InjectError> {
        inject_with_env(object, &self.injection, &self.env)
    }
}
