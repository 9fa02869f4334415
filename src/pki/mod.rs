//! Trust bundles: strict PEM parsing, certificate inspection and fingerprints, and the
//! assembly of the two files every sandbox pod mounts (RUNTIMES.md, "Ship two files"):
//!
//! - `ca.pem` ([`CA_FILE`]): the private CAs only, for add-style variables
//!   (NODE_EXTRA_CA_CERTS, DENO_CERT);
//! - `ca-bundle.pem` ([`BUNDLE_FILE`]): the Mozilla root program (the `webpki-root-certs`
//!   crate) plus the private CAs, for replace-style variables (SSL_CERT_FILE,
//!   REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, ...).
//!
//! Submodules:
//! - [`pem`]: `sha256_hex`, `encode_pem`, `parse_pem_certificates`, `inspect` / [`CertInfo`];
//! - [`bundle`]: [`assemble`], [`assemble_with_pinned`], [`system_roots`], [`write_dir`];
//! - [`cli`]: the `mcptrust bundle` subcommand ([`BundleArgs`], [`cli::run`]);
//! - [`issue`](mod@issue): the mTLS federation CA ([`CertificateAuthority`]), leaf
//!   issuance ([`issue()`], [`LeafRequest`]), SANs and durations from the `McpServer` spec
//!   ([`server_sans`], [`server_request`], [`client_request`], [`durations`]) and
//!   cert-manager's renewal decision ([`decide`], [`Decision`], [`IssueReason`]).
//!
//! Bundle errors are one [`BundleError`] and issuance errors one [`IssueError`]; both have
//! a `reason()`, a stable CamelCase word for condition reasons and metric labels.

pub mod bundle;
pub mod cli;
pub mod issue;
pub mod pem;

use std::fmt;

pub use bundle::{
    BUNDLE_FILE, BundleOptions, CA_FILE, CaInput, TRUSTSTORE_FILE, TRUSTSTORE_PASSWORD,
    TrustBundle, assemble, assemble_with_pinned, system_roots, truststore, unix_now, write_dir,
};
pub use cli::BundleArgs;
pub use issue::{
    CA_CRT, CertificateAuthority, DEFAULT_DURATION_SECS, Decision, EndpointHost, IssueError,
    IssueReason, IssuedCertificate, LeafRequest, SECRET_TYPE, TLS_CRT, TLS_KEY, Usage,
    client_request, decide, decoded_secret_data, durations, endpoint_host, issue, parse_duration,
    renewal_time, secret_data, server_request, server_sans,
};
pub use pem::{
    CertInfo, CertParseError, encode_pem, inspect, parse_pem_certificates, sha256_hex,
    verify_self_signed,
};

/// Why a CA source could not go into a trust bundle.
///
/// Every variant names its `source` (a file path, or `configmap/<ns>/<name>[<key>]`: the
/// [`CaInput::source`] given by the caller) and, where there is one, the 0-based PEM block
/// `index` within it (every `-----BEGIN` line counts, whatever its label). The `Display`
/// text is a sentence that says what to do, e.g.
/// `corp.pem: PEM block 1 is a certificate for "CN=api.example.com", not a CA
/// (basicConstraints CA:TRUE missing); add the issuing CA instead`.
///
/// (`Display` and `Error` are written by hand rather than derived with thiserror, because
/// thiserror treats a field named `source` as the error's cause.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// The input is not PEM: no PEM block at all (`index` is `None`; binary DER is
    /// recognised), a malformed or indented marker line, a block without its `END` line, or
    /// base64 that does not decode.
    NotPem {
        /// The input's name.
        source: String,
        /// The block at fault, when the fault is inside one.
        index: Option<usize>,
        /// What is wrong, with a line number where there is one.
        detail: String,
    },
    /// The input is empty (or only whitespace).
    NoCertificates {
        /// The input's name.
        source: String,
    },
    /// A PEM block is labelled something other than `CERTIFICATE` (a private key, a CSR,
    /// a CRL, ...). Nothing is skipped silently: a private key must never be published in a
    /// ConfigMap.
    UnexpectedBlock {
        /// The input's name.
        source: String,
        /// The block's 0-based index.
        index: usize,
        /// The block's label, e.g. `PRIVATE KEY`.
        label: String,
    },
    /// A `CERTIFICATE` block's DER is not an X.509 certificate.
    InvalidCertificate {
        /// The input's name.
        source: String,
        /// The block's 0-based index.
        index: usize,
        /// The parser's complaint.
        detail: String,
    },
    /// A private CA input holds a certificate without basicConstraints CA:TRUE (a leaf,
    /// including a self-signed leaf; those can only be pinned, see
    /// [`assemble_with_pinned`]).
    NotACa {
        /// The input's name.
        source: String,
        /// The block's 0-based index.
        index: usize,
        /// The certificate's subject (RFC 4514).
        subject: String,
    },
    /// A certificate given to pin is not really self-signed (issuer differs from subject,
    /// or its own key does not verify its signature).
    NotSelfSigned {
        /// The input's name.
        source: String,
        /// The block's 0-based index.
        index: usize,
        /// The certificate's subject (RFC 4514).
        subject: String,
        /// Why it is not self-signed.
        detail: String,
    },
    /// The bundle would hold no certificate: system roots are excluded and no CA was given.
    /// An empty `ca-bundle.pem` behind SSL_CERT_FILE would make every TLS connection fail.
    EmptyBundle,
    /// The PKCS#12 truststore (`ca-bundle.p12`) could not be built from certificates that
    /// were accepted for the PEM files.
    Truststore {
        /// The `p12-keystore` crate's complaint.
        detail: String,
    },
}

impl BundleError {
    /// A stable CamelCase reason for status conditions, events and metric labels:
    /// `InvalidPem`, `NoCertificates`, `UnexpectedPemBlock`, `InvalidCertificate`,
    /// `NotACertificateAuthority`, `NotSelfSigned`, `EmptyTrustBundle` or `TruststoreFailed`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotPem { .. } => "InvalidPem",
            Self::NoCertificates { .. } => "NoCertificates",
            Self::UnexpectedBlock { .. } => "UnexpectedPemBlock",
            Self::InvalidCertificate { .. } => "InvalidCertificate",
            Self::NotACa { .. } => "NotACertificateAuthority",
            Self::NotSelfSigned { .. } => "NotSelfSigned",
            Self::EmptyBundle => "EmptyTrustBundle",
            Self::Truststore { .. } => "TruststoreFailed",
        }
    }

    /// The input the error is about, if any.
    pub fn source_name(&self) -> Option<&str> {
        match self {
            Self::NotPem { source, .. }
            | Self::NoCertificates { source }
            | Self::UnexpectedBlock { source, .. }
            | Self::InvalidCertificate { source, .. }
            | Self::NotACa { source, .. }
            | Self::NotSelfSigned { source, .. } => Some(source),
            Self::EmptyBundle | Self::Truststore { .. } => None,
        }
    }
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPem {
                source,
                index: Some(index),
                detail,
            } => write!(f, "{source}: PEM block {index} is not valid PEM: {detail}"),
            Self::NotPem {
                source,
                index: None,
                detail,
            } => write!(f, "{source}: not a PEM file: {detail}"),
            Self::NoCertificates { source } => write!(
                f,
                "{source}: no certificate found (the input is empty); give a PEM file with at \
                 least one -----BEGIN CERTIFICATE----- block"
            ),
            Self::UnexpectedBlock {
                source,
                index,
                label,
            } => {
                write!(
                    f,
                    "{source}: PEM block {index} is a \"{label}\" block, not a CERTIFICATE; only \
                     CA certificates may go into a trust bundle"
                )?;
                if label.contains("PRIVATE KEY") {
                    write!(f, " (a private key must never be published in a ConfigMap)")?;
                }
                write!(f, "; remove the block")
            }
            Self::InvalidCertificate {
                source,
                index,
                detail,
            } => write!(
                f,
                "{source}: PEM block {index} is not a valid X.509 certificate: {detail}"
            ),
            Self::NotACa {
                source,
                index,
                subject,
            } => write!(
                f,
                "{source}: PEM block {index} is a certificate for \"{subject}\", not a CA \
                 (basicConstraints CA:TRUE missing); add the issuing CA instead"
            ),
            Self::NotSelfSigned {
                source,
                index,
                subject,
                detail,
            } => write!(
                f,
                "{source}: PEM block {index} (\"{subject}\") cannot be pinned because it is not \
                 self-signed: {detail}; trust its issuing CA as a trust source instead"
            ),
            Self::EmptyBundle => write!(
                f,
                "the trust bundle would be empty: system roots are excluded and no CA source \
                 was given; add a CA source or include the system roots"
            ),
            Self::Truststore { detail } => write!(
                f,
                "cannot build the PKCS#12 truststore ca-bundle.p12: {detail}"
            ),
        }
    }
}

impl std::error::Error for BundleError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_stable_camel_case() {
        let errors = [
            BundleError::NotPem {
                source: "s".into(),
                index: None,
                detail: "d".into(),
            },
            BundleError::NoCertificates { source: "s".into() },
            BundleError::UnexpectedBlock {
                source: "s".into(),
                index: 0,
                label: "PRIVATE KEY".into(),
            },
            BundleError::InvalidCertificate {
                source: "s".into(),
                index: 0,
                detail: "d".into(),
            },
            BundleError::NotACa {
                source: "s".into(),
                index: 0,
                subject: "CN=x".into(),
            },
            BundleError::NotSelfSigned {
                source: "s".into(),
                index: 0,
                subject: "CN=x".into(),
                detail: "d".into(),
            },
            BundleError::EmptyBundle,
        ];
        let reasons: Vec<&str> = errors.iter().map(BundleError::reason).collect();
        assert_eq!(
            reasons,
            [
                "InvalidPem",
                "NoCertificates",
                "UnexpectedPemBlock",
                "InvalidCertificate",
                "NotACertificateAuthority",
                "NotSelfSigned",
                "EmptyTrustBundle"
            ]
        );
        for e in &errors[..6] {
            assert_eq!(e.source_name(), Some("s"));
            assert!(e.to_string().starts_with("s: "), "{e}");
        }
    }

    #[test]
    fn not_a_ca_message_is_actionable() {
        let e = BundleError::NotACa {
            source: "corp.pem".into(),
            index: 1,
            subject: "CN=api.example.com".into(),
        };
        assert_eq!(
            e.to_string(),
            "corp.pem: PEM block 1 is a certificate for \"CN=api.example.com\", not a CA \
             (basicConstraints CA:TRUE missing); add the issuing CA instead"
        );
    }

    #[test]
    fn file_names_match_the_injector() {
        assert_eq!(CA_FILE, crate::inject::CA_FILE);
        assert_eq!(BUNDLE_FILE, crate::inject::BUNDLE_FILE);
        assert_eq!(TRUSTSTORE_FILE, crate::inject::TRUSTSTORE_FILE);
        assert_eq!(TRUSTSTORE_PASSWORD, crate::inject::TRUSTSTORE_PASSWORD);
    }
}
