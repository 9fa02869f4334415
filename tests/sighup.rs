//! SIGHUP reloads the serving certificate. In its own test binary because it signals its
//! own process, which would reach the reloaders of unrelated tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    Proto, TestCa, TestServer, TlsFiles, admission_review, embedded_mutator, pod, post_review,
};
use mcptrust::tls::sighup_triggers;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate() {
    let ca = TestCa::new("sighup CA");
    let (a, b) = (ca.leaf(900), ca.leaf(901));
    let (_dir, files) = TlsFiles::temp_with(&a);
    let (server, metrics) = TestServer::start_default(&files, embedded_mutator()).await;
    // Installs the handler: from here on SIGHUP no longer terminates the test process.
    let triggers = sighup_triggers().unwrap();
    // Only SIGHUP may cause the reload here.
    let (reloader, mut status) = server.spawn_reloader(&files, &metrics, false, triggers);

    files.write_atomic(&b);
    let review = admission_review("hup", "CREATE", "agents", pod("p", "agents", &["c"]));
    let (_, serial) = post_review(server.addr, &ca.pem, Proto::Http1, &review).await;
    assert_eq!(serial, a.serial);

    let killed = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.current.as_ref().is_some_and(|c| c.serial == b.serial)),
    )
    .await
    .expect("SIGHUP reload")
    .unwrap();
    let (reply, serial) = post_review(server.addr, &ca.pem, Proto::Http1, &review).await;
    assert_eq!(reply.status, 200);
    assert_eq!(serial, b.serial);
    assert_eq!(metrics.tls_reloads(true), 1);

    reloader.stop().await;
    server.stop().await;
}
