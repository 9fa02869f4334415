//! The injector's view of an AdmissionReview: the request body parsed into a
//! `serde_json::Value` that keeps only the fields a [`Mutator`](super::Mutator) reads, and
//! reads the rest without keeping or allocating it.
//!
//! Why: building a `Value` is the webhook's main cost (one allocation per string, map and
//! array; about 80 µs for an 8.7 KB API-server pod on the benchmark machine, more than the
//! TLS and HTTP work together). An API-server pod is mostly `managedFields`, probes,
//! resources, ports and `status`, which the injector never reads: a typical pod keeps about
//! a third of its bytes. Skipped parts are read as strictly as the rest, without being
//! kept ([`Discard`]): the view accepts exactly the bodies `serde_json::from_slice` accepts
//! (UTF-8, escapes, number ranges, depth), which the fuzzer checks. `serde::de::IgnoredAny`
//! would not: it skips strings and numbers without checking them.
//!
//! Kept, for the object of `request.object` (a Pod or a workload), at the top level and in
//! every pod template (`spec.template`, `spec.jobTemplate.spec.template`):
//! - `apiVersion`, `kind`;
//! - `metadata.{name, generateName, namespace, labels, annotations}`;
//! - `spec.volumes`, whole;
//! - `spec.{shareProcessNamespace, hostPID}` and `securityContext.{runAsUser, runAsGroup,
//!   runAsNonRoot}` of the pod and of each container (the reloader sidecar's refusals and
//!   its user);
//! - `spec.{containers, initContainers}[*].{name, env, volumeMounts}`;
//! - `spec.template` and `spec.jobTemplate` (a workload's pod template, a CronJob's Job
//!   template), by these same rules.
//!
//! The body is read by sonic-rs (SIMD) with serde_json as the reference and fallback; see
//! [`parse_review`].
//!
//! A field of the wrong JSON type is kept as received, so the injector still reports it
//! as malformed. The fuzz harness (`fuzz/src/lib.rs`, property 5) checks that the injector
//! answers the same on the view as on the whole object, for every input it runs, and
//! `tests/fuzz_regressions.rs` replays it on every fixture under `cargo test`.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Which fields are kept below a point of the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Everything, as a plain `Value`.
    All,
    /// The AdmissionReview: every field; `request` as [`Shape::Request`].
    Review,
    /// The AdmissionRequest: every field; `object` as [`Shape::Object`]; `oldObject` skipped.
    Request,
    /// A Pod, a workload, or a pod template: `apiVersion`, `kind`, `metadata`, `spec`.
    Object,
    /// Object metadata: name, generateName, namespace, labels, annotations.
    Meta,
    /// A pod spec or a workload spec: containers, initContainers, volumes,
    /// shareProcessNamespace, hostPID, securityContext, template, jobTemplate.
    Spec,
    /// An array of containers, each as [`Shape::Container`].
    Containers,
    /// A container: name, env, volumeMounts, securityContext (as [`Shape::RunAs`]).
    Container,
    /// A pod's or container's securityContext: runAsUser, runAsGroup, runAsNonRoot.
    RunAs,
}

impl Shape {
    /// The shape of the value under `key`, or `None` to skip it.
    fn child(self, key: &str) -> Option<Shape> {
        match self {
            Shape::All => Some(Shape::All),
            Shape::Review => Some(if key == "request" {
                Shape::Request
            } else {
                Shape::All
            }),
            Shape::Request => match key {
                "object" => Some(Shape::Object),
                "oldObject" => None,
                _ => Some(Shape::All),
            },
            Shape::Object => match key {
                "apiVersion" | "kind" => Some(Shape::All),
                "metadata" => Some(Shape::Meta),
                "spec" => Some(Shape::Spec),
                _ => None,
            },
            Shape::Meta => match key {
                "name" | "generateName" | "namespace" | "labels" | "annotations" => {
                    Some(Shape::All)
                }
                _ => None,
            },
            Shape::Spec => match key {
                "containers" | "initContainers" => Some(Shape::Containers),
                "volumes" | "shareProcessNamespace" | "hostPID" => Some(Shape::All),
                "securityContext" => Some(Shape::RunAs),
                // A workload's pod template, and a CronJob's Job template: both hold
                // `metadata` and `spec`.
                "template" | "jobTemplate" => Some(Shape::Object),
                _ => None,
            },
            Shape::Containers => Some(Shape::All),
            Shape::Container => match key {
                "name" | "env" | "volumeMounts" => Some(Shape::All),
                "securityContext" => Some(Shape::RunAs),
                _ => None,
            },
            Shape::RunAs => match key {
                "runAsUser" | "runAsGroup" | "runAsNonRoot" => Some(Shape::All),
                _ => None,
            },
        }
    }

    /// The shape of each element when the value is an array.
    fn element(self) -> Shape {
        match self {
            Shape::Containers => Shape::Container,
            _ => Shape::All,
        }
    }
}

/// serde_json's nesting limit: a document may hold 127 nested arrays and objects, the
/// 128th is refused ("recursion limit exceeded"; `remaining_depth` starts at 128 in
/// serde_json's `Deserializer`). The view enforces the same limit itself, so that it refuses
/// what serde_json refuses whichever parser drives it (sonic-rs allows 255).
const MAX_DEPTH: u8 = 127;

/// The deepest nesting read through sonic-rs; a deeper body is read by serde_json alone
/// (an API-server pod nests about 15 levels, managedFields included). Its serde
/// `Deserializer` recurses through the view's visitors once per level, and an unoptimised
/// (debug) build spends about 19 KiB of stack per level there: 127 levels would overflow a
/// 2 MiB thread stack (a test thread's, a tokio worker's) in a debug build.
const SONIC_MAX_DEPTH: u8 = 64;

/// A nesting depth (the number of arrays and objects around a value) and the deepest
/// allowed.
#[derive(Clone, Copy, Debug)]
struct Depth {
    at: u8,
    limit: u8,
}

impl Depth {
    /// The top of a document, nesting at most `limit` deep.
    fn top(limit: u8) -> Self {
        Self { at: 0, limit }
    }

    /// The depth of a container's children, or the nesting error.
    fn nested<E: de::Error>(self) -> Result<Depth, E> {
        if self.at >= self.limit {
            return Err(E::custom("recursion limit exceeded"));
        }
        Ok(Depth {
            at: self.at + 1,
            limit: self.limit,
        })
    }
}

/// A [`Shape`] at a nesting [`Depth`].
#[derive(Clone, Copy, Debug)]
struct Seed {
    shape: Shape,
    depth: Depth,
}

impl Seed {
    /// A review (`Shape::Review`) nesting at most `limit` deep.
    fn review(limit: u8) -> Self {
        Self {
            shape: Shape::Review,
            depth: Depth::top(limit),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let element = Seed {
            shape: self.shape.element(),
            depth: self.depth.nested()?,
        };
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(element)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.depth.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match self.shape.child(&key) {
                Some(shape) => {
                    let value = map.next_value_seed(Seed { shape, depth })?;
                    out.insert(key, value);
                }
                None => map.next_value_seed(Discard(depth))?,
            }
        }
        Ok(Value::Object(out))
    }
}

/// Reads one JSON value completely, with the checks of a `Value` parse (strings decoded and
/// checked, numbers parsed and range-checked, depth limited), and keeps nothing. Strings
/// without escapes are borrowed from the input, so nothing is allocated. The field is the
/// nesting depth of the value, as in [`Seed`].
#[derive(Clone, Copy, Debug)]
struct Discard(Depth);

impl<'de> DeserializeSeed<'de> for Discard {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Discard {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = Discard(self.0.nested()?);
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = Discard(self.0.nested()?);
        // Keys are decoded and checked as a `Value` parse does.
        while map.next_key_seed(inner)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// Parses an AdmissionReview body (JSON bytes) into a `Value` holding every field of the
/// review and of its request, except `request.oldObject` (dropped) and the parts of
/// `request.object` the injector does not read (see the module documentation).
///
/// The view is read through sonic-rs's streaming serde `Deserializer` (SIMD string and
/// number scanning: about 0.74x the instructions of the same view on serde_json, on an
/// API-server pod). A body it refuses is parsed again by [`parse_review_serde`], whose
/// answer (the view, or serde_json's error and its message) is returned: so the view
/// accepts exactly the bodies `serde_json::from_slice` accepts, as long as sonic-rs refuses
/// everything serde_json refuses, which `benches/json_readers.rs` (a table of invalid
/// bodies), the unit tests below and the fuzz harness (property 6, `fuzz/src/lib.rs`) check.
/// The nesting limit is the view's own: sonic-rs allows 255, serde_json 127 ([`MAX_DEPTH`]);
/// bodies nesting deeper than [`SONIC_MAX_DEPTH`] (64) are left to serde_json.
///
/// sonic-rs's `Value` (its arena document) would parse in fewer instructions, but its
/// parser recurses once per nesting level with no limit (cloudwego/sonic-rs#239, open as of
/// 0.5.10: 10,000 nested `[` overflow a 2 MiB thread stack and abort the process, measured
/// here), and bounding the nesting first cost what it saved. The streaming `Deserializer`
/// recurses only through the view's visitors, which stop at [`MAX_DEPTH`].
///
/// # Errors
/// The `serde_json` error when `body` is not one JSON value (syntax, trailing characters,
/// nesting deeper than 127).
pub fn parse_review(body: &[u8]) -> serde_json::Result<Value> {
    match parse_review_sonic(body) {
        Some(view) => Ok(view),
        None => parse_review_serde(body),
    }
}

/// The view read by sonic-rs, or `None` when sonic-rs (or the view's nesting limit) refuses
/// the body.
fn parse_review_sonic(body: &[u8]) -> Option<Value> {
    let mut de = sonic_rs::Deserializer::from_slice(body);
    let view = Seed::review(SONIC_MAX_DEPTH).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(view)
}

/// [`parse_review`] by serde_json alone: the reference the sonic-rs path must agree with,
/// and the source of every parse error's message.
///
/// # Errors
/// As [`parse_review`].
pub fn parse_review_serde(body: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Seed::review(MAX_DEPTH).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// [`parse_review`] over any serde deserializer, e.g. another JSON parser's (the reader
/// comparison in `benches/json_readers.rs`). The caller checks for trailing input.
///
/// # Errors
/// The deserializer's error, or a custom error for nesting deeper than 127.
pub fn parse_review_from<'de, D: de::Deserializer<'de>>(
    deserializer: D,
) -> Result<Value, D::Error> {
    Seed::review(MAX_DEPTH).deserialize(deserializer)
}

/// The injector's view of one object (a Pod, a workload or a pod template as a `Value`):
/// the same pruning as [`parse_review`] applies to `request.object`. Used to check that
/// the view changes nothing (tests, fuzzing); the webhook parses the view directly.
///
/// # Errors
/// Only if `object` holds something `serde_json` cannot represent (never for a parsed
/// `Value`), or nests deeper than a review may.
pub fn object_view(object: &Value) -> serde_json::Result<Value> {
    // `request.object` sits in two objects (the review, its request).
    Seed {
        shape: Shape::Object,
        depth: Depth {
            at: 2,
            limit: MAX_DEPTH,
        },
    }
    .deserialize(object)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_what_the_injector_reads_and_drops_the_rest() {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "oldObject": {"kind": "Pod", "spec": {"containers": []}},
                "object": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "d", "labels": {"status": "x"},
                                 "managedFields": [{"manager": "kubectl"}]},
                    "spec": {
                        "replicas": 3,
                        "selector": {"matchLabels": {"app": "d"}},
                        "template": {
                            "metadata": {"annotations": {"a": "b"}, "uid": "drop"},
                            "spec": {
                                "volumes": [{"name": "v", "emptyDir": {}}],
                                "initContainers": "not an array",
                                "containers": [
                                    {"name": "c", "image": "drop", "env": [{"name": "A"}],
                                     "resources": {"limits": {}},
                                     "volumeMounts": [{"name": "v", "mountPath": "/v"}]},
                                    7
                                ],
                                "nodeSelector": {"disk": "ssd"}
                            }
                        }
                    },
                    "status": {"replicas": 0}
                }
            }
        });
        let view = parse_review(&serde_json::to_vec(&body).unwrap()).unwrap();
        let expected = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "d", "labels": {"status": "x"}},
                    "spec": {
                        "template": {
                            "metadata": {"annotations": {"a": "b"}},
                            "spec": {
                                "volumes": [{"name": "v", "emptyDir": {}}],
                                "initContainers": "not an array",
                                "containers": [
                                    {"name": "c", "env": [{"name": "A"}],
                                     "volumeMounts": [{"name": "v", "mountPath": "/v"}]},
                                    7
                                ]
                            }
                        }
                    }
                }
            }
        });
        assert_eq!(view, expected);
        assert_eq!(
            object_view(&body["request"]["object"]).unwrap(),
            expected["request"]["object"]
        );
    }

    #[test]
    fn syntax_errors_are_reported_even_in_skipped_parts() {
        for bad in [
            &br#"{"request": {"object": {"status": {"a": }}}}"#[..],
            br#"{"request": {"oldObject": [1, 2}}"#,
            br#"{"kind": "AdmissionReview"} trailing"#,
            br#"{"request": {"object": {"spec": {"containers": [{"image": "x"]}}}}"#,
        ] {
            assert!(
                parse_review(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// What `IgnoredAny` would let through in a skipped field, and a `Value` parse does not:
    /// the view must refuse it too (the fuzzer found the number first).
    #[test]
    fn skipped_parts_are_as_strict_as_a_value_parse() {
        let skipped = |inner: &[u8]| {
            let mut body = br#"{"request": {"object": {"status": {"x": "#.to_vec();
            body.extend_from_slice(inner);
            body.extend_from_slice(br#", "k\u00e9y": "\u00e9"}}}}"#);
            body
        };
        for inner in [
            &b"1.5e+3018"[..],
            b"\"\xff\xfe\"",
            br#""\ud800""#,
            br#""\q""#,
            b"-",
        ] {
            let body = skipped(inner);
            assert!(serde_json::from_slice::<Value>(&body).is_err());
            let err = parse_review(&body).expect_err(&String::from_utf8_lossy(&body));
            let full = serde_json::from_slice::<Value>(&body).unwrap_err();
            assert_eq!(err.to_string(), full.to_string());
        }
        // Escaped keys and values in skipped parts are fine.
        assert!(parse_review(&skipped(b"[1e308, -0, \"a\\\"b\"]")).is_ok());
    }

    #[test]
    fn non_objects_pass_through() {
        for v in [
            json!(null),
            json!(1),
            json!("s"),
            json!([1, {"a": 2}]),
            json!(true),
        ] {
            let body = serde_json::to_vec(&v).unwrap();
            assert_eq!(parse_review(&body).unwrap(), v);
        }
        let body = br#"{"request": {"object": [ {"kind": "Pod", "x": 1} ]}}"#;
        assert_eq!(
            parse_review(body).unwrap(),
            json!({"request": {"object": [{"kind": "Pod", "x": 1}]}})
        );
    }

    /// The sonic-rs path answers as serde_json does: the same view, or the same error, and
    /// acceptance exactly when `serde_json::from_slice` accepts. Bodies around every rule a
    /// strict parser checks, in a skipped part (`status`), a kept part (`volumes`) and the
    /// review's own fields.
    #[test]
    fn sonic_path_agrees_with_serde_json() {
        let nest = |n: usize| {
            let mut v = b"[".repeat(n);
            v.extend_from_slice(&b"]".repeat(n));
            v
        };
        let values: Vec<Vec<u8>> = [
            &b"[1e308, -0, 0, -1, 1.0, 1e2, \"a\\\"b\", null, true, false, {}, []]"[..],
            b"1.5e+3018",
            b"1e400",
            b"-1e400",
            b"1e-400",
            b"18446744073709551615",
            b"18446744073709551616",
            // Past u64: serde_json rounded it one ULP off without `float_roundtrip`
            // (found by the fuzzer; sonic-rs rounds correctly).
            b"18446744073789551615",
            b"123456789012345678901234567890",
            b"2.2250738585072011e-308",
            b"0.30000000000000004",
            b"-9223372036854775808",
            b"-9223372036854775809",
            b"\"\xff\xfe\"",
            b"\"\xc3\"",
            b"\"\xed\xa0\x80\"",
            br#""\ud800""#,
            br#""\ude00\ud83d""#,
            br#""\ud800\u0041""#,
            br#""\ud83d\ude00""#,
            br#""\u0000""#,
            br#""\q""#,
            br#""\u00""#,
            b"\"a\x01b\"",
            b"\"a\x00b\"",
            b"\"\x7f\xe2\x80\xa8\"",
            b"-",
            b"01",
            b"-01",
            b"1.",
            b".5",
            b"+1",
            b"1e",
            b"1e+",
            b"NaN",
            b"Infinity",
            b"[1,]",
            br#"{"a":1,}"#,
            br#"{"a" 1}"#,
            b"{1:2}",
            b"[1 2]",
            b"tru",
            b"nul",
            b"\x0c1",
            b"\xc2\xa01",
            br#"{"a":1,"a":2}"#,
            br#"{"k\u00e9y":"\u00e9"}"#,
        ]
        .iter()
        .map(|v| v.to_vec())
        .chain([122, 123, 124, 125, 126, 127].map(nest))
        .collect();
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for v in &values {
            for (before, after) in [
                (
                    &br#"{"kind":"AdmissionReview","request":{"uid":"u","object":{"kind":"Pod","status":{"x":"#[..],
                    &b"}}}}"[..],
                ),
                (
                    br#"{"kind":"AdmissionReview","request":{"uid":"u","object":{"kind":"Pod","spec":{"volumes":[{"name":"v","x":"#,
                    b"}]}}}}",
                ),
                (br#"{"kind":"AdmissionReview","apiVersion":"#, b"}"),
            ] {
                let mut body = before.to_vec();
                body.extend_from_slice(v);
                body.extend_from_slice(after);
                bodies.push(body);
            }
        }
        for tail in [&b""[..], b" ", b"\n\t\r ", b" x", b"}", b"\x00", b"{}"] {
            let mut body = br#"{"kind":"AdmissionReview"}"#.to_vec();
            body.extend_from_slice(tail);
            bodies.push(body);
        }
        bodies.extend([b"".to_vec(), b" ".to_vec(), b"\xef\xbb\xbf{}".to_vec()]);
        let mut accepted = 0;
        for body in &bodies {
            let shown = String::from_utf8_lossy(body);
            let reference = serde_json::from_slice::<Value>(body);
            let serde = parse_review_serde(body);
            let sonic = parse_review(body);
            assert_eq!(serde.is_ok(), reference.is_ok(), "{shown}");
            match (sonic, serde) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a, b, "{shown}");
                    accepted += 1;
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{shown}"),
                (a, b) => panic!("{shown}: sonic path {a:?}, serde_json {b:?}"),
            }
        }
        // Both outcomes are exercised.
        assert!(accepted > 20 && accepted + 20 < bodies.len(), "{accepted}");
    }

    /// 127 nested arrays and objects are accepted, 128 refused, wherever they are.
    #[test]
    fn nesting_is_limited_as_serde_json_limits_it() {
        for (before, after, around) in [
            (&br#"{"request":{"object":{"status":"#[..], &b"}}}"[..], 3),
            (br#"{"request":{"object":{"spec":{"volumes":"#, b"}}}}", 4),
            (br#"{"x":"#, b"}", 1),
        ] {
            // Around the sonic-rs bound (64), serde_json's limit (127), and far past both:
            // 100,000 levels would abort the process inside sonic-rs (cloudwego/sonic-rs#239).
            for total in [60, 64, 65, 126, 127, 128, 129, 300, 100_000] {
                let inner = total - around;
                let mut body = before.to_vec();
                body.extend_from_slice(&b"[".repeat(inner));
                body.extend_from_slice(&b"]".repeat(inner));
                body.extend_from_slice(after);
                let view = parse_review(&body);
                assert_eq!(view.is_ok(), total <= 127, "{total} levels");
                assert_eq!(
                    view.is_ok(),
                    serde_json::from_slice::<Value>(&body).is_ok(),
                    "{total} levels"
                );
            }
        }
    }

    /// The fixtures take the sonic-rs path (not the fallback), and it reads the same view.
    #[test]
    fn fixtures_are_read_by_sonic_rs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
        let mut read = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let body = std::fs::read(path).unwrap();
            let view = parse_review_sonic(&body).expect("read by sonic-rs");
            assert_eq!(view, parse_review_serde(&body).unwrap());
            read += 1;
        }
        assert!(read >= 5, "{read} fixtures");
    }
}
