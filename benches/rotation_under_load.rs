//! Rotation and shutdown under load, against the real `mcptrust webhook` binary on
//! 127.0.0.1 (no cluster): prints figures, asserts nothing about time.
//!
//! Run: `cargo bench --bench rotation_under_load` (or `bash bench/rotation-under-load.sh`).
//!
//! 1. **Rotation.** `$RATE` (default 1,000) requests/s for `$DURATION_SECS` (default 30 s) from
//!    8 connections (half HTTP/1.1, half HTTP/2, each reconnecting every 50 requests so that
//!    handshakes happen all the time), posting the realistic AdmissionReview bodies of
//!    `tests/fixtures/admission/` in turn, while the serving certificate is rotated 10
//!    times: 5 by a kubelet-style `..data` symlink swap (a rename in the watched
//!    directory), then 5 by SIGHUP alone (the files change behind a symlink in a directory
//!    that is not watched; the bench checks that the old certificate is still served
//!    0.5 s later, then sends SIGHUP). A request fails when it cannot be sent, gets no
//!    answer, a status other than 200, or an answer that is not `allowed` with its uid.
//! 2. **SIGTERM.** A fresh server under the same load gets SIGTERM after 3 s. Requests are
//!    split by when they were sent: before the signal (accepted: none may fail) and after
//!    it (refused once the listener is closed, as intended).
//!
//! Every handshake is a full one (no session resumption) and verifies the certificate
//! against the test CA, so a certificate and key that did not match, or a half-written
//! file, would show up as failed requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcptrust::tls::CertInfo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::{Leaf, TestCa, client_config, free_port};

const WORKERS: usize = 8;

// ----------------------------------------------------------------------------- PKI ------

// The test CA and leaves of the integration tests (`tests/common`).

/// Writes `leaf` into a new directory `<parent>/<name>/` and atomically points the symlink
/// `<parent>/<link>` at it (the kubelet's `..data` swap).
fn publish(parent: &Path, name: &str, link: &str, target: &str, leaf: &Leaf) {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &leaf.key_pem).unwrap();
    let tmp = parent.join(format!("{link}_tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, parent.join(link)).unwrap();
}

// -------------------------------------------------------------------------- server ------

struct Server {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Server {
    async fn start(cert: &Path, key: &Path, log: &Path) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mcptrust"))
            .args(["webhook", "--tls-cert-file"])
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key)
            .args(["--webhook-listen", &addr.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--drain-timeout-seconds", "10"])
            .env("MCPTRUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mcptrust webhook");
        let server = Self { child, addr, admin };
        for _ in 0..200 {
            if server
                .admin_get("/readyz")
                .await
                .is_some_and(|(s, _)| s == 200)
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the webhook did not become ready");
    }

    async fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        let mut tcp = TcpStream::connect(self.admin).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        tcp.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} failed");
    }

    fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// -------------------------------------------------------------------------- client ------

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, String), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let serial = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| CertInfo::from_der(der).unwrap().serial)
        .ok_or("no peer certificate")?;
    Ok((tls, serial))
}

async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    h2: bool,
) -> Result<(Sender, String), String> {
    let (tls, serial) = handshake(addr, config).await?;
    let io = TokioIo::new(tls);
    let sender = if h2 {
        let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        Sender::H2(s)
    } else {
        let (s, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        Sender::H1(s)
    };
    Ok((sender, serial))
}

impl Sender {
    async fn ready(&mut self) -> bool {
        match self {
            Sender::H1(s) => s.ready().await.is_ok(),
            Sender::H2(s) => s.ready().await.is_ok(),
        }
    }

    async fn post(&mut self, body: Bytes, uid: &str) -> Result<(), String> {
        let req = Request::post("/mutate")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        let resp = match self {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        }
        .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if status != 200 {
            return Err(format!("status {status}"));
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| "answer not JSON")?;
        if v["response"]["allowed"] != true || v["response"]["uid"] != uid {
            return Err("answer not allowed or uid not echoed".to_owned());
        }
        Ok(())
    }
}

/// One request as the client saw it.
struct Record {
    /// When it was sent (or its connection attempted), since the load began.
    sent: Duration,
    /// Scheduled send time to answer (coordinated omission corrected).
    latency: Duration,
    result: Result<(), String>,
}

#[derive(Default)]
struct Shared {
    records: Vec<Record>,
    serials: BTreeMap<String, u64>,
}

struct Load {
    addr: SocketAddr,
    ca_pem: String,
    rate: f64,
    duration: Duration,
    requests_per_connection: usize,
}

fn bodies() -> Vec<(Bytes, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let raw = std::fs::read(&p).unwrap();
            let v: Value = serde_json::from_slice(&raw).unwrap();
            let uid = v["request"]["uid"].as_str().unwrap().to_owned();
            (Bytes::from(raw), uid)
        })
        .collect()
}

/// Runs the load from `t0` until `t0 + duration`; returns every record.
async fn run_load(load: Arc<Load>, t0: Instant) -> Shared {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let bodies = Arc::new(bodies());
    let period = Duration::from_secs_f64(WORKERS as f64 / load.rate);
    let end = t0 + load.duration;
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (load, shared, bodies) = (load.clone(), shared.clone(), bodies.clone());
        let h2 = w % 2 == 1;
        let config = client_config(&load.ca_pem, &[if h2 { b"h2" } else { b"http/1.1" }]);
        tasks.push(tokio::spawn(async move {
            let mut due = t0 + period.mul_f64(w as f64 / WORKERS as f64);
            let mut n = w;
            'connections: while due < end {
                tokio::time::sleep_until(due.into()).await;
                let attempt = Instant::now();
                let (mut sender, serial) = match connect(load.addr, config.clone(), h2).await {
                    Ok(c) => c,
                    Err(e) => {
                        shared.lock().unwrap().records.push(Record {
                            sent: attempt - t0,
                            latency: Instant::now() - due,
                            result: Err(e),
                        });
                        due += period;
                        continue;
                    }
                };
                *shared.lock().unwrap().serials.entry(serial).or_default() += 1;
                for _ in 0..load.requests_per_connection {
                    if due >= end {
                        break 'connections;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    if !sender.ready().await {
                        // Closed by the server between requests: reconnect for this one.
                        continue 'connections;
                    }
                    let (body, uid) = &bodies[n % bodies.len()];
                    n += WORKERS;
                    let sent = Instant::now();
                    let result = sender.post(body.clone(), uid).await;
                    let failed = result.is_err();
                    shared.lock().unwrap().records.push(Record {
                        sent: sent - t0,
                        latency: Instant::now() - due,
                        result,
                    });
                    due += period;
                    if failed {
                        continue 'connections;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(shared)
        .ok()
        .expect("workers done")
        .into_inner()
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

fn summarize(label: &str, records: &[&Record], seconds: f64) {
    let mut lat: Vec<Duration> = records
        .iter()
        .filter(|r| r.result.is_ok())
        .map(|r| r.latency)
        .collect();
    lat.sort();
    let failed: Vec<&&Record> = records.iter().filter(|r| r.result.is_err()).collect();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &failed {
        *kinds.entry(r.result.as_ref().err().unwrap()).or_default() += 1;
    }
    println!(
        "| {label:<44} | {:>8} | {:>6.0} | {:>6.2} | {:>6.2} | {:>7.2} | {:>6} |",
        records.len(),
        records.len() as f64 / seconds.max(1e-9),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        failed.len()
    );
    for (kind, n) in kinds {
        println!("|   failure: {kind} x{n}");
    }
}

fn table_header() {
    println!(
        "| {:<44} | {:>8} | {:>6} | {:>6} | {:>6} | {:>7} | {:>6} |",
        "requests", "count", "req/s", "p50 ms", "p99 ms", "max ms", "failed"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
}

async fn served_serial(addr: SocketAddr, ca_pem: &str) -> Option<String> {
    handshake(addr, client_config(ca_pem, &[b"http/1.1"]))
        .await
        .ok()
        .map(|(_, s)| s)
}

async fn wait_for_serial(addr: SocketAddr, ca_pem: &str, serial: &str) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if served_serial(addr, ca_pem).await.as_deref() == Some(serial) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------- main ------

async fn rotation(rate: f64, seconds: u64) {
    let tmp = tempfile::tempdir().unwrap();
    // The watched directory: tls.crt -> ..data/tls.crt, ..data -> ..gen_N (kubelet layout).
    let watched = tmp.path().join("watched");
    // Not watched: SIGHUP rotations swap `current` here.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&watched).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let ca = TestCa::new("mcptrust rotation bench CA");
    let mut serial = 1000;
    let first = ca.leaf(serial);
    publish(&watched, "..gen_0", "..data", "..gen_0", &first);
    for name in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), watched.join(name)).unwrap();
    }
    let server = Server::start(
        &watched.join("tls.crt"),
        &watched.join("tls.key"),
        &tmp.path().join("webhook.log"),
    )
    .await;
    let (rss_idle, _) = server.rss();
    let load = Arc::new(Load {
        addr: server.addr,
        ca_pem: ca.pem.clone(),
        rate,
        duration: Duration::from_secs(seconds),
        requests_per_connection: 50,
    });
    println!(
        "rotation under load: {rate} req/s for {seconds} s, {WORKERS} connections (4 HTTP/1.1, 4 HTTP/2), \
         a new connection every 50 requests, 10 rotations"
    );
    let t0 = Instant::now() + Duration::from_millis(100);
    let loader = tokio::spawn(run_load(load, t0));

    let step = Duration::from_secs(seconds).div_f64(10.5);
    let mut rotations = Vec::new();
    for i in 1..=10u32 {
        tokio::time::sleep_until((t0 + step.mul_f64(f64::from(i) - 0.5)).into()).await;
        serial += 1;
        let leaf = ca.leaf(serial);
        let at = t0.elapsed();
        if i <= 5 {
            let gen_name = format!("..gen_{i}");
            publish(&watched, &gen_name, "..data", &gen_name, &leaf);
            let took = wait_for_serial(server.addr, &ca.pem, &leaf.serial).await;
            rotations.push((i, "..data rename (file watch)", at, took, None));
        } else {
            if i == 6 {
                // Hand the files over to `other/current` (same certificate: no reload).
                let current = ca_leaf_copy(&watched);
                publish(&other, "gen_5", "current", "gen_5", &current);
                let target = other.join("current");
                let tmp_link = watched.join("..data_tmp");
                std::os::unix::fs::symlink(&target, &tmp_link).unwrap();
                std::fs::rename(&tmp_link, watched.join("..data")).unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let gen_name = format!("gen_{i}");
            publish(&other, &gen_name, "current", &gen_name, &leaf);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = served_serial(server.addr, &ca.pem).await;
            let unchanged = before.as_deref() != Some(leaf.serial.as_str());
            let signalled = Instant::now();
            server.signal("HUP");
            let took = wait_for_serial(server.addr, &ca.pem, &leaf.serial)
                .await
                .map(|d| d.min(signalled.elapsed()));
            rotations.push((
                i,
                "SIGHUP (files changed unwatched)",
                at,
                took,
                Some(unchanged),
            ));
        }
    }
    let shared = loader.await.unwrap();
    let (rss_after, rss_peak) = server.rss();
    let metrics = server
        .admin_get("/metrics")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default();

    println!();
    println!("| # | how | at s | new cert served after | old cert still served before SIGHUP |");
    println!("|---|---|---|---|---|");
    for (i, how, at, took, unchanged) in &rotations {
        println!(
            "| {i} | {how} | {:.1} | {} | {} |",
            at.as_secs_f64(),
            took.map_or("NOT SEEN".to_owned(), |d| format!("{} ms", d.as_millis())),
            unchanged.map_or("-", |u| if u { "yes" } else { "NO" })
        );
    }
    println!();
    table_header();
    let all: Vec<&Record> = shared.records.iter().collect();
    summarize("all requests during 10 rotations", &all, seconds as f64);
    println!();
    println!(
        "handshakes: {}, by served certificate serial: {:?}",
        shared.serials.values().sum::<u64>(),
        shared.serials
    );
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("mcptrust_tls_reloads_total"))
    {
        println!("metric: {line}");
    }
    println!(
        "webhook RSS: idle {:.1} MiB, after {:.1} MiB, peak {:.1} MiB",
        rss_idle as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_peak as f64 / 1024.0
    );
    println!(
        "RESULT rotation: {} requests, {} failed, {} of 10 rotations served",
        all.len(),
        all.iter().filter(|r| r.result.is_err()).count(),
        rotations.iter().filter(|r| r.3.is_some()).count()
    );
}

/// The leaf currently in the watched directory (read back from the files).
fn ca_leaf_copy(watched: &Path) -> Leaf {
    Leaf::from_pem(
        std::fs::read_to_string(watched.join("tls.crt")).unwrap(),
        std::fs::read_to_string(watched.join("tls.key")).unwrap(),
    )
}

async fn sigterm(rate: f64) {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new("mcptrust rotation bench CA");
    let leaf = ca.leaf(1);
    std::fs::write(tmp.path().join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(tmp.path().join("tls.key"), &leaf.key_pem).unwrap();
    let mut server = Server::start(
        &tmp.path().join("tls.crt"),
        &tmp.path().join("tls.key"),
        &tmp.path().join("webhook.log"),
    )
    .await;
    let load = Arc::new(Load {
        addr: server.addr,
        ca_pem: ca.pem.clone(),
        rate,
        duration: Duration::from_secs(6),
        requests_per_connection: 1_000_000,
    });
    println!();
    println!(
        "SIGTERM under load: {rate} req/s, {WORKERS} keep-alive connections (4 HTTP/1.1, 4 HTTP/2), \
         SIGTERM at 3 s, load until 6 s"
    );
    let t0 = Instant::now() + Duration::from_millis(100);
    let loader = tokio::spawn(run_load(load, t0));
    tokio::time::sleep_until((t0 + Duration::from_secs(3)).into()).await;
    let signal_at = t0.elapsed();
    let signalled = Instant::now();
    server.signal("TERM");
    let mut exit = None;
    while signalled.elapsed() < Duration::from_secs(15) {
        if let Some(status) = server.child.try_wait().unwrap() {
            exit = Some((status, signalled.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shared = loader.await.unwrap();
    let before: Vec<&Record> = shared
        .records
        .iter()
        .filter(|r| r.sent < signal_at)
        .collect();
    let in_flight: Vec<&Record> = before
        .iter()
        .copied()
        .filter(|r| r.sent + r.latency > signal_at)
        .collect();
    let after: Vec<&Record> = shared
        .records
        .iter()
        .filter(|r| r.sent >= signal_at)
        .collect();
    println!();
    table_header();
    summarize(
        "sent before SIGTERM (accepted)",
        &before,
        signal_at.as_secs_f64(),
    );
    summarize(
        "  of which in flight at the signal",
        &in_flight,
        signal_at.as_secs_f64(),
    );
    summarize(
        "sent after SIGTERM (refused: expected)",
        &after,
        6.0 - signal_at.as_secs_f64(),
    );
    match exit {
        Some((status, took)) => println!(
            "webhook exited {status} {} ms after SIGTERM",
            took.as_millis()
        ),
        None => println!("webhook still running 15 s after SIGTERM"),
    }
    println!(
        "RESULT sigterm: {} requests sent before the signal, {} failed; {} sent after, {} refused",
        before.len(),
        before.iter().filter(|r| r.result.is_err()).count(),
        after.len(),
        after.iter().filter(|r| r.result.is_err()).count()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing useful.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rate: f64 = env_or("RATE", 1000.0);
    let seconds: u64 = env_or("DURATION_SECS", 30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        rotation(rate, seconds).await;
        sigterm(rate).await;
    });
}
