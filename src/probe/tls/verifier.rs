//! The probe's certificate verifier and client-certificate resolver: rustls' own
//! `WebPkiServerVerifier` for signatures, plus capture of what the server presented and
//! whether it asked for a client certificate, accepting exactly when [`diagnose`] finds no
//! failure.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ResolvesClientCert, WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor,
    verify_server_name,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, Error as TlsError, SignatureScheme};

use super::{Captured, ClientAuthSeen, ConnParams, DiagContext, diagnose, lock, unix_time};
use crate::probe::cert::{self};

/// The probe's server-certificate verifier. Signatures are checked by rustls' own
/// verifier (`inner`); what happens to the chain depends on the job.
#[derive(Debug)]
pub(super) struct ProbeVerifier {
    pub(super) inner: Arc<WebPkiServerVerifier>,
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) job: VerifierJob,
}

/// What [`ProbeVerifier`] does with the presented chain.
#[derive(Debug)]
pub(super) enum VerifierJob {
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
pub(super) struct DiagnoseJob {
    pub(super) ctx: Arc<DiagContext>,
    pub(super) params: ConnParams,
    pub(super) captured: Arc<Mutex<Option<Captured>>>,
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
pub(super) struct RecordingResolver {
    pub(super) key: Option<Arc<CertifiedKey>>,
    pub(super) seen: Arc<Mutex<ClientAuthSeen>>,
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
