//! The event recorder (`mcptrust::controller::events::Recorder`) on a real kube-apiserver
//! (`tests/common/envtest.rs`), as people see its Events with kubectl:
//!
//! - the same event about an McpServer published twice is ONE Event whose `series.count`
//!   is 2, which `kubectl describe` shows as `(x2 over ...)` and `kubectl get events` as
//!   `count: 2`;
//! - the same event about another related object (the client Secret after the server
//!   Secret) is another Event;
//! - a series whose Event was deleted starts again with a new Event, which the next
//!   occurrence then updates;
//! - a series evicted from the cache (its bound) or expired (its TTL) starts a new Event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::num::NonZeroUsize;

use common::envtest::ControlPlane;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams};
use kube::{Resource, ResourceExt};
use mcptrust::api::McpServer;
use mcptrust::controller::events::{
    Event, EventType, FIELD_MANAGER_EVENTS, Recorder, Reporter, SeriesCache,
};
use serde_json::{Value, json};

fn secret(ns: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..ObjectReference::default()
    }
}

fn issued(ns: &str, secret_name: &str) -> Event {
    Event {
        type_: EventType::Normal,
        reason: "Issued".into(),
        note: Some(format!(
            "Issued Secret {ns}/{secret_name} (DoesNotExist: no Secret yet)"
        )),
        action: "Reconcile".into(),
        secondary: Some(secret(ns, secret_name)),
    }
}

/// Publishes the `Issued` event of Secret `ns/secret_name` about `regarding`.
async fn publish(recorder: &Recorder, ns: &str, secret_name: &str, regarding: &ObjectReference) {
    recorder
        .publish(&issued(ns, secret_name), regarding)
        .await
        .unwrap();
}

/// The `events.k8s.io/v1` Events of `ns` with reason `Issued`, by related Secret name.
fn issued_events(cp: &ControlPlane, ns: &str) -> Vec<(String, Value)> {
    let list = cp.get_json(&["-n", ns, "events.v1.events.k8s.io", "--show-managed-fields"]);
    let mut out: Vec<(String, Value)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "Issued")
        .map(|e| {
            (
                e["related"]["name"].as_str().unwrap_or_default().to_owned(),
                e.clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// McpServer `github` in a new namespace named after `prefix`, as the API server returns
/// it (with its uid), with the namespace and an admin client.
async fn mcp_server(cp: &ControlPlane, prefix: &str) -> (String, kube::Client, McpServer) {
    cp.install_crds();
    let ns = cp.namespace(prefix);
    cp.apply(&json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": "github", "namespace": ns},
        "spec": {"transport": "stdio"},
    }));
    let client = cp.client().await;
    let server = Api::<McpServer>::namespaced(client.clone(), &ns)
        .get("github")
        .await
        .unwrap();
    (ns, client, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_are_one_event_with_a_series_and_other_related_objects_another() {
    let Some(cp) = e2e!() else { return };
    let (ns, client, server) = mcp_server(cp, "events").await;
    let regarding = server.object_ref(&());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "mcptrust".into(),
            instance: Some("mcptrust-e2e-0".into()),
        },
    );

    // The server Secret's event twice: one Event, series.count 2.
    publish(&recorder, &ns, "github-tls", &regarding).await;
    publish(&recorder, &ns, "github-tls", &regarding).await;
    let events = issued_events(cp, &ns);
    assert_eq!(events.len(), 1, "{events:#?}");
    let (_, first) = &events[0];
    assert_eq!(first["series"]["count"], 2, "{first:#}");
    assert!(first["series"]["lastObservedTime"].is_string(), "{first:#}");
    assert_eq!(first["regarding"]["uid"], server.uid().unwrap());
    assert_eq!(first["regarding"]["kind"], "McpServer");
    assert_eq!(first["type"], "Normal");
    assert_eq!(first["action"], "Reconcile");
    assert_eq!(first["reportingController"], "mcptrust");
    assert_eq!(first["reportingInstance"], "mcptrust-e2e-0");
    let name = first["metadata"]["name"].as_str().unwrap().to_owned();
    let (prefix, nanos) = name.rsplit_once('.').unwrap();
    assert_eq!(prefix, "github");
    assert!(
        i128::from_str_radix(nanos, 16).is_ok(),
        "not <name>.<hex nanoseconds>: {name}"
    );
    assert!(
        first["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["manager"] == FIELD_MANAGER_EVENTS),
        "{first:#}"
    );
    assert_eq!(recorder.cached_series(), 1);

    // The client Secret's event: another Event, no series.
    publish(&recorder, &ns, "github-client-tls", &regarding).await;
    let events = issued_events(cp, &ns);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0].0, "github-client-tls");
    assert!(events[0].1.get("series").is_none(), "{:#}", events[0].1);
    assert_eq!(events[1].1["metadata"]["name"], name.as_str());
    assert_eq!(recorder.cached_series(), 2);

    // As people see them: the core/v1 view that `kubectl get events` reads, and describe.
    let core = cp.get_json(&["-n", &ns, "events", "--field-selector", "reason=Issued"]);
    let mut counts: Vec<(String, Value)> = core["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["related"]["name"].as_str().unwrap().to_owned(),
                e["series"]["count"].clone(),
            )
        })
        .collect();
    counts.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        counts,
        [
            ("github-client-tls".to_owned(), Value::Null),
            ("github-tls".to_owned(), json!(2)),
        ]
    );
    let describe = cp.kubectl(&["-n", &ns, "describe", "mcpserver", "github"]);
    let lines: Vec<&str> = describe
        .lines()
        .filter(|l| l.contains("Issued Secret"))
        .collect();
    assert_eq!(lines.len(), 2, "{describe}");
    let repeated: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(&format!("{ns}/github-tls ")))
        .collect();
    assert_eq!(repeated.len(), 1, "{describe}");
    assert!(repeated[0].contains("(x2 over"), "{describe}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("github-client-tls") && !l.contains("(x")),
        "{describe}"
    );

    // The series' Event deleted: the next occurrence creates a new Event (count 1), the
    // one after updates that one.
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns)
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    publish(&recorder, &ns, "github-tls", &regarding).await;
    let events = issued_events(cp, &ns);
    assert_eq!(events.len(), 2, "{events:#?}");
    let renewed = &events[1].1;
    assert_ne!(renewed["metadata"]["name"], name.as_str());
    assert!(renewed.get("series").is_none(), "{renewed:#}");
    publish(&recorder, &ns, "github-tls", &regarding).await;
    let events = issued_events(cp, &ns);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[1].1["metadata"]["name"], renewed["metadata"]["name"]);
    assert_eq!(events[1].1["series"]["count"], 2, "{:#}", events[1].1);
    assert_eq!(recorder.cached_series(), 2);
}

/// A recorder whose cache holds one series for 5 s: a series evicted by another, or
/// expired, starts a new Event; the old one keeps its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_and_expired_series_start_new_events() {
    let Some(cp) = e2e!() else { return };
    let (ns, client, server) = mcp_server(cp, "events-bounded").await;
    let regarding = server.object_ref(&());
    let ttl = k8s_openapi::jiff::SignedDuration::from_secs(5);
    let recorder = Recorder::with_cache(
        client,
        Reporter::from("mcptrust"),
        SeriesCache::new(NonZeroUsize::MIN, ttl),
    );
    let counts = |related: &str| -> Vec<Value> {
        let mut c: Vec<(String, Value)> = issued_events(cp, &ns)
            .into_iter()
            .filter(|(r, _)| r == related)
            .map(|(_, e)| {
                (
                    e["eventTime"].as_str().unwrap().to_owned(),
                    e["series"]["count"].clone(),
                )
            })
            .collect();
        c.sort_by(|a, b| a.0.cmp(&b.0));
        c.into_iter().map(|(_, n)| n).collect()
    };

    publish(&recorder, &ns, "github-tls", &regarding).await;
    publish(&recorder, &ns, "github-tls", &regarding).await;
    assert_eq!(counts("github-tls"), [json!(2)]);
    // Another series takes the only place: the next github-tls occurrence is a new Event.
    publish(&recorder, &ns, "github-client-tls", &regarding).await;
    assert_eq!(recorder.cached_series(), 1);
    publish(&recorder, &ns, "github-tls", &regarding).await;
    assert_eq!(counts("github-tls"), [json!(2), Value::Null]);
    // Past the TTL since its last occurrence: a new Event again.
    tokio::time::sleep(std::time::Duration::from_millis(5_500)).await;
    publish(&recorder, &ns, "github-tls", &regarding).await;
    assert_eq!(counts("github-tls"), [json!(2), Value::Null, Value::Null]);
    assert_eq!(counts("github-client-tls"), [Value::Null]);
}
