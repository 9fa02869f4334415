//! The webhook following the cluster: the resolver reads reflector stores (filled here the
//! way a watcher fills them) and the injector mounts the McpServer's bundle and mTLS
//! Secrets, with per-certificate annotations taken from the Secrets' metadata.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use mcptrust::api::McpServer;
use mcptrust::controller::resolver::{Caches, ClusterMutator};
use mcptrust::inject::{InjectConfig, Mutator};
use serde_json::{Value, json};

fn meta<K>(name: &str, ns: &str, annotations: &[(&str, &str)]) -> PartialObjectMeta<K> {
    PartialObjectMeta {
        types: None,
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        },
        _phantom: Default::default(),
    }
}

fn fill<K>(writer: &mut Writer<K>, items: Vec<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    writer.apply_watcher_event(&watcher::Event::Init);
    for i in items {
        writer.apply_watcher_event(&watcher::Event::InitApply(i));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
}

fn caches() -> Caches {
    let (servers, mut w1) = reflector::store::<McpServer>();
    let (secrets, mut w2) = reflector::store::<PartialObjectMeta<Secret>>();
    let (config_maps, mut w3) = reflector::store::<PartialObjectMeta<ConfigMap>>();
    let github: McpServer = serde_json::from_value(json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": "github", "namespace": "agents"},
        "spec": {"endpoint": {"url": "https://github-mcp.agents.svc:8443/mcp/"},
                 "podSelector": {"matchLabels": {"app": "github-mcp"}},
                 "mtls": {"clients": [{"name": "mcpgateway", "namespace": "gateway"}]}},
        "status": {"trustBundle": {"configMapName": "mcptrust-github-trust", "sha256": "aa".repeat(32), "certificates": 147}}
    }))
    .expect("McpServer");
    fill(&mut w1, vec![github]);
    fill(
        &mut w2,
        vec![
            meta(
                "github-server-tls",
                "agents",
                &[
                    ("mcptrust.io/certificate-sha256", "5e"),
                    ("mcptrust.io/certificate-not-after", "2027-02-19T00:00:00Z"),
                ],
            ),
            meta(
                "github-agents-mcpgateway-client-tls",
                "gateway",
                &[("mcptrust.io/certificate-sha256", "c1")],
            ),
        ],
    );
    fill(
        &mut w3,
        vec![meta(
            "mcptrust-trust",
            "tools",
            &[("mcptrust.io/trust-bundle-sha256", "dd")],
        )],
    );
    Caches::new(servers, secrets, config_maps)
}

fn pod(ns: &str, labels: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": ns, "labels": labels, "annotations": annotations},
           "spec": {"containers": [{"name": "c", "image": "i"}]}})
}

fn apply(m: &ClusterMutator, ns: &str, obj: &Value) -> Value {
    let out = m.mutate(Some(ns), obj).expect("mutate");
    let mut v = obj.clone();
    json_patch::patch(&mut v, &out.patch.to_json_patch()).expect("patch");
    assert!(
        m.mutate(Some(ns), &v).expect("again").is_noop(),
        "idempotent"
    );
    v
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["volumes"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn mount_path<'a>(pod: &'a Value, volume: &str) -> Option<&'a str> {
    pod["spec"]["containers"][0]["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == volume)?
        .get("mountPath")?
        .as_str()
}

#[test]
fn server_pods_get_their_bundle_and_serving_certificate() {
    let m = ClusterMutator::new(InjectConfig::embedded_default(), caches());
    let p = apply(
        &m,
        "agents",
        &pod("agents", json!({"app": "github-mcp"}), json!({})),
    );
    // The shared ConfigMap its trust derives (no spec.trust: the defaults), not the
    // per-server one an earlier version's status still names.
    assert_eq!(
        volume(&p, "mcptrust-trust")["configMap"]["name"],
        format!("mcptrust-trust-{}", mcptrust::api::trust_key(None, None)).as_str()
    );
    assert_eq!(
        volume(&p, "mcptrust-server-tls")["secret"]["secretName"],
        "github-server-tls"
    );
    assert_eq!(
        mount_path(&p, "mcptrust-server-tls"),
        Some("/etc/mcptrust/tls/server")
    );
    let ann = &p["metadata"]["annotations"];
    assert_eq!(ann["mcptrust.io/trust-bundle-sha256"], "aa".repeat(32));
    assert_eq!(ann["mcptrust.io/mcpserver"], "agents/github");
    assert_eq!(ann["sha256.mcptrust.io/mcptrust-server-tls"], "5e");
    assert_eq!(
        ann["not-after.mcptrust.io/mcptrust-server-tls"],
        "2027-02-19T00:00:00Z"
    );
}

#[test]
fn gateway_pods_get_client_certificates() {
    let m = ClusterMutator::new(InjectConfig::embedded_default(), caches());
    let p = apply(
        &m,
        "gateway",
        &pod(
            "gateway",
            json!({"app": "mcpgateway"}),
            json!({"mcptrust.io/mtls-client-of": "agents/github, agents/unknown"}),
        ),
    );
    assert_eq!(
        volume(&p, "mtls-client-github")["secret"]["secretName"],
        "github-agents-mcpgateway-client-tls"
    );
    assert_eq!(
        mount_path(&p, "mtls-client-github"),
        Some("/etc/mcptrust/tls/clients/github")
    );
    assert_eq!(
        p["metadata"]["annotations"]["sha256.mcptrust.io/mtls-client-github"],
        "c1"
    );
    // Not a server pod: the namespace default bundle, no serving certificate.
    assert_eq!(
        volume(&p, "mcptrust-trust")["configMap"]["name"],
        "mcptrust-trust"
    );
    assert!(mount_path(&p, "mcptrust-server-tls").is_none());
}

#[test]
fn unselected_pods_get_the_namespace_default() {
    let m = ClusterMutator::new(InjectConfig::embedded_default(), caches());
    let p = apply(
        &m,
        "tools",
        &pod("tools", json!({"app": "other"}), json!({})),
    );
    assert_eq!(
        volume(&p, "mcptrust-trust")["configMap"]["name"],
        "mcptrust-trust"
    );
    assert_eq!(
        p["metadata"]["annotations"]["mcptrust.io/trust-bundle-sha256"],
        "dd"
    );
    // A pod that selects the server's labels but lives in another namespace is not its pod.
    let q = apply(
        &m,
        "tools",
        &pod("tools", json!({"app": "github-mcp"}), json!({})),
    );
    assert_eq!(
        volume(&q, "mcptrust-trust")["configMap"]["name"],
        "mcptrust-trust"
    );
}

fn server(ns: &str, name: &str, app: &str, env_value: &str) -> McpServer {
    serde_json::from_value(json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": env_value},
        "spec": {"endpoint": {"url": format!("https://{name}.{ns}.svc/mcp/")},
                 "podSelector": {"matchLabels": {"app": app}},
                 "env": [{"name": "MCP_SETTING", "value": env_value}]}
    }))
    .expect("McpServer")
}

/// The value of `name` in the first container's env after the patch.
fn env_of(pod: &Value, name: &str) -> Option<String> {
    pod["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(ToOwned::to_owned)
}

/// The resolver indexes McpServers by namespace and remembers each one's env block: both
/// must follow the store as the webhook's watcher changes it (an edit, a new McpServer that
/// sorts first, a delete), and every answer must equal the unremembered computation.
#[test]
fn the_index_and_the_env_blocks_follow_the_store() {
    let (servers, mut writer) = reflector::store::<McpServer>();
    let (secrets, _w2) = reflector::store::<PartialObjectMeta<Secret>>();
    let (config_maps, _w3) = reflector::store::<PartialObjectMeta<ConfigMap>>();
    // 1,000 McpServers in 50 namespaces; in `ns-7`, `m-7` selects `app: target`.
    let all: Vec<McpServer> = (0..1000)
        .map(|i| {
            let (ns, app) = (format!("ns-{}", i % 50), format!("app-{i}"));
            let app = if i == 7 { "target".to_string() } else { app };
            server(&ns, &format!("m-{i}"), &app, "v1")
        })
        .collect();
    fill(&mut writer, all);
    let caches = Caches::new(servers, secrets, config_maps);
    let m = ClusterMutator::new(InjectConfig::embedded_default(), caches.clone());
    let target = pod("ns-7", json!({"app": "target"}), json!({}));
    let check = |expected_server: Option<&str>, expected_env: Option<&str>| {
        // Twice: the second answer comes from the remembered env block.
        for _ in 0..2 {
            let out = m.mutate(Some("ns-7"), &target).expect("mutate");
            let fresh = mcptrust::inject::inject(&target, &m.injection_for("ns-7", &target))
                .expect("inject");
            assert_eq!(
                out.patch, fresh.patch,
                "remembered and fresh answers differ"
            );
            let p = apply(&m, "ns-7", &target);
            assert_eq!(
                p["metadata"]["annotations"]["mcptrust.io/mcpserver"].as_str(),
                expected_server
            );
            assert_eq!(env_of(&p, "MCP_SETTING").as_deref(), expected_env);
        }
    };
    check(Some("ns-7/m-7"), Some("v1"));
    // Another namespace's pod with the same labels is not selected.
    let other = apply(
        &m,
        "ns-8",
        &pod("ns-8", json!({"app": "target"}), json!({})),
    );
    assert!(other["metadata"]["annotations"]["mcptrust.io/mcpserver"].is_null());

    // An edit of the McpServer's env reaches the next admission.
    let ev = watcher::Event::Apply(server("ns-7", "m-7", "target", "v2"));
    writer.apply_watcher_event(&ev);
    caches.apply_server_event(&ev);
    check(Some("ns-7/m-7"), Some("v2"));

    // A new McpServer selecting the same pods that sorts first by name wins.
    let ev = watcher::Event::Apply(server("ns-7", "a-first", "target", "v3"));
    writer.apply_watcher_event(&ev);
    caches.apply_server_event(&ev);
    check(Some("ns-7/a-first"), Some("v3"));

    // Both deleted: the namespace default, without the McpServer's env.
    for name in ["a-first", "m-7"] {
        let ev = watcher::Event::Delete(server("ns-7", name, "target", "v3"));
        writer.apply_watcher_event(&ev);
        caches.apply_server_event(&ev);
    }
    check(None, None);

    // A relist (a watch that expired): while it runs the index keeps serving the old
    // state, as the store does; at its end the index is the relisted McpServers.
    let relisted = server("ns-7", "m-relisted", "target", "v4");
    for ev in [watcher::Event::Init, watcher::Event::InitApply(relisted)] {
        writer.apply_watcher_event(&ev);
        caches.apply_server_event(&ev);
    }
    check(None, None);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    caches.apply_server_event(&watcher::Event::InitDone);
    check(Some("ns-7/m-relisted"), Some("v4"));
}

/// The label index answers what a scan of the namespace would: for McpServers with every
/// kind of selector (`matchLabels` of one or two pairs, `matchExpressions` only, `{}`, none)
/// and pods with every mix of labels, the selected McpServer is the first by name whose
/// selector matches, before and after edits that move McpServers between buckets and
/// deletes.
#[test]
fn the_label_index_selects_what_a_scan_selects() {
    let (servers, mut writer) = reflector::store::<McpServer>();
    let (secrets, _w2) = reflector::store::<PartialObjectMeta<Secret>>();
    let (config_maps, _w3) = reflector::store::<PartialObjectMeta<ConfigMap>>();
    // A small deterministic generator (xorshift): the same cases on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let keys = ["app", "tier", "team"];
    let values = ["a", "b", "c"];
    let selector = |next: &mut dyn FnMut(u64) -> u64| -> Value {
        match next(6) {
            0 => Value::Null,
            1 => json!({}),
            2 => json!({"matchExpressions": [{"key": keys[next(3) as usize], "operator": "In",
                                               "values": [values[next(3) as usize]]}]}),
            3 => json!({"matchLabels": {keys[next(3) as usize]: values[next(3) as usize],
                                         keys[next(3) as usize]: values[next(3) as usize]}}),
            _ => json!({"matchLabels": {keys[next(3) as usize]: values[next(3) as usize]},
                        "matchExpressions": [{"key": keys[next(3) as usize], "operator": "NotIn",
                                              "values": [values[next(3) as usize]]}]}),
        }
    };
    let make = |name: &str, sel: Value| -> McpServer {
        let mut spec = json!({"endpoint": {"url": format!("https://{name}.ns.svc/mcp/")}});
        if !sel.is_null() {
            spec["podSelector"] = sel;
        }
        serde_json::from_value(json!({
            "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
            "metadata": {"name": name, "namespace": "ns"}, "spec": spec,
        }))
        .expect("McpServer")
    };
    let mut current: BTreeMap<String, McpServer> = (0..60)
        .map(|_| {
            let name = format!("s-{:02}", next(100));
            let s = make(&name, selector(&mut next));
            (name, s)
        })
        .collect();
    fill(&mut writer, current.values().cloned().collect());
    let caches = Caches::new(servers, secrets, config_maps);
    let m = ClusterMutator::new(InjectConfig::embedded_default(), caches.clone());
    let pods: Vec<BTreeMap<String, String>> = (0..200)
        .map(|_| {
            (0..next(4))
                .map(|_| {
                    (
                        keys[next(3) as usize].to_string(),
                        values[next(3) as usize].to_string(),
                    )
                })
                .collect()
        })
        .collect();
    let check = |current: &BTreeMap<String, McpServer>| {
        for labels in &pods {
            let expected = current
                .iter()
                .find(|(_, s)| {
                    s.spec
                        .pod_selector
                        .as_ref()
                        .is_some_and(|sel| mcptrust::api::selector_matches(sel, labels))
                })
                .map(|(n, _)| format!("ns/{n}"));
            let p = apply(&m, "ns", &pod("ns", json!(labels), json!({})));
            assert_eq!(
                p["metadata"]["annotations"]["mcptrust.io/mcpserver"].as_str(),
                expected.as_deref(),
                "pod labels {labels:?}"
            );
        }
    };
    check(&current);
    // Edits (a new selector, often another bucket), new McpServers and deletes.
    for _ in 0..5 {
        for _ in 0..20 {
            let name = format!("s-{:02}", next(100));
            let ev = if next(4) == 0 {
                match current.remove(&name) {
                    Some(s) => watcher::Event::Delete(s),
                    None => continue,
                }
            } else {
                let s = make(&name, selector(&mut next));
                current.insert(name, s.clone());
                watcher::Event::Apply(s)
            };
            writer.apply_watcher_event(&ev);
            caches.apply_server_event(&ev);
        }
        check(&current);
    }
}
