//! How long a standby takes to lead, on a real kube-apiserver (`tests/common/envtest.rs`),
//! with the operator's elector ([`mcptrust::controller::leader`]) and its default timings
//! (client-go's: 15 s lease, 10 s renew deadline, 2 s retry). Prints figures; asserts
//! nothing about time (`tests/e2e_leader.rs` checks the order of events instead).
//!
//! Run: `cargo bench --bench leader_takeover` (or, unoptimised, `cargo test --bench
//! leader_takeover`), with `KUBEBUILDER_ASSETS` set. `ROUNDS` (default 5) release rounds,
//! `CRASH_ROUNDS` (default 2) crash rounds.
//!
//! 1. **Release**: the leader stops cleanly (its Lease released); from the stop to the
//!    standby's work starting.
//! 2. **Crash**: the leader's task is aborted (no release, as after SIGKILL); from the
//!    abort to the standby's work starting: the lease duration, as observed by the
//!    standby, plus up to one retry period.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcptrust::controller::leader::{Elector, Timings};
use tokio::sync::watch;

/// When each candidate's work started, by name.
type Started = Arc<Mutex<Vec<(String, Instant)>>>;

fn candidate(
    client: kube::Client,
    ns: &str,
    lease: &str,
    who: &str,
    started: Started,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let elector = Elector::new(client, ns, lease, who, Timings::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let who = who.to_owned();
    let task = tokio::spawn(async move {
        elector
            .run(stop_rx, |mut lost| {
                let (started, who) = (started.clone(), who.clone());
                async move {
                    started.lock().unwrap().push((who, Instant::now()));
                    let _ = lost.wait_for(|v| *v).await;
                }
            })
            .await;
    });
    (stop_tx, task)
}

async fn leading_since(started: &Started, who: &str, after: Instant) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((_, at)) = started
            .lock()
            .unwrap()
            .iter()
            .find(|(w, at)| w == who && *at >= after)
        {
            return *at;
        }
        assert!(Instant::now() < deadline, "{who} never led");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One round: `a` leads, `b` stands by; `a` ends by `crash` (abort) or a clean stop.
/// Returns the time from that end to `b` leading.
async fn round(cp: &common::envtest::ControlPlane, n: usize, crash: bool) -> Duration {
    let ns = cp.namespace(if crash {
        "bench-crash"
    } else {
        "bench-release"
    });
    let lease = format!("bench-{n}");
    let started: Started = Arc::default();
    let (stop_a, task_a) = candidate(cp.client().await, &ns, &lease, "a", started.clone());
    leading_since(&started, "a", Instant::now() - Duration::from_secs(1)).await;
    let (stop_b, task_b) = candidate(cp.client().await, &ns, &lease, "b", started.clone());
    // Let b settle into standing by (it has read the Lease).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = Instant::now();
    if crash {
        task_a.abort();
    } else {
        let _ = stop_a.send(true);
    }
    let took = leading_since(&started, "b", end).await - end;
    let _ = stop_b.send(true);
    let _ = task_b.await;
    took
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "{name}: {} rounds, min {:.0} ms, median {:.0} ms, max {:.0} ms",
        v.len(),
        ms(&v[0]),
        ms(&v[v.len() / 2]),
        ms(&v[v.len() - 1])
    );
}

fn main() {
    let Some(cp) = common::envtest::control_plane() else {
        return;
    };
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut release = Vec::new();
        for n in 0..env("ROUNDS", 5) {
            release.push(round(cp, n, false).await);
        }
        summary("takeover after a release", release);
        let mut crash = Vec::new();
        for n in 0..env("CRASH_ROUNDS", 2) {
            crash.push(round(cp, 100 + n, true).await);
        }
        summary("takeover after a crash (lease 15 s, retry 2 s)", crash);
    });
}
