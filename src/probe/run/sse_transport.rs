//! The MCP HTTP+SSE transport (MCP 2024-11-05): an event stream announces the endpoint
//! messages are POSTed to, and answers arrive on the stream.

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;

use super::Runner;
use super::exchange::{Halt, Outcome, Session};
use super::mcp::{
    JSON_LIMIT, describe_server, initialize_body, json_headers, parse_initialize,
    response_to_initialize, version_note, wait_for,
};
use super::text::{content_type, media_type, status_text};
use crate::probe::http::{self, SseError, SseStream};
use crate::probe::net::secs;
use crate::probe::target::Target;
use crate::probe::{MCP_PROTOCOL_VERSION, McpInfo, Reason, Transport};

impl Runner<'_> {
    /// The HTTP+SSE transport (MCP 2024-11-05): GET the event stream, wait for its
    /// `endpoint` event, POST `initialize` there and read the answer on the stream.
    pub(super) async fn sse(
        &mut self,
        session: &mut Session,
        target: &Target,
    ) -> Result<Outcome, Halt> {
        let headers = vec![
            ("accept", "text/event-stream".to_owned()),
            ("cache-control", "no-cache".to_owned()),
        ];
        let get = Method::GET;
        let request = (&get, headers.as_slice(), Bytes::new());
        let (response, url) = match self.first_answer(session, target, request).await? {
            Ok(answer) => answer,
            Err(auth) => return Ok(auth),
        };
        let status = response.status().as_u16();
        let ct = content_type(&response);
        if media_type(&ct) != "text/event-stream" {
            return Err(self
                .wrong_content_type(session, &get, &url, response, "text/event-stream")
                .await);
        }
        let mut stream = SseStream::new(response.into_body());
        let endpoint = match wait_for(&mut stream, self.opts.timeout, |event| {
            (event.event == "endpoint").then_some(event.data)
        })
        .await
        {
            Ok(Some(endpoint)) => endpoint,
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
        notes.extend(version_note(&init));
        let headers = json_headers(&init.protocol_version, None);
        match self
            .notify_initialized(&mut post_session, &endpoint_url, &headers)
            .await?
        {
            Ok(s) if !(200..300).contains(&s) => notes.push(format!(
                "the server answered notifications/initialized with {}",
                status_text(s)
            )),
            Ok(_) => {}
            Err(failure) => notes.push(format!("notifications/initialized failed: {failure}")),
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
