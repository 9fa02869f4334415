//! Certificate facts the probe reasons about: names (RFC 4514), subjectAltNames, validity,
//! fingerprints and real self-signature (issuer == subject *and* the certificate's own key
//! verifies its signature).
//!
//! Names, timestamps, fingerprints and PEM come from [`crate::pki`], so that the probe
//! describes a certificate exactly as the bundle builder and the controller do.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use super::PeerCert;
use crate::pki::pem::{rfc3339, rfc4514};
use crate::pki::{encode_pem, sha256_hex};

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
    let subject = rfc4514(cert.subject());
    let issuer = rfc4514(cert.issuer());
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
            pem: encode_pem(der),
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
            pem: encode_pem(der),
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
        Ok((_, name)) => rfc4514(&name),
        Err(_) => format!("(undecodable name, {} bytes)", der.len()),
    }
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
    fn human_durations() {
        assert_eq!(human_duration(86_400 * 3), "3 days");
        assert_eq!(human_duration(-3600 * 5), "5 hours");
        assert_eq!(human_duration(61), "61 seconds");
        assert_eq!(human_duration(1), "1 second");
    }
}
