//! Which metrics the chart's alerts and dashboard query, and which an operator's
//! `/metrics` exports: shared by tests/alerts.rs (against the operator's registry) and an
//! end-to-end scrape (against a running operator). Include it with
//! `#[path = "common/metric_names.rs"] mod metric_names;`.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;

/// The rules file the chart's PrometheusRule embeds.
pub const RULES: &str = "charts/mcptrust/files/prometheus-rules.yaml";
/// The dashboard the chart's ConfigMap embeds.
pub const DASHBOARD: &str = "charts/mcptrust/files/grafana-dashboard.json";

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Every `mcptrust_*` name in a PromQL expression (metric names are the only identifiers
/// with that prefix: labels and functions never have it). Suffixed names such as
/// `..._bucket` and `..._total` are returned as written.
pub fn names_in_expr(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(k) = expr[i..].find("mcptrust_") {
        let start = i + k;
        let boundary = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The `expr` of every rule in the rules file, with the alert name.
pub fn rule_exprs() -> Vec<(String, String)> {
    let rules: serde_json::Value =
        serde_saphyr::from_str(&read(RULES)).unwrap_or_else(|e| panic!("{RULES}: {e}"));
    let mut out = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("alert or record")
                .to_string();
            out.push((name, rule["expr"].as_str().expect("expr").to_string()));
        }
    }
    out
}

/// The `expr` of every dashboard target, with its panel title.
pub fn dashboard_exprs() -> Vec<(String, String)> {
    let dash: serde_json::Value =
        serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    fn walk(v: &serde_json::Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                let title = m.get("title").and_then(|t| t.as_str()).unwrap_or(title);
                if let Some(e) = m.get("expr").and_then(|e| e.as_str()) {
                    out.push((title.to_string(), e.to_string()));
                }
                for x in m.values() {
                    walk(x, title, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dash, "", &mut out);
    out
}

/// Every metric name the rules and the dashboard query, as written in PromQL (sample
/// names: `_total`, `_bucket` included).
pub fn referenced_metric_names() -> BTreeSet<String> {
    rule_exprs()
        .iter()
        .chain(dashboard_exprs().iter())
        .flat_map(|(_, e)| names_in_expr(e))
        .collect()
}

/// The sample names an OpenMetrics text declares, from its `# TYPE` lines: a counter
/// `x` gives `x_total`, a histogram `x_bucket`, `x_sum` and `x_count`, a gauge `x`. A
/// family with no sample yet (a labelled family nothing has touched) still counts.
pub fn exported_sample_names(openmetrics: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in openmetrics.lines() {
        let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' '))
        else {
            continue;
        };
        let suffixes: &[&str] = match kind.trim() {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        for s in suffixes {
            out.insert(format!("{name}{s}"));
        }
    }
    out
}

/// The referenced names that `openmetrics` does not export (empty: all are there).
pub fn missing_from(openmetrics: &str) -> Vec<String> {
    let exported = exported_sample_names(openmetrics);
    referenced_metric_names()
        .into_iter()
        .filter(|n| !exported.contains(n))
        .collect()
}
