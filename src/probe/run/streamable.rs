//! The MCP streamable-http transport (MCP 2025-06-18): `initialize` by POST, answered
//! with JSON or on an event stream, then `notifications/initialized` and the end of the
//! session.

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;

use super::Runner;
use super::exchange::{Halt, Outcome, Session};
use super::mcp::{
    JSON_LIMIT, describe_server, initialize_body, json_headers, parse_initialize, version_note,
};
use super::text::{content_type, media_type, snippet, status_text};
use crate::probe::http::{self, SseStream};
use crate::probe::target::Target;
use crate::probe::{MCP_PROTOCOL_VERSION, McpInfo, Reason, Transport};

impl Runner<'_> {
    /// The streamable-http transport: POST `initialize` (JSON or an event stream in
    /// answer), `notifications/initialized`, and DELETE of the session when one was given.
    pub(super) async fn streamable(
        &mut self,
        session: &mut Session,
        target: &Target,
    ) -> Result<Outcome, Halt> {
        let post = Method::POST;
        let headers = json_headers(MCP_PROTOCOL_VERSION, None);
        let request = (&post, headers.as_slice(), initialize_body());
        let (response, url) = match self.first_answer(session, target, request).await? {
            Ok(answer) => answer,
            Err(auth) => return Ok(auth),
        };
        let status = response.status().as_u16();
        let ct = content_type(&response);
        let session_id = http::header(&response, "mcp-session-id");
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
        let mut notes: Vec<String> = version_note(&init).into_iter().collect();

        // notifications/initialized
        let headers = json_headers(&init.protocol_version, session_id.as_deref());
        let initialized = match self.notify_initialized(session, &url, &headers).await? {
            Ok(s) => {
                if !(200..300).contains(&s) {
                    notes.push(format!(
                        "the server answered notifications/initialized with {}; a conforming server answers 202 Accepted",
                        status_text(s)
                    ));
                }
                format!("; notifications/initialized → {s}")
            }
            Err(failure) => {
                notes.push(format!("notifications/initialized failed: {failure}"));
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
}
