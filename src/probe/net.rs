//! The DNS, TCP and proxy CONNECT steps.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::Reason;

/// A step's failure: the reason and the message.
pub(crate) type StepError = (Reason, String);

/// A parsed proxy URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyUrl {
    /// Host (IPv6 without brackets).
    pub(crate) host: String,
    /// Port (80 when absent).
    pub(crate) port: u16,
    /// `Proxy-Authorization` value (`Basic ...`) from `user:pass@`.
    pub(crate) authorization: Option<String>,
    /// The URL without credentials, for messages.
    pub(crate) display: String,
}

/// Parse `http://[user:pass@]host[:port][/]` or a bare `host:port`.
///
/// # Errors
/// A sentence when the URL is unusable (an `https://` proxy, no host, a bad port).
pub(crate) fn parse_proxy(raw: &str) -> Result<ProxyUrl, String> {
    let raw = raw.trim();
    let rest = if let Some((scheme, rest)) = raw.split_once("://") {
        match scheme.to_ascii_lowercase().as_str() {
            "http" => rest,
            other => {
                return Err(format!(
                    "the proxy URL {:?} uses {other}://; the probe supports plain http:// CONNECT proxies only",
                    redact(raw)
                ));
            }
        }
    } else {
        raw
    };
    let rest = rest.split('/').next().unwrap_or_default();
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("the proxy URL {:?} has an unclosed '['", redact(raw)))?;
        (h.to_owned(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("the proxy URL {:?} has no host", redact(raw)));
    }
    let port = match port {
        None | Some("") => 80,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("the proxy URL {:?} has an invalid port {p:?}", redact(raw)))?,
    };
    let authorization = userinfo.map(|u| {
        let decoded = percent_decode(u);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(decoded)
        )
    });
    let host_for_url = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    Ok(ProxyUrl {
        display: format!("http://{host_for_url}:{port}"),
        host,
        port,
        authorization,
    })
}

/// The proxy URL with any `user:pass@` removed.
pub(crate) fn redact(raw: &str) -> String {
    match (raw.find("://"), raw.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &raw[..s + 3], &raw[at + 1..]),
        (None, Some(at)) => raw[at + 1..].to_owned(),
        _ => raw.to_owned(),
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    fn hex_val(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2))
            && let (Some(h), Some(l)) = (hex_val(h), hex_val(l))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Resolve `host:port`. An IP literal resolves to itself.
pub(crate) async fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
    what: &str,
) -> Result<Vec<SocketAddr>, StepError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err((
            Reason::Timeout,
            format!(
                "resolving {what} {host:?} did not finish within {}; check the cluster DNS (kube-dns/CoreDNS) and that DNS egress (port 53) is allowed",
                secs(timeout)
            ),
        )),
        Ok(Err(e)) => Err((
            Reason::DnsFailure,
            format!(
                "{what} {host:?} does not resolve ({e}); check the spelling, and for a Service use <name>.<namespace>.svc (or the full .svc.cluster.local name)"
            ),
        )),
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err((
                    Reason::DnsFailure,
                    format!("{what} {host:?} resolved to no address"),
                ))
            } else {
                Ok(addrs)
            }
        }
    }
}

/// Connect to the first address that accepts, within `timeout` overall.
pub(crate) async fn connect(
    addrs: &[SocketAddr],
    timeout: Duration,
    what: &str,
) -> Result<(TcpStream, SocketAddr), StepError> {
    let attempt = async {
        let mut errors: Vec<(SocketAddr, io::Error)> = Vec::new();
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok((s, *addr)),
                Err(e) => errors.push((*addr, e)),
            }
        }
        Err(errors)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err((
            Reason::Timeout,
            format!(
                "connecting to {what} at {} did not finish within {}; a firewall or NetworkPolicy may drop the packets (allow egress to this address and port)",
                list(addrs),
                secs(timeout)
            ),
        )),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(errors)) => {
            let all_refused = errors
                .iter()
                .all(|(_, e)| e.kind() == io::ErrorKind::ConnectionRefused);
            let detail = errors
                .iter()
                .map(|(a, e)| format!("{a}: {e}"))
                .collect::<Vec<_>>()
                .join("; ");
            if all_refused {
                Err((
                    Reason::ConnectionRefused,
                    format!(
                        "{what} refused the connection ({detail}): nothing listens on that port; check the port in the URL, the Service's port/targetPort, and that the server is running"
                    ),
                ))
            } else {
                Err((
                    Reason::ConnectionFailed,
                    format!(
                        "could not connect to {what} ({detail}); check routing and NetworkPolicy egress"
                    ),
                ))
            }
        }
    }
}

/// Open a CONNECT tunnel to `authority` (`host:port`) through an established connection to
/// the proxy. Returns the proxy's status line.
pub(crate) async fn proxy_connect(
    stream: &mut TcpStream,
    proxy: &ProxyUrl,
    authority: &str,
    timeout: Duration,
) -> Result<String, StepError> {
    let mut request = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: mcptrust-probe/{}\r\n",
        crate::VERSION
    );
    if let Some(auth) = &proxy.authorization {
        request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        // Byte by byte, so nothing after the header (the TLS stream) is consumed.
        let mut head = Vec::with_capacity(256);
        loop {
            let b = match stream.read_u8().await {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            };
            head.push(b);
            if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") || head.len() > 16 * 1024 {
                break;
            }
        }
        Ok::<_, io::Error>(head)
    };
    let head = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            return Err((
                Reason::Timeout,
                format!(
                    "the proxy {} did not answer CONNECT {authority} within {}",
                    proxy.display,
                    secs(timeout)
                ),
            ));
        }
        Ok(Err(e)) => {
            return Err((
                Reason::ProxyConnectFailed,
                format!(
                    "the connection to the proxy {} failed during CONNECT {authority}: {e}",
                    proxy.display
                ),
            ));
        }
        Ok(Ok(head)) => head,
    };
    if head.is_empty() {
        return Err((
            Reason::ProxyConnectFailed,
            format!(
                "the proxy {} closed the connection without answering CONNECT {authority}; is it an HTTP proxy, and does it allow this destination?",
                proxy.display
            ),
        ));
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or_default().trim().to_owned();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    let code = match code {
        Some(c) if version.starts_with("HTTP/") => c,
        _ => {
            return Err((
                Reason::ProxyConnectFailed,
                format!(
                    "the proxy {} answered CONNECT {authority} with something that is not HTTP ({:?}); check that the proxy URL points at an HTTP CONNECT proxy",
                    proxy.display,
                    status_line.chars().take(80).collect::<String>()
                ),
            ));
        }
    };
    if (200..300).contains(&code) {
        return Ok(status_line);
    }
    let advice = match code {
        407 => {
            "the proxy requires authentication: put credentials in the proxy URL (http://user:password@host:port)".to_owned()
        }
        403 => format!(
            "the proxy does not allow this destination: add {} to its allow-list (the McpServer's egress hostname rules)",
            authority.rsplit_once(':').map_or(authority, |(h, _)| h)
        ),
        502..=504 => "the proxy could not reach the server itself: check the proxy's own DNS and egress".to_owned(),
        _ => "check the proxy's configuration and logs".to_owned(),
    };
    Err((
        Reason::ProxyConnectFailed,
        format!(
            "the proxy {} refused CONNECT {authority} with \"{status_line}\"; {advice}",
            proxy.display
        ),
    ))
}

/// `10s`, `1.5s`.
pub(crate) fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = parse_proxy("http://10.200.0.1:3128").expect("parse");
        assert_eq!((p.host.as_str(), p.port), ("10.200.0.1", 3128));
        assert_eq!(p.display, "http://10.200.0.1:3128");
        assert!(p.authorization.is_none());
        let p = parse_proxy("http://u%40x:p@proxy.local/").expect("parse");
        assert_eq!((p.host.as_str(), p.port), ("proxy.local", 80));
        assert_eq!(p.authorization.as_deref(), Some("Basic dUB4OnA="));
        assert_eq!(p.display, "http://proxy.local:80");
        let p = parse_proxy("[::1]:8080").expect("parse");
        assert_eq!((p.host.as_str(), p.port), ("::1", 8080));
        assert!(parse_proxy("https://proxy:3128").is_err());
        assert!(parse_proxy("http://:3128").is_err());
        assert_eq!(redact("http://u:p@h:1"), "http://h:1");
    }
}
