//! The shape of the source tree, checked on every `cargo test`: the top-level modules form
//! layers, api → pki/inject/tls → webhook/probe → controller → operator → cli, and no
//! import goes back up; and no two modules that share a parent import each other, directly
//! or around a loop (no import cycle). Test code (`#[cfg(test)]`) and doc comments are left
//! out: tests may compare across layers.
//!
//! Every `crate::`, `super::` and `self::` path in `src/` (in `use` trees and in code) is
//! resolved to the deepest module file it names. A small scanner does the reading (comments
//! and literals blanked, `#[cfg(test)]` items cut, `use` trees expanded) rather than `syn`,
//! whose `full` feature would rebuild every proc-macro crate of the tree for one test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of each top-level module; a module may import from its own layer and below.
/// `metrics`, `admin`, `shutdown`, `telemetry` and `report` (one-line error reports) are
/// the process's plumbing, usable by every layer; `reload` (the rotation sidecar's
/// decisions) sits beside the webhook and the probe, `renew` beside the operator; `config` is the operator's configuration, read by `operator` and `cli`.
const LAYERS: &[(&str, u8)] = &[
    ("api", 0),
    ("metrics", 0),
    ("admin", 0),
    ("shutdown", 0),
    ("telemetry", 0),
    ("report", 0),
    ("pki", 1),
    ("inject", 1),
    ("tls", 1),
    ("webhook", 2),
    ("probe", 2),
    ("reload", 2),
    ("controller", 3),
    ("config", 4),
    ("operator", 4),
    ("renew", 4),
    ("cli", 5),
    ("docs", 5),
];

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/probe/run/answer.rs` → `probe::run::answer`; `src/x/mod.rs` → `x`; `lib.rs` → root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn peek(b: &[char], i: usize) -> char {
    b.get(i).copied().unwrap_or(' ')
}

/// The source with comments, string and char literals blanked out (lengths kept), so
/// that only code is searched.
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == '/' && peek(&b, i + 1) == '/' {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if b[i] == '/' && peek(&b, i + 1) == '*' {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && peek(&b, i + 1) == '*' {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && peek(&b, i + 1) == '/' {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(if b[i] == '\n' { '\n' } else { ' ' });
                    i += 1;
                }
            }
        } else if b[i] == 'r'
            && (peek(&b, i + 1) == '"'
                || (peek(&b, i + 1) == '#' && !peek(&b, i + 2).is_alphanumeric()))
            && !b
                .get(i.wrapping_sub(1))
                .is_some_and(|c| c.is_alphanumeric() || *c == '_')
        {
            // A raw string: r"..." or r#"..."#.
            let mut hashes = 0;
            let mut j = i + 1;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            j += 1; // the opening quote
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for c in &b[i..j.min(b.len())] {
                out.push(if *c == '\n' { '\n' } else { ' ' });
            }
            i = j;
        } else if b[i] == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(if peek(&b, i) == '\n' { '\n' } else { ' ' });
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if b[i] == '\'' && (peek(&b, i + 2) == '\'' || peek(&b, i + 1) == '\\') {
            // A char literal ('x', '\n', '\u{..}'); a lifetime has no closing quote.
            let mut j = i + 1;
            if b[j] == '\\' {
                j += 2;
            } else {
                j += 1;
            }
            while j < b.len() && b[j] != '\'' {
                j += 1;
            }
            for _ in i..=j.min(b.len() - 1) {
                out.push(' ');
            }
            i = j + 1;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The code without the items marked `#[cfg(test)]`.
fn without_tests(code: &str) -> String {
    let mut out = code.to_owned();
    while let Some(at) = out.find("#[cfg(test)]") {
        let after = at + "#[cfg(test)]".len();
        let b = out.as_bytes();
        let mut end = out.len();
        let mut depth = 0usize;
        for (k, &c) in b.iter().enumerate().skip(after) {
            match c {
                b';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.replace_range(at..end, "");
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The tokens of a `use` tree: identifiers, `::`, `{`, `}`, `,`, `*`.
fn use_tokens(tree: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = tree.chars().peekable();
    while let Some(c) = chars.next() {
        if is_ident(c) {
            let mut word = c.to_string();
            while let Some(&n) = chars.peek().filter(|n| is_ident(**n)) {
                word.push(n);
                chars.next();
            }
            tokens.push(word);
        } else if c == ':' {
            chars.next();
            tokens.push("::".to_owned());
        } else if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    tokens
}

/// Expands a `use` tree into its paths (`a::{b, c::d}` → `a::b`, `a::c::d`); a rename
/// keeps the original path, a glob names its parent.
fn expand(tokens: &[String], pos: &mut usize, prefix: &mut Vec<String>, out: &mut Vec<Module>) {
    let depth = prefix.len();
    while *pos < tokens.len() {
        let t = tokens[*pos].as_str();
        *pos += 1;
        match t {
            "::" => {}
            "{" => {
                loop {
                    expand(tokens, pos, prefix, out);
                    match tokens.get(*pos).map(String::as_str) {
                        Some(",") => *pos += 1,
                        Some("}") => {
                            *pos += 1;
                            break;
                        }
                        _ => break,
                    }
                }
                prefix.truncate(depth);
                return;
            }
            "*" => {
                out.push(prefix.clone());
                prefix.truncate(depth);
                return;
            }
            "as" => {
                *pos += 1; // the new name
            }
            "," | "}" => {
                *pos -= 1;
                out.push(prefix.clone());
                prefix.truncate(depth);
                return;
            }
            word => prefix.push(word.to_owned()),
        }
    }
    out.push(prefix.clone());
    prefix.truncate(depth);
}

/// The `crate::`, `super::` and `self::` paths a file names, in `use` items and in code,
/// resolved to absolute module paths. Inline modules are not tracked (the two in `src/`
/// hold constants only).
fn named_paths(here: &Module, code: &str) -> Vec<Module> {
    let mut raw: Vec<Module> = Vec::new();
    // `use` items.
    let mut rest = code;
    let mut others = String::new();
    while let Some(at) = find_word(rest, "use") {
        others.push_str(&rest[..at]);
        let end = rest[at..].find(';').map_or(rest.len(), |e| at + e);
        let tokens = use_tokens(&rest[at + 3..end]);
        expand(&tokens, &mut 0, &mut Vec::new(), &mut raw);
        rest = &rest[end..];
    }
    others.push_str(rest);
    // Paths in code.
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = others[from..].find(start).map(|a| a + from) {
            from = at + start.len();
            if others[..at]
                .chars()
                .next_back()
                .is_some_and(|c| is_ident(c) || c == ':')
            {
                continue;
            }
            let len = others[at..]
                .find(|c: char| !(is_ident(c) || c == ':'))
                .unwrap_or(others.len() - at);
            raw.push(
                others[at..at + len]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    raw.into_iter()
        .filter_map(|segments| {
            let mut at: Module = match segments.first().map(String::as_str) {
                Some("crate") => Vec::new(),
                Some("super" | "self") => here.clone(),
                _ => return None,
            };
            for (i, s) in segments.iter().enumerate() {
                match s.as_str() {
                    "crate" if i == 0 => {}
                    "self" => {}
                    "super" => {
                        at.pop();
                    }
                    name => at.push(name.to_owned()),
                }
            }
            Some(at)
        })
        .collect()
}

/// The byte offset of `word` as a whole word in `s`.
fn find_word(s: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = s[from..].find(word).map(|a| a + from) {
        let before = s[..at].chars().next_back();
        let after = s[at + word.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// Edges between modules that share a parent: `a → b` when code in `a` (or below it) names
/// something in `b` (or below it).
fn sibling_edges() -> BTreeMap<(Module, Module), String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        if file.ends_with("main.rs") {
            continue; // the binary crate: it names the library as `mcptrust::`
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let here = module_of(&src, file);
        for path in named_paths(&here, &without_tests(&code_only(&text))) {
            // The deepest module file the path names.
            let Some(target) = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p))
            else {
                continue;
            };
            let common = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == here.len() || common == target.len() {
                continue; // a module and its own ancestor or descendant
            }
            let from = here[..=common].to_vec();
            let to = target[..=common].to_vec();
            edges
                .entry((from, to))
                .or_insert_with(|| file.strip_prefix(&src).expect("src").display().to_string());
        }
    }
    edges
}

fn show(m: &Module) -> String {
    m.join("::")
}

/// The edges between top-level modules that go from a lower layer to a higher one.
fn layer_problems(edges: &BTreeMap<(Module, Module), String>) -> Vec<String> {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut problems = Vec::new();
    for ((from, to), file) in edges {
        if from.len() != 1 {
            continue;
        }
        let (Some(a), Some(b)) = (layer.get(from[0].as_str()), layer.get(to[0].as_str())) else {
            problems.push(format!(
                "{} or {} has no layer in tests/layers.rs (seen in {file})",
                from[0], to[0]
            ));
            continue;
        };
        if a < b {
            problems.push(format!(
                "{} (layer {a}) imports {} (layer {b}) in {file}",
                from[0], to[0]
            ));
        }
    }
    problems
}

/// The import cycles among sibling modules, each as `a → b → a`.
fn cycles(edges: &BTreeMap<(Module, Module), String>) -> Vec<String> {
    // Depth-first search; a node met again while still on the stack closes a cycle.
    fn visit(
        node: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                0 => visit(next, graph, state, stack, cycles),
                1 => {
                    let start = stack.iter().position(|m| m == next).unwrap_or(0);
                    let mut ring: Vec<String> = stack[start..].iter().map(show).collect();
                    ring.push(show(next));
                    cycles.push(ring.join(" → "));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
    }
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from.clone()).or_default().insert(to.clone());
    }
    let mut state = BTreeMap::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            visit(node, &graph, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[test]
fn no_import_goes_back_up_a_layer() {
    let problems = layer_problems(&sibling_edges());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_import_cycle() {
    let found = cycles(&sibling_edges());
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// The check itself sees the imports it must see, so a scanner that found nothing would
/// fail here.
#[test]
fn the_check_sees_known_imports() {
    let edges = sibling_edges();
    let has = |a: &str, b: &str| edges.keys().any(|(f, t)| show(f) == a && show(t) == b);
    assert!(has("controller", "pki"), "controller → pki not seen");
    assert!(has("probe::run::answer", "probe::run::exchange"));
    assert!(has("probe::run::exchange", "probe::run::text"));
    assert!(!has("probe::run::exchange", "probe::run::answer"));
}

/// The scanner and both rules on made-up sources: a back-up import and a cycle are found,
/// test code, comments and strings are not read.
#[test]
fn the_rules_catch_what_they_are_for() {
    let here: Module = vec!["probe".into(), "run".into(), "answer".into()];
    let src = r#"
//! See crate::cli::Cli in a comment.
use super::{exchange::{Halt, Outcome}, text::*};
use crate::tls::{self as t, TlsError as E};
fn f() { let s = "crate::operator::x"; crate::pki::issue::issue(); let c = '{'; }
#[cfg(test)]
mod tests { use crate::cli::Cli; }
"#;
    let found: BTreeSet<String> = named_paths(&here, &without_tests(&code_only(src)))
        .iter()
        .map(show)
        .collect();
    let want: BTreeSet<String> = [
        "probe::run::exchange::Halt",
        "probe::run::exchange::Outcome",
        "probe::run::text",
        "tls",
        "tls::TlsError",
        "pki::issue::issue",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(found, want);

    let m = |s: &str| -> Module { s.split("::").map(str::to_owned).collect() };
    let mut edges = BTreeMap::new();
    edges.insert((m("pki"), m("controller")), "pki/x.rs".to_owned());
    edges.insert((m("controller"), m("pki")), "controller/y.rs".to_owned());
    assert_eq!(
        layer_problems(&edges),
        ["pki (layer 1) imports controller (layer 3) in pki/x.rs"]
    );
    assert_eq!(cycles(&edges), ["controller → pki → controller"]);
}
