//! The committed CRD matches the code, and its CEL rules accept the examples and reject
//! bad specs with messages a person can act on. CEL is evaluated by kube-cel's Validator
//! (the Kubernetes CEL library functions, client-side), against the exact schema in crds/.

mod common;

use common::crd_schema;
use kube::CustomResourceExt;
use mcptrust::api::McpServer;
use serde_json::{Value, json};

const CRD_FILE: &str = "crds/mcpservers.mcptrust.io.yaml";

#[test]
fn committed_crd_matches_generator() {
    let generated = mcptrust::api::crd_yaml().expect("crd yaml");
    let committed = std::fs::read_to_string(CRD_FILE).expect("read crds/");
    assert!(
        generated == committed,
        "{CRD_FILE} is stale: run `cargo run -- crd > {CRD_FILE}` and commit it"
    );
}

#[test]
fn crd_shape() {
    let crd = McpServer::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("mcpservers.mcptrust.io"));
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["mcps".to_string()]));
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let cols: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        cols,
        ["Ready", "Transport", "Endpoint", "Cert-Expiry", "Age"]
    );
}

fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "mcptrust.io/v1alpha1",
        "kind": "McpServer",
        "metadata": {"name": "github", "namespace": "agents"},
        "spec": spec,
    })
}

/// Validates with CEL; returns the failure messages.
fn cel_errors(obj: &Value) -> Vec<String> {
    let validator = kube_cel::Validator::new();
    match validator.validate(&crd_schema(), obj, None) {
        Ok(()) => Vec::new(),
        Err(errs) => errs
            .as_slice()
            .iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

fn assert_rejected(spec: Value, needle: &str) {
    let errs = cel_errors(&object(spec.clone()));
    assert!(
        errs.iter().any(|e| e.contains(needle)),
        "spec {spec} should be rejected with {needle:?}, got {errs:?}"
    );
}

fn assert_accepted(spec: Value) {
    let errs = cel_errors(&object(spec.clone()));
    assert!(
        errs.is_empty(),
        "spec {spec} should be accepted, got {errs:?}"
    );
}

#[test]
fn examples_are_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir("examples").expect("examples/") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        for doc in mcptrust::inject::manifest::split_documents(&text) {
            let Ok(Some(v)) = serde_saphyr::from_str::<Option<Value>>(doc.text) else {
                continue;
            };
            if v.get("kind").and_then(Value::as_str) != Some("McpServer") {
                continue;
            }
            seen += 1;
            let typed: McpServer = serde_json::from_value(v.clone())
                .unwrap_or_else(|e| panic!("{}: not an McpServer: {e}", path.display()));
            assert!(typed.metadata.name.is_some());
            let errs = cel_errors(&v);
            assert!(errs.is_empty(), "{}: {errs:?}", path.display());
        }
    }
    assert!(
        seen >= 4,
        "expected an McpServer per seed scenario, found {seen}"
    );
}

#[test]
fn https_url_required_with_tls_settings() {
    assert_rejected(
        json!({"endpoint": {"url": "http://x.agents.svc:8080/mcp"}, "mtls": {"clients": [{"name": "gw"}]}}),
        "must be an https:// URL when spec.mtls",
    );
    assert_rejected(
        json!({"transport": "stdio", "trust": {"pinServerCertificate": true}}),
        "must be an https:// URL",
    );
    assert_accepted(
        json!({"endpoint": {"url": "https://x.agents.svc:8443/mcp/"}, "mtls": {"clients": [{"name": "gw"}]}}),
    );
}

#[test]
fn endpoint_required_for_http_transports() {
    assert_rejected(json!({"transport": "sse"}), "spec.endpoint.url is required");
    assert_accepted(json!({"transport": "stdio"}));
}

#[test]
fn renew_before_shorter_than_duration() {
    let url = json!({"url": "https://x.agents.svc/mcp"});
    assert_rejected(
        json!({"endpoint": url, "mtls": {"duration": "720h", "renewBefore": "720h"}}),
        "renewBefore must be shorter than spec.mtls.duration",
    );
    assert_rejected(
        json!({"endpoint": url, "mtls": {"renewBefore": "3000h"}}),
        "renewBefore must be shorter",
    );
    assert_accepted(json!({"endpoint": url, "mtls": {"duration": "2160h", "renewBefore": "720h"}}));
}

#[test]
fn env_names_are_c_identifiers() {
    assert_rejected(
        json!({"transport": "stdio", "env": [{"name": "1BAD", "value": "x"}]}),
        "C identifiers",
    );
    assert_rejected(
        json!({"transport": "stdio", "env": [{"name": "A-B", "value": "x"}]}),
        "C identifiers",
    );
    assert_rejected(
        json!({"transport": "stdio", "env": [{"name": "A=B", "value": "x"}]}),
        "C identifiers",
    );
    assert_accepted(json!({"transport": "stdio", "env": [{"name": "_OK_1", "value": "x"}]}));
}

#[test]
fn egress_entries_are_strict() {
    for bad in [
        "api.github.com",
        "api.github.com:0",
        "api.github.com:65536",
        "api.github.com:443 ",
        "api.github.com:443\nallow all",
        "\"api.github.com\":443",
        "{api}.github.com:443",
        "API.GITHUB.COM:443",
        "*.*.github.com:443",
        "*:443",
        "a.*.github.com:443",
        "10.0.0.0/33:443",
        "10.0.0.0/8",
        "ɡithub.com:443",
    ] {
        assert_rejected(
            json!({"transport": "stdio", "egress": {"allow": [bad]}}),
            "spec.egress.allow entries must be",
        );
    }
    assert_accepted(
        json!({"transport": "stdio", "egress": {"mode": "Enforce", "allow": [
            "api.github.com:443", "*.githubusercontent.com:443", "10.20.0.0/16:5432", "fd00::/8:443"
        ]}}),
    );
}

#[test]
fn trust_sources_need_exactly_one_kind() {
    assert_rejected(
        json!({"transport": "stdio", "trust": {"sources": [{}]}}),
        "exactly one of configMap or secret",
    );
    assert_rejected(
        json!({"transport": "stdio", "trust": {"sources": [{"configMap": {"name": "a"}, "secret": {"name": "b"}}]}}),
        "exactly one of configMap or secret",
    );
    assert_accepted(
        json!({"transport": "stdio", "trust": {"sources": [{"configMap": {"name": "corp-ca", "key": "ca.crt"}}]}}),
    );
}

#[test]
fn rotation_signal_settings_need_strategy_signal() {
    let base = json!({"endpoint": {"url": "https://x.agents.svc:8443/mcp/"}, "podSelector": {"matchLabels": {"app": "x"}}});
    let with = |rotation: Value| {
        let mut spec = base.clone();
        spec["rotation"] = rotation;
        spec
    };
    for (field, value) in [
        ("signal", json!("SIGHUP")),
        ("container", json!("server")),
        ("processName", json!("nginx: master")),
        ("handlesSignal", json!(true)),
        ("fallback", json!("RollingRestart")),
    ] {
        for strategy in [None, Some("RollingRestart"), Some("None")] {
            let mut rotation = json!({ field: value });
            if let Some(s) = strategy {
                rotation["strategy"] = json!(s);
            }
            assert_rejected(
                with(rotation),
                "apply only to strategy Signal: set spec.rotation.strategy: Signal, or remove them",
            );
        }
    }
    assert_accepted(with(json!({"strategy": "Signal"})));
    assert_accepted(with(json!({
        "strategy": "Signal", "signal": "SIGUSR2", "container": "server",
        "processName": "^nginx: master", "handlesSignal": true, "fallback": "RollingRestart"
    })));
    assert_accepted(with(json!({"strategy": "None"})));
}

#[test]
fn rotation_signal_needs_pods_with_a_listener() {
    let url = json!({"url": "https://x.agents.svc:8443/mcp/"});
    assert_rejected(
        json!({"endpoint": url, "rotation": {"strategy": "Signal"}}),
        "spec.rotation.strategy: Signal needs spec.podSelector",
    );
    assert_rejected(
        json!({"transport": "stdio", "podSelector": {"matchLabels": {"app": "x"}}, "rotation": {"strategy": "Signal"}}),
        "a stdio server has no listener to reload",
    );
    // The other strategies need neither.
    assert_accepted(json!({"endpoint": url, "rotation": {"strategy": "RollingRestart"}}));
    assert_accepted(json!({"transport": "stdio", "rotation": {"strategy": "None"}}));
}

#[test]
fn rotation_enums_are_closed() {
    let schema = crd_schema();
    let rotation = &schema["properties"]["spec"]["properties"]["rotation"]["properties"];
    assert_eq!(
        rotation["signal"]["enum"],
        json!(["SIGHUP", "SIGUSR1", "SIGUSR2"])
    );
    assert_eq!(
        rotation["fallback"]["enum"],
        json!(["None", "RollingRestart"])
    );
    assert_eq!(
        rotation["strategy"]["enum"],
        json!(["RollingRestart", "None", "Signal"])
    );
    // The typed view reads the defaults.
    let spec: mcptrust::api::RotationSpec =
        serde_json::from_value(json!({"strategy": "Signal"})).expect("rotation");
    assert_eq!(spec.signal_or_default().as_str(), "SIGHUP");
    assert_eq!(spec.signal_or_default().number(), 1);
    assert_eq!(
        spec.fallback_or_default(),
        mcptrust::api::RotationFallback::None
    );
    assert_eq!(
        mcptrust::api::ReloadSignal::parse("usr2"),
        Some(mcptrust::api::ReloadSignal::Sigusr2)
    );
    assert_eq!(mcptrust::api::ReloadSignal::parse("SIGTERM"), None);
}

#[test]
fn no_proxy_rejects_star_prefix() {
    assert_rejected(
        json!({"transport": "stdio", "proxy": {"noProxy": ["*.corp.example"]}}),
        "write .example.com instead",
    );
}

/// Every CEL rule of the CRD compiles, uses only variables a CRD rule may use, and has no
/// unbounded list or string that would blow the API server's cost budget (kube-cel's static
/// analysis, a coarse model of the API server's estimator).
#[test]
fn cel_rules_compile_and_stay_within_budget() {
    fn walk(node: &Value, path: &str, found: &mut Vec<String>, problems: &mut Vec<String>) {
        if let Some(rules) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            let compiled = kube_cel::compile_schema(node);
            for r in rules {
                let rule = r["rule"].as_str().expect("rule");
                found.push(format!("{path}: {rule}"));
                if kube_cel::cel::Program::compile(rule).is_err() {
                    problems.push(format!("{path}: does not compile: {rule}"));
                }
                for w in
                    kube_cel::analyze_rule(rule, &compiled, kube_cel::ScopeContext::CrdValidation)
                {
                    // kube-cel's scope check does not know macro-bound variables
                    // (`self.all(e, ...)`); only report a variable the rule does not bind.
                    let bound = bound_variables(rule);
                    if w.kind == kube_cel::WarningKind::WrongScope
                        && bound
                            .iter()
                            .any(|v| w.message.contains(&format!("variable '{v}'")))
                    {
                        continue;
                    }
                    problems.push(format!("{path}: {:?}: {}", w.kind, w.message));
                }
            }
        }
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), found, problems);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{path}[]"), found, problems);
        }
    }
    let mut found = Vec::new();
    let mut problems = Vec::new();
    walk(&crd_schema(), "", &mut found, &mut problems);
    assert!(
        found.len() >= 15,
        "expected the CRD's rules, found {found:?}"
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Variables bound by CEL macros in `rule` (`x` in `list.all(x, ...)`).
fn bound_variables(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    for mac in [".all(", ".exists(", ".exists_one(", ".map(", ".filter("] {
        for (i, _) in rule.match_indices(mac) {
            let rest = &rule[i + mac.len()..];
            if let Some((var, _)) = rest.split_once(',') {
                let var = var.trim();
                if !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    out.push(var.to_string());
                }
            }
        }
    }
    out
}
