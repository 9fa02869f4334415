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
//! - `spec.{containers, initContainers}[*].{name, env, volumeMounts}`;
//! - `spec.template` and `spec.jobTemplate` (a workload's pod template, a CronJob's Job
//!   template), by these same rules.
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
    /// A pod spec or a workload spec: containers, initContainers, volumes, template,
    /// jobTemplate.
    Spec,
    /// An array of containers, each as [`Shape::Container`].
    Containers,
    /// A container: name, env, volumeMounts.
    Container,
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
                "volumes" => Some(Shape::All),
                // A workload's pod template, and a CronJob's Job template: both hold
                // `metadata` and `spec`.
                "template" | "jobTemplate" => Some(Shape::Object),
                _ => None,
            },
            Shape::Containers => Some(Shape::All),
            Shape::Container => match key {
                "name" | "env" | "volumeMounts" => Some(Shape::All),
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

impl<'de> DeserializeSeed<'de> for Shape {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self == Shape::All {
            return serde::Deserialize::deserialize(deserializer);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Shape {
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
        let element = self.element();
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(element)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match self.child(&key) {
                Some(shape) => {
                    let value = map.next_value_seed(shape)?;
                    out.insert(key, value);
                }
                None => map.next_value_seed(Discard)?,
            }
        }
        Ok(Value::Object(out))
    }
}

/// Reads one JSON value completely, with the checks of a `Value` parse (strings decoded and
/// checked, numbers parsed and range-checked, depth limited), and keeps nothing. Strings
/// without escapes are borrowed from the input, so nothing is allocated.
#[derive(Clone, Copy, Debug)]
struct Discard;

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
        while seq.next_element_seed(Discard)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys are decoded and checked as a `Value` parse does.
        while map.next_key_seed(Discard)?.is_some() {
            map.next_value_seed(Discard)?;
        }
        Ok(())
    }
}

/// Parses an AdmissionReview body (JSON bytes) into a `Value` holding every field of the
/// review and of its request, except `request.oldObject` (dropped) and the parts of
/// `request.object` the injector does not read (see the module documentation).
///
/// # Errors
/// The `serde_json` error when `body` is not one JSON value (syntax, trailing characters,
/// nesting deeper than 128).
pub fn parse_review(body: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Shape::Review.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// [`parse_review`] over any serde deserializer, e.g. another JSON parser's (the reader
/// comparison in `benches/json_readers.rs`). The caller checks for trailing input.
///
/// # Errors
/// The deserializer's error.
pub fn parse_review_from<'de, D: de::Deserializer<'de>>(
    deserializer: D,
) -> Result<Value, D::Error> {
    Shape::Review.deserialize(deserializer)
}

/// The injector's view of one object (a Pod, a workload or a pod template as a `Value`):
/// the same pruning as [`parse_review`] applies to `request.object`. Used to check that
/// the view changes nothing (tests, fuzzing); the webhook parses the view directly.
///
/// # Errors
/// Only if `object` holds something `serde_json` cannot represent (never for a parsed
/// `Value`).
pub fn object_view(object: &Value) -> serde_json::Result<Value> {
    Shape::Object.deserialize(object)
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
}
