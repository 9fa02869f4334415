//! NO_PROXY in the syntax every runtime understands (shared/RUNTIMES.md): exact names,
//! leading-dot suffixes and exact IPs, plus CIDRs for the runtimes that read them
//! (Go, requests, curl ≥ 7.86, Ruby, uv). Never `*.x` (httpx and Node do not match it)
//! and never `host:port`.

use std::net::IpAddr;

use ipnet::IpNet;

use super::ProxyConfig;

/// Normalises one user-supplied NO_PROXY entry, or returns `None` to drop it.
///
/// - surrounding whitespace is trimmed and names are lowercased;
/// - `*.example.com` becomes `.example.com`;
/// - `host:port` and `[v6]:port` lose the port (most runtimes compare hosts only);
/// - a CIDR that is a single host (`/32`, `/128`) becomes the exact IP;
/// - empty entries and entries with characters outside `[a-z0-9.:/_-]` (or a lone `*`,
///   which would turn the proxy off for everything) are dropped.
pub fn normalize_no_proxy_entry(raw: &str) -> Option<String> {
    let mut e = raw.trim().to_ascii_lowercase();
    if let Some(rest) = e.strip_prefix("*.") {
        e = format!(".{rest}");
    }
    if e.is_empty()
        || !e.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '/' | '_' | '-' | '[' | ']')
        })
    {
        return None;
    }
    // Bracketed IPv6, optionally with a port.
    if let Some(rest) = e.strip_prefix('[') {
        let inner = rest.split(']').next()?;
        return inner.parse::<IpAddr>().ok().map(|ip| ip.to_string());
    }
    if let Ok(net) = e.parse::<IpNet>() {
        return Some(if net.prefix_len() == net.max_prefix_len() {
            net.addr().to_string()
        } else {
            net.trunc().to_string()
        });
    }
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    // name:port → name (a bare IPv6 address was handled above).
    if let Some((host, port)) = e.rsplit_once(':')
        && port.chars().all(|c| c.is_ascii_digit())
        && !host.contains(':')
    {
        e = host.to_string();
    }
    if e.contains([':', '/', '[', ']']) || e == "." {
        return None;
    }
    Some(e)
}

/// Builds the NO_PROXY value (comma-separated, de-duplicated, stable order):
/// loopback (`localhost`, `127.0.0.1`, `::1`), the API server's IPs exactly,
/// `kubernetes`, `kubernetes.default`, `.svc`, `.svc.<domain>`, `.<domain>`, the Service
/// and Pod CIDRs, then the configured extra entries, normalised by
/// [`normalize_no_proxy_entry`].
pub fn build_no_proxy(proxy: &ProxyConfig) -> String {
    let domain = proxy
        .cluster_domain
        .as_deref()
        .map(|d| d.trim_matches('.'))
        .filter(|d| !d.is_empty())
        .unwrap_or("cluster.local");
    let mut entries: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    entries.extend(proxy.api_server_ips.iter().map(|ip| ip.to_string()));
    entries.extend([
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        ".svc".to_string(),
        format!(".svc.{domain}"),
        format!(".{domain}"),
    ]);
    entries.extend(
        proxy
            .service_cidrs
            .iter()
            .chain(&proxy.pod_cidrs)
            .map(|n| n.trunc().to_string()),
    );
    entries.extend(
        proxy
            .no_proxy
            .iter()
            .filter_map(|e| normalize_no_proxy_entry(e)),
    );
    let mut seen = std::collections::HashSet::new();
    entries.retain(|e| seen.insert(e.clone()));
    entries.join(",")
}

/// Java's `http.nonProxyHosts` for a NO_PROXY value built by [`build_no_proxy`]: entries
/// separated by `|`, where a pattern may start or end with `*` (JDK `sun.net.spi.
/// DefaultProxySelector`; the same property governs https requests).
///
/// - names are kept as they are; a leading-dot suffix `.svc` becomes `*.svc` (Java
///   compares whole strings, so `.svc` alone would match nothing);
/// - IPv4 and IPv6 literals are kept, IPv6 in brackets (`[::1]`), as Java compares them
///   with the URL's host;
/// - Java has no CIDRs: an IPv4 CIDR becomes prefix patterns of whole octets, `10.244.*`
///   for `/16`; a prefix that is not a multiple of 8 widens to the next octet boundary,
///   `10.96.0.0/12` giving the 16 patterns `10.96.*` to `10.111.*`, and a prefix longer
///   than 24 its addresses (at most 128 entries per CIDR); a prefix shorter than 8 is left
///   out. These only match URLs that use the IP literal
///   itself, as in every runtime; a name that resolves into the CIDR is proxied.
/// - IPv6 CIDRs cannot be expressed and are left out.
///
/// Returns the value and the NO_PROXY entries that were left out.
pub fn java_non_proxy_hosts(no_proxy: &str) -> (String, Vec<String>) {
    let mut out: Vec<String> = Vec::new();
    let mut dropped = Vec::new();
    for entry in no_proxy.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if let Ok(net) = entry.parse::<IpNet>() {
            match net {
                IpNet::V4(v4) if v4.prefix_len() >= 8 => {
                    let whole = usize::from(v4.prefix_len().div_ceil(8));
                    let widened = u8::try_from(whole * 8).unwrap_or(32);
                    for sub in v4.subnets(widened).into_iter().flatten() {
                        let octets = sub.network().octets();
                        if whole == 4 {
                            out.push(sub.network().to_string());
                        } else {
                            let head: Vec<String> =
                                octets[..whole].iter().map(u8::to_string).collect();
                            out.push(format!("{}.*", head.join(".")));
                        }
                    }
                }
                _ => dropped.push(entry.to_string()),
            }
        } else if let Ok(ip) = entry.parse::<IpAddr>() {
            out.push(match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            });
        } else if let Some(suffix) = entry.strip_prefix('.') {
            out.push(format!("*.{suffix}"));
        } else {
            out.push(entry.to_string());
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|e| seen.insert(e.clone()));
    (out.join("|"), dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_entries() {
        let cases = [
            ("*.example.com", Some(".example.com")),
            (" API.Example.com ", Some("api.example.com")),
            ("example.com:8443", Some("example.com")),
            ("10.0.0.0/8", Some("10.0.0.0/8")),
            ("10.1.2.3/8", Some("10.0.0.0/8")),
            ("10.1.2.3/32", Some("10.1.2.3")),
            ("[fd00::1]:443", Some("fd00::1")),
            ("fd00::/8", Some("fd00::/8")),
            ("*", None),
            ("", None),
            ("a b", None),
            ("evil\"", None),
            (".svc", Some(".svc")),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_no_proxy_entry(raw).as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn builds_cluster_list() {
        let p = ProxyConfig {
            https_proxy: Some("http://10.200.0.1:3128".into()),
            service_cidrs: vec!["10.96.0.0/12".parse().expect("cidr")],
            pod_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
            api_server_ips: vec!["10.96.0.1".parse().expect("ip")],
            no_proxy: vec!["*.corp.example".into(), "localhost".into()],
            ..Default::default()
        };
        assert_eq!(
            build_no_proxy(&p),
            "localhost,127.0.0.1,::1,10.96.0.1,kubernetes,kubernetes.default,.svc,.svc.cluster.local,.cluster.local,10.96.0.0/12,10.244.0.0/16,.corp.example"
        );
    }

    #[test]
    fn java_non_proxy_hosts_translates_suffixes_and_cidrs() {
        let (value, dropped) = java_non_proxy_hosts(
            "localhost,127.0.0.1,::1,10.96.0.1,kubernetes,.svc,.cluster.local,10.96.0.0/12,\
             10.244.0.0/16,192.168.1.0/24,10.0.0.0/8,fd00::/8,0.0.0.0/0,10.1.2.0/30",
        );
        let mut want = vec![
            "localhost".to_string(),
            "127.0.0.1".into(),
            "[::1]".into(),
            "10.96.0.1".into(),
            "kubernetes".into(),
            "*.svc".into(),
            "*.cluster.local".into(),
        ];
        want.extend((96..112).map(|b| format!("10.{b}.*")));
        want.extend(["10.244.*".into(), "192.168.1.*".into(), "10.*".into()]);
        want.extend((0..4).map(|h| format!("10.1.2.{h}")));
        assert_eq!(value, want.join("|"));
        assert_eq!(dropped, ["fd00::/8", "0.0.0.0/0"]);
    }
}
