//! The mutating admission webhook: AdmissionReview v1 over HTTPS (HTTP/1.1 and HTTP/2).
//!
//! - [`admission`]: bytes in, AdmissionReview out (no HTTP);
//! - [`router`]: `POST /mutate` (and `/mutate/`) as an axum [`Router`];
//! - [`WebhookServer`] / [`serve`]: the TLS accept loop with graceful drain, on a listener
//!   the caller binds;
//! - [`run`]: everything from [`WebhookArgs`]: certificates, hot reload (directory watch and
//!   SIGHUP), bind, readiness, serve;
//! - [`standalone`]: `mcptrust webhook`, the webhook plus the admin port without a cluster;
//! - [`shutdown_signal`]: SIGTERM or Ctrl-C, for `main`.
//!
//! The admission handler answers from the [`Mutator`] alone (memory, no API calls) and
//! always with HTTP 200 and a valid AdmissionReview, including for bodies it refuses.

pub mod admission;
pub mod standalone;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use admission::{Answer, ReviewOutcome, encode_review, invalid_review, review};

use crate::admin::Readiness;
use crate::inject::Mutator;
use crate::metrics::Metrics;
pub use crate::shutdown::shutdown_signal;
use crate::tls::{CertReloader, CertResolver, TlsError, server_config, sighup_triggers};

/// Default `--max-body-bytes`: 3 MiB, above the API server's 1.5 MiB object limit plus the
/// AdmissionReview envelope.
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Default `--drain-timeout-seconds`: fits in the default 30s termination grace period.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers (HTTP/1) and its body.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags of the webhook server.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Address of the HTTPS admission endpoint.
    #[arg(
        long = "webhook-listen",
        env = "MCPTRUST_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub webhook_listen: SocketAddr,

    /// PEM certificate chain (leaf first) served by the webhook; reloaded on change and
    /// on SIGHUP.
    #[arg(
        long = "tls-cert-file",
        env = "MCPTRUST_TLS_CERT_FILE",
        default_value = "/etc/mcptrust/webhook-tls/tls.crt"
    )]
    pub tls_cert_file: PathBuf,

    /// PEM private key (PKCS#8, SEC1 or PKCS#1) of the serving certificate.
    #[arg(
        long = "tls-key-file",
        env = "MCPTRUST_TLS_KEY_FILE",
        default_value = "/etc/mcptrust/webhook-tls/tls.key"
    )]
    pub tls_key_file: PathBuf,

    /// Largest AdmissionReview body accepted, in bytes; larger ones are refused with a
    /// valid AdmissionReview.
    #[arg(
        long = "max-body-bytes",
        env = "MCPTRUST_MAX_BODY_BYTES",
        default_value_t = DEFAULT_MAX_BODY_BYTES
    )]
    pub max_body_bytes: usize,

    /// On shutdown, how long in-flight requests may take to finish, in seconds.
    #[arg(
        long = "drain-timeout-seconds",
        env = "MCPTRUST_DRAIN_TIMEOUT_SECONDS",
        default_value_t = 25
    )]
    pub drain_timeout_seconds: u64,
}

/// Errors that stop the webhook.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The serving certificate could not be loaded or watched.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The SIGHUP handler could not be installed.
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(#[source] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    mutator: Arc<dyn Mutator>,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
}

/// The admission routes: `POST /mutate` and `POST /mutate/`, answering every request body
/// with HTTP 200, `Content-Type: application/json` and an AdmissionReview (see
/// [`admission`]). Bodies over `max_body_bytes` are refused with an `InvalidRequest`
/// review. Each answer is counted in `metrics`.
pub fn router(mutator: Arc<dyn Mutator>, metrics: Arc<Metrics>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/mutate/", post(mutate))
        .with_state(AppState {
            mutator,
            metrics,
            max_body_bytes,
        })
}

async fn mutate(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let read = tokio::time::timeout(
        REQUEST_READ_TIMEOUT,
        read_body(body, &headers, state.max_body_bytes),
    )
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "timed out reading the request body after {REQUEST_READ_TIMEOUT:?}"
        ))
    });

    let started = Instant::now();
    let (review, outcome) = match read {
        Ok(bytes) => admission::review(&bytes, state.mutator.as_ref()),
        Err(message) => (
            invalid_review(&message, None).into(),
            ReviewOutcome::Invalid,
        ),
    };
    let encoded = encode_review(&review);
    state
        .metrics
        .observe_admission(outcome.as_str(), started.elapsed());

    if let Some(response) = review.response() {
        match outcome {
            ReviewOutcome::Invalid | ReviewOutcome::Error => tracing::warn!(
                uid = %response.uid,
                outcome = outcome.as_str(),
                message = %response.result.message,
                "admission request refused"
            ),
            _ => {
                tracing::debug!(uid = %response.uid, outcome = outcome.as_str(), "admission request answered")
            }
        }
    }
    ([(header::CONTENT_TYPE, "application/json")], encoded).into_response()
}

/// Reads the whole body if it is at most `limit` bytes. A larger body is still read (and
/// discarded) up to a bound, so that an HTTP/1 client gets the refusal instead of a reset
/// connection.
async fn read_body(mut body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, String> {
    let too_large = |seen: usize| {
        format!(
            "the AdmissionReview body ({seen} bytes or more) exceeds the limit of {limit} bytes"
        )
    };
    let discard_up_to = limit.saturating_mul(4).max(16 * 1024 * 1024);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(declared) = declared
        && declared > discard_up_to
    {
        return Err(too_large(declared));
    }

    // A body that arrives as one data frame is used as it is, without a copy. Otherwise
    // the frames are gathered in one buffer, allocated once at the declared length.
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("cannot read the request body: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > limit {
            first = None;
            buf = bytes::BytesMut::new();
            if seen > discard_up_to {
                break;
            }
            continue;
        }
        if seen == data.len() {
            // The first data frame (empty frames before it count for nothing).
            first = Some(data);
            continue;
        }
        if let Some(first) = first.take() {
            let expected = declared.unwrap_or(0).min(limit);
            buf.reserve(expected.max(first.len() + data.len()));
            buf.extend_from_slice(&first);
        }
        buf.extend_from_slice(&data);
    }
    if seen > limit {
        return Err(too_large(seen));
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// The HTTPS server: TLS from a rustls [`ServerConfig`] (hot-swappable certificate),
/// HTTP/1.1 and HTTP/2 on the same port, graceful drain on shutdown.
pub struct WebhookServer {
    tls: Arc<ServerConfig>,
    mutator: Arc<dyn Mutator>,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
    drain_timeout: Duration,
}

impl WebhookServer {
    /// A server with [`DEFAULT_MAX_BODY_BYTES`] and [`DEFAULT_DRAIN_TIMEOUT`].
    pub fn new(tls: Arc<ServerConfig>, mutator: Arc<dyn Mutator>, metrics: Arc<Metrics>) -> Self {
        Self {
            tls,
            mutator,
            metrics,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// Sets the largest accepted body, in bytes.
    #[must_use]
    pub fn with_max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// Sets how long in-flight requests may run after shutdown begins.
    #[must_use]
    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }

    /// The server's routes (see [`router`]), e.g. for `tower::ServiceExt::oneshot` tests.
    pub fn router(&self) -> Router {
        router(
            self.mutator.clone(),
            self.metrics.clone(),
            self.max_body_bytes,
        )
    }

    /// Accepts connections on `listener` until `shutdown` resolves, then closes the
    /// listener (new connections are refused), asks every connection to finish (HTTP/1
    /// closes after the response in flight, HTTP/2 sends GOAWAY) and waits up to the drain
    /// timeout before dropping the remaining ones.
    ///
    /// Each connection runs in its own task: a failed or slow TLS handshake (bounded by
    /// [`HANDSHAKE_TIMEOUT`]) affects no other client. Accept errors are logged and retried.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let router = self.router();
        let acceptor = TlsAcceptor::from(self.tls);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(REQUEST_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);

        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            tracing::warn!(error = %err, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let builder = builder.clone();
                    let service = TowerToHyperService::new(router.clone());
                    let watcher = graceful.watcher();
                    connections.spawn(async move {
                        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(err)) => {
                                log_handshake_error(peer, &err);
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls), service);
                        if let Err(err) = watcher.watch(conn.into_owned()).await {
                            tracing::debug!(%peer, error = %err, "connection ended with an error");
                        }
                    });
                }
            }
        }

        drop(listener);
        tracing::info!(
            connections = connections.len(),
            timeout = ?self.drain_timeout,
            "webhook stopped accepting; draining connections"
        );
        let drained = async {
            graceful.shutdown().await;
            while connections.join_next().await.is_some() {}
        };
        if tokio::time::timeout(self.drain_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!("drain timeout reached; closing the remaining connections");
        }
        // Dropping the JoinSet aborts whatever is left.
    }
}

fn log_handshake_error(peer: SocketAddr, err: &std::io::Error) {
    let rustls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        // The client rejected our certificate: usually a caBundle that does not match.
        Some(rustls::Error::AlertReceived(alert)) => tracing::warn!(
            %peer,
            ?alert,
            "TLS handshake failed: the client rejected the webhook certificate (check the caBundle)"
        ),
        _ => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
    }
}

/// Serves the webhook on `listener` with default limits until `shutdown`; see
/// [`WebhookServer::serve`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    mutator: Arc<dyn Mutator>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    WebhookServer::new(tls, mutator, metrics)
        .serve(listener, shutdown)
        .await;
}

/// Runs the webhook from its flags until `shutdown` resolves and the drain is over:
///
/// 1. loads the certificate and key (fails fast if they are unusable);
/// 2. starts the reloader: directory watch of both files and SIGHUP;
/// 3. binds `--webhook-listen`, then marks `ready`;
/// 4. serves; when `shutdown` resolves, marks `ready` false, then drains
///    (`--drain-timeout-seconds`) and stops the reloader.
///
/// Reloads are counted in `metrics`. Must be called inside a Tokio runtime.
///
/// # Errors
/// [`WebhookError::Tls`] for an unusable certificate or an unwatchable directory,
/// [`WebhookError::Signal`] if SIGHUP cannot be handled, [`WebhookError::Bind`] if the
/// address cannot be bound.
pub async fn run(
    args: &WebhookArgs,
    mutator: Arc<dyn Mutator>,
    metrics: Arc<Metrics>,
    ready: Readiness,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WebhookError> {
    let resolver = Arc::new(CertResolver::from_files(
        &args.tls_cert_file,
        &args.tls_key_file,
    )?);
    if let Some(info) = resolver.info() {
        tracing::info!(
            serial = %info.serial,
            subject = %info.subject,
            not_after = %info.not_after_text,
            "loaded webhook serving certificate"
        );
    }
    let tls = server_config(resolver.clone())?;
    let triggers = sighup_triggers().map_err(WebhookError::Signal)?;
    let reloader = CertReloader::new(resolver, &args.tls_cert_file, &args.tls_key_file)
        .with_metrics(metrics.clone())
        .spawn(triggers)?;

    let listener = match TcpListener::bind(args.webhook_listen).await {
        Ok(listener) => listener,
        Err(source) => {
            reloader.stop().await;
            return Err(WebhookError::Bind {
                addr: args.webhook_listen,
                source,
            });
        }
    };
    tracing::info!(addr = %args.webhook_listen, "webhook listening");
    ready.set_ready();

    let draining = ready.clone();
    let shutdown = async move {
        shutdown.await;
        draining.set_not_ready();
    };
    WebhookServer::new(tls, mutator, metrics)
        .with_max_body_bytes(args.max_body_bytes)
        .with_drain_timeout(Duration::from_secs(args.drain_timeout_seconds))
        .serve(listener, shutdown)
        .await;
    reloader.stop().await;
    tracing::info!("webhook stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        webhook: WebhookArgs,
        #[command(flatten)]
        admin: crate::admin::AdminArgs,
    }

    fn chunked(chunks: &[&'static [u8]]) -> Body {
        let frames: Vec<Result<Bytes, std::io::Error>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        Body::from_stream(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn bodies_are_read_whole_in_one_frame_or_many() {
        let mut headers = HeaderMap::new();
        let one = read_body(chunked(&[b"{\"a\": 1}"]), &headers, 64).await;
        assert_eq!(one.as_deref(), Ok(&b"{\"a\": 1}"[..]));
        let many = read_body(chunked(&[b"", b"{\"a\"", b"", b": 1", b"}"]), &headers, 64).await;
        assert_eq!(many.as_deref(), Ok(&b"{\"a\": 1}"[..]));
        headers.insert(header::CONTENT_LENGTH, "9".parse().expect("header"));
        let declared = read_body(chunked(&[b"{\"a\"", b": 1}"]), &headers, 64).await;
        assert_eq!(declared.as_deref(), Ok(&b"{\"a\": 1}"[..]));
        let empty = read_body(chunked(&[]), &HeaderMap::new(), 64).await;
        assert_eq!(empty.as_deref(), Ok(&b""[..]));
        let large = read_body(chunked(&[b"12345", b"67890"]), &HeaderMap::new(), 8).await;
        assert!(
            large
                .expect_err("too large")
                .contains("exceeds the limit of 8 bytes")
        );
    }

    #[test]
    fn flags_have_documented_defaults() {
        let cli = Cli::try_parse_from(["mcptrust"]).expect("parse");
        assert_eq!(cli.webhook.webhook_listen.to_string(), "0.0.0.0:8443");
        assert_eq!(
            cli.webhook.tls_cert_file,
            PathBuf::from("/etc/mcptrust/webhook-tls/tls.crt")
        );
        assert_eq!(
            cli.webhook.tls_key_file,
            PathBuf::from("/etc/mcptrust/webhook-tls/tls.key")
        );
        assert_eq!(cli.webhook.max_body_bytes, 3_145_728);
        assert_eq!(cli.webhook.drain_timeout_seconds, 25);
        assert_eq!(cli.admin.admin_listen.to_string(), "0.0.0.0:8080");

        let cli = Cli::try_parse_from([
            "mcptrust",
            "--webhook-listen",
            "127.0.0.1:9443",
            "--max-body-bytes",
            "1024",
            "--admin-listen",
            "[::1]:9090",
        ])
        .expect("parse");
        assert_eq!(cli.webhook.webhook_listen.to_string(), "127.0.0.1:9443");
        assert_eq!(cli.webhook.max_body_bytes, 1024);
        assert_eq!(cli.admin.admin_listen.to_string(), "[::1]:9090");
    }
}
