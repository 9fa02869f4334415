//! [`IssueError`]: why a certificate could not be issued, loaded or configured, with a
//! stable reason word for conditions, events and metric labels.

/// Why a certificate could not be issued, loaded or configured.
///
/// `Display` is a sentence naming the offending value and what to change; it never holds
/// private key material. [`IssueError::reason`] is a stable CamelCase word for status
/// conditions, events and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// A duration field is not a positive Go duration (e.g. `2160h`, `90m`, `1h30m`).
    #[error("{field} {value:?} is not a valid duration: {detail}")]
    InvalidDuration {
        /// The field, e.g. `spec.mtls.duration`.
        field: String,
        /// The value as written.
        value: String,
        /// What is wrong.
        detail: String,
    },
    /// `renewBefore` is not shorter than `duration` (cert-manager rejects this too).
    #[error(
        "spec.mtls.renewBefore ({renew_before_secs}s) must be shorter than spec.mtls.duration \
         ({duration_secs}s); cert-manager's default is a third of the duration, e.g. \
         duration: 2160h, renewBefore: 720h"
    )]
    RenewBeforeTooLong {
        /// `renewBefore` in seconds.
        renew_before_secs: i64,
        /// `duration` in seconds.
        duration_secs: i64,
    },
    /// A validity period is empty or negative, or a time is outside what X.509 can encode.
    #[error("invalid validity period: {detail}")]
    InvalidValidity {
        /// What is wrong.
        detail: String,
    },
    /// A DNS name given for a SAN is not a DNS name.
    #[error("{name:?} is not a valid DNS name for a subjectAltName: {detail}")]
    InvalidDnsName {
        /// The name as given.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// An `ipAddresses` entry is not an IPv4 or IPv6 address.
    #[error(
        "spec.mtls.server.ipAddresses entry {value:?} is not an IP address; use e.g. \
         127.0.0.1 or ::1"
    )]
    InvalidIpAddress {
        /// The value as given.
        value: String,
    },
    /// The common name is empty or longer than 64 characters.
    #[error("invalid common name {common_name:?}: {detail}")]
    InvalidCommonName {
        /// The common name as given.
        common_name: String,
        /// What is wrong.
        detail: String,
    },
    /// A server certificate was requested without any DNS or IP SAN: no client could
    /// verify it (hostname checks use SANs only, never the CN).
    #[error(
        "a server certificate needs at least one DNS name or IP address: set \
         spec.endpoint.url or spec.mtls.server.dnsNames / ipAddresses"
    )]
    NoSubjectAltNames,
    /// The CA certificate PEM is not exactly one parseable X.509 certificate.
    #[error("invalid CA certificate: {detail}")]
    InvalidCaCertificate {
        /// What is wrong.
        detail: String,
    },
    /// The CA private key is not a PKCS#8 PEM key rcgen can sign with.
    #[error("invalid CA private key: {detail}")]
    InvalidCaKey {
        /// What is wrong (never the key itself).
        detail: String,
    },
    /// The CA private key does not belong to the CA certificate.
    #[error("the CA private key does not match the public key of the CA certificate {subject:?}")]
    CaKeyMismatch {
        /// The CA certificate's subject (RFC 4514).
        subject: String,
    },
    /// The CA certificate lacks basicConstraints `CA:TRUE`.
    #[error("{subject:?} is not a CA certificate (basicConstraints CA:TRUE missing)")]
    NotACa {
        /// The certificate's subject (RFC 4514).
        subject: String,
    },
    /// The CA certificate is a CA, but leaves it signs would fail Python 3.13's strict
    /// X.509 verification (cpython#107361).
    #[error(
        "CA certificate {subject:?} would be rejected by Python 3.13+ strict X.509 \
         verification: {detail}"
    )]
    NonStrictCaProfile {
        /// The certificate's subject (RFC 4514).
        subject: String,
        /// What is missing.
        detail: String,
    },
    /// The CA has expired (or is not yet valid) at the issuance time.
    #[error(
        "the CA {subject:?} is not valid at {now}: it is valid from {not_before} to \
         {not_after}; rotate the CA"
    )]
    CaNotValid {
        /// The CA's subject (RFC 4514).
        subject: String,
        /// The issuance time, RFC 3339.
        now: String,
        /// The CA's `notBefore`, RFC 3339.
        not_before: String,
        /// The CA's `notAfter`, RFC 3339.
        not_after: String,
    },
    /// rcgen or the system random generator failed.
    #[error("certificate generation failed: {detail}")]
    Generation {
        /// The failure.
        detail: String,
    },
}

impl IssueError {
    /// A stable CamelCase reason: `InvalidDuration`, `InvalidRenewBefore`,
    /// `InvalidValidity`, `InvalidDNSName`, `InvalidIPAddress`, `InvalidCommonName`,
    /// `NoSubjectAltNames`, `InvalidCACertificate`, `InvalidCAKey`, `CAKeyMismatch`,
    /// `NotACertificateAuthority`, `NonStrictCAProfile`, `CANotValid` or
    /// `CertificateGenerationFailed`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidDuration { .. } => "InvalidDuration",
            Self::RenewBeforeTooLong { .. } => "InvalidRenewBefore",
            Self::InvalidValidity { .. } => "InvalidValidity",
            Self::InvalidDnsName { .. } => "InvalidDNSName",
            Self::InvalidIpAddress { .. } => "InvalidIPAddress",
            Self::InvalidCommonName { .. } => "InvalidCommonName",
            Self::NoSubjectAltNames => "NoSubjectAltNames",
            Self::InvalidCaCertificate { .. } => "InvalidCACertificate",
            Self::InvalidCaKey { .. } => "InvalidCAKey",
            Self::CaKeyMismatch { .. } => "CAKeyMismatch",
            Self::NotACa { .. } => "NotACertificateAuthority",
            Self::NonStrictCaProfile { .. } => "NonStrictCAProfile",
            Self::CaNotValid { .. } => "CANotValid",
            Self::Generation { .. } => "CertificateGenerationFailed",
        }
    }
}
