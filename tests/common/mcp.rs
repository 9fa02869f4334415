//! Test servers for the probe, all on 127.0.0.1 and stopped when dropped: an HTTPS/HTTP
//! server around a handler (hyper), MCP handlers for streamable-http and SSE, and CONNECT
//! proxies (tunnelling, refusing, or MITM re-signing). Certificates come from [`super`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{Leaf, TestCa, client_config, roots};

pub type Body = BoxBody<Bytes, Infallible>;
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config presenting `leaf`; with `client_ca_pem`, client certificates issued by
/// that CA are required. `tls12_only` restricts the versions to TLS 1.2.
pub fn server_config(
    leaf: &Leaf,
    client_ca_pem: Option<&str>,
    tls12_only: bool,
) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider());
    let builder = if tls12_only {
        builder
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
    } else {
        builder.with_safe_default_protocol_versions().unwrap()
    };
    let builder = match client_ca_pem {
        Some(pem) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(pem)), provider())
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let config = builder
        .with_single_cert(vec![CertificateDer::from(leaf.der.clone())], key)
        .unwrap();
    Arc::new(config)
}

/// A running server or proxy; stopped on drop.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response with a full body.
pub fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut b = Response::builder().status(status);
    if !content_type.is_empty() {
        b = b.header("content-type", content_type);
    }
    b.body(Full::new(body.into()).boxed()).unwrap()
}

/// The TLS settings of a server started by [`serve_switchable`], read at each connection:
/// a test changes the certificate the server presents (a server that reloads, or one that
/// keeps the old certificate). Until the first [`TlsSwitch::set`] connections are closed
/// at once.
#[derive(Clone, Default)]
pub struct TlsSwitch(Arc<Mutex<Option<Arc<ServerConfig>>>>);

impl TlsSwitch {
    /// Presents `config` from the next connection on.
    pub fn set(&self, config: Arc<ServerConfig>) {
        *self.0.lock().unwrap() = Some(config);
    }

    fn get(&self) -> Option<Arc<ServerConfig>> {
        self.0.lock().unwrap().clone()
    }
}

/// Serve `make(addr)` over HTTP/1.1 on 127.0.0.1, with TLS when `tls` is set.
pub async fn serve(
    tls: Option<Arc<ServerConfig>>,
    make: impl FnOnce(SocketAddr) -> Handler,
) -> Server {
    let fixed = tls.map(|config| {
        let switch = TlsSwitch::default();
        switch.set(config);
        switch
    });
    serve_with(fixed, make).await
}

/// Serve `make(addr)` over HTTPS on 127.0.0.1 with the TLS settings `switch` holds at
/// each connection.
pub async fn serve_switchable(
    switch: TlsSwitch,
    make: impl FnOnce(SocketAddr) -> Handler,
) -> Server {
    serve_with(Some(switch), make).await
}

async fn serve_with(tls: Option<TlsSwitch>, make: impl FnOnce(SocketAddr) -> Handler) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = make(addr);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let handler = handler.clone();
            let tls = match &tls {
                None => None,
                Some(switch) => match switch.get() {
                    Some(config) => Some(config),
                    None => continue,
                },
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(config) => {
                        let Ok(stream) = TlsAcceptor::from(config).accept(tcp).await else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    Server { addr, task }
}

/// A handler from an async closure.
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// The `initialize` result the test MCP servers give.
pub fn initialize_result(id: &Value) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "test-mcp", "version": "1.2.3"}
        }
    })
}

/// How the streamable-http test server answers `initialize`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `application/json`.
    Json,
    /// `text/event-stream` with one `message` event.
    EventStream,
}

/// A streamable-http MCP server at any path: POST initialize → result with
/// `Mcp-Session-Id: sess-123`; notifications → 202; DELETE → 204; GET → 405.
pub fn streamable_mcp(answer: Answer) -> Handler {
    handler(move |req: Request<Incoming>| async move {
        let method = req.method().clone();
        match method.as_str() {
            "POST" => {
                let accept = req
                    .headers()
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                if !(accept.contains("application/json") && accept.contains("text/event-stream")) {
                    return full(406, "text/plain", "Not Acceptable");
                }
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if v["method"] == "initialize" {
                    let result = initialize_result(&v["id"]).to_string();
                    let mut resp = match answer {
                        Answer::Json => full(200, "application/json", result),
                        Answer::EventStream => full(
                            200,
                            "text/event-stream",
                            format!("event: message\ndata: {result}\n\n"),
                        ),
                    };
                    resp.headers_mut()
                        .insert("mcp-session-id", "sess-123".parse().unwrap());
                    resp
                } else {
                    full(202, "", "")
                }
            }
            "DELETE" => full(204, "", ""),
            _ => full(405, "text/plain", "Method Not Allowed"),
        }
    })
}

/// An SSE-transport MCP server: GET /sse opens the stream with
/// `event: endpoint\ndata: /messages?sessionId=abc`; POST /messages answers 202 and sends the
/// JSON-RPC answer as a `message` event on the stream.
pub fn sse_mcp() -> Handler {
    let stream: Arc<Mutex<Option<mpsc::UnboundedSender<Bytes>>>> = Arc::new(Mutex::new(None));
    handler(move |req: Request<Incoming>| {
        let stream = stream.clone();
        async move {
            let path = req.uri().path().to_owned();
            match (req.method().as_str(), path.as_str()) {
                ("GET", "/sse") => {
                    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
                    tx.send(Bytes::from_static(
                        b": hello\n\nevent: endpoint\ndata: /messages?sessionId=abc\n\n",
                    ))
                    .unwrap();
                    *stream.lock().unwrap() = Some(tx);
                    let body = futures::stream::unfold(rx, |mut rx| async move {
                        rx.recv()
                            .await
                            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
                    });
                    Response::builder()
                        .status(200)
                        .header("content-type", "text/event-stream")
                        .body(StreamBody::new(body).boxed())
                        .unwrap()
                }
                ("POST", "/messages") => {
                    if req.uri().query() != Some("sessionId=abc") {
                        return full(400, "text/plain", "unknown session");
                    }
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if v["method"] == "initialize" {
                        let result = initialize_result(&v["id"]).to_string();
                        if let Some(tx) = stream.lock().unwrap().as_ref() {
                            let _ =
                                tx.send(Bytes::from(format!("event: message\ndata: {result}\n\n")));
                        }
                    }
                    full(202, "text/plain", "Accepted")
                }
                _ => full(404, "text/plain", "Not Found"),
            }
        }
    })
}

/// A web page at every path.
pub fn html_page() -> Handler {
    handler(|_req| async {
        full(
            200,
            "text/html; charset=utf-8",
            "<!doctype html><html><head><title>Welcome</title></head><body>Hello</body></html>",
        )
    })
}

/// Read a CONNECT request's head; returns the authority.
async fn read_connect(tcp: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.ok()?);
        if head.len() > 8192 {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    (parts.next()? == "CONNECT").then_some(())?;
    parts.next().map(str::to_owned)
}

async fn proxy_loop<F, Fut>(per_connection: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let per_connection = Arc::new(per_connection);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let f = per_connection.clone();
            tokio::spawn(async move { f(tcp).await });
        }
    });
    Server { addr, task }
}

/// A CONNECT proxy that tunnels bytes untouched.
pub async fn tunnel_proxy() -> Server {
    proxy_loop(|mut tcp| async move {
        let Some(authority) = read_connect(&mut tcp).await else {
            return;
        };
        let Ok(mut upstream) = TcpStream::connect(&authority).await else {
            let _ = tcp.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
            return;
        };
        let _ = tcp
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await;
        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
    })
    .await
}

/// A CONNECT proxy that refuses every destination with 403.
pub async fn refusing_proxy() -> Server {
    proxy_loop(|mut tcp| async move {
        if read_connect(&mut tcp).await.is_some() {
            let _ = tcp
                .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    })
    .await
}

/// A TLS-intercepting CONNECT proxy: answers 200, terminates TLS with a leaf for the
/// requested host issued by `proxy_ca`, and relays to the real server over TLS trusting
/// `upstream_ca_pem`.
pub async fn mitm_proxy(proxy_ca: Arc<TestCa>, upstream_ca_pem: String) -> Server {
    mitm_proxy_to(proxy_ca, upstream_ca_pem, None).await
}

/// [`mitm_proxy`], relaying to `upstream` whatever the CONNECT asked for (when set), so the
/// requested address can be one the client cannot reach directly.
pub async fn mitm_proxy_to(
    proxy_ca: Arc<TestCa>,
    upstream_ca_pem: String,
    upstream: Option<SocketAddr>,
) -> Server {
    proxy_loop(move |mut tcp| {
        let proxy_ca = proxy_ca.clone();
        let upstream_ca_pem = upstream_ca_pem.clone();
        async move {
            let Some(authority) = read_connect(&mut tcp).await else {
                return;
            };
            let host = authority
                .rsplit_once(':')
                .map_or(authority.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let _ = tcp
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await;
            let leaf = proxy_ca.server_leaf(&[host.as_str()]);
            let Ok(mut client) = TlsAcceptor::from(server_config(&leaf, None, false))
                .accept(tcp)
                .await
            else {
                return;
            };
            let config = client_config(&upstream_ca_pem, &[]);
            let dial = upstream.map_or_else(|| authority.clone(), |a| a.to_string());
            let Ok(up_tcp) = TcpStream::connect(&dial).await else {
                return;
            };
            let Ok(name) = ServerName::try_from(host) else {
                return;
            };
            let Ok(mut upstream) = TlsConnector::from(config).connect(name, up_tcp).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    })
    .await
}

/// A port nothing listens on (bound, then released).
pub async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}
