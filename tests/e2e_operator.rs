//! The operator end to end on a real kube-apiserver (`tests/common/envtest.rs`):
//!
//! - `mcptrust run`, out of cluster, authenticates with a TokenRequest token of the
//!   ServiceAccount that the chart renders, bound to exactly the chart's ClusterRoles and
//!   Role; it reconciles an mTLS McpServer with a trust source, egress and a RollingRestart
//!   target to Ready, and the API server never answers `forbidden`;
//! - its webhook is registered with the chart's MutatingWebhookConfiguration, pointed at
//!   the process by URL with a caBundle; pods created through the API server come back
//!   injected from the webhook's caches;
//! - `kubectl get mcps` (plain and wide) and `kubectl describe mcps` print what the README
//!   shows (the transcripts are written to `target/e2e-transcripts/`, which
//!   `bench/readme-transcripts.sh` prints for the README);
//! - status: `observedGeneration` follows the spec, `lastTransitionTime` stays while the
//!   status stays, and a reconcile that changes nothing writes nothing;
//! - after a rotation, a pod created the moment the rollout starts names the new bundle;
//! - a pod of a `rotation.strategy: Signal` McpServer is stored with the
//!   `mcptrust-reloader` native sidecar (the chart's image) and `shareProcessNamespace`,
//!   so the API server accepts the patch; one with `shareProcessNamespace: false` keeps it
//!   and gets no sidecar, only the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/metric_names.rs"]
mod metric_names;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestCa;
use common::envtest::{
    ControlPlane, chart_documents, forbidden_lines, free_port, http_get, metric_sum,
    start_operator, wait_until, wait_until_or,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

fn get_json(cp: &ControlPlane, args: &[&str]) -> Value {
    cp.get_json(args)
}

fn apply(cp: &ControlPlane, obj: &Value) {
    cp.apply(obj);
}

fn condition<'a>(server: &'a Value, type_: &str) -> Option<&'a Value> {
    server["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn ready(server: &Value) -> bool {
    condition(server, "Ready").is_some_and(|c| c["status"] == "True")
}

fn trust_ca(cp: &ControlPlane, ns: &str, pem: &str) {
    apply(
        cp,
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "corp-proxy-ca", "namespace": ns},
            "data": {"ca.crt": pem},
        }),
    );
}

fn pod(cp: &ControlPlane, ns: &str, name: &str, labels: Value) -> Value {
    create_pod(
        cp,
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "server", "image": "ghcr.io/example/github-mcp:1"}]},
        }),
    )
}

/// Creates `obj` (a Pod) through the API server, so through the webhook; returns the pod
/// as stored.
fn create_pod(cp: &ControlPlane, obj: &Value) -> Value {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let out = cp.kubectl_stdin(&["create", "-o", "json", "-f", "-"], &obj.to_string());
    assert!(
        out.status.success(),
        "creating pod {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn annotation(obj: &Value, key: &str) -> Option<String> {
    obj["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_owned)
}

fn resource_versions(cp: &ControlPlane, items: &[(&str, &str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(kind, ns, name)| {
            let v = get_json(cp, &["-n", ns, kind, name]);
            (
                format!("{kind}/{ns}/{name}"),
                v["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

/// Writes a transcript for the README (`target/e2e-transcripts/<name>.txt`).
fn transcript(name: &str, command: &str, output: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-transcripts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.txt")),
        format!("$ {command}\n{output}"),
    )
    .unwrap();
}

/// What a rollout looked like from a watch.
struct Rollout {
    /// The first pod of the rollout, as admitted.
    pod: Value,
    /// resourceVersion of the Deployment write that changed the rotation annotation.
    restart_rv: u64,
    /// resourceVersion of the McpServer write that first named the new bundle.
    status_rv: u64,
}

/// Watches Deployment `github-mcp` and McpServer `github`, runs `change`, and creates a pod
/// selected by the McpServer as soon as the watch shows a new `mcptrust.io/rotation-hash`
/// (as a ReplicaSet controller would create its first pod).
fn first_pod_of_rollout(cp: &ControlPlane, ns: &str, change: impl FnOnce()) -> Rollout {
    use futures::StreamExt as _;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams};
    use kube::runtime::{WatchStreamExt as _, watcher};
    use mcptrust::api::McpServer;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = cp.client().await;
        let by_name = |n: &str| watcher::Config::default().fields(&format!("metadata.name={n}"));
        let rv = |m: &kube::api::ObjectMeta| -> u64 {
            // Opaque to clients in general; etcd's revision, a number, on this server.
            m.resource_version.as_deref().unwrap().parse().unwrap()
        };
        let hash = |d: &Deployment| {
            d.spec
                .template
                .metadata
                .as_ref()?
                .annotations
                .as_ref()?
                .get("mcptrust.io/rotation-hash")
                .cloned()
        };
        let sha = |s: &McpServer| s.status.as_ref()?.trust_bundle.as_ref().map(|b| b.sha256.clone());
        let mut deployments = watcher(Api::<Deployment>::namespaced(client.clone(), ns), by_name("github-mcp"))
            .applied_objects()
            .boxed();
        let mut servers = watcher(Api::<McpServer>::namespaced(client.clone(), ns), by_name("github"))
            .applied_objects()
            .boxed();
        let before = hash(&deployments.next().await.unwrap().unwrap());
        let old_sha = sha(&servers.next().await.unwrap().unwrap());
        change();
        let (mut restart_rv, mut status_rv) = (None, None);
        let mut pod = Value::Null;
        let watched = tokio::time::timeout(WAIT, async {
            while restart_rv.is_none() || status_rv.is_none() {
                tokio::select! {
                    Some(d) = deployments.next(), if restart_rv.is_none() => {
                        let d = d.unwrap();
                        if hash(&d) != before {
                            restart_rv = Some(rv(&d.metadata));
                            let new: Pod = serde_json::from_value(json!({
                                "metadata": {"name": "rollout-first", "labels": {"app": "github-mcp"}},
                                "spec": {"containers": [{"name": "server", "image": "ghcr.io/example/github-mcp:1"}]},
                            }))
                            .unwrap();
                            let created = Api::<Pod>::namespaced(client.clone(), ns)
                                .create(&PostParams::default(), &new)
                                .await
                                .unwrap();
                            pod = serde_json::to_value(created).unwrap();
                        }
                    }
                    Some(s) = servers.next(), if status_rv.is_none() => {
                        let s = s.unwrap();
                        if sha(&s) != old_sha {
                            status_rv = Some(rv(&s.metadata));
                        }
                    }
                }
            }
        })
        .await;
        assert!(
            watched.is_ok(),
            "within {WAIT:?}: restart at {restart_rv:?}, new bundle in the status at {status_rv:?}"
        );
        Rollout {
            pod,
            restart_rv: restart_rv.unwrap(),
            status_rv: status_rv.unwrap(),
        }
    })
}

#[test]
fn operator_with_chart_rbac_reconciles_injects_and_rotates() {
    let Some(cp) = e2e!() else { return };
    let Some(rbac) = chart_documents(
        "default",
        &[
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ],
    ) else {
        return;
    };
    let Some(webhooks) = chart_documents("default", &["MutatingWebhookConfiguration"]) else {
        return;
    };
    // The operator config the chart renders: the reloader sidecar runs the chart's image.
    let Some(config_maps) = chart_documents("default", &["ConfigMap"]) else {
        return;
    };
    let chart_config = config_maps
        .iter()
        .find_map(|cm| cm["data"]["config.yaml"].as_str())
        .expect("the chart's operator config")
        .to_owned();
    let chart_image = mcptrust::inject::InjectConfig::from_yaml(&chart_config)
        .expect("the chart's config parses")
        .reloader
        .image
        .expect("the chart sets reloader.image");
    cp.install_crds();

    // The chart's release namespace, ServiceAccount and RBAC, as rendered.
    cp.kubectl(&["create", "namespace", "mcptrust"]);
    for doc in &rbac {
        apply(cp, doc);
    }
    let kubeconfig = cp.service_account_kubeconfig("mcptrust", "mcptrust");

    let app = cp.namespace("agents");
    let gateway = cp.namespace("gateway");
    cp.kubectl(&["label", "namespace", &app, "mcptrust.io/injection=enabled"]);

    // The webhook's serving certificate (certMode: provided) and the chart's webhook
    // configuration, pointed at this process by URL.
    let tls = tempfile::tempdir().unwrap();
    let webhook_ca = TestCa::new("e2e-webhook-ca");
    let files = common::TlsFiles::in_dir(tls.path());
    files.write_atomic(&webhook_ca.leaf(1));
    let config_file = tls.path().join("config.yaml");
    std::fs::write(&config_file, &chart_config).unwrap();
    let (webhook_port, admin_port) = (free_port(), free_port());
    let mut mwc = webhooks[0].clone();
    {
        use base64::Engine as _;
        let wh = &mut mwc["webhooks"][0];
        wh["clientConfig"] = json!({
            "url": format!("https://127.0.0.1:{webhook_port}/mutate"),
            "caBundle": base64::engine::general_purpose::STANDARD.encode(&webhook_ca.pem),
        });
        // Fail rather than Ignore: a webhook that is not called must fail this test.
        wh["failurePolicy"] = json!("Fail");
    }
    apply(cp, &mwc);

    let ca1 = TestCa::new("corp-proxy-ca-1");
    trust_ca(cp, &app, &ca1.pem);
    apply(
        cp,
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "github-mcp", "namespace": app},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "github-mcp"}},
                "template": {
                    "metadata": {"labels": {"app": "github-mcp"}},
                    "spec": {"containers": [{"name": "server", "image": "ghcr.io/example/github-mcp:1"}]},
                },
            },
        }),
    );

    let operator = start_operator(
        cp,
        "mcptrust-e2e-0",
        &kubeconfig,
        &[
            "--operator-namespace",
            "mcptrust",
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
            "--webhook-listen",
            &format!("127.0.0.1:{webhook_port}"),
            "--webhook-cert-mode",
            "provided",
            "--tls-cert-file",
            files.cert.to_str().unwrap(),
            "--tls-key-file",
            files.key.to_str().unwrap(),
            "--disable-endpoint-probe",
            "--config",
            config_file.to_str().unwrap(),
        ],
    );

    let server = json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": "github", "namespace": app},
        "spec": {
            "transport": "streamable-http",
            "endpoint": {"url": format!("https://github-mcp.{app}.svc:8443/mcp/")},
            "podSelector": {"matchLabels": {"app": "github-mcp"}},
            "trust": {"includeSystemRoots": true, "sources": [{"configMap": {"name": "corp-proxy-ca", "key": "ca.crt"}}]},
            "mtls": {
                "server": {"dnsNames": [format!("github-mcp.{app}.svc")], "ipAddresses": ["127.0.0.1"]},
                "clients": [{"name": "mcpgateway", "namespace": gateway}],
            },
            // A hostname rule is enforced by a proxy: this server's own (an IP address, so
            // that the NetworkPolicy can open it).
            "proxy": {"httpsProxy": "http://10.200.0.1:3128"},
            "egress": {"mode": "Enforce", "allow": ["api.github.com:443"]},
            "rotation": {"strategy": "RollingRestart"},
        },
    });
    apply(cp, &server);
    let started = Instant::now();
    let mut current = Value::Null;
    wait_until_or(
        WAIT,
        "McpServer github Ready",
        || {
            current = get_json(cp, &["-n", &app, "mcps", "github"]);
            ready(&current) || !operator.alive()
        },
        || {
            format!(
                "status: {}\noperator log:\n{}",
                get_json(cp, &["-n", &app, "mcps", "github"])["status"],
                operator.tail(60)
            )
        },
    );
    assert!(
        operator.alive(),
        "the operator exited:\n{}",
        operator.tail(40)
    );
    eprintln!(
        "McpServer Ready {:?} after it was created",
        started.elapsed()
    );
    let status = &current["status"];
    for t in [
        "TrustBundleReady",
        "CertificatesReady",
        "EgressPolicyReady",
        "Ready",
    ] {
        let c = condition(&current, t).unwrap_or_else(|| panic!("no {t} condition: {status}"));
        assert_eq!(c["status"], "True", "{t}: {c}");
    }
    assert_eq!(
        status["observedGeneration"], current["metadata"]["generation"],
        "{status}"
    );
    let bundle_cm = status["trustBundle"]["configMapName"]
        .as_str()
        .unwrap()
        .to_owned();
    let sha1 = status["trustBundle"]["sha256"].as_str().unwrap().to_owned();
    let client_secret = status["clientCertificates"][0]["secretName"]
        .as_str()
        .unwrap()
        .to_owned();
    let cm = get_json(cp, &["-n", &app, "configmap", &bundle_cm]);
    assert_eq!(
        annotation(&cm, "mcptrust.io/trust-bundle-sha256").as_deref(),
        Some(sha1.as_str())
    );
    assert!(
        cm["data"]["ca.pem"]
            .as_str()
            .unwrap()
            .contains(ca1.pem.trim())
    );
    let server_secret = get_json(cp, &["-n", &app, "secret", "github-server-tls"]);
    assert_eq!(server_secret["type"], "kubernetes.io/tls");
    let client = get_json(cp, &["-n", &gateway, "secret", &client_secret]);
    assert_eq!(client["type"], "kubernetes.io/tls");
    let policies = get_json(cp, &["-n", &app, "networkpolicies"]);
    assert!(
        !policies["items"].as_array().unwrap().is_empty(),
        "no egress NetworkPolicy"
    );

    // kubectl's view of it, from this server.
    let get = cp.kubectl(&["-n", &app, "get", "mcps"]);
    let header: Vec<&str> = get.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "TRANSPORT", "CERT-EXPIRY", "AGE"],
        "{get}"
    );
    let row: Vec<&str> = get.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["github", "True", "streamable-http"], "{get}");
    let not_after = status["serverCertificate"]["notAfter"].as_str().unwrap();
    assert_eq!(row[3], not_after, "CERT-EXPIRY shows the notAfter: {get}");
    assert!(!get.contains("<invalid>"), "{get}");
    transcript("get", "kubectl get mcps", &get);
    let wide = cp.kubectl(&["-n", &app, "get", "mcps", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().contains("ENDPOINT")
            && wide.contains(&format!("https://github-mcp.{app}.svc:8443/mcp/")),
        "{wide}"
    );
    transcript("get-wide", "kubectl get mcps -o wide", &wide);
    let describe = cp.kubectl(&["-n", &app, "describe", "mcps", "github"]);
    for needle in [
        "Conditions:",
        "TrustBundleReady",
        "CertificatesReady",
        "EgressPolicyReady",
        "Observed Generation:",
        "Events:",
        "Issued",
    ] {
        assert!(
            describe.contains(needle),
            "describe lacks {needle:?}:\n{describe}"
        );
    }
    transcript("describe", "kubectl describe mcps github", &describe);

    // The operator's real /metrics exports every series the alerts and the dashboard
    // name, and this McpServer's certificates and conditions among them.
    let scraped = http_get(admin_port, "/metrics");
    // Families with no sample are not printed: here, those of the endpoint probe (off out
    // of cluster) and of reconcile errors (none happened). tests/alerts.rs checks those
    // names against the registry after recording a probe and an error.
    let missing: Vec<String> = metric_names::missing_from(&scraped)
        .into_iter()
        .filter(|n| !n.starts_with("mcptrust_endpoint_") && n != "mcptrust_reconcile_errors_total")
        .collect();
    assert!(
        missing.is_empty(),
        "named by rules or dashboard, not exported: {missing:?}"
    );
    let of_github = |metric: &str| {
        scraped
            .lines()
            .filter(|l| l.starts_with(metric) && l.contains("name=\"github\""))
            .count()
    };
    assert!(
        of_github("mcptrust_certificate_expiration_timestamp_seconds") >= 2,
        "{scraped}"
    );
    assert!(
        of_github("mcptrust_mcpserver_status_condition") >= 3,
        "{scraped}"
    );
    assert_eq!(
        metric_sum(&scraped, "mcptrust_controller_leader"),
        1.0,
        "{scraped}"
    );

    // A reconcile that changes nothing writes nothing.
    let owned = [
        ("configmap", app.as_str(), bundle_cm.as_str()),
        ("secret", app.as_str(), "github-server-tls"),
        ("secret", gateway.as_str(), client_secret.as_str()),
    ];
    let before = resource_versions(cp, &owned);
    let status_before = current["status"].clone();
    // Reconciles that finished (the duration histogram's count), and the counters that
    // move while the operator works; the scrape is proven to carry them first.
    let counters = || {
        let m = http_get(admin_port, "/metrics");
        assert!(
            m.contains("reconcile_duration_seconds_count") && m.contains("mcptrust_api_writes"),
            "the operator's scrape lacks its counters:\n{m}"
        );
        [
            metric_sum(&m, "reconcile_duration_seconds_count"),
            metric_sum(&m, "reconciles_total"),
            // Every write but the Lease's renewal, which the elector sends every retry
            // period (2 s) whatever the McpServers do.
            metric_sum(&m, "mcptrust_api_writes")
                - m.lines()
                    .filter(|l| {
                        l.starts_with("mcptrust_api_writes") && l.contains("resource=\"leases\"")
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>(),
        ]
    };
    let finished = counters()[0];
    cp.kubectl(&[
        "-n",
        &app,
        "annotate",
        "mcps",
        "github",
        "e2e.mcptrust.io/poke=1",
    ]);
    wait_until(WAIT, "a reconcile after the poke to finish", || {
        counters()[0] > finished
    });
    // Then settle as e2e_burst does: the counters stay the same for 2 s.
    let mut last = counters();
    let mut since = std::time::Instant::now();
    let changes = std::cell::RefCell::new(Vec::new());
    wait_until_or(
        WAIT,
        "the operator to go quiet",
        || {
            let now = counters();
            if now != last {
                changes
                    .borrow_mut()
                    .push(format!("{:?}: {last:?} -> {now:?}", since.elapsed()));
                last = now;
                since = std::time::Instant::now();
            }
            since.elapsed() >= Duration::from_secs(2)
        },
        || {
            let m = http_get(admin_port, "/metrics");
            let moving: Vec<&str> = m
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.contains("reconcile") || l.contains("mcptrust_api_writes"))
                })
                .collect();
            format!("{}\n{}", changes.borrow().join("\n"), moving.join("\n"))
        },
    );
    eprintln!(
        "no-op reconcile: settled after {} counter changes",
        changes.borrow().len()
    );
    assert_eq!(
        resource_versions(cp, &owned),
        before,
        "a no-op reconcile wrote"
    );
    let after = get_json(cp, &["-n", &app, "mcps", "github"]);
    assert_eq!(
        after["status"], status_before,
        "a no-op reconcile changed the status"
    );

    // A spec change: observedGeneration follows, Ready keeps its lastTransitionTime.
    let ready_since = condition(&after, "Ready").unwrap()["lastTransitionTime"].clone();
    let mut changed = server.clone();
    changed["spec"]["egress"]["allow"] = json!(["api.github.com:443", "uploads.github.com:443"]);
    apply(cp, &changed);
    wait_until(WAIT, "observedGeneration 2", || {
        current = get_json(cp, &["-n", &app, "mcps", "github"]);
        current["status"]["observedGeneration"] == current["metadata"]["generation"]
            && current["metadata"]["generation"] == 2
    });
    assert!(ready(&current));
    for c in current["status"]["conditions"].as_array().unwrap() {
        assert_eq!(c["observedGeneration"], 2, "{c}");
    }
    assert_eq!(
        condition(&current, "Ready").unwrap()["lastTransitionTime"],
        ready_since,
        "Ready stayed True: its lastTransitionTime must stay"
    );

    // Pods created through the API server come back injected.
    let selected = pod(cp, &app, "selected", json!({"app": "github-mcp"}));
    assert_eq!(
        annotation(&selected, "mcptrust.io/injected").as_deref(),
        Some(env!("CARGO_PKG_VERSION")),
        "{selected}"
    );
    assert_eq!(
        annotation(&selected, "mcptrust.io/trust-bundle-sha256").as_deref(),
        Some(sha1.as_str())
    );
    assert_eq!(
        annotation(&selected, "mcptrust.io/mcpserver"),
        Some(format!("{app}/github"))
    );
    let volumes = selected["spec"]["volumes"].to_string();
    assert!(volumes.contains(&bundle_cm), "{volumes}");
    assert!(volumes.contains("github-server-tls"), "{volumes}");
    let env = selected["spec"]["containers"][0]["env"].to_string();
    assert!(env.contains("SSL_CERT_FILE"), "{env}");
    assert!(
        env.contains("http://10.200.0.1:3128"),
        "the McpServer's proxy: {env}"
    );
    // A pod no McpServer selects gets the namespace default, and the chart's default
    // config sets no proxy.
    let other = pod(cp, &app, "other", json!({"app": "other"}));
    assert!(
        annotation(&other, "mcptrust.io/injected").is_some(),
        "{other}"
    );
    assert!(
        other["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["configMap"]["name"] == "mcptrust-trust"),
        "the namespace-default bundle: {other}"
    );
    let env = other["spec"]["containers"][0]["env"].to_string();
    assert!(env.contains("SSL_CERT_FILE"), "{env}");
    assert!(
        !env.to_ascii_uppercase().contains("PROXY"),
        "the default config has no proxy: {env}"
    );

    // The webhook follows McpServers created and edited while it serves: its index of
    // McpServers by namespace (built at the first admission, above) is rebuilt from the
    // watch. An McpServer created now selects the next pod of its app, and an edit of its
    // env reaches the pod after that.
    let jira = |mode: &str| {
        json!({
            "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
            "metadata": {"name": "jira", "namespace": app},
            "spec": {
                "endpoint": {"url": format!("https://jira-mcp.{app}.svc:8443/mcp/")},
                "podSelector": {"matchLabels": {"app": "jira-mcp"}},
                "env": [{"name": "JIRA_MODE", "value": mode}],
            },
        })
    };
    let jira_mode = |p: &Value| {
        p["spec"]["containers"][0]["env"]
            .as_array()
            .and_then(|env| env.iter().find(|e| e["name"] == "JIRA_MODE"))
            .and_then(|e| e["value"].as_str())
            .map(ToOwned::to_owned)
    };
    let mut jira_pods = 0;
    for mode in ["one", "two"] {
        apply(cp, &jira(mode));
        let last = std::cell::RefCell::new(Value::Null);
        wait_until_or(
            WAIT,
            &format!("a jira-mcp pod injected by McpServer jira with JIRA_MODE={mode}"),
            || {
                jira_pods += 1;
                let p = pod(
                    cp,
                    &app,
                    &format!("jira-{jira_pods}"),
                    json!({"app": "jira-mcp"}),
                );
                let done = annotation(&p, "mcptrust.io/mcpserver") == Some(format!("{app}/jira"))
                    && jira_mode(&p).as_deref() == Some(mode);
                *last.borrow_mut() = p;
                done
            },
            || format!("last pod: {}", last.borrow()),
        );
    }

    signal_pods_get_the_reloader(cp, &app, &chart_image);

    // Rotation: a new CA in the trust source rolls the Deployment; a pod admitted right
    // after the rollout starts names the bundle it mounts.
    // The Deployment is watched in this process, and the pod created the moment the
    // rotation annotation changes, as a ReplicaSet controller would create its first pod.
    let ca2 = TestCa::new("corp-proxy-ca-2");
    let rollout = first_pod_of_rollout(cp, &app, || trust_ca(cp, &app, &ca2.pem));
    assert!(
        rollout.status_rv < rollout.restart_rv,
        "the workload was rolled (resourceVersion {}) before the status named the new bundle ({})",
        rollout.restart_rv,
        rollout.status_rv
    );
    let first = rollout.pod;
    let now = get_json(cp, &["-n", &app, "mcps", "github"]);
    let sha2 = now["status"]["trustBundle"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(sha1, sha2);
    let cm = get_json(cp, &["-n", &app, "configmap", &bundle_cm]);
    assert!(
        cm["data"]["ca.pem"]
            .as_str()
            .unwrap()
            .contains(ca2.pem.trim())
    );
    assert_eq!(
        annotation(&first, "mcptrust.io/trust-bundle-sha256").as_deref(),
        Some(sha2.as_str()),
        "a pod admitted as the rollout started carries the old bundle's hash"
    );

    // The log goes to a file here, as under `kubectl logs`: plain text, no colour codes.
    let log = std::fs::read_to_string(&operator.log).unwrap();
    assert!(log.contains("acquired the lease"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "ANSI escapes in a log written to a file"
    );
    let refused = forbidden_lines(&operator.log);
    assert!(
        refused.is_empty(),
        "the API server refused the operator with the chart's RBAC:\n{}",
        refused.join("\n")
    );
}

/// A `Signal` McpServer's pods, created through the API server: the webhook's patch (a
/// native sidecar, `shareProcessNamespace`, the target's variable) passes the API
/// server's validation and is stored; a pod that sets `shareProcessNamespace: false` is
/// stored with its spec as written (no sidecar) and the reason annotated.
fn signal_pods_get_the_reloader(cp: &ControlPlane, app: &str, chart_image: &str) {
    apply(
        cp,
        &json!({
            "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
            "metadata": {"name": "nginx", "namespace": app},
            "spec": {
                "transport": "streamable-http",
                "endpoint": {"url": format!("https://nginx-mcp.{app}.svc:8443/mcp/")},
                "podSelector": {"matchLabels": {"app": "nginx-mcp"}},
                "rotation": {"strategy": "Signal", "container": "nginx", "handlesSignal": true},
            },
        }),
    );
    let signal_pod = |name: &str, share: Option<bool>| {
        let mut obj = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": app, "labels": {"app": "nginx-mcp"},
                         "annotations": {"mcptrust.io/reload-debounce-seconds": "3"}},
            "spec": {
                "securityContext": {"runAsUser": 101, "runAsGroup": 101},
                "containers": [
                    {"name": "nginx", "image": "nginx:1.27"},
                    {"name": "log", "image": "busybox:1.37"},
                ],
            },
        });
        if let Some(share) = share {
            obj["spec"]["shareProcessNamespace"] = json!(share);
        }
        obj
    };
    // The webhook learns of the McpServer from its watch: retry with new pods until one
    // is injected for it.
    let mut n = 0;
    let last = std::cell::RefCell::new(Value::Null);
    wait_until_or(
        WAIT,
        "a nginx-mcp pod injected by the Signal McpServer nginx",
        || {
            n += 1;
            let p = create_pod(cp, &signal_pod(&format!("nginx-{n}"), None));
            let done = annotation(&p, "mcptrust.io/mcpserver") == Some(format!("{app}/nginx"));
            *last.borrow_mut() = p;
            done
        },
        || format!("last pod: {}", last.borrow()),
    );
    let stored = last.into_inner();
    let spec = &stored["spec"];
    assert_eq!(spec["shareProcessNamespace"], true, "{spec}");
    let sidecar = spec["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "mcptrust-reloader"))
        .unwrap_or_else(|| panic!("no sidecar: {spec}"));
    assert_eq!(sidecar["restartPolicy"], "Always", "{sidecar}");
    assert_eq!(sidecar["image"], chart_image, "{sidecar}");
    assert_eq!(sidecar["securityContext"]["runAsUser"], 101, "{sidecar}");
    assert_eq!(
        sidecar["securityContext"]["runAsNonRoot"], true,
        "{sidecar}"
    );
    assert_eq!(sidecar["ports"][0]["name"], "mcptrust-reload", "{sidecar}");
    let args = sidecar["args"].to_string();
    for want in [
        r#""--container","nginx""#,
        r#""--handles-signal""#,
        r#""--debounce-seconds","3""#,
    ] {
        assert!(args.contains(want), "{want} in {args}");
    }
    let target_env = spec["containers"][0]["env"].to_string();
    assert!(
        target_env.contains(r#"{"name":"MCPTRUST_RELOADER_TARGET","value":"nginx"}"#),
        "{target_env}"
    );
    assert!(
        annotation(&stored, "mcptrust.io/reloader-skipped").is_none(),
        "{stored}"
    );

    // shareProcessNamespace: false is the user's choice: kept, no sidecar, the reason.
    let refused = create_pod(cp, &signal_pod("nginx-private", Some(false)));
    let spec = &refused["spec"];
    assert_eq!(spec["shareProcessNamespace"], false, "{spec}");
    assert!(
        !spec.to_string().contains("mcptrust-reloader")
            && !spec.to_string().contains("MCPTRUST_RELOADER_TARGET"),
        "{spec}"
    );
    let reason = annotation(&refused, "mcptrust.io/reloader-skipped")
        .unwrap_or_else(|| panic!("no reason: {}", refused["metadata"]));
    assert!(
        reason.starts_with("shareProcessNamespace is false"),
        "{reason}"
    );
    assert_eq!(
        annotation(&refused, "mcptrust.io/mcpserver"),
        Some(format!("{app}/nginx")),
        "the rest of the injection still applies"
    );
}
