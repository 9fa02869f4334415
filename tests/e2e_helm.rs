//! The Helm chart on a real kube-apiserver (`tests/common/envtest.rs`), installed and
//! upgraded with Helm's own library (helm-sdkpy, through `ci/helm-release.py`), with the
//! operator run out of cluster as the chart's ServiceAccount (a TokenRequest token):
//! in `selfManaged` mode the leader writes `clientConfig.caBundle` into the chart's
//! MutatingWebhookConfiguration; after `helm upgrade` the caBundle survives, or the
//! operator restores it within seconds (the time is measured and printed). The chart's
//! NetworkPolicy is accepted and selects exactly the operator's pods (the API server's own
//! label selection), and its pod spec, with the ServiceAccount token projected explicitly,
//! is accepted as rendered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use common::envtest::{
    ControlPlane, free_port, helm_release, helm_sdk, start_operator, wait_until_or,
    webhook_ca_bundle,
};

fn helm(cp: &ControlPlane, action: &str) -> Result<String, String> {
    helm_release(cp, action, "mcptrust", "mcptrust", &json!({}))
}

fn ca_bundle(cp: &ControlPlane) -> String {
    webhook_ca_bundle(cp)
}

#[test]
fn self_managed_ca_bundle_survives_helm_upgrade() {
    let Some(cp) = e2e!() else { return };
    if !helm_sdk() {
        return;
    }
    let installed = helm(cp, "install").unwrap_or_else(|e| panic!("helm install: {e}"));
    eprintln!("helm install: {}", installed.trim());
    assert!(
        ca_bundle(cp).is_empty(),
        "the chart sets no caBundle in selfManaged mode"
    );

    // The operator as the chart's ServiceAccount, in the chart's namespace.
    let kubeconfig = cp.service_account_kubeconfig("mcptrust", "mcptrust");
    let tls = tempfile::tempdir().unwrap();
    let operator = start_operator(
        cp,
        "mcptrust-helm-0",
        &kubeconfig,
        &[
            "--operator-namespace",
            "mcptrust",
            "--webhook-cert-mode",
            "selfManaged",
            "--webhook-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--tls-cert-file",
            tls.path().join("tls.crt").to_str().unwrap(),
            "--tls-key-file",
            tls.path().join("tls.key").to_str().unwrap(),
            "--disable-endpoint-probe",
        ],
    );
    let started = Instant::now();
    wait_until_or(
        Duration::from_secs(60),
        "the operator to write the caBundle",
        || !ca_bundle(cp).is_empty(),
        || operator.tail(40),
    );
    let written = ca_bundle(cp);
    eprintln!(
        "caBundle written {:?} after the operator started",
        started.elapsed()
    );
    let secret_ca = cp.kubectl(&[
        "-n",
        "mcptrust",
        "get",
        "secret",
        "mcptrust-webhook-tls",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    assert!(!secret_ca.is_empty(), "the webhook Secret holds its CA");

    let upgraded = Instant::now();
    let out = helm(cp, "upgrade").unwrap_or_else(|e| panic!("helm upgrade: {e}"));
    eprintln!("helm upgrade: {}", out.trim());
    let mut cleared = false;
    wait_until_or(
        Duration::from_secs(30),
        "a caBundle after the upgrade",
        || {
            let now = ca_bundle(cp);
            cleared |= now.is_empty();
            !now.is_empty()
        },
        || operator.tail(40),
    );
    // Give a late reset the chance to show.
    std::thread::sleep(Duration::from_secs(2));
    let after = ca_bundle(cp);
    cleared |= after.is_empty();
    eprintln!(
        "after helm upgrade: caBundle {} ({:?} after the upgrade began)",
        if cleared {
            "was reset and restored by the operator"
        } else {
            "survived"
        },
        upgraded.elapsed()
    );
    assert_eq!(after, written, "the caBundle changed across the upgrade");
    assert!(operator.alive(), "{}", operator.tail(40));
    let refused = common::envtest::forbidden_lines(&operator.log);
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

fn json(cp: &ControlPlane, args: &[&str]) -> Value {
    serde_json::from_str(&cp.kubectl(args)).unwrap()
}

/// Pod names the API server returns for `selector` (a label selector string) in `ns`.
fn pods_selected(cp: &ControlPlane, ns: &str, selector: &str) -> Vec<String> {
    let list = json(cp, &["-n", ns, "get", "pods", "-l", selector, "-o", "json"]);
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn network_policy_is_accepted_and_selects_the_operator_pods() {
    let Some(cp) = e2e!() else { return };
    if !helm_sdk() {
        return;
    }
    let (release, ns) = ("mcptrust-np", "mcptrust-np");
    let installed = helm_release(cp, "install", release, ns, &json!({}))
        .unwrap_or_else(|e| panic!("helm install: {e}"));
    eprintln!("helm install: {}", installed.trim());

    // The API server accepted the NetworkPolicy as the chart renders it (named ports,
    // peers, both policy types) and stores it unchanged.
    let np = json(
        cp,
        &["-n", ns, "get", "networkpolicy", release, "-o", "json"],
    );
    let spec = &np["spec"];
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]), "{np:#}");
    let ingress = spec["ingress"].as_array().unwrap();
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": "webhook", "protocol": "TCP"}])
    );
    assert!(
        ingress[0].get("from").is_none(),
        "the webhook port is open to any source"
    );
    assert_eq!(
        ingress[1]["ports"],
        json!([{"port": "admin", "protocol": "TCP"}])
    );
    assert_eq!(
        ingress[1]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
    );
    let egress_ports: Vec<Value> = spec["egress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ports"].clone())
        .collect();
    assert!(
        egress_ports
            .contains(&json!([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}])),
        "{egress_ports:?}"
    );

    // A pod made from the chart's own pod template, as the ReplicaSet would make it (no
    // controller-manager runs here), and a neighbour with other labels. The API server
    // accepts the template: automountServiceAccountToken false, the projected token.
    let dep = json(cp, &["-n", ns, "get", "deployment", release, "-o", "json"]);
    let template = &dep["spec"]["template"];
    let operator_pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "operator-0", "namespace": ns, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    });
    let mut other_spec = template["spec"].clone();
    other_spec["volumes"] = json!([]);
    other_spec["containers"][0]["volumeMounts"] = json!([]);
    let other_pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "neighbour", "namespace": ns, "labels": {"app.kubernetes.io/name": "something-else"}},
        "spec": other_spec,
    });
    for pod in [&operator_pod, &other_pod] {
        let out = cp.kubectl_stdin(&["create", "-f", "-"], &pod.to_string());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The policy's podSelector, evaluated by the API server, selects the operator's pod
    // and only it.
    let labels = spec["podSelector"]["matchLabels"].as_object().unwrap();
    assert!(!labels.is_empty(), "{np:#}");
    let selector: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    assert_eq!(
        pods_selected(cp, ns, &selector.join(",")),
        vec!["operator-0".to_owned()]
    );
    // ... and the Services route to the same pods.
    for svc in [format!("{release}-webhook"), format!("{release}-metrics")] {
        let s = json(cp, &["-n", ns, "get", "service", &svc, "-o", "json"]);
        assert_eq!(
            &s["spec"]["selector"], &spec["podSelector"]["matchLabels"],
            "{svc}"
        );
    }

    // The stored pod: no automounted token (the ServiceAccount admission plugin adds its
    // own kube-api-access-* volume only when automounting), and the chart's projected
    // volume at the path kube's in-cluster config reads.
    let stored = json(cp, &["-n", ns, "get", "pod", "operator-0", "-o", "json"]);
    let pod_spec = &stored["spec"];
    assert_eq!(pod_spec["automountServiceAccountToken"], json!(false));
    let volumes = pod_spec["volumes"].as_array().unwrap();
    let names: Vec<&str> = volumes
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("kube-api-access-")),
        "the API server added its own token volume: {names:?}"
    );
    let mount = pod_spec["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
        .expect("a mount at the ServiceAccount path");
    let vol = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
    let sources = vol["projected"]["sources"].as_array().unwrap();
    let token = sources
        .iter()
        .find_map(|s| s.get("serviceAccountToken"))
        .unwrap();
    assert_eq!(token["path"], "token");
    assert_eq!(token["expirationSeconds"], 3600);

    // The token the kubelet will ask for: a TokenRequest bound to this pod with the
    // chart's lifetime, which the API server grants as asked (not extended).
    let jwt = cp.kubectl(&[
        "-n",
        ns,
        "create",
        "token",
        release,
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "operator-0",
        "--duration",
        "3600s",
    ]);
    let claims = jwt.trim().split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    eprintln!("bound token for operator-0: lifetime {lifetime} s");
    assert_eq!(lifetime, 3600, "{claims}");
    assert_eq!(
        claims["kubernetes.io"]["pod"]["name"], "operator-0",
        "{claims}"
    );
}
