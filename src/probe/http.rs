//! HTTP/1.1 over the probe's connection (hyper's client `conn` API), with the stream's I/O
//! errors recorded so that a TLS alert arriving after the handshake (a rejected client
//! certificate under TLS 1.3) can be told apart from an ordinary HTTP failure.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use super::net::secs;
use super::sse::{SseEvent, SseParser};
use super::target::Target;
use super::tls::{self, ClientAuthSeen};

/// An I/O failure seen on the connection.
#[derive(Debug, Clone)]
pub(crate) struct IoFailure {
    /// The error kind.
    pub(crate) kind: io::ErrorKind,
    /// The rustls error (an alert from the server, ...), if that is what it was.
    pub(crate) tls: Option<rustls::Error>,
    /// The error as text.
    pub(crate) text: String,
}

impl IoFailure {
    /// The server sent an alert or closed/reset the connection.
    pub(crate) fn is_alert_or_close(&self) -> bool {
        matches!(self.tls, Some(rustls::Error::AlertReceived(_)))
            || matches!(
                self.kind,
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            )
    }

    /// How the connection ended, for messages: `alert CertificateRequired`, ...
    pub(crate) fn cause(&self) -> String {
        match &self.tls {
            Some(rustls::Error::AlertReceived(desc)) => format!("alert {desc:?}"),
            Some(other) => other.to_string(),
            None if self.kind == io::ErrorKind::UnexpectedEof => {
                "it then closed the connection".to_owned()
            }
            None => self.text.clone(),
        }
    }
}

type FailureSlot = Arc<Mutex<Option<IoFailure>>>;

fn record(slot: &FailureSlot, failure: IoFailure) {
    let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.is_none() {
        *guard = Some(failure);
    }
}

fn record_error(slot: &FailureSlot, e: &io::Error) {
    record(
        slot,
        IoFailure {
            kind: e.kind(),
            tls: tls::rustls_error(e).cloned(),
            text: e.to_string(),
        },
    );
}

/// The connection under HTTP: plain TCP or TLS.
pub(crate) enum Wire {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<TlsStream<TcpStream>>),
}

/// [`Wire`] with its I/O errors (and EOF) recorded.
struct Recording {
    inner: Wire,
    slot: FailureSlot,
}

impl AsyncRead for Recording {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = match &mut this.inner {
            Wire::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        match &poll {
            Poll::Ready(Err(e)) => record_error(&this.slot, e),
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => record(
                &this.slot,
                IoFailure {
                    kind: io::ErrorKind::UnexpectedEof,
                    tls: None,
                    text: "the server closed the connection".to_owned(),
                },
            ),
            _ => {}
        }
        poll
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = match &mut this.inner {
            Wire::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        if let Poll::Ready(Err(e)) = &poll {
            record_error(&this.slot, e);
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = match &mut this.inner {
            Wire::Plain(s) => Pin::new(s).poll_flush(cx),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        };
        if let Poll::Ready(Err(e)) = &poll {
            record_error(&this.slot, e);
        }
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.inner {
            Wire::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Wire::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// TLS facts of a connection, for diagnosing failures that show up during HTTP.
#[derive(Debug, Clone)]
pub(crate) struct ConnTls {
    /// What the server asked of the client certificate side.
    pub(crate) client_auth: ClientAuthSeen,
    /// The index of this connection's TLS step in the report (none when not recorded).
    pub(crate) step_index: Option<usize>,
}

/// An HTTP/1.1 client connection.
pub(crate) struct HttpConn {
    /// The origin it is connected to.
    pub(crate) origin: Target,
    /// TLS facts (https only).
    pub(crate) tls: Option<ConnTls>,
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
    slot: FailureSlot,
    dirty: bool,
}

impl Drop for HttpConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub(crate) struct SendFailure {
    /// No response within the timeout.
    pub(crate) timed_out: bool,
    /// hyper's error.
    pub(crate) text: String,
}

impl HttpConn {
    /// The HTTP/1.1 handshake over `transport`.
    ///
    /// # Errors
    /// hyper's error, as text.
    pub(crate) async fn new(
        transport: Wire,
        origin: Target,
        tls: Option<ConnTls>,
    ) -> Result<Self, String> {
        let slot: FailureSlot = Arc::new(Mutex::new(None));
        let io = TokioIo::new(Recording {
            inner: transport,
            slot: slot.clone(),
        });
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            // Errors surface through the requests and the failure slot.
            let _ = conn.await;
        });
        Ok(Self {
            origin,
            tls,
            sender,
            driver,
            slot,
            dirty: false,
        })
    }

    /// Whether another request can go over this connection (the previous response was read
    /// to its end and the connection is still open).
    pub(crate) async fn reusable(&mut self, timeout: Duration) -> bool {
        if self.dirty || self.sender.is_closed() {
            return false;
        }
        matches!(
            tokio::time::timeout(timeout, self.sender.ready()).await,
            Ok(Ok(()))
        )
    }

    /// The previous response's body was read to its end.
    pub(crate) fn mark_clean(&mut self) {
        self.dirty = false;
    }

    /// The first I/O failure seen on the connection.
    pub(crate) fn io_failure(&self) -> Option<IoFailure> {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Send one request and wait for the response head.
    ///
    /// # Errors
    /// [`SendFailure`] when there is no response.
    pub(crate) async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, SendFailure> {
        self.dirty = true;
        match tokio::time::timeout(timeout, self.sender.send_request(request)).await {
            Err(_) => Err(SendFailure {
                timed_out: true,
                text: format!("no response within {}", secs(timeout)),
            }),
            Ok(Err(e)) => {
                // Let the connection task record the I/O error that ended it.
                tokio::task::yield_now().await;
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
                Err(SendFailure {
                    timed_out: false,
                    text,
                })
            }
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// Build a request in origin form with `Host` and `User-Agent`.
///
/// # Errors
/// When a header value is invalid.
pub(crate) fn request(
    method: &Method,
    target: &Target,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(target.path.as_str())
        .header(hyper::header::HOST, target.host_header())
        .header(
            hyper::header::USER_AGENT,
            format!("mcptrust-probe/{}", crate::VERSION),
        );
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder.body(Full::new(body)).map_err(|e| e.to_string())
}

/// A header's value as text.
pub(crate) fn header(response: &Response<Incoming>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Read a body, at most `limit` bytes. Returns the bytes and whether the body ended.
///
/// # Errors
/// When the body does not end (or reach `limit`) within `timeout`, or the connection fails.
pub(crate) async fn read_body(
    mut body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<(Bytes, bool), String> {
    let deadline = Instant::now() + timeout;
    let mut buf = BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(format!(
                    "the response body did not end within {}",
                    secs(timeout)
                ));
            }
            Ok(None) => return Ok((buf.freeze(), true)),
            Ok(Some(Err(e))) => return Err(format!("reading the response body failed: {e}")),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    if buf.len() >= limit {
                        buf.truncate(limit);
                        return Ok((buf.freeze(), false));
                    }
                }
            }
        }
    }
}

/// Why no event came.
#[derive(Debug)]
pub(crate) enum SseError {
    /// The deadline passed.
    Timeout,
    /// The connection failed, or the stream is too long.
    Failed(String),
}

/// Events of a `text/event-stream` response body.
pub(crate) struct SseStream {
    body: Incoming,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    ended: bool,
    read: usize,
}

impl SseStream {
    const LIMIT: usize = 8 * 1024 * 1024;

    /// Events of `body`.
    pub(crate) fn new(body: Incoming) -> Self {
        Self {
            body,
            parser: SseParser::default(),
            pending: VecDeque::new(),
            ended: false,
            read: 0,
        }
    }

    /// The body ended.
    pub(crate) fn ended(&self) -> bool {
        self.ended && self.pending.is_empty()
    }

    /// The next event; `Ok(None)` at the end of the stream.
    ///
    /// # Errors
    /// [`SseError`] at the deadline or on failure.
    pub(crate) async fn next(&mut self, deadline: Instant) -> Result<Option<SseEvent>, SseError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return Err(SseError::Timeout),
                Ok(None) => {
                    self.ended = true;
                    if let Some(event) = self.parser.finish() {
                        self.pending.push_back(event);
                    }
                }
                Ok(Some(Err(e))) => {
                    return Err(SseError::Failed(format!("the event stream failed: {e}")));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.read += data.len();
                        if self.read > Self::LIMIT {
                            return Err(SseError::Failed(format!(
                                "the event stream sent more than {} bytes without the expected event",
                                Self::LIMIT
                            )));
                        }
                        self.pending.extend(self.parser.push(&data));
                    }
                }
            }
        }
    }
}
