//! The TLS stage: the handshake with the capturing verifier, the proxy comparison, and the
//! step's message (certificate, trust, client certificate) or its diagnosed failure.

use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Failed, Passed, Stage};
use crate::probe::cert::{self, CertFacts};
use crate::probe::net::{self, secs};
use crate::probe::target::Target;
use crate::probe::tls::{self, ClientAuthSeen, ConnParams, TlsSetup};
use crate::probe::{ProbeOptions, ProxyComparison, Reason, TlsInfo};

/// The longest the direct side of the proxy comparison may take.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the TLS stage needs.
pub(super) struct TlsInput<'a> {
    /// The connection (to the server, or the tunnel through the proxy).
    pub(super) tcp: TcpStream,
    /// The URL being reached (its host is the default server name).
    pub(super) target: &'a Target,
    /// Trust anchors, client identity and pin.
    pub(super) setup: &'a TlsSetup,
    /// The server name override, the timeout and the clock.
    pub(super) opts: &'a ProbeOptions,
    /// Also fetch the chain directly and compare (through a proxy, once per origin).
    pub(super) compare_direct: bool,
}

/// Runs the TLS stage. Returns what the report shows of the handshake (absent when no
/// handshake was attempted) and the stage's outcome: the stream with what the server asked
/// of the client side, or the diagnosed failure.
pub(super) async fn tls(
    input: TlsInput<'_>,
) -> (
    Option<TlsInfo>,
    Stage<(TlsStream<TcpStream>, ClientAuthSeen)>,
) {
    let TlsInput {
        tcp,
        target,
        setup,
        opts,
        compare_direct,
    } = input;
    let params = ConnParams {
        server_name: opts
            .server_name
            .clone()
            .map(|s| {
                s.trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            })
            .unwrap_or_else(|| target.host.clone()),
        overridden: opts.server_name.is_some(),
        target: target.clone(),
    };
    let server_name = match ServerName::try_from(params.server_name.clone()) {
        Ok(n) => n,
        Err(e) => {
            let failure = Failed {
                reason: Reason::InvalidOptions,
                message: format!(
                    "{:?} is not a valid server name (a DNS name or an IP address): {e}",
                    params.server_name
                ),
                notes: Vec::new(),
            };
            return (None, Err(failure));
        }
    };
    let hs = setup
        .handshake(tcp, &params, server_name.clone(), opts.timeout)
        .await;

    // Compare with a direct connection once per origin (not for quiet reconnections).
    let comparison = match (&hs.captured, compare_direct) {
        (Some(c), true) => match c.facts.first() {
            Some(leaf) => {
                Some(direct_compare(setup, target, server_name, leaf, opts.timeout).await)
            }
            None => None,
        },
        _ => None,
    };
    let diagnosis = hs
        .captured
        .as_ref()
        .map(|c| setup.diagnose(&params, c, comparison.as_ref()));
    let identity = setup.client().cloned();

    let (version, cipher, alpn) = match &hs.stream {
        Ok(s) => {
            let conn = s.get_ref().1;
            (
                conn.protocol_version().map(tls::version_name),
                conn.negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite())),
                conn.alpn_protocol()
                    .map(|a| String::from_utf8_lossy(a).into_owned()),
            )
        }
        Err(_) => (None, None, None),
    };
    let info = TlsInfo {
        server_name: params.server_name.clone(),
        version: version.clone(),
        cipher: cipher.clone(),
        alpn,
        chain: hs
            .captured
            .as_ref()
            .map(|c| c.facts.iter().map(|f| f.peer.clone()).collect())
            .unwrap_or_default(),
        trusted_by: diagnosis.as_ref().and_then(|d| d.trusted_by.clone()),
        client_certificate_requested: hs.client_auth.asked,
        client_certificate_sent: match &identity {
            Some(id) if hs.client_auth.sent => Some(id.subject.clone()),
            _ => None,
        },
        acceptable_client_issuers: hs.client_auth.issuers.clone(),
        proxy: comparison.clone(),
    };

    let stream = match hs.stream {
        Ok(stream) => stream,
        Err(e) => {
            let (reason, message, notes) = match diagnosis.and_then(|d| {
                let notes = d.notes;
                d.failure.map(|f| (f, notes))
            }) {
                Some(((reason, message), notes)) => (reason, message, notes),
                None => {
                    let (reason, message) =
                        tls::handshake_error(&e, &hs.client_auth, identity.as_deref(), &params);
                    (reason, message, Vec::new())
                }
            };
            return (
                Some(info),
                Err(Failed {
                    reason,
                    message,
                    notes,
                }),
            );
        }
    };
    let diagnosis = diagnosis.unwrap_or_default();
    let leaf = hs.captured.as_ref().and_then(|c| c.facts.first());
    let now = hs
        .captured
        .as_ref()
        .map_or_else(|| tls::now(opts.now), |c| c.now);
    let mut summary = format!(
        "{} ({}) with {}",
        version.as_deref().unwrap_or("TLS"),
        cipher.as_deref().unwrap_or("?"),
        params.server_name
    );
    if let Some(leaf) = leaf {
        summary.push_str(&format!(
            ": certificate \"{}\" issued by \"{}\", valid until {} ({} left)",
            leaf.peer.subject,
            leaf.peer.issuer,
            leaf.peer.not_after,
            cert::human_duration(leaf.not_after - now)
        ));
    }
    if let Some(t) = &diagnosis.trusted_by {
        summary.push_str(&format!(", trusted via {t}"));
    }
    let mut notes = diagnosis.notes.clone();
    match (&identity, hs.client_auth.asked, hs.client_auth.sent) {
        (Some(id), true, true) => notes.push(format!(
            "the server asked for a client certificate; the probe sent \"{}\" (issued by \"{}\")",
            id.subject, id.issuer
        )),
        (None, true, _) => notes.push(
            "the server asked for a client certificate and none was configured; it went on without one (client certificates are optional there)"
                .to_owned(),
        ),
        (Some(id), false, _) => notes.push(format!(
            "a client certificate (\"{}\") is configured, but the server did not ask for one",
            id.subject
        )),
        _ => {}
    }
    let (reason, message) = match diagnosis.warning {
        Some((reason, warning)) => {
            notes.insert(0, summary);
            (reason, warning)
        }
        None => (Reason::Ok, summary),
    };
    let passed = Passed {
        value: (stream, hs.client_auth),
        reason,
        message,
        notes,
    };
    (Some(info), Ok(passed))
}

/// Fetch the chain directly (no proxy) and compare it with the leaf seen through the
/// proxy.
async fn direct_compare(
    setup: &TlsSetup,
    target: &Target,
    server_name: ServerName<'static>,
    leaf: &CertFacts,
    timeout: Duration,
) -> ProxyComparison {
    let timeout = timeout.min(DIRECT_TIMEOUT);
    let direct = async {
        let addrs = net::resolve(&target.host, target.port, timeout, "the host")
            .await
            .map_err(|(_, m)| m)?;
        let (tcp, _) = net::connect(&addrs, timeout, "the server directly")
            .await
            .map_err(|(_, m)| m)?;
        setup.fetch_chain(tcp, server_name, timeout).await
    };
    let direct = match tokio::time::timeout(timeout, direct).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no direct connection to {} within {}",
            target.authority(),
            secs(timeout)
        )),
    };
    setup.compare(leaf, direct)
}
