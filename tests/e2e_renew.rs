//! `mcptrust renew` on a real kube-apiserver (`tests/common/envtest.rs`) with the operator
//! running out of cluster: the annotation it sets is honoured once (a new server
//! certificate, the request recorded on the Secret, a `Renewed` Event naming
//! `ManuallyTriggered`), and a missing McpServer is an error, never created.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::envtest::{free_port, mcptrust_bin, start_operator, wait_until_or};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

fn get_json(cp: &common::envtest::ControlPlane, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&cp.kubectl(&all)).expect("json")
}

fn server_sha(cp: &common::envtest::ControlPlane, ns: &str) -> Option<String> {
    get_json(cp, &["-n", ns, "get", "mcps", "github"])["status"]["serverCertificate"]["sha256"]
        .as_str()
        .map(str::to_owned)
}

/// The McpServer under test, applied server-side; `signal` is set when given.
fn apply_server(cp: &common::envtest::ControlPlane, ns: &str, signal: Option<&str>) {
    let mut rotation = json!({"strategy": "Signal"});
    if let Some(s) = signal {
        rotation["signal"] = json!(s);
    }
    let server = json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": "github", "namespace": ns},
        "spec": {
            "endpoint": {"url": format!("https://github-mcp.{ns}.svc:8443/mcp/")},
            "podSelector": {"matchLabels": {"app": "github-mcp"}},
            "mtls": {},
            "rotation": rotation,
        },
    });
    let out = cp.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=e2e", "-f", "-"],
        &server.to_string(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn renew(cp: &common::envtest::ControlPlane, name: &str, ns: &str) -> std::process::Output {
    std::process::Command::new(mcptrust_bin())
        .args(["renew", name, "-n", ns, "--kubeconfig"])
        .arg(&cp.kubeconfig)
        .output()
        .expect("mcptrust renew")
}

#[test]
fn renew_is_honoured_once_and_recorded() {
    let Some(cp) = e2e!() else { return };
    cp.install_crds();
    let operator_ns = cp.namespace("mcptrust");
    let ns = cp.namespace("agents");
    let operator = start_operator(
        cp,
        "mcptrust-renew-0",
        &cp.kubeconfig,
        &[
            "--operator-namespace",
            &operator_ns,
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--disable-webhook",
            "--disable-endpoint-probe",
            "--disable-leader-election",
        ],
    );
    apply_server(cp, &ns, None);
    let mut first = None;
    wait_until_or(
        WAIT,
        "a server certificate",
        || {
            first = server_sha(cp, &ns);
            first.is_some() || !operator.alive()
        },
        || operator.tail(40),
    );
    let first = first.expect("issued");

    let out = renew(cp, "github", &ns);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Manually triggered renewal"), "{stdout}");
    let mut second = None;
    wait_until_or(
        WAIT,
        "a renewed server certificate",
        || {
            second = server_sha(cp, &ns).filter(|s| *s != first);
            second.is_some() || !operator.alive()
        },
        || operator.tail(40),
    );
    let second = second.expect("renewed");

    // The request is recorded on the Secret, and the Event names it.
    let mcps = get_json(cp, &["-n", &ns, "get", "mcps", "github"]);
    let requested = mcps["metadata"]["annotations"]["mcptrust.io/renew-requested"]
        .as_str()
        .expect("annotation")
        .to_owned();
    let secret = get_json(cp, &["-n", &ns, "get", "secret", "github-server-tls"]);
    assert_eq!(
        secret["metadata"]["annotations"]["mcptrust.io/renewed-for"],
        requested.as_str()
    );
    let events = get_json(cp, &["-n", &ns, "get", "events.events.k8s.io"]);
    let renewed: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "Renewed")
        .collect();
    assert_eq!(renewed.len(), 1, "one Renewed event: {renewed:?}");
    assert!(
        renewed[0]["note"]
            .as_str()
            .unwrap()
            .contains("ManuallyTriggered"),
        "{}",
        renewed[0]
    );

    // Honoured once: a spec change makes the operator reconcile again, and the
    // certificate stays.
    apply_server(cp, &ns, Some("SIGHUP"));
    wait_until_or(
        WAIT,
        "the new generation observed",
        || {
            let m = get_json(cp, &["-n", &ns, "get", "mcps", "github"]);
            m["status"]["observedGeneration"] == m["metadata"]["generation"]
        },
        || operator.tail(40),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(server_sha(cp, &ns).as_deref(), Some(second.as_str()));
    assert!(operator.alive(), "{}", operator.tail(40));

    // A missing McpServer is an error, and the apply did not create one.
    let out = renew(cp, "nope", &ns);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = get_json(cp, &["-n", &ns, "get", "mcps"]);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}
