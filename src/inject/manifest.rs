//! Offline injection over multi-document YAML (`mcptrust inject -f FILE`), in the way
//! `istioctl kube-inject` works: documents the injector changes are re-serialised with the
//! patch applied; every other document (other kinds, opted-out pods, comments-only
//! documents) is copied through byte for byte.

use serde_json::Value;

use super::{InjectConfig, Injection, inject};
use crate::api::McpServer;

/// Errors of [`inject_manifests`].
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A document is not valid YAML (or not a mapping at its root).
    #[error("document {document} (line {line}): invalid YAML: {message}")]
    Yaml {
        /// 1-based document number in the stream.
        document: usize,
        /// 1-based line number in the whole input.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// The injector refused a document.
    #[error("document {document} (line {line}): {source}")]
    Inject {
        /// 1-based document number.
        document: usize,
        /// 1-based line where the document starts.
        line: usize,
        /// The injector's error.
        #[source]
        source: super::InjectError,
    },
    /// A patch did not apply (a bug: the patch is computed against the same document).
    #[error("document {document}: patch did not apply: {message}")]
    Patch {
        /// 1-based document number.
        document: usize,
        /// The error.
        message: String,
    },
    /// The mutated document could not be serialised.
    #[error("document {document}: {message}")]
    Serialize {
        /// 1-based document number.
        document: usize,
        /// The error.
        message: String,
    },
}

/// One document of a YAML stream: its text (without the `---` marker line) and the
/// 1-based line where that text starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document<'a> {
    /// The marker line (`---` plus anything after it), if the document had one.
    pub marker: Option<&'a str>,
    /// The document's text.
    pub text: &'a str,
    /// 1-based line number of the first line of `text`.
    pub first_line: usize,
}

fn is_marker(line: &str) -> bool {
    line == "---" || line.starts_with("--- ") || line.starts_with("---\t") || line == "---\r"
}

/// Splits a YAML stream at document-start markers (`---` at column 0). A `---` line inside
/// a top-level block scalar would be split too; Kubernetes manifests (mappings) never have
/// one at column 0.
pub fn split_documents(input: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut first_line = 1usize;
    let mut marker: Option<&str> = None;
    let mut offset = 0usize;
    for (n, line) in input.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches('\n');
        if is_marker(bare) {
            if offset > start || marker.is_some() {
                docs.push(Document {
                    marker,
                    text: &input[start..offset],
                    first_line,
                });
            }
            marker = Some(bare);
            start = offset + line.len();
            first_line = n + 2;
        }
        offset += line.len();
    }
    if offset > start || marker.is_some() {
        docs.push(Document {
            marker,
            text: &input[start..],
            first_line,
        });
    }
    docs
}

/// Picks the settings for one object: the McpServer's when its `podSelector` matches the
/// object's pod-template labels (or it has no selector), else the operator defaults.
fn injection_for(
    object: &Value,
    config: &InjectConfig,
    server: Option<&McpServer>,
    defaults: &Injection,
) -> Injection {
    let Some(server) = server else {
        return defaults.clone();
    };
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("Pod");
    let labels = super::pod_template_pointer(kind)
        .and_then(|base| {
            let mut v = object;
            for t in base {
                v = v.get(*t)?;
            }
            v.pointer("/metadata/labels")
        })
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    let selected = match &server.spec.pod_selector {
        None => true,
        Some(sel) => crate::api::selector_matches(sel, &labels),
    };
    if selected {
        Injection::resolve(config, Some(server))
    } else {
        defaults.clone()
    }
}

/// Injects every handled document of a multi-document YAML stream and returns the new
/// stream. Handled documents (Pods, workloads, and the items of a `kind: List`) are
/// re-serialised; others are copied through unchanged.
///
/// # Errors
/// [`ManifestError::Yaml`] with the document number and line for invalid YAML; the other
/// variants for objects the injector refuses.
pub fn inject_manifests(
    input: &str,
    config: &InjectConfig,
    server: Option<&McpServer>,
) -> Result<String, ManifestError> {
    let defaults = Injection::resolve(config, None);
    let mut out = String::with_capacity(input.len() + 4096);
    for (i, doc) in split_documents(input).into_iter().enumerate() {
        let number = i + 1;
        if let Some(m) = doc.marker {
            out.push_str(m);
            out.push('\n');
        }
        let parsed: Value = match serde_saphyr::from_str::<Option<Value>>(doc.text) {
            Ok(Some(v)) => v,
            Ok(None) => {
                out.push_str(doc.text);
                continue;
            }
            Err(e) => {
                let line = e
                    .location()
                    .map(|l| l.line() as usize)
                    .filter(|l| *l > 0)
                    .unwrap_or(1);
                let message = e.to_string();
                let first = message.lines().next().unwrap_or_default();
                // Without the parser's own `error: ` prefix: `main` already says `error:`.
                let message = first.strip_prefix("error: ").unwrap_or(first).to_owned();
                return Err(ManifestError::Yaml {
                    document: number,
                    line: doc.first_line + line - 1,
                    message,
                });
            }
        };
        if !parsed.is_object() {
            out.push_str(doc.text);
            continue;
        }
        let mut object = parsed;
        let mut changed = false;
        let is_list = object.get("kind").and_then(Value::as_str) == Some("List");
        if is_list {
            if let Some(Value::Array(items)) = object.get_mut("items") {
                for item in items.iter_mut() {
                    changed |= inject_one(item, config, server, &defaults, number, doc.first_line)?;
                }
            }
        } else {
            changed = inject_one(
                &mut object,
                config,
                server,
                &defaults,
                number,
                doc.first_line,
            )?;
        }
        if !changed {
            out.push_str(doc.text);
            continue;
        }
        let text = serde_saphyr::to_string(&object).map_err(|e| ManifestError::Serialize {
            document: number,
            message: e.to_string(),
        })?;
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

fn inject_one(
    object: &mut Value,
    config: &InjectConfig,
    server: Option<&McpServer>,
    defaults: &Injection,
    document: usize,
    line: usize,
) -> Result<bool, ManifestError> {
    let inj = injection_for(object, config, server, defaults);
    let outcome = inject(object, &inj).map_err(|source| ManifestError::Inject {
        document,
        line,
        source,
    })?;
    for s in &outcome.skipped {
        tracing::warn!(document, "{s}");
    }
    if outcome.is_noop() {
        return Ok(false);
    }
    json_patch::patch(object, &outcome.patch.to_json_patch()).map_err(|e| {
        ManifestError::Patch {
            document,
            message: e.to_string(),
        }
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_with_lines() {
        let input = "a: 1\n---\nb: 2\n--- # c\nc: 3\n";
        let docs = split_documents(input);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].text, "a: 1\n");
        assert_eq!(docs[1].first_line, 3);
        assert_eq!(docs[2].marker, Some("--- # c"));
        assert_eq!(docs[2].text, "c: 3\n");
        assert_eq!(docs[2].first_line, 5);
    }

    #[test]
    fn reports_document_and_line() {
        let input = "kind: ConfigMap\n---\nkind: Pod\nspec: [unclosed\n";
        let err = inject_manifests(input, &InjectConfig::embedded_default(), None)
            .expect_err("invalid yaml");
        match err {
            ManifestError::Yaml { document, line, .. } => {
                assert_eq!(document, 2);
                assert!((3..=5).contains(&line), "line {line}");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn passes_other_kinds_through() {
        let input = "# a comment\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: '1'}\n";
        let out = inject_manifests(input, &InjectConfig::embedded_default(), None).expect("ok");
        assert_eq!(out, input);
    }
}
