//! The documentation stays true:
//! - every relative link in README.md and docs/ names a file that exists, and every
//!   `#anchor` a heading of that file (GitHub's slug rules);
//! - every alert of the chart's PrometheusRule has a `runbook_url` whose anchor is a
//!   section of docs/runbooks.md, and the chart's default `runbookUrlBase` is that file;
//! - the generated references are current: docs/api.md (`mcptrust docs api`) and the
//!   values table of docs/helm.md (`mcptrust docs helm-values`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md and every Markdown file of docs/.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The lines outside fenced code blocks.
fn unfenced(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The text outside fenced code blocks, line by line, with inline code removed.
fn prose_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in unfenced(text) {
        // Drop `code` spans (an odd backtick count leaves the rest as prose).
        let mut kept = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                kept.push_str(part);
            }
        }
        out.push(kept);
    }
    out
}

/// GitHub's anchor for a heading: lowercase, inline-code backticks and punctuation dropped
/// (letters, digits, `-` and `_` kept), spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file: one per heading, a repeated slug numbered `-1`, `-2`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in unfenced(text) {
        if !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of the inline links `[text](target)` in a line of prose.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        out.push(after[..end].trim().to_owned());
        rest = &after[end..];
    }
    out
}

/// Every broken relative link or anchor in `files`, as `file: target (why)`.
fn broken_links(files: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    for file in files {
        let text = read(file);
        let name = file
            .strip_prefix(root())
            .unwrap_or(file)
            .display()
            .to_string();
        for line in prose_lines(&text) {
            for target in link_targets(&line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target.as_str(), None),
                };
                let resolved = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().expect("parent").join(path)
                };
                if !resolved.exists() {
                    problems.push(format!("{name}: {target} (no such file)"));
                    continue;
                }
                if let Some(anchor) = anchor
                    && !anchors(&read(&resolved)).contains(anchor)
                {
                    problems.push(format!("{name}: {target} (no such heading)"));
                }
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let files = doc_files();
    assert!(files.len() >= 12, "README and docs/: {files:?}");
    let problems = broken_links(&files);
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

/// The check fails on what it is for: a missing file, a missing heading; and GitHub's slugs.
#[test]
fn the_link_check_catches_broken_links() {
    assert_eq!(
        slug(" The operator: `mcptrust run`"),
        "the-operator-mcptrust-run"
    );
    assert_eq!(
        slug(" Metrics, alerts and dashboard"),
        "metrics-alerts-and-dashboard"
    );
    assert_eq!(slug(" McpTrustNoLeader"), "mcptrustnoleader");
    let a = anchors("# A\n## Java\n```\n# not a heading\n```\n## Java\n");
    assert_eq!(
        a,
        ["a", "java", "java-1"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = dir.path().join("a.md");
    std::fs::write(dir.path().join("b.md"), "# B\n## Here\n").expect("write");
    std::fs::write(
        &doc,
        "[ok](b.md#here) [gone](c.md) [nohead](b.md#there) `[code](x.md)` [web](https://x/y)\n\
         [self](#a)\n# A\n",
    )
    .expect("write");
    let problems = broken_links(&[doc]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].ends_with("c.md (no such file)"), "{problems:?}");
    assert!(
        problems[1].ends_with("b.md#there (no such heading)"),
        "{problems:?}"
    );
}

#[test]
fn every_alert_has_a_runbook_anchor() {
    let rules: serde_json::Value = serde_saphyr::from_str(&read(
        &root().join("charts/mcptrust/files/prometheus-rules.yaml"),
    ))
    .expect("rules");
    let runbooks = anchors(&read(&root().join("docs/runbooks.md")));
    let mut alerts = 0;
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("alert");
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no runbook_url"));
            let anchor = url
                .strip_prefix("RUNBOOK_URL_BASE#")
                .unwrap_or_else(|| panic!("{name}: {url} is not RUNBOOK_URL_BASE#anchor"));
            assert!(
                runbooks.contains(anchor),
                "{name}: docs/runbooks.md has no section #{anchor}"
            );
            alerts += 1;
        }
    }
    assert!(alerts >= 7, "{alerts} alerts");
    let values: serde_json::Value =
        serde_saphyr::from_str(&read(&root().join("charts/mcptrust/values.yaml"))).expect("values");
    assert_eq!(
        values["metrics"]["prometheusRule"]["runbookUrlBase"], "docs/runbooks.md",
        "the default runbookUrlBase names the runbooks"
    );
}

#[test]
fn api_reference_is_current() {
    let generated = mcptrust::docs::api_markdown().expect("api.md");
    let committed = read(&root().join("docs/api.md"));
    assert!(
        generated == committed,
        "docs/api.md is stale: run `cargo run -- docs api > docs/api.md` and commit it"
    );
}

#[test]
fn api_reference_has_every_field_and_rule() {
    let text = mcptrust::docs::api_markdown().expect("api.md");
    for needle in [
        "| `spec.endpoint.url` |",
        "| `spec.trust.pinServerCertificate` |",
        "| `spec.egress.allow` |",
        "| `status.conditions` |",
        "spec.mtls.renewBefore must be shorter than spec.mtls.duration",
        "`\"Enforce\"`",
    ] {
        assert!(text.contains(needle), "docs/api.md lacks {needle}");
    }
    let crd = read(&root().join("crds/mcpservers.mcptrust.io.yaml"));
    let messages = crd.matches("- message:").count();
    let rules = text
        .split("## Validation rules")
        .nth(1)
        .expect("rules section")
        .lines()
        .filter(|l| l.starts_with("| `"))
        .count();
    assert_eq!(rules, messages, "one row per CEL rule of the CRD");
}

#[test]
fn helm_values_table_is_current() {
    let chart = root().join("charts/mcptrust");
    let table = mcptrust::docs::helm_values_markdown(
        &read(&chart.join("values.yaml")),
        &read(&chart.join("values.schema.json")),
    )
    .expect("values table");
    let doc = read(&root().join("docs/helm.md"));
    let regenerated = mcptrust::docs::replace_generated(&doc, &table)
        .expect("docs/helm.md has the generated-table markers");
    assert!(
        regenerated == doc,
        "the values table of docs/helm.md is stale: run `cargo run -- docs helm-values --update docs/helm.md` and commit it"
    );
    for key in [
        "`replicaCount`",
        "`webhook.certMode`",
        "`metrics.prometheusRule.runbookUrlBase`",
    ] {
        assert!(table.contains(key), "the values table lacks {key}");
    }
}
