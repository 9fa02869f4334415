//! The report for people.

use std::fmt::Write as _;

use super::{ProbeReport, Severity, Step};

const WIDTH: usize = 100;
const INDENT: &str = "       ";

/// Render a report as text: one block per step (`[ok]`, `[warn]`, `[FAIL]`, and `[skip]`
/// for the steps a failure prevented), each with its message and notes, then the TLS chain,
/// the MCP server, redirects, notes and the verdict with its exit code. Lines are wrapped
/// at 100 columns.
///
/// ```text
/// mcptrust probe https://127.0.0.1:8443/mcp (transport auto)
/// [ok]   DNS (0 ms)
///        127.0.0.1 is an IP address; nothing to resolve
/// [FAIL] TLS handshake: HostnameMismatch (2 ms)
///        the certificate is valid for DNS:localhost, but the probe dialled 127.0.0.1, ...
/// [skip] HTTP
/// verdict: HostnameMismatch (exit code 5)
/// ```
pub fn render_text(report: &ProbeReport) -> String {
    let mut out = String::new();
    let mut header = format!(
        "mcptrust probe {} (transport {}",
        report.url, report.transport
    );
    if let Some(p) = &report.proxy {
        header.push_str(&format!(", proxy {p}"));
    }
    header.push(')');
    out.push_str(&header);
    out.push('\n');

    for step in &report.steps {
        let tag = match step.reason.severity() {
            Severity::Ok => "[ok]  ",
            Severity::Warning => "[warn]",
            Severity::Failure => "[FAIL]",
        };
        let reason = if step.reason.severity() == Severity::Ok {
            String::new()
        } else {
            format!(": {}", step.reason)
        };
        let _ = writeln!(
            out,
            "{tag} {}{reason} ({} ms)",
            step.step.title(),
            step.duration_ms
        );
        wrap_into(&mut out, &step.message, INDENT, INDENT);
        for note in &step.notes {
            wrap_into(
                &mut out,
                note,
                &format!("{INDENT}- "),
                &format!("{INDENT}  "),
            );
        }
    }
    for step in skipped(report) {
        let _ = writeln!(out, "[skip] {}", step.title());
    }

    if let Some(tls) = &report.tls {
        let mut line = format!("TLS: server name {}", tls.server_name);
        if let Some(v) = &tls.version {
            line.push_str(&format!(", {v}"));
        }
        if let Some(c) = &tls.cipher {
            line.push_str(&format!(" {c}"));
        }
        if let Some(t) = &tls.trusted_by {
            line.push_str(&format!(", trusted via {t}"));
        }
        wrap_into(&mut out, &line, "", "  ");
        for (i, cert) in tls.chain.iter().enumerate() {
            let _ = writeln!(out, "  #{i} {}", cert.subject);
            let mut details = format!(
                "issuer {}; valid {} → {}",
                cert.issuer, cert.not_before, cert.not_after
            );
            if cert.self_signed {
                details.push_str("; self-signed");
            }
            if cert.is_ca {
                details.push_str("; CA");
            }
            wrap_into(&mut out, &details, "     ", "     ");
            if !cert.sans.is_empty() {
                wrap_into(
                    &mut out,
                    &format!("SAN {}", cert.sans.join(", ")),
                    "     ",
                    "     ",
                );
            }
            let _ = writeln!(out, "     sha256 {}", cert.sha256);
        }
        if tls.client_certificate_requested {
            let sent = tls
                .client_certificate_sent
                .as_deref()
                .map_or_else(|| "none sent".to_owned(), |s| format!("sent {s}"));
            wrap_into(
                &mut out,
                &format!("client certificate requested ({sent})"),
                "  ",
                "    ",
            );
        }
        if let Some(p) = &tls.proxy {
            let direct = match (&p.direct_issuer, &p.direct_error) {
                (Some(i), _) => format!("directly issued by {i}"),
                (None, Some(e)) => format!("no direct comparison: {e}"),
                (None, None) => "no direct comparison".to_owned(),
            };
            wrap_into(
                &mut out,
                &format!(
                    "through {}: issued by {}; {direct}",
                    p.proxy, p.proxy_issuer
                ),
                "  ",
                "    ",
            );
        }
    }
    if let Some(mcp) = &report.mcp {
        let mut line = format!("MCP: {} {}", mcp.transport, mcp.url);
        if let Some(n) = &mcp.server_name {
            line.push_str(&format!(", server \"{n}\""));
        }
        if let Some(v) = &mcp.server_version {
            line.push_str(&format!(" {v}"));
        }
        if let Some(p) = &mcp.protocol_version {
            line.push_str(&format!(", protocol {p}"));
        }
        if let Some(s) = &mcp.session_id {
            line.push_str(&format!(", session {s}"));
        }
        if let Some(e) = &mcp.endpoint {
            line.push_str(&format!(", endpoint {e}"));
        }
        wrap_into(&mut out, &line, "", "  ");
    }
    for r in &report.redirects {
        wrap_into(
            &mut out,
            &format!("redirect: {} → ({}) {}", r.from, r.status, r.to),
            "",
            "  ",
        );
    }
    for note in &report.notes {
        wrap_into(&mut out, &format!("note: {note}"), "", "  ");
    }
    let _ = writeln!(
        out,
        "verdict: {} (exit code {})",
        report.verdict, report.exit_code
    );
    out
}

/// The steps a failure prevented.
fn skipped(report: &ProbeReport) -> Vec<Step> {
    if report.ok {
        return Vec::new();
    }
    let https = report
        .url
        .trim()
        .to_ascii_lowercase()
        .starts_with("https://");
    let mut expected = vec![Step::Dns, Step::Tcp];
    if https && report.proxy.is_some() {
        expected.push(Step::ProxyConnect);
    }
    if https {
        expected.push(Step::TlsHandshake);
    }
    expected.push(Step::Http);
    let Some(last) = report.steps.last() else {
        return expected;
    };
    if last.step == Step::Options {
        return expected;
    }
    match expected.iter().position(|s| *s == last.step) {
        Some(i) => expected.split_off(i + 1),
        None => Vec::new(),
    }
}

/// Append `text` wrapped at [`WIDTH`], the first line after `first`, the others after
/// `rest`.
fn wrap_into(out: &mut String, text: &str, first: &str, rest: &str) {
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from(rest);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    if !empty {
        out.push_str(&line);
        out.push('\n');
    }
}
