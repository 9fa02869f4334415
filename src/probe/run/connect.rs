//! The connection stages before TLS, and the HTTP/1.1 handshake after it. Each takes the
//! [`Route`] (and what the stage before handed on) and returns one [`Stage`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{Failed, Passed, Stage};
use crate::probe::Reason;
use crate::probe::http::{ConnTls, HttpConn, Wire};
use crate::probe::net::{self, ProxyUrl};
use crate::probe::target::Target;

/// Where one connection goes: the URL's origin, through the proxy when one is used for it
/// (`https://` URLs only), with the per-step time limit.
pub(super) struct Route<'a> {
    /// The URL being reached.
    pub(super) target: &'a Target,
    /// The CONNECT proxy in between, if any.
    pub(super) proxy: Option<ProxyUrl>,
    /// The time limit of each stage.
    pub(super) timeout: Duration,
}

/// DNS: resolves the proxy's host when there is a proxy (it resolves the target itself),
/// else the URL's host.
pub(super) async fn dns(route: &Route<'_>) -> Stage<Vec<SocketAddr>> {
    let target = route.target;
    let (host, port, what) = match &route.proxy {
        Some(p) => (p.host.as_str(), p.port, "the proxy host"),
        None => (target.host.as_str(), target.port, "the host"),
    };
    let addrs = net::resolve(host, port, route.timeout, what).await?;
    let mut message = if host.parse::<std::net::IpAddr>().is_ok() {
        format!("{host} is an IP address; nothing to resolve")
    } else {
        format!(
            "{host} resolved to {}",
            addrs
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if route.proxy.is_some() {
        message.push_str(&format!(
            " (the proxy's host; the proxy resolves {} itself)",
            target.host
        ));
    }
    Ok(Passed::ok(addrs, message))
}

/// TCP: connects to `addrs` in turn (the proxy's or the server's).
pub(super) async fn tcp(route: &Route<'_>, addrs: &[SocketAddr]) -> Stage<TcpStream> {
    let what = match &route.proxy {
        Some(p) => format!("the proxy {}", p.display),
        None => route.target.authority(),
    };
    let (tcp, addr) = net::connect(addrs, route.timeout, &what).await?;
    let _ = tcp.set_nodelay(true);
    let message = if addr.to_string() == what {
        format!("connected to {addr}")
    } else {
        format!("connected to {addr} ({what})")
    };
    Ok(Passed::ok(tcp, message))
}

/// Proxy CONNECT: asks `proxy` over `tcp` for a tunnel to the route's origin (2xx).
pub(super) async fn proxy_connect(
    route: &Route<'_>,
    proxy: &ProxyUrl,
    tcp: &mut TcpStream,
) -> Stage<()> {
    let authority = route.target.authority();
    let status = net::proxy_connect(tcp, proxy, &authority, route.timeout).await?;
    Ok(Passed::ok(
        (),
        format!(
            "the proxy {} opened a tunnel to {authority} ({status})",
            proxy.display
        ),
    ))
}

/// The HTTP/1.1 handshake over `wire` (plain or TLS) to `target`.
pub(super) async fn http1(
    wire: Wire,
    target: &Target,
    conn_tls: Option<ConnTls>,
) -> Stage<HttpConn> {
    match HttpConn::new(wire, target.clone(), conn_tls).await {
        Ok(c) => Ok(Passed::ok(c, String::new())),
        Err(e) => Err(Failed {
            reason: Reason::HttpError,
            message: format!("the HTTP/1.1 connection to {} failed: {e}", target.url()),
            notes: Vec::new(),
        }),
    }
}
