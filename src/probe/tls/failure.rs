//! What a TLS handshake that failed without a certificate diagnosis means: an alert, a
//! server that does not speak TLS, no common parameters, or a client certificate the server
//! asked for and then refused.

use std::io;

use rustls::{AlertDescription, Error as TlsError};

use super::diagnose::quoted;
use super::{ClientAuthSeen, ClientIdentity, ConnParams};
use crate::probe::Reason;

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
