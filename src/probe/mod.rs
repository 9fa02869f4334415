//! The endpoint probe (DESIGN.md, "Probe"), shared by `mcptrust probe URL` and the
//! controller.
//!
//! [`probe`] runs these steps in order and stops at the first failure:
//!
//! 1. **DNS** ([`Step::Dns`]): `tokio::net::lookup_host` of the URL's host, or of the proxy's
//!    host when a proxy is used (the proxy resolves the target itself);
//! 2. **TCP** ([`Step::Tcp`]): connect to the resolved addresses in turn;
//! 3. **proxy CONNECT** ([`Step::ProxyConnect`], only for `https://` URLs with
//!    [`ProbeOptions::proxy`] set): `CONNECT host:port HTTP/1.1`, a 2xx status is required;
//! 4. **TLS handshake** ([`Step::TlsHandshake`], only for `https://` URLs): rustls (ring)
//!    with a *capturing* certificate verifier that records the presented chain and the
//!    webpki verdict, so that a failure can be explained (see [`Reason`]); a client
//!    certificate is attached whenever one is configured;
//! 5. **HTTP** ([`Step::Http`]): HTTP/1.1 over the connection, following up to 5 redirects
//!    (an https → http redirect is [`Reason::SchemeDowngradeRedirect`]), then an MCP
//!    `initialize` exchange (streamable-http) or the event stream's `endpoint` event (sse).
//!
//! Every step yields a [`StepResult`] whose message names the concrete things involved
//! (names, issuers, SANs, fingerprints, URLs) and says what to do. The
//! [`ProbeReport::verdict`] is the first failure, else the first warning, else
//! [`Reason::Ok`]; [`Reason::exit_code`] maps it to the CLI's exit status.
//!
//! Submodules: [`cli`] (the `mcptrust probe` subcommand, [`ProbeArgs`]). Rendering for
//! people is [`render_text`]; the report is also `serde` (camelCase) for `--output json`.

mod cert;
pub mod cli;
mod http;
mod net;
mod render;
mod run;
mod sse;
mod target;
mod tls;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cli::ProbeArgs;
pub use render::render_text;
pub use run::probe;

/// The MCP protocol version the probe asks for in `initialize` and sends as
/// `MCP-Protocol-Version`.
pub const MCP_PROTOCOL_VERSION: &str = "2025-06-18";

/// The default per-step timeout (10 seconds).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`Reason::ExpiringSoon`] threshold (14 days).
pub const DEFAULT_EXPIRING_SOON: Duration = Duration::from_secs(14 * 86_400);

/// The most redirects the HTTP step follows before giving up with [`Reason::HttpError`].
pub const MAX_REDIRECTS: usize = 5;

/// What to probe and how. Build it with [`ProbeOptions::new`] and struct update syntax:
///
/// ```
/// use mcptrust::probe::ProbeOptions;
/// let opts = ProbeOptions {
///     ca_bundle_pem: Some(b"-----BEGIN CERTIFICATE-----\n...".to_vec()),
///     ..ProbeOptions::new("https://mcp.example.com/mcp")
/// };
/// assert_eq!(opts.timeout, mcptrust::probe::DEFAULT_TIMEOUT);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// The endpoint: `https://host[:port]/path` or `http://host[:port]/path`. IPv6 hosts in
    /// brackets. The default ports are 443 and 80.
    pub url: String,
    /// Trust anchors as concatenated PEM `CERTIFICATE` blocks. `None` trusts the Mozilla
    /// root program (the `webpki-root-certs` crate). Roots and intermediates both count as
    /// anchors.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// The client certificate chain (PEM, leaf first), attached whenever the server asks
    /// for one. Requires [`ProbeOptions::client_key_pem`].
    pub client_cert_pem: Option<Vec<u8>>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub client_key_pem: Option<Vec<u8>>,
    /// An HTTP CONNECT proxy, `http://[user:pass@]host[:port]` (port 80 by default; a bare
    /// `host:port` is accepted). Used for `https://` URLs only, as `HTTPS_PROXY` is. Through
    /// a proxy the probe also fetches the server's certificate directly (when it can, within
    /// 5 seconds or the timeout if shorter; no data is sent) to tell whether the proxy
    /// re-signs TLS ([`Reason::ProxyReSigned`]).
    pub proxy: Option<String>,
    /// The name sent as SNI and verified against the certificate, instead of the URL's host
    /// (which still goes into the `Host` header). A DNS name or an IP address.
    pub server_name: Option<String>,
    /// Which MCP transport to speak (default [`Transport::Auto`]).
    pub transport: Transport,
    /// The time limit of each step (DNS, TCP, CONNECT, TLS, and each HTTP request and
    /// response body). Default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// Certificates expiring within this window get [`Reason::ExpiringSoon`] (a warning).
    /// Default [`DEFAULT_EXPIRING_SOON`].
    pub expiring_soon: Duration,
    /// The expected SHA-256 fingerprint of the server's leaf certificate: 64 hex digits,
    /// case and `:` separators ignored, an optional `sha256:` prefix. When set, a matching
    /// leaf is trusted whatever its issuer (a pinned self-signed certificate is
    /// [`Reason::Ok`]); a different one is [`Reason::PinnedCertificateChanged`]. Validity
    /// and the host name are still checked.
    pub pinned_sha256: Option<String>,
    /// The clock, Unix seconds, for validity checks (the chain is verified at this time as
    /// well). `None` uses the system clock.
    pub now: Option<i64>,
}

impl ProbeOptions {
    /// Options for `url` with every default: Mozilla roots, no client certificate, no
    /// proxy, [`Transport::Auto`], [`DEFAULT_TIMEOUT`], [`DEFAULT_EXPIRING_SOON`], no pin and
    /// the system clock.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_bundle_pem: None,
            client_cert_pem: None,
            client_key_pem: None,
            proxy: None,
            server_name: None,
            transport: Transport::Auto,
            timeout: DEFAULT_TIMEOUT,
            expiring_soon: DEFAULT_EXPIRING_SOON,
            pinned_sha256: None,
            now: None,
        }
    }
}

/// The MCP transport the HTTP step speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub enum Transport {
    /// Streamable HTTP first (SSE first when the path ends in `/sse`); the other one when
    /// the first answers 400, 404, 405, 406 or 415.
    #[default]
    #[serde(rename = "auto")]
    #[value(name = "auto")]
    Auto,
    /// Streamable HTTP (protocol 2025-03-26 and later): POST `initialize` to the URL.
    #[serde(rename = "streamable-http")]
    #[value(name = "streamable-http")]
    StreamableHttp,
    /// HTTP+SSE (protocol 2024-11-05): GET the event stream, wait for its `endpoint` event,
    /// POST `initialize` there and read the answer from the stream.
    #[serde(rename = "sse")]
    #[value(name = "sse")]
    Sse,
}

impl Transport {
    /// `auto`, `streamable-http` or `sse`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::StreamableHttp => "streamable-http",
            Self::Sse => "sse",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<crate::api::Transport> for Transport {
    type Error = String;

    /// `StreamableHttp` and `Sse` map to themselves; `Stdio` has no endpoint to probe.
    fn try_from(t: crate::api::Transport) -> Result<Self, String> {
        match t {
            crate::api::Transport::StreamableHttp => Ok(Self::StreamableHttp),
            crate::api::Transport::Sse => Ok(Self::Sse),
            crate::api::Transport::Stdio => {
                Err("a stdio MCP server has no network endpoint to probe".to_owned())
            }
        }
    }
}

/// One step of the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Step {
    /// The options themselves (URL, CA bundle, client certificate, pin, proxy URL). Only
    /// present in a report when they are unusable ([`Reason::InvalidOptions`]).
    Options,
    /// Name resolution of the host (or of the proxy's host).
    Dns,
    /// The TCP connection (to the server, or to the proxy).
    Tcp,
    /// The HTTP CONNECT tunnel through the proxy.
    ProxyConnect,
    /// The TLS handshake and the certificate checks.
    TlsHandshake,
    /// Redirects and the MCP exchange.
    Http,
}

impl Step {
    /// The stable name used in JSON: `Options`, `Dns`, `Tcp`, `ProxyConnect`,
    /// `TlsHandshake`, `Http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Options => "Options",
            Self::Dns => "Dns",
            Self::Tcp => "Tcp",
            Self::ProxyConnect => "ProxyConnect",
            Self::TlsHandshake => "TlsHandshake",
            Self::Http => "Http",
        }
    }

    /// The name shown to people: `options`, `DNS`, `TCP`, `proxy CONNECT`,
    /// `TLS handshake`, `HTTP`.
    pub fn title(self) -> &'static str {
        match self {
            Self::Options => "options",
            Self::Dns => "DNS",
            Self::Tcp => "TCP",
            Self::ProxyConnect => "proxy CONNECT",
            Self::TlsHandshake => "TLS handshake",
            Self::Http => "HTTP",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// How bad a [`Reason`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    /// Nothing to report.
    Ok,
    /// Works, but someone should look (exit code 0).
    Warning,
    /// Does not work; the probe stopped here.
    Failure,
}

/// Why a step (and the probe) ended the way it did. Serialised as the variant name, which
/// is also [`Reason::as_str`] (stable, CamelCase: usable as a Kubernetes condition reason
/// and a metric label).
///
/// Exit codes ([`Reason::exit_code`]), one per class of failure:
///
/// | code | reasons |
/// |------|---------|
/// | 0 | `Ok`, and the warnings `ExpiringSoon`, `AuthenticationRequired` |
/// | 1 | `TlsHandshakeFailed`, `InvalidCertificate`, `InvalidOptions` (anything else) |
/// | 2 | `DnsFailure`, `ConnectionRefused`, `ConnectionFailed`, `Timeout` (could not reach, or no answer in time at any step; the step says where) |
/// | 3 | `ProxyConnectFailed` |
/// | 4 | trust: `UnknownAuthority`, `SelfSigned`, `ProxyReSigned`, `PinnedCertificateChanged` |
/// | 5 | `HostnameMismatch` |
/// | 6 | validity: `Expired`, `NotYetValid` |
/// | 7 | `ClientCertificateRequired` |
/// | 8 | HTTP/MCP: `SchemeDowngradeRedirect`, `NotAnMcpEndpoint`, `McpError`, `HttpError` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// The step (or the whole probe) succeeded.
    Ok,
    /// Warning: the leaf certificate expires within [`ProbeOptions::expiring_soon`].
    ExpiringSoon,
    /// Warning: TLS and HTTP work, but the endpoint answered 401/403 (MCP authorization);
    /// the probe does not authenticate.
    AuthenticationRequired,
    /// The host name does not resolve.
    DnsFailure,
    /// Nothing listens on the port (TCP RST).
    ConnectionRefused,
    /// The TCP connection failed otherwise (unreachable network, reset, ...).
    ConnectionFailed,
    /// A step did not finish within [`ProbeOptions::timeout`].
    Timeout,
    /// The proxy refused the CONNECT (non-2xx), closed, or did not speak HTTP.
    ProxyConnectFailed,
    /// The chain does not lead to a certificate of the bundle; names the missing issuer.
    UnknownAuthority,
    /// The server's certificate is self-signed (its own key verifies it) and not trusted.
    SelfSigned,
    /// Through the proxy the certificate is issued by another CA than directly: the proxy
    /// re-signs TLS and the bundle lacks its CA.
    ProxyReSigned,
    /// The leaf's SHA-256 differs from [`ProbeOptions::pinned_sha256`].
    PinnedCertificateChanged,
    /// The certificate is valid for other names than the one dialled.
    HostnameMismatch,
    /// A certificate of the chain has expired.
    Expired,
    /// A certificate of the chain is not valid yet.
    NotYetValid,
    /// The server requires a client certificate and none was configured, or it rejected
    /// the one that was sent.
    ClientCertificateRequired,
    /// The certificate is unusable for TLS server authentication for another reason (a CA
    /// certificate used as a leaf, missing serverAuth, bad encoding, unsupported algorithm).
    InvalidCertificate,
    /// The TLS handshake failed for a reason other than the certificate checks (no common
    /// protocol, not TLS at all, an alert).
    TlsHandshakeFailed,
    /// A redirect went from `https://` to `http://` (names both URLs).
    SchemeDowngradeRedirect,
    /// The URL answers, but not as an MCP endpoint (HTML, 404, wrong content type).
    NotAnMcpEndpoint,
    /// The MCP server answered `initialize` with a JSON-RPC error, or the SSE endpoint did
    /// not complete `initialize`.
    McpError,
    /// An HTTP-level failure: 5xx, too many redirects, connection closed, bad response.
    HttpError,
    /// The options are unusable: bad URL, CA bundle, client certificate or key, pin or
    /// proxy URL.
    InvalidOptions,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 23] = [
        Self::Ok,
        Self::ExpiringSoon,
        Self::AuthenticationRequired,
        Self::DnsFailure,
        Self::ConnectionRefused,
        Self::ConnectionFailed,
        Self::Timeout,
        Self::ProxyConnectFailed,
        Self::UnknownAuthority,
        Self::SelfSigned,
        Self::ProxyReSigned,
        Self::PinnedCertificateChanged,
        Self::HostnameMismatch,
        Self::Expired,
        Self::NotYetValid,
        Self::ClientCertificateRequired,
        Self::InvalidCertificate,
        Self::TlsHandshakeFailed,
        Self::SchemeDowngradeRedirect,
        Self::NotAnMcpEndpoint,
        Self::McpError,
        Self::HttpError,
        Self::InvalidOptions,
    ];

    /// The stable CamelCase name (the variant name), e.g. `HostnameMismatch`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "Ok",
            Self::ExpiringSoon => "ExpiringSoon",
            Self::AuthenticationRequired => "AuthenticationRequired",
            Self::DnsFailure => "DnsFailure",
            Self::ConnectionRefused => "ConnectionRefused",
            Self::ConnectionFailed => "ConnectionFailed",
            Self::Timeout => "Timeout",
            Self::ProxyConnectFailed => "ProxyConnectFailed",
            Self::UnknownAuthority => "UnknownAuthority",
            Self::SelfSigned => "SelfSigned",
            Self::ProxyReSigned => "ProxyReSigned",
            Self::PinnedCertificateChanged => "PinnedCertificateChanged",
            Self::HostnameMismatch => "HostnameMismatch",
            Self::Expired => "Expired",
            Self::NotYetValid => "NotYetValid",
            Self::ClientCertificateRequired => "ClientCertificateRequired",
            Self::InvalidCertificate => "InvalidCertificate",
            Self::TlsHandshakeFailed => "TlsHandshakeFailed",
            Self::SchemeDowngradeRedirect => "SchemeDowngradeRedirect",
            Self::NotAnMcpEndpoint => "NotAnMcpEndpoint",
            Self::McpError => "McpError",
            Self::HttpError => "HttpError",
            Self::InvalidOptions => "InvalidOptions",
        }
    }

    /// Ok, warning (`ExpiringSoon`, `AuthenticationRequired`) or failure (all others).
    pub fn severity(self) -> Severity {
        match self {
            Self::Ok => Severity::Ok,
            Self::ExpiringSoon | Self::AuthenticationRequired => Severity::Warning,
            _ => Severity::Failure,
        }
    }

    /// `true` for failures (not for `Ok` or warnings).
    pub fn is_failure(self) -> bool {
        self.severity() == Severity::Failure
    }

    /// The process exit code for this verdict; see the table on [`Reason`].
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Ok | Self::ExpiringSoon | Self::AuthenticationRequired => 0,
            Self::DnsFailure | Self::ConnectionRefused | Self::ConnectionFailed | Self::Timeout => {
                2
            }
            Self::ProxyConnectFailed => 3,
            Self::UnknownAuthority
            | Self::SelfSigned
            | Self::ProxyReSigned
            | Self::PinnedCertificateChanged => 4,
            Self::HostnameMismatch => 5,
            Self::Expired | Self::NotYetValid => 6,
            Self::ClientCertificateRequired => 7,
            Self::SchemeDowngradeRedirect
            | Self::NotAnMcpEndpoint
            | Self::McpError
            | Self::HttpError => 8,
            Self::TlsHandshakeFailed | Self::InvalidCertificate | Self::InvalidOptions => 1,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    /// Which step.
    pub step: Step,
    /// `false` when the step failed (the probe stopped here); warnings are `true`.
    pub ok: bool,
    /// [`Reason::Ok`], a warning, or the failure.
    pub reason: Reason,
    /// What happened, naming the concrete things, and for problems what to do.
    pub message: String,
    /// Further findings (secondary problems, notes), one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Wall-clock duration of the step, milliseconds.
    pub duration_ms: u64,
}

/// One certificate the server presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerCert {
    /// Subject DN, RFC 4514 (most significant RDN last), e.g. `CN=localhost,O=Example`.
    pub subject: String,
    /// Issuer DN, RFC 4514.
    pub issuer: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Start of validity, RFC 3339 UTC.
    pub not_before: String,
    /// End of validity, RFC 3339 UTC.
    pub not_after: String,
    /// Lowercase hex SHA-256 of the DER (the fingerprint to pin).
    pub sha256: String,
    /// Issuer equals subject *and* the certificate's own key verifies its signature.
    pub self_signed: bool,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// subjectAltNames as `DNS:name`, `IP:addr`, `URI:uri`, `email:addr`.
    pub sans: Vec<String>,
    /// The certificate itself (PEM), what the controller pins for a self-signed server.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pem: String,
}

/// What a direct connection showed, compared with the connection through the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyComparison {
    /// The proxy URL (credentials removed).
    pub proxy: String,
    /// Issuer of the leaf seen through the proxy.
    pub proxy_issuer: String,
    /// Issuer of the leaf seen directly, when the direct handshake got that far.
    pub direct_issuer: Option<String>,
    /// SHA-256 of the leaf seen directly.
    pub direct_sha256: Option<String>,
    /// `Some(true)`: the proxy presents a certificate from another issuer (it re-signs);
    /// `Some(false)`: same certificate or same issuer; `None`: no direct connection.
    pub resigned: Option<bool>,
    /// Why the direct connection failed (egress blocked, ...).
    pub direct_error: Option<String>,
}

/// What the TLS handshake showed (also filled when it failed after the certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsInfo {
    /// The name verified (SNI, unless an IP address).
    pub server_name: String,
    /// `TLSv1.3` or `TLSv1.2`, when the handshake completed.
    pub version: Option<String>,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: Option<String>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// The chain as presented, leaf first.
    pub chain: Vec<PeerCert>,
    /// What made the chain trusted: `"CN=Example CA" in the CA bundle`, or the pin.
    pub trusted_by: Option<String>,
    /// The server sent a CertificateRequest.
    pub client_certificate_requested: bool,
    /// The subject of the client certificate sent, if one was.
    pub client_certificate_sent: Option<String>,
    /// The CA names the server said it accepts for client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acceptable_client_issuers: Vec<String>,
    /// Through a proxy: the comparison with a direct connection.
    pub proxy: Option<ProxyComparison>,
}

/// What the MCP exchange showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpInfo {
    /// The transport that answered (`streamable-http` or `sse`).
    pub transport: Transport,
    /// The URL that answered, after redirects.
    pub url: String,
    /// `result.protocolVersion` of `initialize`.
    pub protocol_version: Option<String>,
    /// `result.serverInfo.name`.
    pub server_name: Option<String>,
    /// `result.serverInfo.version`.
    pub server_version: Option<String>,
    /// The `Mcp-Session-Id` header (streamable-http).
    pub session_id: Option<String>,
    /// The `endpoint` event's data (sse), as sent, e.g. `/messages?sessionId=abc`.
    pub endpoint: Option<String>,
    /// The endpoint resolved against the stream's URL (sse).
    pub endpoint_url: Option<String>,
}

/// One redirect the HTTP step saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// The URL requested.
    pub from: String,
    /// The `Location`, resolved.
    pub to: String,
}

/// The whole result. `Serialize`/`Deserialize` (camelCase) for `--output json` and the
/// controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeReport {
    /// The URL probed (as given).
    pub url: String,
    /// The proxy used (credentials removed), if any.
    pub proxy: Option<String>,
    /// The transport asked for.
    pub transport: Transport,
    /// The first failure, else the first warning, else `Ok`.
    pub verdict: Reason,
    /// `verdict` is not a failure.
    pub ok: bool,
    /// [`Reason::exit_code`] of the verdict.
    pub exit_code: u8,
    /// The verdict's message (or a one-line success summary).
    pub summary: String,
    /// The steps that ran, in order. After a redirect to another origin, the connection
    /// steps appear again for that origin.
    pub steps: Vec<StepResult>,
    /// Redirects followed (or refused), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<Redirect>,
    /// The first TLS connection's details.
    pub tls: Option<TlsInfo>,
    /// The MCP server's details, when the exchange got that far.
    pub mcp: Option<McpInfo>,
    /// Notes about the probe itself (e.g. the proxy being ignored for an http:// URL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ProbeReport {
    /// The step that decided the verdict (the first failure, else the first warning).
    pub fn verdict_step(&self) -> Option<&StepResult> {
        decisive_step(&self.steps)
    }
}

/// The first failing step of `steps`, else the first warning.
fn decisive_step(steps: &[StepResult]) -> Option<&StepResult> {
    steps.iter().find(|s| s.reason.is_failure()).or_else(|| {
        steps
            .iter()
            .find(|s| s.reason.severity() == Severity::Warning)
    })
}
