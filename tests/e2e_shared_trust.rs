//! Trust stored once per namespace and distinct bundle (issue 22), on a real kube-apiserver
//! (`tests/common/envtest.rs`; it runs no controller-manager, so nothing here relies on
//! garbage collection or on ReplicaSets creating pods):
//!
//! - McpServers of a namespace with the same trust ingredients share one ConfigMap
//!   `mcptrust-trust-<key>`, named in `status.trustBundle.configMapName`; two with
//!   different trust never share;
//! - a source CA changes: the shared ConfigMap changes in place (same uid) and every
//!   McpServer using it reports the new sha256; `RollingRestart` rolls each selected
//!   Deployment once (its `generation` moves by exactly one); `None` rolls nothing;
//! - an McpServer whose trust spec changes moves to another ConfigMap: `RollingRestart`
//!   rolls its Deployment; with `None` its running pods that still mount the old one are
//!   listed in `status.trustBundle.previousConfigMaps` and said so in the
//!   TrustBundleReady message, until they are gone;
//! - the per-server `mcptrust-<name>-trust` of an earlier version is kept while a pod
//!   mounts it, then deleted;
//! - the shared ConfigMap goes away with its last user.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestCa;
use common::envtest::{
    ControlPlane, list_objects, start_controller, wait_until, with_operator_namespaces,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

fn get_json(cp: &ControlPlane, args: &[&str]) -> Value {
    cp.get_json(args)
}

fn apply(cp: &ControlPlane, obj: &Value) {
    cp.apply(obj);
}

fn create(cp: &ControlPlane, obj: &Value) {
    let out = cp.kubectl_stdin(&["create", "-f", "-"], &obj.to_string());
    assert!(
        out.status.success(),
        "creating {obj}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn source_ca(cp: &ControlPlane, ns: &str, pem: &str) {
    apply(
        cp,
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "corp-ca", "namespace": ns},
            "data": {"ca.crt": pem},
        }),
    );
}

/// An McpServer `name` selecting `app: <name>`, trusting `corp-ca` (with or without the
/// Mozilla roots), with rotation `strategy`.
fn server(ns: &str, name: &str, system_roots: bool, strategy: &str) -> Value {
    json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "transport": "stdio",
            "podSelector": {"matchLabels": {"app": name}},
            "trust": {"includeSystemRoots": system_roots,
                      "sources": [{"configMap": {"name": "corp-ca", "key": "ca.crt"}}]},
            "rotation": {"strategy": strategy},
        },
    })
}

fn deployment(ns: &str, app: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("dep-{app}"), "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "server", "image": "ghcr.io/example/mcp:1"}]},
            },
        },
    })
}

/// A pod of McpServer `ns/server` as the webhook admits it: annotated with its McpServer
/// and mounting trust ConfigMap `cm`.
fn pod_mounting(ns: &str, name: &str, server: &str, cm: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": server},
                     "annotations": {"mcptrust.io/mcpserver": format!("{ns}/{server}")}},
        "spec": {
            "containers": [{"name": "server", "image": "ghcr.io/example/mcp:1",
                            "volumeMounts": [{"name": "mcptrust-trust", "mountPath": "/etc/mcptrust/trust", "readOnly": true}]}],
            "volumes": [{"name": "mcptrust-trust", "configMap": {"name": cm}}],
        },
    })
}

fn mcps(cp: &ControlPlane, ns: &str, name: &str) -> Value {
    get_json(cp, &["-n", ns, "mcps", name])
}

fn trust_status(cp: &ControlPlane, ns: &str, name: &str) -> Value {
    mcps(cp, ns, name)["status"]["trustBundle"].clone()
}

fn config_map_of(cp: &ControlPlane, ns: &str, name: &str) -> String {
    trust_status(cp, ns, name)["configMapName"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn condition_message(server: &Value, type_: &str) -> String {
    server["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn ready(server: &Value) -> bool {
    server["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The names of the ConfigMaps in `ns` labelled `mcptrust.io/component=trust`.
fn trust_config_maps(cp: &ControlPlane, ns: &str) -> BTreeSet<String> {
    list_objects(cp, ns, "configmaps")
        .iter()
        .filter(|c| c["metadata"]["labels"]["mcptrust.io/component"] == "trust")
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

fn generation(cp: &ControlPlane, ns: &str, name: &str) -> i64 {
    get_json(cp, &["-n", ns, "deployment", name])["metadata"]["generation"]
        .as_i64()
        .unwrap()
}

#[test]
fn shared_trust_config_maps_keep_the_rotation_semantics() {
    let Some((cp, op_ns, ns)) = with_operator_namespaces("shared") else {
        return;
    };
    let ca1 = TestCa::new("corp-ca-1");
    source_ca(cp, &ns, &ca1.pem);

    // An McpServer as an earlier version left it: its per-server ConfigMap, named in its
    // status, mounted by a running pod; rotation None.
    let legacy_cm = "mcptrust-legacy-trust";
    create(cp, &server(&ns, "legacy", false, "None"));
    let out = cp.kubectl_output(&[
        "-n",
        &ns,
        "patch",
        "mcps",
        "legacy",
        "--subresource=status",
        "--type=merge",
        "-p",
        &json!({"status": {"trustBundle": {"configMapName": legacy_cm, "sha256": "00".repeat(32), "certificates": 1}}})
            .to_string(),
    ]);
    assert!(
        out.status.success(),
        "status patch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    create(
        cp,
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": legacy_cm, "namespace": ns, "labels": {
                "app.kubernetes.io/managed-by": "mcptrust", "mcptrust.io/component": "trust",
                "mcptrust.io/mcpserver": "legacy", "mcptrust.io/mcpserver-namespace": ns}},
            "data": {"ca.pem": ca1.pem, "ca-bundle.pem": ca1.pem},
        }),
    );
    create(cp, &pod_mounting(&ns, "legacy-pod", "legacy", legacy_cm));

    // a, b (RollingRestart) and n (None) share legacy's trust; c adds the Mozilla roots.
    for (name, roots, strategy) in [
        ("a", false, "RollingRestart"),
        ("b", false, "RollingRestart"),
        ("n", false, "None"),
        ("c", true, "RollingRestart"),
    ] {
        create(cp, &deployment(&ns, name));
        create(cp, &server(&ns, name, roots, strategy));
    }
    let mut controller = start_controller(cp, "mcptrust-shared-trust", &op_ns);
    let all = ["a", "b", "n", "c", "legacy"];
    wait_until(WAIT, "every McpServer Ready", || {
        all.iter().all(|s| ready(&mcps(cp, &ns, s)))
    });

    // One ConfigMap per distinct trust.
    let shared = config_map_of(cp, &ns, "a");
    let roots = config_map_of(cp, &ns, "c");
    assert!(shared.starts_with("mcptrust-trust-"), "{shared}");
    assert_ne!(shared, roots, "different trust never shares");
    for s in ["b", "n", "legacy"] {
        assert_eq!(config_map_of(cp, &ns, s), shared, "{s}");
    }
    let shared_cm = get_json(cp, &["-n", &ns, "configmap", &shared]);
    let roots_cm = get_json(cp, &["-n", &ns, "configmap", &roots]);
    assert!(shared_cm["metadata"]["ownerReferences"].is_null());
    assert_ne!(
        shared_cm["data"]["ca-bundle.pem"],
        roots_cm["data"]["ca-bundle.pem"]
    );
    assert!(
        roots_cm["data"]["ca-bundle.pem"].as_str().unwrap().len()
            > shared_cm["data"]["ca-bundle.pem"].as_str().unwrap().len()
    );

    // The earlier version's ConfigMap stays while legacy-pod mounts it, and says so.
    assert_eq!(
        trust_config_maps(cp, &ns),
        BTreeSet::from([shared.clone(), roots.clone(), legacy_cm.to_owned()])
    );
    let legacy = mcps(cp, &ns, "legacy");
    assert_eq!(
        legacy["status"]["trustBundle"]["previousConfigMaps"],
        json!([legacy_cm])
    );
    let message = condition_message(&legacy, "TrustBundleReady");
    assert!(
        message.contains(&format!(
            "1 pod(s) still mount the previous ConfigMap {legacy_cm}"
        )) && message.contains("rotation strategy None"),
        "{message}"
    );
    cp.kubectl(&["-n", &ns, "delete", "pod", "legacy-pod", "--wait=false"]);
    wait_until(WAIT, "the earlier version's ConfigMap deleted", || {
        !trust_config_maps(cp, &ns).contains(legacy_cm)
            && trust_status(cp, &ns, "legacy")["previousConfigMaps"].is_null()
    });
    assert!(
        !condition_message(&mcps(cp, &ns, "legacy"), "TrustBundleReady").contains("still mount")
    );

    // A source CA changes: the shared ConfigMap changes in place, every user reports the
    // new sha256, each RollingRestart Deployment rolls once, the None one does not.
    let before: Vec<i64> = ["dep-a", "dep-b", "dep-n"]
        .iter()
        .map(|d| generation(cp, &ns, d))
        .collect();
    let ca2 = TestCa::new("corp-ca-2");
    source_ca(cp, &ns, &ca2.pem);
    wait_until(WAIT, "the shared ConfigMap holds the new CA", || {
        let cm = get_json(cp, &["-n", &ns, "configmap", &shared]);
        cm["data"]["ca.pem"].as_str() == Some(ca2.pem.as_str())
    });
    let rotated = get_json(cp, &["-n", &ns, "configmap", &shared]);
    assert_eq!(
        rotated["metadata"]["uid"], shared_cm["metadata"]["uid"],
        "changed in place"
    );
    let new_sha = rotated["metadata"]["annotations"]["mcptrust.io/trust-bundle-sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(
        Some(new_sha.as_str()),
        shared_cm["metadata"]["annotations"]["mcptrust.io/trust-bundle-sha256"].as_str()
    );
    wait_until(WAIT, "every user reports the new sha256", || {
        ["a", "b", "n", "legacy"].iter().all(|s| {
            let t = trust_status(cp, &ns, s);
            t["sha256"] == new_sha.as_str() && t["configMapName"] == shared.as_str()
        })
    });
    wait_until(WAIT, "dep-a and dep-b rolled", || {
        generation(cp, &ns, "dep-a") > before[0] && generation(cp, &ns, "dep-b") > before[1]
    });
    // Let any late reconcile (the status writes trigger a few) act, then count.
    std::thread::sleep(Duration::from_secs(5));
    let after: Vec<i64> = ["dep-a", "dep-b", "dep-n"]
        .iter()
        .map(|d| generation(cp, &ns, d))
        .collect();
    assert_eq!(
        after,
        vec![before[0] + 1, before[1] + 1, before[2]],
        "RollingRestart rolls each selected Deployment once, None none"
    );

    // b's trust changes (RollingRestart): it moves to c's ConfigMap and dep-b rolls.
    let b_gen = generation(cp, &ns, "dep-b");
    apply(cp, &server(&ns, "b", true, "RollingRestart"));
    wait_until(WAIT, "b moved to the roots ConfigMap", || {
        config_map_of(cp, &ns, "b") == roots
    });
    wait_until(WAIT, "dep-b rolled after the move", || {
        generation(cp, &ns, "dep-b") == b_gen + 1
    });

    // n's trust changes (None) while a pod of it mounts the shared ConfigMap: it moves,
    // nothing rolls, and the status says that pod still mounts the old one.
    create(cp, &pod_mounting(&ns, "n-pod", "n", &shared));
    let n_gen = generation(cp, &ns, "dep-n");
    apply(cp, &server(&ns, "n", true, "None"));
    wait_until(WAIT, "n moved, its pod reported", || {
        let n = mcps(cp, &ns, "n");
        n["status"]["trustBundle"]["configMapName"] == roots.as_str()
            && n["status"]["trustBundle"]["previousConfigMaps"] == json!([shared])
            && condition_message(&n, "TrustBundleReady").contains(&format!(
                "1 pod(s) still mount the previous ConfigMap {shared}: rotation strategy None"
            ))
    });
    assert_eq!(generation(cp, &ns, "dep-n"), n_gen, "None rolls nothing");
    cp.kubectl(&["-n", &ns, "delete", "pod", "n-pod", "--wait=false"]);
    wait_until(WAIT, "n's previous ConfigMap no longer listed", || {
        trust_status(cp, &ns, "n")["previousConfigMaps"].is_null()
    });

    // The shared ConfigMap goes away with its last users (a, legacy), not before.
    cp.kubectl(&["-n", &ns, "delete", "mcps", "a"]);
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        trust_config_maps(cp, &ns).contains(&shared),
        "legacy still uses it"
    );
    cp.kubectl(&["-n", &ns, "delete", "mcps", "legacy"]);
    wait_until(
        WAIT,
        "the shared ConfigMap deleted with its last user",
        || trust_config_maps(cp, &ns) == BTreeSet::from([roots.clone()]),
    );
    cp.kubectl(&["-n", &ns, "delete", "mcps", "b", "c", "n"]);
    wait_until(WAIT, "no trust ConfigMap left", || {
        trust_config_maps(cp, &ns).is_empty()
    });
    controller.stop();
}
