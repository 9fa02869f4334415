//! Egress policy per McpServer (issue 7, seed 004): strict validation of
//! `spec.egress.allow` against a hostile corpus (and agreement with the CRD's CEL rule),
//! the pure NetworkPolicy and allow-list builders, the pod annotation, and mock-API
//! scenarios for each mode in the `ApiServerVerifier` style (the shared `tests/mock_api`:
//! every request asserted in order).

mod common;
mod mock_api;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::crd_schema;
use http::Method;
use ipnet::IpNet;
use kube::runtime::controller::Action;
use mcptrust::api::{EgressMode, McpServer};
use mcptrust::controller::egress::{
    self, EgressDefaults, EgressEntry, EntryError, allowlist_text, network_policy, parse_entry,
    proxy_plan, squid_conf, validate_entries,
};
use mcptrust::controller::{ControllerConfig, reconcile::reconcile};
use mcptrust::inject::{
    ANNOTATION_EGRESS_MODE, EgressConfig, InjectConfig, Injection, ProxyConfig, inject,
};
use mock_api::{Call, Verifier, condition, controller_config};
use serde_json::{Value, json};

/// 2026-11-21T00:00:00Z.
const NOW: i64 = 1_795_219_200;

// ---------------------------------------------------------------------------------------
// Validation.

fn host(name: &str, wildcard: bool, port: u16) -> EgressEntry {
    EgressEntry::Host {
        name: name.into(),
        wildcard,
        port,
    }
}

fn cidr(net: &str, port: u16) -> EgressEntry {
    EgressEntry::Cidr {
        net: net.parse().expect("net"),
        port,
    }
}

#[test]
fn good_entries_parse_to_canonical_form() {
    let cases = [
        ("api.github.com:443", host("api.github.com", false, 443)),
        (
            "*.githubusercontent.com:443",
            host("githubusercontent.com", true, 443),
        ),
        ("localhost:8080", host("localhost", false, 8080)),
        (
            "xn--80ak6aa92e.com:443",
            host("xn--80ak6aa92e.com", false, 443),
        ),
        ("a.com:0443", host("a.com", false, 443)),
        ("10.20.0.0/16:5432", cidr("10.20.0.0/16", 5432)),
        ("fd00::/8:443", cidr("fd00::/8", 443)),
        ("FD00::/8:443", cidr("fd00::/8", 443)),
        ("2001:db8::/32:8443", cidr("2001:db8::/32", 8443)),
        ("10.1.2.3:443", cidr("10.1.2.3/32", 443)),
        ("10.1.2.3/32:65535", cidr("10.1.2.3/32", 65535)),
    ];
    for (input, want) in cases {
        assert_eq!(parse_entry(input), Ok(want.clone()), "{input}");
    }
    assert_eq!(
        parse_entry("*.githubusercontent.com:443")
            .expect("ok")
            .to_string(),
        "*.githubusercontent.com:443"
    );
    assert_eq!(
        parse_entry("FD00::/8:443").expect("ok").to_string(),
        "fd00::/8:443"
    );
}

/// Entries that must be rejected, with a piece of the message each must carry.
const HOSTILE: &[(&str, &str)] = &[
    // Injection attempts (seed 004: entries were interpolated into a sandbox config).
    (
        "api.github.com:443\"; allow all",
        "a double quote at character 19",
    ),
    ("api.github.com:443'; allow all", "a single quote"),
    ("a.com:443}", "a brace (})"),
    ("{a}.com:443", "a brace ({)"),
    ("api.github.com:443\nallow all", "a newline"),
    (
        "api.github.com:443\r\nhttp_access allow all",
        "a carriage return",
    ),
    ("api.github.com:443\thttp_access", "a tab"),
    ("api.github.com :443", "a space"),
    ("api.github.com:443 ", "a space"),
    ("a.com:443;b.com:443", "';'"),
    ("a.com:443,b.com:443", "','"),
    ("$(curl evil.sh):443", "'$'"),
    ("a.com:443#x", "a destination, not a URL"),
    ("a.com:443\u{0}", "the control character U+0000"),
    (
        "https://api.github.com/x",
        "not a URL: write api.github.com:443",
    ),
    ("[fd00::1]:443", "without brackets"),
    ("a.com:+443", "'+'"),
    // Unicode look-alikes.
    ("\u{0430}pi.github.com:443", "U+0430"),
    ("\u{0261}ithub.com:443", "U+0261"),
    ("api.github.com\u{FF1A}443", "U+FF1A"),
    ("api.github.com:\u{0664}43", "U+0664"),
    // Ports.
    ("api.github.com", "no port: write api.github.com:443"),
    (
        "api.github.com:0",
        "port \"0\" is not a number from 1 to 65535",
    ),
    ("api.github.com:65536", "\"65536\""),
    ("api.github.com:-1", "\"-1\""),
    ("api.github.com:abc", "\"abc\""),
    ("api.github.com:", "\"\""),
    ("api.github.com:4430000", "\"4430000\""),
    ("api.github.com:443/path", "\"443/path\""),
    // Wildcards.
    ("*", "a bare * would allow every host"),
    ("*:443", "a bare * would allow every host"),
    ("*.*.x:443", "write *.x:443"),
    ("a.*.b:443", "write *.b:443"),
    (
        "*x.com:443",
        "only allowed once, as the whole leftmost label",
    ),
    ("x*.com:443", "only allowed once"),
    ("**.com:443", "only allowed once"),
    ("*.:443", "no domain after"),
    ("*.10.0.0.1:443", "neither a hostname"),
    // Hostnames.
    ("API.GITHUB.COM:443", "lowercase: write api.github.com:443"),
    ("Api.github.com:443", "lowercase"),
    ("api..github.com:443", "empty label"),
    (".github.com:443", "empty label"),
    ("github.com.:443", "empty label"),
    ("-api.github.com:443", "starts or ends with '-'"),
    ("api-.github.com:443", "starts or ends with '-'"),
    ("999.1.1.1:443", "neither a hostname"),
    ("1.2.3:443", "neither a hostname"),
    (":443", "nothing before the port"),
    ("", "empty"),
    // CIDRs.
    ("10.0.0.0/33:443", "\"10.0.0.0/33\" is not a CIDR"),
    ("10.0.0.0/8", "no port: write 10.0.0.0/8:443"),
    (
        "10.0.0.1/8:443",
        "write 10.0.0.0/8:443 for the whole network, or 10.0.0.1/32:443",
    ),
    ("fd00::1/8:443", "write fd00::/8:443"),
    ("fd00::/129:443", "is not a CIDR"),
    ("010.0.0.0/8:443", "is not a CIDR"),
    ("10.0.0.0/:443", "is not a CIDR"),
    ("10.0.0.0/8/8:443", "is not a CIDR"),
    ("10.0.0.0/08:443", "is not a CIDR"),
    (
        "fd00::1:443",
        "IPv6 addresses need a prefix: write fd00::1/128:443",
    ),
    ("fd00:::443", "write fd00::/128:443"),
    ("fd00::g:443", "neither a hostname nor a CIDR"),
];

#[test]
fn hostile_corpus_is_rejected_with_advice() {
    for (input, needle) in HOSTILE {
        match parse_entry(input) {
            Ok(e) => panic!("{input:?} was accepted as {e:?}"),
            Err(err) => {
                let msg = err.to_string();
                assert!(msg.contains(needle), "{input:?}: {msg:?} lacks {needle:?}");
            }
        }
    }
    let long = format!("{}.com:443", "a".repeat(64));
    assert!(
        parse_entry(&long)
            .expect_err("long label")
            .to_string()
            .contains("longer than 63")
    );
    let huge = format!("{}.com:443", "a.".repeat(130));
    assert_eq!(parse_entry(&huge), Err(EntryError::TooLong));
}

#[test]
fn messages_name_the_index_and_escape_the_entry() {
    let allow = vec![
        "api.github.com:443".to_string(),
        "api.github.com:443\"; allow all".to_string(),
        "*:443".to_string(),
        "api.github.com:443".to_string(),
    ];
    let errs = validate_entries(&allow).expect_err("invalid");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("spec.egress.allow[1] \"api.github.com:443\\\"; allow all\": "),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("spec.egress.allow[2] \"*:443\""),
        "{}",
        errs[1]
    );
    let newline =
        validate_entries(&["a.com:443\nhttp_access allow all".to_string()]).expect_err("invalid");
    assert!(
        !newline[0].contains('\n'),
        "the message is one line: {newline:?}"
    );
    // Duplicates are dropped, order kept.
    let ok = validate_entries(&[
        "b.com:443".to_string(),
        "a.com:443".to_string(),
        "b.com:443".to_string(),
    ])
    .expect("valid");
    assert_eq!(
        ok,
        vec![host("b.com", false, 443), host("a.com", false, 443)]
    );
}

fn crd_accepts(schema: &Value, validator: &kube_cel::Validator, entry: &str) -> bool {
    let obj = json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": "x", "namespace": "agents"},
        "spec": {"transport": "stdio", "egress": {"allow": [entry]}},
    });
    validator.validate(schema, &obj, None).is_ok()
}

/// The controller is never looser than the CRD, and stricter only where documented.
#[test]
fn controller_agrees_with_the_crd_rule() {
    let schema = crd_schema();
    let validator = kube_cel::Validator::new();
    // The CRD's rule accepts these; the controller rejects them: numeric top-level labels
    // that are no IPv4 address, CIDRs with bits set beyond the prefix, and leading zeros
    // (isCIDR accepts all three).
    let stricter = [
        "*.10.0.0.1:443",
        "999.1.1.1:443",
        "1.2.3:443",
        "10.0.0.1/8:443",
        "fd00::1/8:443",
        "010.0.0.0/8:443",
        "10.0.0.0/08:443",
    ];
    let good = [
        "api.github.com:443",
        "*.githubusercontent.com:443",
        "10.20.0.0/16:5432",
        "fd00::/8:443",
        "10.1.2.3:443",
        "localhost:8080",
    ];
    for e in good {
        assert!(crd_accepts(&schema, &validator, e), "CRD rejects {e}");
        assert!(parse_entry(e).is_ok(), "controller rejects {e}");
    }
    let crd_accepted: Vec<&str> = HOSTILE
        .iter()
        .map(|(e, _)| *e)
        .filter(|e| crd_accepts(&schema, &validator, e))
        .collect();
    assert_eq!(
        crd_accepted, stricter,
        "the CRD accepts exactly these entries of the hostile corpus, which the controller rejects"
    );
}

// ---------------------------------------------------------------------------------------
// The NetworkPolicy builder.

fn server(name: &str, spec: Value, status: Option<Value>) -> McpServer {
    let mut v = json!({
        "apiVersion": "mcptrust.io/v1alpha1",
        "kind": "McpServer",
        "metadata": {"name": name, "namespace": "agents", "uid": "7c1e6c2e-0000-4000-8000-000000000004", "generation": 2},
        "spec": spec,
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    serde_json::from_value(v).expect("McpServer")
}

fn egress_spec(mode: &str, allow: &[&str], proxy: Option<&str>) -> Value {
    let mut spec = json!({
        "transport": "stdio",
        "podSelector": {"matchLabels": {"app": "agent-sandbox"}},
        "egress": {"mode": mode, "allow": allow},
    });
    if let Some(p) = proxy {
        spec["proxy"] = json!({"httpsProxy": p, "httpProxy": p});
    }
    spec
}

fn np_json(s: &McpServer, allow: &[&str], defaults: &EgressDefaults) -> Value {
    let entries =
        validate_entries(&allow.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("valid");
    serde_json::to_value(network_policy(s, &entries, defaults).expect("policy")).expect("json")
}

fn dns_rule() -> Value {
    json!({
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    })
}

fn tcp_rule(to: Value, port: u16) -> Value {
    json!({"to": [to], "ports": [{"protocol": "TCP", "port": port}]})
}

#[test]
fn policy_allows_dns_the_proxy_by_ip_and_cidrs_with_ports() {
    let s = server(
        "sandbox-tools",
        egress_spec(
            "Enforce",
            &[
                "api.github.com:443",
                "10.20.0.0/16:5432",
                "fd00::/8:443",
                "10.1.2.3:8443",
            ],
            Some("http://10.200.0.1:3128"),
        ),
        None,
    );
    let np = np_json(
        &s,
        &[
            "api.github.com:443",
            "10.20.0.0/16:5432",
            "fd00::/8:443",
            "10.1.2.3:8443",
        ],
        &EgressDefaults::default(),
    );
    assert_eq!(np["metadata"]["name"], "mcptrust-sandbox-tools-egress");
    assert_eq!(np["metadata"]["namespace"], "agents");
    assert_eq!(np["metadata"]["ownerReferences"][0]["kind"], "McpServer");
    assert_eq!(np["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        np["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "mcptrust"
    );
    assert_eq!(np["metadata"]["labels"]["mcptrust.io/component"], "egress");
    assert_eq!(
        np["spec"]["podSelector"],
        json!({"matchLabels": {"app": "agent-sandbox"}})
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Egress"]));
    assert!(np["spec"].get("ingress").is_none(), "ingress is untouched");
    assert_eq!(
        np["spec"]["egress"],
        json!([
            dns_rule(),
            tcp_rule(json!({"ipBlock": {"cidr": "10.200.0.1/32"}}), 3128),
            tcp_rule(json!({"ipBlock": {"cidr": "10.20.0.0/16"}}), 5432),
            tcp_rule(json!({"ipBlock": {"cidr": "fd00::/8"}}), 443),
            tcp_rule(json!({"ipBlock": {"cidr": "10.1.2.3/32"}}), 8443),
        ]),
        "hostnames are not in the policy: only the proxy reaches them"
    );
}

#[test]
fn empty_allow_list_means_only_dns_and_the_proxy() {
    let s = enforce_via("http://10.200.0.1:3128");
    let np = np_json(&s, &[], &EgressDefaults::default());
    assert_eq!(
        np["spec"]["egress"],
        json!([
            dns_rule(),
            tcp_rule(json!({"ipBlock": {"cidr": "10.200.0.1/32"}}), 3128)
        ])
    );
    // Without any proxy: DNS only, deny all else.
    let s = server("s", egress_spec("Enforce", &[], None), None);
    let np = np_json(&s, &[], &EgressDefaults::default());
    assert_eq!(np["spec"]["egress"], json!([dns_rule()]));
}

fn selector_defaults() -> EgressDefaults {
    EgressDefaults {
        config: EgressConfig {
            proxy_namespace_selector: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                "egress".to_string(),
            )])),
            proxy_pod_selector: Some(BTreeMap::from([("app".to_string(), "squid".to_string())])),
            proxy_port: Some(3129),
            dns_pod_labels: BTreeMap::from([("k8s-app".to_string(), "coredns".to_string())]),
            dns_cidrs: vec!["169.254.20.10/32".parse().expect("net")],
            ..Default::default()
        },
        proxy: ProxyConfig {
            https_proxy: Some("http://egress-proxy.egress.svc:3128".into()),
            service_cidrs: vec!["10.96.0.0/12".parse().expect("net")],
            ..Default::default()
        },
    }
}

#[test]
fn operator_proxy_by_selectors_and_configurable_dns() {
    let d = selector_defaults();
    let s = server(
        "s",
        egress_spec("Enforce", &["api.github.com:443"], None),
        None,
    );
    let np = np_json(&s, &["api.github.com:443"], &d);
    assert_eq!(
        np["spec"]["egress"],
        json!([
            {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                     "podSelector": {"matchLabels": {"k8s-app": "coredns"}}},
                    {"ipBlock": {"cidr": "169.254.20.10/32"}}],
             "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            tcp_rule(json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "egress"}},
                            "podSelector": {"matchLabels": {"app": "squid"}}}), 3129),
        ]),
        "proxyPort (the pods' port) wins over the Service URL's port"
    );
    let plan = proxy_plan(&s, &d);
    assert!(plan.usable(), "{plan:?}");
    // Operator proxy by CIDRs.
    let mut d2 = d.clone();
    d2.config.proxy_namespace_selector = None;
    d2.config.proxy_pod_selector = None;
    d2.config.proxy_port = None;
    d2.config.proxy_cidrs = vec!["192.168.7.0/29".parse::<IpNet>().expect("net")];
    let np = np_json(&s, &[], &d2);
    assert_eq!(
        np["spec"]["egress"][1],
        tcp_rule(json!({"ipBlock": {"cidr": "192.168.7.0/29"}}), 3128)
    );
}

#[test]
fn proxies_a_policy_cannot_name_are_reported() {
    // A hostname proxy without selectors in the config.
    let d = EgressDefaults {
        proxy: ProxyConfig {
            https_proxy: Some("http://egress-proxy.mcptrust.svc:3128".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = server(
        "s",
        egress_spec("Enforce", &["api.github.com:443"], None),
        None,
    );
    let plan = proxy_plan(&s, &d);
    assert!(!plan.usable());
    assert!(plan.rules.is_empty());
    assert!(
        plan.problems[0].contains("names the host \"egress-proxy.mcptrust.svc\"")
            && plan.problems[0].contains("egress.proxyNamespaceSelector"),
        "{plan:?}"
    );
    // The McpServer's own hostname proxy: the operator's selectors describe another proxy.
    let s = enforce_via("http://my-proxy.agents.svc:3128");
    let plan = proxy_plan(&s, &selector_defaults());
    assert!(!plan.usable());
    assert!(
        plan.problems[0].contains("use the proxy's IP address"),
        "{plan:?}"
    );
    // A ClusterIP: NetworkPolicies see the pods behind it.
    let s = enforce_via("http://10.96.4.4:3128");
    let plan = proxy_plan(&s, &selector_defaults());
    assert!(plan.problems[0].contains("Service ClusterIP"), "{plan:?}");
    // No proxy at all.
    let plan = proxy_plan(&s_without_proxy(), &EgressDefaults::default());
    assert!(
        plan.problems[0].contains("no proxy is configured"),
        "{plan:?}"
    );
    // An IPv6 literal.
    let s = enforce_via("http://[fd00::5]:3128");
    let np = np_json(&s, &[], &EgressDefaults::default());
    assert_eq!(
        np["spec"]["egress"][1],
        tcp_rule(json!({"ipBlock": {"cidr": "fd00::5/128"}}), 3128)
    );
}

/// McpServer s enforcing an empty allow list through the proxy `proxy`.
fn enforce_via(proxy: &str) -> McpServer {
    server("s", egress_spec("Enforce", &[], Some(proxy)), None)
}

fn s_without_proxy() -> McpServer {
    server("s", egress_spec("Enforce", &[], None), None)
}

#[test]
fn no_policy_without_a_pod_selector() {
    let mut spec = egress_spec("Enforce", &[], None);
    spec.as_object_mut().expect("obj").remove("podSelector");
    assert!(
        network_policy(
            &server("s", spec.clone(), None),
            &[],
            &EgressDefaults::default()
        )
        .is_none()
    );
    spec["podSelector"] = json!({});
    assert!(
        network_policy(
            &server("s", spec.clone(), None),
            &[],
            &EgressDefaults::default()
        )
        .is_none(),
        "an empty selector selects every pod"
    );
    spec["podSelector"] = json!({"matchLabels": {}});
    assert!(network_policy(&server("s", spec, None), &[], &EgressDefaults::default()).is_none());
}

// ---------------------------------------------------------------------------------------
// The allow-list for the proxy.

#[test]
fn allowlist_and_squid_snippet() {
    let entries = validate_entries(&[
        "login.microsoftonline.com:443".to_string(),
        "*.githubusercontent.com:443".to_string(),
        "raw.githubusercontent.com:443".to_string(),
        "githubusercontent.com:443".to_string(),
        "api.github.com:443".to_string(),
        "db.internal.example:5432".to_string(),
        "10.20.0.0/16:5432".to_string(),
    ])
    .expect("valid");
    assert_eq!(
        allowlist_text(&entries),
        "*.githubusercontent.com:443\napi.github.com:443\ndb.internal.example:5432\ngithubusercontent.com:443\nlogin.microsoftonline.com:443\nraw.githubusercontent.com:443\n"
    );
    let conf = squid_conf("agents", "sandbox-tools", EgressMode::Enforce, &entries);
    let rules: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        rules,
        [
            "acl mcptrust_agents_sandbox-tools_443 dstdomain .githubusercontent.com",
            "acl mcptrust_agents_sandbox-tools_443 dstdomain api.github.com",
            "acl mcptrust_agents_sandbox-tools_443 dstdomain login.microsoftonline.com",
            "acl mcptrust_agents_sandbox-tools_443_port port 443",
            "http_access allow mcptrust_agents_sandbox-tools_443_port mcptrust_agents_sandbox-tools_443",
            "acl mcptrust_agents_sandbox-tools_5432 dstdomain db.internal.example",
            "acl mcptrust_agents_sandbox-tools_5432_net dst 10.20.0.0/16",
            "acl mcptrust_agents_sandbox-tools_5432_port port 5432",
            "http_access allow mcptrust_agents_sandbox-tools_5432_port mcptrust_agents_sandbox-tools_5432",
            "http_access allow mcptrust_agents_sandbox-tools_5432_port mcptrust_agents_sandbox-tools_5432_net",
        ],
        "names covered by .githubusercontent.com are left out:\n{conf}"
    );
    assert!(conf.contains("spec.egress.mode: Enforce"));
    assert!(
        rules.iter().all(|l| !l.contains("deny")),
        "the snippet only allows"
    );
    let empty = squid_conf("agents", "s", EgressMode::Audit, &[]);
    assert!(empty.lines().all(|l| l.starts_with('#')), "{empty}");
    assert_eq!(allowlist_text(&[]), "");
}

#[test]
fn allowlist_config_map_shape() {
    let s = server(
        "sandbox-tools",
        egress_spec("Audit", &["api.github.com:443"], None),
        None,
    );
    let entries = vec![host("api.github.com", false, 443)];
    let cm = serde_json::to_value(egress::allowlist_config_map(
        &s,
        &entries,
        EgressMode::Audit,
    ))
    .expect("json");
    assert_eq!(
        cm["metadata"]["name"],
        "mcptrust-sandbox-tools-egress-allowlist"
    );
    assert_eq!(
        cm["metadata"]["annotations"][ANNOTATION_EGRESS_MODE],
        "Audit"
    );
    assert_eq!(
        cm["metadata"]["labels"]["mcptrust.io/component"],
        "egress-allowlist"
    );
    assert_eq!(
        cm["metadata"]["ownerReferences"][0]["name"],
        "sandbox-tools"
    );
    assert_eq!(cm["data"]["allowlist.txt"], "api.github.com:443\n");
    assert!(
        cm["data"]["squid.conf"]
            .as_str()
            .unwrap_or_default()
            .contains("dstdomain api.github.com")
    );
}

// ---------------------------------------------------------------------------------------
// Config and the pod annotation.

#[test]
fn operator_config_egress_section_has_defaults() {
    let cfg = InjectConfig::from_yaml("mountPath: /etc/mcptrust/trust\n").expect("config");
    assert_eq!(
        cfg.egress
            .dns_namespace_labels
            .get("kubernetes.io/metadata.name"),
        Some(&"kube-system".to_string())
    );
    assert_eq!(
        cfg.egress.dns_pod_labels.get("k8s-app"),
        Some(&"kube-dns".to_string())
    );
    let cfg = InjectConfig::from_yaml(
        "egress:\n  proxyNamespaceSelector: {kubernetes.io/metadata.name: egress}\n  proxyPodSelector: {app: squid}\n  proxyPort: 3128\n  dnsCidrs: [169.254.20.10/32]\n",
    )
    .expect("config");
    assert_eq!(cfg.egress.proxy_port, Some(3128));
    assert_eq!(
        cfg.egress.dns_pod_labels.get("k8s-app"),
        Some(&"kube-dns".to_string()),
        "unset keys keep their defaults"
    );
    assert!(InjectConfig::from_yaml("egress:\n  proxyCidr: 10.0.0.1/32\n").is_err());
    let text = std::fs::read_to_string("examples/config.yaml").expect("example config");
    InjectConfig::from_yaml(&text).expect("examples/config.yaml parses");
    let d = EgressDefaults::from_config(&InjectConfig::sandbox_demo());
    assert_eq!(
        d.proxy.https_proxy.as_deref(),
        Some("http://10.200.0.1:3128")
    );
}

#[test]
fn injected_pods_carry_the_egress_mode() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "agent-sandbox"}},
                     "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let cfg = InjectConfig::sandbox_demo();
    for (mode, want) in [("Audit", Some("Audit")), ("Enforce", Some("Enforce"))] {
        let s = server("s", egress_spec(mode, &["api.github.com:443"], None), None);
        let inj = Injection::resolve(&cfg, Some(&s));
        let out = inject(&pod, &inj).expect("inject");
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &out.patch.to_json_patch()).expect("apply");
        assert_eq!(
            patched["metadata"]["annotations"][ANNOTATION_EGRESS_MODE].as_str(),
            want
        );
        let again = inject(&patched, &inj).expect("inject");
        assert!(again.is_noop(), "idempotent");
    }
    let mut spec = egress_spec("Audit", &[], None);
    spec.as_object_mut().expect("obj").remove("egress");
    let inj = Injection::resolve(&cfg, Some(&server("s", spec, None)));
    let out = inject(&pod, &inj).expect("inject");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &out.patch.to_json_patch()).expect("apply");
    assert!(
        patched["metadata"]["annotations"]
            .get(ANNOTATION_EGRESS_MODE)
            .is_none()
    );
}

// ---------------------------------------------------------------------------------------
// Mock-API scenarios (the shared Verifier of tests/mock_api).

/// The egress writes, on top of the shared [`Verifier`].
impl Verifier {
    /// The Event in namespace agents, which must be of `type_` and `reason`; its note.
    async fn expect_event_of(&mut self, type_: &str, reason: &str) -> String {
        let (t, r, note) = self.expect_event("agents").await;
        assert_eq!((t.as_str(), r.as_str()), (type_, reason));
        note
    }

    async fn expect_allowlist(&mut self, name: &str) -> Value {
        let call = self
            .expect(
                Method::PATCH,
                &format!("/api/v1/namespaces/agents/configmaps/mcptrust-{name}-egress-allowlist"),
                &["fieldManager=mcptrust-egress", "force=true"],
            )
            .await;
        let body = call.body.clone();
        assert_eq!(body["kind"], "ConfigMap");
        call.echo();
        body
    }

    async fn expect_policy(&mut self, name: &str) -> Value {
        let call = self
            .expect(
                Method::PATCH,
                &format!(
                    "/apis/networking.k8s.io/v1/namespaces/agents/networkpolicies/mcptrust-{name}-egress"
                ),
                &["fieldManager=mcptrust-egress", "force=true"],
            )
            .await;
        let body = call.body.clone();
        assert_eq!(body["kind"], "NetworkPolicy");
        assert_eq!(body["apiVersion"], "networking.k8s.io/v1");
        call.echo();
        body
    }

    /// The DELETE of the egress NetworkPolicy, unanswered.
    async fn expect_policy_delete(&mut self, name: &str) -> Call {
        self.expect(
            Method::DELETE,
            &format!(
                "/apis/networking.k8s.io/v1/namespaces/agents/networkpolicies/mcptrust-{name}-egress"
            ),
            &[],
        )
        .await
    }
}

type Reconcile = tokio::task::JoinHandle<mcptrust::controller::Result<Action>>;

/// Reconciles `s` in the background, with system roots by default and the operator's
/// egress defaults `egress`, against a fresh mock API; expects its first request, the trust
/// ConfigMap apply (system roots only, no sources: no reads).
async fn start(egress: EgressDefaults, s: &McpServer) -> (Reconcile, Verifier) {
    let config = ControllerConfig {
        default_include_system_roots: true,
        egress,
        ..controller_config()
    };
    let (ctx, mut api) = mock_api::context(config, NOW);
    let task = tokio::spawn(reconcile(Arc::new(s.clone()), Arc::new(ctx)));
    let name = s.metadata.name.as_deref().expect("name");
    api.expect_trust("agents", name).await;
    (task, api)
}

/// The reconcile succeeded, and it made no API call beyond those expected.
async fn finished(task: Reconcile, api: Verifier) {
    task.await.expect("join").expect("reconcile");
    api.expect_done().await;
}

fn message(c: &Value) -> &str {
    c["message"].as_str().unwrap_or_default()
}

/// McpServer sandbox-tools with egress `mode` over [`ALLOW`], the proxy `proxy` and
/// `status`.
fn tools(mode: &str, proxy: Option<&str>, status: Option<Value>) -> McpServer {
    server("sandbox-tools", egress_spec(mode, ALLOW, proxy), status)
}

const ALLOW: &[&str] = &[
    "api.github.com:443",
    "*.githubusercontent.com:443",
    "10.20.0.0/16:5432",
];

#[tokio::test]
async fn enforce_with_cidr_and_hostname_entries_and_a_proxy() {
    let s = tools("Enforce", Some("http://10.200.0.1:3128"), None);
    let (task, mut api) = start(EgressDefaults::default(), &s).await;
    let cm = api.expect_allowlist("sandbox-tools").await;
    assert_eq!(
        cm["data"]["allowlist.txt"],
        "*.githubusercontent.com:443\napi.github.com:443\n"
    );
    assert!(
        cm["data"]["squid.conf"]
            .as_str()
            .unwrap_or_default()
            .contains("dstdomain .githubusercontent.com")
    );
    assert_eq!(cm["metadata"]["ownerReferences"][0]["kind"], "McpServer");
    let np = api.expect_policy("sandbox-tools").await;
    assert_eq!(
        np["spec"]["podSelector"],
        json!({"matchLabels": {"app": "agent-sandbox"}})
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Egress"]));
    assert_eq!(
        np["spec"]["egress"],
        json!([
            dns_rule(),
            tcp_rule(json!({"ipBlock": {"cidr": "10.200.0.1/32"}}), 3128),
            tcp_rule(json!({"ipBlock": {"cidr": "10.20.0.0/16"}}), 5432),
        ])
    );
    assert_eq!(
        np["metadata"]["ownerReferences"][0]["name"],
        "sandbox-tools"
    );
    let note = api.expect_event_of("Normal", "EgressEnforced").await;
    assert!(note.contains("mcptrust-sandbox-tools-egress"), "{note}");
    let status = api.expect_status("agents", "sandbox-tools").await;
    let c = condition(&status, "EgressPolicyReady");
    assert_eq!(c["status"], "True", "{c}");
    assert_eq!(c["reason"], "Enforced");
    assert!(
        message(c).contains("the proxy 10.200.0.1/32 on port 3128")
            && message(c).contains("1 CIDR entry (10.20.0.0/16:5432)")
            && message(c).contains("2 hostname entries go through the proxy"),
        "{c}"
    );
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "True");
    assert!(message(ready).contains("egress policy enforced"), "{ready}");
    finished(task, api).await;

    // Second pass with that status: the same applies, no event, no status write.
    let s2 = tools("Enforce", Some("http://10.200.0.1:3128"), Some(status));
    let (task, mut api) = start(EgressDefaults::default(), &s2).await;
    api.expect_allowlist("sandbox-tools").await;
    api.expect_policy("sandbox-tools").await;
    finished(task, api).await;
}

#[tokio::test]
async fn enforce_with_hostname_entries_and_no_proxy_fails_closed_and_says_so() {
    let s = tools("Enforce", None, None);
    let (task, mut api) = start(EgressDefaults::default(), &s).await;
    api.expect_allowlist("sandbox-tools").await;
    let np = api.expect_policy("sandbox-tools").await;
    assert_eq!(
        np["spec"]["egress"],
        json!([
            dns_rule(),
            tcp_rule(json!({"ipBlock": {"cidr": "10.20.0.0/16"}}), 5432),
        ]),
        "no proxy rule: the hostnames are blocked, not opened"
    );
    let note = api
        .expect_event_of("Warning", "HostnameRulesRequireProxy")
        .await;
    assert!(note.contains("no proxy is configured"), "{note}");
    let status = api.expect_status("agents", "sandbox-tools").await;
    let c = condition(&status, "EgressPolicyReady");
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "HostnameRulesRequireProxy");
    assert!(
        message(c).contains("2 hostname entries (api.github.com:443, *.githubusercontent.com:443)")
            && message(c).contains("fail closed"),
        "{c}"
    );
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False", "a real hole in Enforce mode");
    assert_eq!(ready["reason"], "HostnameRulesRequireProxy");
    assert!(message(ready).starts_with("EgressPolicyReady: "), "{ready}");
    finished(task, api).await;
}

#[tokio::test]
async fn enforce_with_a_hostname_proxy_needs_selectors() {
    let d = EgressDefaults {
        proxy: ProxyConfig {
            https_proxy: Some("http://egress-proxy.mcptrust.svc:3128".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = tools("Enforce", None, None);
    let (task, mut api) = start(d, &s).await;
    api.expect_allowlist("sandbox-tools").await;
    api.expect_policy("sandbox-tools").await;
    let (_, reason, note) = api.expect_event("agents").await;
    assert_eq!(reason, "HostnameRulesRequireProxy");
    assert!(
        note.contains("a NetworkPolicy cannot allow") && note.contains("egress.proxyPodSelector"),
        "{note}"
    );
    let status = api.expect_status("agents", "sandbox-tools").await;
    assert_eq!(condition(&status, "Ready")["status"], "False");
    task.await.expect("join").expect("reconcile");
    api.expect_done().await;

    // With the operator's proxy described by selectors, the same McpServer is Enforced.
    let (task, mut api) = start(selector_defaults(), &s).await;
    api.expect_allowlist("sandbox-tools").await;
    let np = api.expect_policy("sandbox-tools").await;
    assert_eq!(
        np["spec"]["egress"][1]["to"][0]["podSelector"],
        json!({"matchLabels": {"app": "squid"}})
    );
    assert_eq!(api.expect_event("agents").await.1, "EgressEnforced");
    let status = api.expect_status("agents", "sandbox-tools").await;
    assert_eq!(
        condition(&status, "EgressPolicyReady")["reason"],
        "Enforced"
    );
    assert_eq!(condition(&status, "Ready")["status"], "True");
    task.await.expect("join").expect("reconcile");
    api.expect_done().await;
}

#[tokio::test]
async fn audit_writes_the_allowlist_only_and_stays_ready() {
    let s = tools("Audit", Some("http://10.200.0.1:3128"), None);
    let (task, mut api) = start(EgressDefaults::default(), &s).await;
    let cm = api.expect_allowlist("sandbox-tools").await;
    assert_eq!(
        cm["metadata"]["annotations"][ANNOTATION_EGRESS_MODE],
        "Audit"
    );
    assert!(
        cm["data"]["squid.conf"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.egress.mode: Audit")
    );
    api.expect_event_of("Warning", "AuditOnly").await;
    let status = api.expect_status("agents", "sandbox-tools").await;
    let c = condition(&status, "EgressPolicyReady");
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "AuditOnly");
    assert!(
        message(c).contains("nothing is enforced")
            && message(c).contains(
                "ConfigMap mcptrust-sandbox-tools-egress-allowlist lists 2 hostname entries"
            ),
        "{c}"
    );
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "True", "Audit is a choice: {ready}");
    assert!(
        message(ready).contains("Audit mode: nothing is enforced"),
        "{ready}"
    );
    finished(task, api).await;
}

fn enforced_status() -> Value {
    json!({"conditions": [{"type": "EgressPolicyReady", "status": "True", "reason": "Enforced",
        "message": "x", "lastTransitionTime": "2026-11-20T00:00:00Z", "observedGeneration": 1}]})
}

#[tokio::test]
async fn switching_to_audit_deletes_the_policy() {
    let s = tools("Audit", None, Some(enforced_status()));
    let (task, mut api) = start(EgressDefaults::default(), &s).await;
    api.expect_allowlist("sandbox-tools").await;
    api.expect_policy_delete("sandbox-tools").await.deleted();
    let (_, reason, note) = api.expect_event("agents").await;
    assert_eq!(reason, "AuditOnly");
    assert!(
        note.contains("NetworkPolicy mcptrust-sandbox-tools-egress was deleted"),
        "{note}"
    );
    let status = api.expect_status("agents", "sandbox-tools").await;
    assert_eq!(
        condition(&status, "EgressPolicyReady")["reason"],
        "AuditOnly"
    );
    finished(task, api).await;

    // A policy already gone (404) is fine.
    let (task, mut api) = start(EgressDefaults::default(), &s).await;
    api.expect_allowlist("sandbox-tools").await;
    api.expect_policy_delete("sandbox-tools").await.not_found();
    api.expect_event("agents").await;
    api.expect_status("agents", "sandbox-tools").await;
    task.await.expect("join").expect("reconcile");
    api.expect_done().await;
}

#[tokio::test]
async fn removing_spec_egress_deletes_the_policy_and_empties_the_allowlist() {
    let mut spec = egress_spec("Enforce", ALLOW, None);
    spec.as_object_mut().expect("obj").remove("egress");
    let s = server("sandbox-tools", spec, Some(enforced_status()));
    let (task, mut api) = start(EgressDefaults::default(), &s).await;
    api.expect_policy_delete("sandbox-tools").await.deleted();
    let cm = api
        .expect(
            Method::PATCH,
            "/api/v1/namespaces/agents/configmaps/mcptrust-sandbox-tools-egress-allowlist",
            &["fieldManager=mcptrust-egress"],
        )
        .await;
    assert_eq!(cm.body["data"]["allowlist.txt"], "");
    assert!(cm.body["metadata"]["annotations"][ANNOTATION_EGRESS_MODE].is_null());
    cm.ok(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "mcptrust-sandbox-tools-egress-allowlist", "namespace": "agents"},
            "data": {"allowlist.txt": ""}}));
    api.expect_event_of("Normal", "EgressPolicyRemoved").await;
    let status = api.expect_status("agents", "sandbox-tools").await;
    let c = condition(&status, "EgressPolicyReady");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("NotRequested"))
    );
    finished(task, api).await;
}

#[tokio::test]
async fn enforce_without_pod_selector_is_refused() {
    let mut spec = egress_spec("Enforce", ALLOW, Some("http://10.200.0.1:3128"));
    spec.as_object_mut().expect("obj").remove("podSelector");
    let s = server("sandbox-tools", spec, None);
    let (task, mut api) = start(EgressDefaults::default(), &s).await;
    api.expect_allowlist("sandbox-tools").await;
    let note = api.expect_event_of("Warning", "PodSelectorRequired").await;
    assert!(note.contains("every pod in namespace agents"), "{note}");
    let status = api.expect_status("agents", "sandbox-tools").await;
    assert_eq!(condition(&status, "Ready")["reason"], "PodSelectorRequired");
    finished(task, api).await;
}

#[tokio::test]
async fn invalid_entries_change_nothing_and_are_reported() {
    // What a client that skips the CRD's validation (or an old CRD) could store.
    let s = server(
        "sandbox-tools",
        egress_spec(
            "Enforce",
            &[
                "api.github.com:443",
                "api.github.com:443\"; http_access allow all",
                "*:443",
            ],
            Some("http://10.200.0.1:3128"),
        ),
        Some(enforced_status()),
    );
    let (task, mut api) = start(EgressDefaults::default(), &s).await;
    let note = api.expect_event_of("Warning", "InvalidEgressEntry").await;
    assert!(
        note.contains("spec.egress.allow[1]") && note.contains("spec.egress.allow[2]"),
        "{note}"
    );
    let status = api.expect_status("agents", "sandbox-tools").await;
    let c = condition(&status, "EgressPolicyReady");
    assert_eq!(c["reason"], "InvalidEgressEntry");
    assert!(message(c).contains("nothing was changed"), "{c}");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    finished(task, api).await;
}

#[tokio::test]
async fn without_spec_egress_no_egress_call_is_made() {
    let s = server(
        "plain",
        json!({"transport": "stdio", "podSelector": {"matchLabels": {"app": "x"}}}),
        None,
    );
    let (task, mut api) = start(EgressDefaults::default(), &s).await;
    let status = api.expect_status("agents", "plain").await;
    let c = condition(&status, "EgressPolicyReady");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("NotRequested"))
    );
    assert!(!message(condition(&status, "Ready")).contains("egress"));
    finished(task, api).await;
}
