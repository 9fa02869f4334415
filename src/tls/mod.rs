//! The webhook's TLS: a rustls [`ServerConfig`] whose serving certificate is held in an
//! [`ArcSwap`] and replaced without a restart.
//!
//! - [`load_certified_key`] reads a PEM certificate chain and its private key and checks
//!   that they belong together.
//! - [`CertResolver`] hands the current certificate to every new handshake; connections
//!   already established keep the certificate they were made with.
//! - [`server_config`] builds the `ServerConfig` (TLS 1.2 and 1.3, ALPN `h2` and
//!   `http/1.1`) with an explicit ring provider, so library code never depends on a
//!   process-wide default provider.
//! - [`CertReloader`] reloads on changes to the directories holding the files (Kubernetes
//!   Secret volumes swap a `..data` symlink, so the directory is watched, not the file) and
//!   on triggers such as SIGHUP ([`sighup_triggers`]). A reload that fails keeps the old
//!   certificate.

mod reload;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use reload::{CertReloader, DEFAULT_DEBOUNCE, ReloadStatus, ReloaderTask, sighup_triggers};

/// Errors of loading, serving and watching the webhook certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read (missing, permissions, …).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid PEM (for example cut off in the middle of a block).
    #[error("invalid PEM in {}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("no PEM CERTIFICATE block in {}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY` block.
    #[error("no PEM private key (PKCS#8, SEC1 or PKCS#1) in {}", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a type or curve that the ring provider cannot sign with.
    #[error("unsupported private key in {}: {source}", path.display())]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The leaf certificate cannot be parsed as X.509.
    #[error("cannot parse the leaf certificate in {}: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The private key does not belong to the leaf certificate (typically the two files
    /// were read in the middle of a rotation).
    #[error("private key {} does not match certificate {}: {source}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The leaf certificate's notAfter has passed ([`check_not_expired`]).
    #[error("certificate {} expired at {not_after}", path.display())]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// notAfter as text, e.g. `"Jan  1 00:00:00 2020 +00:00"`.
        not_after: String,
    },
    /// rustls rejected the configuration.
    #[error("rustls configuration: {0}")]
    Config(#[source] rustls::Error),
    /// The file watcher could not be set up.
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The notify error.
        #[source]
        source: notify::Error,
    },
}

/// Facts about a certificate, for logs, metrics and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number as lowercase hex without leading zeros, e.g. `"1f2e"`.
    pub serial: String,
    /// Subject distinguished name in RFC 4514 form, e.g. `"CN=mcptrust-webhook"`.
    pub subject: String,
    /// notAfter as Unix seconds.
    pub not_after: i64,
    /// notAfter as text, e.g. `"Jan  1 00:00:00 2030 +00:00"`.
    pub not_after_text: String,
}

impl CertInfo {
    /// Parses a DER certificate.
    ///
    /// # Errors
    /// The parser's message when `der` is not an X.509 certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        let not_after = cert.validity().not_after;
        Ok(Self {
            serial: cert.serial.to_str_radix(16),
            subject: cert.subject().to_string(),
            not_after: not_after.timestamp(),
            not_after_text: not_after.to_string(),
        })
    }

    /// Describes the leaf (first) certificate of `key`; `None` when the chain is empty or
    /// the leaf does not parse (never the case for keys from [`load_certified_key`]).
    pub fn of(key: &CertifiedKey) -> Option<Self> {
        key.cert.first().and_then(|der| Self::from_der(der).ok())
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "serial {} subject {:?} notAfter {}",
            self.serial, self.subject, self.not_after_text
        )
    }
}

/// Reads a PEM certificate chain (leaf first) from `cert_path` and a PEM private key
/// (PKCS#8, SEC1 or PKCS#1; the first key block wins) from `key_path`, and checks that the
/// key belongs to the leaf.
///
/// The key is loaded with the ring provider (ECDSA P-256/P-384, Ed25519, RSA).
///
/// # Errors
/// [`TlsError::Read`], [`TlsError::Pem`], [`TlsError::NoCertificate`],
/// [`TlsError::NoPrivateKey`], [`TlsError::UnsupportedKey`], [`TlsError::BadCertificate`] or
/// [`TlsError::KeyMismatch`]. A half-written file shows up as one of these.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert_path).map_err(|source| TlsError::Read {
        path: cert_path.to_owned(),
        source,
    })?;
    let key_pem = std::fs::read(key_path).map_err(|source| TlsError::Read {
        path: key_path.to_owned(),
        source,
    })?;

    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<CertificateDer<'static>>, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert_path.to_owned(),
            source,
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    };
    let info = CertInfo::from_der(leaf).map_err(|reason| TlsError::BadCertificate {
        path: cert_path.to_owned(),
        reason,
    })?;

    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoPrivateKey {
                path: key_path.to_owned(),
            });
        }
        Err(source) => {
            return Err(TlsError::Pem {
                path: key_path.to_owned(),
                source,
            });
        }
    };
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|source| {
        TlsError::UnsupportedKey {
            path: key_path.to_owned(),
            source,
        }
    })?;

    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        // The key type cannot report its public key: nothing to compare, accept it.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(source) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
                source,
            });
        }
    }
    tracing::debug!(cert = %cert_path.display(), %info, "loaded serving certificate");
    Ok(certified)
}

/// Fails with [`TlsError::Expired`] when the leaf certificate of `key` (read from
/// `cert_path`) expired before `now_unix` (Unix seconds). A key whose leaf does not parse
/// passes (see [`CertInfo::of`]).
///
/// # Errors
/// [`TlsError::Expired`].
pub fn check_not_expired(
    key: &CertifiedKey,
    cert_path: &Path,
    now_unix: i64,
) -> Result<(), TlsError> {
    match CertInfo::of(key) {
        Some(info) if info.not_after < now_unix => Err(TlsError::Expired {
            path: cert_path.to_owned(),
            not_after: info.not_after_text,
        }),
        _ => Ok(()),
    }
}

/// A [`ResolvesServerCert`] that always presents the current certificate, whatever the
/// SNI. [`CertResolver::store`] replaces it atomically: handshakes in progress and
/// established connections are not affected, the next handshake gets the new one.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    /// Starts with `key` (for example from [`load_certified_key`]).
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(key),
        }
    }

    /// Loads the files with [`load_certified_key`] and starts with them.
    ///
    /// # Errors
    /// As [`load_certified_key`].
    pub fn from_files(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        load_certified_key(cert_path, key_path).map(Self::new)
    }

    /// The certificate that new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Facts about the current leaf certificate.
    pub fn info(&self) -> Option<CertInfo> {
        CertInfo::of(&self.current.load())
    }

    /// Replaces the certificate for all later handshakes.
    pub fn store(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("current", &self.info())
            .finish()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The crypto provider the webhook uses, passed explicitly to every builder: ring, or
/// aws-lc-rs when built with the `aws-lc-rs` feature (the transport comparison in
/// docs/performance.md).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(not(feature = "aws-lc-rs"))]
    let provider = rustls::crypto::ring::default_provider();
    Arc::new(provider)
}

/// Builds the webhook's `ServerConfig`: [`crypto_provider`], TLS 1.3 and 1.2, no client
/// authentication, certificate from `resolver`, ALPN `h2` then `http/1.1`.
///
/// # Errors
/// [`TlsError::Config`] if rustls rejects the protocol versions for the provider (not
/// expected with ring).
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
