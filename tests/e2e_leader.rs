//! Leader election between two `mcptrust run` processes on a real kube-apiserver
//! (`tests/common/envtest.rs`): one holds the Lease; when it gets SIGTERM it releases the
//! Lease, and the standby holds it and writes within 3 s (client-go's elector retries
//! every 2 s; ours also watches the Lease). The takeover is printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::envtest::{
    ControlPlane, free_port, http_get, metric_sum, start_controller_on, wait_until,
};
use serde_json::Value;

fn holder(cp: &ControlPlane, ns: &str) -> Option<String> {
    let out = cp.kubectl_output(&[
        "-n",
        ns,
        "get",
        "lease",
        "mcptrust-controller",
        "-o",
        "json",
    ]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

fn ready(cp: &ControlPlane, ns: &str, name: &str) -> bool {
    let out = cp.kubectl_output(&[
        "-n",
        ns,
        "get",
        "mcps",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    out.status.success() && String::from_utf8_lossy(&out.stdout) == "True"
}

fn stdio_server(cp: &ControlPlane, ns: &str, name: &str) {
    let out = cp.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "{{\"apiVersion\":\"mcptrust.io/v1alpha1\",\"kind\":\"McpServer\",\"metadata\":{{\"name\":\"{name}\",\"namespace\":\"{ns}\"}},\"spec\":{{\"transport\":\"stdio\"}}}}"
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn standby_takes_over_within_three_seconds_of_a_release() {
    let Some((cp, op_ns, app)) = common::envtest::with_operator_namespaces("agents") else {
        return;
    };
    let ports = [("replica-a", free_port()), ("replica-b", free_port())];
    let start = |(name, port): (&str, u16)| start_controller_on(cp, name, &op_ns, port);
    let a = start(ports[0]);
    let b = start(ports[1]);
    let metrics = |name: &str| {
        let port = ports.iter().find(|(n, _)| *n == name).unwrap().1;
        http_get(port, "/metrics")
    };
    // Per-McpServer series of `server` in a scrape (its condition gauges).
    let series_of = |scrape: &str, server: &str| {
        scrape
            .lines()
            .filter(|l| l.starts_with("mcptrust_mcpserver_status_condition{"))
            .filter(|l| l.contains(&format!("name=\"{server}\"")))
            .count()
    };
    let mut first = None;
    wait_until(Duration::from_secs(60), "a leader", || {
        first = holder(cp, &op_ns);
        first.is_some()
    });
    let leader = first.unwrap();
    stdio_server(cp, &op_ns, "before");
    wait_until(Duration::from_secs(60), "the leader reconciles", || {
        ready(cp, &op_ns, "before")
    });
    let (old, standby, standby_name) = if leader == "replica-a" {
        (a, b, "replica-b")
    } else {
        (b, a, "replica-a")
    };
    // Only the leader reports per-McpServer series; the standby says it is not leading.
    let mut leading = String::new();
    wait_until(
        Duration::from_secs(30),
        "the leader's series of `before`",
        || {
            leading = metrics(&leader);
            series_of(&leading, "before") > 0
        },
    );
    assert_eq!(
        metric_sum(&leading, "mcptrust_controller_leader"),
        1.0,
        "{leading}"
    );
    let waiting = metrics(standby_name);
    assert_eq!(
        metric_sum(&waiting, "mcptrust_controller_leader"),
        0.0,
        "{waiting}"
    );
    assert_eq!(
        series_of(&waiting, "before"),
        0,
        "a standby reported per-McpServer series:\n{waiting}"
    );
    // Let the standby settle into waiting (its first attempts are over).
    std::thread::sleep(Duration::from_secs(3));

    let sigterm = Instant::now();
    old.signal("TERM");
    let mut new = None;
    wait_until(
        Duration::from_secs(30),
        "the standby to hold the lease",
        || {
            new = holder(cp, &op_ns);
            new.as_deref() == Some(standby_name)
        },
    );
    let takeover = sigterm.elapsed();
    assert!(
        old.wait_exit(Duration::from_secs(30)),
        "the old leader did not exit"
    );
    // The new leader writes: a new McpServer turns Ready.
    stdio_server(cp, &app, "after");
    wait_until(Duration::from_secs(30), "the new leader reconciles", || {
        ready(cp, &app, "after")
    });
    let writes = sigterm.elapsed();
    // The new leader reports the series of every McpServer, the old leader's included.
    let mut now_leading = String::new();
    wait_until(Duration::from_secs(30), "the new leader's series", || {
        now_leading = metrics(standby_name);
        series_of(&now_leading, "before") > 0 && series_of(&now_leading, "after") > 0
    });
    assert_eq!(metric_sum(&now_leading, "mcptrust_controller_leader"), 1.0);
    eprintln!(
        "leader election: SIGTERM to {leader}; {standby_name} held the Lease after {} ms and had written status after {} ms",
        takeover.as_millis(),
        writes.as_millis()
    );
    assert!(standby.alive());
    assert!(
        takeover < Duration::from_secs(3),
        "takeover took {takeover:?} (at most 3 s expected: the standby watches the Lease)\n{}",
        standby.tail(20)
    );
}
