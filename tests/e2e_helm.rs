//! The Helm chart on a real kube-apiserver (`tests/common/envtest.rs`), installed and
//! upgraded with Helm's own library (helm-sdkpy, through `ci/helm-release.py`), with the
//! operator run out of cluster as the chart's ServiceAccount (a TokenRequest token):
//! in `selfManaged` mode the leader writes `clientConfig.caBundle` into the chart's
//! MutatingWebhookConfiguration; after `helm upgrade` the caBundle survives, or the
//! operator restores it within seconds (the time is measured and printed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::envtest::{
    ControlPlane, free_port, helm_release, helm_sdk, start_operator, wait_until_or,
    webhook_ca_bundle,
};

fn helm(cp: &ControlPlane, action: &str) -> Result<String, String> {
    helm_release(cp, action, "mcptrust", &serde_json::json!({}))
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
