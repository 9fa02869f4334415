//! mcptrust inside real pods: the envtest control plane plus one real node
//! (`tests/common/node.rs`: kubelet, containerd, runc, a CNI bridge, kube-scheduler and
//! kube-controller-manager v1.36), with the operator installed by its own Helm chart and
//! running in pods from an image built of the binary under test.
//!
//! What only a kubelet can show: the env block reaching a process, the mounted files (and
//! their in-place update), the `overlay-system-trust` mount, a RollingRestart's new pods,
//! a real TLS server (Debian's nginx) serving the McpServer's Secret to a client pod over
//! the pod network, the seed-000 stdio child behind a TLS-intercepting proxy (mitmproxy on
//! the bridge), and the chart's webhook called by the API server through its Service while
//! the leader pod is killed. Each test prints the figures it measures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use common::envtest::{ControlPlane, wait_until, wait_until_or};
use common::node::{
    BUSYBOX, HOST_IP, Node, RELEASE_NS, curl_image, install_chart, nginx_conf, nginx_image,
    operator_logs, pod_ready, pods, ready_operator_pods, secs,
};
use serde_json::{Value, json};

/// Tests that only need the operator running hold this for reading; the leader-kill test
/// holds it for writing, so that no other test sees the takeover.
static GATE: RwLock<()> = RwLock::new(());

/// The node with the chart installed (two replicas Ready, caBundle written), once per
/// binary.
fn cluster() -> Option<&'static Node> {
    static INSTALLED: OnceLock<Option<&'static Node>> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let node = node!()?;
        // The probe's targets are pod IPs on the bridge; the chart's NetworkPolicy (if
        // any) is not enforced by this node's CNI anyway.
        install_chart(node, &json!({}))?;
        Some(node)
    })
}

/// `kubectl apply -f -` of `docs` (JSON objects), panicking on failure.
fn apply(cp: &ControlPlane, docs: &[Value]) {
    let text: String = docs.iter().map(|d| format!("---\n{d}\n")).collect();
    let out = cp.kubectl_stdin(&["apply", "-f", "-"], &text);
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace whose pods the chart's webhook injects (`mcptrust.io/injection=enabled`).
fn injected_namespace(cp: &ControlPlane, prefix: &str) -> String {
    let ns = cp.namespace(prefix);
    cp.kubectl(&["label", "namespace", &ns, "mcptrust.io/injection=enabled"]);
    ns
}

/// A ConfigMap `name` holding `pem` under `ca.crt`.
fn ca_config_map(ns: &str, name: &str, pem: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns}, "data": {"ca.crt": pem}})
}

/// A pod (JSON) running `command` in `image`, labelled `labels`.
fn pod(ns: &str, name: &str, image: &str, labels: Value, command: &[&str]) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": name, "namespace": ns, "labels": labels},
    "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
            "command": command}],
    }})
}

fn get_json(cp: &ControlPlane, ns: &str, what: &[&str]) -> Value {
    let mut args = vec!["-n", ns, "get"];
    args.extend(what);
    args.extend(["-o", "json"]);
    serde_json::from_str(&cp.kubectl(&args)).unwrap()
}

/// The McpServer's condition `type_`'s status ("True", "False"), or "".
fn condition(server: &Value, type_: &str) -> String {
    server["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map(|c| c["status"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

/// The status's `trustBundle.sha256`, or "".
fn bundle_sha(server: &Value) -> String {
    server["status"]["trustBundle"]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The name of the ConfigMap mounted as the trust volume of an injected pod.
fn trust_config_map(pod: &Value) -> String {
    pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "mcptrust-trust")
        .and_then(|v| v["configMap"]["name"].as_str())
        .unwrap_or_else(|| panic!("no mcptrust-trust volume in {pod}"))
        .to_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// A stdio McpServer `app` in `ns` selecting `app=<app>`, trusting the system roots and
/// `ca_pem` (ConfigMap `<app>-ca`), with `proxy` for HTTP and HTTPS; waits until Ready.
fn proxied_sandbox(cp: &ControlPlane, ns: &str, app: &str, ca_pem: &str, proxy: &str) {
    let ca = format!("{app}-ca");
    apply(
        cp,
        &[
            ca_config_map(ns, &ca, ca_pem),
            json!({"apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
                "metadata": {"name": app, "namespace": ns},
                "spec": {"transport": "stdio", "podSelector": {"matchLabels": {"app": app}},
                    "trust": {"includeSystemRoots": true, "sources": [{"configMap": {"name": ca}}]},
                    "proxy": {"httpsProxy": proxy, "httpProxy": proxy}}}),
        ],
    );
    wait_until(Duration::from_secs(60), "the McpServer Ready", || {
        condition(&get_json(cp, ns, &["mcps", app]), "Ready") == "True"
    });
}

#[test]
fn env_and_files_reach_the_process() {
    let Some(node) = cluster() else { return };
    let _gate = GATE.read().unwrap_or_else(PoisonError::into_inner);
    let cp = node.cp;
    let ns = injected_namespace(cp, "envcheck");
    let ca = common::TestCa::new("envcheck private CA");
    let proxy = format!("http://{HOST_IP}:3128");
    proxied_sandbox(cp, &ns, "sandbox", &ca.pem, &proxy);
    let mut p = pod(
        &ns,
        "sandbox",
        BUSYBOX,
        json!({"app": "sandbox"}),
        &["sleep", "3600"],
    );
    p["metadata"]["annotations"] = json!({"mcptrust.io/overlay-system-trust": "true"});
    let created = Instant::now();
    apply(cp, &[p]);
    let running = node.wait_running(&ns, "sandbox", Duration::from_secs(90));
    eprintln!(
        "figure: pod create to Running (injected, trust ConfigMap mounted): {:.2} s",
        secs(created)
    );
    let annotations = &running["metadata"]["annotations"];
    assert!(
        annotations["mcptrust.io/injected"].is_string(),
        "the API server called the webhook through the chart's Service: {annotations}"
    );
    assert_eq!(
        annotations["mcptrust.io/mcpserver"],
        format!("{ns}/sandbox")
    );

    // Every variable the webhook put in the spec is in the running process's environment
    // with the same value.
    let spec_env: BTreeMap<String, String> = running["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    for name in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "NO_PROXY",
        "no_proxy",
        "JAVA_TOOL_OPTIONS",
    ] {
        assert!(spec_env.contains_key(name), "{name} injected: {spec_env:?}");
    }
    let environ = node.exec(&ns, "sandbox", None, &["cat", "/proc/1/environ"]);
    let process_env: BTreeMap<&str, &str> = environ
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    for (k, v) in &spec_env {
        assert_eq!(
            process_env.get(k.as_str()),
            Some(&v.as_str()),
            "{k} in /proc/1/environ of the running container"
        );
    }
    eprintln!(
        "env: {} injected variables reached PID 1 of the container",
        spec_env.len()
    );

    // The mounted files are the trust ConfigMap's keys, byte for byte.
    let cm = get_json(cp, &ns, &["configmap", &trust_config_map(&running)]);
    let dir = "/etc/mcptrust/trust";
    for key in ["ca.pem", "ca-bundle.pem"] {
        let in_pod = node.exec(&ns, "sandbox", None, &["cat", &format!("{dir}/{key}")]);
        assert_eq!(in_pod, cm["data"][key].as_str().unwrap(), "{dir}/{key}");
    }
    assert!(
        cm["data"]["ca.pem"]
            .as_str()
            .unwrap()
            .contains(ca.pem.trim()),
        "ca.pem holds the source CA"
    );
    use base64::Engine as _;
    let p12 = base64::engine::general_purpose::STANDARD
        .decode(cm["binaryData"]["ca-bundle.p12"].as_str().unwrap())
        .unwrap();
    let sum = node.exec(
        &ns,
        "sandbox",
        None,
        &["sha256sum", &format!("{dir}/ca-bundle.p12")],
    );
    assert_eq!(
        sum.split_whitespace().next(),
        Some(sha256_hex(&p12).as_str()),
        "ca-bundle.p12"
    );

    // overlay-system-trust: the distro path inside the container is the bundle.
    let overlay = node.exec(
        &ns,
        "sandbox",
        None,
        &["cat", "/etc/ssl/certs/ca-certificates.crt"],
    );
    assert_eq!(overlay, cm["data"]["ca-bundle.pem"].as_str().unwrap());
}

/// Waits for the McpServer's status to name a bundle other than `old`; returns it.
fn wait_new_bundle(cp: &ControlPlane, ns: &str, name: &str, old: &str) -> String {
    let mut sha = String::new();
    wait_until(
        Duration::from_secs(60),
        "the status to name the new bundle",
        || {
            sha = bundle_sha(&get_json(cp, ns, &["mcps", name]));
            !sha.is_empty() && sha != old
        },
    );
    sha
}

/// A namespace (injected) with ConfigMap `corp-ca` holding a first CA and McpServer `name`
/// (stdio, selecting `app=<name>`, trusting only that ConfigMap, rotation `strategy`),
/// Ready. Returns the namespace, the first CA, a second CA to rotate to, and the first
/// bundle's sha256.
fn rotating_server(
    cp: &ControlPlane,
    prefix: &str,
    name: &str,
    strategy: &str,
) -> (String, common::TestCa, common::TestCa, String) {
    let ns = injected_namespace(cp, prefix);
    let (ca1, ca2) = (
        common::TestCa::new(&format!("{prefix} CA 1")),
        common::TestCa::new(&format!("{prefix} CA 2")),
    );
    apply(
        cp,
        &[
            ca_config_map(&ns, "corp-ca", &ca1.pem),
            json!({"apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"transport": "stdio", "podSelector": {"matchLabels": {"app": name}},
                    "trust": {"includeSystemRoots": false, "sources": [{"configMap": {"name": "corp-ca"}}]},
                    "rotation": {"strategy": strategy}}}),
        ],
    );
    let mut first = String::new();
    wait_until(
        Duration::from_secs(60),
        "the McpServer Ready with a bundle",
        || {
            let s = get_json(cp, &ns, &["mcps", name]);
            first = bundle_sha(&s);
            condition(&s, "Ready") == "True" && !first.is_empty()
        },
    );
    (ns, ca1, ca2, first)
}

#[test]
fn rotation_none_changes_the_file_in_the_running_pod() {
    let Some(node) = cluster() else { return };
    let _gate = GATE.read().unwrap_or_else(PoisonError::into_inner);
    let cp = node.cp;
    let (ns, ca1, ca2, first) = rotating_server(cp, "rotnone", "lab", "None");
    apply(
        cp,
        &[pod(
            &ns,
            "lab",
            BUSYBOX,
            json!({"app": "lab"}),
            &["sleep", "3600"],
        )],
    );
    let before = node.wait_running(&ns, "lab", Duration::from_secs(90));
    let uid = before["metadata"]["uid"].as_str().unwrap().to_owned();
    let read = || node.exec(&ns, "lab", None, &["cat", "/etc/mcptrust/trust/ca.pem"]);
    assert!(read().contains(ca1.pem.trim()));

    // The source CA rotates: the same running pod sees the new file.
    let changed = Instant::now();
    apply(cp, &[ca_config_map(&ns, "corp-ca", &ca2.pem)]);
    let second = wait_new_bundle(cp, &ns, "lab", &first);
    let status_at = secs(changed);
    wait_until_or(
        Duration::from_secs(120),
        "the new CA in /etc/mcptrust/trust/ca.pem of the running pod",
        || read().contains(ca2.pem.trim()),
        || node.diagnose(&ns, "lab"),
    );
    eprintln!(
        "figure: source ConfigMap changed -> status names the new bundle {status_at:.1} s -> file changed in the running pod {:.1} s (kubelet syncFrequency 10 s)",
        secs(changed)
    );
    let after = get_json(cp, &ns, &["pod", "lab"]);
    assert_eq!(after["metadata"]["uid"], uid, "the same pod");
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
    assert!(!read().contains(ca1.pem.trim()), "the old CA is gone");
    let in_pod = node.exec(
        &ns,
        "lab",
        None,
        &["sha256sum", "/etc/mcptrust/trust/ca-bundle.pem"],
    );
    assert_eq!(in_pod.split_whitespace().next(), Some(second.as_str()));
}

#[test]
fn rolling_restart_rolls_pods_onto_the_new_bundle() {
    let Some(node) = cluster() else { return };
    let _gate = GATE.read().unwrap_or_else(PoisonError::into_inner);
    let cp = node.cp;
    let (ns, _, ca2, first) = rotating_server(cp, "rollout", "web", "RollingRestart");
    apply(
        cp,
        &[json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
                        "image": BUSYBOX, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}}}})],
    );
    cp.kubectl(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=120s",
    ]);
    let old_pods: Vec<String> = pods(cp, &ns, "app=web")
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_owned())
        .collect();

    let changed = Instant::now();
    apply(cp, &[ca_config_map(&ns, "corp-ca", &ca2.pem)]);
    let second = wait_new_bundle(cp, &ns, "web", &first);
    // The rollout: a new ReplicaSet whose pods all carry the new hash and mount it.
    wait_until_or(
        Duration::from_secs(180),
        "the Deployment rolled onto pods with the new bundle",
        || {
            let now = pods(cp, &ns, "app=web");
            let live: Vec<&Value> = now
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            live.len() == 2
                && live.iter().all(|p| {
                    pod_ready(p)
                        && !old_pods.contains(&p["metadata"]["uid"].as_str().unwrap().to_owned())
                })
        },
        || node.diagnose(&ns, "-"),
    );
    cp.kubectl(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=120s",
    ]);
    eprintln!(
        "figure: source ConfigMap changed -> RollingRestart complete (2 replicas, maxSurge 1) {:.1} s",
        secs(changed)
    );
    let rs: Value = get_json(cp, &ns, &["replicasets", "-l", "app=web"]);
    let newest = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|r| {
            r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .unwrap()
                .parse::<u32>()
                .unwrap()
        })
        .unwrap();
    let hash = newest["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    for p in pods(cp, &ns, &format!("app=web,pod-template-hash={hash}")) {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            p["metadata"]["annotations"]["mcptrust.io/trust-bundle-sha256"], second,
            "pod {name} of the new ReplicaSet carries the new hash"
        );
        let sum = node.exec(
            &ns,
            name,
            None,
            &["sha256sum", "/etc/mcptrust/trust/ca-bundle.pem"],
        );
        assert_eq!(
            sum.split_whitespace().next(),
            Some(second.as_str()),
            "{name} mounts it"
        );
    }
    // No pod admitted after the status named the new bundle carries the old one: every
    // pod with the old hash belongs to an older ReplicaSet.
    for p in pods(cp, &ns, "app=web") {
        if p["metadata"]["annotations"]["mcptrust.io/trust-bundle-sha256"] == first.as_str() {
            assert_ne!(p["metadata"]["labels"]["pod-template-hash"], hash, "{p}");
        }
    }
}

/// nginx's configuration for a strict-mTLS MCP-like endpoint on 8443: the server pair and
/// the CA that signs client certificates from `/tls` (the McpServer's server Secret),
/// `initialize` answered with a JSON-RPC result, notifications with 202, DELETE with 204.
const NGINX_CONF: &str = r#"
user nobody nogroup;
worker_processes 1;
error_log /dev/stderr info;
pid /tmp/nginx.pid;
events {}
http {
  access_log /dev/stdout;
  # temp paths
  server {
    listen 8443 ssl;
    ssl_certificate /tls/tls.crt;
    ssl_certificate_key /tls/tls.key;
    ssl_client_certificate /tls/ca.crt;
    ssl_verify_client on;
    # mcp location
  }
}
"#;

/// The leaf certificate (DER) that `ip:port` serves to a client presenting `client` (PEM
/// certificate and key), verified against `ca_pem` for the IP: a real rustls handshake
/// from this process over the node's bridge.
fn served_leaf(ip: &str, port: u16, ca_pem: &str, client: (&str, &str)) -> Result<Vec<u8>, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(client.0.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(client.1.as_bytes()).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(mcptrust::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(common::roots(ca_pem))
        .with_client_auth_cert(certs, key)
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(ip.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| e.to_string())?;
    let mut sock = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(5),
    )
    .map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| "no certificate".to_owned())
}

/// A Secret's key, decoded.
fn secret_key(cp: &ControlPlane, ns: &str, name: &str, key: &str) -> String {
    use base64::Engine as _;
    let s = get_json(cp, ns, &["secret", name]);
    let b64 = s["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in Secret {ns}/{name}"));
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

fn first_cert_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[test]
fn mtls_server_pod_serves_the_server_secret_to_client_pods() {
    let Some(node) = cluster() else { return };
    let _gate = GATE.read().unwrap_or_else(PoisonError::into_inner);
    let cp = node.cp;
    let ns = cp.namespace("mtls");
    node.load(&nginx_image());
    node.load(&curl_image());

    // The server pod first, as users write it: the Secret mounted by name (optional, so
    // the pod starts and gets its IP before the Secret exists), nginx started once the
    // files are there.
    let mut server = pod(
        &ns,
        "nginx-mcp",
        "localhost/nginx:local",
        json!({"app": "nginx-mcp"}),
        &[
            "sh",
            "-c",
            "until [ -s /tls/tls.crt ]; do sleep 0.5; done; exec /usr/sbin/nginx -c /etc/nginx-conf/nginx.conf -g 'daemon off;'",
        ],
    );
    server["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "tls", "mountPath": "/tls", "readOnly": true},
        {"name": "conf", "mountPath": "/etc/nginx-conf", "readOnly": true}]);
    server["spec"]["volumes"] = json!([
        {"name": "tls", "secret": {"secretName": "mcp-server-tls", "optional": true}},
        {"name": "conf", "configMap": {"name": "nginx-conf"}}]);
    apply(
        cp,
        &[
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nginx-conf", "namespace": ns},
                "data": {"nginx.conf": nginx_conf(NGINX_CONF)}}),
            server,
        ],
    );
    let mut ip = String::new();
    wait_until_or(
        Duration::from_secs(90),
        "the nginx pod's IP",
        || {
            ip = get_json(cp, &ns, &["pod", "nginx-mcp"])["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            !ip.is_empty()
        },
        || node.diagnose(&ns, "nginx-mcp"),
    );
    let url = format!("https://{ip}:8443/mcp/");
    let created = Instant::now();
    apply(
        cp,
        &[
            json!({"apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
            "metadata": {"name": "mcp", "namespace": ns},
            "spec": {"transport": "streamable-http", "endpoint": {"url": url},
                "podSelector": {"matchLabels": {"app": "nginx-mcp"}},
                "mtls": {"clients": [{"name": "gateway"}]}}}),
        ],
    );
    // The in-cluster operator probes the pod as a gateway would (client certificate and
    // MCP initialize); its first probe meets a server that is not up yet and retries.
    wait_until_or(
        Duration::from_secs(150),
        "McpServer mcp EndpointVerified and Ready",
        || {
            let s = get_json(cp, &ns, &["mcps", "mcp"]);
            condition(&s, "EndpointVerified") == "True" && condition(&s, "Ready") == "True"
        },
        || {
            format!(
                "{}\n{}",
                cp.kubectl(&["-n", &ns, "get", "mcps", "mcp", "-o", "yaml"]),
                node.diagnose(&ns, "nginx-mcp")
            )
        },
    );
    eprintln!(
        "figure: McpServer created -> Secret mounted, nginx up, probed and Ready: {:.1} s",
        secs(created)
    );
    let status = get_json(cp, &ns, &["mcps", "mcp"]);
    let secret_cert = secret_key(cp, &ns, "mcp-server-tls", "tls.crt");
    assert_eq!(
        status["status"]["endpoint"]["peer"]["sha256"]
            .as_str()
            .unwrap(),
        sha256_hex(&first_cert_der(&secret_cert)),
        "the probe saw the Secret's certificate"
    );

    // A client pod with the client Secret completes the mutual handshake over the pod
    // network; one without it is refused.
    let client_secret = format!("mcp-{ns}-gateway-client-tls");
    let mut with = pod(
        &ns,
        "client",
        "localhost/curl:local",
        json!({"app": "client"}),
        &["sleep", "3600"],
    );
    with["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "client", "mountPath": "/client", "readOnly": true}]);
    with["spec"]["volumes"] = json!([{"name": "client", "secret": {"secretName": client_secret}}]);
    let without = pod(
        &ns,
        "stranger",
        "localhost/curl:local",
        json!({"app": "stranger"}),
        &["sleep", "3600"],
    );
    apply(cp, &[with, without]);
    node.wait_running(&ns, "client", Duration::from_secs(90));
    node.wait_running(&ns, "stranger", Duration::from_secs(90));
    // Both trust the server through the server Secret's CA (the federation CA).
    let ca = secret_key(cp, &ns, "mcp-server-tls", "ca.crt");
    let post = [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-H",
        "accept: application/json, text/event-stream",
        "-d",
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
    ];
    let as_gateway = || {
        let mut args: Vec<&str> = post.to_vec();
        args.extend(["--cacert", "/client/ca.crt", "--cert", "/client/tls.crt"]);
        args.extend(["--key", "/client/tls.key", &url]);
        node.exec(&ns, "client", None, &args)
    };
    let answer = as_gateway();
    assert!(
        answer.contains("\"nginx-mcp\"") && answer.ends_with("200"),
        "{answer}"
    );
    let stranger_ca = "/tmp/ca.crt";
    node.exec(
        &ns,
        "stranger",
        None,
        &[
            "sh",
            "-c",
            &format!("cat > {stranger_ca} <<'EOF'\n{ca}\nEOF"),
        ],
    );
    let mut args: Vec<&str> = post.to_vec();
    args.extend(["--cacert", stranger_ca, &url]);
    let refused = node.exec_output(&ns, "stranger", None, &args);
    let refused_text = String::from_utf8_lossy(&refused.stdout);
    assert!(
        !refused_text.contains("nginx-mcp")
            && (refused_text.contains("No required SSL certificate was sent")
                || !refused.status.success()),
        "a client without the client certificate is refused: {refused_text} {}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Renewal: the Secret is reissued; kubelet updates the mounted files in the running
    // pod, and nginx, restarted, serves the new certificate.
    let client = (
        secret_key(cp, &ns, &client_secret, "tls.crt"),
        secret_key(cp, &ns, &client_secret, "tls.key"),
    );
    let old_der = first_cert_der(&secret_cert);
    assert_eq!(
        served_leaf(&ip, 8443, &ca, (&client.0, &client.1)).unwrap(),
        old_der
    );
    let renewed = Instant::now();
    cp.kubectl(&["-n", &ns, "delete", "secret", "mcp-server-tls"]);
    let mut new_cert = String::new();
    wait_until(
        Duration::from_secs(60),
        "the server Secret reissued",
        || {
            let out = cp.kubectl_output(&[
                "-n",
                &ns,
                "get",
                "secret",
                "mcp-server-tls",
                "-o",
                "jsonpath={.data.tls\\.crt}",
            ]);
            if !out.status.success() || out.stdout.is_empty() {
                return false;
            }
            new_cert = secret_key(cp, &ns, "mcp-server-tls", "tls.crt");
            first_cert_der(&new_cert) != old_der
        },
    );
    let new_der = first_cert_der(&new_cert);
    wait_until_or(
        Duration::from_secs(120),
        "the reissued certificate in /tls of the running nginx pod",
        // The volume is `optional`: between the delete and the reissue kubelet may empty
        // it, so a missing file is "not yet", not a failure.
        || {
            let out = node.exec_output(&ns, "nginx-mcp", None, &["cat", "/tls/tls.crt"]);
            out.status.success() && String::from_utf8_lossy(&out.stdout) == new_cert
        },
        || node.diagnose(&ns, "nginx-mcp"),
    );
    let file_at = secs(renewed);
    assert_eq!(
        served_leaf(&ip, 8443, &ca, (&client.0, &client.1)).unwrap(),
        old_der,
        "nginx without a restart still serves the certificate it loaded"
    );
    node.exec(&ns, "nginx-mcp", None, &["kill", "-QUIT", "1"]);
    let mut served = Vec::new();
    wait_until(
        Duration::from_secs(90),
        "nginx restarted with the new certificate",
        || {
            served = served_leaf(&ip, 8443, &ca, (&client.0, &client.1)).unwrap_or_default();
            served == new_der
        },
    );
    eprintln!(
        "figure: server Secret reissued -> new file in the running pod {file_at:.1} s -> served after a container restart {:.1} s",
        secs(renewed)
    );
    let after = get_json(cp, &ns, &["pod", "nginx-mcp"]);
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 1);
    // The client pod still completes the handshake with the new certificate.
    let answer = as_gateway();
    assert!(answer.ends_with("200"), "{answer}");
}

/// An HTTPS origin on `HOST_IP` (the bridge), serving `leaf`, answering each request with
/// `origin-ok` and the request's headers (so a test sees what the proxy added). Stops when
/// dropped.
struct Origin {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Origin {
    fn start(leaf: &common::Leaf) -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        use std::io::{Read as _, Write as _};
        let config = rustls::ServerConfig::builder_with_provider(mcptrust::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone())),
            )
            .unwrap();
        let config = std::sync::Arc::new(config);
        let listener = std::net::TcpListener::bind((HOST_IP, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((sock, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let config = config.clone();
                std::thread::spawn(move || {
                    let _ = sock.set_nonblocking(false);
                    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, sock);
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = format!("origin-ok\n{}", String::from_utf8_lossy(&req));
                    let _ = write!(
                        tls,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.flush();
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        Self { port, stop }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// mitmdump (PyPI mitmproxy, from `MCPTRUST_E2E_DIR`'s venv as `.ci/run` installs it)
/// listening on the bridge, trusting `upstream_ca` for the origin and adding
/// `X-Through-Proxy: mitmdump` to what it forwards. Killed when dropped.
struct Mitm {
    child: std::process::Child,
    port: u16,
    ca_pem: String,
}

impl Drop for Mitm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mitm(work: &std::path::Path, upstream_ca: &str) -> Option<Mitm> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let dir = std::env::var("MCPTRUST_E2E_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(&home).join(".cache/mcptrust-e2e"));
    let mitmdump = dir.join("venv/bin/mitmdump");
    if !mitmdump.is_file() {
        common::skip::skip_or_fail(
            "mitmdump",
            &format!(
                "{} is missing: .ci/run installs mitmproxy into that venv",
                mitmdump.display()
            ),
        );
        return None;
    }
    let confdir = work.join("mitm");
    std::fs::create_dir_all(&confdir).unwrap();
    let upstream = work.join("origin-ca.pem");
    std::fs::write(&upstream, upstream_ca).unwrap();
    let port = common::free_port();
    let log = std::fs::File::create(work.join("mitmdump.log")).unwrap();
    let child = Command::new(&mitmdump)
        .args(["--listen-host", HOST_IP, "--listen-port", &port.to_string()])
        .args(["--set", &format!("confdir={}", confdir.display())])
        .args([
            "--set",
            &format!("ssl_verify_upstream_trusted_ca={}", upstream.display()),
        ])
        .args(["--set", "modify_headers=/~q/X-Through-Proxy/mitmdump"])
        .env("HOME", work)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("mitmdump starts");
    let mut mitm = Mitm {
        child,
        port,
        ca_pem: String::new(),
    };
    let ca = confdir.join("mitmproxy-ca-cert.pem");
    wait_until_or(
        Duration::from_secs(60),
        "mitmdump listening on the bridge",
        || std::net::TcpStream::connect((HOST_IP, port)).is_ok() && ca.is_file(),
        || std::fs::read_to_string(work.join("mitmdump.log")).unwrap_or_default(),
    );
    mitm.ca_pem = std::fs::read_to_string(ca).unwrap();
    Some(mitm)
}

#[test]
fn seed_000_stdio_child_reaches_https_through_the_intercepting_proxy() {
    let Some(node) = cluster() else { return };
    let _gate = GATE.read().unwrap_or_else(PoisonError::into_inner);
    let cp = node.cp;
    let work = tempfile::tempdir().unwrap();
    let origin_ca = common::TestCa::new("seed-000 origin CA");
    let origin = Origin::start(&origin_ca.leaf_for(7, &[], &[HOST_IP.parse().unwrap()]));
    let Some(mitm) = start_mitm(work.path(), &origin_ca.pem) else {
        return;
    };
    node.load(&curl_image());
    let ns = injected_namespace(cp, "seed000");
    let proxy = format!("http://{HOST_IP}:{}", mitm.port);
    proxied_sandbox(cp, &ns, "agent", &mitm.ca_pem, &proxy);
    let opted_out = pod(
        &ns,
        "agent-plain",
        "localhost/curl:local",
        json!({"app": "agent", "mcptrust.io/inject": "false"}),
        &["sleep", "3600"],
    );
    apply(
        cp,
        &[
            pod(
                &ns,
                "agent",
                "localhost/curl:local",
                json!({"app": "agent"}),
                &["sleep", "3600"],
            ),
            opted_out,
        ],
    );
    let agent = node.wait_running(&ns, "agent", Duration::from_secs(90));
    let plain = node.wait_running(&ns, "agent-plain", Duration::from_secs(90));
    assert!(
        plain["metadata"]["annotations"]["mcptrust.io/injected"].is_null(),
        "opted out"
    );

    // The stdio child: a shell started with `env -i` and only the injected variables, as
    // an agent runtime spawns an MCP server. Its curl reaches the origin through the
    // intercepting proxy and verifies the proxy's certificate with the injected CA.
    let injected: Vec<String> = agent["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some(format!("{}={}", e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    let target = format!("https://{HOST_IP}:{}/", origin.port);
    let child = |pod: &str, env: &[String]| {
        let mut args = vec!["env", "-i"];
        args.extend(env.iter().map(String::as_str));
        let script = format!("/usr/bin/curl -sS --max-time 20 {target}");
        args.extend(["/bin/sh", "-c", &script]);
        node.exec_output(&ns, pod, None, &args)
    };
    let ok = child("agent", &injected);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success() && text.starts_with("origin-ok"),
        "the injected child reaches the origin: {text} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("x-through-proxy: mitmdump"),
        "through the intercepting proxy: {text}"
    );
    // The same child in the opted-out pod, given the proxy (as the sandbox forces it) but
    // not the proxy's CA: verification fails, as seed 000 reports.
    let fail = child("agent-plain", &[format!("HTTPS_PROXY={proxy}")]);
    let err = String::from_utf8_lossy(&fail.stderr);
    assert!(
        !fail.status.success() && err.contains("SSL certificate problem"),
        "without injection the child fails verification: {err}"
    );
}

#[test]
fn leader_pod_killed_the_other_replica_takes_over_and_keeps_injecting() {
    let Some(node) = cluster() else { return };
    // Alone: the other tests must not see the takeover.
    let _gate = GATE.write().unwrap_or_else(PoisonError::into_inner);
    let cp = node.cp;
    let lease = get_json(cp, RELEASE_NS, &["lease", "mcptrust-controller"]);
    let leader = lease["spec"]["holderIdentity"].as_str().unwrap().to_owned();
    let replicas = ready_operator_pods(cp);
    assert!(
        replicas.contains(&leader),
        "the leader {leader} is one of {replicas:?}"
    );
    let ns = injected_namespace(cp, "takeover");
    apply(
        cp,
        &[
            json!({"apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {"transport": "stdio", "podSelector": {"matchLabels": {"app": "app"}}}}),
        ],
    );
    wait_until(Duration::from_secs(60), "McpServer app Ready", || {
        condition(&get_json(cp, &ns, &["mcps", "app"]), "Ready") == "True"
    });

    // Kill the leader pod as a node drain would (delete: preStop sleep, SIGTERM, drain),
    // creating pods all along: each one must be injected by whichever replica serves.
    let killed = Instant::now();
    let delete = Command::new("kubectl")
        .args([
            "--kubeconfig",
            cp.kubeconfig.to_str().unwrap(),
            "-n",
            RELEASE_NS,
            "delete",
            "pod",
            &leader,
            "--wait=false",
        ])
        .output()
        .unwrap();
    assert!(
        delete.status.success(),
        "{}",
        String::from_utf8_lossy(&delete.stderr)
    );
    let mut created = Vec::new();
    let mut new_leader = String::new();
    let mut takeover = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline && (takeover.is_none() || created.len() < 6) {
        let name = format!("during-{}", created.len());
        apply(
            cp,
            &[pod(
                &ns,
                &name,
                BUSYBOX,
                json!({"app": "app"}),
                &["sleep", "3600"],
            )],
        );
        created.push(name);
        let holder =
            get_json(cp, RELEASE_NS, &["lease", "mcptrust-controller"])["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        if takeover.is_none() && !holder.is_empty() && holder != leader {
            takeover = Some(secs(killed));
            new_leader = holder;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let takeover =
        takeover.unwrap_or_else(|| panic!("no takeover within 90 s:\n{}", operator_logs(node)));
    eprintln!(
        "figure: leader pod deleted -> Lease held by {new_leader} after {takeover:.1} s; {} pods created meanwhile",
        created.len()
    );
    // The surviving replica or the Deployment's replacement: both stand by once the
    // replacement has started, and the released Lease goes to whichever acquires first.
    assert_ne!(new_leader, leader, "another replica leads");
    let live = |name: &str| {
        get_json(cp, RELEASE_NS, &["pod", name])["metadata"]["labels"]["app.kubernetes.io/name"]
            == "mcptrust"
    };
    assert!(
        live(&new_leader),
        "the new leader {new_leader} is an operator pod"
    );
    for name in &created {
        let p = get_json(cp, &ns, &["pod", name]);
        assert!(
            p["metadata"]["annotations"]["mcptrust.io/injected"].is_string(),
            "pod {name}, created during the takeover, was injected: {}",
            p["metadata"]
        );
    }
    // The new leader writes: a new McpServer reaches Ready.
    apply(
        cp,
        &[
            json!({"apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
            "metadata": {"name": "after", "namespace": ns},
            "spec": {"transport": "stdio", "podSelector": {"matchLabels": {"app": "after"}}}}),
        ],
    );
    wait_until_or(
        Duration::from_secs(60),
        "McpServer after Ready under the new leader",
        || condition(&get_json(cp, &ns, &["mcps", "after"]), "Ready") == "True",
        || operator_logs(node),
    );
    // The Deployment replaces the deleted pod: two replicas Ready again.
    wait_until(
        Duration::from_secs(120),
        "two operator replicas Ready again",
        || ready_operator_pods(cp).len() == 2,
    );
}
