//! The injector on real-world-shaped manifests. Every case applies the returned JSONPatch
//! with `json_patch::patch`, checks the result field by field, checks that the result is
//! still a valid object for k8s-openapi's types, and checks that a second pass is empty.

use json_patch::PatchOperation;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use mcptrust::api::McpServer;
use mcptrust::inject::{
    ANNOTATION_BUNDLE_SHA256, ANNOTATION_ENV_OVERRIDDEN, ANNOTATION_INJECTED, ANNOTATION_MCPSERVER,
    ANNOTATION_SKIPPED, InjectConfig, Injection, Outcome, inject,
};
use serde_json::{Value, json};

const BUNDLE: &str = "/etc/mcptrust/trust/ca-bundle.pem";
const CA: &str = "/etc/mcptrust/trust/ca.pem";
const PROXY: &str = "http://10.200.0.1:3128";

fn defaults() -> Injection {
    let mut cfg = InjectConfig::sandbox_demo();
    cfg.trust_bundle_sha256 = Some("ab".repeat(32));
    Injection::resolve(&cfg, None)
}

/// Injects, applies, re-injects; returns the mutated object and the first outcome.
fn run(obj: &Value, inj: &Injection) -> (Value, Outcome) {
    let out = inject(obj, inj).expect("inject");
    let mut mutated = obj.clone();
    json_patch::patch(&mut mutated, &out.patch.to_json_patch()).expect("patch applies");
    let again = inject(&mutated, inj).expect("second inject");
    assert!(
        again.is_noop(),
        "second pass must be empty, got {}",
        serde_json::to_string_pretty(&again.patch).unwrap_or_default()
    );
    (mutated, out)
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?
        .get("value")?
        .as_str()
}

fn count_env(c: &Value, name: &str) -> usize {
    c["env"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["name"] == name).count())
        .unwrap_or(0)
}

fn mount<'a>(c: &'a Value, path: &str) -> Option<&'a Value> {
    c["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["mountPath"] == path)
}

fn assert_injected_container(c: &Value) {
    let m = mount(c, "/etc/mcptrust/trust").unwrap_or_else(|| panic!("no trust mount in {c}"));
    assert_eq!(m["name"], "mcptrust-trust");
    assert_eq!(m["readOnly"], true);
    assert!(m.get("subPath").is_none(), "whole directory, never subPath");
    for v in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "PIP_CERT",
        "GIT_SSL_CAINFO",
        "AWS_CA_BUNDLE",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    ] {
        if count_env(c, v) == 1 && env(c, v) != Some(BUNDLE) {
            continue; // set by the user; checked by the caller
        }
        assert_eq!(env(c, v), Some(BUNDLE), "{v} in {}", c["name"]);
    }
    assert_eq!(env(c, "NODE_EXTRA_CA_CERTS"), Some(CA));
    assert_eq!(env(c, "DENO_CERT"), Some(CA));
    for (upper, lower) in [
        ("HTTP_PROXY", "http_proxy"),
        ("HTTPS_PROXY", "https_proxy"),
        ("NO_PROXY", "no_proxy"),
    ] {
        assert!(env(c, upper).is_some(), "{upper}");
        assert_eq!(
            env(c, upper),
            env(c, lower),
            "{upper} and {lower} must match"
        );
    }
    assert_eq!(env(c, "NODE_USE_ENV_PROXY"), Some("1"));
    let java = env(c, "JAVA_TOOL_OPTIONS").unwrap_or_default();
    if count_env(c, "JAVA_TOOL_OPTIONS") == 1 && !java.contains("-Djavax.net.ssl.trustStore=") {
        // set by the user; checked by the caller
    } else {
        for want in [
            "-Djavax.net.ssl.trustStore=/etc/mcptrust/trust/ca-bundle.p12",
            "-Djavax.net.ssl.trustStoreType=PKCS12",
            "-Djavax.net.ssl.trustStorePassword=changeit",
            "-Dhttps.proxyHost=",
            "-Dhttps.proxyPort=",
            "-Dhttp.nonProxyHosts=",
        ] {
            assert!(
                java.contains(want),
                "{want} missing in JAVA_TOOL_OPTIONS {java}"
            );
        }
    }
    assert!(
        env(c, "SSL_CERT_DIR").is_none(),
        "SSL_CERT_DIR is never set"
    );
    let no_proxy = env(c, "NO_PROXY").unwrap_or_default();
    assert!(!no_proxy.contains("*."), "no *.x in NO_PROXY: {no_proxy}");
    for want in [
        "localhost",
        "127.0.0.1",
        ".svc",
        ".cluster.local",
        "10.96.0.1",
        "10.96.0.0/12",
    ] {
        assert!(
            no_proxy.split(',').any(|e| e == want),
            "{want} missing in {no_proxy}"
        );
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let n = e["name"].as_str().unwrap_or_default();
        assert_eq!(count_env(c, n), 1, "duplicate env {n}");
    }
}

fn trust_volume(spec: &Value) -> Option<&Value> {
    spec["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == "mcptrust-trust")
}

fn pod(spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "agents"},
        "spec": spec,
    })
}

fn typed_pod(v: &Value) -> Pod {
    serde_json::from_value(v.clone()).expect("a valid Pod")
}

#[test]
fn minimal_pod_gets_everything() {
    let obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "mcp", "namespace": "agents"},
        "spec": {"containers": [{"name": "server", "image": "node:22"}]}
    });
    let (m, out) = run(&obj, &defaults());
    assert!(out.skipped.is_empty());
    assert_injected_container(&m["spec"]["containers"][0]);
    let vol = trust_volume(&m["spec"]).expect("volume");
    assert_eq!(vol["configMap"]["name"], "mcptrust-trust");
    let ann = &m["metadata"]["annotations"];
    assert_eq!(ann[ANNOTATION_INJECTED], mcptrust::VERSION);
    assert_eq!(ann[ANNOTATION_BUNDLE_SHA256], "ab".repeat(32));
    assert!(ann.get(ANNOTATION_ENV_OVERRIDDEN).is_none());
    let p = typed_pod(&m);
    assert_eq!(
        p.spec.expect("spec").containers[0]
            .env
            .as_ref()
            .map(Vec::len),
        Some(17),
        "9 CA variables, 6 proxy variables, NODE_USE_ENV_PROXY, JAVA_TOOL_OPTIONS"
    );
}

#[test]
fn seed_000_sandbox_pod_with_init_container_and_env_from() {
    let text = std::fs::read_to_string("examples/sandbox-pod.yaml").expect("example");
    let obj: Value = serde_saphyr::from_str(&text).expect("yaml");
    let (m, _) = run(&obj, &defaults());
    let spec = &m["spec"];
    let init = &spec["initContainers"][0];
    let main = &spec["containers"][0];
    assert_injected_container(init);
    assert_injected_container(main);
    // What was there stays there, in order.
    assert_eq!(main["env"][0]["name"], "MCP_LOG_LEVEL");
    assert_eq!(main["envFrom"][0]["secretRef"]["name"], "msal-credentials");
    assert_eq!(main["volumeMounts"][0]["name"], "work");
    assert_eq!(main["volumeMounts"][1]["mountPath"], "/etc/mcp");
    assert_eq!(main["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(init["volumeMounts"][0]["mountPath"], "/work");
    assert_eq!(spec["volumes"][0]["name"], "work");
    assert_eq!(spec["volumes"][1]["name"], "servers");
    assert!(trust_volume(spec).is_some());
    assert_eq!(
        m["metadata"]["annotations"]["openshell.io/sandbox"],
        "v0.0.31"
    );
    assert_eq!(env(main, "HTTPS_PROXY"), Some(PROXY));
    typed_pod(&m);
}

#[test]
fn user_ssl_cert_file_wins_and_is_recorded() {
    let obj = pod(json!({"containers": [
        {"name": "server", "image": "python:3.13", "env": [
            {"name": "SSL_CERT_FILE", "value": "/opt/certs/mine.pem"},
            {"name": "TOKEN_URL", "value": "https://login.example/token"}
        ]},
        {"name": "sidecar", "image": "busybox"}
    ]}));
    let (m, _) = run(&obj, &defaults());
    let server = &m["spec"]["containers"][0];
    assert_eq!(env(server, "SSL_CERT_FILE"), Some("/opt/certs/mine.pem"));
    assert_eq!(count_env(server, "SSL_CERT_FILE"), 1);
    assert_eq!(env(server, "REQUESTS_CA_BUNDLE"), Some(BUNDLE));
    assert_eq!(
        env(server, "TOKEN_URL"),
        Some("https://login.example/token")
    );
    assert_eq!(
        env(&m["spec"]["containers"][1], "SSL_CERT_FILE"),
        Some(BUNDLE)
    );
    assert_eq!(
        m["metadata"]["annotations"][ANNOTATION_ENV_OVERRIDDEN],
        "server: SSL_CERT_FILE"
    );
    typed_pod(&m);
}

#[test]
fn value_from_proxy_is_left_alone() {
    let obj = pod(
        json!({"containers": [{"name": "app", "image": "golang:1.23", "env": [
            {"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "url"}}}
        ]}]}),
    );
    let (m, _) = run(&obj, &defaults());
    let c = &m["spec"]["containers"][0];
    assert_eq!(count_env(c, "HTTPS_PROXY"), 1);
    assert!(c["env"][0].get("valueFrom").is_some());
    assert_eq!(env(c, "https_proxy"), Some(PROXY));
    assert_eq!(
        m["metadata"]["annotations"][ANNOTATION_ENV_OVERRIDDEN],
        "app: HTTPS_PROXY"
    );
}

#[test]
fn foreign_volume_with_our_name_skips_the_pod() {
    let obj = pod(json!({
        "containers": [{"name": "app", "image": "nginx"}],
        "volumes": [{"name": "mcptrust-trust", "emptyDir": {}}]
    }));
    let (m, out) = run(&obj, &defaults());
    assert_eq!(out.skipped.len(), 1);
    assert_eq!(m["spec"], obj["spec"], "spec untouched");
    let ann = &m["metadata"]["annotations"];
    assert!(
        ann[ANNOTATION_SKIPPED]
            .as_str()
            .unwrap_or_default()
            .contains("volume \"mcptrust-trust\" already exists")
    );
    assert!(
        ann.get(ANNOTATION_INJECTED).is_none(),
        "not marked injected"
    );
    typed_pod(&m);
}

#[test]
fn our_volume_already_present_is_reused() {
    let obj = pod(json!({
        "containers": [{"name": "app", "image": "nginx"}],
        "volumes": [{"name": "mcptrust-trust", "configMap": {"name": "mcptrust-trust"}}]
    }));
    let (m, _) = run(&obj, &defaults());
    assert_eq!(m["spec"]["volumes"].as_array().map(Vec::len), Some(1));
    assert_injected_container(&m["spec"]["containers"][0]);
}

#[test]
fn mount_path_clash_skips_only_that_container() {
    let obj = pod(json!({
        "containers": [
            {"name": "legacy", "image": "app:1", "volumeMounts": [{"name": "certs", "mountPath": "/etc/mcptrust"}]},
            {"name": "new", "image": "app:2"}
        ],
        "volumes": [{"name": "certs", "secret": {"secretName": "certs"}}]
    }));
    let (m, out) = run(&obj, &defaults());
    let legacy = &m["spec"]["containers"][0];
    assert_eq!(
        legacy, &obj["spec"]["containers"][0],
        "legacy container untouched"
    );
    assert!(
        env(legacy, "SSL_CERT_FILE").is_none(),
        "never point at an unmounted file"
    );
    assert_injected_container(&m["spec"]["containers"][1]);
    assert_eq!(out.skipped.len(), 1);
    let skipped = m["metadata"]["annotations"][ANNOTATION_SKIPPED]
        .as_str()
        .unwrap_or_default();
    assert!(
        skipped.contains("container legacy") && skipped.contains("/etc/mcptrust"),
        "{skipped}"
    );
    assert_eq!(
        m["metadata"]["annotations"][ANNOTATION_INJECTED],
        mcptrust::VERSION
    );
    typed_pod(&m);
}

#[test]
fn annotation_keys_with_slashes_are_escaped() {
    let obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": {
            "prometheus.io/scrape": "true",
            "example.com/a~b": "tilde"
        }},
        "spec": {"containers": [{"name": "c", "image": "i"}]}
    });
    let (m, out) = run(&obj, &defaults());
    let paths: Vec<String> = out
        .patch
        .to_json_patch()
        .0
        .iter()
        .filter_map(|op| match op {
            PatchOperation::Add(a) => Some(a.path.to_string()),
            _ => None,
        })
        .collect();
    assert!(
        paths.contains(&"/metadata/annotations/mcptrust.io~1injected".to_string()),
        "{paths:?}"
    );
    let ann = &m["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["example.com/a~b"], "tilde");
    assert_eq!(ann[ANNOTATION_INJECTED], mcptrust::VERSION);
}

#[test]
fn opt_out_label_gives_empty_patch() {
    let obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"mcptrust.io/inject": "false"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]}
    });
    assert!(inject(&obj, &defaults()).expect("inject").is_noop());
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"mcptrust.io/inject": "false"}},
        "spec": {"template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    });
    assert!(inject(&deploy, &defaults()).expect("inject").is_noop());
}

fn workload(kind: &str, api: &str) -> Value {
    let template = json!({
        "metadata": {"labels": {"app": "mcp"}},
        "spec": {"containers": [{"name": "server", "image": "ghcr.io/example/mcp:1"}],
                 "restartPolicy": if kind == "Job" || kind == "CronJob" { "OnFailure" } else { "Always" }}
    });
    let spec = if kind == "CronJob" {
        json!({"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}})
    } else {
        json!({"selector": {"matchLabels": {"app": "mcp"}}, "template": template})
    };
    json!({"apiVersion": api, "kind": kind, "metadata": {"name": "w", "namespace": "agents", "annotations": {"owner/team": "x"}}, "spec": spec})
}

fn check_workload(kind: &str, api: &str, template_ptr: &str) -> Value {
    let obj = workload(kind, api);
    let (m, _) = run(&obj, &defaults());
    let t = m.pointer(template_ptr).expect("template");
    assert_injected_container(&t["spec"]["containers"][0]);
    assert!(trust_volume(&t["spec"]).is_some());
    assert_eq!(
        t["metadata"]["annotations"][ANNOTATION_INJECTED],
        mcptrust::VERSION
    );
    assert_eq!(t["metadata"]["labels"]["app"], "mcp");
    assert_eq!(
        m["metadata"], obj["metadata"],
        "{kind}: the workload's own metadata is untouched"
    );
    m
}

#[test]
fn deployment() {
    let m = check_workload("Deployment", "apps/v1", "/spec/template");
    let _: Deployment = serde_json::from_value(m).expect("Deployment");
}

#[test]
fn statefulset() {
    let m = check_workload("StatefulSet", "apps/v1", "/spec/template");
    let _: StatefulSet = serde_json::from_value(m).expect("StatefulSet");
}

#[test]
fn daemonset() {
    let m = check_workload("DaemonSet", "apps/v1", "/spec/template");
    let _: DaemonSet = serde_json::from_value(m).expect("DaemonSet");
}

#[test]
fn replicaset() {
    let m = check_workload("ReplicaSet", "apps/v1", "/spec/template");
    let _: ReplicaSet = serde_json::from_value(m).expect("ReplicaSet");
}

#[test]
fn job() {
    let m = check_workload("Job", "batch/v1", "/spec/template");
    let _: Job = serde_json::from_value(m).expect("Job");
}

#[test]
fn cronjob() {
    let m = check_workload("CronJob", "batch/v1", "/spec/jobTemplate/spec/template");
    let _: CronJob = serde_json::from_value(m).expect("CronJob");
}

#[test]
fn unhandled_kinds_and_missing_templates_get_no_patch() {
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 443}]}});
    assert!(inject(&svc, &defaults()).expect("ok").is_noop());
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"containers": "x"}});
    assert!(inject(&cm, &defaults()).expect("ok").is_noop());
    let bare = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
    assert!(inject(&bare, &defaults()).expect("ok").is_noop());
}

#[test]
fn pod_without_metadata_or_lists_gets_parents_created() {
    let obj = json!({"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let (m, _) = run(&obj, &defaults());
    assert_eq!(
        m["metadata"]["annotations"][ANNOTATION_INJECTED],
        mcptrust::VERSION
    );
    assert_injected_container(&m["spec"]["containers"][0]);
    assert_eq!(m["spec"]["volumes"].as_array().map(Vec::len), Some(1));
}

#[test]
fn empty_lists_are_appended_to() {
    let obj = pod(
        json!({"containers": [{"name": "c", "image": "i", "env": [], "volumeMounts": []}], "volumes": []}),
    );
    let (m, _) = run(&obj, &defaults());
    assert_injected_container(&m["spec"]["containers"][0]);
    typed_pod(&m);
}

#[test]
fn overlay_system_trust_by_annotation() {
    let obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"mcptrust.io/overlay-system-trust": "true"}},
        "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [
            {"name": "own", "mountPath": "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "subPath": "x"}
        ]}], "volumes": [{"name": "own", "emptyDir": {}}]}
    });
    let (m, _) = run(&obj, &defaults());
    let c = &m["spec"]["containers"][0];
    let deb = mount(c, "/etc/ssl/certs/ca-certificates.crt").expect("debian path overlaid");
    assert_eq!(deb["subPath"], "ca-bundle.pem");
    assert_eq!(deb["readOnly"], true);
    assert_eq!(
        mount(c, "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem").expect("kept")["name"],
        "own"
    );
    typed_pod(&m);
}

#[test]
fn skip_env_annotation() {
    let obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"mcptrust.io/skip-env": "NODE_EXTRA_CA_CERTS, NODE_USE_ENV_PROXY"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]}
    });
    let (m, _) = run(&obj, &defaults());
    let c = &m["spec"]["containers"][0];
    assert!(env(c, "NODE_EXTRA_CA_CERTS").is_none());
    assert!(env(c, "NODE_USE_ENV_PROXY").is_none());
    assert_eq!(env(c, "SSL_CERT_FILE"), Some(BUNDLE));
}

#[test]
fn mcpserver_settings_are_merged() {
    let text = std::fs::read_to_string("examples/mcpserver-stdio-sandbox.yaml").expect("example");
    let mut server: McpServer = serde_saphyr::from_str(&text).expect("McpServer");
    server.status = Some(mcptrust::api::McpServerStatus {
        trust_bundle: Some(mcptrust::api::TrustBundleStatus {
            config_map_name: "mcptrust-sandbox-tools-trust".into(),
            previous_config_maps: Vec::new(),
            sha256: "cd".repeat(32),
            certificates: 147,
        }),
        ..Default::default()
    });
    let mut cfg = InjectConfig::sandbox_demo();
    cfg.proxy.https_proxy = Some("http://other:1".into());
    let inj = Injection::resolve(&cfg, Some(&server));
    let obj = pod(
        json!({"containers": [{"name": "c", "image": "i", "env": [{"name": "MCP_SANDBOX", "value": "0"}]}]}),
    );
    let (m, _) = run(&obj, &inj);
    let c = &m["spec"]["containers"][0];
    // The shared ConfigMap its trust derives, not the (earlier version's) name in status.
    assert_eq!(
        trust_volume(&m["spec"]).expect("vol")["configMap"]["name"],
        mcptrust::api::trust_config_map_name(&server).as_str()
    );
    assert!(
        mcptrust::api::trust_config_map_name(&server).starts_with("mcptrust-trust-"),
        "{}",
        mcptrust::api::trust_config_map_name(&server)
    );
    assert_eq!(
        env(c, "HTTPS_PROXY"),
        Some(PROXY),
        "the McpServer's proxy overrides the default"
    );
    assert_eq!(
        env(c, "MCP_SANDBOX"),
        Some("0"),
        "the container's own env wins over spec.env"
    );
    assert!(
        env(c, "NO_PROXY")
            .unwrap_or_default()
            .split(',')
            .any(|e| e == ".corp.example")
    );
    let ann = &m["metadata"]["annotations"];
    assert_eq!(ann[ANNOTATION_BUNDLE_SHA256], "cd".repeat(32));
    assert_eq!(ann[ANNOTATION_MCPSERVER], "agents/sandbox-tools");
    assert_eq!(ann[ANNOTATION_ENV_OVERRIDDEN], "c: MCP_SANDBOX");
    let java = env(c, "JAVA_TOOL_OPTIONS").expect("JAVA_TOOL_OPTIONS");
    assert!(
        java.contains("-Djavax.net.ssl.trustStore=/etc/mcptrust/trust/ca-bundle.p12")
            && java.contains("-Dhttps.proxyHost=10.200.0.1 -Dhttps.proxyPort=3128")
            && java.contains("|*.corp.example"),
        "the McpServer's proxy and noProxy reach Java too: {java}"
    );
}

#[test]
fn user_java_tool_options_win_and_are_recorded() {
    let obj = pod(json!({"containers": [
        {"name": "spring", "image": "eclipse-temurin:21", "env": [
            {"name": "JAVA_TOOL_OPTIONS", "value": "-Xmx512m"}
        ]},
        {"name": "sidecar", "image": "busybox"}
    ]}));
    let (m, _) = run(&obj, &defaults());
    let spring = &m["spec"]["containers"][0];
    assert_eq!(env(spring, "JAVA_TOOL_OPTIONS"), Some("-Xmx512m"));
    assert_eq!(count_env(spring, "JAVA_TOOL_OPTIONS"), 1);
    assert_eq!(env(spring, "SSL_CERT_FILE"), Some(BUNDLE));
    assert!(
        env(&m["spec"]["containers"][1], "JAVA_TOOL_OPTIONS")
            .is_some_and(|j| j.contains("ca-bundle.p12"))
    );
    assert_eq!(
        m["metadata"]["annotations"][ANNOTATION_ENV_OVERRIDDEN],
        "spring: JAVA_TOOL_OPTIONS"
    );
    typed_pod(&m);
}

#[test]
fn no_proxy_configured_means_no_proxy_env() {
    let mut cfg = InjectConfig::sandbox_demo();
    cfg.proxy.http_proxy = None;
    cfg.proxy.https_proxy = None;
    let obj = pod(json!({"containers": [{"name": "c", "image": "i"}]}));
    let (m, _) = run(&obj, &Injection::resolve(&cfg, None));
    let c = &m["spec"]["containers"][0];
    assert_eq!(env(c, "SSL_CERT_FILE"), Some(BUNDLE));
    assert!(env(c, "HTTPS_PROXY").is_none() && env(c, "NODE_USE_ENV_PROXY").is_none());
}

#[test]
fn hand_injected_values_are_not_reported_as_overrides() {
    let obj = pod(json!({"containers": [{"name": "c", "image": "i", "env": [
        {"name": "NODE_EXTRA_CA_CERTS", "value": CA}
    ]}]}));
    let (m, _) = run(&obj, &defaults());
    assert!(
        m["metadata"]["annotations"]
            .get(ANNOTATION_ENV_OVERRIDDEN)
            .is_none()
    );
    assert_eq!(
        count_env(&m["spec"]["containers"][0], "NODE_EXTRA_CA_CERTS"),
        1
    );
}

#[test]
fn many_containers_all_injected() {
    let containers: Vec<Value> = (0..6)
        .map(|i| json!({"name": format!("c{i}"), "image": "i", "ports": [{"containerPort": 8000 + i}]}))
        .collect();
    let obj =
        pod(json!({"initContainers": [{"name": "init", "image": "i"}], "containers": containers}));
    let (m, _) = run(&obj, &defaults());
    for c in m["spec"]["containers"].as_array().expect("containers") {
        assert_injected_container(c);
    }
    assert_injected_container(&m["spec"]["initContainers"][0]);
}

#[test]
fn changed_bundle_hash_replaces_the_annotation() {
    let obj = pod(json!({"containers": [{"name": "c", "image": "i"}]}));
    let (m, _) = run(&obj, &defaults());
    let mut cfg = InjectConfig::sandbox_demo();
    cfg.trust_bundle_sha256 = Some("ef".repeat(32));
    let newer = Injection::resolve(&cfg, None);
    let (m2, out) = run(&m, &newer);
    assert_eq!(out.patch.len(), 1, "only the hash annotation changes");
    assert!(matches!(
        out.patch.to_json_patch().0[0],
        PatchOperation::Replace(_)
    ));
    assert_eq!(
        m2["metadata"]["annotations"][ANNOTATION_BUNDLE_SHA256],
        "ef".repeat(32)
    );
}

#[test]
fn malformed_objects_are_errors_not_panics() {
    for bad in [
        json!("a string"),
        json!({"kind": "Pod", "spec": {"containers": "nope"}}),
        json!({"kind": "Pod", "spec": {"containers": [1, 2]}}),
        json!({"kind": "Pod", "metadata": {"annotations": []}, "spec": {"containers": []}}),
        json!({"kind": "Pod", "spec": {"containers": [{"name": "c", "env": {"A": "b"}}]}}),
        json!({"kind": "Deployment", "spec": {"template": 3}}),
    ] {
        let err = inject(&bad, &defaults()).expect_err("malformed");
        assert_eq!(err.reason(), "MalformedObject", "{bad}");
    }
}

#[test]
fn manifests_stream_injects_and_passes_through() {
    let text = std::fs::read_to_string("examples/deployment.yaml").expect("example");
    let out =
        mcptrust::inject::manifest::inject_manifests(&text, &InjectConfig::sandbox_demo(), None)
            .expect("inject");
    let docs = mcptrust::inject::manifest::split_documents(&out);
    assert_eq!(docs.len(), 2);
    let deploy: Value = serde_saphyr::from_str(docs[0].text).expect("yaml");
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env(c, "SSL_CERT_FILE"),
        Some("/opt/app/certs/corp-bundle.pem")
    );
    assert_eq!(env(c, "REQUESTS_CA_BUNDLE"), Some(BUNDLE));
    let original_service = mcptrust::inject::manifest::split_documents(&text)[1].text;
    assert_eq!(
        docs[1].text, original_service,
        "the Service passes through byte for byte"
    );
    let _: Deployment = serde_json::from_value(deploy).expect("Deployment");
    // Injecting the output again changes nothing.
    let again =
        mcptrust::inject::manifest::inject_manifests(&out, &InjectConfig::sandbox_demo(), None)
            .expect("inject");
    assert_eq!(again, out);
}

#[test]
fn mcpserver_selector_picks_pods() {
    let text = std::fs::read_to_string("examples/mcpserver-httpx-bundle.yaml").expect("example");
    let server: McpServer = serde_saphyr::from_str(&text).expect("McpServer");
    let input = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: jira-mcp}}\nspec: {containers: [{name: c, image: i}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, labels: {app: other}}\nspec: {containers: [{name: c, image: i}]}\n";
    let out = mcptrust::inject::manifest::inject_manifests(
        input,
        &InjectConfig::sandbox_demo(),
        Some(&server),
    )
    .expect("inject");
    let docs = mcptrust::inject::manifest::split_documents(&out);
    let a: Value = serde_saphyr::from_str(docs[0].text).expect("a");
    let b: Value = serde_saphyr::from_str(docs[1].text).expect("b");
    assert_eq!(
        trust_volume(&a["spec"]).expect("a vol")["configMap"]["name"],
        mcptrust::api::trust_config_map_name(&server).as_str(),
        "the shared ConfigMap of the McpServer's trust"
    );
    assert_eq!(
        env(&a["spec"]["containers"][0], "HTTPX_LOG_LEVEL"),
        Some("warning")
    );
    assert_eq!(
        trust_volume(&b["spec"]).expect("b vol")["configMap"]["name"],
        "mcptrust-trust"
    );
    assert!(env(&b["spec"]["containers"][0], "HTTPX_LOG_LEVEL").is_none());
}

/// The sandbox demo the tests use is what `examples/sandbox-config.yaml` (the file the
/// README passes to `--config`) says; the embedded default configures no proxy.
#[test]
fn sandbox_demo_is_the_example_and_the_default_has_no_proxy() {
    let text = std::fs::read_to_string("examples/sandbox-config.yaml").expect("example");
    assert_eq!(
        InjectConfig::from_yaml(&text).expect("parses"),
        InjectConfig::sandbox_demo()
    );
    let default = InjectConfig::embedded_default();
    assert!(!default.proxy.enabled());
    assert!(default.proxy.service_cidrs.is_empty() && default.proxy.api_server_ips.is_empty());
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                     "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let (mutated, _) = run(&pod, &Injection::resolve(&default, None));
    let c = &mutated["spec"]["containers"][0];
    assert_eq!(env(c, "SSL_CERT_FILE"), Some(BUNDLE));
    for v in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "NODE_USE_ENV_PROXY",
    ] {
        assert_eq!(env(c, v), None, "{v} without a proxy");
    }
}

// --- The mcptrust-reloader sidecar (`spec.rotation.strategy: Signal`) ---

use mcptrust::api::reloader::{
    ANNOTATION_RELOAD_DEBOUNCE, ANNOTATION_RELOADER_SKIPPED, ENV_RELOADER_TARGET,
    RELOADER_CONTAINER, RELOADER_PORT_NAME,
};

const RELOADER_IMAGE: &str = "ghcr.io/mcptrust/mcptrust:0.1.0";

/// The settings of examples/mcpserver-signal.yaml (mTLS: the server certificate mounted at
/// `/etc/mcptrust/tls/server`, as the webhook's resolver adds it), and `rotation` as given.
fn signal_injection(rotation: Value) -> Injection {
    let text = std::fs::read_to_string("examples/mcpserver-signal.yaml").expect("example");
    let mut server: McpServer = serde_saphyr::from_str(&text).expect("McpServer");
    server.spec.rotation = Some(serde_json::from_value(rotation).expect("rotation"));
    let mut cfg = InjectConfig::sandbox_demo();
    cfg.reloader.image = Some(RELOADER_IMAGE.into());
    cfg.reloader.image_pull_policy = Some("IfNotPresent".into());
    let mut inj = Injection::resolve(&cfg, Some(&server));
    inj.tls_mounts.push(mcptrust::inject::TlsMount {
        volume_name: "mcptrust-server-tls".into(),
        secret_name: "github-mcp-server-tls".into(),
        mount_path: mcptrust::inject::SERVER_TLS_MOUNT_PATH.into(),
        sha256: None,
        not_after: None,
    });
    inj
}

fn signal() -> Injection {
    signal_injection(json!({"strategy": "Signal"}))
}

fn reloader(spec: &Value) -> Option<&Value> {
    spec["initContainers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == RELOADER_CONTAINER)
}

fn skipped_reason(m: &Value) -> Option<&str> {
    m["metadata"]["annotations"][ANNOTATION_RELOADER_SKIPPED].as_str()
}

/// Injects, applies, re-injects (empty), and checks the result is a valid Pod.
fn run_pod(obj: &Value, inj: &Injection) -> (Value, Outcome) {
    let (m, out) = run(obj, inj);
    typed_pod(&m);
    (m, out)
}

#[test]
fn signal_pod_gets_the_native_sidecar() {
    let obj = pod(json!({"containers": [{"name": "server", "image": "nginx:1.27"}]}));
    let (m, out) = run_pod(&obj, &signal());
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    let spec = &m["spec"];
    assert_eq!(spec["shareProcessNamespace"], true);
    let r = reloader(spec).expect("sidecar");
    assert_eq!(
        r,
        &json!({
            "name": "mcptrust-reloader",
            "image": RELOADER_IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "restartPolicy": "Always",
            "args": ["reload", "--log-format", "json",
                     "--watch", "/etc/mcptrust/trust",
                     "--watch", "/etc/mcptrust/tls/server",
                     "--cert", "/etc/mcptrust/tls/server/tls.crt",
                     "--key", "/etc/mcptrust/tls/server/tls.key",
                     "--signal", "SIGHUP", "--container", "server",
                     "--admin-addr", "0.0.0.0:9899"],
            "ports": [{"name": RELOADER_PORT_NAME, "containerPort": 9899}],
            "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": true,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": [
                {"name": "mcptrust-trust", "mountPath": "/etc/mcptrust/trust", "readOnly": true},
                {"name": "mcptrust-server-tls", "mountPath": "/etc/mcptrust/tls/server", "readOnly": true},
            ],
        })
    );
    // The sidecar's args parse as `mcptrust reload` flags.
    let args: Vec<&str> = r["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let cli = <mcptrust::cli::Cli as clap::Parser>::try_parse_from(
        std::iter::once("mcptrust").chain(args.iter().copied()),
    );
    assert!(cli.is_ok(), "{:?}", cli.err());
    let server = &spec["containers"][0];
    assert_eq!(env(server, ENV_RELOADER_TARGET), Some("server"));
    assert_injected_container(server);
    assert!(mount(server, "/etc/mcptrust/tls/server").is_some());
    assert!(skipped_reason(&m).is_none());
    // The sidecar gets none of the injected env.
    assert!(r.get("env").is_none());
}

#[test]
fn signal_settings_and_debounce_reach_the_args() {
    let inj = signal_injection(json!({
        "strategy": "Signal", "signal": "SIGUSR1", "container": "server",
        "processName": "^node .*server.js", "handlesSignal": true,
    }));
    let mut obj = pod(json!({
        "initContainers": [{"name": "setup", "image": "busybox"}],
        "containers": [
            {"name": "server", "image": "node:22", "env": [{"name": "PORT", "value": "8443"}]},
            {"name": "log", "image": "busybox"},
        ]
    }));
    obj["metadata"]["annotations"] = json!({ANNOTATION_RELOAD_DEBOUNCE: "5"});
    let (m, _) = run_pod(&obj, &inj);
    let r = reloader(&m["spec"]).expect("sidecar");
    let args = r["args"].as_array().expect("args");
    let tail: Vec<&str> = args[11..].iter().filter_map(Value::as_str).collect();
    assert_eq!(
        tail,
        [
            "--signal",
            "SIGUSR1",
            "--container",
            "server",
            "--process-name",
            "^node .*server.js",
            "--handles-signal",
            "--debounce-seconds",
            "5",
            "--admin-addr",
            "0.0.0.0:9899"
        ]
    );
    // Appended after the user's init container, which is still injected.
    assert_eq!(m["spec"]["initContainers"][1]["name"], RELOADER_CONTAINER);
    assert_injected_container(&m["spec"]["initContainers"][0]);
    let server = &m["spec"]["containers"][0];
    assert_eq!(env(server, "PORT"), Some("8443"));
    assert_eq!(env(server, ENV_RELOADER_TARGET), Some("server"));
    assert_eq!(env(&m["spec"]["containers"][1], ENV_RELOADER_TARGET), None);

    // An invalid debounce is left out (the sidecar's default applies).
    obj["metadata"]["annotations"] = json!({ANNOTATION_RELOAD_DEBOUNCE: "2s"});
    let (m, _) = run_pod(&obj, &inj);
    let args = reloader(&m["spec"]).expect("sidecar")["args"].to_string();
    assert!(!args.contains("--debounce-seconds"), "{args}");
}

#[test]
fn run_as_is_copied_from_the_container_else_the_pod() {
    // (pod securityContext, container securityContext, the sidecar's run-as fields)
    let cases = [
        (
            json!({"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": true}),
            json!({"runAsUser": 101, "runAsGroup": 102}),
            json!({"runAsUser": 101, "runAsGroup": 102, "runAsNonRoot": true}),
        ),
        // From the pod, each field on its own.
        (
            json!({"runAsUser": 1000, "runAsGroup": 2000}),
            json!({"runAsGroup": 3000}),
            json!({"runAsUser": 1000, "runAsGroup": 3000, "runAsNonRoot": true}),
        ),
        // Root: no runAsNonRoot (kubelet would refuse uid 0 with it).
        (json!({}), json!({"runAsUser": 0}), json!({"runAsUser": 0})),
        // Neither sets a user: the image's.
        (json!({}), json!({}), json!({})),
    ];
    for (pod_ctx, container_ctx, want) in cases {
        let obj = pod(json!({
            "securityContext": pod_ctx,
            "containers": [{"name": "server", "image": "nginx", "securityContext": container_ctx}]
        }));
        let (m, _) = run_pod(&obj, &signal());
        let sc = reloader(&m["spec"]).expect("sidecar")["securityContext"]
            .as_object()
            .expect("securityContext");
        let run_as: serde_json::Map<String, Value> = sc
            .iter()
            .filter(|(k, _)| k.starts_with("runAs"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(Value::Object(run_as), want, "{obj}");
        assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    }
}

/// Each refusal: no sidecar, the user's spec as it was, the rest of the injection, and
/// the reason on the pod (and as a warning).
#[test]
fn refusals_leave_the_pod_alone_with_a_reason() {
    let server = |extra: Value| {
        let mut c = json!({"name": "server", "image": "nginx"});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    };
    let cases: Vec<(&str, Injection, Value, &str)> = vec![
        (
            "shareProcessNamespace false",
            signal(),
            json!({"shareProcessNamespace": false, "containers": [server(json!({}))]}),
            "shareProcessNamespace is false",
        ),
        (
            "hostPID",
            signal(),
            json!({"hostPID": true, "containers": [server(json!({}))]}),
            "hostPID is true",
        ),
        (
            "subPath of the server certificate",
            signal(),
            json!({"containers": [server(json!({"volumeMounts": [
                {"name": "mcptrust-server-tls", "mountPath": "/etc/nginx/tls.crt", "subPath": "tls.crt"}]}))]}),
            "with subPath tls.crt",
        ),
        (
            "subPath of the trust bundle",
            signal(),
            json!({"containers": [server(json!({"volumeMounts": [
                {"name": "mcptrust-trust", "mountPath": "/etc/ssl/ca.pem", "subPath": "ca.pem"}]}))]}),
            "volume mcptrust-trust with subPath ca.pem",
        ),
        (
            "several containers, none named",
            signal(),
            json!({"containers": [server(json!({})), {"name": "log", "image": "busybox"}]}),
            "set spec.rotation.container",
        ),
        (
            "the named container is missing",
            signal_injection(json!({"strategy": "Signal", "container": "api"})),
            json!({"containers": [server(json!({}))]}),
            "\"api\" is not a container of this pod (it has server)",
        ),
        (
            "no image",
            {
                let mut inj = signal();
                if let Some(r) = inj.reloader.as_mut() {
                    r.config.image = None;
                }
                inj
            },
            json!({"containers": [server(json!({}))]}),
            "no reloader image is configured",
        ),
        (
            "runAsNonRoot without runAsUser",
            signal(),
            json!({"securityContext": {"runAsNonRoot": true}, "containers": [server(json!({}))]}),
            "set runAsUser",
        ),
        (
            "runAsNonRoot on the container without runAsUser",
            signal(),
            json!({"containers": [server(json!({"securityContext": {"runAsNonRoot": true}}))]}),
            "set runAsUser",
        ),
        (
            "the target sets the target variable itself",
            signal(),
            json!({"containers": [server(json!({"env": [{"name": ENV_RELOADER_TARGET, "value": "other"}]}))]}),
            "sets MCPTRUST_RELOADER_TARGET itself",
        ),
    ];
    for (what, inj, spec, reason) in cases {
        let obj = pod(spec.clone());
        let (m, out) = run_pod(&obj, &inj);
        let got = skipped_reason(&m).unwrap_or_else(|| panic!("{what}: no annotation"));
        assert!(got.contains(reason), "{what}: {got}");
        assert!(
            out.skipped.iter().any(|s| s.contains(reason)),
            "{what}: warning {:?}",
            out.skipped
        );
        assert!(reloader(&m["spec"]).is_none(), "{what}: no sidecar");
        for field in ["shareProcessNamespace", "hostPID", "securityContext"] {
            assert_eq!(m["spec"].get(field), spec.get(field), "{what}: {field}");
        }
        for c in m["spec"]["containers"].as_array().expect("containers") {
            assert_eq!(
                count_env(c, ENV_RELOADER_TARGET),
                usize::from(what.starts_with("the target sets")),
                "{what}"
            );
            // The rest of the injection still applies.
            assert_injected_container(c);
        }
        assert_eq!(
            m["metadata"]["annotations"][ANNOTATION_INJECTED],
            mcptrust::VERSION,
            "{what}"
        );
    }
}

/// A recorded reason is not replaced by a re-admission with another outcome, and a pod that
/// now gets the sidecar loses the stale reason; either way a second pass is empty.
#[test]
fn reloader_annotation_does_not_flap() {
    let mut obj =
        pod(json!({"hostPID": true, "containers": [{"name": "server", "image": "nginx"}]}));
    obj["metadata"]["annotations"] =
        json!({ANNOTATION_RELOADER_SKIPPED: "shareProcessNamespace is false: earlier"});
    let (m, _) = run_pod(&obj, &signal());
    assert_eq!(
        skipped_reason(&m),
        Some("shareProcessNamespace is false: earlier")
    );
    assert!(reloader(&m["spec"]).is_none());

    // The refusal is gone (a fixed template): sidecar added, stale reason removed.
    obj["spec"].as_object_mut().expect("spec").remove("hostPID");
    let (m, _) = run_pod(&obj, &signal());
    assert!(reloader(&m["spec"]).is_some());
    assert!(skipped_reason(&m).is_none());

    // A pod that already has a sidecar of that name is left as it is.
    let obj = pod(json!({
        "shareProcessNamespace": false,
        "initContainers": [{"name": RELOADER_CONTAINER, "image": "mine", "restartPolicy": "Always"}],
        "containers": [{"name": "server", "image": "nginx"}]
    }));
    let (m, out) = run_pod(&obj, &signal());
    assert!(out.skipped.is_empty());
    assert_eq!(m["spec"]["initContainers"], obj["spec"]["initContainers"]);
    assert_eq!(m["spec"]["shareProcessNamespace"], false);
    assert!(skipped_reason(&m).is_none());
}

#[test]
fn not_signal_means_no_sidecar() {
    for rotation in [
        json!({"strategy": "RollingRestart"}),
        json!({"strategy": "None"}),
    ] {
        let inj = signal_injection(rotation.clone());
        assert!(inj.reloader.is_none(), "{rotation}");
        let (m, _) = run_pod(
            &pod(json!({"containers": [{"name": "server", "image": "nginx"}]})),
            &inj,
        );
        assert!(reloader(&m["spec"]).is_none());
        assert!(m["spec"].get("shareProcessNamespace").is_none());
        assert!(env(&m["spec"]["containers"][0], ENV_RELOADER_TARGET).is_none());
    }
    // Pods no McpServer selects: none either.
    let (m, _) = run_pod(
        &pod(json!({"containers": [{"name": "server", "image": "nginx"}]})),
        &defaults(),
    );
    assert!(reloader(&m["spec"]).is_none());
}

#[test]
fn signal_templates_of_every_kind_get_the_sidecar() {
    for (kind, api, ptr) in [
        ("Deployment", "apps/v1", "/spec/template"),
        ("StatefulSet", "apps/v1", "/spec/template"),
        ("DaemonSet", "apps/v1", "/spec/template"),
        ("ReplicaSet", "apps/v1", "/spec/template"),
        ("Job", "batch/v1", "/spec/template"),
        ("CronJob", "batch/v1", "/spec/jobTemplate/spec/template"),
    ] {
        let obj = workload(kind, api);
        let (m, _) = run(&obj, &signal());
        let t = m.pointer(ptr).expect("template");
        let r = reloader(&t["spec"]).unwrap_or_else(|| panic!("{kind}: sidecar"));
        assert_eq!(r["restartPolicy"], "Always", "{kind}");
        assert_eq!(t["spec"]["shareProcessNamespace"], true, "{kind}");
        assert_eq!(
            env(&t["spec"]["containers"][0], ENV_RELOADER_TARGET),
            Some("server"),
            "{kind}"
        );
        assert_eq!(m["metadata"], obj["metadata"], "{kind}");
        match kind {
            "Deployment" => drop(serde_json::from_value::<Deployment>(m).expect(kind)),
            "StatefulSet" => drop(serde_json::from_value::<StatefulSet>(m).expect(kind)),
            "DaemonSet" => drop(serde_json::from_value::<DaemonSet>(m).expect(kind)),
            "ReplicaSet" => drop(serde_json::from_value::<ReplicaSet>(m).expect(kind)),
            "Job" => drop(serde_json::from_value::<Job>(m).expect(kind)),
            _ => drop(serde_json::from_value::<CronJob>(m).expect(kind)),
        }
    }
}

/// The webhook reads the injector's view of the object: the fields the sidecar's
/// decisions read are in it, so the view gives the same patch as the whole object.
#[test]
fn the_view_keeps_what_the_reloader_reads() {
    let obj = pod(json!({
        "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
        "hostPID": false,
        "containers": [{"name": "server", "image": "nginx", "ports": [{"containerPort": 8443}],
                        "securityContext": {"runAsUser": 101, "runAsGroup": 101}}]
    }));
    let view = mcptrust::inject::view::object_view(&obj).expect("view");
    // Of the security contexts, only the user fields are kept.
    assert_eq!(view["spec"]["securityContext"], json!({"runAsUser": 1000}));
    assert_eq!(view["spec"]["hostPID"], false);
    assert!(view["spec"]["containers"][0].get("ports").is_none());
    let whole = inject(&obj, &signal()).expect("inject");
    let viewed = inject(&view, &signal()).expect("inject");
    assert_eq!(whole.patch, viewed.patch);
    for refused in [
        json!({"shareProcessNamespace": false}),
        json!({"hostPID": true}),
    ] {
        let mut obj = obj.clone();
        obj["spec"]
            .as_object_mut()
            .expect("spec")
            .extend(refused.as_object().expect("object").clone());
        let view = mcptrust::inject::view::object_view(&obj).expect("view");
        assert_eq!(
            inject(&obj, &signal()).expect("inject").patch,
            inject(&view, &signal()).expect("inject").patch,
            "{refused}"
        );
    }
}
