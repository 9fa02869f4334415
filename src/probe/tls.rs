//! The TLS step: a capturing certificate verifier, a client-certificate resolver that records
//! whether the server asked, and the diagnosis that turns what they saw into a [`Reason`]
//! and a message.
//!
//! The verifier delegates to rustls' `WebPkiServerVerifier` (built from the bundle) at the
//! probe's clock, and also computes, separately, whether the chain is anchored in the
//! bundle (at a time inside the chain's validity, so trust and expiry are told apart) and
//! whether the name matches. It accepts the handshake exactly when [`diagnose`] finds no
//! failure, so the probe never sends HTTP over a connection it would report as untrusted.

use std::io;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, Error as TlsError, InconsistentKeys, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::cert::{self, CertFacts};
use super::net::secs;
use super::target::Target;
use super::{ProxyComparison, Reason};

mod failure;
pub(crate) use failure::{client_cert_failure, handshake_error, rustls_error};

mod diagnose;
pub(crate) use diagnose::diagnose;

mod verifier;
use verifier::{DiagnoseJob, ProbeVerifier, RecordingResolver, VerifierJob};

/// Where to tell people to add a CA.
const ADD_CA: &str = "spec.trust.sources or --ca-file";

/// Everything about trust that does not change between connections of one probe.
#[derive(Debug)]
pub(crate) struct TlsSetup {
    provider: Arc<CryptoProvider>,
    ctx: Arc<DiagContext>,
    client: Option<Arc<ClientIdentity>>,
}

/// The configured client certificate.
#[derive(Debug)]
pub(crate) struct ClientIdentity {
    key: Arc<CertifiedKey>,
    /// Subject of the client leaf.
    pub(crate) subject: String,
    /// Issuer of the client leaf.
    pub(crate) issuer: String,
}

/// Trust inputs of the diagnosis.
#[derive(Debug)]
pub(crate) struct DiagContext {
    roots: Arc<RootCertStore>,
    bundle: Vec<CertificateDer<'static>>,
    custom_bundle: bool,
    pin: Option<String>,
    now: Option<i64>,
    expiring_soon: i64,
    proxy: Option<String>,
    bundle_facts: OnceLock<Vec<CertFacts>>,
}

impl DiagContext {
    /// Facts of the bundle's certificates (parsed once), in the order of `bundle`.
    fn bundle_facts(&self) -> &[CertFacts] {
        self.bundle_facts
            .get_or_init(|| cert::chain_facts(self.bundle.iter().map(|c| c.as_ref())))
    }

    fn label(&self) -> &'static str {
        if self.custom_bundle {
            "the CA bundle"
        } else {
            "the Mozilla root store (no CA bundle was given)"
        }
    }
}

/// The connection being verified.
#[derive(Debug, Clone)]
pub(crate) struct ConnParams {
    /// The name verified (and sent as SNI unless an IP).
    pub(crate) server_name: String,
    /// Whether it came from [`super::ProbeOptions::server_name`].
    pub(crate) overridden: bool,
    /// The URL being reached.
    pub(crate) target: Target,
}

/// What the verifier saw.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    /// The chain as presented, leaf first.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// Facts per certificate of `chain`.
    pub(crate) facts: Vec<CertFacts>,
    /// The clock used, Unix seconds.
    pub(crate) now: i64,
    /// rustls/webpki's verdict at `now`.
    pub(crate) webpki: Result<(), TlsError>,
    /// Whether the chain leads to an anchor (at a time inside the chain's validity).
    pub(crate) anchored: Result<(), TlsError>,
    /// Whether the leaf is valid for the server name.
    pub(crate) name: Result<(), TlsError>,
}

/// What the server asked of the client certificate side.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientAuthSeen {
    /// The server sent a CertificateRequest.
    pub(crate) asked: bool,
    /// A certificate was sent in reply.
    pub(crate) sent: bool,
    /// The CA names the server listed.
    pub(crate) issuers: Vec<String>,
}

/// The diagnosis of a captured chain.
#[derive(Debug, Clone, Default)]
pub(crate) struct Diagnosis {
    /// The first failure.
    pub(crate) failure: Option<(Reason, String)>,
    /// A warning (expiring soon).
    pub(crate) warning: Option<(Reason, String)>,
    /// Secondary findings.
    pub(crate) notes: Vec<String>,
    /// What made the chain trusted.
    pub(crate) trusted_by: Option<String>,
}

/// The result of one handshake attempt.
pub(crate) struct Handshake {
    /// The stream, or why the handshake failed.
    pub(crate) stream: Result<TlsStream<TcpStream>, io::Error>,
    /// What the verifier saw (absent when the handshake failed before the certificate).
    pub(crate) captured: Option<Captured>,
    /// What the server asked of the client side.
    pub(crate) client_auth: ClientAuthSeen,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_time(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Normalise a pinned fingerprint: optional `sha256:`/`sha256/` prefix, `:` and whitespace
/// removed, lowercase, 64 hex digits.
///
/// # Errors
/// A sentence when it is not a SHA-256 fingerprint.
pub(crate) fn normalize_pin(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    let lower = trimmed.to_ascii_lowercase();
    let body = lower
        .strip_prefix("sha256:")
        .or_else(|| lower.strip_prefix("sha256/"))
        .unwrap_or(&lower);
    let hex: String = body
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!(
            "the pinned fingerprint {trimmed:?} is not a SHA-256 fingerprint (64 hex digits, for example from `openssl x509 -noout -fingerprint -sha256`)"
        ))
    }
}

impl TlsSetup {
    /// Build the trust store, load the client identity and normalise the pin.
    ///
    /// # Errors
    /// A sentence for [`Reason::InvalidOptions`].
    pub(crate) fn new(opts: &super::ProbeOptions, proxy: Option<String>) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        let (bundle, custom_bundle) = match &opts.ca_bundle_pem {
            Some(pem) => {
                let certs = load_bundle(pem)?;
                for (i, der) in certs.iter().enumerate() {
                    roots.add(der.clone()).map_err(|e| {
                        let subject = cert::facts(der).map_or_else(|_| "?".to_owned(), |f| f.peer.subject);
                        format!(
                            "certificate {i} (\"{subject}\") of the CA bundle is not usable as a trust anchor: {e}"
                        )
                    })?;
                }
                (certs, true)
            }
            None => {
                let certs = webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec();
                roots.add_parsable_certificates(certs.iter().cloned());
                (certs, false)
            }
        };
        let client = match (&opts.client_cert_pem, &opts.client_key_pem) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(
                    "a client certificate was given without its private key (--key)".to_owned(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "a client private key was given without its certificate (--cert)".to_owned(),
                );
            }
            (Some(c), Some(k)) => Some(Arc::new(load_identity(&provider, c, k)?)),
        };
        let pin = opts
            .pinned_sha256
            .as_deref()
            .map(normalize_pin)
            .transpose()?;
        let expiring_soon = i64::try_from(opts.expiring_soon.as_secs()).unwrap_or(i64::MAX);
        Ok(Self {
            provider,
            ctx: Arc::new(DiagContext {
                roots: Arc::new(roots),
                bundle,
                custom_bundle,
                pin,
                now: opts.now,
                expiring_soon,
                proxy,
                bundle_facts: OnceLock::new(),
            }),
            client,
        })
    }

    /// The configured client identity.
    pub(crate) fn client(&self) -> Option<&Arc<ClientIdentity>> {
        self.client.as_ref()
    }

    /// rustls' own verifier over the bundle, which the probe's verifier consults.
    ///
    /// # Errors
    /// A sentence naming the bundle, when rustls refuses to build a verifier from it.
    fn webpki_verifier(&self) -> Result<Arc<WebPkiServerVerifier>, String> {
        WebPkiServerVerifier::builder_with_provider(self.ctx.roots.clone(), self.provider.clone())
            .build()
            .map_err(|e| format!("cannot build a verifier from {}: {e}", self.ctx.label()))
    }

    fn config(
        &self,
        verifier: Arc<dyn ServerCertVerifier>,
        resolver: Arc<dyn ResolvesClientCert>,
    ) -> Result<ClientConfig, TlsError> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // No resumption: every handshake must show the certificate again.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }

    /// The TLS handshake with the capturing verifier and the recording resolver.
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        params: &ConnParams,
        server_name: ServerName<'static>,
        timeout: Duration,
    ) -> Handshake {
        let captured = Arc::new(Mutex::new(None));
        let client_auth = Arc::new(Mutex::new(ClientAuthSeen::default()));
        let inner = match self.webpki_verifier() {
            Ok(v) => v,
            Err(e) => {
                return Handshake {
                    stream: Err(io::Error::other(e)),
                    captured: None,
                    client_auth: ClientAuthSeen::default(),
                };
            }
        };
        let verifier = Arc::new(ProbeVerifier {
            inner,
            provider: self.provider.clone(),
            job: VerifierJob::Diagnose(DiagnoseJob {
                ctx: self.ctx.clone(),
                params: params.clone(),
                captured: captured.clone(),
            }),
        });
        let resolver = Arc::new(RecordingResolver {
            key: self.client.as_ref().map(|c| c.key.clone()),
            seen: client_auth.clone(),
        });
        let stream = match self.config(verifier, resolver) {
            Ok(config) => {
                let connector = TlsConnector::from(Arc::new(config));
                match tokio::time::timeout(timeout, connector.connect(server_name, tcp)).await {
                    Ok(r) => r,
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no TLS handshake within {}", secs(timeout)),
                    )),
                }
            }
            Err(e) => Err(io::Error::other(e)),
        };
        let captured = lock(&captured).take();
        let client_auth = lock(&client_auth).clone();
        Handshake {
            stream,
            captured,
            client_auth,
        }
    }

    /// A handshake that only records the server's chain and then aborts (no data is ever
    /// sent): the direct side of the proxy comparison.
    pub(crate) async fn fetch_chain(
        &self,
        tcp: TcpStream,
        server_name: ServerName<'static>,
        timeout: Duration,
    ) -> Result<Vec<CertificateDer<'static>>, String> {
        let captured = Arc::new(Mutex::new(None));
        let verifier = Arc::new(ProbeVerifier {
            inner: self.webpki_verifier()?,
            provider: self.provider.clone(),
            job: VerifierJob::Grab {
                chain: captured.clone(),
            },
        });
        let resolver = Arc::new(RecordingResolver {
            key: None,
            seen: Arc::new(Mutex::new(ClientAuthSeen::default())),
        });
        let config = self.config(verifier, resolver).map_err(|e| e.to_string())?;
        let connector = TlsConnector::from(Arc::new(config));
        let result = tokio::time::timeout(timeout, connector.connect(server_name, tcp)).await;
        if let Some(chain) = lock(&captured).take() {
            return Ok(chain);
        }
        Err(match result {
            Err(_) => format!("no TLS handshake within {}", secs(timeout)),
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(_)) => "the handshake completed without a certificate".to_owned(),
        })
    }

    /// Compare the leaf seen through the proxy with the chain fetched directly.
    pub(crate) fn compare(
        &self,
        through_proxy: &CertFacts,
        direct: Result<Vec<CertificateDer<'static>>, String>,
    ) -> ProxyComparison {
        let proxy = self.ctx.proxy.clone().unwrap_or_default();
        let proxy_issuer = through_proxy.peer.issuer.clone();
        match direct {
            Err(e) => ProxyComparison {
                proxy,
                proxy_issuer,
                direct_issuer: None,
                direct_sha256: None,
                resigned: None,
                direct_error: Some(e),
            },
            Ok(chain) => {
                let direct = chain
                    .first()
                    .map(|der| cert::facts(der).unwrap_or_else(|e| cert::unparseable(der, &e)));
                let resigned = direct.as_ref().map(|d| {
                    d.peer.sha256 != through_proxy.peer.sha256
                        && d.issuer_raw != through_proxy.issuer_raw
                        && d.peer.issuer != through_proxy.peer.issuer
                });
                ProxyComparison {
                    proxy,
                    proxy_issuer,
                    direct_issuer: direct.as_ref().map(|d| d.peer.issuer.clone()),
                    direct_sha256: direct.as_ref().map(|d| d.peer.sha256.clone()),
                    resigned,
                    direct_error: None,
                }
            }
        }
    }

    /// The diagnosis of a captured chain, given the proxy comparison if there is one.
    pub(crate) fn diagnose(
        &self,
        params: &ConnParams,
        captured: &Captured,
        proxy: Option<&ProxyComparison>,
    ) -> Diagnosis {
        diagnose(&self.ctx, params, captured, proxy)
    }
}

fn load_bundle(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CA bundle is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(
            "the CA bundle holds no PEM CERTIFICATE block (is it DER, or a key?)".to_owned(),
        );
    }
    Ok(certs)
}

fn load_identity(
    provider: &CryptoProvider,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<ClientIdentity, String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the client certificate is not valid PEM: {e}"))?;
    let Some(leaf) = certs.first() else {
        return Err("the client certificate file holds no PEM CERTIFICATE block".to_owned());
    };
    let facts = cert::facts(leaf).map_err(|e| format!("the client certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            "the client key file holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)".to_owned()
        }
        e => format!("the client key is not valid PEM: {e}"),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the client key is not usable: {e}"))?;
    let key = CertifiedKey::new(certs, signing);
    if let Err(TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) = key.keys_match() {
        return Err(format!(
            "the client key does not belong to the client certificate \"{}\"",
            facts.peer.subject
        ));
    }
    Ok(ClientIdentity {
        key: Arc::new(key),
        subject: facts.peer.subject,
        issuer: facts.peer.issuer,
    })
}

/// `TLSv1.3`, `TLSv1.2`.
pub(crate) fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The current time for the probe (the injected clock, or the system's).
pub(crate) fn now(opts_now: Option<i64>) -> i64 {
    opts_now.unwrap_or_else(system_now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_normalise() {
        let hex = "AB".repeat(32);
        let colons = hex
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(normalize_pin(&colons).expect("pin"), "ab".repeat(32));
        assert_eq!(
            normalize_pin(&format!("sha256:{hex}")).expect("pin"),
            "ab".repeat(32)
        );
        assert!(normalize_pin("abc").is_err());
    }
}
