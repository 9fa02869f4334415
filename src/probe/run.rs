//! The probe's driver: the steps in order, redirects, and the MCP exchanges.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Response};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::cert::{self, CertFacts};
use super::http::{self, ConnTls, HttpConn, SseError, SseStream, Wire};
use super::net::{self, ProxyUrl, secs};
use super::target::Target;
use super::tls::{self, ConnParams, TlsSetup};
use super::{
    MAX_REDIRECTS, MCP_PROTOCOL_VERSION, McpInfo, ProbeOptions, ProbeReport, ProxyComparison,
    Reason, Redirect, Severity, Step, StepResult, TlsInfo, Transport,
};

/// The most the probe reads of a JSON answer.
const JSON_LIMIT: usize = 1024 * 1024;
/// The most the probe reads of a body it only quotes.
const SNIPPET_LIMIT: usize = 4 * 1024;
/// The longest the direct side of the proxy comparison may take.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Probe `opts.url`: DNS → TCP → proxy CONNECT → TLS → HTTP, stopping at the first
/// failure. Never fails as a function: every problem, including unusable options
/// ([`Reason::InvalidOptions`]), is in the report.
pub async fn probe(opts: &ProbeOptions) -> ProbeReport {
    let mut runner = Runner::new(opts);
    runner.run().await;
    runner.finish()
}

/// How an HTTP-level exchange ended badly.
enum Halt {
    /// A failing step was already recorded (a connection step, or the TLS step after a
    /// post-handshake alert).
    Stop,
    /// The HTTP step fails with this.
    Fail(Outcome),
}

/// The HTTP step's result.
struct Outcome {
    reason: Reason,
    message: String,
    notes: Vec<String>,
    status: Option<u16>,
}

impl Outcome {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            notes: Vec::new(),
            status: None,
        }
    }

    fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    fn fail(reason: Reason, message: impl Into<String>) -> Halt {
        Halt::Fail(Self::new(reason, message))
    }
}

/// The connection requests go over (replaced when it cannot be reused).
#[derive(Default)]
struct Session {
    conn: Option<HttpConn>,
}

impl Session {
    fn mark_clean(&mut self) {
        if let Some(c) = self.conn.as_mut() {
            c.mark_clean();
        }
    }

    fn client_auth_asked(&self) -> bool {
        self.conn
            .as_ref()
            .and_then(|c| c.tls.as_ref())
            .is_some_and(|t| t.client_auth.asked)
    }
}

/// The parts of an `initialize` result the report keeps.
struct InitResult {
    protocol_version: String,
    server_name: Option<String>,
    server_version: Option<String>,
}

struct Runner<'a> {
    opts: &'a ProbeOptions,
    steps: Vec<StepResult>,
    tls: Option<TlsInfo>,
    mcp: Option<McpInfo>,
    redirects: Vec<Redirect>,
    notes: Vec<String>,
    proxy: Option<ProxyUrl>,
    setup: Option<Arc<TlsSetup>>,
    seen_origins: Vec<Target>,
}

fn elapsed_ms(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn initialize_body() -> Bytes {
    Bytes::from(
        json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": MCP_PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "mcptrust-probe", "version": crate::VERSION}
            }
        })
        .to_string(),
    )
}

fn initialized_body() -> Bytes {
    Bytes::from(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
}

fn json_headers(protocol_version: &str, session_id: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("accept", "application/json, text/event-stream".to_owned()),
        ("content-type", "application/json".to_owned()),
        ("mcp-protocol-version", protocol_version.to_owned()),
    ];
    if let Some(id) = session_id {
        h.push(("mcp-session-id", id.to_owned()));
    }
    h
}

fn content_type(response: &Response<Incoming>) -> String {
    http::header(response, "content-type").unwrap_or_default()
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn describe_ct(content_type: &str) -> String {
    if content_type.is_empty() {
        "no Content-Type".to_owned()
    } else {
        format!("Content-Type {content_type}")
    }
}

/// The first 120 characters of a body, whitespace collapsed, for messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s: String = collapsed.chars().take(120).collect();
    if collapsed.chars().count() > 120 {
        s.push('…');
    }
    s
}

fn status_text(status: u16) -> String {
    match hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(r) => format!("{status} {r}"),
        None => status.to_string(),
    }
}

/// The JSON-RPC response with id 1 in `v` (an object, or a batch array).
fn response_to_initialize(v: &Value) -> Option<&Value> {
    match v {
        Value::Array(items) => items.iter().find(|i| i.get("id") == Some(&json!(1))),
        Value::Object(_) if v.get("id") == Some(&json!(1)) => Some(v),
        _ => None,
    }
}

/// Read `initialize`'s answer.
fn parse_initialize(v: &Value, url: &str) -> Result<InitResult, Halt> {
    let Some(response) = response_to_initialize(v) else {
        return Err(Outcome::fail(
            Reason::NotAnMcpEndpoint,
            format!(
                "{url} answered with JSON that is not a JSON-RPC response to the initialize request (id 1): {}",
                snippet(v.to_string().as_bytes())
            ),
        ));
    };
    if let Some(error) = response.get("error") {
        let code = error
            .get("code")
            .map_or_else(|| "?".to_owned(), Value::to_string);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(Outcome::fail(
            Reason::McpError,
            format!(
                "{url} is an MCP endpoint, but it answered initialize with JSON-RPC error {code}: {message:?} (the probe asked for protocol version {MCP_PROTOCOL_VERSION})"
            ),
        ));
    }
    let Some(result) = response.get("result") else {
        return Err(Outcome::fail(
            Reason::NotAnMcpEndpoint,
            format!("{url} answered initialize with neither a result nor an error"),
        ));
    };
    let Some(protocol_version) = result.get("protocolVersion").and_then(Value::as_str) else {
        return Err(Outcome::fail(
            Reason::McpError,
            format!(
                "{url} answered initialize without result.protocolVersion: {}",
                snippet(result.to_string().as_bytes())
            ),
        ));
    };
    let info = result.get("serverInfo");
    let field = |name: &str| {
        info.and_then(|i| i.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(InitResult {
        protocol_version: protocol_version.to_owned(),
        server_name: field("name"),
        server_version: field("version"),
    })
}

fn describe_server(init: &InitResult) -> String {
    let name = init
        .server_name
        .as_deref()
        .unwrap_or("(no serverInfo.name)");
    match &init.server_version {
        Some(v) => format!(
            "MCP server \"{name}\" {v}, protocol {}",
            init.protocol_version
        ),
        None => format!("MCP server \"{name}\", protocol {}", init.protocol_version),
    }
}

impl<'a> Runner<'a> {
    fn new(opts: &'a ProbeOptions) -> Self {
        Self {
            opts,
            steps: Vec::new(),
            tls: None,
            mcp: None,
            redirects: Vec::new(),
            notes: Vec::new(),
            proxy: None,
            setup: None,
            seen_origins: Vec::new(),
        }
    }

    fn push(
        &mut self,
        step: Step,
        reason: Reason,
        message: String,
        notes: Vec<String>,
        t0: Instant,
    ) -> usize {
        self.steps.push(StepResult {
            step,
            ok: !reason.is_failure(),
            reason,
            message,
            notes,
            duration_ms: elapsed_ms(t0),
        });
        self.steps.len() - 1
    }

    fn ok_step(&mut self, quiet: bool, step: Step, message: String, t0: Instant) {
        if !quiet {
            self.push(step, Reason::Ok, message, Vec::new(), t0);
        }
    }

    fn options_failure(&mut self, message: String) {
        self.push(
            Step::Options,
            Reason::InvalidOptions,
            message,
            Vec::new(),
            Instant::now(),
        );
    }

    async fn run(&mut self) {
        let target = match Target::parse(&self.opts.url) {
            Ok(t) => t,
            Err(e) => return self.options_failure(e),
        };
        if self.opts.timeout.is_zero() {
            return self.options_failure("the timeout must be longer than zero".to_owned());
        }
        if let Some(raw) = self.opts.proxy.as_deref().filter(|p| !p.trim().is_empty()) {
            match net::parse_proxy(raw) {
                Ok(p) => self.proxy = Some(p),
                Err(e) => return self.options_failure(e),
            }
        }
        match TlsSetup::new(self.opts, self.proxy.as_ref().map(|p| p.display.clone())) {
            Ok(s) => self.setup = Some(Arc::new(s)),
            Err(e) => return self.options_failure(e),
        }
        if !target.https
            && let Some(p) = &self.proxy
        {
            self.notes.push(format!(
                "the proxy {} is used for https:// URLs only (as HTTPS_PROXY is); {} is reached directly",
                p.display,
                target.url()
            ));
        }
        let Ok(conn) = self.connect(&target).await else {
            return;
        };
        self.http_step(conn, target).await;
    }

    fn finish(self) -> ProbeReport {
        let decisive = self
            .steps
            .iter()
            .find(|s| s.reason.is_failure())
            .or_else(|| {
                self.steps
                    .iter()
                    .find(|s| s.reason.severity() == Severity::Warning)
            });
        let (verdict, summary) = match decisive {
            Some(s) => (s.reason, s.message.clone()),
            None => (Reason::Ok, self.success_summary()),
        };
        ProbeReport {
            url: self.opts.url.clone(),
            proxy: self.proxy.as_ref().map(|p| p.display.clone()),
            transport: self.opts.transport,
            verdict,
            ok: !verdict.is_failure(),
            exit_code: verdict.exit_code(),
            summary,
            steps: self.steps,
            redirects: self.redirects,
            tls: self.tls,
            mcp: self.mcp,
            notes: self.notes,
        }
    }

    fn success_summary(&self) -> String {
        let over = match &self.tls {
            Some(t) => format!(" over {}", t.version.as_deref().unwrap_or("TLS")),
            None => String::new(),
        };
        match &self.mcp {
            Some(m) => format!(
                "{} answers as an MCP server ({}{over}): \"{}\" {}, protocol {}",
                m.url,
                m.transport,
                m.server_name.as_deref().unwrap_or("?"),
                m.server_version.as_deref().unwrap_or(""),
                m.protocol_version.as_deref().unwrap_or("?")
            )
            .replace("  ", " "),
            None => "all steps passed".to_owned(),
        }
    }

    // ----- connection steps -----

    /// DNS, TCP, proxy CONNECT, TLS and the HTTP/1.1 handshake to `target`'s origin. Steps
    /// of an origin already reported are recorded only when they fail.
    async fn connect(&mut self, target: &Target) -> Result<HttpConn, ()> {
        let timeout = self.opts.timeout;
        let quiet = self.seen_origins.iter().any(|o| o.same_origin(target));
        if !quiet {
            self.seen_origins.push(target.clone());
        }
        let proxy = if target.https {
            self.proxy.clone()
        } else {
            None
        };

        // DNS
        let t0 = Instant::now();
        let (host, port, what) = match &proxy {
            Some(p) => (p.host.clone(), p.port, "the proxy host"),
            None => (target.host.clone(), target.port, "the host"),
        };
        let addrs = match net::resolve(&host, port, timeout, what).await {
            Ok(a) => a,
            Err((reason, message)) => {
                self.push(Step::Dns, reason, message, Vec::new(), t0);
                return Err(());
            }
        };
        let mut message = if host.parse::<std::net::IpAddr>().is_ok() {
            format!("{host} is an IP address; nothing to resolve")
        } else {
            format!(
                "{host} resolved to {}",
                addrs
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if proxy.is_some() {
            message.push_str(&format!(
                " (the proxy's host; the proxy resolves {} itself)",
                target.host
            ));
        }
        self.ok_step(quiet, Step::Dns, message, t0);

        // TCP
        let t0 = Instant::now();
        let what = match &proxy {
            Some(p) => format!("the proxy {}", p.display),
            None => target.authority(),
        };
        let (mut tcp, addr) = match net::connect(&addrs, timeout, &what).await {
            Ok(v) => v,
            Err((reason, message)) => {
                self.push(Step::Tcp, reason, message, Vec::new(), t0);
                return Err(());
            }
        };
        let _ = tcp.set_nodelay(true);
        let message = if addr.to_string() == what {
            format!("connected to {addr}")
        } else {
            format!("connected to {addr} ({what})")
        };
        self.ok_step(quiet, Step::Tcp, message, t0);

        // proxy CONNECT
        if let Some(p) = &proxy {
            let t0 = Instant::now();
            match net::proxy_connect(&mut tcp, p, &target.authority(), timeout).await {
                Ok(status) => self.ok_step(
                    quiet,
                    Step::ProxyConnect,
                    format!(
                        "the proxy {} opened a tunnel to {} ({status})",
                        p.display,
                        target.authority()
                    ),
                    t0,
                ),
                Err((reason, message)) => {
                    self.push(Step::ProxyConnect, reason, message, Vec::new(), t0);
                    return Err(());
                }
            }
        }

        // TLS
        let (wire, conn_tls) = if target.https {
            let (stream, conn_tls) = self.tls_step(tcp, target, quiet, proxy.is_some()).await?;
            (Wire::Tls(Box::new(stream)), Some(conn_tls))
        } else {
            (Wire::Plain(tcp), None)
        };

        let t0 = Instant::now();
        match HttpConn::new(wire, target.clone(), conn_tls).await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.push(
                    Step::Http,
                    Reason::HttpError,
                    format!("the HTTP/1.1 connection to {} failed: {e}", target.url()),
                    Vec::new(),
                    t0,
                );
                Err(())
            }
        }
    }

    async fn tls_step(
        &mut self,
        tcp: tokio::net::TcpStream,
        target: &Target,
        quiet: bool,
        via_proxy: bool,
    ) -> Result<
        (
            tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
            ConnTls,
        ),
        (),
    > {
        let t0 = Instant::now();
        let Some(setup) = self.setup.clone() else {
            self.push(
                Step::TlsHandshake,
                Reason::InvalidOptions,
                "internal error: no TLS configuration".to_owned(),
                Vec::new(),
                t0,
            );
            return Err(());
        };
        let params = ConnParams {
            server_name: self
                .opts
                .server_name
                .clone()
                .map(|s| {
                    s.trim()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned()
                })
                .unwrap_or_else(|| target.host.clone()),
            overridden: self.opts.server_name.is_some(),
            target: target.clone(),
        };
        let server_name = match ServerName::try_from(params.server_name.clone()) {
            Ok(n) => n,
            Err(e) => {
                self.push(
                    Step::TlsHandshake,
                    Reason::InvalidOptions,
                    format!(
                        "{:?} is not a valid server name (a DNS name or an IP address): {e}",
                        params.server_name
                    ),
                    Vec::new(),
                    t0,
                );
                return Err(());
            }
        };
        let hs = setup
            .handshake(tcp, &params, server_name.clone(), self.opts.timeout)
            .await;

        // Compare with a direct connection once per origin (not for quiet reconnections).
        let comparison = match (&hs.captured, via_proxy && !quiet) {
            (Some(c), true) => match c.facts.first() {
                Some(leaf) => Some(self.direct_compare(&setup, target, server_name, leaf).await),
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
        if self.tls.is_none() {
            self.tls = Some(info);
        }

        match hs.stream {
            Ok(stream) => {
                let diagnosis = diagnosis.unwrap_or_default();
                let leaf = hs.captured.as_ref().and_then(|c| c.facts.first());
                let now = hs
                    .captured
                    .as_ref()
                    .map_or_else(|| tls::now(self.opts.now), |c| c.now);
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
                let step_index = if quiet && reason == Reason::Ok {
                    None
                } else {
                    Some(self.push(Step::TlsHandshake, reason, message, notes, t0))
                };
                Ok((
                    stream,
                    ConnTls {
                        client_auth: hs.client_auth,
                        step_index,
                    },
                ))
            }
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
                self.push(Step::TlsHandshake, reason, message, notes, t0);
                Err(())
            }
        }
    }

    /// Fetch the chain directly (no proxy) and compare it with the one seen through the
    /// proxy.
    async fn direct_compare(
        &self,
        setup: &TlsSetup,
        target: &Target,
        server_name: ServerName<'static>,
        leaf: &CertFacts,
    ) -> ProxyComparison {
        let timeout = self.opts.timeout.min(DIRECT_TIMEOUT);
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

    // ----- HTTP -----

    async fn http_step(&mut self, conn: HttpConn, target: Target) {
        let t0 = Instant::now();
        let mut session = Session { conn: Some(conn) };
        let result = match self.opts.transport {
            Transport::StreamableHttp => self.streamable(&mut session, &target).await,
            Transport::Sse => self.sse(&mut session, &target).await,
            Transport::Auto => self.auto(&mut session, &target).await,
        };
        match result {
            Ok(o) | Err(Halt::Fail(o)) => {
                self.push(Step::Http, o.reason, o.message, o.notes, t0);
            }
            Err(Halt::Stop) => {}
        }
    }

    /// A connection to `target`'s origin: the session's when it can be reused, else a new
    /// one.
    async fn conn_for<'s>(
        &mut self,
        session: &'s mut Session,
        target: &Target,
    ) -> Result<&'s mut HttpConn, Halt> {
        let reuse = match session.conn.as_mut() {
            Some(c) if c.origin.same_origin(target) => c.reusable(self.opts.timeout).await,
            _ => false,
        };
        if !reuse {
            session.conn = None;
            let conn = self.connect(target).await.map_err(|()| Halt::Stop)?;
            session.conn = Some(conn);
        }
        session.conn.as_mut().ok_or_else(|| {
            Outcome::fail(
                Reason::HttpError,
                "internal error: no connection".to_owned(),
            )
        })
    }

    /// Send one request (no redirects). A TLS alert or close right after a handshake in
    /// which the server asked for a client certificate turns the TLS step into
    /// [`Reason::ClientCertificateRequired`].
    async fn send_once(
        &mut self,
        session: &mut Session,
        method: &Method,
        target: &Target,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Response<Incoming>, Halt> {
        let timeout = self.opts.timeout;
        let identity = self.setup.as_ref().and_then(|s| s.client().cloned());
        let request = http::request(method, target, headers, body).map_err(|e| {
            Outcome::fail(
                Reason::HttpError,
                format!("cannot build the request {method} {}: {e}", target.url()),
            )
        })?;
        let conn = self.conn_for(session, target).await?;
        let failure = match conn.send(request, timeout).await {
            Ok(response) => return Ok(response),
            Err(f) => f,
        };
        let io = conn.io_failure();
        if let (Some(conn_tls), Some(io)) = (&conn.tls, &io)
            && io.is_alert_or_close()
            && let Some((reason, message)) =
                tls::client_cert_failure(&conn_tls.client_auth, identity.as_deref(), &io.cause())
        {
            let index = conn_tls.step_index;
            session.conn = None;
            self.fail_tls_after_handshake(index, reason, message);
            return Err(Halt::Stop);
        }
        if failure.timed_out {
            return Err(Outcome::fail(
                Reason::Timeout,
                format!(
                    "{method} {} got no response within {}; the server (or a proxy in front of it) accepted the connection but does not answer",
                    target.url(),
                    secs(timeout)
                ),
            ));
        }
        let detail = match &io {
            Some(io) if io.tls.is_some() => format!(" ({})", io.cause()),
            _ => String::new(),
        };
        Err(Outcome::fail(
            Reason::HttpError,
            format!(
                "{method} {} failed: {}{detail}; the server closed the connection without a valid HTTP answer (is this an HTTP endpoint?)",
                target.url(),
                failure.text
            ),
        ))
    }

    /// Replace the TLS step of a connection (or add one) with a failure found after the
    /// handshake.
    fn fail_tls_after_handshake(&mut self, index: Option<usize>, reason: Reason, message: String) {
        match index.and_then(|i| self.steps.get_mut(i)) {
            Some(step) if step.step == Step::TlsHandshake => {
                step.ok = false;
                step.reason = reason;
                step.message = message;
                step.notes.clear();
            }
            _ => {
                self.push(
                    Step::TlsHandshake,
                    reason,
                    message,
                    Vec::new(),
                    Instant::now(),
                );
            }
        }
    }

    /// Send a request, following redirects (at most [`MAX_REDIRECTS`]). Returns the final
    /// response and the URL that gave it.
    async fn exchange(
        &mut self,
        session: &mut Session,
        method: &Method,
        target: &Target,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(Response<Incoming>, Target), Halt> {
        let mut current = target.clone();
        let mut hops = 0;
        loop {
            let response = self
                .send_once(session, method, &current, headers, body.clone())
                .await?;
            let status = response.status();
            if !status.is_redirection() || status == hyper::StatusCode::NOT_MODIFIED {
                return Ok((response, current));
            }
            let Some(location) = http::header(&response, "location") else {
                return Ok((response, current));
            };
            let next = current.join(&location).map_err(|e| {
                Outcome::fail(
                    Reason::HttpError,
                    format!(
                        "{method} {} was redirected ({}) to an unusable Location {location:?}: {e}",
                        current.url(),
                        status.as_u16()
                    ),
                )
            })?;
            self.redirects.push(Redirect {
                status: status.as_u16(),
                from: current.url(),
                to: next.url(),
            });
            if current.https && !next.https {
                return Err(Halt::Fail(
                    downgrade(method, status.as_u16(), &current, &next).status(status.as_u16()),
                ));
            }
            hops += 1;
            if hops > MAX_REDIRECTS {
                let chain = self
                    .redirects
                    .iter()
                    .rev()
                    .take(MAX_REDIRECTS + 1)
                    .rev()
                    .map(|r| format!("{} → ({}) {}", r.from, r.status, r.to))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Outcome::fail(
                    Reason::HttpError,
                    format!(
                        "{method} {} was redirected more than {MAX_REDIRECTS} times ({chain}); fix the redirect loop or configure the final URL",
                        target.url()
                    ),
                ));
            }
            if let Ok((_, true)) =
                http::read_body(response.into_body(), SNIPPET_LIMIT, self.opts.timeout).await
            {
                session.mark_clean();
            }
            current = next;
        }
    }

    /// Read (a prefix of) a body to quote it.
    async fn quote_body(&self, session: &mut Session, response: Response<Incoming>) -> String {
        match http::read_body(response.into_body(), SNIPPET_LIMIT, self.opts.timeout).await {
            Ok((bytes, complete)) => {
                if complete {
                    session.mark_clean();
                }
                let s = snippet(&bytes);
                if s.is_empty() {
                    "empty body".to_owned()
                } else {
                    format!("body: {s:?}")
                }
            }
            Err(e) => e,
        }
    }

    fn auth_outcome(
        &self,
        method: &Method,
        url: &Target,
        response: &Response<Incoming>,
    ) -> Outcome {
        let status = response.status().as_u16();
        let challenge = http::header(response, "www-authenticate")
            .map(|w| format!(" (WWW-Authenticate: {w})"))
            .unwrap_or_default();
        Outcome::new(
            Reason::AuthenticationRequired,
            format!(
                "{method} {} answered {}{challenge}: TLS and HTTP work, and the endpoint requires authorization (MCP authorization/OAuth); the probe does not authenticate, so the MCP handshake was not checked",
                url.url(),
                status_text(status)
            ),
        )
        .status(status)
    }

    /// A non-2xx answer where an MCP answer was expected.
    async fn not_mcp_status(
        &self,
        session: &mut Session,
        method: &Method,
        url: &Target,
        response: Response<Incoming>,
    ) -> Halt {
        let status = response.status().as_u16();
        let ct = content_type(&response);
        let asked = session.client_auth_asked();
        let body = self.quote_body(session, response).await;
        if status == 400 && asked && body.to_ascii_lowercase().contains("certificate") {
            return Halt::Fail(
                Outcome::new(
                    Reason::ClientCertificateRequired,
                    format!(
                        "{method} {} answered {} ({body}): the server (nginx-style ssl_verify_client) wants a client certificate it did not get or did not accept; pass --cert and --key with a certificate it trusts",
                        url.url(),
                        status_text(status)
                    ),
                )
                .status(status),
            );
        }
        if status >= 500 {
            return Halt::Fail(
                Outcome::new(
                    Reason::HttpError,
                    format!(
                        "{method} {} answered {} ({}, {body}): the server, or a proxy or ingress in front of it, failed; check its logs",
                        url.url(),
                        status_text(status),
                        describe_ct(&ct)
                    ),
                )
                .status(status),
            );
        }
        Halt::Fail(
            Outcome::new(
                Reason::NotAnMcpEndpoint,
                format!(
                    "{method} {} answered {} ({}, {body}), not an MCP answer; check the URL's path (usually /mcp for streamable-http, /sse for sse) and the transport",
                    url.url(),
                    status_text(status),
                    describe_ct(&ct)
                ),
            )
            .status(status),
        )
    }

    async fn wrong_content_type(
        &self,
        session: &mut Session,
        method: &Method,
        url: &Target,
        response: Response<Incoming>,
        expected: &str,
    ) -> Halt {
        let status = response.status().as_u16();
        let ct = content_type(&response);
        let body = self.quote_body(session, response).await;
        let what = if media_type(&ct) == "text/html" {
            " (a web page)"
        } else {
            ""
        };
        Halt::Fail(
            Outcome::new(
                Reason::NotAnMcpEndpoint,
                format!(
                    "{method} {} answered {} with {}{what} ({body}), not {expected}: this URL is not an MCP endpoint; check its path (usually /mcp for streamable-http, /sse for sse) and the transport",
                    url.url(),
                    status_text(status),
                    describe_ct(&ct)
                ),
            )
            .status(status),
        )
    }

    /// Wait on an event stream for the JSON-RPC response with id 1.
    async fn await_response(
        &self,
        stream: &mut SseStream,
        url: &Target,
        only_message_events: bool,
    ) -> Result<Value, Halt> {
        let deadline = Instant::now() + self.opts.timeout;
        loop {
            match stream.next(deadline).await {
                Ok(Some(event)) => {
                    if only_message_events && event.event != "message" {
                        continue;
                    }
                    if let Ok(v) = serde_json::from_str::<Value>(&event.data)
                        && response_to_initialize(&v).is_some()
                    {
                        return Ok(v);
                    }
                }
                Ok(None) => {
                    return Err(Outcome::fail(
                        Reason::McpError,
                        format!(
                            "the event stream of {} ended without the answer to initialize",
                            url.url()
                        ),
                    ));
                }
                Err(SseError::Timeout) => {
                    return Err(Outcome::fail(
                        Reason::Timeout,
                        format!(
                            "no answer to initialize arrived on the event stream of {} within {}",
                            url.url(),
                            secs(self.opts.timeout)
                        ),
                    ));
                }
                Err(SseError::Failed(e)) => {
                    return Err(Outcome::fail(
                        Reason::HttpError,
                        format!("{} ({})", e, url.url()),
                    ));
                }
            }
        }
    }

    // ----- MCP transports -----

    async fn auto(&mut self, session: &mut Session, target: &Target) -> Result<Outcome, Halt> {
        let sse_first = target.path_only().trim_end_matches('/').ends_with("/sse");
        let (first_name, second_name) = if sse_first {
            (Transport::Sse, Transport::StreamableHttp)
        } else {
            (Transport::StreamableHttp, Transport::Sse)
        };
        let first = if sse_first {
            self.sse(session, target).await
        } else {
            self.streamable(session, target).await
        };
        match first {
            Err(Halt::Fail(f))
                if f.reason == Reason::NotAnMcpEndpoint
                    && matches!(f.status, Some(400 | 404 | 405 | 406 | 415)) =>
            {
                let second = if sse_first {
                    self.streamable(session, target).await
                } else {
                    self.sse(session, target).await
                };
                match second {
                    Ok(mut o) => {
                        o.notes.insert(
                            0,
                            format!(
                                "{first_name} was tried first (transport auto): {}",
                                f.message
                            ),
                        );
                        Ok(o)
                    }
                    Err(Halt::Fail(g)) => {
                        let mut f = f;
                        f.notes.push(format!(
                            "{second_name} was tried too (transport auto): {}",
                            g.message
                        ));
                        Err(Halt::Fail(f))
                    }
                    Err(Halt::Stop) => Err(Halt::Stop),
                }
            }
            other => other,
        }
    }

    async fn streamable(
        &mut self,
        session: &mut Session,
        target: &Target,
    ) -> Result<Outcome, Halt> {
        let post = Method::POST;
        let headers = json_headers(MCP_PROTOCOL_VERSION, None);
        let (response, url) = self
            .exchange(session, &post, target, &headers, initialize_body())
            .await?;
        let status = response.status().as_u16();
        let ct = content_type(&response);
        let session_id = http::header(&response, "mcp-session-id");
        if status == 401 || status == 403 {
            let o = self.auth_outcome(&post, &url, &response);
            let _ = self.quote_body(session, response).await;
            return Ok(o);
        }
        if !(200..300).contains(&status) {
            return Err(self.not_mcp_status(session, &post, &url, response).await);
        }
        let answer = match media_type(&ct).as_str() {
            "application/json" => {
                let (bytes, complete) =
                    http::read_body(response.into_body(), JSON_LIMIT, self.opts.timeout)
                        .await
                        .map_err(|e| {
                            Outcome::fail(Reason::HttpError, format!("{post} {}: {e}", url.url()))
                        })?;
                if complete {
                    session.mark_clean();
                }
                serde_json::from_slice::<Value>(&bytes).map_err(|e| {
                    Halt::Fail(
                        Outcome::new(
                            Reason::NotAnMcpEndpoint,
                            format!(
                                "{post} {} answered {} with Content-Type {ct}, but the body is not JSON ({e}): {:?}",
                                url.url(),
                                status_text(status),
                                snippet(&bytes)
                            ),
                        )
                        .status(status),
                    )
                })?
            }
            "text/event-stream" => {
                let mut stream = SseStream::new(response.into_body());
                let v = self.await_response(&mut stream, &url, false).await?;
                if stream.ended() {
                    session.mark_clean();
                }
                v
            }
            _ => {
                return Err(self
                    .wrong_content_type(
                        session,
                        &post,
                        &url,
                        response,
                        "application/json or text/event-stream",
                    )
                    .await);
            }
        };
        let init = parse_initialize(&answer, &url.url())?;
        let mut notes = Vec::new();
        if init.protocol_version != MCP_PROTOCOL_VERSION {
            notes.push(format!(
                "the server chose protocol version {} (the probe asked for {MCP_PROTOCOL_VERSION})",
                init.protocol_version
            ));
        }

        // notifications/initialized
        let headers = json_headers(&init.protocol_version, session_id.as_deref());
        let initialized = match self
            .exchange(session, &post, &url, &headers, initialized_body())
            .await
        {
            Ok((r, _)) => {
                let s = r.status().as_u16();
                let _ = self.quote_body(session, r).await;
                if !(200..300).contains(&s) {
                    notes.push(format!(
                        "the server answered notifications/initialized with {}; a conforming server answers 202 Accepted",
                        status_text(s)
                    ));
                }
                format!("; notifications/initialized → {s}")
            }
            Err(Halt::Stop) => return Err(Halt::Stop),
            Err(Halt::Fail(o)) => {
                notes.push(format!("notifications/initialized failed: {}", o.message));
                String::new()
            }
        };

        // End the session.
        if let Some(id) = &session_id {
            let delete = Method::DELETE;
            let headers = vec![
                ("mcp-session-id", id.clone()),
                ("mcp-protocol-version", init.protocol_version.clone()),
            ];
            match self
                .exchange(session, &delete, &url, &headers, Bytes::new())
                .await
            {
                Ok((r, _)) => {
                    let s = r.status().as_u16();
                    let _ = self.quote_body(session, r).await;
                    if s == 405 {
                        notes.push(format!(
                            "session {id} stays open: the server does not let clients end sessions (DELETE → 405)"
                        ));
                    } else if !(200..300).contains(&s) {
                        notes.push(format!(
                            "ending session {id} with DELETE got {}",
                            status_text(s)
                        ));
                    }
                }
                Err(Halt::Stop) => return Err(Halt::Stop),
                Err(Halt::Fail(o)) => {
                    notes.push(format!("ending the session failed: {}", o.message))
                }
            }
        }

        let session_text = session_id
            .as_deref()
            .map(|s| format!(", session {s}"))
            .unwrap_or_default();
        let redirected = if url.url() == target.url() {
            String::new()
        } else {
            format!(" (after redirects from {})", target.url())
        };
        let message = format!(
            "POST {}{redirected} → {} ({}): {}{session_text}{initialized}",
            url.url(),
            status_text(status),
            media_type(&ct),
            describe_server(&init)
        );
        self.mcp = Some(McpInfo {
            transport: Transport::StreamableHttp,
            url: url.url(),
            protocol_version: Some(init.protocol_version),
            server_name: init.server_name,
            server_version: init.server_version,
            session_id,
            endpoint: None,
            endpoint_url: None,
        });
        let mut o = Outcome::new(Reason::Ok, message).status(status);
        o.notes = notes;
        Ok(o)
    }

    async fn sse(&mut self, session: &mut Session, target: &Target) -> Result<Outcome, Halt> {
        let get = Method::GET;
        let headers = vec![
            ("accept", "text/event-stream".to_owned()),
            ("cache-control", "no-cache".to_owned()),
        ];
        let (response, url) = self
            .exchange(session, &get, target, &headers, Bytes::new())
            .await?;
        let status = response.status().as_u16();
        let ct = content_type(&response);
        if status == 401 || status == 403 {
            let o = self.auth_outcome(&get, &url, &response);
            let _ = self.quote_body(session, response).await;
            return Ok(o);
        }
        if !(200..300).contains(&status) {
            return Err(self.not_mcp_status(session, &get, &url, response).await);
        }
        if media_type(&ct) != "text/event-stream" {
            return Err(self
                .wrong_content_type(session, &get, &url, response, "text/event-stream")
                .await);
        }
        let mut stream = SseStream::new(response.into_body());
        let deadline = Instant::now() + self.opts.timeout;
        let endpoint = loop {
            match stream.next(deadline).await {
                Ok(Some(event)) if event.event == "endpoint" => break event.data,
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(Halt::Fail(
                        Outcome::new(
                            Reason::NotAnMcpEndpoint,
                            format!(
                                "GET {} opened an event stream, but it ended without an endpoint event; this is not the SSE transport's stream",
                                url.url()
                            ),
                        )
                        .status(status),
                    ));
                }
                Err(SseError::Timeout) => {
                    return Err(Outcome::fail(
                        Reason::Timeout,
                        format!(
                            "GET {} opened an event stream, but no endpoint event came within {}; if this is a streamable-http endpoint, use --transport streamable-http",
                            url.url(),
                            secs(self.opts.timeout)
                        ),
                    ));
                }
                Err(SseError::Failed(e)) => {
                    return Err(Outcome::fail(
                        Reason::HttpError,
                        format!("GET {}: {e}", url.url()),
                    ));
                }
            }
        };
        let endpoint_url = url.join(&endpoint).map_err(|e| {
            Outcome::fail(
                Reason::NotAnMcpEndpoint,
                format!(
                    "the endpoint event of {} holds {endpoint:?}, which is not a URL: {e}",
                    url.url()
                ),
            )
        })?;
        if url.https && !endpoint_url.https {
            return Err(Outcome::fail(
                Reason::SchemeDowngradeRedirect,
                format!(
                    "the endpoint event of {} points at {}, which leaves TLS: clients would POST their messages in clear text; make the server announce an https:// (or relative) endpoint (behind a TLS-terminating proxy: forward X-Forwarded-Proto)",
                    url.url(),
                    endpoint_url.url()
                ),
            ));
        }
        let mut notes = Vec::new();
        if !endpoint_url.same_origin(&url) {
            notes.push(format!(
                "the endpoint {} is on another origin than the stream {}",
                endpoint_url.url(),
                url.url()
            ));
        }

        // initialize over the endpoint; the answer comes on the stream.
        let post = Method::POST;
        let mut post_session = Session::default();
        let headers = json_headers(MCP_PROTOCOL_VERSION, None);
        let (presponse, purl) = self
            .exchange(
                &mut post_session,
                &post,
                &endpoint_url,
                &headers,
                initialize_body(),
            )
            .await?;
        let pstatus = presponse.status().as_u16();
        if !(200..300).contains(&pstatus) {
            let body = self.quote_body(&mut post_session, presponse).await;
            return Err(Outcome::fail(
                Reason::McpError,
                format!(
                    "GET {} announced the endpoint {endpoint:?}, but POST initialize to {} answered {} ({body}); check the server's message endpoint",
                    url.url(),
                    purl.url(),
                    status_text(pstatus)
                ),
            ));
        }
        let inline = if media_type(&content_type(&presponse)) == "application/json" {
            http::read_body(presponse.into_body(), JSON_LIMIT, self.opts.timeout)
                .await
                .ok()
                .and_then(|(b, _)| serde_json::from_slice::<Value>(&b).ok())
                .filter(|v| response_to_initialize(v).is_some())
        } else {
            let _ = self.quote_body(&mut post_session, presponse).await;
            None
        };
        let answer = match inline {
            Some(v) => v,
            None => self.await_response(&mut stream, &url, true).await?,
        };
        let init = parse_initialize(&answer, &endpoint_url.url())?;
        if init.protocol_version != MCP_PROTOCOL_VERSION {
            notes.push(format!(
                "the server chose protocol version {} (the probe asked for {MCP_PROTOCOL_VERSION})",
                init.protocol_version
            ));
        }
        let headers = json_headers(&init.protocol_version, None);
        match self
            .exchange(
                &mut post_session,
                &post,
                &endpoint_url,
                &headers,
                initialized_body(),
            )
            .await
        {
            Ok((r, _)) => {
                let s = r.status().as_u16();
                let _ = self.quote_body(&mut post_session, r).await;
                if !(200..300).contains(&s) {
                    notes.push(format!(
                        "the server answered notifications/initialized with {}",
                        status_text(s)
                    ));
                }
            }
            Err(Halt::Stop) => return Err(Halt::Stop),
            Err(Halt::Fail(o)) => {
                notes.push(format!("notifications/initialized failed: {}", o.message));
            }
        }
        drop(stream);

        let message = format!(
            "GET {} → {} (text/event-stream): endpoint {endpoint}; POST initialize → {pstatus}, {}",
            url.url(),
            status_text(status),
            describe_server(&init)
        );
        self.mcp = Some(McpInfo {
            transport: Transport::Sse,
            url: url.url(),
            protocol_version: Some(init.protocol_version),
            server_name: init.server_name,
            server_version: init.server_version,
            session_id: None,
            endpoint: Some(endpoint),
            endpoint_url: Some(endpoint_url.url()),
        });
        let mut o = Outcome::new(Reason::Ok, message).status(status);
        o.notes = notes;
        Ok(o)
    }
}

/// The https → http redirect failure, naming both URLs.
fn downgrade(method: &Method, status: u16, from: &Target, to: &Target) -> Outcome {
    let suggestion = format!("https://{}{}", from.host_header(), to.path);
    let slash = if to.path_only() == format!("{}/", from.path_only()) {
        format!(" The redirect only adds a trailing slash: configure {suggestion} directly.")
    } else {
        String::new()
    };
    Outcome::new(
        Reason::SchemeDowngradeRedirect,
        format!(
            "{method} {} was redirected ({}) to {}, which leaves TLS: an MCP client either follows it and sends its traffic unencrypted, or fails (\"Session terminated\"); configure the URL the server wants, with https ({suggestion}), or make the server keep the scheme in redirects (behind a TLS-terminating proxy: forward X-Forwarded-Proto).{slash}",
            from.url(),
            status_text(status),
            to.url()
        ),
    )
}
