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

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ResolvesClientCert, WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor,
    verify_server_name,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError,
    InconsistentKeys, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::cert::{self, CertFacts};
use super::net::secs;
use super::target::Target;
use super::{ProxyComparison, Reason};

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

/// The probe's server-certificate verifier. Signatures are checked by rustls' own
/// verifier (`inner`); what happens to the chain depends on the job.
#[derive(Debug)]
struct ProbeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
    job: VerifierJob,
}

/// What [`ProbeVerifier`] does with the presented chain.
#[derive(Debug)]
enum VerifierJob {
    /// Capture the chain with every verdict, and accept it exactly when [`diagnose`]
    /// finds no failure (the probe's handshake).
    Diagnose(DiagnoseJob),
    /// Record the chain and refuse it, ending the handshake before any data flows (the
    /// direct side of the proxy comparison).
    Grab {
        chain: Arc<Mutex<Option<Vec<CertificateDer<'static>>>>>,
    },
}

/// The inputs and the output slot of [`VerifierJob::Diagnose`].
#[derive(Debug)]
struct DiagnoseJob {
    ctx: Arc<DiagContext>,
    params: ConnParams,
    captured: Arc<Mutex<Option<Captured>>>,
}

impl ProbeVerifier {
    /// The diagnosing job: capture, diagnose, accept or refuse.
    fn diagnose_chain(
        &self,
        job: &DiagnoseJob,
        chain: Vec<CertificateDer<'static>>,
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let DiagnoseJob {
            ctx,
            params,
            captured,
        } = job;
        let (end_entity, intermediates) = chain
            .split_first()
            .ok_or(TlsError::NoCertificatesPresented)?;
        let now = ctx
            .now
            .unwrap_or_else(|| i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
        let webpki = self
            .inner
            .verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                unix_time(now),
            )
            .map(|_| ());
        let facts = cert::chain_facts(chain.iter().map(|c| c.as_ref()));
        // Verify trust at a time inside every certificate's validity, so that an expired
        // certificate from a trusted CA is "Expired", not "UnknownAuthority".
        let lo = facts.iter().map(|f| f.not_before).max().unwrap_or(now);
        let hi = facts.iter().map(|f| f.not_after).min().unwrap_or(now);
        let trust_time = if lo <= hi { now.clamp(lo, hi) } else { now };
        let (anchored, name) = match ParsedCertificate::try_from(end_entity) {
            Ok(parsed) => (
                verify_server_cert_signed_by_trust_anchor(
                    &parsed,
                    &ctx.roots,
                    intermediates,
                    unix_time(trust_time),
                    self.provider.signature_verification_algorithms.all,
                ),
                verify_server_name(&parsed, server_name),
            ),
            // webpki cannot even parse it (an X.509 v1 certificate, ...): that is the trust
            // failure; the name is not known to be wrong.
            Err(e) => (Err(e), Ok(())),
        };
        let seen = Captured {
            chain,
            facts,
            now,
            webpki: webpki.clone(),
            anchored,
            name,
        };
        let accept = diagnose(ctx, params, &seen, None).failure.is_none();
        *lock(captured) = Some(seen);
        if accept {
            Ok(ServerCertVerified::assertion())
        } else {
            match webpki {
                Err(e) => Err(e),
                Ok(()) => Err(TlsError::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                )),
            }
        }
    }
}

impl ServerCertVerifier for ProbeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        match &self.job {
            VerifierJob::Diagnose(job) => {
                self.diagnose_chain(job, chain, server_name, ocsp_response, now)
            }
            VerifierJob::Grab { chain: grabbed } => {
                *lock(grabbed) = Some(chain);
                Err(TlsError::General(
                    "mcptrust probe: chain recorded for comparison".to_owned(),
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Hands out the configured client certificate (if any) and records that the server asked.
#[derive(Debug)]
struct RecordingResolver {
    key: Option<Arc<CertifiedKey>>,
    seen: Arc<Mutex<ClientAuthSeen>>,
}

impl ResolvesClientCert for RecordingResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let mut seen = lock(&self.seen);
        seen.asked = true;
        seen.issuers = root_hint_subjects
            .iter()
            .map(|der| cert::dn_from_der(der))
            .collect();
        let key = self
            .key
            .as_ref()
            .filter(|k| k.key.choose_scheme(sigschemes).is_some())
            .cloned();
        seen.sent = key.is_some();
        key
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn find_in_bundle<'a>(ctx: &'a DiagContext, der: &[u8]) -> Option<&'a CertificateDer<'static>> {
    ctx.bundle.iter().find(|b| b.as_ref() == der)
}

/// Which bundle certificate anchors the chain, for the success message.
fn anchor_description(ctx: &DiagContext, captured: &Captured) -> String {
    for (der, f) in captured.chain.iter().zip(&captured.facts) {
        if find_in_bundle(ctx, der).is_some() {
            return format!("\"{}\" itself, which is in {}", f.peer.subject, ctx.label());
        }
        let issuer = ctx
            .bundle
            .iter()
            .zip(ctx.bundle_facts())
            .find(|(b, bf)| bf.subject_raw == f.issuer_raw && cert::signed_by(der, b))
            .map(|(_, bf)| bf);
        if let Some(bf) = issuer {
            return format!("\"{}\" in {}", bf.peer.subject, ctx.label());
        }
    }
    ctx.label().to_owned()
}

/// Turn what the verifier saw into a failure (first of: pin, trust, validity, name, other),
/// a warning (expiring soon) and notes (the other problems, proxy re-signing).
pub(crate) fn diagnose(
    ctx: &DiagContext,
    params: &ConnParams,
    c: &Captured,
    proxy: Option<&ProxyComparison>,
) -> Diagnosis {
    let mut d = Diagnosis::default();
    let Some(leaf) = c.facts.first() else {
        d.failure = Some((
            Reason::TlsHandshakeFailed,
            "the server sent no certificate".to_owned(),
        ));
        return d;
    };
    let mut failures: Vec<(Reason, String)> = Vec::new();

    // 1. The pin.
    let pin_state = ctx.pin.as_ref().map(|p| *p == leaf.peer.sha256);
    match (pin_state, &ctx.pin) {
        (Some(false), Some(pin)) => failures.push((
            Reason::PinnedCertificateChanged,
            format!(
                "the server's certificate changed: pinned sha256 {pin}, presented sha256 {} (\"{}\", issued by \"{}\", valid from {}); if this is an expected rotation, update the pin (--pinned-sha256 {}), otherwise something may be intercepting the connection",
                leaf.peer.sha256, leaf.peer.subject, leaf.peer.issuer, leaf.peer.not_before, leaf.peer.sha256
            ),
        )),
        (Some(true), _) => {
            d.trusted_by = Some(format!("the pinned fingerprint sha256 {}", leaf.peer.sha256));
        }
        _ => {}
    }

    // 2. Trust (not when a pin decides it).
    if pin_state.is_none() {
        match &c.anchored {
            Ok(()) => {
                d.trusted_by = Some(anchor_description(ctx, c));
                if let Some(p) = proxy
                    && p.resigned == Some(true)
                {
                    d.notes.push(format!(
                        "the proxy {} re-signs TLS (through it the certificate is issued by \"{}\", directly by \"{}\"); {} trusts the proxy's CA, so clients that go through the proxy will connect, but clients that bypass it (NO_PROXY) must trust \"{}\"",
                        p.proxy,
                        p.proxy_issuer,
                        p.direct_issuer.as_deref().unwrap_or("?"),
                        ctx.label(),
                        p.direct_issuer.as_deref().unwrap_or("?"),
                    ));
                }
            }
            Err(e) => failures.push(trust_failure(ctx, c, e, proxy)),
        }
    }

    // 3. Validity, at the probe's clock.
    let mut expired = false;
    for (i, f) in c.facts.iter().enumerate() {
        let what = if i == 0 {
            format!("the certificate \"{}\"", f.peer.subject)
        } else {
            format!("the intermediate CA certificate \"{}\"", f.peer.subject)
        };
        if c.now > f.not_after {
            expired = true;
            failures.push((
                Reason::Expired,
                format!(
                    "{what} expired at {} ({} ago); renew it (with cert-manager, check the Certificate's status and its Issuer) and make the server load the new one",
                    f.peer.not_after,
                    cert::human_duration(c.now - f.not_after)
                ),
            ));
            break;
        }
        if c.now < f.not_before {
            failures.push((
                Reason::NotYetValid,
                format!(
                    "{what} is valid only from {} (in {}); the clock of the issuer or of this machine is wrong, or the certificate was issued for the future",
                    f.peer.not_before,
                    cert::human_duration(f.not_before - c.now)
                ),
            ));
            break;
        }
    }

    // 4. The name.
    if c.name.is_err() {
        failures.push((Reason::HostnameMismatch, hostname_message(params, leaf)));
    }

    // 5. Anything else webpki objects to.
    if pin_state.is_none()
        && failures.is_empty()
        && let Err(e) = &c.webpki
    {
        failures.push((
            Reason::InvalidCertificate,
            format!(
                "the certificate \"{}\" is not acceptable for a TLS server: {e}",
                leaf.peer.subject
            ),
        ));
    }

    // Warning: expiring soon.
    if !expired {
        let left = leaf.not_after - c.now;
        if left >= 0 && left < ctx.expiring_soon {
            d.warning = Some((
                Reason::ExpiringSoon,
                format!(
                    "the certificate \"{}\" expires at {}, in {} (warning threshold {}); renew it before then",
                    leaf.peer.subject,
                    leaf.peer.not_after,
                    cert::human_duration(left),
                    cert::human_duration(ctx.expiring_soon)
                ),
            ));
        }
    }

    let mut failures = failures.into_iter();
    d.failure = failures.next();
    for (reason, message) in failures {
        d.notes.push(format!("also {reason}: {message}"));
    }
    d
}

fn trust_failure(
    ctx: &DiagContext,
    c: &Captured,
    err: &TlsError,
    proxy: Option<&ProxyComparison>,
) -> (Reason, String) {
    let leaf = &c.facts[0];
    let label = ctx.label();
    if let Some(p) = proxy
        && p.resigned == Some(true)
    {
        return (
            Reason::ProxyReSigned,
            format!(
                "the proxy {} re-signs TLS: through it the certificate for {:?} is issued by \"{}\", while a direct connection shows \"{}\"; {label} does not trust \"{}\": add the proxy's CA certificate to {ADD_CA}",
                p.proxy,
                leaf.peer.subject,
                p.proxy_issuer,
                p.direct_issuer.as_deref().unwrap_or("?"),
                p.proxy_issuer
            ),
        );
    }
    if leaf.peer.self_signed {
        let in_bundle = find_in_bundle(ctx, &c.chain[0]).is_some();
        let message = if in_bundle && leaf.peer.is_ca {
            format!(
                "the server's self-signed certificate \"{}\" is in {label}, but it is a CA certificate (basicConstraints CA:TRUE, the default of `openssl req -x509`), which rustls/webpki refuse as a server certificate ({err}); pin it instead (--pinned-sha256 {}) or reissue it without CA:TRUE",
                leaf.peer.subject, leaf.peer.sha256
            )
        } else {
            format!(
                "the server presents a self-signed certificate \"{}\" (sha256 {}), which {label} does not trust; trust exactly this certificate by pinning it (--pinned-sha256 {}) or adding it to {ADD_CA}, or better, issue it from a CA (for example cert-manager)",
                leaf.peer.subject, leaf.peer.sha256, leaf.peer.sha256
            )
        };
        return (Reason::SelfSigned, message);
    }
    let unknown_issuer = matches!(
        err,
        TlsError::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature
        )
    );
    if !unknown_issuer {
        return (
            Reason::InvalidCertificate,
            invalid_certificate_message(leaf, err),
        );
    }
    let Some(last) = c.facts.last() else {
        return (Reason::UnknownAuthority, format!("{err}"));
    };
    let mut message = if last.self_issued && last.peer.self_signed {
        format!(
            "the server's chain ends at the root \"{}\" (sent by the server), which is not in {label}; add that CA certificate to {ADD_CA} if you trust it",
            last.peer.subject
        )
    } else if cert::claims_self_signed_but_does_not_verify(last) {
        format!(
            "the server's chain ends at \"{}\", which claims to be self-signed but its signature does not verify with its own key, so it is no root anyone can trust; reissue the certificate from a real CA and add that CA to {ADD_CA}",
            last.peer.subject
        )
    } else {
        let missing = &last.peer.issuer;
        let same_name = ctx
            .bundle_facts()
            .iter()
            .any(|bf| bf.subject_raw == last.issuer_raw || bf.peer.subject == *missing);
        if same_name {
            format!(
                "the server's chain ends at \"{missing}\" (the issuer of \"{}\"); {label} has a CA of that name, but with a different key, so it does not verify the chain (was the CA re-created?); update the bundle from the current CA, or reissue the server certificate",
                last.peer.subject
            )
        } else {
            let mut m = format!(
                "the server's chain ends at \"{missing}\" (the issuer of \"{}\"), which is not in {label}; add it to {ADD_CA}",
                last.peer.subject
            );
            if c.facts.len() == 1 {
                m.push_str(&format!(
                    " (the server sent only its own certificate: if \"{missing}\" is an intermediate CA, the server must send it too)"
                ));
            }
            m
        }
    };
    if let Some(p) = proxy
        && p.resigned.is_none()
    {
        message.push_str(&format!(
            "; note: the probe went through the proxy {} and could not compare with a direct connection ({}): if the proxy intercepts TLS, \"{}\" is its CA",
            p.proxy,
            p.direct_error.as_deref().unwrap_or("unknown error"),
            p.proxy_issuer
        ));
    }
    (Reason::UnknownAuthority, message)
}

fn invalid_certificate_message(leaf: &CertFacts, err: &TlsError) -> String {
    let text = err.to_string();
    let advice = if text.contains("CaUsedAsEndEntity") {
        "it is a CA certificate (basicConstraints CA:TRUE) used as a server certificate; reissue it as a leaf (CA:FALSE)"
    } else if text.contains("UnsupportedCertVersion") {
        "it is an X.509 v1 certificate (what `openssl x509 -req` makes without extensions), which rustls/webpki refuse; reissue it as v3 with a subjectAltName (for example -extfile with subjectAltName=DNS:localhost,IP:127.0.0.1)"
    } else if matches!(
        err,
        TlsError::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
        )
    ) {
        "its extendedKeyUsage lacks serverAuth; reissue it with serverAuth"
    } else if matches!(
        err,
        TlsError::InvalidCertificate(
            CertificateError::UnsupportedSignatureAlgorithmContext { .. }
                | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
        )
    ) {
        "it is signed with an algorithm rustls does not accept (for example SHA-1); reissue it with SHA-256 or better"
    } else {
        "reissue it"
    };
    format!(
        "the certificate \"{}\" cannot be used by a TLS client ({text}): {advice}",
        leaf.peer.subject
    )
}

fn hostname_message(params: &ConnParams, leaf: &CertFacts) -> String {
    let name = &params.server_name;
    let is_ip = name.parse::<std::net::IpAddr>().is_ok();
    let wanted = if is_ip {
        format!("IP:{name}")
    } else {
        format!("DNS:{name}")
    };
    let sans = &leaf.peer.sans;
    let via = if params.overridden {
        format!(
            " (the name checked is --server-name {name}; the URL's host is {})",
            params.target.host
        )
    } else {
        String::new()
    };
    if sans.is_empty() {
        return format!(
            "the certificate \"{}\" has no subjectAltName, so it is valid for no name: clients ignore the CN (RFC 6125) and the probe dialled {name}{via}; reissue it with subjectAltName={wanted} (openssl: -addext \"subjectAltName={wanted}\")",
            leaf.peer.subject
        );
    }
    let listed = sans.join(", ");
    if is_ip && !sans.iter().any(|s| s.starts_with("IP:")) {
        let dns = sans
            .iter()
            .find_map(|s| s.strip_prefix("DNS:"))
            .filter(|d| !d.starts_with('*'));
        let by_name = match dns {
            Some(d) => {
                let mut t = params.target.clone();
                t.host = d.to_owned();
                format!("connect by name ({}), ", t.url())
            }
            None => String::new(),
        };
        let keep_ip = match dns {
            Some(d) if !params.overridden => {
                format!("keep the IP and verify the name with --server-name {d}, ")
            }
            _ => String::new(),
        };
        return format!(
            "the certificate is valid for {listed}, but the probe dialled {name}{via}, an IP address, which only matches an IP subjectAltName ({wanted}), never a DNS name; {by_name}{keep_ip}or reissue the certificate with {wanted} in subjectAltName"
        );
    }
    format!(
        "the certificate is valid for {listed}, not for {name}{via}; use one of those names in the URL (or --server-name when the right name is routed through another address), or reissue the certificate with {wanted} in subjectAltName"
    )
}

/// The rustls error inside an I/O error, if there is one.
pub(crate) fn rustls_error(err: &io::Error) -> Option<&TlsError> {
    err.get_ref().and_then(|e| e.downcast_ref::<TlsError>())
}

/// The failure when the server asked for a client certificate and then ended the connection
/// (`cause` says how), or `None` when it did not ask.
pub(crate) fn client_cert_failure(
    seen: &ClientAuthSeen,
    identity: Option<&ClientIdentity>,
    cause: &str,
) -> Option<(Reason, String)> {
    if !seen.asked {
        return None;
    }
    let accepts = if seen.issuers.is_empty() {
        String::new()
    } else {
        format!(
            "; the server accepts client certificates issued by {}",
            quoted(&seen.issuers)
        )
    };
    let message = match identity {
        Some(id) if seen.sent => format!(
            "the server rejected the client certificate \"{}\", issued by \"{}\" ({cause}){accepts}; use a certificate from a CA the server trusts, valid now and with the clientAuth extended key usage",
            id.subject, id.issuer
        ),
        Some(id) => format!(
            "the server asked for a client certificate, but the configured one (\"{}\") suits none of the signature schemes it accepts, so none was sent ({cause}){accepts}",
            id.subject
        ),
        None => format!(
            "the server requires a client certificate (mutual TLS) and none was configured ({cause}){accepts}; pass --cert and --key (for an McpServer: its client certificate Secret)"
        ),
    };
    Some((Reason::ClientCertificateRequired, message))
}

/// Explain a handshake that failed without a certificate diagnosis.
pub(crate) fn handshake_error(
    err: &io::Error,
    seen: &ClientAuthSeen,
    identity: Option<&ClientIdentity>,
    params: &ConnParams,
) -> (Reason, String) {
    let name = &params.server_name;
    if err.kind() == io::ErrorKind::TimedOut {
        return (
            Reason::Timeout,
            format!(
                "the TLS handshake with {name} did not finish ({err}); the port may not speak TLS, or something in between swallows the handshake"
            ),
        );
    }
    if let Some(tls) = rustls_error(err) {
        return match tls {
            TlsError::AlertReceived(desc) => {
                if let Some(f) = client_cert_failure(seen, identity, &format!("alert {desc:?}")) {
                    return f;
                }
                let advice = match desc {
                    AlertDescription::ProtocolVersion => {
                        "the server supports neither TLS 1.3 nor TLS 1.2 as the probe offers them; upgrade the server's TLS configuration".to_owned()
                    }
                    AlertDescription::HandshakeFailure => {
                        "the server found no common cipher suite or key exchange, or it requires a client certificate without asking for one in a way the probe can see".to_owned()
                    }
                    AlertDescription::UnrecognisedName => format!(
                        "the server does not serve the name {name} (SNI); check the URL's host or --server-name"
                    ),
                    AlertDescription::NoApplicationProtocol => {
                        "the server accepts no ALPN protocol the probe offers (http/1.1)".to_owned()
                    }
                    _ => "check the server's TLS configuration and logs".to_owned(),
                };
                (
                    Reason::TlsHandshakeFailed,
                    format!("the server aborted the TLS handshake with alert {desc:?}: {advice}"),
                )
            }
            TlsError::InvalidMessage(_) | TlsError::InappropriateMessage { .. } => (
                Reason::TlsHandshakeFailed,
                format!(
                    "the server's answer is not TLS ({tls}); it probably speaks plain HTTP on this port: use http:// or the TLS port"
                ),
            ),
            TlsError::PeerIncompatible(p) => (
                Reason::TlsHandshakeFailed,
                format!(
                    "the server and the probe have no TLS version, cipher suite or group in common ({p:?}); the probe speaks TLS 1.2 and 1.3 with modern suites"
                ),
            ),
            other => (
                Reason::TlsHandshakeFailed,
                format!("the TLS handshake with {name} failed: {other}"),
            ),
        };
    }
    if matches!(
        err.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    ) {
        if let Some(f) = client_cert_failure(seen, identity, "it then closed the connection") {
            return f;
        }
        return (
            Reason::TlsHandshakeFailed,
            format!(
                "the server closed the connection during the TLS handshake ({err}): the port may not speak TLS, or the server refused the ClientHello for {name}"
            ),
        );
    }
    (
        Reason::TlsHandshakeFailed,
        format!("the TLS handshake with {name} failed: {err}"),
    )
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
