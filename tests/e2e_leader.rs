//! Leader election on a real kube-apiserver (`tests/common/envtest.rs`):
//!
//! - two `mcptrust run` processes: the leader gets SIGTERM, releases the Lease and the
//!   standby takes over and writes; the standby, scraped while its admin port is proven
//!   alive, reports no per-McpServer series;
//! - the leader SIGKILLed: the standby takes over once the Lease expired, never earlier
//!   (judged on the Lease's own renewTime and acquireTime);
//! - in-process electors ([`mcptrust::controller::leader::Elector`]): the leader alone cut
//!   off from the API server by a TCP proxy this test owns stops its work by the renew
//!   deadline, before the standby starts, and never writes again (checked on the
//!   resourceVersions and field managers of the writes); candidates acquiring at once:
//!   exactly one leads at any time.
//!
//! How long a takeover takes is printed by `cargo bench --bench leader_takeover`, not
//! asserted here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::envtest::{
    ControlPlane, free_port, http_get, metric_sum, start_controller_on, wait_until,
};
use serde_json::Value;

/// Lease `name` in `ns` as kubectl shows it; `None` while it does not exist.
fn lease(cp: &ControlPlane, ns: &str, name: &str) -> Option<Value> {
    let out = cp.kubectl_output(&["-n", ns, "get", "lease", name, "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("a Lease as JSON"))
}

/// The holder of the operator's Lease (`None` while it has none or does not exist).
fn holder(cp: &ControlPlane, ns: &str) -> Option<String> {
    lease(cp, ns, "mcptrust-controller")?["spec"]["holderIdentity"]
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
fn standby_takes_over_after_a_release() {
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
    // The standby's scrape is a real one (an empty or failed scrape would sum to 0): it
    // has the metric families, the leader gauge among them, at 0.
    let waiting = metrics(standby_name);
    assert!(
        waiting.contains("# TYPE mcptrust_controller_leader gauge")
            && waiting.contains("# TYPE mcptrust_reconciles counter")
            && waiting.lines().any(|l| l == "mcptrust_controller_leader 0"),
        "the standby's scrape lacks its metric families:\n{waiting}"
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
    assert!(standby.alive(), "{}", standby.tail(20));
}

/// The operator's Lease's `spec`.
fn lease_spec(cp: &ControlPlane, ns: &str) -> Value {
    lease(cp, ns, "mcptrust-controller").expect("the Lease")["spec"].clone()
}

/// A MicroTime of the Lease (`2026-12-06T13:14:15.123456Z`).
fn micro(v: &Value) -> k8s_openapi::jiff::Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

#[test]
fn standby_takes_over_a_crashed_leader_once_the_lease_expired() {
    let Some((cp, op_ns, app)) = common::envtest::with_operator_namespaces("crash") else {
        return;
    };
    let ports = [("crash-a", free_port()), ("crash-b", free_port())];
    let a = start_controller_on(cp, ports[0].0, &op_ns, ports[0].1);
    let b = start_controller_on(cp, ports[1].0, &op_ns, ports[1].1);
    let mut first = None;
    wait_until(Duration::from_secs(60), "a leader", || {
        first = holder(cp, &op_ns);
        first.is_some()
    });
    let leader = first.unwrap();
    let (old, standby, standby_name) = if leader == "crash-a" {
        (a, b, "crash-b")
    } else {
        (b, a, "crash-a")
    };
    // The leader renews (the renewTime moves): it is alive and leading.
    let renewed = lease_spec(cp, &op_ns)["renewTime"].clone();
    wait_until(Duration::from_secs(30), "a renewal", || {
        lease_spec(cp, &op_ns)["renewTime"] != renewed
    });
    old.signal("KILL");
    assert!(old.wait_exit(Duration::from_secs(10)), "SIGKILL");
    // What the crashed leader left: its last renewal, which nobody will release.
    let left = lease_spec(cp, &op_ns);
    assert_eq!(left["holderIdentity"], leader.as_str(), "{left}");
    let duration = left["leaseDurationSeconds"].as_i64().unwrap();
    let mut taken = Value::Null;
    wait_until(
        Duration::from_secs(90),
        "the standby to take the expired Lease",
        || {
            taken = lease_spec(cp, &op_ns);
            taken["holderIdentity"] == standby_name
        },
    );
    let waited = micro(&taken["acquireTime"]).duration_since(micro(&left["renewTime"]));
    let waited = std::time::Duration::try_from(waited).unwrap_or_default();
    eprintln!(
        "leader election: SIGKILL to {leader}; {standby_name} acquired {:.1} s after the last \
         renewal (lease {duration} s)",
        waited.as_secs_f64()
    );
    // Never earlier than the term: both times come from this machine's clock.
    assert!(
        waited.as_secs_f64() >= duration as f64,
        "took over {waited:?} after the last renewal, within the {duration} s term:\n{left}\n{taken}"
    );
    assert_eq!(
        taken["leaseTransitions"].as_i64(),
        left["leaseTransitions"].as_i64().map(|t| t + 1),
        "one transition: {left}\n{taken}"
    );
    // The new leader writes.
    stdio_server(cp, &app, "after-crash");
    wait_until(Duration::from_secs(60), "the new leader reconciles", || {
        ready(cp, &app, "after-crash")
    });
    assert!(standby.alive(), "{}", standby.tail(20));
}

mod in_process {
    //! Electors in this process, each with its own client: one straight to the API server,
    //! one through a TCP proxy that the test can cut.

    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};
    use mcptrust::controller::leader::{Elector, Timings};
    use serde_json::json;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;
    use tokio::task::JoinSet;

    use super::common;
    use super::common::envtest::ControlPlane;

    /// A TCP proxy on 127.0.0.1 in front of the API server. [`Self::cut`] drops every
    /// connection and refuses new ones (closed at once) until [`Self::heal`].
    pub struct Proxy {
        pub addr: SocketAddr,
        cut: Arc<AtomicBool>,
        conns: Arc<Mutex<JoinSet<()>>>,
        /// Connections forwarded so far (the observer of traffic after a heal).
        pub forwarded: Arc<AtomicUsize>,
        accept: tokio::task::JoinHandle<()>,
    }

    impl Proxy {
        pub async fn start(upstream: SocketAddr) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let cut = Arc::new(AtomicBool::new(false));
            let conns: Arc<Mutex<JoinSet<()>>> = Arc::default();
            let forwarded = Arc::new(AtomicUsize::new(0));
            let (c, set, n) = (cut.clone(), conns.clone(), forwarded.clone());
            let accept = tokio::spawn(async move {
                loop {
                    let Ok((mut down, _)) = listener.accept().await else {
                        return;
                    };
                    if c.load(Ordering::SeqCst) {
                        drop(down);
                        continue;
                    }
                    n.fetch_add(1, Ordering::SeqCst);
                    set.lock().unwrap().spawn(async move {
                        if let Ok(mut up) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                }
            });
            Self {
                addr,
                cut,
                conns,
                forwarded,
                accept,
            }
        }

        /// Drops every open connection and refuses new ones.
        pub fn cut(&self) {
            self.cut.store(true, Ordering::SeqCst);
            self.conns.lock().unwrap().abort_all();
        }

        /// Forwards again.
        pub fn heal(&self) {
            self.cut.store(false, Ordering::SeqCst);
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.accept.abort();
            self.conns.lock().unwrap().abort_all();
        }
    }

    /// A client of `cp` as admin, through `via` (the proxy) when given.
    pub async fn client(cp: &ControlPlane, via: Option<SocketAddr>) -> kube::Client {
        let mut kc = kube::config::Kubeconfig::read_from(&cp.kubeconfig).unwrap();
        if let Some(addr) = via {
            for cluster in &mut kc.clusters {
                if let Some(c) = cluster.cluster.as_mut() {
                    c.server = Some(format!("https://{addr}"));
                }
            }
        }
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// The API server's address, from the admin kubeconfig's `https://127.0.0.1:PORT`.
    pub fn api_addr(cp: &ControlPlane) -> SocketAddr {
        cp.server.trim_start_matches("https://").parse().unwrap()
    }

    /// One successful write: who, the resourceVersion the API server gave it, when.
    #[derive(Clone, Debug)]
    pub struct Write {
        pub who: String,
        pub rv: u64,
        pub at: Instant,
    }

    /// Terms of leadership: (who, started, ended).
    pub type Terms = Arc<Mutex<Vec<(String, Instant, Option<Instant>)>>>;

    /// Runs an elector `who` whose work, while it leads, applies ConfigMap `writes`
    /// (`data.writer = who`, field manager `writer-<who>`, forced) every 200 ms and records
    /// each success in `writes`; every term goes into `terms`. Returns its stop sender and
    /// task.
    #[allow(clippy::too_many_arguments)]
    pub fn elect(
        client: kube::Client,
        ns: &str,
        lease: &str,
        who: &str,
        timings: Timings,
        terms: Terms,
        writes: Arc<Mutex<Vec<Write>>>,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let elector = Elector::new(client.clone(), ns, lease, who, timings);
        let cms: Api<ConfigMap> = Api::namespaced(client, ns);
        let who = who.to_owned();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            elector
                .run(stop_rx, |mut lost| {
                    let (cms, who, terms, writes) =
                        (cms.clone(), who.clone(), terms.clone(), writes.clone());
                    async move {
                        let term = {
                            let mut t = terms.lock().unwrap();
                            t.push((who.clone(), Instant::now(), None));
                            t.len() - 1
                        };
                        let manager = format!("writer-{who}");
                        loop {
                            let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "writes"}, "data": {"writer": who}});
                            let params = PatchParams::apply(&manager).force();
                            let patch = Patch::Apply(&body);
                            let write = cms.patch("writes", &params, &patch);
                            tokio::select! {
                                r = write => if let Ok(cm) = r {
                                    let rv = cm.metadata.resource_version.unwrap().parse().unwrap();
                                    writes.lock().unwrap().push(Write { who: who.clone(), rv, at: Instant::now() });
                                },
                                _ = lost.wait_for(|v| *v) => break,
                            }
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_millis(200)) => {},
                                _ = lost.wait_for(|v| *v) => break,
                            }
                        }
                        terms.lock().unwrap()[term].2 = Some(Instant::now());
                    }
                })
                .await;
        });
        (stop_tx, task)
    }

    /// Waits (polling every 50 ms, up to `limit`) for `cond`; panics with `what`.
    pub async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?}: {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn control_plane() -> Option<&'static ControlPlane> {
        common::envtest::control_plane()
    }
}

/// Timings of the in-process electors: client-go's proportions, shortened.
fn short_timings() -> mcptrust::controller::leader::Timings {
    mcptrust::controller::leader::Timings {
        lease_duration: Duration::from_secs(8),
        renew_deadline: Duration::from_secs(5),
        retry_period: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_standby_starts() {
    use in_process::*;
    use std::sync::{Arc, Mutex};
    let Some(cp) = control_plane() else { return };
    let ns = cp.namespace("leader-cut");
    let proxy = Proxy::start(api_addr(cp)).await;
    let terms: Terms = Arc::default();
    let writes: Arc<Mutex<Vec<Write>>> = Arc::default();
    let (stop_a, task_a) = elect(
        client(cp, Some(proxy.addr)).await,
        &ns,
        "cut",
        "a",
        short_timings(),
        terms.clone(),
        writes.clone(),
    );
    let count = |who: &str| {
        writes
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.who == who)
            .count()
    };
    eventually(Duration::from_secs(30), "a leads and writes", || {
        count("a") >= 3
    })
    .await;
    let (stop_b, task_b) = elect(
        client(cp, None).await,
        &ns,
        "cut",
        "b",
        short_timings(),
        terms.clone(),
        writes.clone(),
    );
    // b stands by while a renews.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count("b"), 0, "b wrote while a led");

    proxy.cut();
    let cut = Instant::now();
    eventually(Duration::from_secs(60), "b leads and writes", || {
        count("b") >= 3
    })
    .await;
    let t = terms.lock().unwrap().clone();
    let a_term = t.iter().find(|t| t.0 == "a").unwrap();
    let b_term = t.iter().find(|t| t.0 == "b").unwrap();
    let a_end = a_term.2.expect("a's work still running after b took over");
    eprintln!(
        "leader election (cut off): a stopped {} ms after the cut, b started {} ms after it",
        (a_end - cut).as_millis(),
        (b_term.1 - cut).as_millis()
    );
    assert!(a_end < b_term.1, "a's work overlapped b's: {t:?}");

    // Reconnected, a finds b's claim and stays a standby: its traffic flows again (the
    // observer works) and it writes nothing.
    proxy.heal();
    let before = proxy.forwarded.load(std::sync::atomic::Ordering::SeqCst);
    eventually(
        Duration::from_secs(30),
        "a reaches the API server again",
        || proxy.forwarded.load(std::sync::atomic::Ordering::SeqCst) > before,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = stop_a.send(true);
    let _ = stop_b.send(true);
    task_a.await.unwrap();
    task_b.await.unwrap();

    let w = writes.lock().unwrap().clone();
    let b_started = terms.lock().unwrap().iter().find(|t| t.0 == "b").unwrap().1;
    assert!(
        w.iter().filter(|w| w.who == "a").all(|w| w.at < b_started),
        "a wrote after b started leading: {w:?}"
    );
    let last_a = w
        .iter()
        .filter(|w| w.who == "a")
        .map(|w| w.rv)
        .max()
        .unwrap();
    let first_b = w
        .iter()
        .filter(|w| w.who == "b")
        .map(|w| w.rv)
        .min()
        .unwrap();
    assert!(
        last_a < first_b,
        "a wrote after b's first write (resourceVersions): {w:?}"
    );
    let terms_of = |who: &str| terms.lock().unwrap().iter().filter(|t| t.0 == who).count();
    assert_eq!(terms_of("a"), 1, "a led again");
    assert_eq!(terms_of("b"), 1);
    // The field managers of the ConfigMap: b's write owns `data.writer`; a's apply would
    // have taken it back.
    let cm = cp.kubectl(&[
        "-n",
        &ns,
        "get",
        "configmap",
        "writes",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    let cm: Value = serde_json::from_str(&cm).unwrap();
    let managers: Vec<&str> = cm["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(cm["data"]["writer"], "b", "{cm}");
    assert!(
        managers.contains(&"writer-b") && !managers.contains(&"writer-a"),
        "{managers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_acquiring_at_once_elect_exactly_one() {
    use in_process::*;
    use std::sync::{Arc, Mutex};
    let Some(cp) = control_plane() else { return };
    let ns = cp.namespace("leader-race");
    let terms: Terms = Arc::default();
    let writes: Arc<Mutex<Vec<Write>>> = Arc::default();
    let names = ["r1", "r2", "r3"];
    let mut clients = Vec::new();
    for _ in names {
        clients.push(client(cp, None).await);
    }
    // All three start together on a Lease that does not exist yet: each creates it.
    let mut electors = Vec::new();
    for (name, c) in names.iter().zip(clients) {
        electors.push((
            *name,
            elect(
                c,
                &ns,
                "race",
                name,
                short_timings(),
                terms.clone(),
                writes.clone(),
            ),
        ));
    }
    let leading = |terms: &Terms| {
        terms
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.2.is_none())
            .map(|t| t.0.clone())
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(30), "a leader", || {
        !leading(&terms).is_empty()
    })
    .await;
    // Over several retry periods, exactly one leads, the Lease names it, and only it writes.
    for _ in 0..20 {
        let now = leading(&terms);
        assert_eq!(now.len(), 1, "{:?}", terms.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = leading(&terms).remove(0);
    let lease = lease(cp, &ns, "race").expect("the Lease");
    assert_eq!(lease["spec"]["holderIdentity"], first.as_str(), "{lease}");
    assert_eq!(lease["spec"]["leaseTransitions"], 0, "{lease}");
    assert!(writes.lock().unwrap().iter().all(|w| w.who == first));

    // The leader steps down cleanly: the two standbys race for the released Lease (both
    // apply with the resourceVersion they read); exactly one wins.
    let (_, (stop, task)) = electors.iter().find(|(n, _)| *n == first).unwrap();
    let _ = stop.send(true);
    eventually(
        Duration::from_secs(30),
        "the first leader's release",
        || task.is_finished(),
    )
    .await;
    eventually(Duration::from_secs(30), "a second leader", || {
        leading(&terms).iter().any(|l| *l != first)
    })
    .await;
    for _ in 0..20 {
        assert_eq!(leading(&terms).len(), 1, "{:?}", terms.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No two terms ever overlapped.
    let mut t = terms.lock().unwrap().clone();
    t.sort_by_key(|t| t.1);
    for pair in t.windows(2) {
        let ended = pair[0].2.expect("an earlier term still running");
        assert!(ended <= pair[1].1, "overlapping terms: {t:?}");
    }
    assert_eq!(t.len(), 2, "{t:?}");
    for (_, (stop, _)) in &electors {
        let _ = stop.send(true);
    }
    for (_, (_, task)) in electors {
        task.await.unwrap();
    }
}
