//! One-line error reports: an error and its sources joined with `": "`, each cause once.
//!
//! Many errors (ours and the libraries') already put their source's text into their own
//! `Display` *and* return it from [`Error::source`]; printing the chain naively (anyhow's
//! `{:#}`) then names the cause twice. [`one_line`] skips a source whose text the line
//! already holds. [`ApiServer`] adds to a kube client error what the client does not say:
//! the server's URL for a transport error and the trusted CA for a TLS error.

use std::error::Error;
use std::fmt::Write as _;

/// `err` and its sources as one line, `"outer: inner: innermost"`, leaving out a source
/// whose `Display` text the line already contains (because an outer layer quoted it).
pub fn one_line(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut next = err.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !text.is_empty() && !line.contains(&text) {
            let _ = write!(line, ": {text}");
        }
        next = source.source();
    }
    line
}

/// [`one_line`] for an [`anyhow::Error`] (its context layers, then the error's sources).
pub fn one_line_anyhow(err: &anyhow::Error) -> String {
    one_line(err.as_ref())
}

/// The API server a client talks to, for error messages: its URL and where the CA that
/// the client trusts for it comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiServer {
    /// The server URL, e.g. `https://10.96.0.1:443`.
    pub url: String,
    /// Where the trusted CA comes from, e.g. `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`
    /// or `certificate-authority-data of cluster "kind-kind" in /root/.kube/config`; `None`
    /// for the system roots.
    pub ca: Option<String>,
}

impl ApiServer {
    /// One line for a kube client error:
    /// - transport errors (connect, TLS, HTTP): `cannot reach the API server <url>: <cause>`,
    ///   and for a TLS error `(trusting the CA from <ca>)` after the URL;
    /// - anything else (an API status, a decode error): [`one_line`] of the error.
    pub fn describe(&self, err: &kube::Error) -> String {
        let inner: &(dyn Error + 'static) = match err {
            kube::Error::Service(e) => e.as_ref(),
            kube::Error::HyperError(e) => e,
            _ => return one_line(err),
        };
        let tls = chain(inner).any(is_tls);
        let cause = one_line(inner);
        match (&self.ca, tls) {
            (Some(ca), true) => format!(
                "cannot reach the API server {} (trusting the CA from {ca}): {cause}",
                self.url
            ),
            (None, true) => format!(
                "cannot reach the API server {} (trusting the system roots): {cause}",
                self.url
            ),
            _ => format!("cannot reach the API server {}: {cause}", self.url),
        }
    }
}

/// True for a rustls error, bare or inside `io::Error`s (as TLS streams report them,
/// hyper-rustls wrapping tokio-rustls' `io::Error` once more; `io::Error::source` skips the
/// error it wraps, so they are unwrapped with `get_ref`).
fn is_tls(err: &(dyn Error + 'static)) -> bool {
    let mut current: &(dyn Error + 'static) = err;
    loop {
        if current.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        match current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => current = inner,
            None => return false,
        }
    }
}

/// `err` and its sources, outermost first.
fn chain<'a>(err: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |e: &&(dyn Error + 'static)| (*e).source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read /x: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("loading the webhook")]
    struct Plain(#[source] std::io::Error);

    fn not_found() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::NotFound)
    }

    #[test]
    fn a_quoted_source_is_not_repeated() {
        assert_eq!(
            one_line(&Quoting(not_found())),
            format!("cannot read /x: {}", not_found())
        );
        let wrapped = anyhow::Error::new(Quoting(not_found())).context("starting");
        assert_eq!(
            one_line_anyhow(&wrapped),
            format!("starting: cannot read /x: {}", not_found())
        );
    }

    #[test]
    fn an_unquoted_source_is_appended_once() {
        assert_eq!(
            one_line(&Plain(not_found())),
            format!("loading the webhook: {}", not_found())
        );
    }

    #[test]
    fn api_statuses_are_not_called_unreachable() {
        let server = ApiServer {
            url: "https://127.0.0.1:6443".into(),
            ca: Some("/ca.crt".into()),
        };
        let err = kube::Error::Service(Box::new(not_found()));
        assert_eq!(
            server.describe(&err),
            format!(
                "cannot reach the API server https://127.0.0.1:6443: {}",
                not_found()
            )
        );
        // As hyper-rustls reports it: tokio-rustls' io::Error wrapped in another.
        let tls = kube::Error::Service(Box::new(std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ))));
        assert!(
            server
                .describe(&tls)
                .starts_with("cannot reach the API server https://127.0.0.1:6443 (trusting the CA from /ca.crt): "),
            "{}",
            server.describe(&tls)
        );
        let status = kube::Error::Api(Box::new(kube::core::Status::failure(
            "forbidden",
            "Forbidden",
        )));
        assert!(!server.describe(&status).contains("cannot reach"));
    }
}
