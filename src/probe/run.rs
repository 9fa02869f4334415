//! The probe's driver: a short orchestrator over one small unit per stage, in the order of
//! the list of steps in docs/probe.md:
//!
//! | stage | unit | input → outcome |
//! | --- | --- | --- |
//! | DNS | [`connect::dns`] | a [`Route`] → addresses |
//! | TCP | [`connect::tcp`] | a route and addresses → a TCP stream |
//! | proxy CONNECT | [`connect::proxy_connect`] | a route through a proxy → a tunnel |
//! | TLS | [`handshake::tls`] | a [`handshake::TlsInput`] → a TLS stream (and [`TlsInfo`]) |
//! | HTTP/1.1 | [`connect::http1`] | a stream → an [`HttpConn`] |
//! | HTTP redirects | [`exchange`] | a request → the final response |
//! | MCP `initialize` | [`mcp`], [`streamable`], [`sse_transport`] | a connection → an [`McpInfo`] |
//!
//! Every connection stage returns a [`Stage`]: what it hands on with its message, or its
//! failure. [`Runner`] records outcomes as [`StepResult`]s and stops at the first failure.

mod answer;
mod connect;
mod exchange;
mod handshake;
mod mcp;
mod sse_transport;
mod streamable;
mod text;

use std::sync::Arc;

use tokio::time::Instant;

use super::http::{ConnTls, HttpConn, Wire};
use super::net::{self, ProxyUrl};
use super::target::Target;
use super::tls::TlsSetup;
use super::{McpInfo, ProbeOptions, ProbeReport, Reason, Redirect, Step, StepResult, TlsInfo};
use connect::Route;

/// Probe `opts.url`: DNS → TCP → proxy CONNECT → TLS → HTTP, stopping at the first
/// failure. Never fails as a function: every problem, including unusable options
/// ([`Reason::InvalidOptions`]), is in the report.
pub async fn probe(opts: &ProbeOptions) -> ProbeReport {
    let mut runner = Runner::new(opts);
    runner.run().await;
    runner.finish()
}

/// What a stage hands on when it passes, with the step's reason ([`Reason::Ok`] or a
/// warning), message and notes.
struct Passed<T> {
    value: T,
    reason: Reason,
    message: String,
    notes: Vec<String>,
}

impl<T> Passed<T> {
    /// A plain pass: [`Reason::Ok`] and no notes.
    fn ok(value: T, message: String) -> Self {
        Self {
            value,
            reason: Reason::Ok,
            message,
            notes: Vec::new(),
        }
    }
}

/// Why a stage failed: the step's reason, message and notes.
struct Failed {
    reason: Reason,
    message: String,
    notes: Vec<String>,
}

impl From<net::StepError> for Failed {
    fn from((reason, message): net::StepError) -> Self {
        Self {
            reason,
            message,
            notes: Vec::new(),
        }
    }
}

/// The outcome of one stage.
type Stage<T> = Result<Passed<T>, Failed>;

/// The report being built, and what later stages need of earlier ones.
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

    /// Records a stage's outcome as `step` (started at `t0`) and hands on its value with
    /// the step's index. A plain pass is not recorded when `quiet` (an origin already
    /// reported); failures and warnings always are.
    fn record<T>(
        &mut self,
        step: Step,
        quiet: bool,
        t0: Instant,
        outcome: Stage<T>,
    ) -> Result<(T, Option<usize>), ()> {
        match outcome {
            Ok(p) => {
                let index = if quiet && p.reason == Reason::Ok {
                    None
                } else {
                    Some(self.push(step, p.reason, p.message, p.notes, t0))
                };
                Ok((p.value, index))
            }
            Err(f) => {
                self.push(step, f.reason, f.message, f.notes, t0);
                Err(())
            }
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

    /// Options, then the connection stages, then the HTTP and MCP stage.
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

    /// DNS, TCP, proxy CONNECT, TLS and the HTTP/1.1 handshake to `target`'s origin. Steps
    /// of an origin already reported are recorded only when they fail (or warn).
    async fn connect(&mut self, target: &Target) -> Result<HttpConn, ()> {
        let quiet = self.seen_origins.iter().any(|o| o.same_origin(target));
        if !quiet {
            self.seen_origins.push(target.clone());
        }
        let route = Route {
            target,
            proxy: self.proxy.clone().filter(|_| target.https),
            timeout: self.opts.timeout,
        };

        let t0 = Instant::now();
        let (addrs, _) = self.record(Step::Dns, quiet, t0, connect::dns(&route).await)?;

        let t0 = Instant::now();
        let (mut tcp, _) = self.record(Step::Tcp, quiet, t0, connect::tcp(&route, &addrs).await)?;

        if let Some(proxy) = &route.proxy {
            let t0 = Instant::now();
            let tunnel = connect::proxy_connect(&route, proxy, &mut tcp).await;
            self.record(Step::ProxyConnect, quiet, t0, tunnel)?;
        }

        let (wire, conn_tls) = if target.https {
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
            let input = handshake::TlsInput {
                tcp,
                target,
                setup: &setup,
                opts: self.opts,
                compare_direct: route.proxy.is_some() && !quiet,
            };
            let (info, outcome) = handshake::tls(input).await;
            if self.tls.is_none() {
                self.tls = info;
            }
            let ((stream, client_auth), step_index) =
                self.record(Step::TlsHandshake, quiet, t0, outcome)?;
            let conn_tls = ConnTls {
                client_auth,
                step_index,
            };
            (Wire::Tls(Box::new(stream)), Some(conn_tls))
        } else {
            (Wire::Plain(tcp), None)
        };

        // The HTTP/1.1 handshake is recorded only when it fails.
        let t0 = Instant::now();
        let http1 = connect::http1(wire, target, conn_tls).await;
        let (conn, _) = self.record(Step::Http, true, t0, http1)?;
        Ok(conn)
    }

    fn finish(self) -> ProbeReport {
        let (verdict, summary) = match super::decisive_step(&self.steps) {
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
}
