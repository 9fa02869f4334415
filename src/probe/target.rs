//! URLs as the probe needs them: scheme, host (IPv6 without brackets), port, path and query,
//! and resolution of `Location` headers and SSE `endpoint` references.

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `https://`.
    pub(crate) https: bool,
    /// Lowercase host; IPv6 without brackets.
    pub(crate) host: String,
    /// The port (explicit or the scheme's default).
    pub(crate) port: u16,
    /// Path and query, starting with `/` (no fragment).
    pub(crate) path: String,
}

impl Target {
    /// Parse an absolute URL.
    ///
    /// # Errors
    /// A sentence for people when it is not an absolute `http(s)://` URL with a host.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let without_fragment = url.trim().split('#').next().unwrap_or_default();
        let uri: hyper::Uri = without_fragment
            .parse()
            .map_err(|e| format!("{url:?} is not a valid URL ({e})"))?;
        let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => {
                return Err(format!(
                    "{url:?} has the scheme {other:?}; the probe speaks https:// and http:// only"
                ));
            }
            None => {
                return Err(format!(
                    "{url:?} is not an absolute URL; write it as https://host[:port]/path"
                ));
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{url:?} has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            Some(p) if p.starts_with('/') => p.to_owned(),
            Some(p) if !p.is_empty() => format!("/{p}"),
            _ => "/".to_owned(),
        };
        Ok(Self {
            https,
            host,
            port,
            path,
        })
    }

    /// The host for URLs and authorities: IPv6 in brackets.
    pub(crate) fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// `host:port` (IPv6 bracketed), as in a CONNECT request.
    pub(crate) fn authority(&self) -> String {
        format!("{}:{}", self.host_for_url(), self.port)
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    pub(crate) fn host_header(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            self.host_for_url()
        } else {
            self.authority()
        }
    }

    /// `https`/`http`.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The URL, normalised.
    pub(crate) fn url(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.host_header(), self.path)
    }

    /// Same scheme, host and port.
    pub(crate) fn same_origin(&self, other: &Self) -> bool {
        self.https == other.https && self.host == other.host && self.port == other.port
    }

    /// The path without the query.
    pub(crate) fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("/")
    }

    /// Resolve a reference (a `Location` header, an SSE `endpoint`) against this URL:
    /// absolute, scheme-relative (`//host/p`), absolute-path (`/p`), query-only (`?q`) or
    /// relative-path (`p`, against the directory of this path).
    ///
    /// # Errors
    /// When an absolute reference does not parse.
    pub(crate) fn join(&self, reference: &str) -> Result<Self, String> {
        let reference = reference.trim();
        let reference = reference.split('#').next().unwrap_or_default();
        if let Some((scheme, _)) = reference.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Self::parse(reference);
        }
        if reference.starts_with("//") {
            return Self::parse(&format!("{}:{reference}", self.scheme()));
        }
        let mut next = self.clone();
        if reference.is_empty() {
            return Ok(next);
        }
        if reference.starts_with('/') {
            next.path = reference.to_owned();
        } else if reference.starts_with('?') {
            next.path = format!("{}{reference}", self.path_only());
        } else {
            let dir = match self.path_only().rfind('/') {
                Some(i) => &self.path_only()[..=i],
                None => "/",
            };
            next.path = format!("{dir}{reference}");
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let t = Target::parse("https://LocalHost:8443/mcp?x=1#frag").expect("parse");
        assert!(t.https);
        assert_eq!(t.host, "localhost");
        assert_eq!(t.port, 8443);
        assert_eq!(t.path, "/mcp?x=1");
        assert_eq!(t.url(), "https://localhost:8443/mcp?x=1");
        let t = Target::parse("http://[::1]/").expect("parse");
        assert_eq!(t.host, "::1");
        assert_eq!(t.authority(), "[::1]:80");
        assert_eq!(t.url(), "http://[::1]/");
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("/relative").is_err());
        assert_eq!(
            Target::parse("https://h").expect("parse").url(),
            "https://h/"
        );
    }

    #[test]
    fn joins_references() {
        let base = Target::parse("https://h:8001/a/mcp?q=1").expect("parse");
        for (reference, joined) in [
            ("http://localhost/mcp/", "http://localhost/mcp/"),
            ("/mcp/", "https://h:8001/mcp/"),
            (
                "messages?sessionId=abc",
                "https://h:8001/a/messages?sessionId=abc",
            ),
            ("?z", "https://h:8001/a/mcp?z"),
            ("//other/x", "https://other/x"),
        ] {
            assert_eq!(
                base.join(reference).expect("join").url(),
                joined,
                "{reference}"
            );
        }
    }
}
