//! The small formatting helpers the probe's messages share: a response's media type, a
//! body snippet, a status with its reason. They depend on nothing else in `run`, so both
//! the request layer (`exchange`) and the answer diagnosis (`answer`) use them without
//! importing each other.

use hyper::Response;
use hyper::body::Incoming;

use crate::probe::http;

/// The response's `Content-Type` as sent, or empty.
pub(super) fn content_type(response: &Response<Incoming>) -> String {
    http::header(response, "content-type").unwrap_or_default()
}

/// The media type of a `Content-Type` (parameters dropped), lowercase.
pub(super) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `Content-Type X`, or `no Content-Type`, for messages.
pub(super) fn describe_ct(content_type: &str) -> String {
    if content_type.is_empty() {
        "no Content-Type".to_owned()
    } else {
        format!("Content-Type {content_type}")
    }
}

/// The first 120 characters of a body, whitespace collapsed, for messages.
pub(super) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s: String = collapsed.chars().take(120).collect();
    if collapsed.chars().count() > 120 {
        s.push('…');
    }
    s
}

/// `404 Not Found`: the status with its canonical reason, when it has one.
pub(super) fn status_text(status: u16) -> String {
    match hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(r) => format!("{status} {r}"),
        None => status.to_string(),
    }
}
