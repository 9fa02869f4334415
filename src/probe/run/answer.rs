//! What an HTTP answer that is not the expected MCP answer means: authorization, a
//! client certificate, a failing server, or a URL that is not an MCP endpoint.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Response};

use super::Runner;
use super::exchange::{Halt, Outcome, Session};
use super::text::{content_type, describe_ct, media_type, status_text};
use crate::probe::Reason;
use crate::probe::http;
use crate::probe::target::Target;

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
