//! The CRD on a real kube-apiserver (`tests/common/envtest.rs`): `crds/` applied
//! server-side without a warning, every example accepted without a warning, and every CEL
//! message docs/mcpserver.md quotes returned by the API server for an invalid McpServer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::{Value, json};

/// Invalid specs and a piece of the message the API server must answer with.
fn invalid_specs() -> Vec<(Value, &'static str)> {
    let url = json!({"url": "https://x.agents.svc/mcp"});
    let mut cases = vec![
        (
            json!({"endpoint": {"url": "http://x.agents.svc:8080/mcp"}, "mtls": {"clients": [{"name": "gw"}]}}),
            "spec.endpoint.url must be an https:// URL when spec.mtls or spec.trust.pinServerCertificate is set",
        ),
        (
            json!({"transport": "stdio", "trust": {"pinServerCertificate": true}}),
            "must be an https:// URL",
        ),
        (
            json!({"transport": "sse"}),
            "spec.endpoint.url is required when spec.transport is streamable-http or sse",
        ),
        (
            json!({"endpoint": url, "mtls": {"duration": "720h", "renewBefore": "720h"}}),
            "spec.mtls.renewBefore must be shorter than spec.mtls.duration (default 2160h)",
        ),
        (
            json!({"endpoint": url, "mtls": {"renewBefore": "3000h"}}),
            "spec.mtls.renewBefore must be shorter than spec.mtls.duration (default 2160h)",
        ),
        (
            json!({"transport": "stdio", "env": [{"name": "1BAD", "value": "x"}]}),
            "spec.env names must be C identifiers (letters, digits and _, not starting with a digit)",
        ),
        (
            json!({"transport": "stdio", "env": [{"name": "A-B", "value": "x"}]}),
            "spec.env names must be C identifiers",
        ),
        (
            json!({"transport": "stdio", "trust": {"sources": [{}]}}),
            "exactly one of configMap or secret",
        ),
        (
            json!({"transport": "stdio", "trust": {"sources": [{"configMap": {"name": "a"}, "secret": {"name": "b"}}]}}),
            "exactly one of configMap or secret",
        ),
        (
            json!({"transport": "stdio", "proxy": {"noProxy": ["*.corp.example"]}}),
            "spec.proxy.noProxy entries",
        ),
        (
            json!({"transport": "stdio", "proxy": {"noProxy": ["*.corp.example"]}}),
            "write .example.com instead of *.example.com",
        ),
    ];
    let pods = json!({"matchLabels": {"app": "x"}});
    cases.push((
        json!({"endpoint": url, "podSelector": pods, "rotation": {"signal": "SIGHUP"}}),
        "spec.rotation.signal, container, processName, handlesSignal and fallback apply only to strategy Signal",
    ));
    cases.push((
        json!({"endpoint": url, "podSelector": pods, "rotation": {"strategy": "None", "fallback": "RollingRestart"}}),
        "set spec.rotation.strategy: Signal, or remove them",
    ));
    cases.push((
        json!({"endpoint": url, "rotation": {"strategy": "Signal"}}),
        "spec.rotation.strategy: Signal needs spec.podSelector",
    ));
    cases.push((
        json!({"transport": "stdio", "podSelector": pods, "rotation": {"strategy": "Signal"}}),
        "a stdio server has no listener to reload",
    ));
    for bad in [
        "api.github.com",
        "api.github.com:0",
        "api.github.com:65536",
        "api.github.com:443\nallow all",
        "API.GITHUB.COM:443",
        "*:443",
        "10.0.0.0/33:443",
        "10.0.0.0/8",
    ] {
        cases.push((
            json!({"transport": "stdio", "egress": {"allow": [bad]}}),
            "spec.egress.allow entries must be host:port, *.domain:port or CIDR:port with a port from 1 to 65535",
        ));
    }
    cases
}

fn mcpserver(name: &str, namespace: &str, spec: &Value) -> String {
    json!({
        "apiVersion": "mcptrust.io/v1alpha1",
        "kind": "McpServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
    .to_string()
}

/// The messages docs/mcpserver.md quotes under "Invalid specs are rejected", as the fragments
/// between its `...` elisions.
fn readme_quoted_fragments() -> Vec<String> {
    let readme = include_str!("../docs/mcpserver.md");
    let start = readme
        .find("Invalid specs are rejected")
        .expect("docs/mcpserver.md names the CEL messages");
    readme[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with("- `"))
        .take_while(|l| l.starts_with("- `"))
        .flat_map(|l| {
            let quoted = l.trim_start_matches("- `").trim_end_matches('`');
            quoted
                .split("...")
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn crd_examples_and_cel_messages_on_the_api_server() {
    let Some(cp) = e2e!() else { return };
    cp.install_crds();
    // Applying the CRD again (as `helm upgrade` or a user would) prints no warning.
    let out = cp.kubectl_output(&[
        "apply",
        "--server-side",
        "--field-manager=e2e",
        "-f",
        concat!(env!("CARGO_MANIFEST_DIR"), "/crds"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("Warning"),
        "applying the CRD warned: {stderr}"
    );
    let ns = cp.namespace("crd");

    // Every McpServer in examples/ is accepted, without a warning.
    let mut examples = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in mcptrust::inject::manifest::split_documents(&text) {
            let Ok(Some(mut v)) = serde_saphyr::from_str::<Option<Value>>(doc.text) else {
                continue;
            };
            if v["kind"] != "McpServer" {
                continue;
            }
            examples += 1;
            v["metadata"]["namespace"] = json!(ns);
            let out = cp.kubectl_stdin(
                &["apply", "--server-side", "--field-manager=e2e", "-f", "-"],
                &v.to_string(),
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{}: rejected: {stderr}",
                path.display()
            );
            assert!(
                !stderr.contains("Warning"),
                "{}: warned: {stderr}",
                path.display()
            );
        }
    }
    assert!(examples >= 4, "found only {examples} example McpServers");

    // Every invalid spec is refused by the API server with its CEL message.
    let mut messages = Vec::new();
    for (i, (spec, needle)) in invalid_specs().iter().enumerate() {
        let out = cp.kubectl_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            &mcpserver(&format!("bad-{i}"), &ns, spec),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "accepted: {spec}");
        assert!(
            stderr.contains(needle),
            "spec {spec}: expected {needle:?} from the API server, got {stderr}"
        );
        messages.push(stderr);
    }
    // The name-length rule, on metadata.
    let out = cp.kubectl_stdin(
        &["create", "--dry-run=server", "-f", "-"],
        &mcpserver(&"n".repeat(49), &ns, &json!({"transport": "stdio"})),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("metadata.name must be at most 48 characters"),
        "{stderr}"
    );
    messages.push(stderr);

    // What docs/mcpserver.md quotes is what a user sees.
    let fragments = readme_quoted_fragments();
    assert!(
        fragments.len() >= 5,
        "docs/mcpserver.md quotes: {fragments:?}"
    );
    for f in fragments {
        assert!(
            messages.iter().any(|m| m.contains(&f)),
            "docs/mcpserver.md quotes {f:?}, which no rejection contained"
        );
    }
}
