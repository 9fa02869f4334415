//! The chart's alerts and dashboard against the operator's metrics:
//!
//! - `promtool check rules` accepts charts/mcptrust/files/prometheus-rules.yaml and
//!   `promtool test rules tests/fixtures/alerts-test.yaml` fires each alert on series shaped
//!   like the operator's (and not before its time). promtool is in Debian's `prometheus`
//!   package; without it the test is skipped, except under `MCPTRUST_E2E_REQUIRED=1`
//!   (CI), where it fails;
//! - every dashboard query parses as PromQL (promtool, as recording rules);
//! - every alert is unit-tested and has a runbook section in docs/runbooks.md;
//! - every metric the rules and the dashboard query is registered by the operator's real
//!   registry, rendered after recording a realistic mTLS McpServer;
//! - the metrics table of docs/observability.md lists every metric the registry exports.

#[path = "common/metric_names.rs"]
mod metric_names;
#[path = "common/skip.rs"]
mod skip;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use mcptrust::api::McpServer;
use mcptrust::controller::ControllerMetrics;
use mcptrust::controller::metrics::ServerSnapshot;
use mcptrust::metrics::Metrics;
use mcptrust::pki::issue::IssueReason;
use serde_json::json;

const TESTS: &str = "tests/fixtures/alerts-test.yaml";

/// promtool from PATH; `None` (after saying how to get it) when missing, a failure when
/// `MCPTRUST_E2E_REQUIRED=1`.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        skip::skip_or_fail(
            "promtool",
            "apt-get install prometheus (Debian), or put promtool on PATH",
        );
    }
    found
}

fn run(tool: &PathBuf, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(metric_names::root())
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_the_rules_and_fires_each_alert() {
    let Some(tool) = promtool() else { return };
    let version = run(&tool, &["--version"]);
    eprintln!("{}", version.lines().next().unwrap_or_default());
    let check = run(&tool, &["check", "rules", metric_names::RULES]);
    let n = metric_names::rule_exprs().len();
    assert!(
        check.contains(&format!("SUCCESS: {n} rules found")),
        "{check}"
    );
    let test = run(&tool, &["test", "rules", TESTS]);
    assert!(test.contains("SUCCESS"), "{test}");
}

/// Grafana's dashboard queries parse as PromQL: promtool checks them as the expressions of
/// recording rules in a scratch file (Grafana's `$__rate_interval` taken as 5m).
#[test]
fn promtool_parses_every_dashboard_query() {
    let Some(tool) = promtool() else { return };
    let exprs = metric_names::dashboard_exprs();
    assert!(exprs.len() >= 20, "{exprs:?}");
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, e))| {
            json!({"record": format!("dashboard:query_{i}"), "expr": e.replace("$__rate_interval", "5m")})
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard-queries.yaml");
    // JSON is YAML: promtool reads it as a rule file.
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .expect("write");
    let out = run(
        &tool,
        &["check", "rules", file.to_str().expect("utf8 path")],
    );
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{out}"
    );
}

#[test]
fn every_alert_is_unit_tested_and_has_a_runbook() {
    let tests: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(metric_names::root().join(TESTS)).expect("alert tests"),
    )
    .expect("alert tests parse");
    let mut fired = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for a in t["alert_rule_test"].as_array().expect("alert_rule_test") {
            if a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()) {
                fired.insert(a["alertname"].as_str().expect("alertname").to_string());
            }
        }
    }
    let runbooks = std::fs::read_to_string(metric_names::root().join("docs/runbooks.md"))
        .expect("docs/runbooks.md");
    let rules: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(metric_names::root().join(metric_names::RULES)).expect("rules"),
    )
    .expect("rules parse");
    let mut alerts = 0;
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("alert");
            alerts += 1;
            assert!(fired.contains(name), "{name} never fires in {TESTS}");
            let ann = &rule["annotations"];
            for key in ["summary", "description"] {
                assert!(
                    ann[key].as_str().is_some_and(|s| !s.is_empty()),
                    "{name}: {key}"
                );
            }
            let desc = ann["description"].as_str().unwrap_or_default();
            if group["name"] == "mcptrust.mcpservers" {
                assert!(
                    desc.contains("{{ $labels.namespace }}/{{ $labels.name }}"),
                    "{name}: the description names the McpServer"
                );
            }
            let anchor = name.to_ascii_lowercase();
            assert_eq!(
                ann["runbook_url"].as_str(),
                Some(format!("RUNBOOK_URL_BASE#{anchor}").as_str()),
                "{name}"
            );
            assert!(
                runbooks.contains(&format!("\n## {name}\n")),
                "docs/runbooks.md has no runbook heading `## {name}`"
            );
        }
    }
    assert_eq!(alerts, 7, "the issue's seven alerts");
}

/// An mTLS McpServer with a client in another namespace and a probed endpoint, as the
/// controller leaves it after reconciling.
fn reconciled_server() -> McpServer {
    serde_json::from_value(json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": "github", "namespace": "agents", "generation": 1},
        "spec": {
            "endpoint": {"url": "https://github.agents.svc:8443/mcp"},
            "podSelector": {"matchLabels": {"app": "github"}},
            "trust": {"sources": [{"configMap": {"name": "corp-ca"}}]},
            "mtls": {"clients": [{"name": "gateway", "namespace": "gateway"}]}
        },
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {"type": "TrustBundleReady", "status": "True", "reason": "BundleReady", "message": "ok", "lastTransitionTime": "2026-11-21T00:00:00Z"},
                {"type": "CertificatesReady", "status": "True", "reason": "Issued", "message": "ok", "lastTransitionTime": "2026-11-21T00:00:00Z"},
                {"type": "EndpointVerified", "status": "True", "reason": "Verified", "message": "ok", "lastTransitionTime": "2026-11-21T00:00:00Z"},
                {"type": "EgressPolicyReady", "status": "True", "reason": "NotRequested", "message": "ok", "lastTransitionTime": "2026-11-21T00:00:00Z"},
                {"type": "Ready", "status": "True", "reason": "Ready", "message": "ok", "lastTransitionTime": "2026-11-21T00:00:00Z"}
            ],
            "trustBundle": {"configMapName": "mcptrust-github-trust", "sha256": "ab", "certificates": 1},
            "serverCertificate": {"secretName": "github-server-tls", "notAfter": "2027-02-19T00:00:00Z", "renewalTime": "2027-01-20T00:00:00Z"},
            "clientCertificates": [{"name": "gateway", "namespace": "gateway", "secretName": "github-agents-gateway-client-tls", "notAfter": "2027-02-19T00:00:00Z", "renewalTime": "2027-01-20T00:00:00Z"}],
            "endpoint": {"lastProbeTime": "2026-11-21T00:00:00Z", "peer": {"subject": "CN=github", "issuer": "CN=mcptrust federation CA", "notAfter": "2027-02-19T00:00:00Z"}}
        }
    }))
    .expect("McpServer")
}

/// The operator's registry (the webhook's and the controller's metrics, as `mcptrust run`
/// builds it), after recording what reconciling [`reconciled_server`] records.
fn operator_metrics() -> String {
    let metrics = Metrics::new();
    let controller = ControllerMetrics::default();
    metrics.register_with(|r| controller.register(r));
    metrics.observe_admission("patched", Duration::from_micros(80));
    metrics.observe_tls_reload(true);
    metrics.set_tls_not_after(1_803_000_000);
    controller.set_leader(true);
    drop(controller.reconcile_started());
    controller.reconcile_failed("Kube");
    controller.set_federation_ca_not_after(2_000_000_000);
    controller.set_webhook_ca_not_after(1_900_000_000);
    controller.certificate_issued("server", IssueReason::DoesNotExist);
    controller.certificate_issued("client", IssueReason::DoesNotExist);
    controller.rolling_restart("Deployment");
    controller.probe_finished(
        "agents",
        "github",
        true,
        "Verified",
        Duration::from_millis(40),
    );
    let server = reconciled_server();
    let status = server.status.clone().expect("status");
    let ca = mcptrust::pki::issue::CertificateAuthority::generate("corp CA", 1_795_000_000, 86_400)
        .expect("CA");
    let bundle = mcptrust::pki::assemble(
        &[mcptrust::pki::CaInput::new(
            "ConfigMap agents/corp-ca",
            ca.cert_pem.clone().into_bytes(),
        )],
        &mcptrust::pki::BundleOptions {
            include_system_roots: false,
            now_unix: 1_795_000_100,
        },
    )
    .expect("bundle");
    controller.record_server(&ServerSnapshot::from_status(
        "agents",
        "github",
        &status,
        Some(&bundle),
    ));
    metrics.encode()
}

#[test]
fn rules_and_dashboard_query_only_exported_metrics() {
    let text = operator_metrics();
    let referenced = metric_names::referenced_metric_names();
    assert!(referenced.len() >= 15, "{referenced:?}");
    let missing = metric_names::missing_from(&text);
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\n{text}"
    );
    // The per-McpServer series the alerts select on are there with the labels they use.
    for needle in [
        r#"mcptrust_mcpserver_status_condition{namespace="agents",name="github",type="Ready",status="True"} 1"#,
        r#"mcptrust_certificate_renewal_timestamp_seconds{namespace="agents",name="github",role="client",secret="github-agents-gateway-client-tls",secret_namespace="gateway"}"#,
        r#"mcptrust_endpoint_probe_result{namespace="agents",name="github",reason="Verified"} 1"#,
        r#"mcptrust_trust_bundle_private_ca_expiration_timestamp_seconds{namespace="agents",name="github"} 1795086400"#,
    ] {
        assert!(text.contains(needle), "{needle}\n{text}");
    }
}

#[test]
fn the_docs_list_every_metric() {
    let text = operator_metrics();
    let readme = std::fs::read_to_string(metric_names::root().join("docs/observability.md"))
        .expect("docs/observability.md");
    let families: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|r| {
            let (name, kind) = r.split_once(' ').expect("TYPE");
            if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            }
        })
        .collect();
    for f in &families {
        assert!(
            readme.contains(&format!("| `{f}` |")),
            "the metrics table of docs/observability.md lacks `{f}`"
        );
    }
}
