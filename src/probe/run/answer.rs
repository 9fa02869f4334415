//! What an HTTP answer that is not the expected MCP answer means: authorization, a
//! client certificate, a failing server, or a URL that is not an MCP endpoint; and the
//! small formatting helpers those messages share.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Response};

use super::Runner;
use super::exchange::{Halt, Outcome, Session};
use crate::probe::Reason;
use crate::probe::http;
use crate::probe::target::Target;

/// The response's `Content-Type` as sent, or empty.
pub(super) fn content_type(response: &Response<Incoming>) -> String {
    http::header(response, "content-type").unwrap_or_default()
}

/// The media type of a `Content-Type` (parameters dropped), lowercase.
pub(super) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `Content-Type X`, or `no Content-Type`, for messages.
fn describe_ct(content_type: &str) -> String {
    if content_type.is_empty() {
        "no Content-Type".to_owned()
    } else {
        format!("Content-Type {content_type}")
    }
}

/// The first 120 characters of a body, whitespace collapsed, for messages.
pub(super) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s: String = collapsed.chars().take(120).collect();
    if collapsed.chars().count() > 120 {
        s.push('…');
    }
    s
}

/// `404 Not Found`: the status with its canonical reason, when it has one.
pub(super) fn status_text(status: u16) -> String {
    match hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(r) => format!("{status} {r}"),
        None => status.to_string(),
    }
}

impl Runner<'_> {
    /// 401 or 403: TLS and HTTP work, and the endpoint wants authorization.
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

    pub(super) async fn wrong_content_type(
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

    /// Sends the first request of an MCP transport to `target` (following redirects) and
    /// checks its answer: 401 or 403 ends the stage with [`Reason::AuthenticationRequired`]
    /// (`Ok(Err(..))`); a 2xx answer is handed back with the URL that gave it.
    ///
    /// # Errors
    /// Any other status ([`Self::not_mcp_status`]), and the exchange's own failures.
    pub(super) async fn first_answer(
        &mut self,
        session: &mut Session,
        target: &Target,
        (method, headers, body): (&Method, &[(&str, String)], Bytes),
    ) -> Result<Result<(Response<Incoming>, Target), Outcome>, Halt> {
        let (response, url) = self
            .exchange(session, method, target, headers, body)
            .await?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            let o = self.auth_outcome(method, &url, &response);
            let _ = self.quote_body(session, response).await;
            return Ok(Err(o));
        }
        if !(200..300).contains(&status) {
            return Err(self.not_mcp_status(session, method, &url, response).await);
        }
        Ok(Ok((response, url)))
    }
}
