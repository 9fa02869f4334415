//! Egress policy per McpServer (seed 004): a NetworkPolicy that lets the server's pods
//! reach nothing but the cluster DNS, the proxy and the CIDR entries, plus an allow-list
//! ConfigMap for the proxy, which alone can enforce hostname entries.
//!
//! Environment-based proxying is voluntary (aiohttp, Java and older Node go direct), so
//! only the NetworkPolicy makes the proxy binding. The condition `EgressPolicyReady` says
//! plainly what is enforced and what is not:
//!
//! | reason | status | when |
//! |---|---|---|
//! | `Enforced` | True | NetworkPolicy applied; hostname entries (if any) go through a proxy the policy can name |
//! | `HostnameRulesRequireProxy` | False | Enforce mode, hostname entries, but no proxy the policy can name: those hosts are unreachable (fail closed) |
//! | `AuditOnly` | False | Audit mode: allow-list and pod annotation only, nothing enforced (Ready stays True) |
//! | `PodSelectorRequired` | False | Enforce mode without `spec.podSelector`: the policy would select every pod of the namespace |
//! | `InvalidEgressEntry` | False | an entry the CRD should have rejected; the last applied objects stay as they are |
//! | `NotRequested` | True | no `spec.egress` |
//!
//! Validation ([`parse_entry`]) is deliberately as strict as the CRD's CEL rule
//! ([`crate::api::EGRESS_ENTRY_RULE`]) and a little stricter: a CIDR with bits set beyond
//! its prefix (`10.0.0.1/8`) is rejected instead of silently widened, and an IPv4 literal
//! host (`10.1.2.3:443`) becomes the CIDR `10.1.2.3/32`, enforced by the NetworkPolicy.
//!
//! The builders here are pure; [`reconcile`] is the thin apply layer called by
//! [`super::reconcile::reconcile`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

use super::error::Result;
use super::{Context, FIELD_MANAGER_EGRESS, build};
use crate::api::conditions::{DesiredCondition, types};
use crate::api::{EgressMode, McpServer, McpServerStatus};
use crate::inject::{ANNOTATION_EGRESS_MODE, EgressConfig, InjectConfig, ProxyConfig};

/// Condition reasons of `EgressPolicyReady`.
pub mod reasons {
    /// Every entry is enforced.
    pub const ENFORCED: &str = "Enforced";
    /// Hostname entries exist but no proxy the NetworkPolicy can name is configured.
    pub const HOSTNAME_RULES_REQUIRE_PROXY: &str = "HostnameRulesRequireProxy";
    /// Audit mode: nothing is enforced.
    pub const AUDIT_ONLY: &str = "AuditOnly";
    /// Enforce mode without a pod selector.
    pub const POD_SELECTOR_REQUIRED: &str = "PodSelectorRequired";
    /// An entry failed the controller's validation.
    pub const INVALID_EGRESS_ENTRY: &str = "InvalidEgressEntry";
    /// No `spec.egress`.
    pub const NOT_REQUESTED: &str = "NotRequested";
}

/// Longest entry accepted (the CRD's `maxLength`).
pub const MAX_ENTRY_LEN: usize = 260;
/// Key of the plain allow-list (one `host:port` per line) in the allow-list ConfigMap.
pub const ALLOWLIST_FILE: &str = "allowlist.txt";
/// Key of the Squid snippet in the allow-list ConfigMap.
pub const SQUID_FILE: &str = "squid.conf";
/// `mcptrust.io/component` label of the NetworkPolicy.
pub const COMPONENT_POLICY: &str = "egress";
/// `mcptrust.io/component` label of the allow-list ConfigMap.
pub const COMPONENT_ALLOWLIST: &str = "egress-allowlist";

/// Name of the NetworkPolicy of McpServer `name`.
pub fn network_policy_name(name: &str) -> String {
    format!("mcptrust-{name}-egress")
}

/// Name of the allow-list ConfigMap of McpServer `name`.
pub fn allowlist_config_map_name(name: &str) -> String {
    format!("mcptrust-{name}-egress-allowlist")
}

/// `Enforce` or `Audit`.
pub fn mode_str(mode: EgressMode) -> &'static str {
    match mode {
        EgressMode::Enforce => "Enforce",
        EgressMode::Audit => "Audit",
    }
}

// ---------------------------------------------------------------------------------------
// Entries.

/// One validated `spec.egress.allow` entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EgressEntry {
    /// `host:port` or `*.domain:port`: only a proxy can enforce it.
    Host {
        /// The DNS name (lowercase), without the `*.` of a wildcard.
        name: String,
        /// `*.name`: any subdomain of `name`.
        wildcard: bool,
        /// TCP port.
        port: u16,
    },
    /// `CIDR:port` (or an IPv4 literal, as a /32): enforced by the NetworkPolicy.
    Cidr {
        /// The network, with no bits set beyond its prefix.
        net: IpNet,
        /// TCP port.
        port: u16,
    },
}

impl EgressEntry {
    /// True for hostname entries (which need the proxy).
    pub fn is_host(&self) -> bool {
        matches!(self, EgressEntry::Host { .. })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            EgressEntry::Host { port, .. } | EgressEntry::Cidr { port, .. } => *port,
        }
    }
}

impl fmt::Display for EgressEntry {
    /// The canonical form: `name:port`, `*.name:port` or `net/prefix:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressEntry::Host {
                name,
                wildcard: true,
                port,
            } => write!(f, "*.{name}:{port}"),
            EgressEntry::Host { name, port, .. } => write!(f, "{name}:{port}"),
            EgressEntry::Cidr { net, port } => write!(f, "{net}:{port}"),
        }
    }
}

/// Why an entry is rejected; each message says what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Nothing at all.
    #[error(
        "the entry is empty: write host:port, *.domain:port or CIDR:port, e.g. api.github.com:443"
    )]
    Empty,
    /// Longer than [`MAX_ENTRY_LEN`].
    #[error("the entry is longer than {MAX_ENTRY_LEN} characters: write one host:port per entry")]
    TooLong,
    /// Whitespace, quotes, braces, control or punctuation characters.
    #[error(
        "it contains {what} at character {pos}: remove it; an entry is exactly one host:port, *.domain:port or CIDR:port, e.g. api.github.com:443{hint}"
    )]
    ForbiddenCharacter {
        /// The character, described (`a space`, `a double quote`, `';'`).
        what: String,
        /// 1-based character position.
        pos: usize,
        /// Extra advice for some characters.
        hint: String,
    },
    /// A non-ASCII character: a unicode look-alike such as Cyrillic `а` for `a`.
    #[error(
        "it contains the non-ASCII character {codepoint} at character {pos}, which can pass for an ASCII letter: type the name in ASCII (an internationalized name in its xn-- form)"
    )]
    NonAscii {
        /// `U+0430`.
        codepoint: String,
        /// 1-based character position.
        pos: usize,
    },
    /// Uppercase letters in a hostname.
    #[error("hostnames must be lowercase: write {suggestion}")]
    Uppercase {
        /// The entry in lowercase.
        suggestion: String,
    },
    /// No `:port`.
    #[error("it has no port: write {suggestion}")]
    MissingPort {
        /// The entry with `:443`.
        suggestion: String,
    },
    /// A port that is not 1 to 65535.
    #[error("port {port:?} is not a number from 1 to 65535: write e.g. {suggestion}")]
    BadPort {
        /// The text after the last `:`.
        port: String,
        /// The entry with port 443.
        suggestion: String,
    },
    /// `*` alone.
    #[error(
        "a bare * would allow every host: list the domains instead, e.g. *.example.com:443 (any subdomain of example.com)"
    )]
    BareWildcard,
    /// A wildcard anywhere but as the whole leftmost label.
    #[error(
        "a wildcard is only allowed once, as the whole leftmost label (*.): write {suggestion}, or list the names"
    )]
    BadWildcard {
        /// A valid wildcard entry close to the input.
        suggestion: String,
    },
    /// A malformed hostname.
    #[error("{0}")]
    InvalidHost(String),
    /// A CIDR that does not parse.
    #[error(
        "{given:?} is not a CIDR: write e.g. 10.20.0.0/16:5432 or fd00::/8:443 (IPv4 prefixes up to /32, IPv6 up to /128)"
    )]
    InvalidCidr {
        /// The part before the port.
        given: String,
    },
    /// A CIDR with bits set beyond its prefix (`10.0.0.1/8`): ambiguous, so rejected
    /// rather than widened.
    #[error(
        "{given} has address bits set beyond its /{prefix} prefix: write {network}:{port} for the whole network, or {address}:{port} for the one address"
    )]
    HostBitsSet {
        /// The CIDR as written.
        given: String,
        /// Its prefix length.
        prefix: u8,
        /// The network it would be truncated to.
        network: String,
        /// The single address as a /32 or /128.
        address: String,
        /// The port.
        port: u16,
    },
    /// An IPv6 address without a prefix (the last `:` would be ambiguous).
    #[error("IPv6 addresses need a prefix: write {suggestion}")]
    Ipv6WithoutPrefix {
        /// `addr/128:port`.
        suggestion: String,
    },
}

fn describe_char(c: char) -> (String, String) {
    let what = match c {
        ' ' => "a space".to_string(),
        '\t' => "a tab".to_string(),
        '\n' => "a newline".to_string(),
        '\r' => "a carriage return".to_string(),
        '"' => "a double quote".to_string(),
        '\'' => "a single quote".to_string(),
        '`' => "a backquote".to_string(),
        '{' | '}' => format!("a brace ({c})"),
        c if c.is_ascii_control() => format!("the control character U+{:04X}", c as u32),
        c => format!("{c:?}"),
    };
    let hint = match c {
        '[' | ']' => {
            " (IPv6 destinations are written as CIDR:port without brackets, e.g. fd00::1/128:443)"
        }
        '@' | '?' | '#' | '%' => " (a destination, not a URL)",
        _ => "",
    };
    (what, hint.to_string())
}

fn parse_port(port: &str, addr: &str) -> std::result::Result<u16, EntryError> {
    let bad = || EntryError::BadPort {
        port: port.to_string(),
        suggestion: format!("{addr}:443"),
    };
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match port.parse::<u32>() {
        Ok(p @ 1..=65535) => u16::try_from(p).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Parses and validates one `spec.egress.allow` entry: `host:port`, `*.domain:port` or
/// `CIDR:port`, the port split at the last `:` (so `fd00::/8:443` works).
///
/// Rejected: empty entries, anything but ASCII letters, digits, `.`, `-`, `*`, `:` and `/`
/// (whitespace, newlines, quotes, braces, semicolons...), non-ASCII characters (unicode
/// look-alikes), uppercase hostnames, a wildcard other than one leftmost `*.` label (a bare
/// `*`, `*.*.x`, `a.*.b`), ports outside 1 to 65535, CIDRs that do not parse or have bits
/// set beyond the prefix, IPv6 addresses without a prefix, DNS labels that are empty,
/// longer than 63 characters or start or end with `-`. An IPv4 literal host becomes a /32.
///
/// # Errors
/// An [`EntryError`] whose message says what to write instead.
pub fn parse_entry(entry: &str) -> std::result::Result<EgressEntry, EntryError> {
    if entry.is_empty() {
        return Err(EntryError::Empty);
    }
    if entry == "*" {
        return Err(EntryError::BareWildcard);
    }
    for (i, c) in entry.chars().enumerate() {
        if !c.is_ascii() {
            return Err(EntryError::NonAscii {
                codepoint: format!("U+{:04X}", c as u32),
                pos: i + 1,
            });
        }
        if !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | ':' | '/')) {
            let (what, hint) = describe_char(c);
            return Err(EntryError::ForbiddenCharacter {
                what,
                pos: i + 1,
                hint,
            });
        }
    }
    if entry.len() > MAX_ENTRY_LEN {
        return Err(EntryError::TooLong);
    }
    if let Some((_, rest)) = entry.split_once("://") {
        let hostport = rest.split('/').next().unwrap_or_default();
        return Err(EntryError::InvalidHost(format!(
            "an entry is a destination, not a URL: write {}",
            if hostport.contains(':') {
                hostport.to_string()
            } else {
                format!("{hostport}:443")
            }
        )));
    }
    let Some((addr, port)) = entry.rsplit_once(':') else {
        return Err(EntryError::MissingPort {
            suggestion: format!("{entry}:443"),
        });
    };
    if addr.is_empty() {
        return Err(EntryError::InvalidHost(
            "there is nothing before the port: write host:port, e.g. api.github.com:443".into(),
        ));
    }
    let port = parse_port(port, addr)?;
    if addr.contains('/') {
        return parse_cidr(addr, port);
    }
    if addr.contains(':') {
        return Err(match addr.parse::<Ipv6Addr>() {
            Ok(ip) => EntryError::Ipv6WithoutPrefix {
                suggestion: format!("{ip}/128:{port}"),
            },
            Err(_) => EntryError::InvalidHost(format!(
                "{addr:?} is neither a hostname nor a CIDR: write host:port, *.domain:port or CIDR:port, e.g. fd00::/8:{port}"
            )),
        });
    }
    parse_host(addr, port)
}

fn parse_cidr(addr: &str, port: u16) -> std::result::Result<EgressEntry, EntryError> {
    let invalid = || EntryError::InvalidCidr {
        given: addr.to_string(),
    };
    // The standard library's parser, which rejects IPv4 octets with leading zeros (octal
    // in some parsers, decimal in others); the prefix is plain decimal.
    let (ip, prefix) = addr.split_once('/').ok_or_else(invalid)?;
    let ip: IpAddr = ip.parse().map_err(|_| invalid())?;
    let canonical_prefix = !prefix.is_empty()
        && prefix.len() <= 3
        && prefix.bytes().all(|b| b.is_ascii_digit())
        && (prefix == "0" || !prefix.starts_with('0'));
    if !canonical_prefix {
        return Err(invalid());
    }
    let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
    let net = IpNet::new(ip, prefix).map_err(|_| invalid())?;
    if net.trunc() != net {
        let single = IpNet::from(net.addr());
        return Err(EntryError::HostBitsSet {
            given: addr.to_string(),
            prefix: net.prefix_len(),
            network: net.trunc().to_string(),
            address: single.to_string(),
            port,
        });
    }
    Ok(EgressEntry::Cidr { net, port })
}

fn parse_host(addr: &str, port: u16) -> std::result::Result<EgressEntry, EntryError> {
    if addr == "*" {
        return Err(EntryError::BareWildcard);
    }
    let (wildcard, name) = match addr.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, addr),
    };
    if name.contains('*') {
        let tail = addr
            .rsplit_once('*')
            .map(|(_, t)| t.trim_start_matches('.'))
            .unwrap_or_default();
        let suggestion = if tail.is_empty() || tail.contains('*') {
            format!("*.example.com:{port}")
        } else {
            format!("*.{tail}:{port}")
        };
        return Err(EntryError::BadWildcard { suggestion });
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(EntryError::Uppercase {
            suggestion: format!("{}:{port}", addr.to_ascii_lowercase()),
        });
    }
    if name.is_empty() {
        return Err(EntryError::InvalidHost(format!(
            "there is no domain after \"*.\": write e.g. *.example.com:{port}"
        )));
    }
    if name.len() > 253 {
        return Err(EntryError::InvalidHost(
            "the hostname is longer than 253 characters".into(),
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err(EntryError::InvalidHost(format!(
                "{name:?} has an empty label (a leading, trailing or doubled dot): write e.g. {}:{port}",
                labels
                    .iter()
                    .filter(|l| !l.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(".")
            )));
        }
        if label.len() > 63 {
            return Err(EntryError::InvalidHost(format!(
                "the label {label:?} is longer than 63 characters, which DNS does not allow"
            )));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(EntryError::InvalidHost(format!(
                "the label {label:?} starts or ends with '-', which DNS does not allow"
            )));
        }
    }
    let last_numeric = labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if last_numeric {
        return match name.parse::<Ipv4Addr>() {
            Ok(ip) if !wildcard => Ok(EgressEntry::Cidr {
                net: IpNet::from(IpAddr::V4(ip)),
                port,
            }),
            _ => Err(EntryError::InvalidHost(format!(
                "{addr:?} is neither a hostname (whose last label is never all digits) nor an IPv4 address: write e.g. api.github.com:{port} or 10.20.0.0/16:{port}"
            ))),
        };
    }
    Ok(EgressEntry::Host {
        name: name.to_string(),
        wildcard,
        port,
    })
}

/// Shows an untrusted entry in a message: quoted, escaped, at most 80 characters.
fn quote_entry(entry: &str) -> String {
    let short: String = entry.chars().take(80).collect();
    let more = if entry.chars().count() > 80 {
        "..."
    } else {
        ""
    };
    format!("{short:?}{more}")
}

/// Validates every entry of `spec.egress.allow`; duplicates are dropped.
///
/// # Errors
/// One message per bad entry, each naming its index and saying what to write instead,
/// e.g. `spec.egress.allow[1] "*:443": a bare * would allow every host: ...`.
pub fn validate_entries(allow: &[String]) -> std::result::Result<Vec<EgressEntry>, Vec<String>> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for (i, e) in allow.iter().enumerate() {
        match parse_entry(e) {
            Ok(entry) if ok.contains(&entry) => {}
            Ok(entry) => ok.push(entry),
            Err(err) => errors.push(format!("spec.egress.allow[{i}] {}: {err}", quote_entry(e))),
        }
    }
    if errors.is_empty() {
        Ok(ok)
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------------------
// The proxy and DNS, as the NetworkPolicy can name them.

/// What the controller knows about the proxy and DNS: the operator config's `egress`
/// section and its proxy defaults (which an McpServer's `spec.proxy` overrides).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressDefaults {
    /// The operator config's `egress` section.
    pub config: EgressConfig,
    /// The operator config's `proxy` section.
    pub proxy: ProxyConfig,
}

impl EgressDefaults {
    /// From the operator config.
    pub fn from_config(config: &InjectConfig) -> Self {
        Self {
            config: config.egress.clone(),
            proxy: config.proxy.clone(),
        }
    }
}

/// How the NetworkPolicy reaches the proxy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyPlan {
    /// Egress rules to the proxy (empty when it cannot be named).
    pub rules: Vec<NetworkPolicyEgressRule>,
    /// What the rules allow, for messages (`the proxy 10.200.0.1:3128`).
    pub reachable: Vec<String>,
    /// Why the proxy (or one of its URLs) cannot be named; empty when all is well.
    pub problems: Vec<String>,
    /// A proxy URL is configured at all.
    pub configured: bool,
}

impl ProxyPlan {
    /// True when a proxy is configured and the NetworkPolicy allows every proxy URL.
    pub fn usable(&self) -> bool {
        !self.rules.is_empty() && self.problems.is_empty()
    }
}

/// Splits a proxy URL (`http://[user@]host[:port][/]`) into host and port; the port
/// defaults to 80 (http, or no scheme) or 443 (https).
fn proxy_host_port(url: &str) -> Option<(String, u16)> {
    let lower = url.to_ascii_lowercase();
    let (rest, default_port) = if lower.starts_with("https://") {
        (&url[8..], 443)
    } else if lower.starts_with("http://") {
        (&url[7..], 80)
    } else if url.contains("://") {
        return None;
    } else {
        (url, 80)
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || (host.contains(':') && host.parse::<Ipv6Addr>().is_err()) {
        return None;
    }
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
    };
    Some((host.to_string(), port))
}

fn port_rule(peers: Vec<NetworkPolicyPeer>, ports: &[(&str, u16)]) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(peers),
        ports: Some(
            ports
                .iter()
                .map(|(proto, port)| NetworkPolicyPort {
                    protocol: Some((*proto).to_string()),
                    port: Some(IntOrString::Int(i32::from(*port))),
                    end_port: None,
                })
                .collect(),
        ),
    }
}

fn ip_block(net: &IpNet) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: net.to_string(),
            except: None,
        }),
        ..Default::default()
    }
}

fn labels_selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: (!labels.is_empty()).then(|| labels.clone()),
        match_expressions: None,
    }
}

fn show_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "any".to_string();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Works out how the NetworkPolicy reaches the McpServer's proxy: the effective
/// `httpsProxy` and `httpProxy` (the McpServer's `spec.proxy` over the operator's), each
/// named by
///
/// 1. the operator config's `egress.proxyCidrs` or `proxyNamespaceSelector`/
///    `proxyPodSelector` (port `proxyPort`, else the URL's), when the URL is the operator's
///    own proxy;
/// 2. else its host as a /32 (or /128) ipBlock with the URL's port, when the host is an IP
///    literal outside the Service CIDRs (a ClusterIP is translated to the proxy pods' IPs
///    before NetworkPolicies see it, so an ipBlock for it would match nothing);
/// 3. else nothing: a hostname cannot go into a NetworkPolicy, which is a problem.
pub fn proxy_plan(server: &McpServer, defaults: &EgressDefaults) -> ProxyPlan {
    let own = server.spec.proxy.as_ref();
    let mut urls: Vec<(String, &'static str)> = Vec::new();
    let https = own
        .and_then(|p| p.https_proxy.clone())
        .map(|u| (u, "spec.proxy.httpsProxy"));
    let https = https.or_else(|| {
        defaults
            .proxy
            .https_proxy
            .clone()
            .map(|u| (u, "the operator's proxy.httpsProxy"))
    });
    let http = own
        .and_then(|p| p.http_proxy.clone())
        .map(|u| (u, "spec.proxy.httpProxy"));
    let http = http.or_else(|| {
        defaults
            .proxy
            .http_proxy
            .clone()
            .map(|u| (u, "the operator's proxy.httpProxy"))
    });
    for (url, source) in [https, http].into_iter().flatten() {
        if !urls.iter().any(|(u, _)| *u == url) {
            urls.push((url, source));
        }
    }
    let mut plan = ProxyPlan {
        configured: !urls.is_empty(),
        ..Default::default()
    };
    if urls.is_empty() {
        plan.problems.push(
            "no proxy is configured (spec.proxy.httpsProxy, or proxy.httpsProxy in the operator config)"
                .into(),
        );
        return plan;
    }
    let cfg = &defaults.config;
    let described_by_config = !cfg.proxy_cidrs.is_empty()
        || cfg.proxy_namespace_selector.is_some()
        || cfg.proxy_pod_selector.is_some();
    for (url, source) in urls {
        let Some((host, url_port)) = proxy_host_port(&url) else {
            plan.problems.push(format!(
                "{source} {url:?} is not a proxy URL such as http://10.200.0.1:3128"
            ));
            continue;
        };
        let operators = defaults.proxy.https_proxy.as_deref() == Some(url.as_str())
            || defaults.proxy.http_proxy.as_deref() == Some(url.as_str());
        let (rule, what) = if operators && described_by_config {
            let port = match cfg.proxy_port {
                Some(0) => {
                    plan.problems
                        .push("egress.proxyPort 0 in the operator config is not a port".into());
                    continue;
                }
                Some(p) => p,
                None => url_port,
            };
            let mut peers: Vec<NetworkPolicyPeer> = cfg.proxy_cidrs.iter().map(ip_block).collect();
            let mut parts: Vec<String> = cfg.proxy_cidrs.iter().map(|c| c.to_string()).collect();
            if cfg.proxy_namespace_selector.is_some() || cfg.proxy_pod_selector.is_some() {
                let ns = cfg.proxy_namespace_selector.clone().unwrap_or_default();
                peers.push(NetworkPolicyPeer {
                    ip_block: None,
                    namespace_selector: Some(labels_selector(&ns)),
                    pod_selector: cfg.proxy_pod_selector.as_ref().map(labels_selector),
                });
                parts.push(format!(
                    "pods {} in namespaces {}",
                    cfg.proxy_pod_selector
                        .as_ref()
                        .map_or_else(|| "any".to_string(), show_labels),
                    show_labels(&ns)
                ));
            }
            (
                port_rule(peers, &[("TCP", port)]),
                format!("the proxy ({}) on port {port}", parts.join("; ")),
            )
        } else {
            match host.parse::<IpAddr>() {
                Ok(ip) => {
                    if let Some(cidr) = defaults
                        .proxy
                        .service_cidrs
                        .iter()
                        .find(|c| c.contains(&ip))
                    {
                        plan.problems.push(format!(
                            "{source} {url} is a Service ClusterIP (inside the Service CIDR {cidr}), which NetworkPolicies never see (they match the proxy pods behind it): describe the proxy pods with egress.proxyNamespaceSelector and egress.proxyPodSelector in the operator config"
                        ));
                        continue;
                    }
                    let net = IpNet::from(ip);
                    (
                        port_rule(vec![ip_block(&net)], &[("TCP", url_port)]),
                        format!("the proxy {net} on port {url_port}"),
                    )
                }
                Err(_) => {
                    plan.problems.push(format!(
                        "{source} {url} names the host {host:?}, which a NetworkPolicy cannot allow (it takes IPs and label selectors only): {}",
                        if operators {
                            "describe the proxy with egress.proxyCidrs, or egress.proxyNamespaceSelector and egress.proxyPodSelector, in the operator config"
                        } else {
                            "use the proxy's IP address in the URL, or the operator's proxy (described in its config)"
                        }
                    ));
                    continue;
                }
            }
        };
        if !plan.rules.contains(&rule) {
            plan.rules.push(rule);
            plan.reachable.push(what);
        }
    }
    plan
}

/// The DNS rule: UDP and TCP 53 to the cluster DNS pods (namespace and pod labels from the
/// config) and the config's `dnsCidrs`.
pub fn dns_rule(cfg: &EgressConfig) -> NetworkPolicyEgressRule {
    let mut peers = vec![NetworkPolicyPeer {
        ip_block: None,
        namespace_selector: Some(labels_selector(&cfg.dns_namespace_labels)),
        pod_selector: Some(labels_selector(&cfg.dns_pod_labels)),
    }];
    peers.extend(cfg.dns_cidrs.iter().map(ip_block));
    port_rule(peers, &[("UDP", 53), ("TCP", 53)])
}

/// The McpServer's pod selector, unless it is missing or empty (an empty selector selects
/// every pod of the namespace).
pub fn effective_pod_selector(server: &McpServer) -> Option<&LabelSelector> {
    server.spec.pod_selector.as_ref().filter(|s| {
        s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
            || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
    })
}

/// The NetworkPolicy `mcptrust-<name>-egress`: it selects the McpServer's `podSelector`,
/// has policyType Egress, and allows only DNS ([`dns_rule`]), the proxy ([`proxy_plan`])
/// and each CIDR entry on its TCP port; everything else is denied. Labels and an owner
/// reference as every object mcptrust writes.
///
/// `None` when the McpServer has no (non-empty) `podSelector`: the policy would then
/// select every pod of the namespace.
pub fn network_policy(
    server: &McpServer,
    entries: &[EgressEntry],
    defaults: &EgressDefaults,
) -> Option<NetworkPolicy> {
    let selector = effective_pod_selector(server)?;
    let name = server.metadata.name.clone().unwrap_or_default();
    let ns = server.metadata.namespace.clone().unwrap_or_default();
    let mut rules = vec![dns_rule(&defaults.config)];
    let mut push = |r: NetworkPolicyEgressRule| {
        if !rules.contains(&r) {
            rules.push(r);
        }
    };
    for r in proxy_plan(server, defaults).rules {
        push(r);
    }
    for e in entries {
        if let EgressEntry::Cidr { net, port } = e {
            push(port_rule(vec![ip_block(net)], &[("TCP", *port)]));
        }
    }
    Some(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(network_policy_name(&name)),
            namespace: Some(ns.clone()),
            labels: Some(build::labels(&name, &ns, COMPONENT_POLICY)),
            owner_references: build::owner(server).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector.clone()),
            policy_types: Some(vec!["Egress".to_string()]),
            egress: Some(rules),
            ingress: None,
        }),
    })
}

// ---------------------------------------------------------------------------------------
// The allow-list for the proxy.

/// `allowlist.txt`: the hostname entries, one `host:port` per line (a wildcard kept as
/// `*.domain:port`), sorted, deduplicated, newline-terminated; empty when there are none.
pub fn allowlist_text(entries: &[EgressEntry]) -> String {
    let hosts: BTreeSet<String> = entries
        .iter()
        .filter(|e| e.is_host())
        .map(ToString::to_string)
        .collect();
    hosts.into_iter().map(|h| h + "\n").collect()
}

/// The Squid ACL name prefix of an McpServer: `mcptrust_<namespace>_<name>` (the namespace
/// too, since Squid merges ACLs of the same name), or `mcptrust_<hash>` when that would
/// not leave room for the port suffixes within Squid's 63-character ACL names.
pub fn squid_acl_base(namespace: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let base = format!("mcptrust_{}_{}", clean(namespace), clean(name));
    if base.len() <= 48 {
        base
    } else {
        let hash = crate::pki::sha256_hex(format!("{namespace}/{name}").as_bytes());
        format!("mcptrust_{}", &hash[..16])
    }
}

/// `squid.conf`: a snippet to include before the proxy's final `http_access deny all`.
/// Per port: `acl <base>_<port> dstdomain` lines (a wildcard `*.x` as Squid's `.x`, which
/// also matches `x` itself and deeper subdomains; names a wildcard covers are left out, as
/// Squid warns about them), `acl <base>_<port>_net dst` lines for the CIDR entries, a
/// `port` ACL, and the `http_access allow` lines.
pub fn squid_conf(
    namespace: &str,
    name: &str,
    mode: EgressMode,
    entries: &[EgressEntry],
) -> String {
    let base = squid_acl_base(namespace, name);
    let mut by_port: BTreeMap<u16, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for e in entries {
        let slot = by_port.entry(e.port()).or_default();
        match e {
            EgressEntry::Host {
                name,
                wildcard: true,
                ..
            } => {
                slot.0.insert(format!(".{name}"));
            }
            EgressEntry::Host { name, .. } => {
                slot.0.insert(name.clone());
            }
            EgressEntry::Cidr { net, .. } => {
                slot.1.insert(net.to_string());
            }
        }
    }
    let mut out = format!(
        "# mcptrust egress allow-list of McpServer {namespace}/{name} (spec.egress.mode: {}).\n\
         # Generated from spec.egress.allow; do not edit. Include it before the final\n\
         # \"http_access deny all\". A proxy shared by several McpServers allows the union of\n\
         # their lists: add a src ACL for these pods' addresses, or run a proxy per sandbox.\n\
         # *.example.com is written .example.com, which Squid also matches for example.com.\n",
        mode_str(mode)
    );
    if by_port.is_empty() {
        out.push_str("# No entries: nothing is allowed through the proxy for this McpServer.\n");
    }
    for (port, (domains, nets)) in &by_port {
        let acl = format!("{base}_{port}");
        let covered = |d: &String| {
            domains
                .iter()
                .any(|w| w != d && w.starts_with('.') && (d.ends_with(w.as_str()) || **d == w[1..]))
        };
        let domains: Vec<&String> = domains.iter().filter(|d| !covered(d)).collect();
        for d in &domains {
            out.push_str(&format!("acl {acl} dstdomain {d}\n"));
        }
        for n in nets {
            out.push_str(&format!("acl {acl}_net dst {n}\n"));
        }
        out.push_str(&format!("acl {acl}_port port {port}\n"));
        if !domains.is_empty() {
            out.push_str(&format!("http_access allow {acl}_port {acl}\n"));
        }
        if !nets.is_empty() {
            out.push_str(&format!("http_access allow {acl}_port {acl}_net\n"));
        }
    }
    out
}

/// The allow-list ConfigMap `mcptrust-<name>-egress-allowlist`: [`ALLOWLIST_FILE`] and
/// [`SQUID_FILE`], the mode as the [`ANNOTATION_EGRESS_MODE`] annotation, labels and an
/// owner reference.
pub fn allowlist_config_map(
    server: &McpServer,
    entries: &[EgressEntry],
    mode: EgressMode,
) -> ConfigMap {
    let name = server.metadata.name.clone().unwrap_or_default();
    let ns = server.metadata.namespace.clone().unwrap_or_default();
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(allowlist_config_map_name(&name)),
            namespace: Some(ns.clone()),
            labels: Some(build::labels(&name, &ns, COMPONENT_ALLOWLIST)),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_EGRESS_MODE.to_string(),
                mode_str(mode).to_string(),
            )])),
            owner_references: build::owner(server).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (ALLOWLIST_FILE.to_string(), allowlist_text(entries)),
            (
                SQUID_FILE.to_string(),
                squid_conf(&ns, &name, mode, entries),
            ),
        ])),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// Ready.

/// True for an `EgressPolicyReady` condition that must not make `Ready` False: Audit mode
/// is a choice, reported in `Ready`'s message ([`ready_note`]) instead.
pub fn is_advisory(c: &DesiredCondition) -> bool {
    c.type_ == types::EGRESS_POLICY_READY && c.reason == reasons::AUDIT_ONLY
}

/// What `Ready`'s message says about egress, when there is a policy.
pub fn ready_note(desired: &[DesiredCondition]) -> Option<&'static str> {
    let c = desired
        .iter()
        .find(|c| c.type_ == types::EGRESS_POLICY_READY)?;
    match c.reason.as_str() {
        reasons::ENFORCED => Some("egress policy enforced"),
        reasons::AUDIT_ONLY => {
            Some("egress policy in Audit mode: nothing is enforced (EgressPolicyReady=False)")
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// The apply layer.

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn list_some(entries: &[&EgressEntry]) -> String {
    let mut shown: Vec<String> = entries.iter().take(5).map(|e| e.to_string()).collect();
    if entries.len() > 5 {
        shown.push(format!("and {} more", entries.len() - 5));
    }
    shown.join(", ")
}

/// The NetworkPolicy may exist after a reconcile that ended with this reason.
fn policy_may_exist(old_reason: &str) -> bool {
    old_reason != reasons::AUDIT_ONLY && old_reason != reasons::NOT_REQUESTED
}

async fn delete_network_policy(ctx: &Context, ns: &str, name: &str) -> Result<bool> {
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .delete(&network_policy_name(name), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Empties the allow-list ConfigMap when `spec.egress` is removed, so that no proxy keeps
/// allowing stale entries (a merge patch: it does not create a missing ConfigMap). The
/// ConfigMap itself goes with the McpServer (owner reference).
async fn retire_allowlist(ctx: &Context, ns: &str, name: &str) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let body = json!({
        "metadata": {"annotations": {ANNOTATION_EGRESS_MODE: null}},
        "data": {
            ALLOWLIST_FILE: "",
            SQUID_FILE: format!(
                "# McpServer {ns}/{name} has no spec.egress any more: nothing is allowed through the proxy for it.\n"
            ),
        }
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER_EGRESS.to_string()),
        ..Default::default()
    };
    match api
        .patch(
            &allowlist_config_map_name(name),
            &params,
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Emits an event when the condition differs from the last one (type, reason, message):
/// Warning for every degradation, Normal when enforcement starts or changes.
async fn announce(
    ctx: &Context,
    server: &McpServer,
    old: &McpServerStatus,
    c: DesiredCondition,
) -> DesiredCondition {
    let same = old
        .conditions
        .iter()
        .any(|o| o.type_ == c.type_ && o.reason == c.reason && o.message == c.message);
    if !same {
        if c.status != "True" {
            ctx.event(server, EventType::Warning, &c.reason, &c.message)
                .await;
        } else if c.reason == reasons::ENFORCED {
            ctx.event(server, EventType::Normal, "EgressEnforced", &c.message)
                .await;
        }
    }
    c
}

/// The egress step of the reconcile pipeline: validates `spec.egress`, applies the
/// allow-list ConfigMap (both modes) and, in Enforce mode, the NetworkPolicy, deletes the
/// NetworkPolicy when switching to Audit (or removing `spec.egress`), emits events on
/// degradations, and returns the `EgressPolicyReady` condition.
///
/// Without `spec.egress` and without a previous `EgressPolicyReady` condition it makes no
/// API call. On an invalid entry or a missing pod selector, objects applied earlier stay
/// as they are (fail closed).
///
/// # Errors
/// API failures only.
pub async fn reconcile(
    ctx: &Context,
    server: &McpServer,
    ns: &str,
    name: &str,
    old: &McpServerStatus,
) -> Result<DesiredCondition> {
    let old_reason = old
        .conditions
        .iter()
        .find(|c| c.type_ == types::EGRESS_POLICY_READY)
        .map(|c| c.reason.clone());
    let np_name = network_policy_name(name);
    let cm_name = allowlist_config_map_name(name);

    let Some(spec) = server.spec.egress.as_ref() else {
        if let Some(r) = old_reason
            .as_deref()
            .filter(|r| *r != reasons::NOT_REQUESTED)
        {
            let deleted = policy_may_exist(r) && delete_network_policy(ctx, ns, name).await?;
            retire_allowlist(ctx, ns, name).await?;
            let note = if deleted {
                format!(
                    "spec.egress was removed: deleted NetworkPolicy {np_name} and emptied ConfigMap {cm_name}"
                )
            } else {
                format!("spec.egress was removed: emptied ConfigMap {cm_name}")
            };
            ctx.event(server, EventType::Normal, "EgressPolicyRemoved", &note)
                .await;
        }
        return Ok(DesiredCondition::new(
            types::EGRESS_POLICY_READY,
            true,
            reasons::NOT_REQUESTED,
            "spec.egress is not set: mcptrust does not restrict this server's egress",
        ));
    };

    let entries = match validate_entries(&spec.allow) {
        Ok(e) => e,
        Err(errors) => {
            let c = DesiredCondition::new(
                types::EGRESS_POLICY_READY,
                false,
                reasons::INVALID_EGRESS_ENTRY,
                format!(
                    "{} (the CRD should have rejected them; nothing was changed): {}",
                    plural(
                        errors.len(),
                        "invalid spec.egress.allow entry",
                        "invalid spec.egress.allow entries"
                    ),
                    errors.join("; ")
                ),
            );
            return Ok(announce(ctx, server, old, c).await);
        }
    };
    let hosts: Vec<&EgressEntry> = entries.iter().filter(|e| e.is_host()).collect();
    let cidrs: Vec<&EgressEntry> = entries.iter().filter(|e| !e.is_host()).collect();

    // The allow-list first, so that the proxy knows it before the policy forces traffic
    // through the proxy.
    let cm = allowlist_config_map(server, &entries, spec.mode);
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    cm_api
        .patch(
            &cm_name,
            &PatchParams::apply(FIELD_MANAGER_EGRESS).force(),
            &Patch::Apply(&cm),
        )
        .await?;

    let c = match spec.mode {
        EgressMode::Audit => {
            let deleted = match old_reason.as_deref() {
                Some(r) if policy_may_exist(r) => delete_network_policy(ctx, ns, name).await?,
                _ => false,
            };
            DesiredCondition::new(
                types::EGRESS_POLICY_READY,
                false,
                reasons::AUDIT_ONLY,
                format!(
                    "spec.egress.mode is Audit: nothing is enforced{}; ConfigMap {cm_name} lists {} for the proxy, and injected pods are annotated {ANNOTATION_EGRESS_MODE}=Audit; set mode: Enforce to apply NetworkPolicy {np_name}",
                    if deleted {
                        format!(" (NetworkPolicy {np_name} was deleted)")
                    } else {
                        String::new()
                    },
                    plural(hosts.len(), "hostname entry", "hostname entries"),
                ),
            )
        }
        EgressMode::Enforce => match network_policy(server, &entries, &ctx.config.egress) {
            None => DesiredCondition::new(
                types::EGRESS_POLICY_READY,
                false,
                reasons::POD_SELECTOR_REQUIRED,
                format!(
                    "spec.egress.mode is Enforce but spec.podSelector is not set (or empty): NetworkPolicy {np_name} would select every pod in namespace {ns}; set spec.podSelector to the server's pod labels, or use mode: Audit"
                ),
            ),
            Some(np) => {
                let np_api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
                np_api
                    .patch(
                        &np_name,
                        &PatchParams::apply(FIELD_MANAGER_EGRESS).force(),
                        &Patch::Apply(&np),
                    )
                    .await?;
                let plan = proxy_plan(server, &ctx.config.egress);
                if !hosts.is_empty() && !plan.usable() {
                    DesiredCondition::new(
                        types::EGRESS_POLICY_READY,
                        false,
                        reasons::HOSTNAME_RULES_REQUIRE_PROXY,
                        format!(
                            "{} ({}) can only be enforced by a proxy, but {}; NetworkPolicy {np_name} is applied and blocks them (fail closed), so these hosts are unreachable: set spec.proxy.httpsProxy to the proxy's IP address, or describe the operator's proxy with egress.proxyCidrs or egress.proxyNamespaceSelector/proxyPodSelector in the operator config",
                            plural(hosts.len(), "hostname entry", "hostname entries"),
                            list_some(&hosts),
                            plan.problems.join("; and "),
                        ),
                    )
                } else {
                    let mut allowed = vec!["DNS".to_string()];
                    allowed.extend(plan.reachable.iter().cloned());
                    if !cidrs.is_empty() {
                        allowed.push(format!(
                            "{} ({})",
                            plural(cidrs.len(), "CIDR entry", "CIDR entries"),
                            list_some(&cidrs)
                        ));
                    }
                    let mut msg =
                        format!("NetworkPolicy {np_name} allows only {}", allowed.join(", "));
                    if hosts.is_empty() {
                        msg.push_str("; no hostname entries");
                    } else {
                        msg.push_str(&format!(
                            "; {} through the proxy, which enforces ConfigMap {cm_name}",
                            plural(hosts.len(), "hostname entry goes", "hostname entries go")
                        ));
                    }
                    if plan.configured && !plan.problems.is_empty() {
                        msg.push_str(&format!(
                            "; the proxy is not reachable: {}",
                            plan.problems.join("; and ")
                        ));
                    }
                    DesiredCondition::new(types::EGRESS_POLICY_READY, true, reasons::ENFORCED, msg)
                }
            }
        },
    };
    Ok(announce(ctx, server, old, c).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        assert_eq!(
            proxy_host_port("http://10.200.0.1:3128"),
            Some(("10.200.0.1".into(), 3128))
        );
        assert_eq!(
            proxy_host_port("https://user:pw@proxy.corp:8443/"),
            Some(("proxy.corp".into(), 8443))
        );
        assert_eq!(
            proxy_host_port("http://[fd00::1]:3128"),
            Some(("fd00::1".into(), 3128))
        );
        assert_eq!(proxy_host_port("http://proxy"), Some(("proxy".into(), 80)));
        assert_eq!(
            proxy_host_port("https://proxy"),
            Some(("proxy".into(), 443))
        );
        assert_eq!(proxy_host_port("socks5://proxy:1080"), None);
        assert_eq!(proxy_host_port("http://proxy:0"), None);
        assert_eq!(proxy_host_port("http://:3128"), None);
    }

    #[test]
    fn acl_base_names() {
        assert_eq!(
            squid_acl_base("agents", "sandbox-tools"),
            "mcptrust_agents_sandbox-tools"
        );
        assert_eq!(squid_acl_base("a", "b.c"), "mcptrust_a_b_c");
        let long = squid_acl_base(&"n".repeat(40), &"s".repeat(40));
        assert!(long.len() <= 48 && long.starts_with("mcptrust_"), "{long}");
    }
}
