//! What an McpServer's certificates are asked for: the endpoint's host, the server
//! certificate's subjectAltNames (the Service's cluster names, the endpoint's host) and the
//! server and client [`LeafRequest`]s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr as _;

use super::{IssueError, LeafRequest, MAX_COMMON_NAME_CHARS, Usage, dns_name_problem, durations};
use crate::api::{MtlsSpec, ServerCertSpec};

/// The host of an endpoint URL: an IP literal or a DNS name (lowercased, without a
/// trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointHost {
    /// An IPv4 literal, or a bracketed IPv6 literal (zone identifier dropped).
    Ip(IpAddr),
    /// A DNS name.
    Dns(String),
}

/// The host of `url` (`scheme://[userinfo@]host[:port][/path][?query][#fragment]`), or
/// `None` if `url` has no `scheme://`, an empty or malformed host, a non-numeric port,
/// or a host that is neither an IP literal (`[...]` for IPv6) nor a DNS name.
pub fn endpoint_host(url: &str) -> Option<EndpointHost> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hostport)| hostport);
    let port_ok = |port: &str| port.chars().all(|c| c.is_ascii_digit());
    if let Some(bracketed) = hostport.strip_prefix('[') {
        let (inner, after) = bracketed.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        // RFC 6874 zone identifier: `%25eth0` (or a bare `%eth0`).
        let address = inner.split_once('%').map_or(inner, |(address, _)| address);
        return Ipv6Addr::from_str(address)
            .ok()
            .map(|ip| EndpointHost::Ip(IpAddr::V6(ip)));
    }
    let host = match hostport.split_once(':') {
        Some((host, port)) if port_ok(port) => host,
        Some(_) => return None,
        None => hostport,
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if let Ok(ip) = Ipv4Addr::from_str(&host) {
        return Some(EndpointHost::Ip(IpAddr::V4(ip)));
    }
    if dns_name_problem(&host, false).is_some() {
        return None;
    }
    Some(EndpointHost::Dns(host))
}

/// The in-cluster Service a host names, as `(service, namespace)`: `svc` (in
/// `namespace`), `svc.<namespace>` (only the McpServer's own namespace: `a.b` is
/// otherwise an ordinary domain), or `svc.ns.svc[.<cluster domain>]`.
pub(super) fn cluster_service<'a>(host: &'a str, namespace: &'a str) -> Option<(&'a str, &'a str)> {
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        ["localhost"] => None,
        [svc] => Some((svc, namespace)),
        [svc, ns] if *ns == namespace => Some((svc, ns)),
        [svc, ns, "svc", ..] => Some((svc, ns)),
        _ => None,
    }
}

/// The SANs of an McpServer's serving certificate, as `(dns_names, ip_addresses)`,
/// deduplicated (case-insensitively) in a stable order:
///
/// 1. from `endpoint_url` (`spec.endpoint.url`), when given:
///    - a cluster Service host (`svc`, `svc.<namespace>`, `svc.ns.svc`,
///      `svc.ns.svc.<cluster domain>`) gives the four names Kubernetes DNS resolves:
///      `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local` (a bare `svc` uses
///      `namespace`; a custom cluster domain is kept verbatim as well);
///    - an IP literal (`127.0.0.1`, `[::1]`) becomes an IP SAN: a client dialling an IP
///      checks the IP SANs only, `CN=localhost` is not enough (seed 001);
///    - `localhost` gives the DNS name `localhost` and the IPs `127.0.0.1` and `::1`;
///    - any other DNS name (a remote server) is included verbatim;
/// 2. then `spec.mtls.server.dnsNames` and `ipAddresses` (`spec`), lowercased.
///
/// `mcpserver_name` is not itself a SAN; it only names the McpServer. An unparsable
/// URL adds nothing, and unparsable `ipAddresses` entries are skipped (the CRD's CEL
/// `isIP` rule rejects them; [`server_request`] reports them as errors).
pub fn server_sans(
    mcpserver_name: &str,
    namespace: &str,
    endpoint_url: Option<&str>,
    spec: Option<&ServerCertSpec>,
) -> (Vec<String>, Vec<IpAddr>) {
    let _ = mcpserver_name;
    let mut dns: Vec<String> = Vec::new();
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut push_dns = |name: String| {
        if !dns.iter().any(|d| d.eq_ignore_ascii_case(&name)) {
            dns.push(name);
        }
    };
    let mut push_ip = |ip: IpAddr| {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    };
    match endpoint_url.and_then(endpoint_host) {
        Some(EndpointHost::Ip(ip)) => push_ip(ip),
        Some(EndpointHost::Dns(host)) if host == "localhost" => {
            push_dns(host);
            push_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            push_ip(IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
        Some(EndpointHost::Dns(host)) => {
            if let Some((svc, ns)) = cluster_service(&host, namespace) {
                push_dns(svc.to_owned());
                push_dns(format!("{svc}.{ns}"));
                push_dns(format!("{svc}.{ns}.svc"));
                push_dns(format!("{svc}.{ns}.svc.cluster.local"));
            }
            push_dns(host);
        }
        None => {}
    }
    if let Some(spec) = spec {
        for name in &spec.dns_names {
            push_dns(name.trim().to_ascii_lowercase());
        }
        for ip in &spec.ip_addresses {
            if let Ok(ip) = IpAddr::from_str(ip.trim()) {
                push_ip(ip);
            }
        }
    }
    (dns, ips)
}

/// The [`LeafRequest`] for an McpServer's serving certificate: SANs from
/// [`server_sans`], lifetime from [`durations`], [`Usage::Server`], and as CN the
/// endpoint URL's host if it fits in 64 characters, else the first DNS SAN that does,
/// else the McpServer's name (cut to 64 characters).
///
/// # Errors
/// [`IssueError::InvalidIpAddress`] for an unparsable `spec.mtls.server.ipAddresses`
/// entry, [`IssueError::NoSubjectAltNames`] when there is neither an endpoint URL nor a
/// configured SAN, and the errors of [`durations`].
pub fn server_request(
    mcpserver_name: &str,
    namespace: &str,
    endpoint_url: Option<&str>,
    mtls: Option<&MtlsSpec>,
) -> Result<LeafRequest, IssueError> {
    let spec = mtls.and_then(|m| m.server.as_ref());
    if let Some(bad) = spec
        .into_iter()
        .flat_map(|s| &s.ip_addresses)
        .find(|ip| IpAddr::from_str(ip.trim()).is_err())
    {
        return Err(IssueError::InvalidIpAddress { value: bad.clone() });
    }
    let (duration_secs, _) = durations(mtls)?;
    let (dns_names, ip_addresses) = server_sans(mcpserver_name, namespace, endpoint_url, spec);
    if dns_names.is_empty() && ip_addresses.is_empty() {
        return Err(IssueError::NoSubjectAltNames);
    }
    let fits = |s: &str| s.chars().count() <= MAX_COMMON_NAME_CHARS;
    let common_name = endpoint_url
        .and_then(endpoint_host)
        .map(|host| match host {
            EndpointHost::Ip(ip) => ip.to_string(),
            EndpointHost::Dns(name) => name,
        })
        .filter(|h| fits(h))
        .or_else(|| dns_names.iter().find(|d| fits(d)).cloned())
        .unwrap_or_else(|| mcpserver_name.chars().take(MAX_COMMON_NAME_CHARS).collect());
    Ok(LeafRequest {
        common_name,
        dns_names,
        ip_addresses,
        usage: Usage::Server,
        duration_secs,
    })
}

/// The [`LeafRequest`] for a client identity (`spec.mtls.clients[].name`): `CN=<name>`,
/// no SANs, [`Usage::Client`], lifetime from [`durations`].
///
/// # Errors
/// The errors of [`durations`].
pub fn client_request(
    client_name: &str,
    mtls: Option<&MtlsSpec>,
) -> Result<LeafRequest, IssueError> {
    let (duration_secs, _) = durations(mtls)?;
    Ok(LeafRequest {
        common_name: client_name.to_owned(),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        usage: Usage::Client,
        duration_secs,
    })
}
