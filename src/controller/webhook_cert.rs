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
use rustls::pki_types::CertificateDer;
use serde_json::json;

use super::{Clock, build};
use crate::pki::issue::{
    self, CA_CRT, CertificateAuthority, Decision, IssueError, IssueReason, LeafRequest,
    SECRET_TYPE, TLS_CRT, TLS_KEY, Usage,
};
use crate::pki::pem::{encode_pem, inspect, parse_pem_certificates, rfc3339, sha256_hex};

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

/// What the MutatingWebhookConfiguration publishes now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// There is no such configuration: the API server calls nobody with a caBundle of ours,
    /// so nothing can break by changing the signing CA.
    Missing,
    /// The `caBundle` bytes (PEM) of each webhook entry, in order; an entry without one
    /// is an empty vector.
    Bundles(Vec<Vec<u8>>),
}

impl Published {
    /// Reads the caBundles of `config` (`None`: [`Published::Missing`]).
    pub fn from_config(config: Option<&MutatingWebhookConfiguration>) -> Self {
        match config {
            None => Self::Missing,
            Some(c) => Self::Bundles(
                c.webhooks
                    .iter()
                    .flatten()
                    .map(|w| {
                        w.client_config
                            .ca_bundle
                            .as_ref()
                            .map(|b| b.0.clone())
                            .unwrap_or_default()
                    })
                    .collect(),
            ),
        }
    }

    /// Whether every webhook entry trusts the CA certificate `der` (true when there is no
    /// configuration or no entry: nobody to break).
    pub fn trusts(&self, der: &[u8]) -> bool {
        match self {
            Self::Missing => true,
            Self::Bundles(bundles) => bundles.iter().all(|b| {
                parse_pem_certificates(CA_BUNDLE, b)
                    .is_ok_and(|certs| certs.iter().any(|c| c.as_ref() == der))
            }),
        }
    }
}

/// One reason the Secret changes, in the order [`plan`] found them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new signing CA was generated: there was none usable (`reason` says why) and no
    /// successor to promote.
    NewCa {
        /// Why (e.g. `the Secret does not exist`, `the CA expired at ...`).
        reason: String,
    },
    /// The signing CA entered the last third of its life: a successor was generated and
    /// added to the caBundle. It signs nothing yet.
    CaRotationStarted {
        /// SHA-256 (hex) of the successor's DER.
        successor_sha256: String,
        /// The current CA's `notAfter`, Unix seconds.
        current_not_after: i64,
    },
    /// The successor CA became the signing CA; the previous one stays in the caBundle
    /// until it expires.
    CaPromoted {
        /// Why now (published for long enough, or the current CA is unusable).
        reason: String,
    },
    /// The serving leaf was (re)issued.
    LeafIssued {
        /// cert-manager's reason ([`issue::decide`]).
        reason: IssueReason,
        /// The sentence from [`issue::decide`].
        message: String,
    },
    /// The caBundle changed.
    BundleChanged {
        /// CA certificates in the new caBundle.
        cas: usize,
        /// CA certificates dropped (expired, replaced or unparsable).
        dropped: usize,
    },
    /// Keys differed from what they must be without any of the above (a PEM re-encoding,
    /// an unusable successor removed...).
    Repaired {
        /// The keys rewritten or removed.
        keys: Vec<String>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NewCa { reason } => write!(f, "generated a new webhook CA ({reason})"),
            Self::CaRotationStarted {
                successor_sha256,
                current_not_after,
            } => write!(
                f,
                "the webhook CA expires at {}: added its successor (sha256 {successor_sha256}) \
                 to the caBundle; it signs once the caBundle is published",
                rfc3339(*current_not_after)
            ),
            Self::CaPromoted { reason } => {
                write!(
                    f,
                    "the successor CA now signs the serving certificate ({reason})"
                )
            }
            Self::LeafIssued { reason, message } => {
                write!(f, "issued the serving certificate ({reason}: {message})")
            }
            Self::BundleChanged { cas, dropped } => write!(
                f,
                "the caBundle now holds {cas} CA certificate(s) ({dropped} dropped)"
            ),
            Self::Repaired { keys } => write!(f, "rewrote {}", keys.join(", ")),
        }
    }
}

/// What [`plan`] decided.
#[derive(Clone, PartialEq, Eq)]
pub struct Plan {
    /// Why the Secret changes; empty when it is kept as is.
    pub changes: Vec<Change>,
    /// The Secret's complete `data` to write, `None` when it is kept. Holds private keys.
    pub data: Option<BTreeMap<String, ByteString>>,
    /// The caBundle (PEM) the MutatingWebhookConfiguration must publish, written or not.
    pub ca_bundle: Vec<u8>,
    /// When something is next due (leaf renewal, CA rotation or promotion, a previous CA's
    /// expiry), Unix seconds; always after `now`.
    pub next_check: i64,
    /// notAfter of the CA that signs the serving certificate, Unix seconds.
    pub ca_not_after: i64,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("changes", &self.changes)
            .field(
                "data",
                &self
                    .data
                    .as_ref()
                    .map(|d| d.keys().cloned().collect::<Vec<_>>()),
            )
            .field("ca_bundle_bytes", &self.ca_bundle.len())
            .field("next_check", &self.next_check)
            .field("ca_not_after", &self.ca_not_after)
            .finish()
    }
}

impl Plan {
    /// Whether the Secret must be written.
    pub fn writes(&self) -> bool {
        self.data.is_some()
    }
}

/// The common name of a CA generated at `now`: `mcptrust webhook CA <RFC 3339>`, so that
/// successive CAs have distinct subjects.
fn ca_common_name(now: i64) -> String {
    format!("mcptrust webhook CA {}", rfc3339(now))
}

/// When a CA valid `not_before..not_after` enters the last third of its life.
pub fn ca_rotation_time(not_before: i64, not_after: i64) -> i64 {
    not_after.saturating_sub(not_after.saturating_sub(not_before) / 3)
}

/// When a successor CA generated by [`plan`] (backdated by [`issue::CA_BACKDATE_SECS`]) may
/// start signing.
fn promotable_at(next: &CertificateAuthority, delay: i64) -> i64 {
    next.not_before()
        .saturating_add(issue::CA_BACKDATE_SECS)
        .saturating_add(delay)
}

fn load_ca(
    data: &BTreeMap<String, Vec<u8>>,
    crt: &str,
    key: &str,
) -> Result<CertificateAuthority, String> {
    let get = |k: &str| -> Result<String, String> {
        match data.get(k) {
            Some(v) if !v.trim_ascii().is_empty() => {
                String::from_utf8(v.clone()).map_err(|_| format!("{k} is not UTF-8 text"))
            }
            _ => Err(format!("{k} is missing")),
        }
    };
    let (cert_pem, key_pem) = (get(crt)?, get(key)?);
    CertificateAuthority::from_pem(&cert_pem, &key_pem).map_err(|e| format!("{crt}: {e}"))
}

/// Decides what the Secret must hold at `now` (Unix seconds), given the Secret as read
/// (`None`: it does not exist) and what the MutatingWebhookConfiguration publishes.
///
/// In order:
/// 1. the signing CA (`ca.crt`/`ca.key`) is kept while it parses and has not expired;
///    otherwise a valid successor is promoted, or a new CA generated ([`Change::NewCa`]);
/// 2. in the last third of its life ([`ca_rotation_time`]) it gets a successor
///    ([`Change::CaRotationStarted`]); a successor that every webhook entry of the
///    configuration trusts ([`Published::trusts`]) and that is at least
///    `promotion_delay_secs` old is promoted ([`Change::CaPromoted`]);
/// 3. the leaf is checked with [`issue::decide`] (renewal at two thirds of its life) and
///    reissued from the signing CA when needed ([`Change::LeafIssued`]);
/// 4. the caBundle is the signing CA, the successor, and the newest
///    [`MAX_PREVIOUS_CAS`] other CA certificates of the current caBundle (or of the CA just
///    replaced) that have not expired, ordered by `notBefore` ([`Change::BundleChanged`]).
///
/// Nothing is read from the clock, the files or the network: apart from the fresh keys and
/// serial numbers it generates (and a warning logged for an unusable successor), the result
/// depends only on the arguments, so tests drive it with any `now`.
///
/// # Errors
/// [`WebhookCertError::Issue`] when a CA or the leaf cannot be generated (e.g. a service
/// name that is not a DNS label, or lifetimes that are not positive).
pub fn plan(
    secret: Option<&Secret>,
    published: &Published,
    settings: &Settings,
    now: i64,
) -> Result<Plan, WebhookCertError> {
    let existing: BTreeMap<String, Vec<u8>> =
        issue::decoded_secret_data(secret).unwrap_or_default();
    let mut changes = Vec::new();
    // CA certificates to consider keeping in the caBundle, besides the signing CA and its
    // successor.
    let mut previous: Vec<CertificateDer<'static>> = existing
        .get(CA_BUNDLE)
        .and_then(|b| parse_pem_certificates(CA_BUNDLE, b).ok())
        .unwrap_or_default();

    // The successor, if any and usable.
    let has_next_keys = existing.contains_key(NEXT_CA_CRT) || existing.contains_key(NEXT_CA_KEY);
    let mut next = if has_next_keys {
        match load_ca(&existing, NEXT_CA_CRT, NEXT_CA_KEY) {
            Ok(n) if n.not_after() > now => Some(n),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(secret = %settings.secret_ref(), "dropping the successor CA: {e}");
                None
            }
        }
    } else {
        None
    };

    // 1. The signing CA.
    let current = if secret.is_none() {
        Err("the Secret does not exist".to_string())
    } else {
        match load_ca(&existing, CA_CRT, CA_KEY) {
            Ok(ca) if ca.not_after() <= now => Err(format!(
                "the CA expired at {}",
                ca.info().not_after_rfc3339()
            )),
            Ok(ca) => Ok(ca),
            Err(e) => Err(e),
        }
    };
    let mut ca = match (current, next.take()) {
        (Ok(ca), n) => {
            next = n;
            ca
        }
        (Err(why), Some(n)) => {
            changes.push(Change::CaPromoted {
                reason: format!("the signing CA is unusable: {why}"),
            });
            n
        }
        (Err(why), None) => {
            changes.push(Change::NewCa { reason: why });
            CertificateAuthority::generate(&ca_common_name(now), now, settings.ca_validity_secs)?
        }
    };

    // 2. Rotation.
    let delay = settings.promotion_delay_secs.max(0);
    match next.take() {
        None if now >= ca_rotation_time(ca.not_before(), ca.not_after()) => {
            let successor = CertificateAuthority::generate(
                &ca_common_name(now),
                now,
                settings.ca_validity_secs,
            )?;
            changes.push(Change::CaRotationStarted {
                successor_sha256: successor.sha256(),
                current_not_after: ca.not_after(),
            });
            next = Some(successor);
        }
        None => {}
        Some(n) if now >= promotable_at(&n, delay) && published.trusts(n.cert_der()) => {
            changes.push(Change::CaPromoted {
                reason: format!(
                    "the caBundle with both CAs has been published for at least {delay}s"
                ),
            });
            previous.push(ca.cert_der().clone());
            ca = n;
        }
        Some(n) => next = Some(n),
    }

    // 3. The leaf.
    let req = settings.leaf_request();
    let renew_before = settings.leaf_validity_secs / 3;
    let secret_data = secret.map(|_| existing.clone());
    let (tls_crt, tls_key, leaf_renewal) =
        match issue::decide(secret_data.as_ref(), &ca, &req, renew_before, now) {
            Decision::Keep { renewal_time, .. } => (
                existing.get(TLS_CRT).cloned().unwrap_or_default(),
                existing.get(TLS_KEY).cloned().unwrap_or_default(),
                renewal_time,
            ),
            Decision::Issue { reason, message } => {
                let issued = issue::issue(&ca, &req, now)?;
                changes.push(Change::LeafIssued { reason, message });
                (
                    issued.cert_pem.into_bytes(),
                    issued.key_pem.into_bytes(),
                    issue::renewal_time(issued.not_before, issued.not_after, renew_before),
                )
            }
        };

    // 4. The caBundle.
    let pinned: Vec<&[u8]> = std::iter::once(ca.cert_der().as_ref())
        .chain(next.as_ref().map(|n| n.cert_der().as_ref()))
        .collect();
    let mut others: Vec<(CertificateDer<'static>, crate::pki::CertInfo)> = Vec::new();
    for der in previous {
        let Ok(info) = inspect(&der) else { continue };
        if !info.is_ca
            || info.not_after <= now
            || pinned.contains(&der.as_ref())
            || others.iter().any(|(d, _)| d.as_ref() == der.as_ref())
        {
            continue;
        }
        others.push((der, info));
    }
    // The newest previous CAs win.
    others.sort_by_key(|(_, info)| std::cmp::Reverse(info.not_before));
    others.truncate(MAX_PREVIOUS_CAS);
    let mut bundle: Vec<(i64, String, Vec<u8>)> = others
        .iter()
        .map(|(der, info)| (info.not_before, info.sha256.clone(), der.to_vec()))
        .collect();
    bundle.push((ca.not_before(), ca.sha256(), ca.cert_der().to_vec()));
    if let Some(n) = &next {
        bundle.push((n.not_before(), n.sha256(), n.cert_der().to_vec()));
    }
    bundle.sort();
    let ca_bundle: Vec<u8> = bundle
        .iter()
        .flat_map(|(_, _, der)| encode_pem(der).into_bytes())
        .collect();
    if existing.get(CA_BUNDLE) != Some(&ca_bundle) {
        let old: Vec<String> = existing
            .get(CA_BUNDLE)
            .and_then(|b| parse_pem_certificates(CA_BUNDLE, b).ok())
            .unwrap_or_default()
            .iter()
            .map(|d| sha256_hex(d))
            .collect();
        let dropped = old
            .iter()
            .filter(|sha| !bundle.iter().any(|(_, s, _)| s == *sha))
            .count();
        changes.push(Change::BundleChanged {
            cas: bundle.len(),
            dropped,
        });
    }

    // The Secret's data, and whether it differs.
    let mut desired: BTreeMap<String, Vec<u8>> = BTreeMap::from([
        (CA_CRT.to_string(), ca.cert_pem.clone().into_bytes()),
        (CA_KEY.to_string(), ca.key_pem.clone().into_bytes()),
        (TLS_CRT.to_string(), tls_crt),
        (TLS_KEY.to_string(), tls_key),
        (CA_BUNDLE.to_string(), ca_bundle.clone()),
    ]);
    if let Some(n) = &next {
        desired.insert(NEXT_CA_CRT.to_string(), n.cert_pem.clone().into_bytes());
        desired.insert(NEXT_CA_KEY.to_string(), n.key_pem.clone().into_bytes());
    }
    let mut differing: Vec<String> = desired
        .iter()
        .filter(|(k, v)| existing.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    differing.extend(
        [NEXT_CA_CRT, NEXT_CA_KEY]
            .into_iter()
            .filter(|k| existing.contains_key(*k) && !desired.contains_key(*k))
            .map(str::to_string),
    );
    if secret.is_some() && !differing.is_empty() && changes.is_empty() {
        changes.push(Change::Repaired {
            keys: differing.clone(),
        });
    }
    let writes = secret.is_none() || !differing.is_empty();

    // When to look again.
    let mut next_check = leaf_renewal.min(ca.not_after());
    match &next {
        None => next_check = next_check.min(ca_rotation_time(ca.not_before(), ca.not_after())),
        Some(n) => {
            let at = promotable_at(n, delay);
            next_check = next_check.min(if at > now {
                at
            } else {
                now.saturating_add(UNPUBLISHED_RETRY_SECS)
            });
        }
    }
    for (_, info) in &others {
        next_check = next_check.min(info.not_after);
    }
    let next_check = next_check.max(now.saturating_add(1));

    Ok(Plan {
        changes,
        data: writes.then(|| {
            desired
                .into_iter()
                .map(|(k, v)| (k, ByteString(v)))
                .collect()
        }),
        ca_bundle,
        next_check,
        ca_not_after: ca.not_after(),
    })
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
