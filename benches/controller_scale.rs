//! Controller scale, in-process: prints figures, asserts nothing about time.
//!
//! Run: `cargo bench --bench controller_scale` (`SERVERS=1000` by default).
//!
//! 1. **Build.** The pure work for `$SERVERS` McpServers, as the controller does it: one
//!    trust bundle each (its own private CA plus the Mozilla roots, whose PEM is computed
//!    once per process and shared), one ECDSA P-256 server certificate and one client
//!    certificate each, from one federation CA. Results are dropped as they are written,
//!    as the controller does.
//! 2. **First reconcile.** `reconcile()` for every McpServer against an in-memory API
//!    server (kube's `Client` over a tower-test mock that stores what it is sent and answers
//!    like the API server: GET, list, server-side apply, create, status): API calls made.
//! 3. **Steady state.** `reconcile()` again for every McpServer, with the status it wrote,
//!    a minute later, nothing changed: the API writes made (only the idempotent apply of the
//!    trust ConfigMap is expected; no Secret, event or status write), CPU per reconcile, and
//!    the requeue each returns (the next wake-up, which must be the resync or the
//!    renewal time, not a hot loop).
//!
//! 4. **Scrape.** The operator's `/metrics` after the steady state, with every McpServer's
//!    series: samples, size, and the time to encode it once.
//!
//! CPU time is user+system from /proc/self/stat; memory is VmRSS/VmHWM from
//! /proc/self/status (the whole process, including the mock API's store).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use mcptrust::api::McpServer;
use mcptrust::controller::{Context, ControllerConfig, ControllerMetrics, reconcile::reconcile};
use mcptrust::pki::bundle::{BundleOptions, CaInput, assemble};
use mcptrust::pki::issue::{CertificateAuthority, client_request, issue, server_request};
use serde_json::{Value, json};

const DAY: i64 = 86_400;
const NAMESPACES: usize = 10;

// ---------------------------------------------------------------------- measurement ------

fn cpu_secs() -> f64 {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

fn mem_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

struct Span {
    wall: Instant,
    cpu: f64,
}

impl Span {
    fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu: cpu_secs(),
        }
    }
    fn wall(&self) -> f64 {
        self.wall.elapsed().as_secs_f64()
    }
    fn cpu(&self) -> f64 {
        cpu_secs() - self.cpu
    }
}

// ------------------------------------------------------------------ in-memory API ------

#[derive(Default)]
struct ApiState {
    objects: HashMap<String, Value>,
    calls: BTreeMap<String, u64>,
    version: u64,
}

impl ApiState {
    fn reset_calls(&mut self) -> BTreeMap<String, u64> {
        std::mem::take(&mut self.calls)
    }
}

/// `(resource plural, is a collection)` of a path such as
/// `/api/v1/namespaces/agents/configmaps/x` or `/apis/apps/v1/deployments`.
fn classify(path: &str) -> (String, bool) {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let base = if segs.first() == Some(&"api") { 2 } else { 3 };
    let mut rest: &[&str] = segs.get(base..).unwrap_or(&[]);
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        rest = &rest[2..];
    }
    let plural = rest.first().copied().unwrap_or("").to_owned();
    (plural, rest.len() == 1)
}

fn respond(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": if code < 400 {"Success"} else {"Failure"},
           "reason": reason, "code": code, "message": reason})
}

/// What is kept of an object: everything, except the bulky data of the trust ConfigMaps
/// (the controller watches those metadata-only and never reads them back).
fn stored(path: &str, mut v: Value) -> Value {
    if path.contains("/configmaps/mcptrust-")
        && path.ends_with("-trust")
        && let Some(m) = v.as_object_mut()
    {
        m.remove("data");
        m.remove("binaryData");
    }
    v
}

fn handle(state: &Mutex<ApiState>, method: &Method, uri: &str, body: Value) -> Response<Body> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let (plural, collection) = classify(path);
    let mut st = state.lock().unwrap();
    *st.calls.entry(format!("{method} {plural}")).or_default() += 1;
    st.version += 1;
    let rv = st.version.to_string();
    match *method {
        Method::GET if collection || query.contains("watch=") => respond(
            StatusCode::OK,
            &json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": []}),
        ),
        Method::GET => match st.objects.get(path) {
            Some(v) => respond(StatusCode::OK, v),
            None => respond(StatusCode::NOT_FOUND, &status_body(404, "NotFound")),
        },
        Method::POST => {
            let name = body
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("generated-{rv}"));
            let key = format!("{path}/{name}");
            if plural != "events" && st.objects.contains_key(&key) {
                return respond(StatusCode::CONFLICT, &status_body(409, "AlreadyExists"));
            }
            let mut obj = body;
            obj["metadata"]["name"] = json!(name);
            obj["metadata"]["resourceVersion"] = json!(rv);
            if plural != "events" {
                st.objects.insert(key.clone(), stored(&key, obj.clone()));
            }
            respond(StatusCode::CREATED, &obj)
        }
        Method::PATCH | Method::PUT => {
            if let Some(parent) = path.strip_suffix("/status") {
                let mut obj = st
                    .objects
                    .get(parent)
                    .cloned()
                    .unwrap_or_else(|| body.clone());
                obj["status"] = body["status"].clone();
                obj["metadata"]["resourceVersion"] = json!(rv);
                st.objects.insert(parent.to_owned(), obj.clone());
                return respond(StatusCode::OK, &obj);
            }
            let mut obj = body;
            obj["metadata"]["resourceVersion"] = json!(rv);
            st.objects
                .insert(path.to_owned(), stored(path, obj.clone()));
            respond(StatusCode::OK, &obj)
        }
        Method::DELETE => match st.objects.remove(path) {
            Some(_) => respond(StatusCode::OK, &status_body(200, "Deleted")),
            None => respond(StatusCode::NOT_FOUND, &status_body(404, "NotFound")),
        },
        _ => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            &status_body(405, "MethodNotAllowed"),
        ),
    }
}

fn mock_api(state: Arc<Mutex<ApiState>>) -> Client {
    let (service, mut handle_) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((req, send)) = handle_.next_request().await {
            let method = req.method().clone();
            let uri = req.uri().to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            send.send_response(handle(&state, &method, &uri, body));
        }
    });
    Client::new(service, "default")
}

/// Answers every probe "verified" (the endpoints are cluster names).
struct StubProber;

impl mcptrust::controller::endpoint::Prober for StubProber {
    fn probe(
        &self,
        opts: mcptrust::probe::ProbeOptions,
    ) -> futures::future::BoxFuture<'_, mcptrust::probe::ProbeReport> {
        Box::pin(async move {
            serde_json::from_value(json!({
                "url": opts.url, "transport": "streamable-http", "verdict": "Ok", "ok": true,
                "exitCode": 0, "summary": "verified", "steps": []
            }))
            .expect("report")
        })
    }
}

fn context(client: Client, now: i64) -> Arc<Context> {
    let config = ControllerConfig {
        operator_namespace: "mcptrust".into(),
        ca_secret_name: "mcptrust-federation-ca".into(),
        ca_user_supplied: false,
        ca_validity_secs: 3650 * DAY,
        default_cas_pem: String::new(),
        default_include_system_roots: true,
        default_config_map: "mcptrust-trust".into(),
        egress: Default::default(),
        stale_certificate_grace_secs: mcptrust::controller::DEFAULT_STALE_CERTIFICATE_GRACE_SECS
            .into(),
    };
    Arc::new(
        Context::new(
            client,
            config,
            ControllerMetrics::default(),
            Arc::new(move || now),
            "bench",
        )
        .with_prober(Arc::new(StubProber)),
    )
}

/// The two populations: network servers with mTLS (probed every 5 minutes, certificates
/// renewed), and stdio servers that only need a trust bundle.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Mtls,
    Stdio,
}

fn mcpserver(kind: Kind, i: usize, status: Option<Value>) -> McpServer {
    let ns = format!("team-{}", i % NAMESPACES);
    let name = format!("mcp-{i:04}");
    let trust = json!({"includeSystemRoots": true,
                       "sources": [{"configMap": {"name": "corp-proxy-ca", "key": "ca.crt"}}]});
    let spec = match kind {
        Kind::Mtls => json!({
            "transport": "streamable-http",
            "endpoint": {"url": format!("https://{name}.{ns}.svc:8443/mcp/")},
            "podSelector": {"matchLabels": {"app": name}},
            "trust": trust,
            "mtls": {"clients": [{"name": "mcpgateway", "namespace": "gateway"}]}
        }),
        Kind::Stdio => json!({
            "transport": "stdio",
            "podSelector": {"matchLabels": {"app": name}},
            "trust": trust
        }),
    };
    let mut v = json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": name, "namespace": ns, "generation": 1,
                     "uid": format!("7c1e6c2e-0000-4000-8000-{i:012}")},
        "spec": spec
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    serde_json::from_value(v).expect("McpServer")
}

/// The seconds of an `Action`'s requeue (kube keeps the field private; its Debug shows it).
fn requeue_secs(action: &kube::runtime::controller::Action) -> Option<f64> {
    let text = format!("{action:?}");
    let inner = text.split("Some(").nth(1)?.split(')').next()?;
    humantime_secs(inner)
}

fn humantime_secs(s: &str) -> Option<f64> {
    // Debug of std Duration: "3600s", "1.5s", "250ms", "10µs", "5ns".
    for (suffix, scale) in [("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0)] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|v| v * scale);
        }
    }
    None
}

fn print_calls(label: &str, calls: &BTreeMap<String, u64>) {
    let total: u64 = calls.values().sum();
    let detail: Vec<String> = calls.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    println!("{label}: {total} API calls: {}", detail.join(", "));
}

async fn run(servers: usize) {
    let now = mcptrust::pki::bundle::unix_now();
    println!(
        "controller scale: {servers} McpServers in {NAMESPACES} namespaces, each with a trust \
         source (private CA + Mozilla roots), a server certificate and one client certificate"
    );
    println!(
        "process at start: VmRSS {}, VmHWM {}",
        mib(mem_kib("VmRSS:")),
        mib(mem_kib("VmHWM:"))
    );

    // 1. Pure build.
    let fed = CertificateAuthority::generate("mcptrust federation CA", now - DAY, 3650 * DAY)
        .expect("CA");
    let corp: Vec<CertificateAuthority> = (0..NAMESPACES)
        .map(|i| {
            CertificateAuthority::generate(&format!("Corp Proxy CA {i}"), now - DAY, 3650 * DAY)
                .expect("CA")
        })
        .collect();
    let opts = BundleOptions::at_now(true);
    // Warm the shared roots (computed once per process, as in the controller).
    let _ = assemble(&[CaInput::new("warm", corp[0].cert_pem.clone())], &opts);
    let rss0 = mem_kib("VmRSS:");
    let span = Span::start();
    let mut bytes = 0usize;
    let mut t_bundle = Duration::ZERO;
    let mut t_issue = Duration::ZERO;
    for i in 0..servers {
        let t = Instant::now();
        let input = [CaInput::new(
            "corp-proxy-ca/ca.crt",
            corp[i % NAMESPACES].cert_pem.clone(),
        )];
        let bundle = assemble(&input, &opts).expect("bundle");
        t_bundle += t.elapsed();
        let t = Instant::now();
        let name = format!("mcp-{i:04}");
        let ns = format!("team-{}", i % NAMESPACES);
        let url = format!("https://{name}.{ns}.svc:8443/mcp/");
        let server_cert = issue(
            &fed,
            &server_request(&name, &ns, Some(&url), None).expect("request"),
            now,
        )
        .expect("issue");
        let client_cert = issue(
            &fed,
            &client_request("mcpgateway", None).expect("request"),
            now,
        )
        .expect("issue");
        t_issue += t.elapsed();
        bytes += bundle.ca_bundle_pem.len()
            + bundle.ca_pem.len()
            + server_cert.cert_pem.len()
            + server_cert.key_pem.len()
            + client_cert.cert_pem.len()
            + client_cert.key_pem.len();
    }
    let (wall, cpu) = (span.wall(), span.cpu());
    println!();
    println!("| step ({servers} McpServers) | wall s | CPU s | per McpServer | memory |");
    println!("|---|---|---|---|---|");
    println!(
        "| build: {servers} bundles + {} certificates (pure) | {wall:.2} | {cpu:.2} | {:.2} ms (bundle {:.2} ms, 2 certificates {:.2} ms) | VmRSS +{} (VmHWM {}); {:.0} MiB of PEM written and dropped |",
        2 * servers,
        wall * 1e3 / servers as f64,
        t_bundle.as_secs_f64() * 1e3 / servers as f64,
        t_issue.as_secs_f64() * 1e3 / servers as f64,
        mib(mem_kib("VmRSS:").saturating_sub(rss0)),
        mib(mem_kib("VmHWM:")),
        bytes as f64 / 1048576.0
    );

    reconcile_population(Kind::Mtls, servers, &corp, now).await;
    reconcile_population(Kind::Stdio, servers, &corp, now).await;
}

async fn reconcile_population(kind: Kind, servers: usize, corp: &[CertificateAuthority], now: i64) {
    let label = match kind {
        Kind::Mtls => "streamable-http + mTLS (server and client certificates, endpoint probe)",
        Kind::Stdio => "stdio (trust bundle only)",
    };
    println!();
    println!("## {servers} McpServers: {label}");
    println!();
    println!("| step | wall s | CPU s | CPU per McpServer | memory |");
    println!("|---|---|---|---|---|");
    // 2. First reconcile against the in-memory API.
    let state = Arc::new(Mutex::new(ApiState::default()));
    {
        let mut st = state.lock().unwrap();
        for (i, ca) in corp.iter().enumerate() {
            st.objects.insert(
                format!("/api/v1/namespaces/team-{i}/configmaps/corp-proxy-ca"),
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "corp-proxy-ca", "namespace": format!("team-{i}"), "resourceVersion": "1"},
                       "data": {"ca.crt": ca.cert_pem}}),
            );
        }
        // The McpServers themselves, as the API server holds them (status is applied to them).
        for i in 0..servers {
            let obj = serde_json::to_value(mcpserver(kind, i, None)).expect("json");
            st.objects.insert(
                format!(
                    "/apis/mcptrust.io/v1alpha1/namespaces/team-{}/mcpservers/mcp-{i:04}",
                    i % NAMESPACES
                ),
                obj,
            );
        }
    }
    let client = mock_api(state.clone());
    let ctx = context(client.clone(), now);
    let rss1 = mem_kib("VmRSS:");
    let span = Span::start();
    let mut errors = 0;
    for i in 0..servers {
        if let Err(e) = reconcile(Arc::new(mcpserver(kind, i, None)), ctx.clone()).await {
            if errors == 0 {
                println!("first reconcile error: {e}");
            }
            errors += 1;
        }
    }
    let (wall, cpu) = (span.wall(), span.cpu());
    let first_calls = state.lock().unwrap().reset_calls();
    println!(
        "| first reconcile of each (creates bundle, CA, certificates, status) | {wall:.2} | {cpu:.2} | {:.2} ms CPU | VmRSS +{} (VmHWM {}), mock API store included |",
        cpu * 1e3 / servers as f64,
        mib(mem_kib("VmRSS:").saturating_sub(rss1)),
        mib(mem_kib("VmHWM:"))
    );

    // 3. Steady state, a minute later, with the status written by the first pass.
    let statuses: Vec<Option<Value>> = {
        let st = state.lock().unwrap();
        (0..servers)
            .map(|i| {
                let key = format!(
                    "/apis/mcptrust.io/v1alpha1/namespaces/team-{}/mcpservers/mcp-{i:04}",
                    i % NAMESPACES
                );
                st.objects.get(&key).map(|o| o["status"].clone())
            })
            .collect()
    };
    let ctx = context(client, now + 60);
    let span = Span::start();
    let mut requeues: Vec<f64> = Vec::new();
    let mut steady_errors = 0;
    for (i, status) in statuses.into_iter().enumerate() {
        match reconcile(Arc::new(mcpserver(kind, i, status)), ctx.clone()).await {
            Ok(action) => requeues.extend(requeue_secs(&action)),
            Err(_) => steady_errors += 1,
        }
    }
    let (wall, cpu) = (span.wall(), span.cpu());
    let steady_calls = state.lock().unwrap().reset_calls();
    requeues.sort_by(f64::total_cmp);
    let per = cpu / servers as f64;
    let min_requeue = requeues.first().copied().unwrap_or(0.0);
    println!(
        "| steady-state reconcile of each (nothing changed) | {wall:.2} | {cpu:.2} | {:.2} ms CPU | VmHWM {} |",
        per * 1e3,
        mib(mem_kib("VmHWM:"))
    );
    println!();
    print_calls("first pass", &first_calls);
    print_calls("steady state", &steady_calls);
    let writes: u64 = steady_calls
        .iter()
        .filter(|(k, _)| !k.starts_with("GET"))
        .map(|(_, v)| v)
        .sum();
    println!(
        "steady state: {writes} writes for {servers} McpServers ({} errors, first pass {errors} errors)",
        steady_errors
    );
    println!(
        "requeue after a steady-state reconcile: min {:.0} s, median {:.0} s, max {:.0} s ({} actions)",
        min_requeue,
        requeues.get(requeues.len() / 2).copied().unwrap_or(0.0),
        requeues.last().copied().unwrap_or(0.0),
        requeues.len()
    );
    // The operator's /metrics with every McpServer's series, as a scrape renders it.
    let registry = mcptrust::metrics::Metrics::new();
    registry.register_with(|r| ctx.metrics.register(r));
    // Wall time only: /proc's CPU ticks (10 ms) are coarser than one encode.
    let started = Instant::now();
    let text = registry.encode();
    let wall = started.elapsed().as_secs_f64();
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("namespace=\""))
        .count();
    println!(
        "/metrics: {samples} per-McpServer samples ({:.1} per McpServer), {} KiB, one scrape encoded in {:.1} ms",
        samples as f64 / servers as f64,
        text.len() / 1024,
        wall * 1e3
    );
    if min_requeue > 0.0 {
        println!(
            "idle cost: {servers} McpServers x {:.2} ms CPU every {:.0} s or later = {:.4}% of one core on average",
            per * 1e3,
            min_requeue,
            100.0 * per * servers as f64 / min_requeue
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let servers: usize = std::env::var("SERVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(servers));
}
