//! Certificate lifetimes as McpServers write them: Go-style durations (`2160h`) for
//! `spec.mtls`'s `duration` and `renewBefore`, parsed and checked against each other.

use std::str::FromStr as _;

use super::{DEFAULT_DURATION_SECS, IssueError, MIN_DURATION_SECS};
use crate::api::MtlsSpec;

fn parse_duration_field(field: &str, s: &str) -> Result<i64, IssueError> {
    let invalid = |detail: String| IssueError::InvalidDuration {
        field: field.to_owned(),
        value: s.to_owned(),
        detail,
    };
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty; use e.g. 2160h".to_owned()));
    }
    let parsed = kube::core::Duration::from_str(trimmed)
        .map_err(|e| invalid(format!("{e} (Go duration syntax, e.g. 2160h or 1h30m)")))?;
    if parsed.is_negative() {
        return Err(invalid("it is negative".to_owned()));
    }
    let secs = std::time::Duration::from(parsed).as_secs();
    let secs = i64::try_from(secs).map_err(|_| invalid("it is too large".to_owned()))?;
    if secs < 1 {
        return Err(invalid("it must be at least 1s".to_owned()));
    }
    Ok(secs)
}

/// Parse a Go duration (`2160h`, `90m`, `1h30m`, `1.5h`; units `ns`, `us`, `ms`, `s`,
/// `m`, `h`) with [`kube::core::Duration`], into whole seconds (fractions truncated).
///
/// # Errors
/// [`IssueError::InvalidDuration`] when the syntax is wrong, or the value is empty,
/// negative, shorter than one second or beyond `i64` seconds.
pub fn parse_duration(s: &str) -> Result<i64, IssueError> {
    parse_duration_field("duration", s)
}

/// `(duration, renewBefore)` in seconds for `spec.mtls`, with cert-manager's defaults:
/// `duration` 2160h (90 days, [`DEFAULT_DURATION_SECS`]) and `renewBefore` a third of
/// the duration (so 720h by default).
///
/// # Errors
/// [`IssueError::InvalidDuration`] when a field does not parse ([`parse_duration`]) or
/// `duration` is under 1h ([`MIN_DURATION_SECS`]); [`IssueError::RenewBeforeTooLong`]
/// when `renewBefore >= duration`.
pub fn durations(spec: Option<&MtlsSpec>) -> Result<(i64, i64), IssueError> {
    let duration = match spec.and_then(|s| s.duration.as_deref()) {
        Some(s) => {
            let secs = parse_duration_field("spec.mtls.duration", s)?;
            if secs < MIN_DURATION_SECS {
                return Err(IssueError::InvalidDuration {
                    field: "spec.mtls.duration".to_owned(),
                    value: s.to_owned(),
                    detail: "it must be at least 1h".to_owned(),
                });
            }
            secs
        }
        None => DEFAULT_DURATION_SECS,
    };
    let renew_before = match spec.and_then(|s| s.renew_before.as_deref()) {
        Some(s) => parse_duration_field("spec.mtls.renewBefore", s)?,
        None => duration / 3,
    };
    if renew_before >= duration {
        return Err(IssueError::RenewBeforeTooLong {
            renew_before_secs: renew_before,
            duration_secs: duration,
        });
    }
    Ok((duration, renew_before))
}
