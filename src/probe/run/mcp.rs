//! The MCP stage: which transport to speak, the `initialize` messages and how to read
//! their answers (shared by [`super::streamable`] and [`super::sse_transport`]).

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Runner;
use super::exchange::{Halt, Outcome, Session};
use super::text::snippet;
use crate::probe::http::{HttpConn, SseError, SseStream};
use crate::probe::net::secs;
use crate::probe::sse::SseEvent;
use crate::probe::target::Target;
use crate::probe::{MCP_PROTOCOL_VERSION, Reason, Step, Transport};

/// The most the probe reads of a JSON answer.
pub(super) const JSON_LIMIT: usize = 1024 * 1024;

/// The parts of an `initialize` result the report keeps.
pub(super) struct InitResult {
    pub(super) protocol_version: String,
    pub(super) server_name: Option<String>,
    pub(super) server_version: Option<String>,
}

/// The `initialize` request (id 1) with the probe's protocol version and client info.
pub(super) fn initialize_body() -> Bytes {
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

/// The `notifications/initialized` notification.
pub(super) fn initialized_body() -> Bytes {
    Bytes::from(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
}

/// The headers of a JSON-RPC POST, with the session id when there is one.
pub(super) fn json_headers(
    protocol_version: &str,
    session_id: Option<&str>,
) -> Vec<(&'static str, String)> {
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

/// The JSON-RPC response with id 1 in `v` (an object, or a batch array).
pub(super) fn response_to_initialize(v: &Value) -> Option<&Value> {
    match v {
        Value::Array(items) => items.iter().find(|i| i.get("id") == Some(&json!(1))),
        Value::Object(_) if v.get("id") == Some(&json!(1)) => Some(v),
        _ => None,
    }
}

/// Read `initialize`'s answer.
pub(super) fn parse_initialize(v: &Value, url: &str) -> Result<InitResult, Halt> {
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

/// `MCP server "name" version, protocol P`, for messages.
pub(super) fn describe_server(init: &InitResult) -> String {
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

/// The note when the server chose another protocol version than the probe asked for.
pub(super) fn version_note(init: &InitResult) -> Option<String> {
    (init.protocol_version != MCP_PROTOCOL_VERSION).then(|| {
        format!(
            "the server chose protocol version {} (the probe asked for {MCP_PROTOCOL_VERSION})",
            init.protocol_version
        )
    })
}

/// The first event on `stream` that `want` picks, within `timeout`; `Ok(None)` when the
/// stream ends first.
///
/// # Errors
/// [`SseError`] at the deadline or when the stream fails.
pub(super) async fn wait_for<T>(
    stream: &mut SseStream,
    timeout: std::time::Duration,
    mut want: impl FnMut(SseEvent) -> Option<T>,
) -> Result<Option<T>, SseError> {
    let deadline = Instant::now() + timeout;
    while let Some(event) = stream.next(deadline).await? {
        if let Some(v) = want(event) {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

impl Runner<'_> {
    /// The HTTP and MCP stage over `conn` to `target`, with the configured transport; its
    /// outcome is the [`Step::Http`] step.
    pub(super) async fn http_step(&mut self, conn: HttpConn, target: Target) {
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

    /// Transport auto: the transport the path suggests first (`…/sse`: SSE), the other
    /// when the first finds no MCP endpoint there (400, 404, 405, 406 or 415).
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

    /// Wait on an event stream for the JSON-RPC response with id 1 (of `message` events
    /// only, when `only_message_events`).
    pub(super) async fn await_response(
        &self,
        stream: &mut SseStream,
        url: &Target,
        only_message_events: bool,
    ) -> Result<Value, Halt> {
        let answer = wait_for(stream, self.opts.timeout, |event| {
            if only_message_events && event.event != "message" {
                return None;
            }
            serde_json::from_str::<Value>(&event.data)
                .ok()
                .filter(|v| response_to_initialize(v).is_some())
        })
        .await;
        match answer {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(Outcome::fail(
                Reason::McpError,
                format!(
                    "the event stream of {} ended without the answer to initialize",
                    url.url()
                ),
            )),
            Err(SseError::Timeout) => Err(Outcome::fail(
                Reason::Timeout,
                format!(
                    "no answer to initialize arrived on the event stream of {} within {}",
                    url.url(),
                    secs(self.opts.timeout)
                ),
            )),
            Err(SseError::Failed(e)) => Err(Outcome::fail(
                Reason::HttpError,
                format!("{} ({})", e, url.url()),
            )),
        }
    }

    /// Sends `notifications/initialized` to `url`: the status it got (its body read), or
    /// the failure's message.
    ///
    /// # Errors
    /// [`Halt::Stop`] when a failing connection step was recorded.
    pub(super) async fn notify_initialized(
        &mut self,
        session: &mut Session,
        url: &Target,
        headers: &[(&str, String)],
    ) -> Result<Result<u16, String>, Halt> {
        let post = hyper::Method::POST;
        match self
            .exchange(session, &post, url, headers, initialized_body())
            .await
        {
            Ok((r, _)) => {
                let s = r.status().as_u16();
                let _ = self.quote_body(session, r).await;
                Ok(Ok(s))
            }
            Err(Halt::Stop) => Err(Halt::Stop),
            Err(Halt::Fail(o)) => Ok(Err(o.message)),
        }
    }
}
