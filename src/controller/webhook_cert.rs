//! The webhook's own serving certificate (`--webhook-cert-mode`).
//!
//! In `selfManaged` mode (the default) mcptrust is its own little certificate authority for
//! the admission webhook, with **one source of truth**: the Secret `--webhook-cert-secret`
//! (type `kubernetes.io/tls`) in the operator namespace. Only the Lease holder writes it;
//! every replica serves from it, through a Secret volume whose files the kubelet refreshes
//! and the webhook's hot reload (directory watch) picks up. The Secret holds:
//!
//! | key | content |
//! |---|---|
//! | `ca.crt`, `ca.key` | the signing CA: ECDSA P-256, [`DEFAULT_CA_VALIDITY_SECS`] (5 years) |
//! | `tls.crt`, `tls.key` | the serving leaf, signed by `ca.crt`: ECDSA P-256, serverAuth, SANs `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`, [`DEFAULT_LEAF_VALIDITY_SECS`] (1 year) |
//! | `ca-bundle.crt` | what the MutatingWebhookConfiguration's `caBundle` must hold: the signing CA, plus the successor during a CA rotation, plus the previous CA until it expires |
//! | `next-ca.crt`, `next-ca.key` | only during a CA rotation: the successor CA, published but not signing yet |
//!
//! The leader patches `caBundle` into every webhook entry of the MutatingWebhookConfiguration
//! `--webhook-config-name` by server-side apply (field manager
//! [`FIELD_MANAGER_CABUNDLE`]; `webhooks` is a list map keyed by `name`, so the apply
//! touches only `clientConfig.caBundle` and leaves the rest to Helm).
//!
//! Rotation, all decided by the pure [`plan`] with the time as a parameter:
//!
//! - the leaf is reissued at two thirds of its life (cert-manager's default), or at once when
//!   it is missing, broken, not signed by the CA or for other names ([`issue::decide`]);
//! - the CA, in the last third of its life, gets a successor: first only **added** to the
//!   caBundle ([`Change::CaRotationStarted`]); once the MutatingWebhookConfiguration
//!   publishes it (and at least [`DEFAULT_PROMOTION_DELAY_SECS`] later, for every API server
//!   to see it), the successor becomes the signing CA and the leaf is reissued from it
//!   ([`Change::CaPromoted`]); the previous CA stays in the caBundle until it expires, so
//!   replicas still serving the previous leaf keep working while the kubelet refreshes
//!   their files.
//!
//! In `certManager` and `provided` modes mcptrust writes nothing: cert-manager (its
//! cainjector fills `caBundle`) or the user own the Secret and the caBundle. In every mode
//! the webhook serves the mounted files with hot reload.
//!
//! [`run`] is the leader's loop; [`reconcile`] one pass of it (read, [`plan`], write,
//! publish); [`wait_for_tls_files`] holds the webhook back until the files exist.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;

use super::{Clock, build};
use crate::pki::issue::{self, IssueError, LeafRequest, SECRET_TYPE, Usage};

mod plan;
pub use plan::{Change, Plan, Published, ca_rotation_time, plan};

/// Key of the signing CA's private key (PKCS#8 PEM) in the Secret.
pub const CA_KEY: &str = "ca.key";
/// Key of the caBundle to publish (PEM, one or more CA certificates) in the Secret.
pub const CA_BUNDLE: &str = "ca-bundle.crt";
/// Key of the successor CA's certificate during a CA rotation.
pub const NEXT_CA_CRT: &str = "next-ca.crt";
/// Key of the successor CA's private key during a CA rotation.
pub const NEXT_CA_KEY: &str = "next-ca.key";

/// Field manager of the Secret's updates (server-side apply) and of its creation.
pub const FIELD_MANAGER_SECRET: &str = "mcptrust-webhook-cert";
/// Field manager of `webhooks[*].clientConfig.caBundle` in the MutatingWebhookConfiguration.
pub const FIELD_MANAGER_CABUNDLE: &str = "mcptrust-webhook-cabundle";
/// Value of the `mcptrust.io/component` label on the Secret.
pub const COMPONENT: &str = "webhook-cert";

/// Lifetime of a generated webhook CA: 5 years (1826 days), in seconds.
pub const DEFAULT_CA_VALIDITY_SECS: i64 = 1826 * 86_400;
/// Lifetime of the serving leaf: 1 year (365 days), in seconds. Renewed at two thirds.
pub const DEFAULT_LEAF_VALIDITY_SECS: i64 = 365 * 86_400;
/// How long a successor CA must have existed (and be published) before it signs: 5 minutes,
/// in seconds. API servers pick up a new caBundle within seconds; this is the margin.
pub const DEFAULT_PROMOTION_DELAY_SECS: i64 = 300;
/// Longest wait between two passes of [`run`], whatever the certificates' schedule.
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// Shortest wait between two passes of [`run`].
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);
/// When a successor CA is due for promotion but the MutatingWebhookConfiguration does not
/// publish it yet, how long until the next look (seconds).
pub const UNPUBLISHED_RETRY_SECS: i64 = 60;
/// At most this many CAs other than the signing CA and its successor stay in the caBundle
/// (the newest; each only until it expires).
pub const MAX_PREVIOUS_CAS: usize = 2;
/// How many times [`reconcile`] re-reads the Secret after a 409 Conflict before giving up
/// for this pass.
pub const MAX_CONFLICT_RETRIES: u32 = 3;

/// Who provides the webhook's serving certificate and the caBundle.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CertMode {
    /// mcptrust: a CA and serving certificate in `--webhook-cert-secret`, the caBundle
    /// patched into `--webhook-config-name`, rotated before expiry (the leader writes).
    #[default]
    #[value(name = "selfManaged")]
    SelfManaged,
    /// cert-manager: a Certificate writes the Secret, its cainjector the caBundle. mcptrust
    /// only serves (and waits for the files at startup).
    #[value(name = "certManager")]
    CertManager,
    /// The user provides the Secret and the caBundle. mcptrust only serves.
    #[value(name = "provided")]
    Provided,
}

impl CertMode {
    /// The flag value: `selfManaged`, `certManager` or `provided`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SelfManaged => "selfManaged",
            Self::CertManager => "certManager",
            Self::Provided => "provided",
        }
    }

    /// Whether the serving files come from a Secret written after the pod may start (by
    /// mcptrust's leader or by cert-manager), so the webhook waits for them instead of
    /// failing: `selfManaged` and `certManager`.
    pub fn waits_for_files(self) -> bool {
        matches!(self, Self::SelfManaged | Self::CertManager)
    }
}

impl fmt::Display for CertMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `mcptrust run` flags of the webhook's serving certificate (each with its environment
/// variable).
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookCertArgs {
    /// Who provides the webhook's serving certificate and caBundle: selfManaged (mcptrust
    /// keeps a CA and certificate in --webhook-cert-secret and patches the caBundle of
    /// --webhook-config-name), certManager (cert-manager's Certificate and cainjector) or
    /// provided (your Secret and caBundle).
    #[arg(
        long,
        env = "MCPTRUST_WEBHOOK_CERT_MODE",
        value_enum,
        default_value = "selfManaged"
    )]
    pub webhook_cert_mode: CertMode,
    /// Secret (type kubernetes.io/tls, operator namespace) holding the webhook CA and
    /// serving certificate in selfManaged mode; mount it (optional: true) at the
    /// --tls-cert-file/--tls-key-file directory.
    #[arg(
        long,
        env = "MCPTRUST_WEBHOOK_CERT_SECRET",
        default_value = "mcptrust-webhook-tls"
    )]
    pub webhook_cert_secret: String,
    /// MutatingWebhookConfiguration whose webhooks get the caBundle in selfManaged mode.
    #[arg(long, env = "MCPTRUST_WEBHOOK_CONFIG_NAME", default_value = "mcptrust")]
    pub webhook_config_name: String,
    /// Service in front of the webhook (operator namespace): the serving certificate's
    /// DNS names are <svc>, <svc>.<ns>, <svc>.<ns>.svc and <svc>.<ns>.svc.cluster.local.
    #[arg(
        long,
        env = "MCPTRUST_WEBHOOK_SERVICE_NAME",
        default_value = "mcptrust-webhook"
    )]
    pub webhook_service_name: String,
}

/// What the self-managed certificate loop works on (from [`WebhookCertArgs`]); lifetimes in
/// seconds. Keep `ca_validity_secs / 3` longer than `leaf_validity_secs`, so that a leaf
/// never outlives its CA (the defaults: 5 years and 1 year).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The operator namespace (the Secret and the Service live there).
    pub namespace: String,
    /// The Secret's name.
    pub secret_name: String,
    /// The MutatingWebhookConfiguration's name.
    pub config_name: String,
    /// The webhook Service's name.
    pub service_name: String,
    /// Lifetime of a generated CA, seconds.
    pub ca_validity_secs: i64,
    /// Lifetime of the serving leaf, seconds.
    pub leaf_validity_secs: i64,
    /// Minimum age of a successor CA before it signs, seconds.
    pub promotion_delay_secs: i64,
}

impl Settings {
    /// Settings from the flags, with the default lifetimes.
    pub fn new(args: &WebhookCertArgs, namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            secret_name: args.webhook_cert_secret.clone(),
            config_name: args.webhook_config_name.clone(),
            service_name: args.webhook_service_name.clone(),
            ca_validity_secs: DEFAULT_CA_VALIDITY_SECS,
            leaf_validity_secs: DEFAULT_LEAF_VALIDITY_SECS,
            promotion_delay_secs: DEFAULT_PROMOTION_DELAY_SECS,
        }
    }

    /// The serving certificate's DNS names: `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`,
    /// `<svc>.<ns>.svc.cluster.local`.
    pub fn dns_names(&self) -> Vec<String> {
        let (svc, ns) = (&self.service_name, &self.namespace);
        vec![
            svc.clone(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
        ]
    }

    /// What the serving leaf is issued for: CN `<svc>.<ns>.svc` (or `<svc>` when that is
    /// over 64 characters), [`Settings::dns_names`], serverAuth, `leaf_validity_secs`.
    pub fn leaf_request(&self) -> LeafRequest {
        let dns_names = self.dns_names();
        let common_name = match dns_names.get(2) {
            Some(n) if n.chars().count() <= issue::MAX_COMMON_NAME_CHARS => n.clone(),
            _ => self.service_name.clone(),
        };
        LeafRequest {
            common_name,
            dns_names,
            ip_addresses: vec![],
            usage: Usage::Server,
            duration_secs: self.leaf_validity_secs,
        }
    }

    /// `<namespace>/<secret name>`, for messages.
    pub fn secret_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.secret_name)
    }
}

/// Why the self-managed certificate could not be kept up to date. The loop logs it and
/// retries with backoff (5 s doubling to 5 min).
#[derive(Debug, thiserror::Error)]
pub enum WebhookCertError {
    /// A Kubernetes API call failed (network, RBAC, a Secret of another type...).
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// Generating the CA or issuing the leaf failed.
    #[error("issuing the webhook certificate: {0}")]
    Issue(#[from] IssueError),
    /// The Secret changed under every write attempt (409 Conflict each time).
    #[error(
        "the Secret {secret} changed during each of {attempts} write attempts (409 Conflict); \
         another writer is active, retrying later"
    )]
    Conflict {
        /// `<namespace>/<name>`.
        secret: String,
        /// Attempts made.
        attempts: u32,
    },
}

impl WebhookCertError {
    /// A stable CamelCase reason: `KubeApiError`, `IssuanceFailed` or `WriteConflict`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubeApiError",
            Self::Issue(_) => "IssuanceFailed",
            Self::Conflict { .. } => "WriteConflict",
        }
    }
}

/// The Secret as mcptrust writes it: `kubernetes.io/tls`, labels
/// `app.kubernetes.io/managed-by: mcptrust` and `mcptrust.io/component: webhook-cert`, and
/// `data`. With `resource_version`, a server-side apply of it only succeeds against that
/// version (409 Conflict otherwise).
pub fn build_secret(
    settings: &Settings,
    data: BTreeMap<String, ByteString>,
    resource_version: Option<String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(settings.secret_name.clone()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    build::LABEL_MANAGED_BY.to_string(),
                    build::MANAGED_BY.to_string(),
                ),
                (build::LABEL_COMPONENT.to_string(), COMPONENT.to_string()),
            ])),
            resource_version,
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.to_string()),
        data: Some(data),
        ..Default::default()
    }
}

/// The webhook entries of `config` whose `clientConfig.caBundle` is not exactly
/// `ca_bundle`.
pub fn stale_webhooks(config: &MutatingWebhookConfiguration, ca_bundle: &[u8]) -> Vec<String> {
    config
        .webhooks
        .iter()
        .flatten()
        .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca_bundle))
        .map(|w| w.name.clone())
        .collect()
}

/// The server-side apply body that sets `clientConfig.caBundle` of each named webhook
/// entry (all of them must be named: an entry this field manager applied before and omits
/// now would lose its caBundle).
pub fn ca_bundle_apply(
    config_name: &str,
    webhooks: &[String],
    ca_bundle: &[u8],
) -> serde_json::Value {
    let bundle = ByteString(ca_bundle.to_vec());
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": config_name},
        "webhooks": webhooks
            .iter()
            .map(|name| json!({"name": name, "clientConfig": {"caBundle": &bundle}}))
            .collect::<Vec<_>>(),
    })
}

/// What one [`reconcile`] pass did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The changes written to the Secret (empty: not written).
    pub changes: Vec<Change>,
    /// The MutatingWebhookConfiguration's caBundle was patched.
    pub published: bool,
    /// When the next pass is due, Unix seconds ([`Plan::next_check`]).
    pub next_check: i64,
    /// notAfter of the signing CA, Unix seconds ([`Plan::ca_not_after`]).
    pub ca_not_after: i64,
}

/// One pass of the self-managed certificate at `now` (Unix seconds):
///
/// 1. GET the Secret and the MutatingWebhookConfiguration;
/// 2. [`plan`];
/// 3. write the Secret when the plan says so: POST when it does not exist (field manager
///    [`FIELD_MANAGER_SECRET`]; a 409 means another replica won the race: its Secret is read
///    and planned again), otherwise a forced server-side apply carrying the
///    `resourceVersion` read (a 409 means it changed meanwhile: read and plan again), at
///    most [`MAX_CONFLICT_RETRIES`] re-reads;
/// 4. when any webhook entry's caBundle differs from the plan's, server-side apply the
///    caBundle of every entry (field manager [`FIELD_MANAGER_CABUNDLE`], forced). A missing
///    configuration is logged and left alone.
///
/// # Errors
/// [`WebhookCertError`]: API failures, generation failures, persistent conflicts.
pub async fn reconcile(
    client: &Client,
    settings: &Settings,
    now: i64,
) -> Result<Outcome, WebhookCertError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut current = secrets.get_opt(&settings.secret_name).await?;
    let config = configs.get_opt(&settings.config_name).await?;
    let published = Published::from_config(config.as_ref());

    let mut attempts = 0u32;
    let (plan, written) = loop {
        let plan = plan(current.as_ref(), &published, settings, now)?;
        let Some(data) = plan.data.clone() else {
            break (plan, false);
        };
        let result = match &current {
            None => {
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER_SECRET.to_string()),
                    ..Default::default()
                };
                secrets
                    .create(&pp, &build_secret(settings, data, None))
                    .await
            }
            Some(s) => {
                let body = build_secret(settings, data, s.metadata.resource_version.clone());
                secrets
                    .patch(
                        &settings.secret_name,
                        &PatchParams::apply(FIELD_MANAGER_SECRET).force(),
                        &Patch::Apply(&body),
                    )
                    .await
            }
        };
        match result {
            Ok(_) => break (plan, true),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                attempts += 1;
                if attempts > MAX_CONFLICT_RETRIES {
                    return Err(WebhookCertError::Conflict {
                        secret: settings.secret_ref(),
                        attempts,
                    });
                }
                tracing::info!(
                    secret = %settings.secret_ref(),
                    "the Secret was written by another replica meanwhile; reading it again"
                );
                current = secrets.get_opt(&settings.secret_name).await?;
            }
            Err(e) => return Err(e.into()),
        }
    };
    if written {
        let what: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
        tracing::info!(secret = %settings.secret_ref(), "webhook certificate: {}", what.join("; "));
    }

    let mut patched = false;
    match &config {
        None => tracing::warn!(
            config = %settings.config_name,
            "MutatingWebhookConfiguration not found: no caBundle to patch (is --webhook-config-name right?)"
        ),
        Some(cfg) => {
            if !stale_webhooks(cfg, &plan.ca_bundle).is_empty() {
                let names: Vec<String> = cfg
                    .webhooks
                    .iter()
                    .flatten()
                    .map(|w| w.name.clone())
                    .collect();
                configs
                    .patch(
                        &settings.config_name,
                        &PatchParams::apply(FIELD_MANAGER_CABUNDLE).force(),
                        &Patch::Apply(ca_bundle_apply(
                            &settings.config_name,
                            &names,
                            &plan.ca_bundle,
                        )),
                    )
                    .await?;
                patched = true;
                tracing::info!(
                    config = %settings.config_name,
                    webhooks = names.len(),
                    "patched the webhook caBundle"
                );
            }
        }
    }
    Ok(Outcome {
        changes: if written { plan.changes } else { Vec::new() },
        published: patched,
        next_check: plan.next_check,
        ca_not_after: plan.ca_not_after,
    })
}

/// How long to wait after a pass that found the next thing due at `next_check` (Unix
/// seconds), at `now`: between [`MIN_REQUEUE`] and [`MAX_REQUEUE`].
pub fn requeue_after(next_check: i64, now: i64) -> Duration {
    let secs = u64::try_from(next_check.saturating_sub(now)).unwrap_or(0);
    Duration::from_secs(secs).clamp(MIN_REQUEUE, MAX_REQUEUE)
}

/// Backoff after `failures` consecutive failed passes: 5 s, 10 s, 20 s... capped at 300 s.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    Duration::from_secs((5u64 << exp).min(300))
}

/// The leader's loop (selfManaged mode) until `shutdown` resolves: [`reconcile`], then wait
/// until the next thing is due (at most [`MAX_REQUEUE`]), or until the Secret or the
/// MutatingWebhookConfiguration changes (metadata-only watches, by name, so a deleted
/// Secret or a caBundle reset by a `helm upgrade` is repaired within a second). Failures
/// are logged and retried with backoff; nothing here ends the process. Each successful
/// pass sets `mcptrust_webhook_ca_expiration_timestamp_seconds` in `metrics`.
pub async fn run(
    client: Client,
    settings: Settings,
    clock: Clock,
    metrics: super::ControllerMetrics,
    shutdown: impl Future<Output = ()> + Send,
) {
    tracing::info!(
        secret = %settings.secret_ref(),
        config = %settings.config_name,
        service = %settings.service_name,
        "managing the webhook's serving certificate (selfManaged)"
    );
    let secret_events = watcher(
        Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &settings.namespace),
        watcher::Config::default()
            .fields(&format!("metadata.name={}", settings.secret_name))
            .labels(&format!(
                "{}={}",
                build::LABEL_MANAGED_BY,
                build::MANAGED_BY
            )),
    )
    .default_backoff();
    let config_events = watcher(
        Api::<PartialObjectMeta<MutatingWebhookConfiguration>>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={}", settings.config_name)),
    )
    .default_backoff();
    let triggers = futures::stream::select(
        secret_events.filter_map(|e| async move { e.ok().map(|_| ()) }),
        config_events.filter_map(|e| async move { e.ok().map(|_| ()) }),
    );
    tokio::pin!(triggers);
    tokio::pin!(shutdown);
    let mut failures = 0u32;
    // Consecutive passes that had to patch the caBundle: more than two means something
    // else rewrites it (e.g. cert-manager's cainjector left on in selfManaged mode).
    let mut patches_in_a_row = 0u32;
    loop {
        let now = clock();
        let wait = match reconcile(&client, &settings, now).await {
            Ok(outcome) => {
                failures = 0;
                metrics.set_webhook_ca_not_after(outcome.ca_not_after);
                patches_in_a_row = if outcome.published {
                    patches_in_a_row.saturating_add(1)
                } else {
                    0
                };
                if patches_in_a_row > 2 {
                    tracing::warn!(
                        config = %settings.config_name,
                        passes = patches_in_a_row,
                        "the caBundle keeps being changed by someone else (cert-manager's \
                         cainjector annotation with --webhook-cert-mode selfManaged?); \
                         slowing down"
                    );
                }
                requeue_after(outcome.next_check, now)
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures);
                tracing::warn!(
                    reason = e.reason(),
                    retry_in_secs = wait.as_secs(),
                    "webhook certificate: {e}"
                );
                wait
            }
        };
        // After a change notification, wait 1 s (a burst, e.g. the initial lists or our own
        // writes, makes one pass), or back off while fighting over the caBundle.
        let debounce = if patches_in_a_row > 2 {
            backoff(patches_in_a_row - 2)
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
            Some(()) = triggers.next() => {
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(debounce.min(wait)) => {}
                }
                while let Some(Some(())) = triggers.next().now_or_never() {}
            }
        }
    }
}

/// Waits until `cert` and `key` load as a matching certificate and key (polling every 2 s),
/// for a webhook whose Secret volume is filled after the pod starts (`optional: true`,
/// written by the leader or by cert-manager). Logs `waiting for <path>` at once and every
/// 30 s, `<path>` being the first file that is missing (or `cert` when both exist but do not
/// load yet), and sets `readiness` to `waiting for <path>` meanwhile (what `/readyz` says).
/// Cancel it by dropping it (e.g. in a `select!` with the shutdown signal).
pub async fn wait_for_tls_files(
    cert: &Path,
    key: &Path,
    mode: CertMode,
    readiness: &crate::admin::Readiness,
) {
    let started = std::time::Instant::now();
    let poll = Duration::from_secs(2);
    let mut next_log = Duration::ZERO;
    loop {
        match crate::tls::load_certified_key(cert, key) {
            Ok(_) => {
                if !next_log.is_zero() {
                    tracing::info!(
                        cert = %cert.display(),
                        waited_secs = started.elapsed().as_secs(),
                        "webhook certificate files present"
                    );
                }
                return;
            }
            Err(e) => {
                let path = if cert.exists() && !key.exists() {
                    key
                } else {
                    cert
                };
                readiness.set_waiting(path.display().to_string());
                if started.elapsed() >= next_log {
                    let by = match mode {
                        CertMode::SelfManaged => "the mcptrust leader",
                        CertMode::CertManager => "cert-manager",
                        CertMode::Provided => "you",
                    };
                    tracing::info!(
                        mode = %mode,
                        waited_secs = started.elapsed().as_secs(),
                        "waiting for {} (the Secret is written by {by}): {}",
                        path.display(),
                        crate::report::one_line(&e)
                    );
                    next_log += WAIT_LOG_INTERVAL;
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// How often [`wait_for_tls_files`] repeats its `waiting for <path>` line.
pub const WAIT_LOG_INTERVAL: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            namespace: "mcptrust".into(),
            secret_name: "mcptrust-webhook-tls".into(),
            config_name: "mcptrust".into(),
            service_name: "mcptrust-webhook".into(),
            ca_validity_secs: DEFAULT_CA_VALIDITY_SECS,
            leaf_validity_secs: DEFAULT_LEAF_VALIDITY_SECS,
            promotion_delay_secs: DEFAULT_PROMOTION_DELAY_SECS,
        }
    }

    #[test]
    fn leaf_request_names_the_service() {
        let req = settings().leaf_request();
        assert_eq!(req.common_name, "mcptrust-webhook.mcptrust.svc");
        assert_eq!(
            req.dns_names,
            [
                "mcptrust-webhook",
                "mcptrust-webhook.mcptrust",
                "mcptrust-webhook.mcptrust.svc",
                "mcptrust-webhook.mcptrust.svc.cluster.local"
            ]
        );
        let mut long = settings();
        long.service_name = "s".repeat(40);
        long.namespace = "n".repeat(30);
        assert_eq!(long.leaf_request().common_name, "s".repeat(40));
    }

    #[test]
    fn rotation_starts_in_the_last_third() {
        assert_eq!(ca_rotation_time(0, 300), 200);
        assert_eq!(ca_rotation_time(100, 400), 300);
    }

    #[test]
    fn requeue_is_clamped() {
        assert_eq!(requeue_after(100, 200), MIN_REQUEUE);
        assert_eq!(requeue_after(10_000_000, 0), MAX_REQUEUE);
        assert_eq!(requeue_after(130, 100), Duration::from_secs(30));
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(3), Duration::from_secs(20));
        assert_eq!(backoff(30), Duration::from_secs(300));
    }

    #[test]
    fn mode_names_are_the_flag_values() {
        use clap::ValueEnum as _;
        for mode in CertMode::value_variants() {
            let name = mode.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(name.as_deref(), Some(mode.as_str()));
        }
        assert!(CertMode::SelfManaged.waits_for_files());
        assert!(!CertMode::Provided.waits_for_files());
    }

    #[test]
    fn the_apply_body_names_every_webhook() {
        let body = ca_bundle_apply("mcptrust", &["a.mcptrust.io".into(), "b".into()], b"PEM");
        assert_eq!(body["kind"], "MutatingWebhookConfiguration");
        assert_eq!(body["webhooks"][1]["name"], "b");
        assert_eq!(body["webhooks"][0]["clientConfig"]["caBundle"], "UEVN");
    }
}
