//! Faults on a real control plane (`tests/common/envtest.rs`): kube-apiserver and etcd are
//! stopped and started again while the operator reconciles 50 mTLS McpServers. All end
//! Ready, no Secret is issued twice for the same reason, and no private key changes
//! without an event that says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::envtest::{
    ControlPlane, free_port, list_objects, mtls_server, ready_count, start_operator, wait_until_or,
};
use serde_json::{Value, json};

const SERVERS: usize = 50;

/// `secret name -> tls.key` of the operator's TLS Secrets in `ns`.
fn keys(cp: &ControlPlane, ns: &str) -> BTreeMap<String, String> {
    list_objects(cp, ns, "secrets")
        .iter()
        .filter(|s| s["type"] == "kubernetes.io/tls")
        .filter_map(|s| {
            Some((
                s["metadata"]["name"].as_str()?.to_owned(),
                s["data"]["tls.key"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[test]
fn api_server_and_etcd_restart_mid_reconcile() {
    let Some((cp, op_ns, ns)) = common::envtest::with_operator_namespaces("agents") else {
        return;
    };
    let items: Vec<Value> = (0..SERVERS).map(|i| mtls_server(&ns, i)).collect();
    let list_doc = json!({"apiVersion": "v1", "kind": "List", "items": items});
    // One reconcile at a time: the issuance lasts long enough for the restart to land in
    // its middle even on a fast or idle machine (with the default concurrency, all 100
    // Secrets could exist before the kill, half the time on a loaded machine).
    let operator = start_operator(
        cp,
        "faults-0",
        &cp.kubeconfig,
        &[
            "--operator-namespace",
            &op_ns,
            "--disable-webhook",
            "--disable-endpoint-probe",
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--reconcile-concurrency",
            "1",
        ],
    );
    let out = cp.kubectl_stdin(&["apply", "-f", "-"], &list_doc.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Mid-reconcile: kill the control plane as soon as the tenth TLS Secret exists (polled
    // in process every 10 ms; kubectl would be too slow to catch the middle).
    let started = Instant::now();
    use base64::Engine as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The Ready count and the TLS keys are read in process too, right before the kill: a
    // kubectl call there would let the issuance run on for a second on a loaded machine,
    // and after the restart the operator has gone on issuing.
    let (ready_at_kill, keys_before) = rt.block_on(async {
        use k8s_openapi::api::core::v1::Secret;
        use kube::api::{Api, ListParams};
        let client = cp.client().await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let params = ListParams::default().fields("type=kubernetes.io/tls");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let n = secrets
                .list_metadata(&params)
                .await
                .map(|l| l.items.len())
                .unwrap_or(0);
            if n >= 10 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no Secrets issued:\n{}",
                operator.tail(40)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let keys: BTreeMap<String, String> = secrets
            .list(&params)
            .await
            .expect("list TLS Secrets")
            .items
            .into_iter()
            .filter_map(|s| {
                let key = s.data?.get("tls.key")?.0.clone();
                Some((
                    s.metadata.name?,
                    base64::engine::general_purpose::STANDARD.encode(key),
                ))
            })
            .collect();
        let servers: Api<mcptrust::api::McpServer> = Api::namespaced(client, &ns);
        let ready = servers
            .list(&ListParams::default())
            .await
            .expect("list McpServers")
            .items
            .iter()
            .filter(|s| {
                s.status.as_ref().is_some_and(|st| {
                    st.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        (ready, keys)
    });
    // The restart must come mid-reconcile: fewer than all Ready when it is triggered.
    cp.restart(true, Duration::from_secs(2));
    let before_restart = ready_count(cp, &ns);
    eprintln!(
        "killed and restarted kube-apiserver and etcd {:?} after the creates, with \
         {ready_at_kill}/{SERVERS} Ready and {} TLS Secrets; then {before_restart}/{SERVERS} were Ready",
        started.elapsed(),
        keys_before.len()
    );
    assert!(
        ready_at_kill < SERVERS,
        "the restart came after the reconcile ({ready_at_kill}/{SERVERS} Ready): not mid-reconcile"
    );
    // The key comparison below compares something: Secrets issued before the restart.
    assert!(
        keys_before.len() >= 10 && keys_before.len() < 2 * SERVERS,
        "{} TLS Secrets at the kill (10 to {} expected: mid-issuance)",
        keys_before.len(),
        2 * SERVERS - 1
    );

    wait_until_or(
        Duration::from_secs(240),
        "all McpServers Ready after the restart",
        || ready_count(cp, &ns) == SERVERS || !operator.alive(),
        || {
            format!(
                "{}/{SERVERS} Ready\n{}",
                ready_count(cp, &ns),
                operator.tail(40)
            )
        },
    );
    assert!(
        operator.alive(),
        "the operator exited:\n{}",
        operator.tail(40)
    );
    eprintln!(
        "all {SERVERS} Ready {:?} after the creates",
        started.elapsed()
    );

    // Every issuance, by Secret and reason, from the events.
    let mut issued: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut seen_notes = std::collections::BTreeSet::new();
    for e in list_objects(cp, &ns, "events") {
        let reason = e["reason"].as_str().unwrap_or_default();
        if !["Issued", "Renewed", "Reissued"].contains(&reason) {
            continue;
        }
        let message = e["message"].as_str().unwrap_or_default();
        let secret = message
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let why = message
            .split_once('(')
            .and_then(|(_, r)| r.split_once(':'))
            .map(|(r, _)| r.to_owned())
            .unwrap_or_default();
        let count = e["count"]
            .as_u64()
            .or_else(|| e["series"]["count"].as_u64())
            .unwrap_or(1);
        // An event whose POST was answered by a dying API server is sent again by the
        // retry: the same note twice is one issuance (each issuance names its notAfter).
        if seen_notes.insert((secret.clone(), message.to_owned())) {
            *issued.entry((secret, why)).or_default() += count;
        }
    }
    let twice: Vec<_> = issued.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "Secrets issued twice for one reason: {twice:?}"
    );

    let keys_after = keys(cp, &ns);
    assert_eq!(
        keys_after.len(),
        2 * SERVERS,
        "a server and a client Secret each"
    );
    for (name, key) in &keys_before {
        if keys_after.get(name) != Some(key) {
            let events = issued
                .keys()
                .filter(|(s, r)| s == name && r != "DoesNotExist")
                .count();
            assert!(
                events > 0,
                "the private key of {name} changed across the restart without an event"
            );
        }
    }
    eprintln!(
        "{} issuance events for {} Secrets; {} keys kept across the restart",
        issued.values().sum::<u64>(),
        keys_after.len(),
        keys_before
            .iter()
            .filter(|(n, k)| keys_after.get(*n) == Some(*k))
            .count()
    );
}
