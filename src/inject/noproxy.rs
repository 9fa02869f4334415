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
}
