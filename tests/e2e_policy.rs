//! The chart's ValidatingAdmissionPolicy on a real kube-apiserver (`tests/common/envtest.rs`):
//! the policy and its binding, as Helm renders them (`target/chart-render/enforce.yaml`), are
//! applied; in an opted-in namespace a pod that did not go through the injector is refused
//! with the policy's message, while an injected pod and a mirror-pod-like pod are admitted.
//! `tests/chart.rs` evaluates the same CEL client-side; this is the API server's verdict.
//! Pods are created with `--dry-run=server`: admission runs in full, nothing is stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::envtest::{ControlPlane, chart_documents, wait_until};
use mcptrust::inject::{InjectConfig, Injection, inject};
use serde_json::{Value, json};

/// `kubectl create --dry-run=server` of `obj`: `Ok(())` when admitted, else kubectl's error.
fn create(cp: &ControlPlane, obj: &Value) -> Result<(), String> {
    let out = cp.kubectl_stdin(
        &["create", "--dry-run=server", "-o", "name", "-f", "-"],
        &obj.to_string(),
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn pod(ns: &str, name: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "python:3.12"}]}})
}

#[test]
fn the_require_injection_policy_refuses_bare_pods_and_admits_injected_and_mirror_pods() {
    let Some(cp) = common::envtest::control_plane() else {
        return;
    };
    let Some(docs) = chart_documents(
        "enforce",
        &[
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ],
    ) else {
        return;
    };
    assert_eq!(docs.len(), 2, "the policy and its binding: {docs:?}");
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .unwrap();
    let name = policy["metadata"]["name"].as_str().unwrap().to_owned();
    let out = cp.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=e2e", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns = cp.namespace("enforced");
    cp.kubectl(&["label", "namespace", &ns, "mcptrust.io/injection=enabled"]);

    // A pod that reached admission without the injector: refused, once the API server has
    // loaded the policy (it does so asynchronously), with the policy's message. This also
    // proves the policy is in force for the admissions below.
    let bare = pod(&ns, "bare", json!({"team": "a"}));
    let mut refusal = None;
    wait_until(
        Duration::from_secs(60),
        "the policy to refuse a bare pod",
        || {
            refusal = create(cp, &bare).err();
            refusal.is_some()
        },
    );
    let refusal = refusal.unwrap();
    assert!(
        refusal.contains(&format!("ValidatingAdmissionPolicy '{name}'"))
            && refusal.contains("without the mcptrust.io/injected annotation")
            && refusal.contains("mcptrust.io/inject=false"),
        "{refusal}"
    );

    // A pod the injector skipped: refused with the injector's reason.
    let skipped = pod(
        &ns,
        "skipped",
        json!({"mcptrust.io/skipped": "container legacy mounts /etc/mcptrust"}),
    );
    let refusal = create(cp, &skipped).expect_err("a skipped pod is refused");
    assert!(
        refusal.contains("mcptrust could not inject this pod (container legacy"),
        "{refusal}"
    );

    // What the webhook returns: admitted.
    let out = inject(
        &bare,
        &Injection::resolve(&InjectConfig::embedded_default(), None),
    )
    .expect("inject");
    let mut injected = bare.clone();
    json_patch::patch(&mut injected, &out.patch.to_json_patch()).expect("patch applies");
    injected["metadata"]["name"] = json!("injected");
    assert!(
        injected["metadata"]["annotations"]["mcptrust.io/injected"].is_string(),
        "{injected}"
    );
    create(cp, &injected).unwrap_or_else(|e| panic!("the injected pod was refused: {e}"));

    // A static pod's mirror (made by a kubelet, which cannot retry through the webhook):
    // admitted by the matchCondition.
    // The API server requires spec.nodeName with the mirror annotation; the same pod
    // without the annotation is refused, so the matchCondition is what admits it.
    let mut mirror = pod(
        &ns,
        "mirror",
        json!({"kubernetes.io/config.mirror": "abc", "kubernetes.io/config.source": "file"}),
    );
    mirror["spec"]["nodeName"] = json!("node-1");
    create(cp, &mirror).unwrap_or_else(|e| panic!("the mirror-like pod was refused: {e}"));
    let mut pinned = pod(
        &ns,
        "pinned",
        json!({"kubernetes.io/config.source": "file"}),
    );
    pinned["spec"]["nodeName"] = json!("node-1");
    let refusal = create(cp, &pinned).expect_err("a bare pod with a nodeName is refused");
    assert!(
        refusal.contains(&format!("ValidatingAdmissionPolicy '{name}'")),
        "{refusal}"
    );

    // A namespace that did not opt in is not matched.
    let other = cp.namespace("not-enforced");
    create(cp, &pod(&other, "bare", json!({}))).unwrap();
}
