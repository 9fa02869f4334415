//! The controller closes the rotation loop (issue 21, step 4), on a real kube-apiserver
//! (`tests/common/envtest.rs`) with `mcptrust run` out of cluster and its live prober and
//! live reloader reader:
//! - an mTLS McpServer (`strategy: Signal`, `fallback: RollingRestart`) whose endpoint is a
//!   rustls MCP server on 127.0.0.1 presenting the certificate of the McpServer's own
//!   Secret is verified; `mcptrust renew` while the server keeps the old certificate turns
//!   `EndpointVerified` False `ServingStaleCertificate` after the grace period (both
//!   serials in the message, a Warning Event, the metric, `kubectl describe`) and rolls the
//!   selected Deployment once, and True again once the server presents the new
//!   certificate;
//! - `RotationReady` for `strategy: Signal` from a Pod object (its status set through the
//!   status subresource: `podIP` 127.0.0.1, a `mcptrust-reloader` container with the named
//!   port) and a plain HTTP server on 127.0.0.1 answering `/status` as the sidecar would:
//!   `Watching`, `SignalKilledTarget` (with its Event and the `RollingRestart` fallback
//!   rolling the Deployment), `SignalHandlingUnknown`, and `ReloaderMissing` for a pod the
//!   webhook skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::Leaf;
use common::envtest::{
    ControlPlane, Supervised, free_port, http_get, mcptrust_bin, metric_sum, start_operator,
    wait_until_or, with_operator_namespaces,
};
use common::mcp::{Answer, TlsSwitch, full, handler, serve, serve_switchable, server_config};
use mcptrust::api::reloader::{
    ANNOTATION_RELOADER_SKIPPED, RELOADER_CONTAINER, RELOADER_PORT_NAME, ReloaderDecision,
    ReloaderStatus,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);
/// `--stale-certificate-grace-seconds` of the operator under test.
const GRACE_SECS: i64 = 4;

fn operator(cp: &ControlPlane, name: &str, op_ns: &str, admin_port: u16) -> Supervised {
    start_operator(
        cp,
        name,
        &cp.kubeconfig,
        &[
            "--operator-namespace",
            op_ns,
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--disable-webhook",
            "--disable-leader-election",
            "--stale-certificate-grace-seconds",
            &GRACE_SECS.to_string(),
        ],
    )
}

fn mcps(cp: &ControlPlane, ns: &str, name: &str) -> Value {
    cp.get_json(&["-n", ns, "mcps", name])
}

fn condition(server: &Value, type_: &str) -> Value {
    server["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until `type_` of McpServer `ns/name` has `status` and `reason`; returns the
/// McpServer.
fn wait_condition(
    cp: &ControlPlane,
    op: &Supervised,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> Value {
    let mut last = Value::Null;
    wait_until_or(
        WAIT,
        &format!("{ns}/{name} {type_}={status} {reason:?}"),
        || {
            last = mcps(cp, ns, name);
            let c = condition(&last, type_);
            (c["status"] == status && reason.is_none_or(|r| c["reason"] == r)) || !op.alive()
        },
        || {
            format!(
                "status: {:#}\noperator log:\n{}",
                mcps(cp, ns, name)["status"],
                op.tail(40)
            )
        },
    );
    assert!(op.alive(), "the operator exited:\n{}", op.tail(40));
    last
}

/// The certificate and key of Secret `ns/name` (`kubernetes.io/tls`), and its `ca.crt`.
fn secret_leaf(cp: &ControlPlane, ns: &str, name: &str) -> (Leaf, String) {
    let s = cp.get_json(&["-n", ns, "secret", name]);
    let field = |k: &str| {
        let b = base64::engine::general_purpose::STANDARD
            .decode(s["data"][k].as_str().expect(k))
            .expect("base64");
        String::from_utf8(b).expect("utf-8")
    };
    (
        Leaf::from_pem(field("tls.crt"), field("tls.key")),
        field("ca.crt"),
    )
}

/// Warning Events of reason `reason` about McpServer `name`.
fn warnings(cp: &ControlPlane, ns: &str, name: &str, reason: &str) -> Vec<Value> {
    cp.get_json(&["-n", ns, "events.events.k8s.io"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["reason"] == reason && e["type"] == "Warning" && e["regarding"]["name"] == name
        })
        .cloned()
        .collect()
}

/// One operator for both scenarios: an operator reconciles the McpServers of every
/// namespace, so two would both write the status and Events of each.
#[test]
fn the_controller_closes_the_rotation_loop() {
    let Some((cp, op_ns, ns)) = with_operator_namespaces("stale") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin_port = free_port();
    let op = operator(cp, "mcptrust-loop-0", &op_ns, admin_port);
    a_server_that_keeps_the_old_certificate_is_reported_after_the_grace_period(
        cp, &rt, &op, &ns, admin_port,
    );
    rotation_ready_reads_the_reloader_sidecars(cp, &rt, &op, &cp.namespace("reload"));
}

fn a_server_that_keeps_the_old_certificate_is_reported_after_the_grace_period(
    cp: &ControlPlane,
    rt: &tokio::runtime::Runtime,
    op: &Supervised,
    ns: &str,
    admin_port: u16,
) {
    // The MCP server presents nothing until the Secret exists.
    let switch = TlsSwitch::default();
    let server = rt.block_on(serve_switchable(switch.clone(), |_| {
        common::mcp::streamable_mcp(Answer::Json)
    }));
    deployment(cp, ns, "lab");
    cp.apply(&json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": "lab", "namespace": ns},
        "spec": {
            "transport": "streamable-http",
            "endpoint": {"url": format!("https://127.0.0.1:{}/mcp", server.port())},
            "trust": {"includeSystemRoots": true},
            "mtls": {
                "server": {"ipAddresses": ["127.0.0.1"]},
                "clients": [{"name": "gateway"}],
            },
            "podSelector": {"matchLabels": {"app": "lab"}},
            "rotation": {"strategy": "Signal", "fallback": "RollingRestart"},
        },
    }));
    let mut first_sha = None;
    wait_until_or(
        WAIT,
        "the server certificate",
        || {
            first_sha = mcps(cp, ns, "lab")["status"]["serverCertificate"]["sha256"]
                .as_str()
                .map(str::to_owned);
            first_sha.is_some() || !op.alive()
        },
        || op.tail(40),
    );
    let (old_leaf, ca_pem) = secret_leaf(cp, ns, "lab-server-tls");
    assert_eq!(Some(&old_leaf.sha256), first_sha.as_ref());
    switch.set(server_config(&old_leaf, Some(&ca_pem), false));
    let verified = wait_condition(
        cp,
        op,
        ns,
        "lab",
        "EndpointVerified",
        "True",
        Some("Verified"),
    );
    let old_serial = verified["status"]["serverCertificate"]["serial"]
        .as_str()
        .expect("serial")
        .to_owned();
    assert_eq!(
        verified["status"]["endpoint"]["peer"]["serial"], old_serial,
        "{:#}",
        verified["status"]
    );

    // Renewed; the server keeps presenting the old certificate.
    let out = std::process::Command::new(mcptrust_bin())
        .args(["renew", "lab", "-n", ns, "--kubeconfig"])
        .arg(&cp.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stale = wait_condition(
        cp,
        op,
        ns,
        "lab",
        "EndpointVerified",
        "False",
        Some("ServingStaleCertificate"),
    );
    let status = &stale["status"];
    let current = &status["serverCertificate"];
    let new_serial = current["serial"].as_str().unwrap().to_owned();
    assert_ne!(new_serial, old_serial);
    let c = condition(&stale, "EndpointVerified");
    let message = c["message"].as_str().unwrap();
    for needle in [
        format!("serial {old_serial}"),
        format!("serial {new_serial}"),
        "past the grace period".to_owned(),
        "see the RotationReady condition".to_owned(),
        format!("notAfter {}", current["notAfter"].as_str().unwrap()),
    ] {
        assert!(message.contains(&needle), "{needle:?} not in {message}");
    }
    // Not before the grace period ended.
    let ts = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
            .as_second()
    };
    let changed = ts(&current["changedAt"]);
    assert!(
        ts(&c["lastTransitionTime"]) >= changed + GRACE_SECS,
        "False at {} but the Secret changed at {changed}: {status:#}",
        c["lastTransitionTime"]
    );
    eprintln!(
        "ServingStaleCertificate {} s after the Secret changed (grace {GRACE_SECS} s)",
        ts(&c["lastTransitionTime"]) - changed
    );
    assert_eq!(condition(&stale, "Ready")["status"], "False");
    let events = warnings(cp, ns, "lab", "ServingStaleCertificate");
    assert_eq!(events.len(), 1, "one Warning Event: {events:#?}");
    assert!(events[0]["note"].as_str().unwrap().contains(&new_serial));
    let metrics = http_get(admin_port, "/metrics");
    assert_eq!(
        metric_sum(&metrics, "mcptrust_stale_certificate_detections"),
        1.0,
        "{metrics}"
    );
    // Signal's fallback rolls the Deployment, once for this certificate.
    wait_until_or(
        WAIT,
        "the fallback's rolling restart",
        || rotation_hash(cp, ns, "lab").is_string(),
        || op.tail(40),
    );
    let rolled = rotation_hash(cp, ns, "lab");
    assert_eq!(
        condition(&stale, "RotationReady")["reason"],
        "Watching",
        "no sidecar says why: {status:#}"
    );
    let describe = cp.kubectl(&["-n", ns, "describe", "mcps", "lab"]);
    assert!(describe.contains("ServingStaleCertificate"), "{describe}");
    assert!(describe.contains(&new_serial), "{describe}");

    // The server loads the new certificate: verified again at the next retry.
    let (new_leaf, _) = secret_leaf(cp, ns, "lab-server-tls");
    assert_eq!(
        Some(&new_leaf.sha256),
        current["sha256"].as_str().map(str::to_owned).as_ref()
    );
    switch.set(server_config(&new_leaf, Some(&ca_pem), false));
    let again = wait_condition(
        cp,
        op,
        ns,
        "lab",
        "EndpointVerified",
        "True",
        Some("Verified"),
    );
    eprintln!(
        "EndpointVerified True again {} s after it turned ServingStaleCertificate",
        ts(&condition(&again, "EndpointVerified")["lastTransitionTime"])
            - ts(&c["lastTransitionTime"])
    );
    assert_eq!(
        again["status"]["endpoint"]["peer"]["serial"],
        new_serial.as_str()
    );
    assert_eq!(warnings(cp, ns, "lab", "ServingStaleCertificate").len(), 1);
    assert_eq!(rotation_hash(cp, ns, "lab"), rolled, "rolled once");
    drop(server);
}

/// A Deployment `name` whose pods are labelled `app: <name>` (no controller runs in
/// envtest: only its template matters, which a rolling restart annotates).
fn deployment(cp: &ControlPlane, ns: &str, name: &str) {
    cp.apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "server", "image": "nginx"}]},
            },
        },
    }));
}

/// The `mcptrust.io/rotation-hash` of Deployment `ns/name`'s pod template (`Null` when it
/// never rolled).
fn rotation_hash(cp: &ControlPlane, ns: &str, name: &str) -> Value {
    cp.get_json(&["-n", ns, "deployment", name])["spec"]["template"]["metadata"]["annotations"]
        ["mcptrust.io/rotation-hash"]
        .clone()
}

/// What the fake sidecar answers at `/status`.
type Shared = Arc<Mutex<ReloaderStatus>>;

fn decision(decision: &str, message: &str, pid: u32) -> Option<ReloaderDecision> {
    Some(ReloaderDecision {
        decision: decision.into(),
        message: message.into(),
        at: "2026-12-06T16:00:00Z".into(),
        pid: Some(pid),
    })
}

/// Bumps the McpServer's generation (its signal), so that the controller probes, and
/// reads the sidecars, again.
fn signal_server(cp: &ControlPlane, ns: &str, port: u16, signal: &str) {
    cp.apply(&json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": "gw", "namespace": ns},
        "spec": {
            "transport": "streamable-http",
            // Nothing listens there: the probe fails, which RotationReady does not depend on.
            "endpoint": {"url": format!("https://127.0.0.1:{port}/mcp")},
            "trust": {"includeSystemRoots": true},
            "podSelector": {"matchLabels": {"app": "gw"}},
            "rotation": {"strategy": "Signal", "signal": signal, "fallback": "RollingRestart"},
        },
    }));
}

/// Bumps the generation with `signal` ([`signal_server`]), waits for `RotationReady`
/// `status`/`reason`, and checks that its message holds each of `needles`; returns the
/// McpServer.
#[allow(clippy::too_many_arguments)]
fn rotation_step(
    cp: &ControlPlane,
    op: &Supervised,
    ns: &str,
    port: u16,
    signal: &str,
    status: &str,
    reason: &str,
    needles: &[&str],
) -> Value {
    signal_server(cp, ns, port, signal);
    let s = wait_condition(cp, op, ns, "gw", "RotationReady", status, Some(reason));
    let c = condition(&s, "RotationReady");
    let message = c["message"].as_str().unwrap();
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    s
}

fn rotation_ready_reads_the_reloader_sidecars(
    cp: &ControlPlane,
    rt: &tokio::runtime::Runtime,
    op: &Supervised,
    ns: &str,
) {
    let shared: Shared = Arc::default();
    let answer = shared.clone();
    let sidecar = rt.block_on(serve(None, move |_| {
        handler(move |req| {
            let body = serde_json::to_string(&*answer.lock().unwrap()).unwrap();
            async move {
                if req.uri().path() == "/status" {
                    full(200, "application/json", body)
                } else {
                    full(404, "text/plain", "not found")
                }
            }
        })
    }));
    let closed = free_port();

    // A Deployment the fallback may roll, and its pod as the webhook would have admitted it.
    deployment(cp, ns, "gw");
    cp.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "gw-0", "namespace": ns, "labels": {"app": "gw"},
            "annotations": {"mcptrust.io/mcpserver": format!("{ns}/gw")}},
        "spec": {
            "initContainers": [{"name": RELOADER_CONTAINER, "image": "mcptrust", "restartPolicy": "Always",
                "ports": [{"name": RELOADER_PORT_NAME, "containerPort": sidecar.port()}]}],
            "containers": [{"name": "server", "image": "nginx"}],
        },
    }));
    let out = cp.kubectl_output(&[
        "-n",
        ns,
        "patch",
        "pod",
        "gw-0",
        "--subresource=status",
        "--type=merge",
        "-p",
        &json!({"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}})
            .to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let step = |signal: &str, status: &str, reason: &str, needles: &[&str]| {
        rotation_step(cp, op, ns, closed, signal, status, reason, needles)
    };
    // No change yet.
    step("SIGHUP", "True", "Watching", &["1 pod(s)"]);
    assert_eq!(
        rotation_hash(cp, ns, "gw"),
        Value::Null,
        "nothing rolled while the sidecar is fine"
    );

    // A signal killed the target: the condition names the pod and PID, an Event, and the
    // RollingRestart fallback rolls the Deployment.
    *shared.lock().unwrap() = ReloaderStatus {
        last_decision: decision("SignalKilledTarget", "PID 31 exited after SIGHUP", 31),
        killed_target: true,
        needs_fallback: true,
        signals_sent: 1,
        ..Default::default()
    };
    let s = step(
        "SIGUSR1",
        "False",
        "SignalKilledTarget",
        &["gw-0", "PID 31"],
    );
    wait_until_or(
        WAIT,
        "the SignalKilledTarget Event",
        || warnings(cp, ns, "gw", "SignalKilledTarget").len() == 1,
        || format!("{:#?}", cp.get_json(&["-n", ns, "events.events.k8s.io"])),
    );
    wait_until_or(
        WAIT,
        "the fallback's rolling restart",
        || rotation_hash(cp, ns, "gw").is_string(),
        || op.tail(40),
    );
    // RotationReady is not part of Ready's verdict: Ready names the endpoint's failure.
    assert_eq!(
        condition(&s, "Ready")["reason"],
        condition(&s, "EndpointVerified")["reason"]
    );

    // A Go target the McpServer does not vouch for.
    *shared.lock().unwrap() = ReloaderStatus {
        last_decision: decision(
            "SignalHandlingUnknown",
            "PID 8 is a Go program: set spec.rotation.handlesSignal: true if it calls signal.Notify",
            8,
        ),
        needs_fallback: true,
        ..Default::default()
    };
    step(
        "SIGUSR2",
        "False",
        "SignalHandlingUnknown",
        &["gw-0", "handlesSignal"],
    );

    // A pod the webhook left without a sidecar.
    cp.kubectl(&[
        "-n",
        ns,
        "annotate",
        "pod",
        "gw-0",
        &format!("{ANNOTATION_RELOADER_SKIPPED}=shareProcessNamespace is false"),
    ]);
    step(
        "SIGHUP",
        "False",
        "ReloaderMissing",
        &["gw-0", "shareProcessNamespace is false"],
    );
    let describe = cp.kubectl(&["-n", ns, "describe", "mcps", "gw"]);
    assert!(
        describe.contains("RotationReady") && describe.contains("ReloaderMissing"),
        "{describe}"
    );
    assert_eq!(
        warnings(cp, ns, "gw", "SignalKilledTarget").len(),
        1,
        "one Event per transition"
    );
    drop(sidecar);
}
