//! The diagnosis: what the verifier captured (chain, trust anchor, validity, names, pin)
//! turned into a failure [`Reason`] with its message, a warning and notes.

use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, Error as TlsError};

use super::{ADD_CA, Captured, ConnParams, DiagContext, Diagnosis};
use crate::probe::cert::{self, CertFacts};
use crate::probe::{ProxyComparison, Reason};

pub(super) fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn find_in_bundle<'a>(ctx: &'a DiagContext, der: &[u8]) -> Option<&'a CertificateDer<'static>> {
    ctx.bundle.iter().find(|b| b.as_ref() == der)
}

/// Which bundle certificate anchors the chain, for the success message.
fn anchor_description(ctx: &DiagContext, captured: &Captured) -> String {
    for (der, f) in captured.chain.iter().zip(&captured.facts) {
        if find_in_bundle(ctx, der).is_some() {
            return format!("\"{}\" itself, which is in {}", f.peer.subject, ctx.label());
        }
        let issuer = ctx
            .bundle
            .iter()
            .zip(ctx.bundle_facts())
            .find(|(b, bf)| bf.subject_raw == f.issuer_raw && cert::signed_by(der, b))
            .map(|(_, bf)| bf);
        if let Some(bf) = issuer {
            return format!("\"{}\" in {}", bf.peer.subject, ctx.label());
        }
    }
    ctx.label().to_owned()
}

/// Turn what the verifier saw into a failure (first of: pin, trust, validity, name, other),
/// a warning (expiring soon) and notes (the other problems, proxy re-signing).
pub(crate) fn diagnose(
    ctx: &DiagContext,
    params: &ConnParams,
    c: &Captured,
    proxy: Option<&ProxyComparison>,
) -> Diagnosis {
    let mut d = Diagnosis::default();
    let Some(leaf) = c.facts.first() else {
        d.failure = Some((
            Reason::TlsHandshakeFailed,
            "the server sent no certificate".to_owned(),
        ));
        return d;
    };
    let mut failures: Vec<(Reason, String)> = Vec::new();

    // 1. The pin.
    let pin_state = ctx.pin.as_ref().map(|p| *p == leaf.peer.sha256);
    match (pin_state, &ctx.pin) {
        (Some(false), Some(pin)) => failures.push((
            Reason::PinnedCertificateChanged,
            format!(
                "the server's certificate changed: pinned sha256 {pin}, presented sha256 {} (\"{}\", issued by \"{}\", valid from {}); if this is an expected rotation, update the pin (--pinned-sha256 {}), otherwise something may be intercepting the connection",
                leaf.peer.sha256, leaf.peer.subject, leaf.peer.issuer, leaf.peer.not_before, leaf.peer.sha256
            ),
        )),
        (Some(true), _) => {
            d.trusted_by = Some(format!("the pinned fingerprint sha256 {}", leaf.peer.sha256));
        }
        _ => {}
    }

    // 2. Trust (not when a pin decides it).
    if pin_state.is_none() {
        match &c.anchored {
            Ok(()) => {
                d.trusted_by = Some(anchor_description(ctx, c));
                if let Some(p) = proxy
                    && p.resigned == Some(true)
                {
                    d.notes.push(format!(
                        "the proxy {} re-signs TLS (through it the certificate is issued by \"{}\", directly by \"{}\"); {} trusts the proxy's CA, so clients that go through the proxy will connect, but clients that bypass it (NO_PROXY) must trust \"{}\"",
                        p.proxy,
                        p.proxy_issuer,
                        p.direct_issuer.as_deref().unwrap_or("?"),
                        ctx.label(),
                        p.direct_issuer.as_deref().unwrap_or("?"),
                    ));
                }
            }
            Err(e) => failures.push(trust_failure(ctx, c, e, proxy)),
        }
    }

    // 3. Validity, at the probe's clock.
    let mut expired = false;
    for (i, f) in c.facts.iter().enumerate() {
        let what = if i == 0 {
            format!("the certificate \"{}\"", f.peer.subject)
        } else {
            format!("the intermediate CA certificate \"{}\"", f.peer.subject)
        };
        if c.now > f.not_after {
            expired = true;
            failures.push((
                Reason::Expired,
                format!(
                    "{what} expired at {} ({} ago); renew it (with cert-manager, check the Certificate's status and its Issuer) and make the server load the new one",
                    f.peer.not_after,
                    cert::human_duration(c.now - f.not_after)
                ),
            ));
            break;
        }
        if c.now < f.not_before {
            failures.push((
                Reason::NotYetValid,
                format!(
                    "{what} is valid only from {} (in {}); the clock of the issuer or of this machine is wrong, or the certificate was issued for the future",
                    f.peer.not_before,
                    cert::human_duration(f.not_before - c.now)
                ),
            ));
            break;
        }
    }

    // 4. The name.
    if c.name.is_err() {
        failures.push((Reason::HostnameMismatch, hostname_message(params, leaf)));
    }

    // 5. Anything else webpki objects to.
    if pin_state.is_none()
        && failures.is_empty()
        && let Err(e) = &c.webpki
    {
        failures.push((
            Reason::InvalidCertificate,
            format!(
                "the certificate \"{}\" is not acceptable for a TLS server: {e}",
                leaf.peer.subject
            ),
        ));
    }

    // Warning: expiring soon.
    if !expired {
        let left = leaf.not_after - c.now;
        if left >= 0 && left < ctx.expiring_soon {
            d.warning = Some((
                Reason::ExpiringSoon,
                format!(
                    "the certificate \"{}\" expires at {}, in {} (warning threshold {}); renew it before then",
                    leaf.peer.subject,
                    leaf.peer.not_after,
                    cert::human_duration(left),
                    cert::human_duration(ctx.expiring_soon)
                ),
            ));
        }
    }

    let mut failures = failures.into_iter();
    d.failure = failures.next();
    for (reason, message) in failures {
        d.notes.push(format!("also {reason}: {message}"));
    }
    d
}

fn trust_failure(
    ctx: &DiagContext,
    c: &Captured,
    err: &TlsError,
    proxy: Option<&ProxyComparison>,
) -> (Reason, String) {
    let leaf = &c.facts[0];
    let label = ctx.label();
    if let Some(p) = proxy
        && p.resigned == Some(true)
    {
        return (
            Reason::ProxyReSigned,
            format!(
                "the proxy {} re-signs TLS: through it the certificate for {:?} is issued by \"{}\", while a direct connection shows \"{}\"; {label} does not trust \"{}\": add the proxy's CA certificate to {ADD_CA}",
                p.proxy,
                leaf.peer.subject,
                p.proxy_issuer,
                p.direct_issuer.as_deref().unwrap_or("?"),
                p.proxy_issuer
            ),
        );
    }
    if leaf.peer.self_signed {
        let in_bundle = find_in_bundle(ctx, &c.chain[0]).is_some();
        let message = if in_bundle && leaf.peer.is_ca {
            format!(
                "the server's self-signed certificate \"{}\" is in {label}, but it is a CA certificate (basicConstraints CA:TRUE, the default of `openssl req -x509`), which rustls/webpki refuse as a server certificate ({err}); pin it instead (--pinned-sha256 {}) or reissue it without CA:TRUE",
                leaf.peer.subject, leaf.peer.sha256
            )
        } else {
            format!(
                "the server presents a self-signed certificate \"{}\" (sha256 {}), which {label} does not trust; trust exactly this certificate by pinning it (--pinned-sha256 {}) or adding it to {ADD_CA}, or better, issue it from a CA (for example cert-manager)",
                leaf.peer.subject, leaf.peer.sha256, leaf.peer.sha256
            )
        };
        return (Reason::SelfSigned, message);
    }
    let unknown_issuer = matches!(
        err,
        TlsError::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature
        )
    );
    if !unknown_issuer {
        return (
            Reason::InvalidCertificate,
            invalid_certificate_message(leaf, err),
        );
    }
    let Some(last) = c.facts.last() else {
        return (Reason::UnknownAuthority, format!("{err}"));
    };
    let mut message = if last.self_issued && last.peer.self_signed {
        format!(
            "the server's chain ends at the root \"{}\" (sent by the server), which is not in {label}; add that CA certificate to {ADD_CA} if you trust it",
            last.peer.subject
        )
    } else if cert::claims_self_signed_but_does_not_verify(last) {
        format!(
            "the server's chain ends at \"{}\", which claims to be self-signed but its signature does not verify with its own key, so it is no root anyone can trust; reissue the certificate from a real CA and add that CA to {ADD_CA}",
            last.peer.subject
        )
    } else {
        let missing = &last.peer.issuer;
        let same_name = ctx
            .bundle_facts()
            .iter()
            .any(|bf| bf.subject_raw == last.issuer_raw || bf.peer.subject == *missing);
        if same_name {
            format!(
                "the server's chain ends at \"{missing}\" (the issuer of \"{}\"); {label} has a CA of that name, but with a different key, so it does not verify the chain (was the CA re-created?); update the bundle from the current CA, or reissue the server certificate",
                last.peer.subject
            )
        } else {
            let mut m = format!(
                "the server's chain ends at \"{missing}\" (the issuer of \"{}\"), which is not in {label}; add it to {ADD_CA}",
                last.peer.subject
            );
            if c.facts.len() == 1 {
                m.push_str(&format!(
                    " (the server sent only its own certificate: if \"{missing}\" is an intermediate CA, the server must send it too)"
                ));
            }
            m
        }
    };
    if let Some(p) = proxy
        && p.resigned.is_none()
    {
        message.push_str(&format!(
            "; note: the probe went through the proxy {} and could not compare with a direct connection ({}): if the proxy intercepts TLS, \"{}\" is its CA",
            p.proxy,
            p.direct_error.as_deref().unwrap_or("unknown error"),
            p.proxy_issuer
        ));
    }
    (Reason::UnknownAuthority, message)
}

fn invalid_certificate_message(leaf: &CertFacts, err: &TlsError) -> String {
    let text = err.to_string();
    let advice = if text.contains("CaUsedAsEndEntity") {
        "it is a CA certificate (basicConstraints CA:TRUE) used as a server certificate; reissue it as a leaf (CA:FALSE)"
    } else if text.contains("UnsupportedCertVersion") {
        "it is an X.509 v1 certificate (what `openssl x509 -req` makes without extensions), which rustls/webpki refuse; reissue it as v3 with a subjectAltName (for example -extfile with subjectAltName=DNS:localhost,IP:127.0.0.1)"
    } else if matches!(
        err,
        TlsError::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
        )
    ) {
        "its extendedKeyUsage lacks serverAuth; reissue it with serverAuth"
    } else if matches!(
        err,
        TlsError::InvalidCertificate(
            CertificateError::UnsupportedSignatureAlgorithmContext { .. }
                | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
        )
    ) {
        "it is signed with an algorithm rustls does not accept (for example SHA-1); reissue it with SHA-256 or better"
    } else {
        "reissue it"
    };
    format!(
        "the certificate \"{}\" cannot be used by a TLS client ({text}): {advice}",
        leaf.peer.subject
    )
}

fn hostname_message(params: &ConnParams, leaf: &CertFacts) -> String {
    let name = &params.server_name;
    let is_ip = name.parse::<std::net::IpAddr>().is_ok();
    let wanted = if is_ip {
        format!("IP:{name}")
    } else {
        format!("DNS:{name}")
    };
    let sans = &leaf.peer.sans;
    let via = if params.overridden {
        format!(
            " (the name checked is --server-name {name}; the URL's host is {})",
            params.target.host
        )
    } else {
        String::new()
    };
    if sans.is_empty() {
        return format!(
            "the certificate \"{}\" has no subjectAltName, so it is valid for no name: clients ignore the CN (RFC 6125) and the probe dialled {name}{via}; reissue it with subjectAltName={wanted} (openssl: -addext \"subjectAltName={wanted}\")",
            leaf.peer.subject
        );
    }
    let listed = sans.join(", ");
    if is_ip && !sans.iter().any(|s| s.starts_with("IP:")) {
        let dns = sans
            .iter()
            .find_map(|s| s.strip_prefix("DNS:"))
            .filter(|d| !d.starts_with('*'));
        let by_name = match dns {
            Some(d) => {
                let mut t = params.target.clone();
                t.host = d.to_owned();
                format!("connect by name ({}), ", t.url())
            }
            None => String::new(),
        };
        let keep_ip = match dns {
            Some(d) if !params.overridden => {
                format!("keep the IP and verify the name with --server-name {d}, ")
            }
            _ => String::new(),
        };
        return format!(
            "the certificate is valid for {listed}, but the probe dialled {name}{via}, an IP address, which only matches an IP subjectAltName ({wanted}), never a DNS name; {by_name}{keep_ip}or reissue the certificate with {wanted} in subjectAltName"
        );
    }
    format!(
        "the certificate is valid for {listed}, not for {name}{via}; use one of those names in the URL (or --server-name when the right name is routed through another address), or reissue the certificate with {wanted} in subjectAltName"
    )
}
