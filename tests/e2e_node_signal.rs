//! `rotation.strategy: Signal` on the real node (issue 21, step 5): the chart installed in
//! cluster with the image of the binary under test, so that its webhook injects the
//! `mcptrust-reloader` sidecar (`mcptrust reload`) and its controller probes and reports;
//! real servers in pods (Debian's nginx, a Go HTTPS server built from
//! `tests/fixtures/go-tls-server`), each serving the McpServer's server Secret from the
//! injected mount, each run as a non-root UID; the Secret renewed with `mcptrust renew`.
//!
//! Through every rotation a [`Monitor`] handshakes with the pod every 0.5 s (verified
//! against the federation CA, SNI the Secret's DNS name) and records which certificate was
//! served. The McpServer's endpoint URL is `https://10.88.0.1:<port>/mcp/`, a
//! [`Forwarder`] on the node's bridge relaying to the pod (its IP is known only once the
//! pod exists, and the URL names the certificate's SANs before that); TLS passes through
//! untouched, so the operator's probe sees the pod's certificate.
//!
//! Each test prints the figures it measures (`figure: ...`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::envtest::{ControlPlane, http_get_at, wait_until, wait_until_or};
use common::monitor::{Forwarder, Monitor, Stream};
use common::node::{
    HOST_IP, Node, go_tls_server_image, install_chart, nginx_conf, nginx_image, operator_logs,
    pod_ready, pods, secs,
};
use mcptrust::api::reloader::{
    ANNOTATION_RELOAD_DEBOUNCE, ANNOTATION_RELOADER_SKIPPED, ENV_RELOADER_TARGET,
    RELOADER_ADMIN_PORT, RELOADER_CONTAINER, ReloaderStatus,
};
use serde_json::{Value, json};

/// Seconds the controller waits after a Secret change before it calls a server that
/// still serves the old certificate stale (`mcptrust run
/// --stale-certificate-grace-seconds`): short, so that the tests see it, yet longer than
/// kubelet's sync (10 s on this node) plus the debounce (2 s).
const STALE_GRACE_SECS: u64 = 20;

/// The port the servers listen on in their pods.
const PORT: u16 = 8443;

/// The name of the server container in every pod of these tests.
const CONTAINER: &str = "server";

/// The UID (and GID) the servers run as: nginx's Debian user, not root.
const NGINX_UID: u32 = 101;

/// The debounce (pod annotation) of the tests that act inside the window: longer than
/// two kubelet syncs (10 s each on this node).
const DEBOUNCE_SECS: u64 = 30;

/// The UID the Go server runs as (the distroless `nonroot`).
const GO_UID: u32 = 65532;

/// The node with the chart installed (the stale-certificate grace set short), once per
/// binary.
fn cluster() -> Option<&'static Node> {
    static INSTALLED: OnceLock<Option<&'static Node>> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let node = node!()?;
        install_chart(
            node,
            &json!({"controller": {"staleCertificateGraceSeconds": STALE_GRACE_SECS}}),
        )?;
        Some(node)
    })
}

/// nginx for `Signal` as a non-root UID: pid file, temp paths and logs under `/tmp` or on
/// stderr, listening on 8443 with the McpServer's server Secret from the injected mount;
/// `/mcp/` answers the operator's probe as an MCP server would (as in `tests/e2e_node.rs`)
/// and `/big` sends 16 MiB at 16 KiB/s: a response that outlives every rotation here.
const NGINX_CONF: &str = r#"
worker_processes 1;
error_log stderr info;
pid /tmp/nginx.pid;
events {}
http {
  access_log off;
  # temp paths
  server {
    listen 8443 ssl;
    ssl_certificate /etc/mcptrust/tls/server/tls.crt;
    ssl_certificate_key /etc/mcptrust/tls/server/tls.key;
    # mcp location
    location = /big {
      root /tmp/www;
      default_type application/octet-stream;
      limit_rate 16k;
    }
  }
}
"#;

/// The shell line that prepares `/tmp` and starts nginx in the foreground.
const NGINX_PREPARE: &str = "mkdir -p /tmp/www && /bin/busybox dd if=/dev/zero of=/tmp/www/big bs=1048576 count=16 2>/dev/null";

/// nginx as the container's topmost process (`exec`): its master catches SIGHUP.
fn nginx_exec() -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "{NGINX_PREPARE}; exec /usr/sbin/nginx -e stderr -c /etc/nginx-conf/nginx.conf -g 'daemon off;'"
        ),
    ]
}

/// nginx under a busybox `sh` that stays the topmost process (`; true` keeps it from
/// exec'ing): the shell has SIGHUP at its default disposition (not caught), so a SIGHUP
/// would kill it and the container.
fn nginx_under_shell() -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "{NGINX_PREPARE}; /usr/sbin/nginx -e stderr -c /etc/nginx-conf/nginx.conf -g 'daemon off;'; true"
        ),
    ]
}

/// One McpServer with `rotation` selecting a one-replica Deployment of the same name, its
/// pod up and the endpoint verified.
struct Scenario {
    node: &'static Node,
    cp: &'static ControlPlane,
    ns: String,
    name: String,
    /// The DNS SAN the monitor sends as SNI.
    dns: String,
    /// The federation CA (the server Secret's `ca.crt`).
    ca: String,
    fwd: Forwarder,
    /// The current pod's name and IP.
    pod: String,
    ip: String,
}

/// What a scenario runs: the image, the command, the UID, and extra pod-spec fields.
struct Workload {
    image: String,
    command: Vec<String>,
    uid: u32,
    /// Pod template annotations.
    annotations: Value,
    /// Merged into the pod spec (e.g. `shareProcessNamespace: false`).
    pod_spec: Value,
    /// Whether the pod mounts the nginx configuration.
    nginx_conf: bool,
}

impl Workload {
    fn nginx(command: Vec<String>) -> Self {
        Self {
            image: "localhost/nginx:local".into(),
            command,
            uid: NGINX_UID,
            annotations: json!({}),
            pod_spec: json!({}),
            nginx_conf: true,
        }
    }

    fn go(reload: bool) -> Self {
        let mut command = vec![
            "/go-tls-server".to_owned(),
            "-cert".into(),
            "/etc/mcptrust/tls/server/tls.crt".into(),
            "-key".into(),
            "/etc/mcptrust/tls/server/tls.key".into(),
            "-addr".into(),
            format!(":{PORT}"),
        ];
        if reload {
            command.push("-reload".into());
        }
        Self {
            image: "localhost/go-tls-server:local".into(),
            command,
            uid: GO_UID,
            annotations: json!({}),
            pod_spec: json!({}),
            nginx_conf: false,
        }
    }
}

/// The McpServer's condition `type_` (the whole object), or `Null`.
fn condition(server: &Value, type_: &str) -> Value {
    server["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or_default()
}

/// A Secret's key, decoded.
fn secret_key(cp: &ControlPlane, ns: &str, name: &str, key: &str) -> Option<String> {
    use base64::Engine as _;
    let out = cp.kubectl_output(&["-n", ns, "get", "secret", name, "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let s: Value = serde_json::from_slice(&out.stdout).ok()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s["data"][key].as_str()?)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// SHA-256 (hex) of the first certificate of a PEM chain.
fn leaf_sha256(pem: &str) -> String {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    common::sha256_hex(&der)
}

/// The reloader's `GET /status` on the pod IP (over the bridge), when it answers.
fn reloader_status(ip: &str) -> Option<ReloaderStatus> {
    serde_json::from_str(&http_get_at(ip, RELOADER_ADMIN_PORT, "/status")).ok()
}

impl Scenario {
    /// Creates the namespace (injected), the McpServer (`rotation`), then the Deployment
    /// running `work`, and waits for the pod Ready and `EndpointVerified` True.
    fn start(node: &'static Node, prefix: &str, rotation: Value, work: &Workload) -> Self {
        let cp = node.cp;
        let ns = cp.namespace(prefix);
        cp.kubectl(&["label", "namespace", &ns, "mcptrust.io/injection=enabled"]);
        let name = prefix.to_owned();
        let dns = format!("{name}.{ns}.svc");
        let fwd = Forwarder::start();
        let url = format!("https://{HOST_IP}:{}/mcp/", fwd.port);
        cp.apply(
            &json!({"apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"transport": "streamable-http", "endpoint": {"url": url},
                "podSelector": {"matchLabels": {"app": name}},
                "mtls": {"server": {"dnsNames": [dns]}},
                "rotation": rotation}}),
        );
        let secret = format!("{name}-server-tls");
        let mut ca = String::new();
        wait_until(Duration::from_secs(60), "the server Secret issued", || {
            ca = secret_key(cp, &ns, &secret, "ca.crt").unwrap_or_default();
            !ca.is_empty()
        });
        let mut container = json!({"name": CONTAINER, "image": work.image,
            "imagePullPolicy": "Never", "command": work.command,
            "securityContext": {"runAsUser": work.uid, "runAsGroup": work.uid,
                "runAsNonRoot": true, "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]}}});
        // A writable /tmp for a non-root UID (the image's is root's).
        container["volumeMounts"] = json!([{"name": "tmp", "mountPath": "/tmp"}]);
        let mut spec = json!({"terminationGracePeriodSeconds": 2, "containers": [],
            "volumes": [{"name": "tmp", "emptyDir": {}}]});
        if work.nginx_conf {
            container["volumeMounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "conf", "mountPath": "/etc/nginx-conf", "readOnly": true}));
            spec["volumes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "conf", "configMap": {"name": "nginx-conf"}}));
            cp.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "nginx-conf", "namespace": ns},
                "data": {"nginx.conf": nginx_conf(NGINX_CONF)}}));
        }
        spec["containers"] = json!([container]);
        for (k, v) in work.pod_spec.as_object().unwrap() {
            spec[k] = v.clone();
        }
        cp.apply(&json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name},
                        "annotations": work.annotations}, "spec": spec}}}));
        let mut s = Self {
            node,
            cp,
            ns,
            name,
            dns,
            ca,
            fwd,
            pod: String::new(),
            ip: String::new(),
        };
        s.wait_pod(&[]);
        s
    }

    /// Waits for a Ready pod of the Deployment other than `not` (the pods it replaced),
    /// points the forwarder at it, and returns its JSON.
    fn wait_pod(&mut self, not: &[String]) -> Value {
        let mut found = Value::Null;
        wait_until_or(
            Duration::from_secs(120),
            &format!("a Ready pod of {}/{}", self.ns, self.name),
            || {
                found = pods(self.cp, &self.ns, &format!("app={}", self.name))
                    .into_iter()
                    .find(|p| {
                        pod_ready(p)
                            && p["metadata"]["deletionTimestamp"].is_null()
                            && !not.contains(&p["metadata"]["name"].as_str().unwrap().to_owned())
                    })
                    .unwrap_or_default();
                !found.is_null()
            },
            || self.diagnose(),
        );
        self.pod = found["metadata"]["name"].as_str().unwrap().to_owned();
        self.ip = found["status"]["podIP"].as_str().unwrap().to_owned();
        self.fwd.set_target(self.addr());
        found
    }

    fn addr(&self) -> SocketAddr {
        format!("{}:{PORT}", self.ip).parse().unwrap()
    }

    fn server(&self) -> Value {
        self.cp.get_json(&["-n", &self.ns, "mcps", &self.name])
    }

    fn secret_sha(&self) -> String {
        secret_key(
            self.cp,
            &self.ns,
            &format!("{}-server-tls", self.name),
            "tls.crt",
        )
        .map(|pem| leaf_sha256(&pem))
        .unwrap_or_default()
    }

    /// Waits until `EndpointVerified` is True and the probe saw the Secret's certificate.
    fn wait_verified(&self) {
        wait_until_or(
            Duration::from_secs(150),
            "EndpointVerified True on the Secret's certificate",
            || {
                let s = self.server();
                condition(&s, "EndpointVerified")["status"] == "True"
                    && s["status"]["endpoint"]["peer"]["sha256"] == self.secret_sha().as_str()
            },
            || self.diagnose(),
        );
    }

    /// `mcptrust renew NAME -n NS` (the binary under test, against the test's API server).
    fn renew(&self) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcptrust"))
            .args(["renew", &self.name, "-n", &self.ns, "--kubeconfig"])
            .arg(&self.cp.kubeconfig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mcptrust renew: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Renews, waits for the reissued Secret and for its certificate in the running pod;
    /// returns the new certificate's SHA-256.
    fn renew_to_pod(&self) -> String {
        let old = self.secret_sha();
        self.renew();
        let new_sha = self.wait_reissued(&old);
        self.wait_mounted(&new_sha);
        new_sha
    }

    /// Waits until the server Secret's certificate differs from `old`; returns the new
    /// SHA-256.
    fn wait_reissued(&self, old: &str) -> String {
        let mut sha = String::new();
        wait_until_or(
            Duration::from_secs(60),
            "the server Secret reissued",
            || {
                sha = self.secret_sha();
                !sha.is_empty() && sha != old
            },
            || self.diagnose(),
        );
        sha
    }

    /// Waits until the mounted certificate in the running pod is `sha` (kubelet's sync).
    fn wait_mounted(&self, sha: &str) {
        wait_until_or(
            Duration::from_secs(90),
            "the new certificate mounted in the running pod",
            || {
                let pem = self.node.exec_output(
                    &self.ns,
                    &self.pod,
                    Some(CONTAINER),
                    &["cat", "/etc/mcptrust/tls/server/tls.crt"],
                );
                pem.status.success() && leaf_sha256(&String::from_utf8_lossy(&pem.stdout)) == sha
            },
            || self.diagnose(),
        );
    }

    fn status(&self) -> Option<ReloaderStatus> {
        reloader_status(&self.ip)
    }

    /// Waits until the McpServer's condition `type_` has `reason`; returns it.
    fn wait_condition(&self, type_: &str, reason: &str, limit: Duration) -> Value {
        let mut found = Value::Null;
        wait_until_or(
            limit,
            &format!("{type_} {reason}"),
            || {
                found = condition(&self.server(), type_);
                found["reason"] == reason
            },
            || self.diagnose(),
        );
        found
    }

    /// Waits until the reloader's last decision is `decision`; returns its status then.
    fn wait_decision(&self, decision: &str) -> ReloaderStatus {
        let mut status = None;
        wait_until_or(
            Duration::from_secs(90),
            &format!("the reloader's decision {decision}"),
            || {
                status = self.status();
                status
                    .as_ref()
                    .and_then(|st| st.last_decision.as_ref())
                    .is_some_and(|d| d.decision == decision)
            },
            || self.diagnose(),
        );
        status.unwrap()
    }

    fn logs(&self, container: &str) -> String {
        self.node.logs(&self.ns, &self.pod, container)
    }

    fn restart_count(&self) -> i64 {
        self.cp.get_json(&["-n", &self.ns, "pod", &self.pod])["status"]["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == CONTAINER)
            .and_then(|c| c["restartCount"].as_i64())
            .unwrap()
    }

    /// `/proc/<pid>/status` of the processes in the pod whose command line contains
    /// `needle`, read from the server container (the pod shares one PID namespace).
    fn proc_status_of(&self, needle: &str) -> Vec<String> {
        let script = format!(
            "for d in /proc/[0-9]*; do [ $d = /proc/$$ ] && continue; if /bin/busybox tr '\\0' ' ' < $d/cmdline 2>/dev/null | /bin/busybox grep -q -- '{needle}'; then cat $d/status; echo ====; fi; done"
        );
        let out = self
            .node
            .exec(&self.ns, &self.pod, Some(CONTAINER), &["sh", "-c", &script]);
        out.split("====\n")
            .filter(|s| s.contains("Pid:"))
            .map(str::to_owned)
            .collect()
    }

    fn diagnose(&self) -> String {
        // What the reloader sees of the pod's processes: each command line, and whether
        // its environment still carries the webhook's mark (a process that rewrites its
        // title over its environment, as nginx does, loses it).
        let script = format!(
            "for d in /proc/[0-9]*; do [ $d = /proc/$$ ] && continue; echo \"$d $(/bin/busybox tr '\\0' ' ' < $d/cmdline) {ENV_RELOADER_TARGET}:$(/bin/busybox grep -c {ENV_RELOADER_TARGET}= $d/environ 2>&1)\"; done"
        );
        let procs =
            self.node
                .exec_output(&self.ns, &self.pod, Some(CONTAINER), &["sh", "-c", &script]);
        format!(
            "--- McpServer\n{}\n--- reloader /status\n{:?}\n--- processes of the pod\n{}{}\n--- reloader log\n{}\n--- server log\n{}\n{}\n{}",
            String::from_utf8_lossy(
                &self
                    .cp
                    .kubectl_output(&["-n", &self.ns, "get", "mcps", &self.name, "-o", "yaml"])
                    .stdout
            ),
            reloader_status(&self.ip),
            String::from_utf8_lossy(&procs.stdout),
            String::from_utf8_lossy(&procs.stderr),
            tail(&self.node.logs(&self.ns, &self.pod, RELOADER_CONTAINER), 30),
            tail(&self.node.logs(&self.ns, &self.pod, CONTAINER), 20),
            self.node.diagnose(&self.ns, &self.pod),
            operator_logs(self.node),
        )
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The value of `field` (e.g. `Uid`, `CapEff`) in a `/proc/<pid>/status` text.
fn proc_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map_or("", str::trim)
}

/// The number of SIGHUPs nginx logged receiving (`signal 1 (SIGHUP) received`).
fn nginx_sighups(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("signal 1 (SIGHUP) received"))
        .count()
}

/// What one rotation measured.
struct Rotation {
    new_sha: String,
    /// Seconds from `mcptrust renew` to the Secret reissued, to the file changed in the
    /// pod, to the first handshake with the new certificate.
    reissued: f64,
    mounted: f64,
    served: f64,
}

/// Renews and follows the new certificate from the Secret to the monitor's handshakes.
fn rotate(s: &Scenario, monitor: &Monitor) -> Rotation {
    let old = s.secret_sha();
    let renewed = Instant::now();
    s.renew();
    let new_sha = s.wait_reissued(&old);
    let reissued = secs(renewed);
    s.wait_mounted(&new_sha);
    let mounted = secs(renewed);
    let Some(at) = monitor.wait_for(&new_sha, Duration::from_secs(90)) else {
        panic!(
            "no handshake saw the new certificate: {}\n{}",
            monitor.summary(),
            s.diagnose()
        );
    };
    Rotation {
        new_sha,
        reissued,
        mounted,
        served: at.saturating_duration_since(renewed).as_secs_f64(),
    }
}

#[test]
fn signal_nginx_reloads_without_dropping_a_handshake_or_a_stream() {
    let Some(node) = cluster() else { return };
    node.load(&nginx_image());
    let s = Scenario::start(
        node,
        "sig-nginx",
        json!({"strategy": "Signal", "container": CONTAINER}),
        &Workload::nginx(nginx_exec()),
    );
    s.wait_verified();
    let first_sha = s.secret_sha();
    let monitor = Monitor::start(s.addr(), &s.ca, &s.dns);
    let stream = Stream::open(s.addr(), &s.ca, &s.dns, "/big").unwrap();
    assert_eq!(
        stream.sha256, first_sha,
        "the stream opened on the old pair"
    );
    let master = s
        .node
        .exec(&s.ns, &s.pod, Some(CONTAINER), &["cat", "/tmp/nginx.pid"]);
    let before = s
        .status()
        .unwrap_or_else(|| panic!("no /status\n{}", s.diagnose()));
    assert_eq!(before.signals_sent, 0, "{before:?}");

    // The reloader runs as the target's UID and GID, with no effective capability.
    let reloader = s.proc_status_of("mcptrust reload");
    assert_eq!(reloader.len(), 1, "one reloader process: {reloader:?}");
    let uid = NGINX_UID.to_string();
    for field in ["Uid", "Gid"] {
        let ids: Vec<&str> = proc_field(&reloader[0], field).split_whitespace().collect();
        assert_eq!(ids, [uid.as_str(); 4], "{field} of the reloader");
    }
    assert_eq!(proc_field(&reloader[0], "CapEff"), "0000000000000000");
    assert_eq!(proc_field(&reloader[0], "CapPrm"), "0000000000000000");

    // EndpointVerified is sampled throughout: it must never turn False.
    let started = Instant::now();
    let r = rotate(&s, &monitor);
    let mut verified_samples = 0;
    wait_until_or(
        Duration::from_secs(STALE_GRACE_SECS + 120),
        "the probe to see the new certificate",
        || {
            let server = s.server();
            let ev = condition(&server, "EndpointVerified");
            assert_eq!(
                ev["status"], "True",
                "EndpointVerified stays True through the rotation: {ev}"
            );
            verified_samples += 1;
            server["status"]["endpoint"]["peer"]["sha256"] == r.new_sha.as_str()
        },
        || s.diagnose(),
    );
    // The stream opened before the rotation is still open and still receiving.
    let bytes = stream.bytes();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        stream.ended().is_none(),
        "the stream ended: {:?}",
        stream.ended()
    );
    assert!(
        stream.bytes() > bytes,
        "the stream keeps receiving after the reload ({bytes} bytes, then {})",
        stream.bytes()
    );
    let failures = monitor.failures(started);
    assert!(
        failures.is_empty(),
        "every handshake succeeded: {failures:?}\n{}",
        monitor.summary()
    );
    assert!(
        !monitor.flipped_back(&r.new_sha),
        "once new, always new: {}",
        monitor.summary()
    );
    let after = s.status().unwrap();
    assert_eq!(after.signals_sent, 1, "{after:?}");
    let decision = after.last_decision.clone().unwrap_or_default();
    assert_eq!(decision.decision, "Signal", "{after:?}");
    assert_eq!(
        decision.pid.map(|p| p.to_string()).as_deref(),
        Some(master.trim()),
        "nginx's master was signalled: {after:?}"
    );
    let target = after.target.clone().expect("the reloader found nginx");
    assert!(!target.go, "nginx is no Go binary: {target:?}");
    assert_eq!(
        s.node
            .exec(&s.ns, &s.pod, Some(CONTAINER), &["cat", "/tmp/nginx.pid"]),
        master,
        "nginx's master PID is unchanged"
    );
    assert_eq!(s.restart_count(), 0);
    assert_eq!(
        nginx_sighups(&s.logs(CONTAINER)),
        1,
        "nginx logged one SIGHUP"
    );
    let rotation_ready = s.wait_condition("RotationReady", "Reloaded", Duration::from_secs(60));
    assert_eq!(rotation_ready["status"], "True", "{rotation_ready}");
    eprintln!(
        "figure: Signal (nginx, debounce 2 s): mcptrust renew -> Secret reissued {:.1} s -> file in the pod {:.1} s -> first handshake with the new certificate {:.1} s; {}; stream {} bytes, open; EndpointVerified True in {verified_samples} samples",
        r.reissued,
        r.mounted,
        r.served,
        monitor.summary(),
        stream.bytes()
    );
}

/// A target that does not catch SIGHUP (`nginx_under_shell`) with `fallback`, rotated:
/// the reloader does not signal it, and the McpServer reports the stale certificate.
fn uncaught_target(prefix: &str, fallback: &str) -> Option<(Scenario, String, Monitor)> {
    let node = cluster()?;
    node.load(&nginx_image());
    let s = Scenario::start(
        node,
        prefix,
        json!({"strategy": "Signal", "container": CONTAINER, "fallback": fallback}),
        &Workload::nginx(nginx_under_shell()),
    );
    s.wait_verified();
    let monitor = Monitor::start(s.addr(), &s.ca, &s.dns);
    // The topmost process of the container is the shell, which does not catch SIGHUP.
    let shell = s.proc_status_of("; true");
    assert_eq!(shell.len(), 1, "{shell:?}");
    let cgt = u64::from_str_radix(proc_field(&shell[0], "SigCgt"), 16).unwrap();
    assert_eq!(cgt & 1, 0, "the shell does not catch SIGHUP: {}", shell[0]);
    let new_sha = s.renew_to_pod();
    let st = s.wait_decision("SignalNotCaught");
    assert_eq!(
        st.target.as_ref().map(|t| t.pid.to_string()),
        Some(proc_field(&shell[0], "Pid").to_owned()),
        "the reloader chose the topmost process, the shell: {st:?}"
    );
    assert_eq!(st.signals_sent, 0, "not signalled: {st:?}");
    assert!(st.needs_fallback, "{st:?}");
    Some((s, new_sha, monitor))
}

#[test]
fn signal_not_caught_is_not_sent_and_the_server_is_reported_stale() {
    let Some((s, new_sha, monitor)) = uncaught_target("sig-uncaught", "None") else {
        return;
    };
    let decided = Instant::now();
    let reason = s.wait_condition(
        "EndpointVerified",
        "ServingStaleCertificate",
        Duration::from_secs(STALE_GRACE_SECS + 120),
    );
    assert_eq!(reason["status"], "False", "{reason}");
    eprintln!(
        "figure: SignalNotCaught: the reloader's decision -> ServingStaleCertificate {:.1} s (grace {STALE_GRACE_SECS} s)",
        secs(decided)
    );
    // Still running, never restarted, still serving the old certificate.
    assert_eq!(s.restart_count(), 0);
    assert!(
        monitor.first_seen(&new_sha).is_none(),
        "{}",
        monitor.summary()
    );
    assert!(
        monitor.failures(decided).is_empty(),
        "{}",
        monitor.summary()
    );
    assert_eq!(nginx_sighups(&s.logs(CONTAINER)), 0);
    let rotation_ready =
        s.wait_condition("RotationReady", "SignalNotCaught", Duration::from_secs(60));
    assert_eq!(rotation_ready["status"], "False", "{rotation_ready}");
}

#[test]
fn signal_not_caught_with_fallback_rolling_restart_rolls_the_deployment() {
    let Some((mut s, new_sha, _monitor)) = uncaught_target("sig-fallback", "RollingRestart") else {
        return;
    };
    let decided = Instant::now();
    let old_pod = s.pod.clone();
    let old_restarts = s.restart_count();
    let fresh = s.wait_pod(std::slice::from_ref(&old_pod));
    eprintln!(
        "figure: SignalNotCaught + fallback RollingRestart: the reloader's decision -> new pod Ready {:.1} s",
        secs(decided)
    );
    assert_eq!(old_restarts, 0, "the old pod's server was never killed");
    assert!(fresh["metadata"]["annotations"].is_object());
    let monitor = Monitor::start(s.addr(), &s.ca, &s.dns);
    assert!(
        monitor
            .wait_for(&new_sha, Duration::from_secs(30))
            .is_some(),
        "the new pod serves the new certificate: {}",
        monitor.summary()
    );
    s.wait_verified();
}

/// The Go server (`-reload` when `reload`) under McpServer `prefix` with `rotation`,
/// verified.
fn go_server(prefix: &str, reload: bool, rotation: Value) -> Option<Scenario> {
    let node = cluster()?;
    let image = go_tls_server_image()?;
    node.load(&image);
    let s = Scenario::start(node, prefix, rotation, &Workload::go(reload));
    s.wait_verified();
    Some(s)
}

#[test]
fn signal_go_server_with_a_handler_reloads() {
    let Some(s) = go_server(
        "sig-go",
        true,
        json!({"strategy": "Signal", "container": CONTAINER, "handlesSignal": true}),
    ) else {
        return;
    };
    let monitor = Monitor::start(s.addr(), &s.ca, &s.dns);
    let stream = Stream::open(s.addr(), &s.ca, &s.dns, "/stream").unwrap();
    let started = Instant::now();
    let r = rotate(&s, &monitor);
    let target = s.status().and_then(|st| st.target).expect("a target");
    assert!(target.go, "detected as a Go binary: {target:?}");
    let bytes = stream.bytes();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        stream.ended().is_none() && stream.bytes() > bytes,
        "stream alive"
    );
    assert!(
        monitor.failures(started).is_empty(),
        "{}",
        monitor.summary()
    );
    assert!(!monitor.flipped_back(&r.new_sha), "{}", monitor.summary());
    assert_eq!(s.restart_count(), 0);
    assert_eq!(s.status().unwrap().signals_sent, 1);
    assert!(
        s.logs(CONTAINER).contains("SIGHUP: reloaded"),
        "{}",
        s.logs(CONTAINER)
    );
    eprintln!(
        "figure: Signal (Go GetCertificate, handlesSignal): mcptrust renew -> Secret reissued {:.1} s -> file in the pod {:.1} s -> new certificate served {:.1} s; {}",
        r.reissued,
        r.mounted,
        r.served,
        monitor.summary()
    );
}

#[test]
fn signal_go_server_without_handler_is_not_signalled() {
    let Some(s) = go_server(
        "sig-go-nohup",
        false,
        json!({"strategy": "Signal", "container": CONTAINER}),
    ) else {
        return;
    };
    // Go's runtime catches SIGHUP (SigCgt says so) although this server would die of it.
    let go = s.proc_status_of("/go-tls-server");
    assert_eq!(go.len(), 1, "{go:?}");
    let cgt = u64::from_str_radix(proc_field(&go[0], "SigCgt"), 16).unwrap();
    assert_eq!(cgt & 1, 1, "SigCgt shows SIGHUP caught: {}", go[0]);
    let monitor = Monitor::start(s.addr(), &s.ca, &s.dns);
    let started = Instant::now();
    let new_sha = s.renew_to_pod();
    let rotation_ready = s.wait_condition(
        "RotationReady",
        "SignalHandlingUnknown",
        Duration::from_secs(STALE_GRACE_SECS + 90),
    );
    assert_eq!(rotation_ready["status"], "False", "{rotation_ready}");
    let st = s.status().unwrap();
    assert_eq!(st.signals_sent, 0, "{st:?}");
    assert_eq!(
        st.last_decision.map(|d| d.decision),
        Some("SignalHandlingUnknown".to_owned())
    );
    assert!(st.target.is_some_and(|t| t.go));
    assert_eq!(s.restart_count(), 0, "still running");
    // Still up, still on the pair it loaded at its start.
    assert!(
        monitor.failures(started).is_empty(),
        "{}",
        monitor.summary()
    );
    assert!(
        monitor.first_seen(&new_sha).is_none(),
        "{}",
        monitor.summary()
    );
}

/// nginx (`exec`, catching SIGHUP) with the pod annotation
/// `mcptrust.io/reload-debounce-seconds: DEBOUNCE_SECS`, verified.
fn debounced_nginx(prefix: &str) -> Option<Scenario> {
    let node = cluster()?;
    node.load(&nginx_image());
    let mut work = Workload::nginx(nginx_exec());
    work.annotations = json!({ANNOTATION_RELOAD_DEBOUNCE: DEBOUNCE_SECS.to_string()});
    let s = Scenario::start(
        node,
        prefix,
        json!({"strategy": "Signal", "container": CONTAINER}),
        &work,
    );
    s.wait_verified();
    Some(s)
}

#[test]
fn signal_two_renewals_inside_the_debounce_window_send_one_signal() {
    let Some(s) = debounced_nginx("sig-debounce") else {
        return;
    };
    let monitor = Monitor::start(s.addr(), &s.ca, &s.dns);
    let started = Instant::now();
    let second = s.renew_to_pod();
    let first_swap = Instant::now();
    let third = s.renew_to_pod();
    let window = secs(first_swap);
    assert!(
        window < DEBOUNCE_SECS as f64,
        "both swaps reached the pod within the debounce window ({window:.1} s)"
    );
    assert_eq!(
        s.status().unwrap().signals_sent,
        0,
        "nothing before the debounce ends"
    );
    let Some(at) = monitor.wait_for(&third, Duration::from_secs(90)) else {
        panic!("{}\n{}", monitor.summary(), s.diagnose());
    };
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        monitor.first_seen(&second).is_none(),
        "{}",
        monitor.summary()
    );
    assert_eq!(s.status().unwrap().signals_sent, 1);
    assert_eq!(
        nginx_sighups(&s.logs(CONTAINER)),
        1,
        "nginx logged one SIGHUP"
    );
    assert!(
        monitor.failures(started).is_empty(),
        "{}",
        monitor.summary()
    );
    eprintln!(
        "figure: two renewals {window:.1} s apart in the pod, debounce {DEBOUNCE_SECS} s -> one signal; the last swap -> served {:.1} s",
        at.saturating_duration_since(first_swap).as_secs_f64() - window
    );
}

#[test]
fn signal_target_restarted_mid_rotation_gets_no_stale_signal() {
    let Some(s) = debounced_nginx("sig-restart") else {
        return;
    };
    let new_sha = s.renew_to_pod();
    // nginx dies inside the debounce window; kubelet restarts the container, whose new
    // nginx reads the new files by itself.
    let master = s
        .node
        .exec(&s.ns, &s.pod, Some(CONTAINER), &["cat", "/tmp/nginx.pid"]);
    s.node.exec(
        &s.ns,
        &s.pod,
        Some(CONTAINER),
        &["kill", "-TERM", master.trim()],
    );
    wait_until_or(
        Duration::from_secs(60),
        "the server container restarted",
        || s.restart_count() == 1 && pod_ready(&s.cp.get_json(&["-n", &s.ns, "pod", &s.pod])),
        || s.diagnose(),
    );
    let monitor = Monitor::start(s.addr(), &s.ca, &s.dns);
    assert!(
        monitor
            .wait_for(&new_sha, Duration::from_secs(30))
            .is_some(),
        "{}",
        monitor.summary()
    );
    let st = s.wait_decision("StartedAfterChange");
    assert_eq!(st.signals_sent, 0, "no stale signal: {st:?}");
    assert_eq!(nginx_sighups(&s.logs(CONTAINER)), 0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.restart_count(), 1, "no further restart");
}

#[test]
fn signal_without_a_shared_process_namespace_gets_no_reloader() {
    let Some(node) = cluster() else { return };
    node.load(&nginx_image());
    let mut work = Workload::nginx(nginx_exec());
    work.pod_spec = json!({"shareProcessNamespace": false});
    let mut s = Scenario::start(
        node,
        "sig-noshare",
        json!({"strategy": "Signal", "container": CONTAINER}),
        &work,
    );
    let pod = s.wait_pod(&[]);
    let why = pod["metadata"]["annotations"][ANNOTATION_RELOADER_SKIPPED]
        .as_str()
        .unwrap_or_else(|| panic!("no {ANNOTATION_RELOADER_SKIPPED}: {}", pod["metadata"]));
    assert!(why.contains("shareProcessNamespace"), "{why}");
    assert_eq!(
        pod["spec"]["shareProcessNamespace"], false,
        "the user's spec is kept"
    );
    let sidecars: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten()
        .filter(|c| c["name"] == RELOADER_CONTAINER)
        .collect();
    assert!(sidecars.is_empty(), "no reloader: {sidecars:?}");
    let rotation_ready =
        s.wait_condition("RotationReady", "ReloaderMissing", Duration::from_secs(120));
    assert_eq!(rotation_ready["status"], "False", "{rotation_ready}");
}
