//! The pure plan of the self-managed webhook certificate: from the Secret as read and what
//! the MutatingWebhookConfiguration publishes, decide at a given time what the Secret must
//! hold (signing CA, successor, leaf, caBundle) and why ([`Change`]). No clock, files or
//! network.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::CertificateDer;

use super::{
    CA_BUNDLE, CA_KEY, MAX_PREVIOUS_CAS, NEXT_CA_CRT, NEXT_CA_KEY, Settings,
    UNPUBLISHED_RETRY_SECS, WebhookCertError,
};
use crate::pki::issue::{
    self, CA_CRT, CertificateAuthority, Decision, IssueReason, TLS_CRT, TLS_KEY,
};
use crate::pki::pem::{encode_pem, inspect, parse_pem_certificates, rfc3339, sha256_hex};

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
