//! The injector's JSONPatch ([`Patch`]): RFC 6902 operations whose values are typed (a
//! volume, a volume mount, an env variable, annotations) instead of `serde_json::Value`s,
//! serialized straight to JSON ([`Patch::write_json`]): the webhook writes them into the
//! base64 of its answer without building a `Value`, a `json_patch::Patch` or the patch's
//! JSON text first.
//!
//! The JSON is the same, byte for byte, as `serde_json::to_vec` of the equivalent
//! `json_patch::Patch` ([`Patch::to_json_patch`]): objects are written with their keys in
//! sorted order, as a `serde_json::Map` (a `BTreeMap`) writes them. The unit tests below and
//! the fuzz harness (`fuzz/src/lib.rs`) check it.

use std::collections::BTreeMap;
use std::sync::Arc;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// A JSONPatch (RFC 6902) as the injector builds it: a list of operations, serialized as
/// a JSON array of `{"op", "path", "value"}` objects.
///
/// Build one from a `json_patch::Patch` with `From` (any operation); read it back with
/// [`Patch::to_json_patch`] (to apply it with `json_patch::patch`) or write its JSON with
/// [`Patch::write_json`] or serde.
#[derive(Clone, Debug, Default)]
pub struct Patch {
    /// The env variables the operations refer to by index ([`Val::Env`]), in injection
    /// order: one copy per patch, however many containers receive them, shared with the
    /// [`super::EnvBlock`] it came from.
    env: Arc<[(String, String)]>,
    ops: Vec<Op>,
}

#[derive(Clone, Debug)]
enum Op {
    /// `{"op":"add","path":…,"value":…}`; `path` is an encoded JSON pointer.
    Add { path: String, value: Val },
    /// `{"op":"replace","path":…,"value":…}`.
    Replace { path: String, value: Val },
    /// Any operation, as `json_patch` has it (patches built by other mutators).
    Json(PatchOperation),
}

/// A typed operation value. Objects are written with sorted keys.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    /// A JSON string.
    Str(String),
    /// `{"configMap":{"name":config_map},"name":name}`.
    ConfigMapVolume { name: String, config_map: String },
    /// `{"name":name,"secret":{"secretName":secret_name}}`.
    SecretVolume { name: String, secret_name: String },
    /// `[value]`.
    One(Box<Val>),
    /// `{"mountPath":…,"name":…,"readOnly":true[,"subPath":…]}`.
    Mount(Mount),
    /// `[mount, …]`.
    Mounts(Vec<Mount>),
    /// `{"name":…,"value":…}` of the patch's env entry at this index.
    Env(usize),
    /// `[env, …]`, by index.
    Envs(Vec<usize>),
    /// `{key: value, …}`: keys sorted and unique (see [`Val::annotations`]).
    Annotations(Vec<(String, String)>),
    /// `{"annotations":{key: value, …}}`, keys sorted and unique.
    Metadata(Vec<(String, String)>),
    /// Any JSON value, written as `serde_json` writes it (the reloader sidecar, a flag):
    /// for the rare values that are not worth a typed variant.
    Json(Box<Value>),
}

/// A read-only volume mount.
#[derive(Clone, Debug)]
pub(crate) struct Mount {
    pub(crate) name: String,
    pub(crate) mount_path: String,
    pub(crate) sub_path: Option<&'static str>,
}

impl Val {
    /// An object of string values as `serde_json::Map` would hold it: keys sorted, and a
    /// key given twice keeps its last value.
    pub(crate) fn annotations(pairs: &[(&str, String)]) -> Vec<(String, String)> {
        let map: BTreeMap<&str, &str> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        map.into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// Appends `tokens` to `path` as an encoded JSON pointer (`/` before each token, `~` as
/// `~0` and `/` as `~1`), as `jsonptr::PointerBuf::from_tokens` encodes them.
pub(crate) fn pointer<'a>(tokens: impl IntoIterator<Item = &'a str> + Clone) -> String {
    let len = tokens.clone().into_iter().map(|t| t.len() + 1).sum();
    let mut path = String::with_capacity(len);
    for token in tokens {
        path.push('/');
        if token.bytes().any(|b| b == b'~' || b == b'/') {
            for c in token.chars() {
                match c {
                    '~' => path.push_str("~0"),
                    '/' => path.push_str("~1"),
                    c => path.push(c),
                }
            }
        } else {
            path.push_str(token);
        }
    }
    path
}

impl Patch {
    /// An empty patch whose operations may refer to `env` by index.
    #[cfg(test)]
    pub(crate) fn with_env(env: Vec<(String, String)>) -> Self {
        Self {
            env: env.into(),
            ops: Vec::new(),
        }
    }

    /// Sets the env table that [`Val::Env`] indices refer to.
    pub(crate) fn set_env(&mut self, env: Arc<[(String, String)]>) {
        self.env = env;
    }

    /// Appends `{"op":"add"}` at the encoded pointer `path`.
    pub(crate) fn add(&mut self, path: String, value: Val) {
        self.ops.push(Op::Add { path, value });
    }

    /// Appends `{"op":"replace"}` at the encoded pointer `path`.
    pub(crate) fn replace(&mut self, path: String, value: Val) {
        self.ops.push(Op::Replace { path, value });
    }

    /// Appends `{"op":"remove"}` at the encoded pointer `path`.
    pub(crate) fn remove(&mut self, path: String) {
        self.ops.push(Op::Json(PatchOperation::Remove(
            json_patch::RemoveOperation {
                path: parsed_pointer(&path),
            },
        )));
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when there is no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The same operations as a `json_patch::Patch` of `serde_json::Value`s, e.g. to apply
    /// them with `json_patch::patch`. Allocates every value; the webhook does not use it.
    pub fn to_json_patch(&self) -> json_patch::Patch {
        let ops = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Add { path, value } => PatchOperation::Add(AddOperation {
                    path: parsed_pointer(path),
                    value: self.value(value),
                }),
                Op::Replace { path, value } => PatchOperation::Replace(ReplaceOperation {
                    path: parsed_pointer(path),
                    value: self.value(value),
                }),
                Op::Json(op) => op.clone(),
            })
            .collect();
        json_patch::Patch(ops)
    }

    fn value(&self, value: &Val) -> Value {
        // Serializing typed values into a `Value` cannot fail (string keys, plain data).
        serde_json::to_value(ValRef { patch: self, value }).unwrap_or(Value::Null)
    }

    /// Writes the patch as JSON (a JSON array of operations) to `writer`, with no
    /// intermediate `Value` and the same bytes as `serde_json::to_writer` of
    /// [`Patch::to_json_patch`].
    ///
    /// # Errors
    /// The writer's I/O error (never for a `Vec<u8>`).
    pub fn write_json<W: std::io::Write>(&self, writer: W) -> serde_json::Result<()> {
        serde_json::to_writer(writer, self)
    }

    /// Writes the same JSON as [`Patch::write_json`] in pieces: each piece (the opening
    /// bracket with the first operation, each following operation, the closing bracket)
    /// is appended to `buf`, then `drain(buf)` is called, which may take bytes from the
    /// front of `buf`. Lets a caller stream the patch through a small reused buffer (the
    /// webhook: into the answer's base64) instead of holding all of its JSON.
    ///
    /// # Errors
    /// A serialization error of an operation (not expected: plain data).
    pub fn write_json_in_pieces(
        &self,
        buf: &mut Vec<u8>,
        mut drain: impl FnMut(&mut Vec<u8>),
    ) -> serde_json::Result<()> {
        buf.push(b'[');
        for (i, op) in self.ops.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            match op {
                Op::Add { path, value } => serde_json::to_writer(
                    &mut *buf,
                    &OpRef {
                        op: "add",
                        path,
                        value: ValRef { patch: self, value },
                    },
                )?,
                Op::Replace { path, value } => serde_json::to_writer(
                    &mut *buf,
                    &OpRef {
                        op: "replace",
                        path,
                        value: ValRef { patch: self, value },
                    },
                )?,
                Op::Json(op) => serde_json::to_writer(&mut *buf, op)?,
            }
            drain(buf);
        }
        buf.push(b']');
        drain(buf);
        Ok(())
    }
}

fn parsed_pointer(path: &str) -> PointerBuf {
    // Paths are built by `pointer`, so they parse; an empty pointer is the root.
    PointerBuf::parse(path).unwrap_or_default()
}

impl From<json_patch::Patch> for Patch {
    fn from(patch: json_patch::Patch) -> Self {
        Self {
            env: Arc::default(),
            ops: patch.0.into_iter().map(Op::Json).collect(),
        }
    }
}

/// Two patches are equal when their JSON is.
impl PartialEq for Patch {
    fn eq(&self, other: &Self) -> bool {
        serde_json::to_vec(self).ok() == serde_json::to_vec(other).ok()
    }
}

impl Serialize for Patch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.ops.len()))?;
        for op in &self.ops {
            match op {
                Op::Add { path, value } => seq.serialize_element(&OpRef {
                    op: "add",
                    path,
                    value: ValRef { patch: self, value },
                })?,
                Op::Replace { path, value } => seq.serialize_element(&OpRef {
                    op: "replace",
                    path,
                    value: ValRef { patch: self, value },
                })?,
                Op::Json(op) => seq.serialize_element(op)?,
            }
        }
        seq.end()
    }
}

/// An `add` or `replace` operation: keys in json_patch's order (`op`, `path`, `value`).
struct OpRef<'a> {
    op: &'static str,
    path: &'a str,
    value: ValRef<'a>,
}

impl Serialize for OpRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("op", self.op)?;
        map.serialize_entry("path", self.path)?;
        map.serialize_entry("value", &self.value)?;
        map.end()
    }
}

#[derive(Clone, Copy)]
struct ValRef<'a> {
    patch: &'a Patch,
    value: &'a Val,
}

/// `{"name": name}`-like one-entry objects.
struct Entry<'a>(&'static str, &'a str);

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, self.1)?;
        map.end()
    }
}

/// An object of string values, in the given (sorted) order.
struct Pairs<'a>(&'a [(String, String)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `{"name":…,"value":…}`.
struct EnvVar<'a>(&'a str, &'a str);

impl Serialize for EnvVar<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("name", self.0)?;
        map.serialize_entry("value", self.1)?;
        map.end()
    }
}

impl Patch {
    /// The env entry at `index` (indices are only made by the injector, from this table).
    fn env_var(&self, index: usize) -> EnvVar<'_> {
        self.env
            .get(index)
            .map_or(EnvVar("", ""), |(n, v)| EnvVar(n, v))
    }
}

impl Serialize for Mount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3 + usize::from(self.sub_path.is_some())))?;
        map.serialize_entry("mountPath", &self.mount_path)?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("readOnly", &true)?;
        if let Some(sub_path) = self.sub_path {
            map.serialize_entry("subPath", sub_path)?;
        }
        map.end()
    }
}

impl Serialize for ValRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let at = |value| ValRef {
            patch: self.patch,
            value,
        };
        match self.value {
            Val::Str(s) => serializer.serialize_str(s),
            Val::ConfigMapVolume { name, config_map } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("configMap", &Entry("name", config_map))?;
                map.serialize_entry("name", name)?;
                map.end()
            }
            Val::SecretVolume { name, secret_name } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("name", name)?;
                map.serialize_entry("secret", &Entry("secretName", secret_name))?;
                map.end()
            }
            Val::One(value) => {
                let mut seq = serializer.serialize_seq(Some(1))?;
                seq.serialize_element(&at(value))?;
                seq.end()
            }
            Val::Mount(mount) => mount.serialize(serializer),
            Val::Mounts(mounts) => mounts.serialize(serializer),
            Val::Env(i) => self.patch.env_var(*i).serialize(serializer),
            Val::Envs(indices) => {
                let mut seq = serializer.serialize_seq(Some(indices.len()))?;
                for i in indices {
                    seq.serialize_element(&self.patch.env_var(*i))?;
                }
                seq.end()
            }
            Val::Annotations(pairs) => Pairs(pairs).serialize(serializer),
            Val::Metadata(pairs) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("annotations", &Pairs(pairs))?;
                map.end()
            }
            Val::Json(value) => value.serialize(serializer),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mount(sub_path: Option<&'static str>) -> Mount {
        Mount {
            name: "v".into(),
            mount_path: "/m".into(),
            sub_path,
        }
    }

    /// Every kind of value writes the bytes `serde_json` writes for the same `Value`s.
    #[test]
    fn writes_what_json_patch_writes() {
        let env = vec![
            ("A".to_owned(), "1".to_owned()),
            ("B\"".to_owned(), "é\u{1}".to_owned()),
        ];
        let mut patch = Patch::with_env(env);
        let path = || pointer(["spec", "a/b~c", "-"]);
        patch.add(path(), Val::Str("x\n".into()));
        patch.add(
            path(),
            Val::ConfigMapVolume {
                name: "n".into(),
                config_map: "c".into(),
            },
        );
        patch.add(
            path(),
            Val::One(Box::new(Val::SecretVolume {
                name: "n".into(),
                secret_name: "s".into(),
            })),
        );
        patch.add(path(), Val::Mount(mount(None)));
        patch.add(path(), Val::Mounts(vec![mount(Some("f.pem")), mount(None)]));
        patch.add(path(), Val::Env(1));
        patch.add(path(), Val::Envs(vec![0, 1]));
        let pairs = Val::annotations(&[("b", "2".into()), ("a/~", "1".into()), ("b", "3".into())]);
        patch.replace(pointer([]), Val::Annotations(pairs.clone()));
        patch.add(pointer(["metadata"]), Val::Metadata(pairs));
        patch.add(
            path(),
            Val::Json(Box::new(json!({"b": [true, 1], "a": null}))),
        );
        patch.remove(pointer(["metadata", "annotations", "a/~"]));

        let expected = json!([
            {"op": "add", "path": "/spec/a~1b~0c/-", "value": "x\n"},
            {"op": "add", "path": "/spec/a~1b~0c/-", "value": {"name": "n", "configMap": {"name": "c"}}},
            {"op": "add", "path": "/spec/a~1b~0c/-", "value": [{"name": "n", "secret": {"secretName": "s"}}]},
            {"op": "add", "path": "/spec/a~1b~0c/-", "value": {"name": "v", "mountPath": "/m", "readOnly": true}},
            {"op": "add", "path": "/spec/a~1b~0c/-", "value": [
                {"name": "v", "mountPath": "/m", "subPath": "f.pem", "readOnly": true},
                {"name": "v", "mountPath": "/m", "readOnly": true}]},
            {"op": "add", "path": "/spec/a~1b~0c/-", "value": {"name": "B\"", "value": "é\u{1}"}},
            {"op": "add", "path": "/spec/a~1b~0c/-", "value": [{"name": "A", "value": "1"}, {"name": "B\"", "value": "é\u{1}"}]},
            {"op": "replace", "path": "", "value": {"b": "3", "a/~": "1"}},
            {"op": "add", "path": "/metadata", "value": {"annotations": {"b": "3", "a/~": "1"}}},
            {"op": "add", "path": "/spec/a~1b~0c/-", "value": {"b": [true, 1], "a": null}},
            {"op": "remove", "path": "/metadata/annotations/a~1~0"},
        ]);
        let reference: json_patch::Patch = serde_json::from_value(expected).unwrap();
        let mut written = Vec::new();
        patch.write_json(&mut written).unwrap();
        assert_eq!(
            String::from_utf8(written).unwrap(),
            serde_json::to_string(&reference).unwrap()
        );
        let mut pieces = Vec::new();
        let mut buf = Vec::new();
        patch
            .write_json_in_pieces(&mut buf, |b| pieces.append(b))
            .unwrap();
        assert_eq!(pieces, serde_json::to_vec(&reference).unwrap());
        let mut buf = Vec::new();
        Patch::default()
            .write_json_in_pieces(&mut buf, |_| {})
            .unwrap();
        assert_eq!(buf, b"[]");
        assert_eq!(patch.to_json_patch(), reference);
        assert_eq!(Patch::from(reference.clone()), patch);
        assert_eq!(patch.len(), 11);
    }

    #[test]
    fn pointers_are_encoded_as_jsonptr_does() {
        for tokens in [
            &[][..],
            &["spec"][..],
            &["metadata", "annotations", "mcptrust.io/injected"][..],
            &["~1~0/", "", "-", "ключ"][..],
        ] {
            assert_eq!(
                pointer(tokens.iter().copied()),
                PointerBuf::from_tokens(tokens.iter().copied()).as_str()
            );
        }
    }
}
