//! Criterion benchmarks of the injector: the cost of computing the JSONPatch for one pod,
//! on small (1 container), typical (seed-000 sandbox: init + main container) and large
//! (1 init + 12 containers with env and mounts) pods, plus the patch application.
//! Run: `cargo bench --bench inject`.

/// The binary's allocator, so that the figures are those of `mcptrust` as shipped.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, criterion_group, criterion_main};
use mcptrust::inject::{InjectConfig, Injection, inject};
use serde_json::{Value, json};
use std::hint::black_box;

fn small() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "agents"},
           "spec": {"containers": [{"name": "server", "image": "node:22"}]}})
}

fn typical() -> Value {
    let text = include_str!("../examples/sandbox-pod.yaml");
    serde_saphyr::from_str(text).unwrap_or(Value::Null)
}

fn large() -> Value {
    let containers: Vec<Value> = (0..12)
        .map(|i| {
            json!({"name": format!("c{i}"), "image": "ghcr.io/example/tool:1",
                   "env": (0..10).map(|j| json!({"name": format!("VAR_{j}"), "value": "x"})).collect::<Vec<_>>(),
                   "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                   "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "big", "namespace": "agents", "labels": {"app": "big"},
                        "annotations": {"a.example/x": "1", "b.example/y": "2"}},
           "spec": {"initContainers": [{"name": "init", "image": "busybox"}],
                    "containers": containers, "volumes": [{"name": "work", "emptyDir": {}}]}})
}

fn bench(c: &mut Criterion) {
    let mut cfg = InjectConfig::sandbox_demo();
    cfg.trust_bundle_sha256 = Some("ab".repeat(32));
    let inj = Injection::resolve(&cfg, None);
    let mut group = c.benchmark_group("inject");
    for (name, pod) in [
        ("small", small()),
        ("typical", typical()),
        ("large", large()),
    ] {
        group.bench_function(format!("{name}/patch"), |b| {
            b.iter(|| inject(black_box(&pod), black_box(&inj)))
        });
        group.bench_function(format!("{name}/patch+apply"), |b| {
            b.iter(|| {
                let out = inject(black_box(&pod), &inj)
                    .map(|o| o.patch.to_json_patch())
                    .unwrap_or_default();
                let mut p = pod.clone();
                let _ = json_patch::patch(&mut p, &out);
                p
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
