//! Certificate facts the probe reasons about: names (RFC 4514), subjectAltNames, validity,
//! fingerprints and real self-signature (issuer == subject *and* the certificate's own key
//! verifies its signature).

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use super::PeerCert;

/// Everything the diagnosis needs about one certificate of the presented chain.
#[derive(Debug, Clone)]
pub(crate) struct CertFacts {
    /// The public summary.
    pub(crate) peer: PeerCert,
    /// Raw DER of the subject name.
    pub(crate) subject_raw: Vec<u8>,
    /// Raw DER of the issuer name.
    pub(crate) issuer_raw: Vec<u8>,
    /// Start of validity, Unix seconds.
    pub(crate) not_before: i64,
    /// End of validity, Unix seconds.
    pub(crate) not_after: i64,
    /// Subject and issuer are the same name (says nothing about the signature).
    pub(crate) self_issued: bool,
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))
}

/// Summarise one DER certificate.
///
/// # Errors
/// A description when the DER is not an X.509 certificate.
pub(crate) fn facts(der: &[u8]) -> Result<CertFacts, String> {
    let cert = parse(der)?;
    let subject_raw = cert.subject().as_raw().to_vec();
    let issuer_raw = cert.issuer().as_raw().to_vec();
    let subject = dn(cert.subject());
    let issuer = dn(cert.issuer());
    let self_issued = subject_raw == issuer_raw || subject == issuer;
    let self_signed = self_issued && cert.verify_signature(None).is_ok();
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    let sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.iter().map(general_name).collect(),
        _ => Vec::new(),
    };
    Ok(CertFacts {
        peer: PeerCert {
            subject,
            issuer,
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_before: rfc3339(not_before),
            not_after: rfc3339(not_after),
            sha256: sha256_hex(der),
            self_signed,
            is_ca,
            sans,
            pem: crate::pki::encode_pem(der),
        },
        subject_raw,
        issuer_raw,
        not_before,
        not_after,
        self_issued,
    })
}

/// A stand-in for a certificate that does not parse (webpki will refuse it anyway).
pub(crate) fn unparseable(der: &[u8], why: &str) -> CertFacts {
    CertFacts {
        peer: PeerCert {
            subject: format!("(unparseable certificate: {why})"),
            issuer: String::new(),
            serial: String::new(),
            not_before: String::new(),
            not_after: String::new(),
            sha256: sha256_hex(der),
            self_signed: false,
            is_ca: false,
            sans: Vec::new(),
            pem: crate::pki::encode_pem(der),
        },
        subject_raw: Vec::new(),
        issuer_raw: Vec::new(),
        not_before: i64::MIN,
        not_after: i64::MAX,
        self_issued: false,
    }
}

/// Facts for every certificate of a chain, in the order given.
pub(crate) fn chain_facts<'a>(chain: impl IntoIterator<Item = &'a [u8]>) -> Vec<CertFacts> {
    chain
        .into_iter()
        .map(|der| facts(der).unwrap_or_else(|e| unparseable(der, &e)))
        .collect()
}

/// Whether `child`'s signature verifies with `issuer`'s public key.
pub(crate) fn signed_by(child: &[u8], issuer: &[u8]) -> bool {
    match (parse(child), parse(issuer)) {
        (Ok(c), Ok(i)) => c.verify_signature(Some(i.public_key())).is_ok(),
        _ => false,
    }
}

/// The certificate names itself as issuer but its own key does not verify its signature.
pub(crate) fn claims_self_signed_but_does_not_verify(f: &CertFacts) -> bool {
    f.self_issued && !f.peer.self_signed
}

/// A DER-encoded X.500 name (as sent in a CertificateRequest) as RFC 4514 text.
pub(crate) fn dn_from_der(der: &[u8]) -> String {
    match X509Name::from_der(der) {
        Ok((_, name)) => dn(&name),
        Err(_) => format!("(undecodable name, {} bytes)", der.len()),
    }
}

/// Format a name as RFC 4514: RDNs most-significant last, joined by `,`; multi-valued RDNs
/// joined by `+`; well-known attribute types by short name, others as dotted OIDs.
pub(crate) fn dn(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let ty = short_name(&oid).map_or(oid, str::to_owned);
                    let value = match atv.as_str() {
                        Ok(s) => escape(s),
                        Err(_) => format!("#{}", hex::encode(atv.attr_value().data)),
                    };
                    format!("{ty}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => {
                let mut a = [0u8; 4];
                a.copy_from_slice(bytes);
                format!("IP:{}", std::net::Ipv4Addr::from(a))
            }
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(bytes);
                format!("IP:{}", std::net::Ipv6Addr::from(a))
            }
            _ => format!("IP:#{}", hex::encode(bytes)),
        },
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        other => format!("{other:?}"),
    }
}

/// Unix seconds as RFC 3339 UTC, e.g. `2035-06-04T11:04:38Z`.
pub(crate) fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// A duration in seconds for people: "3 days", "5 hours", "12 minutes", "40 seconds".
pub(crate) fn human_duration(secs: i64) -> String {
    let secs = secs.unsigned_abs();
    let (n, unit) = if secs >= 2 * 86_400 {
        (secs / 86_400, "day")
    } else if secs >= 2 * 3600 {
        (secs / 3600, "hour")
    } else if secs >= 120 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(2_064_000_000), "2035-05-28T21:20:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(86_400 * 3), "3 days");
        assert_eq!(human_duration(-3600 * 5), "5 hours");
        assert_eq!(human_duration(61), "61 seconds");
        assert_eq!(human_duration(1), "1 second");
    }

    #[test]
    fn escapes_specials() {
        assert_eq!(escape("a,b"), "a\\,b");
        assert_eq!(escape(" x "), "\\ x\\ ");
    }
}
