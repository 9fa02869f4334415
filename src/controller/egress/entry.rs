//! One `spec.egress.allow` entry, parsed and validated: a hostname (exact or wildcard)
//! with a port, or a CIDR with a port. As strict as the CRD's CEL rule
//! ([`crate::api::EGRESS_ENTRY_RULE`]) and a little stricter.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::MAX_ENTRY_LEN;

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
