//! The JSON readers of issue 15 compared on the AdmissionReview fixtures of
//! `tests/fixtures/admission/`: speed (criterion group `parse`) and strictness (a table
//! printed first: which reader accepts a body whose skipped part is invalid JSON that
//! `serde_json::from_slice` refuses).
//!
//! - `serde_json-value`: `serde_json::from_slice::<Value>`, the whole body (the reference
//!   for strictness);
//! - `view-serde`: `mcptrust::inject::view::parse_review_serde`, the webhook's reader until
//!   issue 15 (serde_json, keeps only what the injector reads, validates the rest), now its
//!   reference and fallback;
//! - `view`: `mcptrust::inject::view::parse_review`, the webhook's reader: the view driven
//!   by sonic-rs's streaming serde `Deserializer`, nesting at most 64 deep; a body it
//!   refuses goes through `view-serde`;
//! - `view-on-sonic`: the same view on sonic-rs's `Deserializer` through
//!   `parse_review_from`, without the fallback (serde_json's 127-level limit);
//! - `sonic-value`: `sonic_rs::from_slice::<sonic_rs::Value>`, sonic-rs's own document;
//! - `sonic-lazy`: `sonic_rs::get_many` of the subtrees the injector reads (`request.uid`,
//!   the object's `metadata` and `spec`), left as raw text: a lower bound for a lazy
//!   reader, which would still have to parse those subtrees into the injector's `Value`;
//! - `simd-json-borrowed`: `simd_json::to_borrowed_value` on a copy of the body (it parses
//!   in place), the copy included.
//!
//! Run: `cargo bench --bench json_readers`. `JSON_READERS_PROFILE=<reader>:<fixture>:N`
//! runs one reader N times without criterion, for `valgrind --tool=callgrind`.

/// The binary's allocator, so that the figures are those of `mcptrust` as shipped.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use mcptrust::inject::view;
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
        "pod-large",
        include_bytes!("../tests/fixtures/admission/pod-large.json"),
    ),
];

type Reader = fn(&[u8]) -> bool;

/// Each reader: true when it accepts the body.
const READERS: &[(&str, Reader)] = &[
    ("serde_json-value", |b| {
        serde_json::from_slice::<Value>(b).is_ok()
    }),
    ("view-serde", |b| view::parse_review_serde(b).is_ok()),
    ("view", |b| view::parse_review(b).is_ok()),
    ("view-on-sonic", |b| {
        let mut de = sonic_rs::Deserializer::from_slice(b);
        view::parse_review_from(&mut de).is_ok() && de.end().is_ok()
    }),
    ("sonic-value", |b| {
        sonic_rs::from_slice::<sonic_rs::Value>(b).is_ok()
    }),
    ("sonic-lazy", sonic_lazy),
    ("simd-json-borrowed", |b| {
        let mut copy = b.to_vec();
        simd_json::to_borrowed_value(&mut copy).is_ok()
    }),
];

/// The subtrees the injector reads, found by sonic-rs's lazy getter and not parsed.
fn sonic_lazy(body: &[u8]) -> bool {
    let mut tree = sonic_rs::PointerTree::new();
    tree.add_path(["request", "uid"].iter());
    tree.add_path(["request", "object", "metadata"].iter());
    tree.add_path(["request", "object", "spec"].iter());
    sonic_rs::get_many(body, &tree).is_ok()
}

/// Bodies that `serde_json::from_slice` refuses because of a part the view skips
/// (`request.object.status`), as in the view's test `skipped_parts_are_as_strict_as_a_value_parse`,
/// plus other invalid numbers and strings, and nesting deeper than serde_json's limit
/// (127 levels accepted, 128 refused); a few valid bodies as controls.
fn strictness_cases() -> Vec<(&'static str, Vec<u8>)> {
    let skipped = |inner: &[u8]| {
        let mut body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":{"metadata":{},"spec":{},"status":{"x": "#.to_vec();
        body.extend_from_slice(inner);
        body.extend_from_slice(br#"}}}}"#);
        body
    };
    let deep = {
        let mut v = b"[".repeat(200);
        v.extend_from_slice(&b"]".repeat(200));
        v
    };
    vec![
        ("valid (control)", skipped(b"[1e308, -0, \"a\\\"b\"]")),
        ("number out of range 1.5e+3018", skipped(b"1.5e+3018")),
        ("invalid UTF-8 in a string", skipped(b"\"\xff\xfe\"")),
        ("lone surrogate \\ud800", skipped(br#""\ud800""#)),
        ("bad escape \\q", skipped(br#""\q""#)),
        ("bare minus", skipped(b"-")),
        ("200 nested arrays", skipped(&deep)),
        ("control character in a string", skipped(b"\"a\x01b\"")),
        ("leading zero 01", skipped(b"01")),
        ("trailing comma [1,]", skipped(b"[1,]")),
        ("trailing comma in an object", skipped(br#"{"a":1,}"#)),
        ("NaN", skipped(b"NaN")),
        ("Infinity", skipped(b"Infinity")),
        ("1.", skipped(b"1.")),
        (".5", skipped(b".5")),
        ("+1", skipped(b"+1")),
        ("1e", skipped(b"1e")),
        ("truncated \\u00", skipped(br#""\u00""#)),
        ("form feed as whitespace", skipped(b"\x0c1")),
        ("1e-400 (underflow, valid)", skipped(b"1e-400")),
        ("2^64 (valid, a float)", skipped(b"18446744073709551616")),
        (
            "800-digit integer (out of range)",
            skipped(&b"9".repeat(800)),
        ),
        (
            "escaped surrogate pair (valid)",
            skipped(br#""\ud83d\ude00""#),
        ),
        (
            "DEL and U+2028 raw (valid)",
            skipped("\"\u{7f}\u{2028}\"".as_bytes()),
        ),
        ("duplicate keys (valid)", skipped(br#"{"a":1,"a":2}"#)),
        ("127 nested arrays and objects (valid)", nested(127)),
        ("128 nested arrays and objects", nested(128)),
    ]
}

/// `depth` nested arrays and objects in total, counting the review's own 3 objects.
fn nested(depth: usize) -> Vec<u8> {
    let inner = depth - 3;
    let mut body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":{"status":"#.to_vec();
    body.extend_from_slice(&b"[".repeat(inner));
    body.extend_from_slice(&b"]".repeat(inner));
    body.extend_from_slice(b"}}}");
    body
}

fn print_strictness() {
    println!("strictness (accepts the body?):");
    print!("{:40}", "case");
    for (reader, _) in READERS {
        print!(" | {reader}");
    }
    println!();
    for (case, body) in strictness_cases() {
        print!("{case:40}");
        for (reader, accepts) in READERS {
            let yes = accepts(&body);
            print!(
                " | {:>w$}",
                if yes { "accepts" } else { "refuses" },
                w = reader.len()
            );
        }
        println!();
    }
}

fn bench(c: &mut Criterion) {
    print_strictness();
    let mut group = c.benchmark_group("parse");
    for (name, body) in FIXTURES {
        group.throughput(Throughput::Bytes(body.len() as u64));
        for (reader, read) in READERS {
            assert!(read(body), "{reader} refuses {name}");
            group.bench_function(format!("{name}/{reader}"), |b| {
                b.iter(|| read(black_box(body)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);

/// `JSON_READERS_PROFILE=view:pod-typical:2000`: one reader on one fixture N times.
fn profile(spec: &str) {
    let mut parts = spec.split(':');
    let reader = parts.next().unwrap_or("view");
    let fixture = parts.next().unwrap_or("pod-typical");
    let n: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let Some((_, read)) = READERS.iter().find(|(r, _)| *r == reader) else {
        println!("no reader {reader}");
        return;
    };
    let Some((_, body)) = FIXTURES.iter().find(|(f, _)| *f == fixture) else {
        println!("no fixture {fixture}");
        return;
    };
    let accepted = (0..n).filter(|_| read(black_box(body))).count();
    println!("{reader} on {fixture}: {accepted} of {n} accepted");
}

fn main() {
    if let Ok(spec) = std::env::var("JSON_READERS_PROFILE") {
        profile(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
