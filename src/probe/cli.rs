//! `mcptrust probe URL`: check an MCP endpoint the way a client would, and say what to fix.
//!
//! ```text
//! mcptrust probe https://mcp.internal:8443/mcp --ca-file corp-ca.pem
//! mcptrust probe https://localhost:9000/sse --cert client.crt --key client.key --output json
//! ```
//!
//! The exit status is the verdict's [`Reason::exit_code`](super::Reason::exit_code)
//! (0 ok, 2 reachability, 3 proxy, 4 trust, 5 host name, 6 validity, 7 client certificate,
//! 8 HTTP/MCP, 1 other).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use ipnet::IpNet;

use super::{ProbeOptions, Transport, probe, render_text};

/// Output format of `mcptrust probe`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// The steps, their advice and the verdict, for people ([`render_text`]).
    #[default]
    Text,
    /// The [`ProbeReport`](super::ProbeReport) as pretty-printed JSON (camelCase).
    Json,
}

/// Arguments of `mcptrust probe`. Every flag can also be set by an environment variable.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ProbeArgs {
    /// The MCP endpoint: `https://host[:port]/path` (or `http://`).
    #[arg(env = "MCPTRUST_PROBE_URL", value_name = "URL")]
    pub url: String,
    /// PEM files of the CA certificates to trust instead of the Mozilla roots; repeat the flag
    /// or separate paths with commas.
    #[arg(
        long = "ca-file",
        env = "MCPTRUST_PROBE_CA_FILE",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub ca_file: Vec<PathBuf>,
    /// PEM client certificate (chain, leaf first), sent when the server asks for one.
    #[arg(
        long,
        env = "MCPTRUST_PROBE_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(
        long,
        env = "MCPTRUST_PROBE_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,
    /// HTTP CONNECT proxy for https:// URLs, `http://[user:pass@]host:port`. Defaults to
    /// HTTPS_PROXY (or https_proxy). An empty value disables it.
    #[arg(long, env = "HTTPS_PROXY", value_name = "URL")]
    pub proxy: Option<String>,
    /// Hosts reached without the proxy: comma-separated names (a name also matches its
    /// subdomains; a leading `.` or `*.` is allowed), IP addresses, CIDRs, or `*`. Defaults
    /// to NO_PROXY (or no_proxy).
    #[arg(long = "no-proxy", env = "NO_PROXY", value_name = "LIST")]
    pub no_proxy: Option<String>,
    /// Name to send as SNI and verify against the certificate, instead of the URL's host.
    #[arg(
        long = "server-name",
        env = "MCPTRUST_PROBE_SERVER_NAME",
        value_name = "NAME"
    )]
    pub server_name: Option<String>,
    /// MCP transport: auto (streamable-http, or sse for paths ending in /sse, then the
    /// other), streamable-http or sse.
    #[arg(
        long,
        env = "MCPTRUST_PROBE_TRANSPORT",
        value_enum,
        default_value_t = Transport::Auto
    )]
    pub transport: Transport,
    /// Time limit of each step, seconds.
    #[arg(
        long,
        env = "MCPTRUST_PROBE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout: u64,
    /// Warn (exit code 0) when the server's certificate expires within this many days.
    #[arg(
        long = "expiring-soon-days",
        env = "MCPTRUST_PROBE_EXPIRING_SOON_DAYS",
        value_name = "DAYS",
        default_value_t = 14
    )]
    pub expiring_soon_days: u64,
    /// Expected SHA-256 fingerprint of the server's certificate (hex, `:` allowed): trusted
    /// whatever its issuer when it matches, PinnedCertificateChanged when it does not.
    #[arg(
        long = "pinned-sha256",
        env = "MCPTRUST_PROBE_PINNED_SHA256",
        value_name = "HEX"
    )]
    pub pinned_sha256: Option<String>,
    /// Output format.
    #[arg(
        long,
        env = "MCPTRUST_PROBE_OUTPUT",
        value_enum,
        default_value_t = OutputFormat::Text
    )]
    pub output: OutputFormat,
}

/// Run `mcptrust probe`: read the files, pick the proxy (`--proxy`/HTTPS_PROXY, else
/// `https_proxy`; none when the host matches `--no-proxy`/NO_PROXY/`no_proxy`), [`probe`],
/// and return the rendered report ([`render_text`] or JSON) with the exit code of its
/// verdict.
///
/// # Errors
/// A file that cannot be read (named), or JSON serialisation failing. Problems of the
/// endpoint and unusable options (a bad PEM, a bad URL) are in the report, not errors.
pub async fn run(args: &ProbeArgs) -> anyhow::Result<(String, u8)> {
    let opts = options(args)?;
    let report = probe(&opts).await;
    let output = match args.output {
        OutputFormat::Text => render_text(&report),
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&report).context("serialising the report")?;
            s.push('\n');
            s
        }
    };
    Ok((output, report.exit_code))
}

/// The [`ProbeOptions`] for `args` (files read, proxy environment applied).
///
/// # Errors
/// A file that cannot be read.
pub fn options(args: &ProbeArgs) -> anyhow::Result<ProbeOptions> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
    };
    let ca_bundle_pem = if args.ca_file.is_empty() {
        None
    } else {
        let mut pem = Vec::new();
        for path in &args.ca_file {
            pem.extend(read(path, "CA file")?);
            pem.push(b'\n');
        }
        Some(pem)
    };
    let client_cert_pem = args
        .cert
        .as_ref()
        .map(|p| read(p, "client certificate"))
        .transpose()?;
    let client_key_pem = args
        .key
        .as_ref()
        .map(|p| read(p, "client key"))
        .transpose()?;
    let proxy = args
        .proxy
        .clone()
        .or_else(|| std::env::var("https_proxy").ok())
        .filter(|p| !p.trim().is_empty());
    let no_proxy = args
        .no_proxy
        .clone()
        .or_else(|| std::env::var("no_proxy").ok())
        .unwrap_or_default();
    let host = super::target::Target::parse(&args.url)
        .map(|t| t.host)
        .unwrap_or_default();
    let proxy = proxy.filter(|_| !no_proxy_matches(&no_proxy, &host));
    Ok(ProbeOptions {
        ca_bundle_pem,
        client_cert_pem,
        client_key_pem,
        proxy,
        server_name: args.server_name.clone(),
        transport: args.transport,
        timeout: Duration::from_secs(args.timeout),
        expiring_soon: Duration::from_secs(args.expiring_soon_days.saturating_mul(86_400)),
        pinned_sha256: args.pinned_sha256.clone(),
        now: None,
        ..ProbeOptions::new(args.url.clone())
    })
}

/// Whether `host` (lowercase, IPv6 without brackets) is excluded from proxying by a
/// NO_PROXY list: `*`, exact names, domain suffixes (`example.com`, `.example.com` and
/// `*.example.com` all match `a.example.com`), IP addresses and CIDRs. Ports are ignored.
pub fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    list.split(',').map(str::trim).any(|entry| {
        if entry.is_empty() {
            return false;
        }
        if entry == "*" {
            return true;
        }
        let entry = entry.to_ascii_lowercase();
        if let Some(ip) = ip {
            if let Ok(net) = entry.parse::<IpNet>() {
                return net.contains(&ip);
            }
            let bare = entry.trim_start_matches('[');
            let bare = bare.split(']').next().unwrap_or(bare);
            return bare.parse::<IpAddr>().is_ok_and(|e| e == ip);
        }
        let name = entry
            .trim_start_matches("*.")
            .trim_start_matches('.')
            .trim_end_matches('.');
        // name:port
        let name = match name.rsplit_once(':') {
            Some((n, p)) if p.chars().all(|c| c.is_ascii_digit()) => n,
            _ => name,
        };
        !name.is_empty() && (host == name || host.ends_with(&format!(".{name}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_lists() {
        let list = "localhost, .svc,*.corp.example ,10.0.0.0/8,::1,api.example.com:443";
        assert!(no_proxy_matches(list, "localhost"));
        assert!(no_proxy_matches(list, "mcp.default.svc"));
        assert!(no_proxy_matches(list, "a.corp.example"));
        assert!(no_proxy_matches(list, "corp.example"));
        assert!(no_proxy_matches(list, "10.2.3.4"));
        assert!(no_proxy_matches(list, "::1"));
        assert!(no_proxy_matches(list, "api.example.com"));
        assert!(!no_proxy_matches(list, "example.com"));
        assert!(!no_proxy_matches(list, "11.0.0.1"));
        assert!(!no_proxy_matches(list, "notlocalhost"));
        assert!(no_proxy_matches("*", "anything"));
        assert!(!no_proxy_matches("", "anything"));
    }

    #[test]
    fn parses_args() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ProbeArgs,
        }
        let cli = Cli::try_parse_from([
            "probe",
            "https://x/mcp",
            "--transport",
            "sse",
            "--timeout",
            "3",
            "--output",
            "json",
            "--ca-file",
            "a.pem,b.pem",
        ])
        .expect("parse");
        assert_eq!(cli.args.transport, Transport::Sse);
        assert_eq!(cli.args.timeout, 3);
        assert_eq!(cli.args.output, OutputFormat::Json);
        assert_eq!(cli.args.ca_file.len(), 2);
        assert!(Cli::try_parse_from(["probe", "https://x", "--timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["probe", "https://x", "--cert", "c.pem"]).is_err());
    }
}
