//! Certificate issuance for mTLS federation (seed 001) and cert-manager's renewal decision,
//! as pure functions: the controller reads Secrets, calls [`decide`], and writes what
//! [`issue`] returns (via [`secret_data`]); nothing here talks to the API server or reads
//! the clock. Every time is **Unix seconds (UTC)** and "now" is always a parameter.
//!
//! - [`CertificateAuthority`]: the federation CA, ECDSA P-256, generated
//!   ([`CertificateAuthority::generate`]) or loaded ([`CertificateAuthority::from_pem`]).
//! - [`issue`]: a server or client leaf ([`LeafRequest`], [`Usage`]) signed by the CA.
//! - [`server_sans`], [`server_request`], [`client_request`]: what to ask for, from the
//!   `McpServer` spec. A client dialling `127.0.0.1` needs an IP SAN: `CN=localhost` is
//!   not enough (seed 001's lesson), so an IP-literal endpoint becomes an IP SAN.
//! - [`parse_duration`], [`durations`]: `spec.mtls.duration` / `renewBefore` as Go
//!   durations (via [`kube::core::Duration`]), with cert-manager's defaults: `2160h`, and a
//!   third of the duration before `notAfter`.
//! - [`decide`] (in [`renewal`], re-exported here): keep the Secret's certificate, or
//!   (re)issue it and why ([`IssueReason`], named after cert-manager's Certificate
//!   `Issuing` condition reasons).
//!
//! # The certificate profile
//!
//! Python 3.13 turns on `VERIFY_X509_STRICT` by default (cpython#107361; RUNTIMES.md,
//! "Private CA profile"), which rejects certificates that OpenSSL's lax mode accepts. So:
//!
//! - the CA has basicConstraints **critical** `CA:TRUE, pathlen:0`, keyUsage (critical)
//!   `digitalSignature, keyCertSign, cRLSign`, a SubjectKeyIdentifier and an
//!   AuthorityKeyIdentifier (equal to its SKI), and is backdated one hour for clock skew;
//! - leaves have basicConstraints critical `CA:FALSE`, keyUsage critical
//!   `digitalSignature`, extendedKeyUsage `serverAuth` or `clientAuth`, an
//!   AuthorityKeyIdentifier equal to the CA's SKI, a SubjectKeyIdentifier, exactly the
//!   requested SANs, a random 126-bit serial, and are backdated five minutes.
//!
//! All keys are ECDSA P-256 in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), which Python,
//! Go, Node.js, Java and rustls all load.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr as _;

use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::SecureRandom as _;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer as _, X509Certificate};
use x509_parser::time::ASN1Time;

use super::pem::{CertInfo, encode_pem, inspect, parse_pem_certificates, rfc3339, sha256_hex};

pub mod renewal;

pub use renewal::{Decision, IssueReason, decide, renewal_time};

mod duration;
pub use duration::{durations, parse_duration};

mod request;
pub use request::{EndpointHost, client_request, endpoint_host, server_request, server_sans};

mod error;
pub use error::IssueError;

/// Key of the certificate (PEM, the leaf) in a `kubernetes.io/tls` Secret.
pub const TLS_CRT: &str = "tls.crt";
/// Key of the private key (PKCS#8 PEM) in a `kubernetes.io/tls` Secret.
pub const TLS_KEY: &str = "tls.key";
/// Key of the issuing CA's certificate (PEM) in the Secret, as cert-manager writes it.
pub const CA_CRT: &str = "ca.crt";
/// The Secret `type` for [`secret_data`]'s output.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";

/// Default certificate lifetime: `2160h` (90 days), cert-manager's default `duration`.
pub const DEFAULT_DURATION_SECS: i64 = 2160 * 3600;
/// Shortest accepted `spec.mtls.duration`: `1h`, as cert-manager and the CRD's CEL rule.
pub const MIN_DURATION_SECS: i64 = 3600;
/// How far a leaf's `notBefore` is backdated from "now", for clock skew: 5 minutes.
pub const LEAF_BACKDATE_SECS: i64 = 300;
/// How far the CA's `notBefore` is backdated from "now", for clock skew: 1 hour.
pub const CA_BACKDATE_SECS: i64 = 3600;
/// The longest common name X.520 allows (`ub-common-name`), in characters.
pub const MAX_COMMON_NAME_CHARS: usize = 64;

fn generation(e: impl fmt::Display) -> IssueError {
    IssueError::Generation {
        detail: e.to_string(),
    }
}

/// Unix seconds → the `time::OffsetDateTime` rcgen wants (via x509-parser's `ASN1Time`).
fn asn1_time(unix: i64) -> Result<ASN1Time, IssueError> {
    ASN1Time::from_timestamp(unix).map_err(|_| IssueError::InvalidValidity {
        detail: format!("{unix} is not a representable Unix time"),
    })
}

/// A random, positive, 16-byte serial number (126 random bits; RFC 5280 §4.1.2.2 allows
/// up to 20 octets, CA/B Forum requires at least 64 random bits).
fn random_serial() -> Result<SerialNumber, IssueError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| generation("the system random number generator failed"))?;
    // Clear the sign bit (positive INTEGER) and set the next one (no leading zero byte,
    // so the DER is always exactly 16 octets).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok((&[], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )),
        Err(e) => Err(format!("not a valid X.509 certificate: {e}")),
    }
}

fn subject_key_identifier(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

/// The federation CA: a certificate and its private key, ready to sign leaves.
///
/// `cert_pem` and `key_pem` are what the controller stores (e.g. in a Secret) and gives
/// back to [`CertificateAuthority::from_pem`]; treat them as read-only (the signing key
/// is parsed once, at construction). `Debug` elides the private key.
pub struct CertificateAuthority {
    /// The CA certificate, one PEM `CERTIFICATE` block.
    pub cert_pem: String,
    /// The CA private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Secret material.
    pub key_pem: String,
    der: CertificateDer<'static>,
    info: CertInfo,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.info.subject)
            .field("not_after", &self.info.not_after)
            .field("sha256", &self.info.sha256)
            .field("key_pem", &"[elided]")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Generate a new self-signed federation CA with subject `CN=<common_name>`.
    ///
    /// The key is ECDSA P-256. Validity runs from `now_unix - 1h` (clock skew) to
    /// `now_unix + validity_secs` (Unix seconds). The profile is the strict one of the
    /// module docs: basicConstraints critical `CA:TRUE, pathlen:0`; keyUsage critical
    /// `digitalSignature, keyCertSign, cRLSign`; SubjectKeyIdentifier; AKI = SKI.
    ///
    /// # Errors
    /// [`IssueError::InvalidCommonName`] (empty or over 64 characters),
    /// [`IssueError::InvalidValidity`] (`validity_secs <= 0`, or a time X.509 cannot encode),
    /// [`IssueError::Generation`].
    pub fn generate(
        common_name: &str,
        now_unix: i64,
        validity_secs: i64,
    ) -> Result<Self, IssueError> {
        check_common_name(common_name)?;
        if validity_secs <= 0 {
            return Err(IssueError::InvalidValidity {
                detail: format!("the CA validity must be positive, got {validity_secs}s"),
            });
        }
        let not_after =
            now_unix
                .checked_add(validity_secs)
                .ok_or_else(|| IssueError::InvalidValidity {
                    detail: format!("{now_unix} + {validity_secs}s overflows"),
                })?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generation)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = asn1_time(now_unix.saturating_sub(CA_BACKDATE_SECS))?.to_datetime();
        params.not_after = asn1_time(not_after)?.to_datetime();
        let cert = params.self_signed(&key).map_err(generation)?;
        let key_pem = key.serialize_pem();
        Self::from_parts(cert.der().clone(), key, key_pem)
    }

    /// Load a CA from its certificate PEM (exactly one `CERTIFICATE` block) and its
    /// private key PEM (PKCS#8; ECDSA P-256/P-384, Ed25519 or RSA).
    ///
    /// Checks that the key belongs to the certificate and that the certificate is a CA
    /// whose leaves pass Python 3.13's strict X.509 verification: basicConstraints
    /// `CA:TRUE` and critical, keyUsage (if present) with `keyCertSign`, and a
    /// SubjectKeyIdentifier (copied into the leaves' AuthorityKeyIdentifier). The validity
    /// period is not checked here ([`issue`] does, at issuance time).
    ///
    /// # Errors
    /// [`IssueError::InvalidCaCertificate`], [`IssueError::InvalidCaKey`],
    /// [`IssueError::CaKeyMismatch`], [`IssueError::NotACa`],
    /// [`IssueError::NonStrictCaProfile`]. Messages never contain the key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IssueError> {
        let certs = parse_pem_certificates("CA certificate", cert_pem.as_bytes()).map_err(|e| {
            IssueError::InvalidCaCertificate {
                detail: e.to_string(),
            }
        })?;
        let der = match <[_; 1]>::try_from(certs) {
            Ok([der]) => der,
            Err(certs) => {
                return Err(IssueError::InvalidCaCertificate {
                    detail: format!(
                        "expected exactly one certificate, found {}; give the issuing CA only",
                        certs.len()
                    ),
                });
            }
        };
        let key = KeyPair::from_pem(key_pem).map_err(|_| IssueError::InvalidCaKey {
            detail: "not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----) of a \
                     supported type (ECDSA P-256/P-384, Ed25519, RSA)"
                .to_owned(),
        })?;
        Self::from_parts(der, key, key_pem.to_owned())
    }

    /// The one constructor behind [`Self::generate`] and [`Self::from_pem`]: validates the
    /// profile and the key, and builds the rcgen issuer from the certificate itself (so
    /// the leaves' AKI is the CA certificate's SKI, byte for byte).
    fn from_parts(
        der: CertificateDer<'static>,
        key: KeyPair,
        key_pem: String,
    ) -> Result<Self, IssueError> {
        let invalid = |detail: String| IssueError::InvalidCaCertificate { detail };
        let info = inspect(&der).map_err(|e| invalid(e.detail))?;
        let cert = parse_x509(&der).map_err(invalid)?;
        if !info.is_ca {
            return Err(IssueError::NotACa {
                subject: info.subject,
            });
        }
        let non_strict = |detail: &str| IssueError::NonStrictCaProfile {
            subject: info.subject.clone(),
            detail: detail.to_owned(),
        };
        if !info.basic_constraints_critical {
            return Err(non_strict("basicConstraints is not marked critical"));
        }
        if info.key_cert_sign == Some(false) {
            return Err(non_strict("keyUsage does not include keyCertSign"));
        }
        if subject_key_identifier(&cert).is_none() {
            return Err(non_strict(
                "it has no SubjectKeyIdentifier, so its leaves cannot carry a matching \
                 AuthorityKeyIdentifier",
            ));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(IssueError::CaKeyMismatch {
                subject: info.subject,
            });
        }
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            cert_pem: encode_pem(&der),
            key_pem,
            der,
            info,
            issuer,
        })
    }

    /// The CA certificate's DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The CA certificate's summary (subject, validity, fingerprint, ...).
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// The CA certificate's subject, RFC 4514 (e.g. `CN=mcptrust federation CA`).
    pub fn subject(&self) -> &str {
        &self.info.subject
    }

    /// The CA certificate's `notBefore`, Unix seconds.
    pub fn not_before(&self) -> i64 {
        self.info.not_before
    }

    /// The CA certificate's `notAfter`, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.info.not_after
    }

    /// Lowercase hex SHA-256 of the CA certificate's DER (its fingerprint).
    pub fn sha256(&self) -> String {
        self.info.sha256.clone()
    }
}

/// What a leaf certificate is for: its extendedKeyUsage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Usage {
    /// TLS server (`serverAuth`, 1.3.6.1.5.5.7.3.1).
    Server,
    /// TLS client (`clientAuth`, 1.3.6.1.5.5.7.3.2).
    Client,
}

impl Usage {
    /// The extendedKeyUsage name: `serverAuth` or `clientAuth`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "serverAuth",
            Self::Client => "clientAuth",
        }
    }
}

/// What to issue. SANs are written exactly as given (order included); [`decide`] compares
/// them as case-insensitive sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRequest {
    /// Subject `CN`, 1 to 64 characters. Informational only: clients verify SANs.
    pub common_name: String,
    /// DNS SANs (a leading `*.` wildcard label is allowed).
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// serverAuth or clientAuth.
    pub usage: Usage,
    /// Lifetime in seconds, counted from "now" (the `notBefore` backdating of
    /// [`LEAF_BACKDATE_SECS`] comes on top).
    pub duration_secs: i64,
}

/// A freshly issued leaf certificate and its key. `Debug` elides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The leaf certificate, one PEM block (`tls.crt`).
    pub cert_pem: String,
    /// The leaf's private key, PKCS#8 PEM (`tls.key`). Secret material.
    pub key_pem: String,
    /// The issuing CA's certificate, PEM (`ca.crt`).
    pub ca_pem: String,
    /// `notBefore`, Unix seconds (`now - 5 min`).
    pub not_before: i64,
    /// `notAfter`, Unix seconds (`now + duration`).
    pub not_after: i64,
    /// Lowercase hex SHA-256 of the leaf's DER.
    pub sha256: String,
    /// The serial number, lowercase hex without separators (32 digits).
    pub serial_hex: String,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("sha256", &self.sha256)
            .field("serial_hex", &self.serial_hex)
            .field("key_pem", &"[elided]")
            .finish_non_exhaustive()
    }
}

fn check_common_name(cn: &str) -> Result<(), IssueError> {
    let detail = if cn.trim().is_empty() {
        "it is empty"
    } else if cn.chars().count() > MAX_COMMON_NAME_CHARS {
        "it is longer than 64 characters (X.520 ub-common-name)"
    } else if cn.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(IssueError::InvalidCommonName {
        common_name: cn.to_owned(),
        detail: detail.to_owned(),
    })
}

/// Why `name` is not a DNS name usable in a dNSName SAN, or `None` if it is.
///
/// Accepted: 1 to 253 ASCII characters; labels of letters, digits, `-` and `_`, 1 to 63
/// characters, not starting or ending with `-`; optionally a leading `*.` wildcard label.
fn dns_name_problem(name: &str, allow_wildcard: bool) -> Option<String> {
    let body = match name.strip_prefix("*.") {
        Some(rest) if allow_wildcard => rest,
        Some(_) => return Some("wildcards are not allowed here".to_owned()),
        None => name,
    };
    if name.is_empty() {
        return Some("it is empty".to_owned());
    }
    if name.len() > 253 {
        return Some("it is longer than 253 characters".to_owned());
    }
    if name.ends_with('.') {
        return Some("remove the trailing dot".to_owned());
    }
    if IpAddr::from_str(name).is_ok() {
        return Some("it is an IP address; put it in ipAddresses".to_owned());
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Some("it has an empty label".to_owned());
        }
        if label.len() > 63 {
            return Some(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Some(format!(
                "{c:?} is not allowed (letters, digits, '-' and '_' only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("label {label:?} starts or ends with '-'"));
        }
    }
    None
}

/// Issue a leaf certificate for `req`, signed by `ca`, at time `now_unix` (Unix seconds).
///
/// The profile is the strict one of the module docs: ECDSA P-256 key, random 126-bit
/// serial, `CN=<common_name>`, SANs exactly as requested (DNS names first, then IPs),
/// extendedKeyUsage `serverAuth` ([`Usage::Server`]) or `clientAuth` ([`Usage::Client`]),
/// keyUsage critical `digitalSignature`, basicConstraints critical `CA:FALSE`,
/// AuthorityKeyIdentifier = the CA's SKI, validity `now - 5 min ..= now + duration_secs`.
///
/// `notAfter` is not capped at the CA's `notAfter`: the controller rotates the CA well
/// before that.
///
/// # Errors
/// [`IssueError::InvalidCommonName`], [`IssueError::InvalidDnsName`],
/// [`IssueError::NoSubjectAltNames`] (a server certificate needs at least one SAN),
/// [`IssueError::InvalidValidity`] (`duration_secs <= 0`), [`IssueError::CaNotValid`]
/// (the CA is expired or not yet valid at `now_unix`), [`IssueError::Generation`].
pub fn issue(
    ca: &CertificateAuthority,
    req: &LeafRequest,
    now_unix: i64,
) -> Result<IssuedCertificate, IssueError> {
    check_common_name(&req.common_name)?;
    for name in &req.dns_names {
        if let Some(detail) = dns_name_problem(name, true) {
            return Err(IssueError::InvalidDnsName {
                name: name.clone(),
                detail,
            });
        }
    }
    if req.usage == Usage::Server && req.dns_names.is_empty() && req.ip_addresses.is_empty() {
        return Err(IssueError::NoSubjectAltNames);
    }
    if req.duration_secs <= 0 {
        return Err(IssueError::InvalidValidity {
            detail: format!(
                "the certificate duration must be positive, got {}s",
                req.duration_secs
            ),
        });
    }
    if now_unix < ca.not_before() || now_unix >= ca.not_after() {
        return Err(IssueError::CaNotValid {
            subject: ca.info.subject.clone(),
            now: rfc3339(now_unix),
            not_before: rfc3339(ca.not_before()),
            not_after: rfc3339(ca.not_after()),
        });
    }
    let not_after =
        now_unix
            .checked_add(req.duration_secs)
            .ok_or_else(|| IssueError::InvalidValidity {
                detail: format!("{now_unix} + {}s overflows", req.duration_secs),
            })?;

    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, req.common_name.as_str());
    let mut sans = Vec::with_capacity(req.dns_names.len() + req.ip_addresses.len());
    for name in &req.dns_names {
        let ia5 =
            name.as_str()
                .try_into()
                .map_err(|e: rcgen::Error| IssueError::InvalidDnsName {
                    name: name.clone(),
                    detail: e.to_string(),
                })?;
        sans.push(SanType::DnsName(ia5));
    }
    sans.extend(req.ip_addresses.iter().copied().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match req.usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = asn1_time(now_unix.saturating_sub(LEAF_BACKDATE_SECS))?.to_datetime();
    params.not_after = asn1_time(not_after)?.to_datetime();

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generation)?;
    let cert = params.signed_by(&key, &ca.issuer).map_err(generation)?;
    let der = cert.der();
    let parsed = parse_x509(der).map_err(generation)?;
    Ok(IssuedCertificate {
        cert_pem: encode_pem(der),
        key_pem: key.serialize_pem(),
        ca_pem: ca.cert_pem.clone(),
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
        sha256: sha256_hex(der),
        serial_hex: hex::encode(parsed.raw_serial()),
    })
}

/// The data of a `kubernetes.io/tls` Secret ([`SECRET_TYPE`]) holding `issued`:
/// `tls.crt` (the leaf), `tls.key` (its PKCS#8 key) and `ca.crt` (the CA), as
/// cert-manager lays it out. Ready for `Secret.data`.
pub fn secret_data(issued: &IssuedCertificate) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        (
            TLS_CRT.to_owned(),
            ByteString(issued.cert_pem.as_bytes().to_vec()),
        ),
        (
            TLS_KEY.to_owned(),
            ByteString(issued.key_pem.as_bytes().to_vec()),
        ),
        (
            CA_CRT.to_owned(),
            ByteString(issued.ca_pem.as_bytes().to_vec()),
        ),
    ])
}

/// `Secret.data` as plain bytes, the shape [`decide`] takes (`None` for `None`: the
/// Secret does not exist). `stringData` is write-only in the API, so it is not read.
pub fn decoded_secret_data(
    secret: Option<&k8s_openapi::api::core::v1::Secret>,
) -> Option<BTreeMap<String, Vec<u8>>> {
    secret.map(|s| {
        s.data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::request::cluster_service;
    use super::*;

    #[test]
    fn endpoint_host_parses_the_usual_shapes() {
        let dns = |s: &str| Some(EndpointHost::Dns(s.to_owned()));
        let ip = |s: &str| Some(EndpointHost::Ip(IpAddr::from_str(s).expect("ip")));
        assert_eq!(
            endpoint_host("https://github-mcp.agents.svc:8443/mcp/"),
            dns("github-mcp.agents.svc")
        );
        assert_eq!(endpoint_host("https://127.0.0.1:8443/"), ip("127.0.0.1"));
        assert_eq!(endpoint_host("https://[::1]:8443/"), ip("::1"));
        assert_eq!(endpoint_host("https://[fe80::1%25eth0]/"), ip("fe80::1"));
        assert_eq!(
            endpoint_host("https://MCP.Example.COM."),
            dns("mcp.example.com")
        );
        assert_eq!(
            endpoint_host("https://user:p@ss@host.example:1/x?y#z"),
            dns("host.example")
        );
        assert_eq!(endpoint_host("http://github-mcp:8080"), dns("github-mcp"));
        assert_eq!(endpoint_host("https://h?q=a/b"), dns("h"));
        for bad in [
            "github-mcp:8080",
            "https://",
            "https://:8443/",
            "https://[::1/",
            "https://[::1]x/",
            "https://h:port/",
            "https://::1:8443/",
            "https://bad_host!/",
            "1http://h/",
        ] {
            assert_eq!(endpoint_host(bad), None, "{bad}");
        }
    }

    #[test]
    fn dns_name_rules() {
        for ok in ["a", "github-mcp.agents.svc", "*.example.com", "x_y.example"] {
            assert_eq!(dns_name_problem(ok, true), None, "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a-.b",
            "a b",
            "example.com.",
            "10.0.0.1",
            "a.*.b",
            "é.example",
        ] {
            assert!(dns_name_problem(bad, true).is_some(), "{bad}");
        }
        assert!(dns_name_problem("*.example.com", false).is_some());
        assert!(dns_name_problem(&"a".repeat(64), true).is_some());
    }

    #[test]
    fn cluster_service_recognises_service_names_only() {
        assert_eq!(cluster_service("gh", "agents"), Some(("gh", "agents")));
        assert_eq!(
            cluster_service("gh.agents", "agents"),
            Some(("gh", "agents"))
        );
        assert_eq!(cluster_service("example.com", "agents"), None);
        assert_eq!(
            cluster_service("gh.other.svc", "agents"),
            Some(("gh", "other"))
        );
        assert_eq!(
            cluster_service("gh.other.svc.cluster.local", "agents"),
            Some(("gh", "other"))
        );
        assert_eq!(cluster_service("localhost", "agents"), None);
        assert_eq!(cluster_service("mcp.example.com", "agents"), None);
    }

    #[test]
    fn parse_duration_accepts_go_syntax() {
        assert_eq!(parse_duration("2160h"), Ok(7_776_000));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("1.5h"), Ok(5400));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("1500ms"), Ok(1));
        for bad in ["", "  ", "0", "0s", "500ms", "-1h", "10", "1d", "h", "abc"] {
            let err = parse_duration(bad).expect_err(bad);
            assert_eq!(err.reason(), "InvalidDuration", "{bad}: {err}");
        }
    }

    #[test]
    fn random_serials_are_positive_16_bytes_and_differ() {
        let a = random_serial().expect("serial").to_bytes();
        let b = random_serial().expect("serial").to_bytes();
        assert_eq!(a.len(), 16);
        assert!(a[0] & 0x80 == 0 && a[0] & 0x40 != 0);
        assert_ne!(a, b);
    }

    #[test]
    fn error_reasons_are_camel_case_and_messages_are_sentences() {
        let e = IssueError::RenewBeforeTooLong {
            renew_before_secs: 10,
            duration_secs: 5,
        };
        assert_eq!(e.reason(), "InvalidRenewBefore");
        assert!(e.to_string().contains("renewBefore"), "{e}");
        assert_eq!(IssueError::NoSubjectAltNames.reason(), "NoSubjectAltNames");
    }
}
