//! HTTP requests over the probe's connections: reuse or reconnect, one request, and the
//! redirect chain (at most [`MAX_REDIRECTS`], https → http refused), with the failures an
//! exchange can end in.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Response};
use tokio::time::Instant;

use super::Runner;
use super::text::{snippet, status_text};
use crate::probe::http::{self, HttpConn};
use crate::probe::net::secs;
use crate::probe::target::Target;
use crate::probe::tls;
use crate::probe::{MAX_REDIRECTS, Reason, Redirect, Step};

/// The most the probe reads of a body it only quotes.
pub(super) const SNIPPET_LIMIT: usize = 4 * 1024;

/// How an HTTP-level exchange ended badly.
pub(super) enum Halt {
    /// A failing step was already recorded (a connection step, or the TLS step after a
    /// post-handshake alert).
    Stop,
    /// The HTTP step fails with this.
    Fail(Outcome),
}

/// The HTTP step's result.
pub(super) struct Outcome {
    pub(super) reason: Reason,
    pub(super) message: String,
    pub(super) notes: Vec<String>,
    pub(super) status: Option<u16>,
}

impl Outcome {
    pub(super) fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            notes: Vec::new(),
            status: None,
        }
    }

    pub(super) fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub(super) fn fail(reason: Reason, message: impl Into<String>) -> Halt {
        Halt::Fail(Self::new(reason, message))
    }
}

/// The connection requests go over (replaced when it cannot be reused).
#[derive(Default)]
pub(super) struct Session {
    pub(super) conn: Option<HttpConn>,
}

impl Session {
    pub(super) fn mark_clean(&mut self) {
        if let Some(c) = self.conn.as_mut() {
            c.mark_clean();
        }
    }

    pub(super) fn client_auth_asked(&self) -> bool {
        self.conn
            .as_ref()
            .and_then(|c| c.tls.as_ref())
            .is_some_and(|t| t.client_auth.asked)
    }
}

impl Runner<'_> {
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

    /// Send one request to `target` (no redirects). A TLS alert or close right after a handshake in
    /// which the server asked for a client certificate turns the TLS step into
    /// [`Reason::ClientCertificateRequired`].
    async fn send_once(
        &mut self,
        session: &mut Session,
        method: &Method,
        target: &Target,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, Halt> {
        let timeout = self.opts.timeout;
        let identity = self.setup.as_ref().and_then(|s| s.client().cloned());
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
    pub(super) async fn exchange(
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
            let request = http::request(method, &current, headers, body.clone()).map_err(|e| {
                Outcome::fail(
                    Reason::HttpError,
                    format!("cannot build the request {method} {}: {e}", current.url()),
                )
            })?;
            let response = self.send_once(session, method, &current, request).await?;
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
    pub(super) async fn quote_body(
        &self,
        session: &mut Session,
        response: Response<Incoming>,
    ) -> String {
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
