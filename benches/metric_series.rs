//! Heap held by the per-McpServer metric series ([`ControllerMetrics::record_server`]), per
//! McpServer: 10,000 snapshots shaped like those of `bench/controller-burst.sh`'s burst
//! (an mTLS McpServer with one client: 2 certificates, the 6 condition types, a trust
//! bundle, no probe) in 100 namespaces, recorded into a registered [`ControllerMetrics`].
//!
//! The allocator is the system's, wrapped by `stats_alloc`, which counts the bytes asked
//! for and given back (requested sizes: mimalloc's size classes add some to each). Prints
//! figures; asserts nothing about time or size.
//!
//! Run: `cargo bench --bench metric_series` (or, unoptimised, `cargo test --bench
//! metric_series`); `SERVERS` (default 10,000) and `NAMESPACES` (default 100) size it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::time::Instant;

use mcptrust::controller::metrics::{CertificateSeries, ControllerMetrics, ServerSnapshot};
use prometheus_client::registry::Registry;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, Stats, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes and allocations still held from what `stats` counted (a `realloc` is already in
/// `bytes_allocated` or `bytes_deallocated`; `bytes_reallocated` repeats it).
fn live(stats: Stats) -> (i64, i64) {
    let bytes = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    let allocs = stats.allocations as i64 - stats.deallocations as i64;
    (bytes, allocs)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The snapshot of burst McpServer `i`, as the reconcile records it once Ready.
fn snapshot(i: usize, namespaces: usize) -> ServerSnapshot {
    let namespace = format!("burst-{}", i % namespaces);
    let name = format!("mcp-{i:05}");
    let not_after = 1_803_000_000 + i as i64;
    let cert = |role, secret| CertificateSeries {
        role,
        secret,
        secret_namespace: namespace.clone(),
        not_after,
        renewal: not_after - 30 * 86_400,
    };
    ServerSnapshot {
        certificates: vec![
            cert("server", format!("{name}-server-tls")),
            cert("client", format!("{name}-{namespace}-gateway-client-tls")),
        ],
        conditions: [
            ("TrustBundleReady", "True"),
            ("CertificatesReady", "True"),
            ("EndpointVerified", "Unknown"),
            ("EgressPolicyReady", "True"),
            ("RotationReady", "True"),
            ("Ready", "True"),
        ]
        .into_iter()
        .map(|(t, s)| (t.to_string(), s.to_string()))
        .collect(),
        bundle_certificates: Some(147),
        private_ca_not_after: Some(None),
        probe: None,
        namespace,
        name,
    }
}

fn main() {
    let servers = env_usize("SERVERS", 10_000);
    let namespaces = env_usize("NAMESPACES", 100);
    let metrics = ControllerMetrics::default();
    let mut registry = Registry::with_prefix("mcptrust");
    metrics.register(&mut registry);
    metrics.set_leader(true);
    let snapshots: Vec<ServerSnapshot> = (0..servers).map(|i| snapshot(i, namespaces)).collect();

    // Records every snapshot: µs per McpServer, and the bytes and allocations it left live.
    let record_all = || {
        let region = Region::new(GLOBAL);
        let start = Instant::now();
        for s in &snapshots {
            metrics.record_server(s);
        }
        let micros = start.elapsed().as_secs_f64() * 1e6 / servers as f64;
        (micros, live(region.change()))
    };
    let per = |v: i64| v as f64 / servers as f64;

    let all = Region::new(GLOBAL);
    let (first, (bytes, allocs)) = record_all();
    println!(
        "metric series of {servers} McpServers in {namespaces} namespaces: {bytes} bytes live \
         in {allocs} allocations; per McpServer {:.0} bytes, {:.1} allocations",
        per(bytes),
        per(allocs)
    );
    println!("record_server, first time: {first:.2} µs per McpServer");
    let (again, (bytes, _)) = record_all();
    println!(
        "record_server, unchanged snapshot: {again:.2} µs per McpServer, {bytes} bytes more live"
    );

    let start = Instant::now();
    let text = mcptrust::metrics::encode_registry(&registry);
    let scrape = start.elapsed();
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    println!(
        "one scrape: {:.1} ms, {} bytes of text, {samples} samples",
        scrape.as_secs_f64() * 1e3,
        text.len()
    );
    drop(text);

    let removed = metrics.retain_servers(|_, _| false);
    let (bytes, allocs) = live(all.change());
    println!(
        "retain_servers removed {removed} McpServers: {bytes} bytes in {allocs} allocations \
         still live"
    );
}
