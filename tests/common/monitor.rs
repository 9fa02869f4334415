//! Watching a TLS server through a certificate rotation, as seed 001's health loop did:
//! [`Monitor`] makes a fresh, verified rustls handshake every 0.5 s and records what each
//! one saw; [`Stream`] holds one long-lived HTTPS response open and counts what arrives;
//! [`Forwarder`] relays TCP from the node's bridge to a pod, so that an McpServer's
//! endpoint URL can be fixed before the pod (and its IP) exists.
//!
//! Plain threads and blocking sockets: the node tests are synchronous.
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

/// The monitor's period between two handshakes.
pub const PERIOD: Duration = Duration::from_millis(500);

/// One handshake of the [`Monitor`].
#[derive(Clone, Debug)]
pub struct Sample {
    /// When the handshake started.
    pub at: Instant,
    /// The served leaf's serial (lowercase hex, as [`mcptrust::tls::CertInfo`] renders
    /// it) and SHA-256 (hex), or why the connection or the verified handshake failed.
    pub result: Result<(String, String), String>,
}

/// A thread that handshakes with `addr` every [`PERIOD`], verifying the chain against a
/// CA and the name `server_name` (SNI and SAN check), with no session resumption, so that
/// every sample shows the certificate served at that moment. Stops when dropped.
pub struct Monitor {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts the loop against `addr` (a pod IP and port), trusting only `ca_pem`.
    ///
    /// # Panics
    /// When `server_name` is neither a DNS name nor an IP address.
    pub fn start(addr: SocketAddr, ca_pem: &str, server_name: &str) -> Self {
        let config = super::client_config(ca_pem, &[b"http/1.1"]);
        let name = ServerName::try_from(server_name.to_owned()).expect("a server name");
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, flag) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                let result = handshake(addr, &config, &name);
                out.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Sample { at, result });
                std::thread::sleep(PERIOD.saturating_sub(at.elapsed()));
            }
        });
        Self {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The failed samples so far, as `(seconds since since, error)`.
    pub fn failures(&self, since: Instant) -> Vec<(f64, String)> {
        self.samples()
            .into_iter()
            .filter_map(|s| {
                let err = s.result.err()?;
                Some((s.at.saturating_duration_since(since).as_secs_f64(), err))
            })
            .collect()
    }

    /// When a handshake first saw the certificate whose SHA-256 is `sha256`.
    pub fn first_seen(&self, sha256: &str) -> Option<Instant> {
        self.samples()
            .into_iter()
            .find(|s| s.result.as_ref().is_ok_and(|(_, h)| h == sha256))
            .map(|s| s.at)
    }

    /// Whether a sample after `first_seen(sha256)` saw another certificate (a server
    /// that flips between the old and the new pair).
    pub fn flipped_back(&self, sha256: &str) -> bool {
        let mut seen = false;
        self.samples().into_iter().any(|s| match &s.result {
            Ok((_, h)) if h == sha256 => {
                seen = true;
                false
            }
            Ok(_) => seen,
            Err(_) => false,
        })
    }

    /// Waits until a handshake has seen `sha256` or `limit` passes; returns when.
    pub fn wait_for(&self, sha256: &str, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = self.first_seen(sha256) {
                return Some(at);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(PERIOD);
        }
    }

    /// One line: samples, failures, the distinct certificates seen in order.
    pub fn summary(&self) -> String {
        let samples = self.samples();
        let mut seen: Vec<String> = Vec::new();
        for s in &samples {
            if let Ok((serial, _)) = &s.result
                && seen.last() != Some(serial)
            {
                seen.push(serial.clone());
            }
        }
        format!(
            "{} handshakes, {} failed, serials served in order: {}",
            samples.len(),
            samples.iter().filter(|s| s.result.is_err()).count(),
            seen.join(" -> ")
        )
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A full, verified handshake with `addr`: the served leaf's serial and SHA-256.
fn handshake(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    name: &ServerName<'static>,
) -> Result<(String, String), String> {
    let mut conn =
        rustls::ClientConnection::new(config.clone(), name.clone()).map_err(|e| e.to_string())?;
    let mut sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    let der = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate")?
        .to_vec();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    let serial = mcptrust::tls::CertInfo::from_der(&der)?.serial;
    Ok((serial, super::sha256_hex(&der)))
}

/// One HTTPS GET of a response that never ends soon (a streaming endpoint, or a large
/// file sent at a limited rate), read on a thread that counts the bytes and records when
/// the last ones came, until the server closes or an error ends it.
pub struct Stream {
    bytes: Arc<AtomicU64>,
    last: Arc<Mutex<Instant>>,
    ended: Arc<Mutex<Option<String>>>,
    /// The certificate (SHA-256, hex) the connection was opened with.
    pub sha256: String,
}

impl Stream {
    /// Opens `https://<server_name><path>` at `addr`, verified against `ca_pem`, and
    /// starts reading.
    ///
    /// # Errors
    /// The connection, the handshake or the request failed.
    pub fn open(
        addr: SocketAddr,
        ca_pem: &str,
        server_name: &str,
        path: &str,
    ) -> Result<Self, String> {
        let config = super::client_config(ca_pem, &[b"http/1.1"]);
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let sock =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        write!(
            tls,
            "GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: keep-alive\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())?;
        let der = tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no certificate")?
            .to_vec();
        let bytes = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(Instant::now()));
        let ended = Arc::new(Mutex::new(None));
        let (b, l, e) = (bytes.clone(), last.clone(), ended.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            let why = loop {
                match tls.read(&mut buf) {
                    Ok(0) => break "the server closed the connection".to_owned(),
                    Ok(n) => {
                        b.fetch_add(n as u64, Ordering::Relaxed);
                        *l.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
                    }
                    Err(err) => break err.to_string(),
                }
            };
            *e.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
        });
        Ok(Self {
            bytes,
            last,
            ended,
            sha256: super::sha256_hex(&der),
        })
    }

    /// Bytes received so far (headers included).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// When bytes last arrived.
    pub fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why the response ended, or `None` while it is still open.
    pub fn ended(&self) -> Option<String> {
        self.ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A TCP relay from a listener on the node's bridge to a pod that may be replaced: each
/// accepted connection goes to the target set last ([`Forwarder::set_target`]), byte for
/// byte both ways (TLS passes through untouched, so a client sees the pod's certificate).
/// Stops accepting when dropped.
pub struct Forwarder {
    /// The listening port on [`super::node::HOST_IP`].
    pub port: u16,
    target: Arc<Mutex<Option<SocketAddr>>>,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    /// Listens on `HOST_IP` at a free port, with no target yet (connections are closed
    /// until one is set).
    pub fn start() -> Self {
        let listener = TcpListener::bind((super::node::HOST_IP, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (to, flag) = (target.clone(), stop.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let dest = *to.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(dest) = dest else { continue };
                std::thread::spawn(move || relay(client, dest));
            }
        });
        Self { port, target, stop }
    }

    /// Sends new connections to `addr`.
    pub fn set_target(&self, addr: SocketAddr) {
        *self.target.lock().unwrap_or_else(PoisonError::into_inner) = Some(addr);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `client` to `dest` and back until either side closes.
fn relay(client: TcpStream, dest: SocketAddr) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect_timeout(&dest, Duration::from_secs(5)) else {
        return;
    };
    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let mut client = client;
        let mut server = server;
        let _ = std::io::copy(&mut client, &mut server);
        let _ = server.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut s2, &mut c2);
    let _ = c2.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}
