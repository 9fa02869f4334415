//! Serving-certificate rotation under traffic (plain rename and Kubernetes `..data` swap),
//! reload triggers, failed reloads, graceful drain, and `webhook::run` end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{
    Conn, Leaf, Proto, TestCa, TestServer, TlsFiles, admission_review, embedded_mutator,
    eventually, pod, post_once,
};
use mcptrust::admin::Readiness;
use mcptrust::inject::{InjectError, Mutator, Outcome};
use mcptrust::metrics::Metrics;
use mcptrust::tls::ReloadStatus;
use mcptrust::webhook::{self, WebhookArgs};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

/// Generous bound so that a broken reload fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

fn mutator() -> Arc<dyn Mutator> {
    embedded_mutator()
}

fn review_body(uid: &str) -> Vec<u8> {
    serde_json::to_vec(&admission_review(
        uid,
        "CREATE",
        "agents",
        pod("traffic", "agents", &["server", "sidecar"]),
    ))
    .unwrap()
}

fn check_reply(reply: &common::Reply, uid: &str) -> Result<(), String> {
    if reply.status != 200 {
        return Err(format!("status {}", reply.status));
    }
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
    if v["response"]["uid"] != uid || v["response"]["allowed"] != true {
        return Err(format!("unexpected review: {v}"));
    }
    Ok(())
}

async fn wait_for_serial(status: &mut watch::Receiver<ReloadStatus>, serial: &str) {
    let waited = tokio::time::timeout(
        PATIENCE,
        status.wait_for(|s| s.current.as_ref().is_some_and(|c| c.serial == serial)),
    )
    .await
    .map(|r| r.map(|_| ()));
    match waited {
        Ok(result) => result.unwrap(),
        Err(_) => panic!("no reload to serial {serial}: {:?}", *status.borrow()),
    }
}

#[derive(Default)]
struct Report {
    /// (serial presented, connection started after the reload was observed)
    fresh: Vec<(String, bool)>,
    kept_alive: Vec<(String, bool)>,
    failures: Vec<String>,
}

struct Traffic {
    stop: Arc<AtomicBool>,
    reloaded: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    /// Loops: one request on a new connection (alternating HTTP/1.1 and HTTP/2), one on a
    /// connection kept alive from the start.
    async fn start(addr: std::net::SocketAddr, ca_pem: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reloaded = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let mut kept = Conn::connect(addr, &ca_pem, Proto::Http1).await.unwrap();
        let task = {
            let (stop, reloaded, report) = (stop.clone(), reloaded.clone(), report.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let after = reloaded.load(Ordering::SeqCst);
                    let proto = if i.is_multiple_of(2) {
                        Proto::Http2
                    } else {
                        Proto::Http1
                    };
                    let uid = format!("fresh-{i}");
                    let result = post_once(addr, &ca_pem, proto, review_body(&uid))
                        .await
                        .and_then(|(reply, serial)| check_reply(&reply, &uid).map(|()| serial));
                    {
                        let mut r = report.lock().unwrap();
                        match result {
                            Ok(serial) => r.fresh.push((serial, after)),
                            Err(e) => r.failures.push(format!("fresh {i} ({proto:?}): {e}")),
                        }
                    }
                    let uid = format!("kept-{i}");
                    let result = kept.post("/mutate", review_body(&uid)).await;
                    let mut r = report.lock().unwrap();
                    match result.and_then(|reply| check_reply(&reply, &uid)) {
                        Ok(()) => r.kept_alive.push((kept.serial.clone(), after)),
                        Err(e) => r.failures.push(format!("kept-alive {i}: {e}")),
                    }
                }
            })
        };
        Self {
            stop,
            reloaded,
            report,
            task,
        }
    }

    async fn wait_fresh(&self, after_reload: bool, count: usize) {
        let report = self.report.clone();
        eventually(PATIENCE, "traffic", move || {
            let n = report
                .lock()
                .unwrap()
                .fresh
                .iter()
                .filter(|(_, after)| *after == after_reload)
                .count();
            async move { n >= count }
        })
        .await;
    }

    async fn finish(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        Arc::try_unwrap(self.report)
            .ok()
            .expect("traffic task ended")
            .into_inner()
            .unwrap()
    }
}

/// Starts a server on `initial`, drives traffic, calls `rotate`, and checks that new
/// handshakes present `rotated` after the reload, that the kept-alive connection keeps
/// working, and that no request failed.
async fn rotate_under_traffic(
    files: &TlsFiles,
    initial: &Leaf,
    rotated: &Leaf,
    ca: &TestCa,
    rotate: impl FnOnce(),
) {
    let (server, metrics) = TestServer::start_default(files, mutator()).await;
    let (_triggers_tx, triggers) = mpsc::channel(1);
    let (reloader, mut status) = server.spawn_reloader(files, &metrics, true, triggers);
    assert_eq!(
        status.borrow().current.as_ref().map(|c| c.serial.clone()),
        Some(initial.serial.clone())
    );

    let traffic = Traffic::start(server.addr, ca.pem.clone()).await;
    traffic.wait_fresh(false, 5).await;

    rotate();
    wait_for_serial(&mut status, &rotated.serial).await;
    traffic.reloaded.store(true, Ordering::SeqCst);
    traffic.wait_fresh(true, 6).await;
    let report = traffic.finish().await;

    assert!(
        report.failures.is_empty(),
        "failed requests: {:?}",
        report.failures
    );
    assert!(
        report
            .fresh
            .iter()
            .any(|(s, after)| !after && *s == initial.serial)
    );
    for (serial, after) in &report.fresh {
        if *after {
            assert_eq!(serial, &rotated.serial, "handshake after the reload");
        }
    }
    // The connection made before the rotation keeps its certificate and keeps working.
    assert!(report.kept_alive.iter().any(|(_, after)| *after));
    assert!(report.kept_alive.iter().all(|(s, _)| *s == initial.serial));
    assert!(metrics.tls_reloads(true) >= 1);
    assert!(
        metrics
            .encode()
            .contains("mcptrust_tls_reloads_total{result=\"success\"}")
    );

    reloader.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_by_rename_under_traffic() {
    let ca = TestCa::new("rotation CA");
    let (a, b) = (ca.leaf(100), ca.leaf(200));
    let (_dir, files) = TlsFiles::temp_with(&a);
    rotate_under_traffic(&files, &a, &b, &ca, || files.write_atomic(&b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_by_kubernetes_data_symlink_swap_under_traffic() {
    let ca = TestCa::new("rotation CA");
    let (_dir, files) = TlsFiles::temp();
    let (a, b) = (ca.leaf(300), ca.leaf(400));
    files.write_kubernetes(&a, 1);
    assert!(
        std::fs::symlink_metadata(&files.cert)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    rotate_under_traffic(&files, &a, &b, &ca, || files.write_kubernetes(&b, 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_trigger_without_file_watch() {
    let ca = TestCa::new("trigger CA");
    let (a, b) = (ca.leaf(500), ca.leaf(501));
    let (_dir, files) = TlsFiles::temp_with(&a);
    let (server, metrics) = TestServer::start_default(&files, mutator()).await;
    let (trigger, triggers) = mpsc::channel(1);
    let (reloader, mut status) = server.spawn_reloader(&files, &metrics, false, triggers);

    files.write_atomic(&b);
    // Without the watch, the old certificate is still served until the trigger.
    let (_, serial) = post_once(server.addr, &ca.pem, Proto::Http1, review_body("t-0"))
        .await
        .unwrap();
    assert_eq!(serial, a.serial);

    trigger.send(()).await.unwrap();
    wait_for_serial(&mut status, &b.serial).await;
    let (reply, serial) = post_once(server.addr, &ca.pem, Proto::Http2, review_body("t-1"))
        .await
        .unwrap();
    check_reply(&reply, "t-1").unwrap();
    assert_eq!(serial, b.serial);
    assert_eq!(metrics.tls_reloads(true), 1);
    assert_eq!(status.borrow().successes, 1);

    // A trigger with unchanged files is an attempt, not a reload.
    let attempts = status.borrow().attempts;
    trigger.send(()).await.unwrap();
    tokio::time::timeout(PATIENCE, status.wait_for(|s| s.attempts > attempts))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.borrow().successes, 1);
    assert_eq!(metrics.tls_reloads(true), 1);
    assert_eq!(metrics.tls_reloads(false), 0);

    reloader.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reload_keeps_the_old_certificate() {
    let ca = TestCa::new("failure CA");
    let (a, c, d) = (ca.leaf(600), ca.leaf(601), ca.leaf(602));
    let (_dir, files) = TlsFiles::temp_with(&a);
    let (server, metrics) = TestServer::start_default(&files, mutator()).await;
    let (_trigger, triggers) = mpsc::channel(1);
    let (reloader, mut status) = server.spawn_reloader(&files, &metrics, true, triggers);

    // Garbage in the certificate file.
    std::fs::write(
        &files.cert,
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    )
    .unwrap();
    tokio::time::timeout(PATIENCE, status.wait_for(|s| s.failures >= 1))
        .await
        .unwrap()
        .unwrap();
    let (reply, serial) = post_once(server.addr, &ca.pem, Proto::Http1, review_body("f-1"))
        .await
        .unwrap();
    check_reply(&reply, "f-1").unwrap();
    assert_eq!(serial, a.serial, "old certificate still served");
    assert!(metrics.tls_reloads(false) >= 1);

    // A certificate with someone else's key.
    let mismatched = Leaf {
        key_pem: a.key_pem.clone(),
        ..c.clone()
    };
    let before = status.borrow().failures;
    files.write_atomic(&mismatched);
    tokio::time::timeout(PATIENCE, status.wait_for(|s| s.failures > before))
        .await
        .unwrap()
        .unwrap();
    let last_error = status.borrow().last_error.clone().unwrap();
    assert!(last_error.contains("does not match"), "{last_error}");
    let (_, serial) = post_once(server.addr, &ca.pem, Proto::Http2, review_body("f-2"))
        .await
        .unwrap();
    assert_eq!(serial, a.serial, "old certificate still served");

    // Valid files again: the reloader recovers.
    files.write_atomic(&d);
    wait_for_serial(&mut status, &d.serial).await;
    assert_eq!(status.borrow().last_error, None);
    let (_, serial) = post_once(server.addr, &ca.pem, Proto::Http1, review_body("f-3"))
        .await
        .unwrap();
    assert_eq!(serial, d.serial);

    reloader.stop().await;
    server.stop().await;
}

/// A mutator that signals when a request reaches it and then blocks until released.
#[derive(Default)]
struct GatedMutator {
    entered: tokio::sync::Notify,
    open: Mutex<bool>,
    opened: Condvar,
}

impl GatedMutator {
    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl Mutator for GatedMutator {
    fn mutate(&self, _ns: Option<&str>, _object: &Value) -> Result<Outcome, InjectError> {
        self.entered.notify_one();
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        Ok(Outcome::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_drains_in_flight_requests_and_refuses_new_connections() {
    let ca = TestCa::new("drain CA");
    let (_dir, files) = TlsFiles::temp_with(&ca.leaf(700));
    let gate = Arc::new(GatedMutator::default());
    let metrics = Arc::new(Metrics::new());
    let mut server = TestServer::start(
        &files,
        gate.clone(),
        metrics.clone(),
        1024 * 1024,
        Duration::from_secs(60),
    )
    .await;
    let addr = server.addr;

    // An idle kept-alive connection and one with a request in flight.
    let mut idle = Conn::connect(addr, &ca.pem, Proto::Http1).await.unwrap();
    let mut busy = Conn::connect(addr, &ca.pem, Proto::Http2).await.unwrap();
    let entered = gate.entered.notified();
    let in_flight = tokio::spawn(async move { busy.post("/mutate", review_body("slow")).await });
    entered.await;

    server.begin_shutdown();
    // New connections are refused while the request is still in flight.
    eventually(PATIENCE, "listener closed", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(!in_flight.is_finished());

    gate.release();
    let reply = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    check_reply(&reply, "slow").unwrap();
    server.join().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // The idle kept-alive connection was closed by the drain.
    assert!(idle.post("/mutate", review_body("late")).await.is_err());
    assert_eq!(metrics.admission_requests("unchanged"), 1);
}

fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_loads_reloads_and_drains() {
    let ca = TestCa::new("run CA");
    let (_dir, files) = TlsFiles::temp();
    let (a, b) = (ca.leaf(800), ca.leaf(801));
    files.write_kubernetes(&a, 1);
    let addr = free_port();
    let args = WebhookArgs {
        webhook_listen: addr,
        tls_cert_file: files.cert.clone(),
        tls_key_file: files.key.clone(),
        max_body_bytes: 1024 * 1024,
        drain_timeout_seconds: 5,
    };
    let metrics = Arc::new(Metrics::new());
    let ready = Readiness::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let (metrics, ready) = (metrics.clone(), ready.clone());
        tokio::spawn(async move {
            webhook::run(&args, mutator(), metrics, ready, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    {
        let ready = ready.clone();
        eventually(PATIENCE, "readiness", move || {
            let ready = ready.clone();
            async move { ready.is_ready() }
        })
        .await;
    }
    let (reply, serial) = post_once(addr, &ca.pem, Proto::Http1, review_body("r-1"))
        .await
        .unwrap();
    check_reply(&reply, "r-1").unwrap();
    assert_eq!(serial, a.serial);

    files.write_kubernetes(&b, 2);
    {
        let pem = ca.pem.clone();
        let want = b.serial.clone();
        eventually(PATIENCE, "new serial served by run()", move || {
            let (pem, want) = (pem.clone(), want.clone());
            async move {
                matches!(post_once(addr, &pem, Proto::Http2, review_body("r-2")).await,
                         Ok((_, serial)) if serial == want)
            }
        })
        .await;
    }
    assert_eq!(metrics.tls_reloads(true), 1);

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(!ready.is_ready(), "not ready once draining");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn run_fails_fast_on_missing_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let args = WebhookArgs {
        webhook_listen: free_port(),
        tls_cert_file: dir.path().join("missing.crt"),
        tls_key_file: dir.path().join("missing.key"),
        max_body_bytes: 1024,
        drain_timeout_seconds: 1,
    };
    let ready = Readiness::new();
    let err = webhook::run(
        &args,
        mutator(),
        Arc::new(Metrics::new()),
        ready.clone(),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("missing.crt"), "{err}");
    assert!(!ready.is_ready());
}
