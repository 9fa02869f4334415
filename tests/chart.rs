//! The Helm chart (charts/mcptrust) against the code it deploys:
//!
//! - its RBAC grants every API call the code makes and nothing more, compared by
//!   (apiGroup, resource, verb) with `mcptrust::controller::rbac`;
//! - every environment variable its Deployment sets is one `mcptrust run` reads, and the
//!   rendered values parse as that command's flags;
//! - its CRD is the repository's, byte for byte, and its appVersion is the crate's;
//! - its ValidatingAdmissionPolicy's CEL admits what the injector produced and rejects,
//!   with an actionable message, pods it did not inject (kube-cel, client-side);
//! - the operator config it renders parses with the operator's own (strict) parser and
//!   drives the injector as the values say;
//! - the Dockerfile copies everything the release build compiles.
//!
//! Rust cannot run Helm's template engine, so templates are read as text with their
//! `{{ }}` actions stripped (see [`strip_helm`]). The checks on rendered manifests use
//! what `python3 ci/helm-lint.py` renders with Helm's own library into
//! target/chart-render/ (`.ci/run` runs it before `cargo test`); without those files, or
//! with files older than the chart, they are skipped, except under
//! `MCPTRUST_E2E_REQUIRED=1`, where they fail (`tests/common/skip.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use kube_cel::{AdmissionRequest, VapEvaluator, VapExpression};
use mcptrust::controller::rbac::{CLUSTER_RULES, NAMESPACE_RULES, Rule};
use mcptrust::inject::{ANNOTATION_INJECTED, ANNOTATION_SKIPPED, InjectConfig, Injection, inject};
use serde_json::{Value, json};

#[path = "common/skip.rs"]
mod skip;

const CHART: &str = "charts/mcptrust";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Reading templates as YAML.

/// Turns a Helm template into plain YAML: a line made only of actions (`{{- if }}`,
/// `{{- end }}`, `{{/* */}}`, `{{- include ... | nindent 4 }}`) is dropped, and an action
/// inside a line becomes the string `TEMPLATED`. Both branches of a conditional are kept.
fn strip_helm(text: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < text.len() {
        // One logical line: up to the newline that follows the last action starting on it
        // (an action may span lines).
        let mut j = i;
        let mut has_action = false;
        let end = loop {
            let nl = text[j..].find('\n').map_or(text.len(), |k| j + k);
            match text[j..nl].find("{{") {
                Some(k) => {
                    let open = j + k;
                    let close = text[open..]
                        .find("}}")
                        .map(|c| open + c + 2)
                        .unwrap_or_else(|| panic!("unclosed action at byte {open}"));
                    has_action = true;
                    j = close;
                }
                None => break nl,
            }
        };
        let line = &text[i..end];
        if has_action {
            let (mut bare, mut replaced) = (String::new(), String::new());
            let mut rest = line;
            while let Some(open) = rest.find("{{") {
                let close = open + rest[open..].find("}}").expect("closed above") + 2;
                bare.push_str(&rest[..open]);
                replaced.push_str(&rest[..open]);
                replaced.push_str("TEMPLATED");
                rest = &rest[close..];
            }
            bare.push_str(rest);
            replaced.push_str(rest);
            if !bare.trim().is_empty() {
                out.push_str(&replaced);
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
        i = end + 1;
    }
    out
}

/// The YAML documents of a text (comment-only documents are left out).
fn documents(text: &str) -> Vec<Value> {
    mcptrust::inject::manifest::split_documents(text)
        .into_iter()
        .filter_map(
            |doc| match serde_saphyr::from_str::<Option<Value>>(doc.text) {
                Ok(v) => v,
                Err(e) => panic!("line {}: {e}\n{}", doc.first_line, doc.text),
            },
        )
        .collect()
}

fn template_docs(name: &str) -> Vec<Value> {
    documents(&strip_helm(&read(&format!("{CHART}/templates/{name}"))))
}

#[test]
fn strip_helm_keeps_yaml_and_drops_directives() {
    let t = "a: 1\n{{- if .X }}\nb: {{ .Values.b | quote }}\n  {{- include \"x\" . | nindent 2 }}\n{{- end }}\n{{/* a\ncomment */}}\nc: [{{ .c }}]\n";
    assert_eq!(strip_helm(t), "a: 1\nb: TEMPLATED\nc: [TEMPLATED]\n");
}

// ---------------------------------------------------------------------------------------
// RBAC.

type Triple = (String, String, String);

fn code_triples(rules: &[Rule]) -> BTreeSet<Triple> {
    rules
        .iter()
        .flat_map(|r| {
            r.verbs.iter().map(|v| {
                (
                    r.api_group.to_string(),
                    r.resource.to_string(),
                    v.to_string(),
                )
            })
        })
        .collect()
}

/// (apiGroup, resource, verb) triples of every rule of the documents of `kind`.
fn chart_triples(docs: &[Value], kind: &str) -> BTreeSet<Triple> {
    let strs = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{kind} rule without {key}: {v}"))
            .iter()
            .map(|s| s.as_str().expect("a string").to_string())
            .collect()
    };
    let mut out = BTreeSet::new();
    for doc in docs.iter().filter(|d| d["kind"] == kind) {
        for rule in doc["rules"].as_array().expect("rules") {
            for g in strs(rule, "apiGroups") {
                for r in strs(rule, "resources") {
                    for v in strs(rule, "verbs") {
                        assert!(
                            !g.contains('*') && !r.contains('*') && !v.contains('*'),
                            "wildcard in {kind}: {rule}"
                        );
                        out.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    out
}

fn assert_same(kind: &str, chart: &BTreeSet<Triple>, code: &BTreeSet<Triple>, table: &str) {
    let extra: Vec<_> = chart.difference(code).collect();
    let missing: Vec<_> = code.difference(chart).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "charts/mcptrust/templates/rbac.yaml ({kind}) and src/controller/rbac.rs ({table}) differ:\n  \
         granted but never called: {extra:?}\n  called but not granted: {missing:?}"
    );
}

#[test]
fn rbac_template_grants_exactly_what_the_code_calls() {
    let docs = template_docs("rbac.yaml");
    assert_same(
        "ClusterRole",
        &chart_triples(&docs, "ClusterRole"),
        &code_triples(CLUSTER_RULES),
        "CLUSTER_RULES",
    );
    assert_same(
        "Role",
        &chart_triples(&docs, "Role"),
        &code_triples(NAMESPACE_RULES),
        "NAMESPACE_RULES",
    );
}

#[test]
fn every_rbac_rule_says_why() {
    let text = read(&format!("{CHART}/templates/rbac.yaml"));
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("- apiGroups:") {
            let prev = lines[..n]
                .iter()
                .rev()
                .map(|l| l.trim())
                .find(|l| !l.is_empty() && !l.starts_with("{{"))
                .unwrap_or("");
            assert!(
                prev.starts_with('#'),
                "rbac.yaml line {}: a rule without a comment saying why",
                n + 1
            );
        }
    }
    assert!(!text.contains("\"*\""), "rbac.yaml holds a wildcard");
}

// ---------------------------------------------------------------------------------------
// The Deployment's environment against the CLI.

/// Every environment variable `mcptrust run` reads (its own flags, flattened groups and the
/// global ones), with whether the flag is a switch.
fn cli_env() -> BTreeMap<String, (String, bool)> {
    fn walk(cmd: &clap::Command, out: &mut BTreeMap<String, (String, bool)>) {
        for arg in cmd.get_arguments() {
            if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
                let switch = matches!(
                    arg.get_action(),
                    clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
                );
                out.insert(
                    env.to_string_lossy().into_owned(),
                    (long.to_string(), switch),
                );
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let root = mcptrust::cli::Cli::command();
    let mut out = BTreeMap::new();
    for arg in root.get_arguments() {
        if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
            out.insert(
                env.to_string_lossy().into_owned(),
                (long.to_string(), false),
            );
        }
    }
    let run = root.find_subcommand("run").expect("the `run` subcommand");
    walk(run, &mut out);
    out
}

/// Names of the env entries of a template or manifest text: `- name: UPPER_CASE`.
fn env_names_in(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .map(|n| n.trim().trim_matches('"').to_string())
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

#[test]
fn deployment_sets_only_variables_the_binary_reads() {
    let cli = cli_env();
    let names = env_names_in(&read(&format!("{CHART}/templates/deployment.yaml")));
    assert!(names.len() >= 10, "found only {names:?}");
    let unknown: Vec<_> = names.iter().filter(|n| !cli.contains_key(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the Deployment sets {unknown:?}, which `mcptrust run` does not read (it reads {:?})",
        cli.keys().collect::<Vec<_>>()
    );
    for needed in [
        "POD_NAMESPACE",
        "POD_NAME",
        "MCPTRUST_CONFIG",
        "MCPTRUST_TLS_CERT_FILE",
        "MCPTRUST_TLS_KEY_FILE",
        "MCPTRUST_WEBHOOK_LISTEN",
        "MCPTRUST_ADMIN_LISTEN",
        "MCPTRUST_DRAIN_TIMEOUT_SECONDS",
        "MCPTRUST_LEASE_NAME",
    ] {
        assert!(
            names.iter().any(|n| n == needed),
            "the Deployment does not set {needed}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Files that must agree with the repository.

#[test]
fn chart_crd_is_the_repository_crd() {
    let chart = read(&format!("{CHART}/crds/mcpservers.mcptrust.io.yaml"));
    let repo = read("crds/mcpservers.mcptrust.io.yaml");
    assert!(
        chart == repo,
        "{CHART}/crds/mcpservers.mcptrust.io.yaml differs from crds/: \
         cp crds/mcpservers.mcptrust.io.yaml {CHART}/crds/"
    );
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart: Value =
        serde_saphyr::from_str(&read(&format!("{CHART}/Chart.yaml"))).expect("Chart.yaml");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["name"], "mcptrust");
}

#[test]
fn chart_runs_as_the_image_user() {
    let values: Value =
        serde_saphyr::from_str(&read(&format!("{CHART}/values.yaml"))).expect("values.yaml");
    let docker = read("Dockerfile");
    let user = docker
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("USER in the Dockerfile");
    assert_eq!(
        user.split(':').next(),
        Some(
            values["podSecurityContext"]["runAsUser"]
                .to_string()
                .as_str()
        )
    );
}

/// The Dockerfile's build stage copies every file `cargo build --release --locked --bin
/// mcptrust` reads: sources, embedded files (`include_str!`), declared targets.
#[test]
fn dockerfile_copies_what_the_release_build_reads() {
    let docker = read("Dockerfile");
    assert!(
        docker
            .lines()
            .any(|l| l.contains("cargo build --release --locked --bin mcptrust")),
        "the Dockerfile must run the release build"
    );
    let build_stage: String = docker
        .split("\nFROM ")
        .find(|s| s.contains("cargo build"))
        .expect("a build stage")
        .to_string();
    let mut copied: Vec<PathBuf> = Vec::new();
    for line in build_stage.lines() {
        let Some(rest) = line.trim().strip_prefix("COPY ") else {
            continue;
        };
        let words: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        assert!(
            !rest.contains("--from"),
            "unexpected COPY --from in the build stage"
        );
        for src in &words[..words.len() - 1] {
            let p = root().join(src);
            assert!(
                p.exists(),
                "the Dockerfile copies {src}, which does not exist"
            );
            copied.push(p.canonicalize().expect("canonical"));
        }
    }
    let covered = |p: &Path| copied.iter().any(|c| p.starts_with(c));
    for must in ["Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs"] {
        assert!(
            covered(&root().join(must)),
            "the Dockerfile does not copy {must}"
        );
    }
    // Explicit [[bench]] targets: cargo wants their files even for `--bin`.
    let manifest: toml_like::Manifest = toml_like::parse(&read("Cargo.toml"));
    for bench in manifest.benches {
        let p = root().join(format!("benches/{bench}.rs"));
        assert!(covered(&p), "the Dockerfile does not copy {}", p.display());
    }
    // Files the library and binary embed.
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for macro_name in ["include_str!(\"", "include_bytes!(\""] {
                for (at, _) in text.match_indices(macro_name) {
                    let rel = &text[at + macro_name.len()..];
                    let rel = &rel[..rel.find('"').expect("closing quote")];
                    let target = path.parent().expect("parent").join(rel);
                    let target = target.canonicalize().unwrap_or(target);
                    assert!(
                        covered(&target),
                        "{} embeds {}, which the Dockerfile does not copy",
                        path.display(),
                        target.display()
                    );
                }
            }
        }
    }
    // .dockerignore must not hide what is copied.
    let ignore = read(".dockerignore");
    for pattern in ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let pat = pattern.trim_start_matches('/').trim_end_matches('/');
        for c in &copied {
            let rel = c
                .strip_prefix(root().canonicalize().expect("root"))
                .expect("in repo");
            assert!(
                !rel.starts_with(pat),
                ".dockerignore pattern {pattern} hides {}",
                rel.display()
            );
        }
    }
    let last_stage = docker.rsplit("\nFROM ").next().expect("final stage");
    assert!(
        last_stage.starts_with("gcr.io/distroless/"),
        "the image must be distroless"
    );
    assert!(last_stage.contains("ENTRYPOINT [\"/mcptrust\"]"));
}

/// Just enough of Cargo.toml: the names of the `[[bench]]` targets.
mod toml_like {
    pub struct Manifest {
        pub benches: Vec<String>,
    }
    pub fn parse(text: &str) -> Manifest {
        let mut benches = Vec::new();
        let mut in_bench = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bench = line == "[[bench]]";
            } else if in_bench && let Some(v) = line.strip_prefix("name = ") {
                benches.push(v.trim_matches('"').to_string());
            }
        }
        Manifest { benches }
    }
}

// ---------------------------------------------------------------------------------------
// The ValidatingAdmissionPolicy's CEL, evaluated as the API server would.

struct Policy {
    match_conditions: Vec<VapExpression>,
    validations: Vec<VapExpression>,
}

fn policy() -> Policy {
    let docs = template_docs("validatingadmissionpolicy.yaml");
    let vap = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .expect("a ValidatingAdmissionPolicy");
    let text = serde_json::to_string(&vap["spec"]).expect("json");
    for key in [ANNOTATION_INJECTED, ANNOTATION_SKIPPED] {
        assert!(
            text.contains(&format!("'{key}'")),
            "the policy does not test the injector's annotation {key}"
        );
    }
    let exprs = |key: &str| -> Vec<VapExpression> {
        vap["spec"][key]
            .as_array()
            .unwrap_or_else(|| panic!("spec.{key}"))
            .iter()
            .map(|e| VapExpression {
                expression: kube_cel_keys(e["expression"].as_str().expect("expression")),
                message: e["message"].as_str().map(str::to_string),
                message_expression: e["messageExpression"].as_str().map(kube_cel_keys),
            })
            .collect()
    };
    assert_eq!(vap["spec"]["failurePolicy"], "Fail");
    Policy {
        match_conditions: exprs("matchConditions"),
        validations: exprs("validations"),
    }
}

/// kube-cel 0.8 binds `object` with every JSON key escaped as if it were a schema property
/// name (`mcptrust.io/injected` becomes `mcptrust__dot__io__slash__injected`), whereas the
/// API server leaves the keys of a map such as `metadata.annotations` as they are. So the
/// annotation keys quoted in the expressions (checked above to be the injector's own) are
/// escaped the same way before evaluation; the logic evaluated is otherwise the policy's.
fn kube_cel_keys(expr: &str) -> String {
    let mut out = String::new();
    let mut parts = expr.split('\'');
    out.push_str(parts.next().unwrap_or_default());
    for (i, part) in parts.enumerate() {
        out.push('\'');
        // Odd pieces are the insides of '...' literals; annotation keys have a / and no space.
        if i % 2 == 0 && part.contains('/') && !part.contains(' ') {
            for ch in part.chars() {
                match ch {
                    '_' => out.push_str("__"),
                    '.' => out.push_str("__dot__"),
                    '-' => out.push_str("__dash__"),
                    '/' => out.push_str("__slash__"),
                    c => out.push(c),
                }
            }
        } else {
            out.push_str(part);
        }
    }
    out
}

/// `Ok(())` when the policy admits the pod (or does not apply to it), else its message.
fn admit(policy: &Policy, pod: &Value) -> Result<(), String> {
    let eval = VapEvaluator::builder()
        .object(pod.clone())
        .request(AdmissionRequest {
            operation: "CREATE".into(),
            namespace: "agents".into(),
            ..Default::default()
        })
        .build();
    // kube-cel reports a failed evaluation (an error, a non-boolean, a compile error) as
    // a result that did not pass; only `false` itself carries this message (the
    // expressions have no message of their own): anything else fails the test rather
    // than pass for "does not apply" or for a rejection.
    let evaluated_false = |expression: &str| {
        Some(format!(
            "validation expression '{expression}' evaluated to false"
        ))
    };
    for (r, e) in eval
        .evaluate(&policy.match_conditions)
        .into_iter()
        .zip(&policy.match_conditions)
    {
        assert!(e.message.is_none() && e.message_expression.is_none());
        if !r.passed {
            assert_eq!(
                r.message,
                evaluated_false(&r.expression),
                "matchCondition failed to evaluate"
            );
            return Ok(());
        }
    }
    for r in eval.evaluate(&policy.validations) {
        if !r.passed {
            let message = r.message.unwrap_or_default();
            assert!(
                !message.starts_with("evaluation error")
                    && !message.starts_with("expression returned non-boolean")
                    && !message.contains(&r.expression),
                "validation failed to evaluate: {message}"
            );
            return Err(message);
        }
    }
    Ok(())
}

fn pod(metadata: Value, spec: Value) -> Value {
    let mut meta = json!({"name": "agent", "namespace": "agents"});
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), metadata.as_object()) {
        m.extend(extra.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

fn injected(p: &Value) -> Value {
    injected_with(&InjectConfig::embedded_default(), p)
}

#[test]
fn require_injection_policy_admits_injected_pods_and_explains_the_rest() {
    let policy = policy();
    let containers = json!({"containers": [{"name": "app", "image": "python:3.12"}]});

    let bare = pod(json!({}), containers.clone());
    let msg = admit(&policy, &bare).expect_err("a bare pod is rejected");
    assert!(
        msg.contains("without the mcptrust.io/injected annotation")
            && msg.contains("mcptrust.io/inject=false"),
        "{msg}"
    );
    let annotated = pod(json!({"annotations": {"team": "a"}}), containers.clone());
    assert!(admit(&policy, &annotated).is_err());

    // What the webhook returns passes.
    for p in [injected(&bare), injected(&annotated)] {
        assert_eq!(admit(&policy, &p), Ok(()), "{}", p["metadata"]);
    }

    // A pod the injector had to skip is rejected with the injector's reason.
    let clash = pod(
        json!({}),
        json!({"containers": [{"name": "app", "image": "node:22"}],
               "volumes": [{"name": "mcptrust-trust", "emptyDir": {}}]}),
    );
    let skipped = injected(&clash);
    assert!(skipped["metadata"]["annotations"]["mcptrust.io/skipped"].is_string());
    let msg = admit(&policy, &skipped).expect_err("a skipped pod is rejected");
    assert!(
        msg.contains("could not inject") && msg.contains("already exists with another source"),
        "{msg}"
    );

    // Static-pod mirrors are left alone.
    let mirror = pod(
        json!({"annotations": {"kubernetes.io/config.mirror": "abc"}}),
        containers,
    );
    assert_eq!(admit(&policy, &mirror), Ok(()));
}

// ---------------------------------------------------------------------------------------
// Rendered manifests (written by ci/helm-lint.py with Helm's engine).

/// The rendered cases, by name; `None` (after [`skip::skip_or_fail`], which fails under
/// `MCPTRUST_E2E_REQUIRED=1`) when they are missing or older than the chart.
fn rendered() -> Option<BTreeMap<String, Vec<Value>>> {
    let dir = skip::chart_renders()?;
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("target/chart-render")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    cases.sort();
    Some(
        cases
            .iter()
            .map(|p| {
                let name = p.file_stem().expect("stem").to_string_lossy().into_owned();
                let text = std::fs::read_to_string(p).expect("read render");
                (name, documents(&text))
            })
            .collect(),
    )
}

fn config_of(docs: &[Value]) -> InjectConfig {
    let text = docs
        .iter()
        .find_map(|d| d["data"]["config.yaml"].as_str())
        .expect("a ConfigMap with config.yaml");
    InjectConfig::from_yaml(text)
        .unwrap_or_else(|e| panic!("the operator rejects the chart's config: {e}\n{text}"))
}

#[test]
fn rendered_rbac_matches_the_code() {
    let Some(cases) = rendered() else { return };
    let (cluster, ns) = (code_triples(CLUSTER_RULES), code_triples(NAMESPACE_RULES));
    for (case, docs) in &cases {
        let (c, n) = (
            chart_triples(docs, "ClusterRole"),
            chart_triples(docs, "Role"),
        );
        if case == "default" {
            // The default (selfManaged) install grants exactly the table.
            assert_same("ClusterRole, rendered", &c, &cluster, "CLUSTER_RULES");
            assert_same("Role, rendered", &n, &ns, "NAMESPACE_RULES");
        } else {
            // Other modes may leave the selfManaged certificate rules out, never add any.
            assert!(
                c.is_subset(&cluster),
                "{case}: {:?}",
                c.difference(&cluster).collect::<Vec<_>>()
            );
            assert!(
                n.is_subset(&ns),
                "{case}: {:?}",
                n.difference(&ns).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn rendered_deployment_env_parses_as_run_flags() {
    let Some(cases) = rendered() else { return };
    let cli = cli_env();
    for (case, docs) in &cases {
        let dep = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("Deployment");
        let container = &dep["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"], json!(["run"]), "{case}");
        let mut args = vec!["mcptrust".to_string(), "run".to_string()];
        for e in container["env"].as_array().expect("env") {
            let name = e["name"].as_str().expect("name");
            let (long, switch) = cli
                .get(name)
                .unwrap_or_else(|| panic!("{case}: `mcptrust run` does not read {name}"));
            let value = e["value"].as_str().unwrap_or("from-the-downward-api");
            if *switch {
                if value == "true" {
                    args.push(format!("--{long}"));
                }
            } else {
                args.push(format!("--{long}={value}"));
            }
        }
        if let Err(e) = <mcptrust::cli::Cli as clap::Parser>::try_parse_from(&args) {
            panic!(
                "{case}: the rendered env does not parse as `mcptrust run` flags: {e}\n{args:?}"
            );
        }
    }
}

#[test]
fn rendered_config_is_what_the_operator_reads() {
    let Some(cases) = rendered() else { return };
    for (case, docs) in &cases {
        let cfg = config_of(docs);
        // The reloader sidecar runs the chart's own image, as the operator does.
        let operator = &docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("Deployment")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            cfg.reloader.image.as_deref(),
            operator["image"].as_str(),
            "{case}"
        );
        assert_eq!(
            cfg.reloader.image_pull_policy.as_deref(),
            operator["imagePullPolicy"].as_str(),
            "{case}"
        );
        if case == "default" || case == "release-prod-in-platform" {
            // The chart's defaults are the operator's defaults.
            let mut want = InjectConfig::default();
            want.proxy.cluster_domain = Some("cluster.local".into());
            want.reloader.image = cfg.reloader.image.clone();
            want.reloader.image_pull_policy = cfg.reloader.image_pull_policy.clone();
            assert_eq!(cfg, want, "{case}");
        }
    }
    let Some(proxy) = cases.get("proxy") else {
        panic!("no proxy case rendered (charts/mcptrust/ci/proxy-values.yaml)");
    };
    let cfg = config_of(proxy);
    let certs = mcptrust::pki::parse_pem_certificates(
        "trust.extraCAs",
        cfg.default_trust.extra_cas_pem.as_bytes(),
    )
    .expect("the extra CA parses");
    assert_eq!(certs.len(), 1);
    assert!(mcptrust::pki::inspect(&certs[0]).expect("inspect").is_ca);

    // Values -> Helm -> config -> injector: the proxy reaches the pod in both cases.
    let p = injected_with(
        &cfg,
        &pod(
            json!({}),
            json!({"containers": [{"name": "app", "image": "node:22"}]}),
        ),
    );
    let env = &p["spec"]["containers"][0]["env"];
    let get = |n: &str| {
        env.as_array()
            .and_then(|a| a.iter().find(|e| e["name"] == n))
            .and_then(|e| e["value"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(get("HTTPS_PROXY"), "http://egress-proxy.sandbox.svc:3128");
    assert_eq!(get("https_proxy"), get("HTTPS_PROXY"));
    let no_proxy = get("NO_PROXY");
    for want in [
        ".corp.example",
        ".internal.example",
        "10.96.0.1",
        "10.96.0.0/12",
        "10.244.0.0/16",
    ] {
        assert!(
            no_proxy.split(',').any(|e| e == want),
            "NO_PROXY {no_proxy} lacks {want}"
        );
    }
    assert!(!no_proxy.contains('*'), "{no_proxy}");
}

fn injected_with(cfg: &InjectConfig, p: &Value) -> Value {
    let out = inject(p, &Injection::resolve(cfg, None)).expect("inject");
    let mut p = p.clone();
    json_patch::patch(&mut p, &out.patch.to_json_patch()).expect("patch applies");
    p
}

/// The opt-in PrometheusRule and Grafana dashboard: absent by default; when enabled
/// (ci/observability-values.yaml), exactly the files promtool and tests/alerts.rs check,
/// with the runbook URL base substituted; the ServiceMonitor keeps the McpServers'
/// `namespace` label.
#[test]
fn rendered_alerts_and_dashboard_are_the_checked_files() {
    let Some(cases) = rendered() else { return };
    let rules_text = read(&format!("{CHART}/files/prometheus-rules.yaml"));
    let dashboard: Value =
        serde_json::from_str(&read(&format!("{CHART}/files/grafana-dashboard.json")))
            .expect("dashboard JSON");
    let of_kind = |docs: &[Value], kind: &str| -> Vec<Value> {
        docs.iter().filter(|d| d["kind"] == kind).cloned().collect()
    };
    let mut enabled_seen = false;
    for (case, docs) in &cases {
        let rules = of_kind(docs, "PrometheusRule");
        let dashboards: Vec<Value> = of_kind(docs, "ConfigMap")
            .into_iter()
            .filter(|d| d["metadata"]["labels"]["grafana_dashboard"] == "1")
            .collect();
        for sm in of_kind(docs, "ServiceMonitor") {
            for e in sm["spec"]["endpoints"].as_array().expect("endpoints") {
                assert_eq!(e["honorLabels"], true, "{case}: ServiceMonitor honorLabels");
            }
        }
        if case != "observability" {
            assert!(
                rules.is_empty(),
                "{case}: a PrometheusRule although disabled"
            );
            assert!(
                dashboards.is_empty(),
                "{case}: a dashboard although disabled"
            );
            continue;
        }
        enabled_seen = true;
        assert_eq!(rules.len(), 1, "{case}");
        let base = "https://docs.example.com/mcptrust/docs/runbooks.md";
        let want: Value =
            serde_saphyr::from_str(&rules_text.replace("RUNBOOK_URL_BASE", base)).expect("rules");
        assert_eq!(rules[0]["spec"], want, "{case}: the rules are the file");
        assert_eq!(rules[0]["metadata"]["labels"]["release"], "prometheus");
        assert_eq!(dashboards.len(), 1, "{case}");
        let data: Value = serde_json::from_str(
            dashboards[0]["data"]["mcptrust.json"]
                .as_str()
                .expect("mcptrust.json"),
        )
        .expect("the dashboard ConfigMap holds JSON");
        assert_eq!(data, dashboard, "{case}: the dashboard is the file");
    }
    assert!(
        enabled_seen,
        "no rendered case enables the alerts and dashboard"
    );
}

#[test]
fn rendered_webhook_configuration_rule_is_self_managed_only_and_names_the_chart_s_own() {
    let Some(cases) = rendered() else { return };
    for (case, docs) in &cases {
        let dep = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("Deployment");
        let env = |name: &str| {
            dep["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .expect("env")
                .iter()
                .find(|e| e["name"] == name)
                .and_then(|e| e["value"].as_str())
                .unwrap_or_else(|| panic!("{case}: no {name}"))
                .to_owned()
        };
        let mwc = docs
            .iter()
            .find(|d| d["kind"] == "MutatingWebhookConfiguration")
            .expect("MutatingWebhookConfiguration");
        assert_eq!(
            mwc["metadata"]["name"],
            env("MCPTRUST_WEBHOOK_CONFIG_NAME"),
            "{case}"
        );
        let rules: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] == "ClusterRole")
            .flat_map(|d| d["rules"].as_array().expect("rules"))
            .filter(|r| {
                r["resources"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|x| x == "mutatingwebhookconfigurations"))
            })
            .collect();
        if env("MCPTRUST_WEBHOOK_CERT_MODE") == "selfManaged" {
            assert_eq!(rules.len(), 1, "{case}: {rules:?}");
            assert_eq!(
                rules[0]["resourceNames"],
                json!([env("MCPTRUST_WEBHOOK_CONFIG_NAME")]),
                "{case}: the rule must name the chart's own MutatingWebhookConfiguration only"
            );
        } else {
            assert!(
                rules.is_empty(),
                "{case}: rendered outside selfManaged: {rules:?}"
            );
        }
    }
}
