//! The event recorder's cache, in live heap bytes (issue 22, memory): kube-runtime 5's
//! `Recorder` and mcptrust's `controller::events::Recorder` each publish the Events of a
//! burst of mTLS McpServers (two `Issued` Events each, about the server and the client
//! Secret; McpServers spread over 100 namespaces) through a client whose API server is a
//! function answering every request `201 Created` with the request's body. What the
//! recorder holds is the live heap with the recorder minus the live heap once it is
//! dropped (the client stays): the cache and nothing else, measured by a counting global
//! allocator (`stats_alloc` over the system allocator: bytes requested, not the allocator's
//! own overhead).
//!
//! Run: `cargo bench --bench event_cache` (`EVENT_CACHE_SERVERS=N` for another burst than
//! 10,000 McpServers). Prints a Markdown table (docs/performance.md, "Event recorder
//! cache").

use std::alloc::System;
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::client::Body;
use mcptrust::controller::events::{self, Event, EventType, Reporter};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Live heap: (bytes, blocks).
fn live() -> (i64, i64) {
    let s = GLOBAL.stats();
    let bytes = s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64;
    (bytes, s.allocations as i64 - s.deallocations as i64)
}

/// A client whose "API server" answers each request 201 with the request's body (an
/// Event in, the same Event out, as the API server answers a create).
fn echo_client() -> Client {
    let service = tower::service_fn(|req: http::Request<Body>| async move {
        let body: Bytes = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let mut answer = http::Response::new(Body::from(body.to_vec()));
        *answer.status_mut() = http::StatusCode::CREATED;
        answer.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok::<_, Infallible>(answer)
    });
    Client::new(service, "default")
}

fn reporter() -> Reporter {
    Reporter {
        controller: "mcptrust".into(),
        instance: Some("mcptrust-7d9c5b8f6d-x2x4q".into()),
    }
}

/// McpServer `i` of the burst as `Resource::object_ref` gives it (with uid and
/// resourceVersion), and its two `Issued` Events as `reconcile` publishes them.
fn burst_events(i: usize) -> (ObjectReference, [Event; 2]) {
    let ns = format!("burst-{:02}", i % 100);
    let name = format!("server-{i}");
    let regarding = ObjectReference {
        api_version: Some("mcptrust.io/v1alpha1".into()),
        kind: Some("McpServer".into()),
        name: Some(name.clone()),
        namespace: Some(ns.clone()),
        uid: Some(format!("6f1c2a9e-0b7d-4c3e-9a51-{i:012x}")),
        resource_version: Some(format!("{}", 100_000 + i)),
        ..ObjectReference::default()
    };
    let issued = |secret: String| Event {
        type_: EventType::Normal,
        reason: "Issued".into(),
        note: Some(format!(
            "Issued Secret {ns}/{secret} (DoesNotExist: the Secret does not exist); valid \
             until 2027-03-06T18:44:21Z"
        )),
        action: "Reconcile".into(),
        secondary: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            name: Some(secret),
            namespace: Some(ns.clone()),
            ..ObjectReference::default()
        }),
    };
    (
        regarding,
        [
            issued(mcptrust::api::server_tls_secret_name(&name)),
            issued(mcptrust::controller::build::client_tls_secret_name(
                &name,
                &ns,
                &format!("gateway-{i}"),
            )),
        ],
    )
}

/// One row: what a recorder holds after publishing the Events of `servers` McpServers.
struct Row {
    recorder: &'static str,
    published: usize,
    cached: usize,
    bytes: i64,
    blocks: i64,
}

/// Publishes the burst through the recorder `make` builds (`publish` publishes one
/// Event), then measures what dropping the recorder frees.
async fn measure<R, F, Fut>(
    recorder: &'static str,
    servers: usize,
    make: impl FnOnce(Client) -> R,
    publish: F,
    cached: impl Fn(&R, usize) -> usize,
) -> Row
where
    F: Fn(&R, Event, ObjectReference) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let client = echo_client();
    let rec = make(client.clone());
    let mut published = 0;
    for i in 0..servers {
        let (regarding, evs) = burst_events(i);
        for ev in evs {
            assert!(publish(&rec, ev, regarding.clone()).await, "publish failed");
            published += 1;
        }
    }
    let held = live();
    let cached = cached(&rec, published);
    drop(rec);
    let freed = live();
    drop(client);
    Row {
        recorder,
        published,
        cached,
        bytes: held.0 - freed.0,
        blocks: held.1 - freed.1,
    }
}

fn main() {
    let servers: usize = std::env::var("EVENT_CACHE_SERVERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut rows = Vec::new();
    for n in [events::MAX_CACHED_SERIES / 2, servers] {
        rows.push(rt.block_on(measure(
            "kube-runtime 5 `Recorder`",
            n,
            |c| kube::runtime::events::Recorder::new(c, reporter()),
            |r, ev, regarding| {
                let r = r.clone();
                async move { r.publish(&ev, &regarding).await.is_ok() }
            },
            // Every Event published is kept (none repeats, none is 6 minutes old).
            |_, published| published,
        )));
        rows.push(rt.block_on(measure(
            "mcptrust `controller::events::Recorder`",
            n,
            |c| std::sync::Arc::new(events::Recorder::new(c, reporter())),
            |r, ev, regarding| {
                let r = r.clone();
                async move { r.publish(&ev, &regarding).await.is_ok() }
            },
            |r, _| r.cached_series(),
        )));
    }
    println!(
        "| recorder | McpServers | Events published | entries cached | heap held | per entry |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.2} MiB ({} blocks) | {:.0} B |",
            r.recorder,
            r.published / 2,
            r.published,
            r.cached,
            r.bytes as f64 / (1024.0 * 1024.0),
            r.blocks,
            r.bytes as f64 / r.cached.max(1) as f64
        );
    }
}
