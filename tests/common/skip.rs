//! The one skip rule of the tests: a test that needs a tool or a file it cannot find calls
//! [`skip_or_fail`], which fails the test when `MCPTRUST_E2E_REQUIRED` is `1` or `true`
//! (`.ci/run` sets it) and otherwise prints one line, `skipped: <what>: <how>`, and tells
//! the caller to return.
//!
//! Plain `std`, so that a test binary that does not need the rest of `tests/common` can
//! include this file alone (`#[path = "common/skip.rs"] mod skip;`). `tests/skips.rs` lists
//! every call site with its reason and fails on a skip that does not go through here.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Whether every test must run (CI): `MCPTRUST_E2E_REQUIRED` is `1` or `true`.
pub fn required() -> bool {
    std::env::var("MCPTRUST_E2E_REQUIRED").is_ok_and(|v| v == "1" || v == "true")
}

/// Decides a missing prerequisite: `what` is missing (a tool, a file, a package) and `how`
/// says how to get it.
///
/// Returns `true` (the caller returns early, skipping the rest of the test) after printing
/// one line to stderr, unless [`required`].
///
/// # Panics
/// When [`required`]: a test that cannot run is then a failure.
pub fn skip_or_fail(what: &str, how: &str) -> bool {
    assert!(
        !required(),
        "required (MCPTRUST_E2E_REQUIRED=1) but {what} is not available: {how}"
    );
    eprintln!("skipped: {what}: {how}");
    true
}

/// The directory of the chart renders, `target/chart-render/` (one `<case>.yaml` per value
/// set, written by `python3 ci/helm-lint.py`, which `.ci/run` runs before the tests), when
/// it has renders and every one is at least as new as every file of `charts/mcptrust`.
/// Otherwise `None` after [`skip_or_fail`]: stale renders would check an older chart.
pub fn chart_renders() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/chart-render");
    let chart = newest(&root.join("charts/mcptrust"));
    let renders: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    let stale: Vec<&PathBuf> = renders
        .iter()
        .filter(|p| {
            !p.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= chart)
        })
        .collect();
    if renders.is_empty() || !stale.is_empty() {
        let state = if renders.is_empty() {
            "missing".to_owned()
        } else {
            format!("older than the chart ({})", stale.len())
        };
        skip_or_fail(
            "fresh chart renders",
            &format!(
                "{} is {state}: run `python3 ci/helm-lint.py` first",
                dir.display()
            ),
        );
        return None;
    }
    Some(dir)
}

/// The newest modification time of the files below `dir` (the epoch when there are none).
fn newest(dir: &Path) -> SystemTime {
    let mut t = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        let m = if p.is_dir() {
            newest(&p)
        } else {
            p.metadata().and_then(|m| m.modified()).unwrap_or(t)
        };
        t = t.max(m);
    }
    t
}
