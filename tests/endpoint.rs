//! EndpointVerified and self-signed pinning: the controller probes real MCP servers on
//! 127.0.0.1 (the live prober), while the API server is kube's mock service
//! (`tests/mock_api`) and every API request is asserted in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_api;

use std::sync::Arc;

use common::mcp::{Answer, serve, server_config, streamable_mcp};
use common::{TestCa, self_signed};
use http::Method;
use mcptrust::api::McpServer;
use mcptrust::controller::{Context, reconcile::reconcile};
use mock_api::{Verifier, condition, controller_config};
use serde_json::{Value, json};

/// 2026-11-21T00:00:00Z (the test certificates are valid 2025..2035).
const NOW: i64 = 1_795_219_200;

fn context() -> (Arc<Context>, Verifier) {
    let (ctx, api) = mock_api::context(controller_config(), NOW);
    (Arc::new(ctx), api)
}

fn lab(url: &str, trust: Value, status: Option<Value>) -> McpServer {
    let mut v = json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": "lab", "namespace": "agents", "uid": "1b2c", "generation": 1},
        "spec": {"transport": "streamable-http", "endpoint": {"url": url}, "trust": trust}
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    serde_json::from_value(v).unwrap()
}

/// The source ConfigMap `agents/ca` holding `pem` under `ca.crt`.
fn ca_config_map(pem: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ca", "namespace": "agents"},
           "data": {"ca.crt": pem}})
}

#[tokio::test]
async fn self_signed_server_is_pinned_then_verified() {
    let leaf = self_signed("lab-notes", &["localhost", "127.0.0.1"]);
    let server = serve(Some(server_config(&leaf, None, false)), |_| {
        streamable_mcp(Answer::Json)
    })
    .await;
    let url = format!("https://127.0.0.1:{}/mcp", server.port());
    let trust = json!({"includeSystemRoots": false, "pinServerCertificate": true});

    // First pass: nothing to trust yet; the probe captures and verifies the certificate.
    let (ctx, mut api) = context();
    let task = tokio::spawn(reconcile(Arc::new(lab(&url, trust.clone(), None)), ctx));
    let (kind, reason, note) = api.expect_event("agents").await;
    assert_eq!((kind.as_str(), reason.as_str()), ("Normal", "Pinned"));
    assert!(note.contains(&leaf.sha256), "{note}");
    let status = api.expect_status("agents", "lab").await;
    assert_eq!(status["pinnedSha256"], leaf.sha256.as_str());
    assert!(
        status["pinnedCertificate"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(condition(&status, "EndpointVerified")["reason"], "Pinned");
    assert_eq!(
        condition(&status, "TrustBundleReady")["reason"],
        "AwaitingPin"
    );
    assert_eq!(status["endpoint"]["peer"]["selfSigned"], true);
    let action = task.await.unwrap().unwrap();
    api.expect_done().await;
    assert!(
        format!("{action:?}").contains("1s"),
        "rebuild the bundle at once: {action:?}"
    );

    // Second pass with that status: the bundle holds the pinned certificate and the probe,
    // pinned to its fingerprint, verifies the endpoint and its MCP initialize answer.
    let (ctx, mut api) = context();
    let task = tokio::spawn(reconcile(Arc::new(lab(&url, trust, Some(status))), ctx));
    let cm = api.expect_trust("agents", "lab").await;
    assert_eq!(
        cm["data"]["ca.pem"].as_str().unwrap().trim(),
        leaf.cert_pem.trim()
    );
    let status = api.expect_status("agents", "lab").await;
    for t in ["TrustBundleReady", "EndpointVerified", "Ready"] {
        assert_eq!(condition(&status, t)["status"], "True", "{t}: {status}");
    }
    assert_eq!(condition(&status, "EndpointVerified")["reason"], "Verified");
    assert_eq!(status["endpoint"]["tlsVersion"], "TLSv1.3");
    assert!(status["endpoint"]["protocolVersion"].is_string());
    assert!(
        status["endpoint"]["serverInfo"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    task.await.unwrap().unwrap();
    api.expect_done().await;
}

#[tokio::test]
async fn pinned_certificate_that_changes_is_not_repinned() {
    let old = self_signed("lab-notes", &["localhost", "127.0.0.1"]);
    let new = self_signed("lab-notes", &["localhost", "127.0.0.1"]);
    let server = serve(Some(server_config(&new, None, false)), |_| {
        streamable_mcp(Answer::Json)
    })
    .await;
    let url = format!("https://127.0.0.1:{}/mcp", server.port());
    let mut pinned = json!({"pinnedSha256": old.sha256, "pinnedCertificate": old.cert_pem,
                        "observedGeneration": 1,
                        "trustBundle": {"configMapName": "", "sha256": "x", "certificates": 1}});
    let (ctx, mut api) = context();
    let trust = json!({"includeSystemRoots": false, "pinServerCertificate": true});
    // The status names the ConfigMap this trust and pin use (no earlier one to look for).
    pinned["trustBundle"]["configMapName"] = json!(mcptrust::api::trust_config_map_name(&lab(
        &url,
        trust.clone(),
        Some(pinned.clone())
    )));
    let task = tokio::spawn(reconcile(
        Arc::new(lab(&url, trust, Some(pinned.clone()))),
        ctx,
    ));
    api.expect_trust("agents", "lab").await;
    let (kind, reason, note) = api.expect_event("agents").await;
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Warning", "PinnedCertificateChanged")
    );
    assert!(
        note.contains(&old.sha256) && note.contains(&new.sha256),
        "old and new fingerprints: {note}"
    );
    let status = api.expect_status("agents", "lab").await;
    assert_eq!(
        status["pinnedSha256"],
        old.sha256.as_str(),
        "not re-pinned silently"
    );
    assert_eq!(condition(&status, "EndpointVerified")["status"], "False");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    task.await.unwrap().unwrap();
    api.expect_done().await;

    // The user re-pins deliberately with spec.trust.pinnedSha256.
    let (ctx, mut api) = context();
    let trust = json!({"includeSystemRoots": false, "pinServerCertificate": true, "pinnedSha256": new.sha256});
    let task = tokio::spawn(reconcile(Arc::new(lab(&url, trust, Some(pinned))), ctx));
    api.expect_trust("agents", "lab").await;
    let (_, reason, _) = api.expect_event("agents").await;
    assert_eq!(reason, "Pinned");
    let status = api.expect_status("agents", "lab").await;
    assert_eq!(status["pinnedSha256"], new.sha256.as_str());
    task.await.unwrap().unwrap();
    api.expect_done().await;
}

#[tokio::test]
async fn forged_self_signed_certificate_is_refused() {
    // Subject == issuer, but signed by another key: it only claims to be self-signed.
    let forger = TestCa::new("lab-notes");
    let forged = forger.server_leaf_with(&["localhost", "127.0.0.1"], |p| {
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "lab-notes");
    });
    let server = serve(Some(server_config(&forged, None, false)), |_| {
        streamable_mcp(Answer::Json)
    })
    .await;
    let url = format!("https://127.0.0.1:{}/mcp", server.port());
    let (ctx, mut api) = context();
    let trust = json!({"includeSystemRoots": false, "pinServerCertificate": true});
    let task = tokio::spawn(reconcile(Arc::new(lab(&url, trust, None)), ctx));
    let (kind, reason, _) = api.expect_event("agents").await;
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Warning", "UnknownAuthority")
    );
    let status = api.expect_status("agents", "lab").await;
    assert!(
        status.get("pinnedSha256").is_none(),
        "never pinned: {status}"
    );
    let c = condition(&status, "EndpointVerified");
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "UnknownAuthority");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("signature does not verify"),
        "{c}"
    );
    task.await.unwrap().unwrap();
    api.expect_done().await;
}

#[tokio::test]
async fn unknown_authority_names_the_missing_issuer() {
    let corp = TestCa::new("Corp Internal CA");
    let leaf = corp.server_leaf(&["localhost", "127.0.0.1"]);
    let server = serve(Some(server_config(&leaf, None, false)), |_| {
        streamable_mcp(Answer::Json)
    })
    .await;
    let url = format!("https://127.0.0.1:{}/mcp", server.port());
    let other = TestCa::new("Some Other CA");
    let (ctx, mut api) = context();
    let trust = json!({"includeSystemRoots": false, "sources": [{"configMap": {"name": "ca"}}]});
    let task = tokio::spawn(reconcile(Arc::new(lab(&url, trust.clone(), None)), ctx));
    api.expect(Method::GET, "/api/v1/namespaces/agents/configmaps/ca", &[])
        .await
        .ok(&ca_config_map(&other.pem));
    api.expect_trust("agents", "lab").await;
    let (kind, reason, note) = api.expect_event("agents").await;
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Warning", "UnknownAuthority")
    );
    assert!(note.contains("Corp Internal CA"), "{note}");
    let status = api.expect_status("agents", "lab").await;
    assert_eq!(
        condition(&status, "EndpointVerified")["reason"],
        "UnknownAuthority"
    );
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .starts_with("EndpointVerified:"),
        "{ready}"
    );
    task.await.unwrap().unwrap();
    api.expect_done().await;

    // With the right CA in the source, the same endpoint is verified.
    let (ctx, mut api) = context();
    let task = tokio::spawn(reconcile(Arc::new(lab(&url, trust, None)), ctx));
    api.expect(Method::GET, "/api/v1/namespaces/agents/configmaps/ca", &[])
        .await
        .ok(&ca_config_map(&corp.pem));
    api.expect_trust("agents", "lab").await;
    let status = api.expect_status("agents", "lab").await;
    assert_eq!(condition(&status, "EndpointVerified")["reason"], "Verified");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    task.await.unwrap().unwrap();
    api.expect_done().await;
}

#[tokio::test]
async fn endpoint_probing_can_be_turned_off() {
    // Out of cluster, Service names do not resolve: --disable-endpoint-probe leaves the
    // condition out, so Ready reflects only what the controller itself manages.
    let corp = TestCa::new("Corp Internal CA");
    let (ctx, mut api) = mock_api::context(controller_config(), NOW);
    let ctx = Arc::new(ctx.without_endpoint_probe());
    let trust = json!({"includeSystemRoots": false, "sources": [{"configMap": {"name": "ca"}}]});
    let task = tokio::spawn(reconcile(
        Arc::new(lab("https://github-mcp.agents.svc:8443/mcp/", trust, None)),
        ctx,
    ));
    api.expect(Method::GET, "/api/v1/namespaces/agents/configmaps/ca", &[])
        .await
        .ok(&ca_config_map(&corp.pem));
    api.expect_trust("agents", "lab").await;
    let status = api.expect_status("agents", "lab").await;
    assert!(
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] != "EndpointVerified"),
        "{status}"
    );
    assert!(status.get("endpoint").is_none());
    assert_eq!(condition(&status, "Ready")["status"], "True");
    task.await.unwrap().unwrap();
    api.expect_done().await;
}

/// A reader of the sidecars' `/status` that answers `status` for every pod and records the
/// addresses it was asked for.
struct StubReloaders {
    status: mcptrust::api::reloader::ReloaderStatus,
    asked: std::sync::Mutex<Vec<(String, u16)>>,
}

impl mcptrust::controller::reloaders::ReloaderReader for StubReloaders {
    fn status(
        &self,
        ip: String,
        port: u16,
    ) -> futures::future::BoxFuture<'_, Result<mcptrust::api::reloader::ReloaderStatus, String>>
    {
        self.asked.lock().unwrap().push((ip, port));
        let s = self.status.clone();
        Box::pin(async move { Ok(s) })
    }
}

#[tokio::test]
async fn a_signal_mcpserver_reads_its_reloaders_at_the_probe_and_applies_the_fallback() {
    use mcptrust::api::reloader::{RELOADER_CONTAINER, RELOADER_PORT_NAME, ReloaderStatus};
    let corp = TestCa::new("Corp Internal CA");
    let reloaders = Arc::new(StubReloaders {
        status: ReloaderStatus {
            killed_target: true,
            needs_fallback: true,
            last_decision: Some(mcptrust::api::reloader::ReloaderDecision {
                decision: "SignalKilledTarget".into(),
                message: "PID 12 exited after SIGHUP".into(),
                at: "2026-11-21T00:00:00Z".into(),
                pid: Some(12),
            }),
            ..Default::default()
        },
        asked: Default::default(),
    });
    let (ctx, mut api) = mock_api::context(controller_config(), NOW);
    let ctx = Arc::new(ctx.with_reloader_reader(reloaders.clone()));
    let port = common::mcp::closed_port().await;
    let mut s = lab(
        &format!("https://127.0.0.1:{port}/mcp"),
        json!({"includeSystemRoots": false, "sources": [{"configMap": {"name": "ca"}}]}),
        None,
    );
    s.spec.pod_selector =
        Some(serde_json::from_value(json!({"matchLabels": {"app": "lab"}})).unwrap());
    s.spec.rotation = Some(
        serde_json::from_value(json!({"strategy": "Signal", "fallback": "RollingRestart"}))
            .unwrap(),
    );
    let task = tokio::spawn(reconcile(Arc::new(s), ctx));
    api.expect(Method::GET, "/api/v1/namespaces/agents/configmaps/ca", &[])
        .await
        .ok(&ca_config_map(&corp.pem));
    api.expect_trust("agents", "lab").await;

    // One list of the namespace's pods: ours (marked, running, with the sidecar), another
    // McpServer's, and one of ours that has finished.
    let pod = |name: &str, owner: &str, phase: &str| {
        json!({"metadata": {"name": name, "namespace": "agents", "annotations": {"mcptrust.io/mcpserver": owner}},
               "spec": {"initContainers": [{"name": RELOADER_CONTAINER, "restartPolicy": "Always",
                            "ports": [{"name": RELOADER_PORT_NAME, "containerPort": 9899}]}],
                        "containers": [{"name": "server"}]},
               "status": {"phase": phase, "podIP": "10.1.2.3"}})
    };
    api.expect(Method::GET, "/api/v1/namespaces/agents/pods", &[])
        .await
        .ok(
            &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                pod("lab-0", "agents/lab", "Running"),
                pod("other-0", "agents/other", "Running"),
                pod("lab-old", "agents/lab", "Succeeded"),
            ]}),
        );
    let (kind, reason, note) = api.expect_event("agents").await;
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Warning", "SignalKilledTarget")
    );
    assert!(note.contains("lab-0") && note.contains("PID 12"), "{note}");
    let (_, reason, _) = api.expect_event("agents").await;
    assert_eq!(reason, "ConnectionRefused");
    let status = api.expect_status("agents", "lab").await;
    let rr = condition(&status, "RotationReady");
    assert_eq!(
        (rr["status"].as_str(), rr["reason"].as_str()),
        (Some("False"), Some("SignalKilledTarget"))
    );
    assert_eq!(
        condition(&status, "Ready")["reason"],
        "ConnectionRefused",
        "RotationReady is not part of Ready"
    );

    // The fallback: the selected Deployment rolls.
    api.expect(Method::GET, "/apis/apps/v1/namespaces/agents/deployments", &[])
        .await
        .ok(&json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": [
            {"metadata": {"name": "lab", "namespace": "agents"},
             "spec": {"selector": {"matchLabels": {"app": "lab"}},
                      "template": {"metadata": {"labels": {"app": "lab"}}, "spec": {"containers": [{"name": "server"}]}}}}
        ]}));
    let roll = api
        .expect(
            Method::PATCH,
            "/apis/apps/v1/namespaces/agents/deployments/lab",
            &["fieldManager=mcptrust-rotation", "force=true"],
        )
        .await;
    assert!(
        roll.body["spec"]["template"]["metadata"]["annotations"]["mcptrust.io/rotation-hash"]
            .is_string()
    );
    roll.echo();
    let (_, reason, note) = api.expect_event("agents").await;
    assert_eq!(reason, "RollingRestart");
    assert!(
        note.contains("could not signal the server safely"),
        "{note}"
    );
    for kind in ["statefulsets", "daemonsets"] {
        api.expect(
            Method::GET,
            &format!("/apis/apps/v1/namespaces/agents/{kind}"),
            &[],
        )
        .await
        .ok(&json!({"apiVersion": "apps/v1", "kind": "List", "metadata": {}, "items": []}));
    }
    task.await.unwrap().unwrap();
    api.expect_done().await;
    assert_eq!(
        *reloaders.asked.lock().unwrap(),
        vec![("10.1.2.3".to_string(), 9899)],
        "only the running pod of this McpServer"
    );
}
