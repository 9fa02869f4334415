//! cert-manager's renewal decision for a certificate in a `kubernetes.io/tls` Secret:
//! [`decide`] keeps it (until [`renewal_time`]) or says why to (re)issue it
//! ([`IssueReason`], named after cert-manager's Certificate `Issuing` condition reasons).
//! Pure: the Secret's data, the CA, the request and "now" (Unix seconds) come in as
//! parameters. Minting the certificate is [`super::issue()`]'s job.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use rcgen::KeyPair;
use x509_parser::extensions::GeneralName;

use super::{
    CA_CRT, CertificateAuthority, LEAF_BACKDATE_SECS, LeafRequest, TLS_CRT, TLS_KEY, Usage,
    parse_x509,
};
use crate::pki::pem::{self, parse_pem_certificates, rfc3339, sha256_hex};

/// When to renew a certificate valid `not_before..not_after` (Unix seconds):
/// `not_after - renew_before_secs`. As in cert-manager, a `renew_before_secs` that is not
/// shorter than the certificate's actual lifetime (or is not positive) is replaced by a
/// third of that lifetime, so a certificate is never "due" the moment it is issued.
pub fn renewal_time(not_before: i64, not_after: i64, renew_before_secs: i64) -> i64 {
    let lifetime = not_after.saturating_sub(not_before);
    let renew_before = if renew_before_secs <= 0 || renew_before_secs >= lifetime {
        lifetime / 3
    } else {
        renew_before_secs
    };
    not_after.saturating_sub(renew_before)
}

/// Why a certificate must be (re)issued: cert-manager's reasons on the Certificate's
/// `Issuing` condition, checked in this order by [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssueReason {
    /// The Secret does not exist.
    DoesNotExist,
    /// The Secret lacks `tls.crt`, `tls.key` or `ca.crt` (or one is empty).
    MissingData,
    /// `tls.crt` or `tls.key` does not parse, or the key is not the certificate's.
    InvalidKeyPair,
    /// `tls.crt` was not signed by the current CA, or `ca.crt` does not hold it.
    IncorrectIssuer,
    /// The certificate's SANs, CN, extendedKeyUsage or lifetime differ from the request.
    RequestChanged,
    /// The renewal time (`notAfter - renewBefore`) has passed.
    Renewing,
    /// `notAfter` has passed.
    Expired,
    /// A person asked for a renewal (`mcptrust renew`, cert-manager's `cmctl renew`
    /// reason); never returned by [`decide`], which does not see the request.
    ManuallyTriggered,
}

impl IssueReason {
    /// Every reason: those of [`decide`] in the order it checks them, then
    /// [`IssueReason::ManuallyTriggered`].
    pub const ALL: [IssueReason; 8] = [
        Self::DoesNotExist,
        Self::MissingData,
        Self::InvalidKeyPair,
        Self::IncorrectIssuer,
        Self::RequestChanged,
        Self::Renewing,
        Self::Expired,
        Self::ManuallyTriggered,
    ];

    /// The CamelCase reason, e.g. `DoesNotExist`, `RequestChanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DoesNotExist => "DoesNotExist",
            Self::MissingData => "MissingData",
            Self::InvalidKeyPair => "InvalidKeyPair",
            Self::IncorrectIssuer => "IncorrectIssuer",
            Self::RequestChanged => "RequestChanged",
            Self::Renewing => "Renewing",
            Self::Expired => "Expired",
            Self::ManuallyTriggered => "ManuallyTriggered",
        }
    }
}

impl fmt::Display for IssueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The Secret's certificate is good: keep it, and come back at `renewal_time`.
    Keep {
        /// The certificate's `notAfter`, Unix seconds.
        not_after: i64,
        /// When it becomes due ([`renewal_time`]), Unix seconds.
        renewal_time: i64,
        /// Lowercase hex SHA-256 of the certificate's DER.
        sha256: String,
    },
    /// Issue a new certificate (with [`issue`](super::issue())) and write it (with [`secret_data`](super::secret_data)).
    Issue {
        /// Why.
        reason: IssueReason,
        /// A sentence for the condition message / event; never holds key material.
        message: String,
    },
}

impl Decision {
    /// The reason to issue, or `None` for [`Decision::Keep`].
    pub fn reason(&self) -> Option<IssueReason> {
        match self {
            Self::Keep { .. } => None,
            Self::Issue { reason, .. } => Some(*reason),
        }
    }
}

fn issue_because(reason: IssueReason, message: impl Into<String>) -> Decision {
    Decision::Issue {
        reason,
        message: message.into(),
    }
}

/// A duration in seconds as a short Go-style string (`2160h`, `90m`, `45s`, `1h30m`).
fn go_duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h != 0 {
        out.push_str(&format!("{h}h"));
    }
    if m != 0 {
        out.push_str(&format!("{m}m"));
    }
    if s != 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

fn join_or_none<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// Describe a set difference as `added: a, b; removed: c`.
fn set_change<T: Ord + fmt::Display>(want: &BTreeSet<T>, have: &BTreeSet<T>) -> String {
    let added: Vec<&T> = want.difference(have).collect();
    let removed: Vec<&T> = have.difference(want).collect();
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("added {}", join_or_none(added)));
    }
    if !removed.is_empty() {
        parts.push(format!("removed {}", join_or_none(removed)));
    }
    parts.join(", ")
}

/// Decide whether the certificate in a `kubernetes.io/tls` Secret can be kept, following
/// cert-manager's Certificate renewal reasons, checked in this order:
///
/// 1. `secret_data` is `None` (no Secret) → [`IssueReason::DoesNotExist`];
/// 2. `tls.crt`, `tls.key` or `ca.crt` missing or empty → [`IssueReason::MissingData`]
///    (the message names the keys);
/// 3. `tls.crt` or `tls.key` unparsable, or the key is not the certificate's →
///    [`IssueReason::InvalidKeyPair`];
/// 4. `tls.crt`'s issuer is not the CA's subject, its signature does not verify with the
///    CA's public key, or `ca.crt` does not contain the CA certificate →
///    [`IssueReason::IncorrectIssuer`] (so rotating the CA reissues every leaf);
/// 5. DNS SANs or IP SANs (as case-insensitive sets), CN, extendedKeyUsage or lifetime
///    (`notAfter - notBefore` vs `duration_secs` + the 5 min backdating) differ from `req`
///    → [`IssueReason::RequestChanged`], the message listing each change;
/// 6. `now_unix >= notAfter` → [`IssueReason::Expired`];
/// 7. `now_unix >= notAfter - renewBefore` ([`renewal_time`]) → [`IssueReason::Renewing`];
/// 8. otherwise [`Decision::Keep`] with `renewal_time`.
///
/// `secret_data` is `Secret.data` as bytes ([`decoded_secret_data`](super::decoded_secret_data)); times are Unix
/// seconds. Messages never contain key material.
pub fn decide(
    secret_data: Option<&BTreeMap<String, Vec<u8>>>,
    ca: &CertificateAuthority,
    req: &LeafRequest,
    renew_before_secs: i64,
    now_unix: i64,
) -> Decision {
    let Some(data) = secret_data else {
        return issue_because(IssueReason::DoesNotExist, "the Secret does not exist");
    };

    let mut missing = Vec::new();
    for key in [TLS_CRT, TLS_KEY, CA_CRT] {
        match data.get(key) {
            None => missing.push(key.to_owned()),
            Some(v) if v.trim_ascii().is_empty() => missing.push(format!("{key} (empty)")),
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return issue_because(
            IssueReason::MissingData,
            format!("the Secret is missing {}", missing.join(", ")),
        );
    }
    let (crt, key, ca_crt) = (&data[TLS_CRT], &data[TLS_KEY], &data[CA_CRT]);

    // 3. The key pair.
    let leaf_der = match parse_pem_certificates(TLS_CRT, crt) {
        Ok(certs) => match certs.into_iter().next() {
            Some(der) => der,
            None => {
                return issue_because(IssueReason::InvalidKeyPair, "tls.crt holds no certificate");
            }
        },
        Err(e) => {
            return issue_because(
                IssueReason::InvalidKeyPair,
                format!("tls.crt is not a PEM certificate: {e}"),
            );
        }
    };
    let leaf = match parse_x509(&leaf_der) {
        Ok(leaf) => leaf,
        Err(e) => {
            return issue_because(
                IssueReason::InvalidKeyPair,
                format!("tls.crt is not a valid certificate: {e}"),
            );
        }
    };
    let leaf_key = match std::str::from_utf8(key)
        .ok()
        .and_then(|pem| KeyPair::from_pem(pem).ok())
    {
        Some(k) => k,
        None => {
            return issue_because(
                IssueReason::InvalidKeyPair,
                "tls.key is not a PKCS#8 PEM private key",
            );
        }
    };
    if leaf.public_key().subject_public_key.data.as_ref() != leaf_key.public_key_raw() {
        return issue_because(
            IssueReason::InvalidKeyPair,
            "tls.key does not match the public key of tls.crt",
        );
    }

    // 4. The issuer.
    let leaf_issuer = pem::rfc4514(leaf.issuer());
    let ca_cert = match parse_x509(&ca.der) {
        Ok(c) => c,
        // Unreachable: the CA parsed at construction.
        Err(e) => return issue_because(IssueReason::IncorrectIssuer, e),
    };
    if leaf.issuer().as_raw() != ca_cert.subject().as_raw() {
        return issue_because(
            IssueReason::IncorrectIssuer,
            format!(
                "tls.crt was issued by \"{leaf_issuer}\", not by the current CA \"{}\"",
                ca.subject()
            ),
        );
    }
    if leaf.verify_signature(Some(ca_cert.public_key())).is_err() {
        return issue_because(
            IssueReason::IncorrectIssuer,
            format!(
                "tls.crt names \"{leaf_issuer}\" as issuer but its signature does not verify \
                 with the current CA's key (the CA was rotated)"
            ),
        );
    }
    let ca_listed = parse_pem_certificates(CA_CRT, ca_crt)
        .is_ok_and(|certs| certs.iter().any(|c| c.as_ref() == ca.der.as_ref()));
    if !ca_listed {
        return issue_because(
            IssueReason::IncorrectIssuer,
            format!(
                "ca.crt does not contain the current CA certificate \"{}\" (sha256 {})",
                ca.subject(),
                ca.info.sha256
            ),
        );
    }

    // 5. The request.
    let mut changes = Vec::new();
    let mut have_dns = BTreeSet::new();
    let mut have_ips = BTreeSet::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => {
                    have_dns.insert(d.to_ascii_lowercase());
                }
                GeneralName::IPAddress(bytes) => {
                    if let Ok(b) = <[u8; 4]>::try_from(*bytes) {
                        have_ips.insert(IpAddr::from(b));
                    } else if let Ok(b) = <[u8; 16]>::try_from(*bytes) {
                        have_ips.insert(IpAddr::from(b));
                    }
                }
                _ => {}
            }
        }
    }
    let want_dns: BTreeSet<String> = req
        .dns_names
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    let want_ips: BTreeSet<IpAddr> = req.ip_addresses.iter().copied().collect();
    if want_dns != have_dns {
        changes.push(format!(
            "DNS names changed ({})",
            set_change(&want_dns, &have_dns)
        ));
    }
    if want_ips != have_ips {
        changes.push(format!(
            "IP addresses changed ({})",
            set_change(&want_ips, &have_ips)
        ));
    }
    let have_cn = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    if have_cn != req.common_name {
        changes.push(format!(
            "common name changed from \"{have_cn}\" to \"{}\"",
            req.common_name
        ));
    }
    let (server_auth, client_auth) = match leaf.extended_key_usage() {
        Ok(Some(eku)) => (eku.value.server_auth, eku.value.client_auth),
        _ => (false, false),
    };
    let eku_ok = match req.usage {
        Usage::Server => server_auth && !client_auth,
        Usage::Client => client_auth && !server_auth,
    };
    if !eku_ok {
        let have: Vec<&str> = [(server_auth, "serverAuth"), (client_auth, "clientAuth")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        changes.push(format!(
            "extended key usage changed from {} to {}",
            join_or_none(have),
            req.usage.as_str()
        ));
    }
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    let lifetime = not_after - not_before;
    let want_lifetime = req.duration_secs.saturating_add(LEAF_BACKDATE_SECS);
    if lifetime != want_lifetime {
        changes.push(format!(
            "duration changed from {} to {}",
            go_duration(lifetime - LEAF_BACKDATE_SECS),
            go_duration(req.duration_secs)
        ));
    }
    if !changes.is_empty() {
        return issue_because(IssueReason::RequestChanged, changes.join("; "));
    }

    // 6, 7. Time.
    if now_unix >= not_after {
        return issue_because(
            IssueReason::Expired,
            format!("the certificate expired at {}", rfc3339(not_after)),
        );
    }
    let renew_at = renewal_time(not_before, not_after, renew_before_secs);
    if now_unix >= renew_at {
        return issue_because(
            IssueReason::Renewing,
            format!(
                "renewing the certificate: its renewal time {} has passed (it expires at {})",
                rfc3339(renew_at),
                rfc3339(not_after)
            ),
        );
    }
    Decision::Keep {
        not_after,
        renewal_time: renew_at,
        sha256: sha256_hex(&leaf_der),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_format() {
        assert_eq!(go_duration(2160 * 3600), "2160h");
        assert_eq!(go_duration(5400), "1h30m");
        assert_eq!(go_duration(45), "45s");
        assert_eq!(go_duration(0), "0s");
    }

    #[test]
    fn renewal_time_clamps_like_cert_manager() {
        assert_eq!(renewal_time(0, 900, 300), 600);
        assert_eq!(renewal_time(0, 900, 900), 600);
        assert_eq!(renewal_time(0, 900, 5000), 600);
        assert_eq!(renewal_time(0, 900, 0), 600);
        assert_eq!(renewal_time(0, 900, 1), 899);
    }
}
