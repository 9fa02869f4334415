//! PEM and certificate helpers: strict PEM splitting, PEM encoding, SHA-256 fingerprints,
//! and a small X.509 summary ([`CertInfo`]) read with `x509-parser`.
//!
//! The PEM reader is deliberately strict, because its output ends up in a ConfigMap that
//! every sandbox pod trusts:
//! - every PEM block is counted (0-based, in file order) so that errors can name it;
//! - a block whose label is not `CERTIFICATE` (a `PRIVATE KEY`, a `CERTIFICATE REQUEST`,
//!   an `X509 CRL`, ...) is an error, never skipped: a private key must never be
//!   published in a ConfigMap;
//! - text outside blocks (RFC 7468 §5.2 "explanatory text", such as the `# Issuer:`
//!   comments of `ca-certificates.crt`) is allowed, but a marker line that does not start
//!   at column 0, a `BEGIN` without its `END`, or an `END` without a `BEGIN` is an error.
//!
//! Base64 decoding of each block is done by `rustls-pki-types`' `PemObject`.

use std::fmt::Write as _;

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{self, PemObject as _};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::BundleError;

/// Lowercase hex SHA-256 of `bytes` (64 characters), computed with `ring::digest`.
///
/// Used for certificate fingerprints (over the DER) and bundle hashes (over the PEM text).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// PEM-encode one DER certificate: `-----BEGIN CERTIFICATE-----`, the standard base64
/// alphabet with padding wrapped at 64 columns (RFC 7468 §2), `-----END CERTIFICATE-----`,
/// each line ending in `\n`.
///
/// The output of several calls can be concatenated into a bundle file.
pub fn encode_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    // base64 output is ASCII, so splitting the bytes at any offset keeps valid UTF-8.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Parse every PEM block of `bytes` as an X.509 certificate, in file order.
///
/// `source` names the input in errors (a file path, or `configmap/<ns>/<name>[<key>]`).
/// Because any non-certificate block is an error, the position of a certificate in the
/// returned vector is also its 0-based PEM block index.
///
/// Only the PEM layer is checked here (the DER is not parsed as X.509; see [`inspect`]).
///
/// # Errors
/// - [`BundleError::NoCertificates`]: the input is empty or only whitespace;
/// - [`BundleError::NotPem`]: there is content but no PEM block (binary DER is recognised
///   and the conversion command is suggested), a marker line is malformed or indented, a
///   block has no matching `END` line, or its base64 does not decode;
/// - [`BundleError::UnexpectedBlock`]: a block is labelled anything but `CERTIFICATE`
///   (e.g. `PRIVATE KEY`), with its index and label.
pub fn parse_pem_certificates(
    source: &str,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, BundleError> {
    let not_pem = |index: Option<usize>, detail: String| BundleError::NotPem {
        source: source.to_owned(),
        index,
        detail,
    };

    let mut certs = Vec::new();
    // The block being read: (index, label, byte offset of its BEGIN line, line number).
    let mut open: Option<(usize, String, usize, usize)> = None;
    let mut blocks = 0usize;
    let mut offset = 0usize;

    for (line_idx, raw_line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let line_no = line_idx + 1;
        let line_start = offset;
        offset += raw_line.len();
        let line = raw_line.trim_ascii_end();

        if let Some(rest) = line.strip_prefix(b"-----BEGIN ") {
            if let Some((index, label, _, begun)) = &open {
                return Err(not_pem(
                    Some(*index),
                    format!(
                        "line {line_no} starts a new block before the -----END {label}----- \
                         line of the block begun on line {begun}"
                    ),
                ));
            }
            let Some(label) = rest.strip_suffix(b"-----") else {
                return Err(not_pem(
                    Some(blocks),
                    format!("line {line_no} is a malformed BEGIN line (it must end in \"-----\")"),
                ));
            };
            open = Some((
                blocks,
                String::from_utf8_lossy(label).into_owned(),
                line_start,
                line_no,
            ));
            blocks += 1;
        } else if let Some(rest) = line.strip_prefix(b"-----END ") {
            let Some((index, label, start, _)) = open.take() else {
                return Err(not_pem(
                    None,
                    format!("line {line_no} is an END line without a BEGIN line before it"),
                ));
            };
            let end_label = rest.strip_suffix(b"-----").unwrap_or(rest);
            if end_label != label.as_bytes() {
                return Err(not_pem(
                    Some(index),
                    format!(
                        "line {line_no} ends the {label} block with \"{}\"; expected \
                         -----END {label}-----",
                        String::from_utf8_lossy(line)
                    ),
                ));
            }
            if label != "CERTIFICATE" {
                return Err(BundleError::UnexpectedBlock {
                    source: source.to_owned(),
                    index,
                    label,
                });
            }
            certs.push(decode_certificate_block(
                source,
                index,
                &bytes[start..offset],
            )?);
        } else {
            let indented = line.trim_ascii_start();
            if indented.starts_with(b"-----BEGIN ") || indented.starts_with(b"-----END ") {
                let index = open.as_ref().map_or(blocks, |(index, ..)| *index);
                return Err(not_pem(
                    Some(index),
                    format!(
                        "line {line_no} has an indented PEM marker; markers must start at column 0"
                    ),
                ));
            }
            // Otherwise: base64 inside a block (decoded below), or explanatory text outside.
        }
    }

    if let Some((index, label, _, begun)) = open {
        return Err(not_pem(
            Some(index),
            format!("the {label} block begun on line {begun} has no -----END {label}----- line"),
        ));
    }
    if blocks == 0 {
        if bytes.trim_ascii().is_empty() {
            return Err(BundleError::NoCertificates {
                source: source.to_owned(),
            });
        }
        let detail = if bytes.first() == Some(&0x30) {
            "this looks like binary DER, not PEM; convert it with \
             `openssl x509 -inform DER -in <file> -out <file>.pem`"
                .to_owned()
        } else {
            "no -----BEGIN CERTIFICATE----- line found".to_owned()
        };
        return Err(not_pem(None, detail));
    }
    Ok(certs)
}

/// Base64-decode one complete `CERTIFICATE` block (BEGIN line to END line) with
/// `rustls-pki-types`' `PemObject`.
fn decode_certificate_block(
    source: &str,
    index: usize,
    block: &[u8],
) -> Result<CertificateDer<'static>, BundleError> {
    let not_pem = |detail: String| BundleError::NotPem {
        source: source.to_owned(),
        index: Some(index),
        detail,
    };
    match CertificateDer::from_pem_slice(block) {
        Ok(der) if !der.is_empty() => Ok(der),
        Ok(_) => Err(not_pem("the CERTIFICATE block is empty".to_owned())),
        Err(pem::Error::NoItemsFound) => Err(not_pem(
            "the CERTIFICATE block could not be decoded".to_owned(),
        )),
        Err(e) => Err(not_pem(format!(
            "the CERTIFICATE block does not decode: {e}"
        ))),
    }
}

/// A summary of one X.509 certificate, as read by `x509-parser`.
///
/// Names are RFC 4514 strings (most significant RDN last, e.g.
/// `CN=ISRG Root X1,O=Internet Security Research Group,C=US`); times are Unix seconds (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject distinguished name, RFC 4514.
    pub subject: String,
    /// Issuer distinguished name, RFC 4514.
    pub issuer: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// basicConstraints is present with `cA` TRUE.
    pub is_ca: bool,
    /// basicConstraints is present and marked critical. RFC 5280 §4.2.1.9 requires it for
    /// CAs, and Python 3.13+ (`VERIFY_X509_STRICT`, cpython#107361; see RUNTIMES.md)
    /// rejects CA certificates without it.
    pub basic_constraints_critical: bool,
    /// keyUsage `keyCertSign`: `None` when the certificate has no keyUsage extension.
    pub key_cert_sign: Option<bool>,
    /// Subject and issuer are the same name (a root, or a self-signed leaf). This compares
    /// names only; it does not verify the signature (see [`verify_self_signed`]).
    pub self_issued: bool,
    /// Lowercase hex SHA-256 of the DER (the certificate's fingerprint).
    pub sha256: String,
    /// Serial number, lowercase hex without separators (as `openssl x509 -serial`, in
    /// lowercase).
    pub serial: String,
}

impl CertInfo {
    /// `not_after` as an RFC 3339 UTC timestamp, e.g. `2035-06-04T11:04:38Z`.
    pub fn not_after_rfc3339(&self) -> String {
        rfc3339(self.not_after)
    }

    /// `not_before` as an RFC 3339 UTC timestamp.
    pub fn not_before_rfc3339(&self) -> String {
        rfc3339(self.not_before)
    }
}

/// The DER given to [`inspect`] or [`verify_self_signed`] is not a usable X.509 certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct CertParseError {
    /// What is wrong, from `x509-parser` (or "trailing bytes after the certificate").
    pub detail: String,
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CertParseError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CertParseError {
        detail: format!("not a valid X.509 certificate: {e}"),
    })?;
    if !rest.is_empty() {
        return Err(CertParseError {
            detail: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    Ok(cert)
}

/// Summarise one DER certificate.
///
/// # Errors
/// [`CertParseError`] when the DER is not one X.509 certificate (including trailing
/// bytes after it), or when its basicConstraints or keyUsage extension is malformed or
/// duplicated.
pub fn inspect(der: &[u8]) -> Result<CertInfo, CertParseError> {
    let cert = parse_cert(der)?;
    let basic = cert.basic_constraints().map_err(|e| CertParseError {
        detail: format!("invalid basicConstraints extension: {e}"),
    })?;
    let key_usage = cert.key_usage().map_err(|e| CertParseError {
        detail: format!("invalid keyUsage extension: {e}"),
    })?;
    let subject = rfc4514(cert.subject());
    let issuer = rfc4514(cert.issuer());
    let self_issued = cert.subject().as_raw() == cert.issuer().as_raw() || subject == issuer;
    Ok(CertInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: basic.as_ref().is_some_and(|b| b.value.ca),
        basic_constraints_critical: basic.as_ref().is_some_and(|b| b.critical),
        key_cert_sign: key_usage.map(|ku| ku.value.key_cert_sign()),
        self_issued,
        sha256: sha256_hex(der),
        serial: hex::encode(cert.raw_serial()),
        subject,
        issuer,
    })
}

/// Check that `der` is really self-signed: subject equals issuer and the certificate's own
/// public key verifies its signature (via `x509-parser`'s ring-backed `verify_signature`).
///
/// This is the check behind pinning a server's self-signed certificate (DESIGN.md,
/// `spec.trust.pinServerCertificate`).
///
/// # Errors
/// A human-readable reason: not parseable, issuer differs from subject, or the signature
/// does not verify (or uses an algorithm ring does not support).
pub fn verify_self_signed(der: &[u8]) -> Result<(), String> {
    let cert = parse_cert(der).map_err(|e| e.detail)?;
    let subject = rfc4514(cert.subject());
    let issuer = rfc4514(cert.issuer());
    if cert.subject().as_raw() != cert.issuer().as_raw() && subject != issuer {
        return Err(format!(
            "it was issued by \"{issuer}\", not by itself (\"{subject}\")"
        ));
    }
    cert.verify_signature(None)
        .map_err(|e| format!("its signature does not verify with its own key: {e}"))
}

/// Format a distinguished name as RFC 4514: RDNs most-significant last, joined by `,`;
/// multi-valued RDNs joined by `+`; well-known attribute types by short name, others as
/// dotted OIDs; string values escaped, non-string values as `#` + hex of their DER.
pub(crate) fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let ty = attribute_short_name(&oid).map_or(oid, str::to_owned);
                    format!("{ty}={}", attribute_value(atv.attr_value()))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 4514 §3 short names, plus the ones OpenSSL prints for common extra attributes.
fn attribute_short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "2.5.4.5" => "serialNumber",
        "2.5.4.4" => "SN",
        "2.5.4.42" => "GN",
        "2.5.4.12" => "title",
        "2.5.4.97" => "organizationIdentifier",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

fn attribute_value(value: &x509_parser::asn1_rs::Any<'_>) -> String {
    use x509_parser::asn1_rs::Tag;
    let data = value.data;
    let text: Option<String> = match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        // TeletexString is in practice Latin-1.
        Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString if data.len().is_multiple_of(2) => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString if data.len().is_multiple_of(4) => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    };
    match text {
        Some(s) => escape_rfc4514(&s),
        None => {
            use x509_parser::asn1_rs::ToDer as _;
            let der = value.to_der_vec().unwrap_or_else(|_| data.to_vec());
            format!("#{}", hex::encode(der))
        }
    }
}

/// Escape an attribute value per RFC 4514 §2.4.
fn escape_rfc4514(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02x}");
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Unix seconds → RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SSZ`), proleptic Gregorian calendar.
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
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_known_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn encode_pem_wraps_at_64_columns_and_round_trips() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pem = encode_pem(&der);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN CERTIFICATE-----"));
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        let body = &lines[1..lines.len() - 1];
        assert!(body[..body.len() - 1].iter().all(|l| l.len() == 64));
        assert!(body.last().is_some_and(|l| !l.is_empty() && l.len() <= 64));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        let parsed = parse_pem_certificates("t", pem.as_bytes()).expect("round trip");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].as_ref(), der.as_slice());
    }

    #[test]
    fn encode_pem_exact_multiple_of_48_bytes_has_no_empty_line() {
        let pem = encode_pem(&[7u8; 96]);
        assert!(!pem.contains("\n\n"));
        assert_eq!(pem.lines().count(), 4);
    }

    #[test]
    fn explanatory_text_and_crlf_are_accepted() {
        let a = encode_pem(&[1, 2, 3]).replace('\n', "\r\n");
        let b = encode_pem(&[4, 5, 6]);
        let text = format!("# Issuer: CN=A\r\n{a}\n# Issuer: CN=B\n{b}trailing words\n");
        let certs = parse_pem_certificates("bundle.crt", text.as_bytes()).expect("parses");
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[1].as_ref(), &[4, 5, 6]);
    }

    #[test]
    fn empty_input_is_no_certificates() {
        let err = parse_pem_certificates("empty.pem", b" \n\t\n").expect_err("empty");
        assert!(matches!(err, BundleError::NoCertificates { ref source } if source == "empty.pem"));
        assert_eq!(err.reason(), "NoCertificates");
    }

    #[test]
    fn der_input_suggests_conversion() {
        let err = parse_pem_certificates("ca.der", &[0x30, 0x82, 0x01, 0x00]).expect_err("der");
        let msg = err.to_string();
        assert!(msg.starts_with("ca.der: "), "{msg}");
        assert!(msg.contains("openssl x509 -inform DER"), "{msg}");
        assert!(matches!(err, BundleError::NotPem { index: None, .. }));
    }

    #[test]
    fn non_certificate_block_is_named_with_index_and_label() {
        let key = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let text = format!("{}{key}", encode_pem(&[1, 2, 3]));
        let err = parse_pem_certificates("mixed.pem", text.as_bytes()).expect_err("key");
        match &err {
            BundleError::UnexpectedBlock {
                source,
                index,
                label,
            } => {
                assert_eq!(source, "mixed.pem");
                assert_eq!(*index, 1);
                assert_eq!(label, "EC PRIVATE KEY");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("PEM block 1"), "{err}");
        assert!(err.to_string().contains("private key"), "{err}");
    }

    #[test]
    fn unknown_labels_are_not_skipped() {
        // PemObject on its own would silently skip this label.
        let text =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = parse_pem_certificates("k.pem", text.as_bytes()).expect_err("skipped");
        assert!(matches!(err, BundleError::UnexpectedBlock { index: 0, .. }));
    }

    #[test]
    fn structural_errors_name_the_block() {
        let missing_end = "-----BEGIN CERTIFICATE-----\nAAAA\n";
        let err = parse_pem_certificates("a.pem", missing_end.as_bytes()).expect_err("no end");
        assert!(
            matches!(err, BundleError::NotPem { index: Some(0), .. }),
            "{err}"
        );

        let two = format!(
            "{}-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            encode_pem(&[1])
        );
        let err = parse_pem_certificates("b.pem", two.as_bytes()).expect_err("bad base64");
        assert!(
            matches!(err, BundleError::NotPem { index: Some(1), .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("b.pem: PEM block 1"), "{err}");

        let indented = format!("  {}", encode_pem(&[1]));
        let err = parse_pem_certificates("c.pem", indented.as_bytes()).expect_err("indented");
        assert!(err.to_string().contains("column 0"), "{err}");

        let mismatched = "-----BEGIN CERTIFICATE-----\nAQ==\n-----END X509 CRL-----\n";
        let err = parse_pem_certificates("d.pem", mismatched.as_bytes()).expect_err("mismatch");
        assert!(
            matches!(err, BundleError::NotPem { index: Some(0), .. }),
            "{err}"
        );

        let empty = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
        let err = parse_pem_certificates("e.pem", empty.as_bytes()).expect_err("empty block");
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(2_000_000_000), "2033-05-18T03:33:20Z");
        assert_eq!(rfc3339(2_064_000_000), "2035-05-28T21:20:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn rfc4514_escaping() {
        assert_eq!(escape_rfc4514("Acme, Inc."), "Acme\\, Inc.");
        assert_eq!(escape_rfc4514(" #lead"), "\\ #lead");
        assert_eq!(escape_rfc4514("#x"), "\\#x");
        assert_eq!(escape_rfc4514("trail "), "trail\\ ");
        assert_eq!(escape_rfc4514("a+b=c"), "a\\+b=c");
        assert_eq!(escape_rfc4514("a,b"), "a\\,b");
        assert_eq!(escape_rfc4514(" x "), "\\ x\\ ");
    }

    #[test]
    fn inspect_reads_a_mozilla_root() {
        let isrg = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter_map(|c| inspect(c).ok())
            .find(|i| i.subject.contains("ISRG Root X1"))
            .expect("ISRG Root X1 is in the Mozilla program");
        assert_eq!(
            isrg.subject,
            "CN=ISRG Root X1,O=Internet Security Research Group,C=US"
        );
        assert!(isrg.is_ca && isrg.basic_constraints_critical && isrg.self_issued);
        assert_eq!(isrg.key_cert_sign, Some(true));
        assert_eq!(isrg.not_before_rfc3339(), "2015-06-04T11:04:38Z");
        assert_eq!(isrg.not_after_rfc3339(), "2035-06-04T11:04:38Z");
    }

    #[test]
    fn inspect_rejects_garbage_and_trailing_bytes() {
        assert!(inspect(&[1, 2, 3]).is_err());
        let mut der = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].to_vec();
        der.push(0);
        let err = inspect(&der).expect_err("trailing");
        assert!(err.detail.contains("trailing"), "{err}");
    }

    #[test]
    fn every_mozilla_root_inspects_and_is_self_issued() {
        for root in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
            let info = inspect(root).expect("root parses");
            assert!(info.self_issued, "{}", info.subject);
        }
        // ISRG Root X1 is RSA with SHA-256, which ring verifies.
        let isrg = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .find(|c| inspect(c).is_ok_and(|i| i.subject.starts_with("CN=ISRG Root X1,")))
            .expect("ISRG");
        verify_self_signed(isrg).expect("ISRG Root X1 is self-signed");
    }
}
