//! The fuzzing harness of mcptrust, shared by the `cargo fuzz` targets in `fuzz_targets/`
//! (nightly, libFuzzer) and by `tests/fuzz_regressions.rs` (stable, which includes this file
//! with `#[path]`), so that every finding replays under plain `cargo test`.
//!
//! [`Harness::check`] runs one AdmissionReview body through the webhook's handler
//! (`mcptrust::webhook::admission::review` + `encode_review`) with two injection settings
//! (the embedded default, and an McpServer-like one with extra env, mTLS mounts and the
//! system-trust overlay) and checks the properties:
//!
//! 1. the answer is a valid AdmissionReview v1 (apiVersion, kind, `response.uid` echoing a
//!    readable `request.uid`, `response.allowed` a bool); a refusal is a 400, never a 500
//!    (a 500 means the injector panicked, which `review` catches);
//! 2. a patch is a base64 JSONPatch that applies to the object with `json_patch`;
//! 3. if the object deserializes as its typed Kubernetes kind (`k8s_openapi` Pod,
//!    Deployment, ...), the patched object does too, and the patch creates no duplicate
//!    volume name, env name or mount path that was not already duplicated;
//! 4. a second review of the patched object answers `allowed` with no patch;
//! 5. the mutator decides the same on the injector's view of the object
//!    (`mcptrust::inject::view`, what the webhook parses) as on the whole object;
//! 6. the webhook's reader (`view::parse_review`: sonic-rs, then the view) answers as the
//!    serde_json reference (`view::parse_review_serde`): the same view or the same error,
//!    and it accepts exactly the bodies `serde_json::from_slice` accepts.
//!
//! [`mutate_json`] is the structure-aware mutation used by the libFuzzer target's custom
//! mutator: it edits the parsed JSON (deletes, duplicates, type changes, Kubernetes field
//! names, annotation keys with `/` and `~`, unicode, huge arrays) rather than bytes.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use mcptrust::inject::{
    InjectConfig, InjectError, Injection, Mutator, Outcome, StaticMutator, TlsMount, inject,
    pod_template_pointer,
};
use mcptrust::webhook::admission::{encode_review, review};
use serde_json::{Map, Value, json};

/// The files directly in `dir`, sorted by path; none if `dir` does not exist. Used by the
/// stable replays (`tests/fuzz_regressions.rs`, `benches/fuzz_stable.rs`) to load fixtures.
pub fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// An [`Injection`] used as a [`Mutator`].
struct Fixed(Injection);

impl Mutator for Fixed {
    fn mutate(&self, _namespace: Option<&str>, object: &Value) -> Result<Outcome, InjectError> {
        inject(object, &self.0)
    }
}

/// The mutators every input is checked against.
pub struct Harness {
    mutators: Vec<(&'static str, Box<dyn Mutator>)>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// The sandbox demo config (proxy on, bundle hash set), and an McpServer-like
    /// injection with extra env, two mTLS mounts and the system-trust overlay.
    pub fn new() -> Self {
        let mut config = InjectConfig::sandbox_demo();
        config.trust_bundle_sha256 = Some("ab".repeat(32));
        let default = StaticMutator::new(&config, None);
        let mut server = Injection::resolve(&config, None);
        server.config_map = "mcptrust-github-trust".to_owned();
        server.mcp_server = Some("agents/github".to_owned());
        server.overlay_system_trust = true;
        server.extra_env.push(mcptrust::inject::EnvPair {
            name: "MCP_SERVER_URL".to_owned(),
            value: "https://github-mcp.agents.svc:8443/mcp/".to_owned(),
        });
        server.tls_mounts = vec![
            TlsMount {
                volume_name: "mcptrust-server-tls".to_owned(),
                secret_name: "github-server-tls".to_owned(),
                mount_path: "/etc/mcptrust/tls/server".to_owned(),
                sha256: Some("cd".repeat(32)),
                not_after: Some("2027-01-01T00:00:00Z".to_owned()),
            },
            TlsMount {
                volume_name: "mcptrust-client-github".to_owned(),
                secret_name: "github-gateway-mcpgateway-client-tls".to_owned(),
                mount_path: "/etc/mcptrust/tls/clients/github".to_owned(),
                sha256: None,
                not_after: None,
            },
        ];
        // `spec.rotation.strategy: Signal`: the reloader sidecar, whose decisions read
        // the pod's security settings (kept by the view).
        let reloader = mcptrust::inject::ReloaderConfig {
            image: Some("ghcr.io/mcptrust/mcptrust:0.1.0".to_owned()),
            ..Default::default()
        };
        server.reloader = Some(mcptrust::inject::ReloaderPlan {
            signal: mcptrust::api::ReloadSignal::Sighup,
            container: None,
            process_name: None,
            handles_signal: false,
            config: reloader,
        });
        Self {
            mutators: vec![
                ("default", Box::new(default)),
                ("mcpserver", Box::new(Fixed(server))),
            ],
        }
    }

    /// Checks every property on `body` with every mutator; `Err` describes the first
    /// violation. Never panics unless mcptrust itself panics outside `review`'s guard.
    pub fn check(&self, body: &[u8]) -> Result<(), String> {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        same_reader(body, parsed.is_some())?;
        for (name, mutator) in &self.mutators {
            check_one(body, parsed.as_ref(), mutator.as_ref())
                .map_err(|e| format!("mutator {name}: {e}"))?;
        }
        Ok(())
    }

    /// The wire answer (`review` + `encode_review`) of every mutator to `body`, in order:
    /// used by `FUZZ_DUMP` in `benches/fuzz_stable.rs` to compare the answers of two builds
    /// byte for byte.
    pub fn answers(&self, body: &[u8]) -> Vec<Vec<u8>> {
        self.mutators
            .iter()
            .map(|(_, mutator)| encode_review(&review(body, mutator.as_ref()).0))
            .collect()
    }

    /// Like [`check`](Self::check) with one mutator only, chosen by the body's length, so
    /// that the fuzzer spends half the time per input and still exercises both.
    pub fn check_one_mutator(&self, body: &[u8]) -> Result<(), String> {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        same_reader(body, parsed.is_some())?;
        let (name, mutator) = &self.mutators[body.len() % self.mutators.len()];
        check_one(body, parsed.as_ref(), mutator.as_ref())
            .map_err(|e| format!("mutator {name}: {e}"))
    }
}

/// What one review answered, decoded from the wire.
struct Answer {
    allowed: bool,
    patch: Option<json_patch::Patch>,
}

fn answer(body: &[u8], expect_uid: Option<&str>, mutator: &dyn Mutator) -> Result<Answer, String> {
    let (review, _outcome) = review(body, mutator);
    let wire = encode_review(&review);
    let v: Value =
        serde_json::from_slice(&wire).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if v["apiVersion"] != "admission.k8s.io/v1" || v["kind"] != "AdmissionReview" {
        return Err(format!("wrong apiVersion/kind in {v}"));
    }
    let response = v
        .get("response")
        .and_then(Value::as_object)
        .ok_or("no response object")?;
    let uid = response
        .get("uid")
        .and_then(Value::as_str)
        .ok_or("response.uid is not a string")?;
    if let Some(expected) = expect_uid
        && uid != expected
    {
        return Err(format!("response.uid {uid:?} does not echo {expected:?}"));
    }
    let allowed = response
        .get("allowed")
        .and_then(Value::as_bool)
        .ok_or("response.allowed is not a bool")?;
    if !allowed {
        let code = response.get("status").and_then(|s| s.get("code"));
        if code != Some(&json!(400)) {
            return Err(format!(
                "refused with {code:?} (a 500 is a caught panic): {}",
                Value::Object(response.clone())
            ));
        }
        if response.contains_key("patch") {
            return Err("a refusal carries a patch".to_owned());
        }
    }
    let patch = match response.get("patch") {
        None => None,
        Some(Value::String(b64)) => {
            if response.get("patchType") != Some(&json!("JSONPatch")) {
                return Err("patch without patchType JSONPatch".to_owned());
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("patch is not base64: {e}"))?;
            let patch: json_patch::Patch = serde_json::from_slice(&raw)
                .map_err(|e| format!("patch is not a JSONPatch: {e}"))?;
            if patch.0.is_empty() {
                return Err("an empty patch was sent".to_owned());
            }
            Some(patch)
        }
        Some(other) => return Err(format!("patch is not a string: {other}")),
    };
    Ok(Answer { allowed, patch })
}

/// Property 6: the webhook's reader agrees with the serde_json reference; `valid` is
/// whether `serde_json::from_slice` accepts `body`.
fn same_reader(body: &[u8], valid: bool) -> Result<(), String> {
    use mcptrust::inject::view::{parse_review, parse_review_serde};
    match (parse_review(body), parse_review_serde(body)) {
        (Ok(a), Ok(b)) if a == b && valid => Ok(()),
        (Err(a), Err(b)) if a.to_string() == b.to_string() && !valid => Ok(()),
        (a, b) => Err(format!(
            "the reader answers {:?}, the serde_json reference {:?}, serde_json::from_slice {}",
            a.map(|_| "a view"),
            b.map(|_| "a view"),
            if valid { "accepts" } else { "refuses" }
        )),
    }
}

/// Property 5: the same outcome (patch and skip reasons, or the same error) on the view.
fn same_on_view(object: &Value, mutator: &dyn Mutator) -> Result<(), String> {
    let view = mcptrust::inject::view::object_view(object)
        .map_err(|e| format!("no view of the object: {e}"))?;
    let show = |r: Result<Outcome, InjectError>| match r {
        Ok(o) => format!("patch {} skipped {:?}", json!(o.patch), o.skipped),
        Err(e) => format!("error {e}"),
    };
    let (whole, seen) = (
        show(mutator.mutate(Some("ns"), object)),
        show(mutator.mutate(Some("ns"), &view)),
    );
    if whole != seen {
        return Err(format!(
            "the view changes the outcome:\nwhole: {whole}\nview:  {seen}"
        ));
    }
    Ok(())
}

fn check_one(body: &[u8], parsed: Option<&Value>, mutator: &dyn Mutator) -> Result<(), String> {
    let uid = parsed
        .and_then(|v| v.pointer("/request/uid"))
        .and_then(Value::as_str);
    if let Some(object) = parsed.and_then(|v| v.pointer("/request/object")) {
        same_on_view(object, mutator)?;
    }
    let first = answer(body, uid, mutator)?;
    let Some(patch) = first.patch else {
        return Ok(());
    };
    if !first.allowed {
        return Err("patch on a refusal".to_owned());
    }
    let root = parsed.ok_or("a patch for a body that is not JSON")?;
    let object = root
        .pointer("/request/object")
        .ok_or("a patch without request.object")?;
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch)
        .map_err(|e| format!("the patch does not apply: {e}\npatch: {}", json!(patch)))?;

    if typed_ok(object) {
        typed_ok(&patched).then_some(()).ok_or_else(|| {
            format!(
                "the patched object no longer deserializes as its kind: {}\npatch: {}",
                typed_error(&patched),
                json!(patch)
            )
        })?;
        no_new_duplicates(object, &patched)?;
    }

    let mut again = root.clone();
    if let Some(slot) = again.pointer_mut("/request/object") {
        *slot = patched;
    }
    let again_body = serde_json::to_vec(&again).map_err(|e| e.to_string())?;
    let second = answer(&again_body, uid, mutator)?;
    if !second.allowed {
        return Err("the second pass refused the patched object".to_owned());
    }
    if let Some(p) = second.patch {
        return Err(format!("the second pass is not empty: {}", json!(p)));
    }
    Ok(())
}

fn typed_result(object: &Value) -> Result<(), String> {
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
    fn de<T: serde::de::DeserializeOwned>(v: &Value) -> Result<(), String> {
        serde_json::from_value::<T>(v.clone())
            .map(drop)
            .map_err(|e| e.to_string())
    }
    match object.get("kind").and_then(Value::as_str) {
        Some("Pod") => de::<core::Pod>(object),
        Some("Deployment") => de::<apps::Deployment>(object),
        Some("StatefulSet") => de::<apps::StatefulSet>(object),
        Some("DaemonSet") => de::<apps::DaemonSet>(object),
        Some("ReplicaSet") => de::<apps::ReplicaSet>(object),
        Some("ReplicationController") => de::<core::ReplicationController>(object),
        Some("Job") => de::<batch::Job>(object),
        Some("CronJob") => de::<batch::CronJob>(object),
        // A bare pod without kind: check it as a PodSpec.
        None if object.pointer("/spec/containers").is_some() => {
            de::<core::PodSpec>(&object["spec"])
        }
        _ => Err("not a handled kind".to_owned()),
    }
}

fn typed_ok(object: &Value) -> bool {
    typed_result(object).is_ok()
}

fn typed_error(object: &Value) -> String {
    typed_result(object).err().unwrap_or_default()
}

fn template(object: &Value) -> Option<&Value> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("Pod");
    let mut t = object;
    for token in pod_template_pointer(kind)? {
        t = t.get(*token)?;
    }
    Some(t)
}

/// Names seen more than once in `items[*][field]`.
fn duplicates<'a>(items: Option<&'a Value>, field: &str) -> BTreeMap<&'a str, usize> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for item in items.and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = item.get(field).and_then(Value::as_str) {
            *count.entry(name).or_default() += 1;
        }
    }
    count.retain(|_, n| *n > 1);
    count
}

fn no_new_duplicates(before: &Value, after: &Value) -> Result<(), String> {
    let (Some(b), Some(a)) = (template(before), template(after)) else {
        return Ok(());
    };
    let mut checks: Vec<(String, Option<&Value>, Option<&Value>, &str)> = vec![(
        "spec.volumes".to_owned(),
        b.pointer("/spec/volumes"),
        a.pointer("/spec/volumes"),
        "name",
    )];
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let after_list = a
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array);
        for (i, c) in after_list.into_iter().flatten().enumerate() {
            let old = b.pointer(&format!("/spec/{list}/{i}"));
            for (field, key) in [("env", "name"), ("volumeMounts", "mountPath")] {
                checks.push((
                    format!("{list}[{i}].{field}"),
                    old.and_then(|o| o.get(field)),
                    c.get(field),
                    key,
                ));
            }
        }
    }
    for (what, old, new, key) in checks {
        let old_dups: HashMap<&str, usize> = duplicates(old, key).into_iter().collect();
        for (name, n) in duplicates(new, key) {
            if old_dups.get(name).is_none_or(|o| *o < n) {
                return Err(format!("the patch duplicates {key} {name:?} in {what}"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Structure-aware mutation.

/// A small deterministic PRNG (xorshift64*), so that a seed replays the same mutation.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const KEYS: &[&str] = &[
    "kind",
    "apiVersion",
    "metadata",
    "spec",
    "template",
    "jobTemplate",
    "labels",
    "annotations",
    "name",
    "namespace",
    "uid",
    "operation",
    "object",
    "oldObject",
    "containers",
    "initContainers",
    "ephemeralContainers",
    "volumes",
    "volumeMounts",
    "mountPath",
    "subPath",
    "readOnly",
    "env",
    "envFrom",
    "value",
    "valueFrom",
    "configMap",
    "secret",
    "image",
    "mcptrust.io/inject",
    "mcptrust.io/injected",
    "mcptrust.io/skip-env",
    "mcptrust.io/overlay-system-trust",
    "mcptrust.io/trust-bundle-sha256",
    "mcptrust.io/mtls-client-of",
    "mcptrust.io/env-overridden",
    "mcptrust.io/skipped",
    "sha256.mcptrust.io/mcptrust-trust",
    "a/b~c",
    "~1~0/",
    "",
    "ключ",
    "🔑",
];

const STRINGS: &[&str] = &[
    "",
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
    "Service",
    "CREATE",
    "UPDATE",
    "DELETE",
    "CONNECT",
    "v1",
    "apps/v1",
    "batch/v1",
    "admission.k8s.io/v1",
    "AdmissionReview",
    "true",
    "false",
    "mcptrust-trust",
    "mcptrust-server-tls",
    "/etc/mcptrust/trust",
    "/etc/mcptrust/trust/",
    "/etc/mcptrust",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/mcptrust/tls/server",
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "SSL_CERT_FILE, NODE_EXTRA_CA_CERTS,,",
    "agents/github",
    "ca-bundle.pem",
    "~",
    "/",
    "-",
    "0",
    "a/b~c",
    "é\u{0}\u{ffff}",
    "\u{202e}spoof",
    "🦀",
];

fn random_scalar(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => json!(rng.next_u64() as i64),
        3 => json!(-1),
        4 => json!(1.5e308),
        5 => json!(u64::MAX),
        6 => Value::String("x".repeat(rng.below(300))),
        _ => Value::String((*rng.pick(STRINGS)).to_owned()),
    }
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    if depth > 2 {
        return random_scalar(rng);
    }
    match rng.below(8) {
        0 => json!([]),
        1 => json!({}),
        2 => Value::Array(
            (0..rng.below(3))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        3 => {
            let mut m = Map::new();
            for _ in 0..rng.below(3) {
                m.insert((*rng.pick(KEYS)).to_owned(), random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
        4 => json!({"name": rng.pick(STRINGS), "value": rng.pick(STRINGS)}),
        5 => json!({"name": rng.pick(STRINGS), "mountPath": rng.pick(STRINGS)}),
        _ => random_scalar(rng),
    }
}

/// Collects pointers to every node (bounded), preferring the admitted object.
fn nodes(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if out.len() > 4096 {
        return;
    }
    out.push(path.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                path.push(k.clone());
                nodes(child, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                path.push(i.to_string());
                nodes(child, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn get_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for t in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => a.get_mut(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for t in path {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Applies 1 to 4 structural mutations to `root`.
pub fn mutate_value(root: &mut Value, rng: &mut Rng) {
    for _ in 0..1 + rng.below(4) {
        let mut all = Vec::new();
        nodes(root, &mut Vec::new(), &mut all);
        // Prefer nodes inside the admitted object.
        let in_object: Vec<&Vec<String>> = all
            .iter()
            .filter(|p| p.len() >= 2 && p[0] == "request" && p[1] == "object")
            .collect();
        let path = if !in_object.is_empty() && !rng.one_in(5) {
            (*rng.pick(&in_object)).clone()
        } else {
            rng.pick(&all).clone()
        };
        // A donor subtree from elsewhere in the document, for copy mutations.
        let donor_path: &Vec<String> = rng.pick(&all);
        let donor = get(root, donor_path).cloned().unwrap_or(Value::Null);
        let Some(node) = get_mut(root, &path) else {
            continue;
        };
        match rng.below(12) {
            0 => *node = random_scalar(rng),
            1 => *node = random_value(rng, 0),
            2 => {
                if donor.to_string().len() < 64 * 1024 {
                    *node = donor;
                }
            }
            3 => match node {
                Value::Object(m) if !m.is_empty() => {
                    let k = m
                        .keys()
                        .nth(rng.below(m.len()))
                        .cloned()
                        .unwrap_or_default();
                    m.remove(&k);
                }
                Value::Array(a) if !a.is_empty() => {
                    a.remove(rng.below(a.len()));
                }
                _ => *node = Value::Null,
            },
            4 => match node {
                // Duplicate an element: duplicate env names, containers, volumes.
                Value::Array(a) if !a.is_empty() => {
                    let i = rng.below(a.len());
                    let e = a[i].clone();
                    a.insert(rng.below(a.len() + 1), e);
                }
                Value::Object(m) => {
                    m.insert(
                        (*rng.pick(KEYS)).to_owned(),
                        if rng.one_in(2) {
                            random_value(rng, 0)
                        } else {
                            donor
                        },
                    );
                }
                _ => *node = json!([node.clone(), node.clone()]),
            },
            5 => {
                // Huge array.
                let n = 1 + rng.below(300);
                let e = match &*node {
                    Value::Array(a) if !a.is_empty() => a[rng.below(a.len())].clone(),
                    other => other.clone(),
                };
                if e.to_string().len() * n < 256 * 1024 {
                    *node = Value::Array(vec![e; n]);
                }
            }
            6 => {
                if let Value::Object(m) = node {
                    let k = (*rng.pick(KEYS)).to_owned();
                    m.insert(k, Value::String((*rng.pick(STRINGS)).to_owned()));
                } else {
                    *node = Value::String((*rng.pick(STRINGS)).to_owned());
                }
            }
            7 => {
                // Rename a key (unicode keys, keys with '/' and '~').
                if let Value::Object(m) = node
                    && !m.is_empty()
                {
                    let k = m
                        .keys()
                        .nth(rng.below(m.len()))
                        .cloned()
                        .unwrap_or_default();
                    if let Some(v) = m.remove(&k) {
                        let new = format!("{k}{}", rng.pick(KEYS));
                        m.insert(new, v);
                    }
                }
            }
            8 => {
                // Wrap: value -> [value] or {"x": value}.
                *node = if rng.one_in(2) {
                    json!([node.clone()])
                } else {
                    json!({ (*rng.pick(KEYS)): node.clone() })
                };
            }
            9 => {
                // Unwrap a container.
                let inner = match node {
                    Value::Array(a) if !a.is_empty() => a[0].clone(),
                    Value::Object(m) if !m.is_empty() => {
                        m.values().next().cloned().unwrap_or(Value::Null)
                    }
                    _ => Value::Null,
                };
                *node = inner;
            }
            10 => {
                // Mutate a string a little.
                if let Value::String(s) = node {
                    match rng.below(4) {
                        0 => s.push_str(rng.pick::<&str>(STRINGS)),
                        1 => {
                            let mut at = rng.below(s.len() + 1);
                            while !s.is_char_boundary(at) {
                                at -= 1;
                            }
                            s.truncate(at);
                        }
                        2 => *s = s.to_uppercase(),
                        _ => s.insert(0, '/'),
                    }
                } else {
                    *node = random_scalar(rng);
                }
            }
            _ => {
                // Opt-in/out and control annotations on the object's metadata.
                let meta_paths = [
                    "/request/object/metadata/annotations",
                    "/request/object/metadata/labels",
                    "/request/object/spec/template/metadata/annotations",
                    "/request/object/spec/template/metadata/labels",
                ];
                let p = *rng.pick(&meta_paths);
                let key = (*rng.pick(&KEYS[29..])).to_owned();
                let val = Value::String((*rng.pick(STRINGS)).to_owned());
                if let Some(Value::Object(m)) = root.pointer_mut(p) {
                    m.insert(key, val);
                }
            }
        }
    }
}

/// Parses `data` as JSON, mutates it structurally and serializes it back (compact, or
/// pretty one time in eight). `None` when `data` is not JSON or the result would exceed
/// `max_size` bytes.
pub fn mutate_json(data: &[u8], seed: u64, max_size: usize) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(data).ok()?;
    let mut rng = Rng::new(seed);
    mutate_value(&mut v, &mut rng);
    let out = if rng.one_in(8) {
        serde_json::to_vec_pretty(&v).ok()?
    } else {
        serde_json::to_vec(&v).ok()?
    };
    (out.len() <= max_size).then_some(out)
}
