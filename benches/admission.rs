//! Criterion benchmarks of one AdmissionReview: the request body decoded, the object
//! injected (embedded default config), the answer encoded (`review` + `encode_review`),
//! on the realistic bodies of `tests/fixtures/admission/` (2 to 20 KB, API-server shaped,
//! with managedFields and the kube-api-access volume), plus the second pass on an
//! already-injected pod (the answer is an empty allow). `cluster-<n>/review+encode` answers
//! pod-typical with the webhook's cluster resolver over a cache of `n` McpServers (1 and
//! 1,000 spread over 50 namespaces, and 10,000 all in the pod's namespace; the one selecting
//! the pod sorts last in its namespace and carries a proxy and env): how the answer's cost
//! grows with the cluster.
//! Run: `cargo bench --bench admission`. Profiling workload: see [`profile`].

/// The binary's allocator, so that the figures are those of `mcptrust` as shipped.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::{reflector, watcher};
use mcptrust::api::McpServer;
use mcptrust::controller::resolver::{Caches, ClusterMutator};
use mcptrust::inject::{InjectConfig, Mutator, StaticMutator};
use mcptrust::webhook::admission::{Answer, encode_review, review};
use serde_json::Value;

const FIXTURES: &[(&str, &[u8])] = &[
    (
        "pod-sandbox",
        include_bytes!("../tests/fixtures/admission/pod-sandbox.json"),
    ),
    (
        "pod-typical",
        include_bytes!("../tests/fixtures/admission/pod-typical.json"),
    ),
    (
        "pod-gateway",
        include_bytes!("../tests/fixtures/admission/pod-gateway.json"),
    ),
    (
        "pod-large",
        include_bytes!("../tests/fixtures/admission/pod-large.json"),
    ),
    (
        "deployment",
        include_bytes!("../tests/fixtures/admission/deployment.json"),
    ),
];

/// `encode_review` as it was before the fix of this issue: the whole review through
/// `serde_json::to_value`, which turns `response.patch` (a `Vec<u8>`) into one JSON number
/// per byte before it is replaced by base64. Kept to measure the difference.
fn encode_review_before_fix(
    review: &kube::core::admission::AdmissionReview<kube::core::DynamicObject>,
) -> Vec<u8> {
    let mut value = serde_json::to_value(review).unwrap_or_default();
    if let Some(patch) = review.response.as_ref().and_then(|r| r.patch.as_ref())
        && let Some(slot) = value.pointer_mut("/response/patch")
    {
        *slot = Value::String(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

/// kube's form of an answer: the patch's JSON in `response.patch` (`with_patch`).
fn kube_form(answer: &Answer) -> kube::core::admission::AdmissionReview<kube::core::DynamicObject> {
    answer
        .to_kube_review()
        .unwrap_or_else(|_| answer.review.clone())
}

/// The body with its object replaced by the patched object (what a second pass sees).
fn injected(body: &[u8], mutator: &StaticMutator) -> Vec<u8> {
    let (r, _) = review(body, mutator);
    let wire: Value = serde_json::from_slice(&encode_review(&r)).unwrap_or_default();
    let raw = wire["response"]["patch"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    let patch: json_patch::Patch = serde_json::from_slice(&raw).unwrap_or_default();
    let mut root: Value = serde_json::from_slice(body).unwrap_or_default();
    if let Some(object) = root.pointer_mut("/request/object") {
        let _ = json_patch::patch(object, &patch);
    }
    serde_json::to_vec(&root).unwrap_or_default()
}

/// A [`ClusterMutator`] over `n` McpServers in `namespaces` namespaces (`ns-0`,
/// `ns-1`..., with `agents` as `ns-0`): in `agents`, `zz-github` selects pod-typical
/// (`app.kubernetes.io/name: github-mcp`) and sets a proxy and an env variable; every other
/// McpServer selects other pods. `zz-github` sorts last by name in its namespace: a
/// resolver that scanned the namespace would look at every McpServer first.
fn cluster_mutator(n: usize, namespaces: usize) -> ClusterMutator {
    let (servers, mut writer) = reflector::store::<McpServer>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for i in 0..n {
        let (ns, name, app) = match i {
            0 => (
                "agents".to_string(),
                "zz-github".to_string(),
                "github-mcp".to_string(),
            ),
            _ => (
                format!("ns-{}", i % namespaces),
                format!("mcp-{i}"),
                format!("app-{i}"),
            ),
        };
        let ns = if ns == "ns-0" {
            "agents".to_string()
        } else {
            ns
        };
        let server: McpServer = serde_json::from_value(serde_json::json!({
            "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"endpoint": {"url": format!("https://{name}.{ns}.svc:8443/mcp/")},
                     "podSelector": {"matchLabels": {"app.kubernetes.io/name": app}},
                     "proxy": {"httpsProxy": "http://10.200.0.1:3128",
                               "noProxy": ["internal.example.com", "10.0.0.0/8"]},
                     "env": [{"name": "MCP_LOG_LEVEL", "value": "info"}]},
            "status": {"trustBundle": {"configMapName": format!("mcptrust-{name}-trust"),
                                       "sha256": "ab".repeat(32), "certificates": 147}}
        }))
        .unwrap_or_else(|e| panic!("McpServer: {e}"));
        writer.apply_watcher_event(&watcher::Event::InitApply(server));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let (secrets, _) = reflector::store::<PartialObjectMeta<Secret>>();
    let (config_maps, _) = reflector::store::<PartialObjectMeta<ConfigMap>>();
    ClusterMutator::new(
        InjectConfig::sandbox_demo(),
        Caches::new(servers, secrets, config_maps),
    )
}

fn bench(c: &mut Criterion) {
    let mut config = InjectConfig::sandbox_demo();
    config.trust_bundle_sha256 = Some("ab".repeat(32));
    let mutator = StaticMutator::new(&config, None);
    let mut group = c.benchmark_group("admission");
    for (name, body) in FIXTURES {
        let (r, outcome) = review(body, &mutator);
        let answer = encode_review(&r).len();
        println!(
            "{name}: request {} bytes, answer {answer} bytes, outcome {}",
            body.len(),
            outcome.as_str()
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("{name}/review+encode"), |b| {
            b.iter(|| {
                let (r, outcome) = review(black_box(body), &mutator);
                (encode_review(&r), outcome)
            })
        });
    }
    let (typical, _) = review(FIXTURES[1].1, &mutator);
    let kube_typical = kube_form(&typical);
    group.throughput(Throughput::Elements(1));
    group.bench_function("pod-typical/encode_review", |b| {
        b.iter(|| encode_review(black_box(&typical)))
    });
    // The answer as it was before the patch was streamed: kube's `with_patch` (the patch's
    // `Value`s serialized to JSON bytes), then those bytes base64'd into the answer.
    group.bench_function("pod-typical/with_patch+encode_review", |b| {
        b.iter(|| encode_review(&kube_form(black_box(&typical)).into()))
    });
    group.bench_function("pod-typical/encode_review-before-fix", |b| {
        b.iter(|| encode_review_before_fix(black_box(&kube_typical)))
    });
    // 1 and 1,000 McpServers over 50 namespaces; 10,000 all in the pod's namespace.
    for (n, namespaces, label) in [
        (1, 50, "cluster-1"),
        (1000, 50, "cluster-1000"),
        (10_000, 1, "cluster-10000-one-namespace"),
    ] {
        let cluster = cluster_mutator(n, namespaces);
        let body = FIXTURES[1].1;
        let (r, outcome) = review(body, &cluster);
        println!(
            "{label}: answer {} bytes, outcome {}",
            encode_review(&r).len(),
            outcome.as_str()
        );
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{label}/review+encode"), |b| {
            b.iter(|| {
                let (r, outcome) = review(black_box(body), &cluster);
                (encode_review(&r), outcome)
            })
        });
    }
    let again = injected(FIXTURES[1].1, &mutator);
    group.throughput(Throughput::Bytes(again.len() as u64));
    group.bench_function("pod-typical-injected/review+encode", |b| {
        b.iter(|| {
            let (r, outcome) = review(black_box(&again), &mutator);
            (encode_review(&r), outcome)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);

/// `ADMISSION_PROFILE=pod-typical:1000` runs `review` + `encode_review` on that fixture that
/// many times and exits, without criterion: a fixed workload for `perf` or
/// `valgrind --tool=callgrind` (instructions per review = difference between two counts
/// divided by the difference in iterations). `ADMISSION_ENCODE=before-fix` uses
/// [`encode_review_before_fix`] instead. `cluster-1000:N` answers pod-typical with the
/// cluster resolver over 1,000 McpServers ([`cluster_mutator`]).
fn profile(spec: &str) {
    let (name, n) = spec.split_once(':').unwrap_or((spec, "1000"));
    let n: usize = n.parse().unwrap_or(1000);
    let cluster = name
        .strip_prefix("cluster-")
        .and_then(|servers| servers.parse().ok());
    let body = FIXTURES
        .iter()
        .find(|(f, _)| *f == name)
        .map(|(_, b)| *b)
        .unwrap_or(FIXTURES[1].1);
    let mut config = InjectConfig::sandbox_demo();
    config.trust_bundle_sha256 = Some("ab".repeat(32));
    let mutator: Box<dyn Mutator> = match cluster {
        Some(servers) => Box::new(cluster_mutator(servers, 50)),
        None => Box::new(StaticMutator::new(&config, None)),
    };
    let mutator = mutator.as_ref();
    let before = std::env::var("ADMISSION_ENCODE").is_ok_and(|v| v == "before-fix");
    let mut bytes = 0;
    for _ in 0..n {
        let (r, _) = review(black_box(body), mutator);
        bytes += if before {
            encode_review_before_fix(&kube_form(&r)).len()
        } else {
            encode_review(&r).len()
        };
    }
    println!("{n} reviews of {name}: {bytes} bytes answered");
}

fn main() {
    if let Ok(spec) = std::env::var("ADMISSION_PROFILE") {
        profile(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
