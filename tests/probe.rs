//! The probe against real servers on 127.0.0.1 (started and stopped by each test), with
//! certificates made by rcgen: every verdict, its message, the text rendering and JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::mcp::{
    Answer, Server, closed_port, full, handler, html_page, mitm_proxy, mitm_proxy_to,
    refusing_proxy, serve, server_config, sse_mcp, streamable_mcp, tunnel_proxy,
};
use common::{TestCa, self_signed};
use mcptrust::probe::{ProbeOptions, ProbeReport, Reason, Step, Transport, probe, render_text};

/// 2030-01-01T00:00:00Z.
const Y2030: i64 = 1_893_456_000;

fn opts(url: String, ca_pem: Option<&str>) -> ProbeOptions {
    ProbeOptions {
        ca_bundle_pem: ca_pem.map(|p| p.as_bytes().to_vec()),
        timeout: Duration::from_secs(10),
        ..ProbeOptions::new(url)
    }
}

fn step(report: &ProbeReport, step: Step) -> &mcptrust::probe::StepResult {
    report
        .steps
        .iter()
        .find(|s| s.step == step)
        .unwrap_or_else(|| panic!("no {step:?} step in {report:#?}"))
}

fn assert_verdict(report: &ProbeReport, reason: Reason) {
    println!("{}", render_text(report));
    assert_eq!(
        report.verdict,
        reason,
        "unexpected verdict; report:\n{}",
        render_text(report)
    );
    assert_eq!(report.exit_code, reason.exit_code());
    assert_eq!(report.ok, !reason.is_failure());
}

fn contains(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(haystack.contains(n), "{n:?} not in {haystack:?}");
    }
}

async fn mcp_server(ca: &TestCa, sans: &[&str]) -> Server {
    let leaf = ca.server_leaf(sans);
    serve(Some(server_config(&leaf, None, false)), |_| {
        streamable_mcp(Answer::Json)
    })
    .await
}

// 1
#[tokio::test]
async fn ca_signed_streamable_http_server_is_ok() {
    let ca = TestCa::new("Test CA");
    let server = mcp_server(&ca, &["localhost", "127.0.0.1"]).await;
    let url = format!("https://localhost:{}/mcp", server.port());
    let report = probe(&opts(url.clone(), Some(&ca.pem))).await;
    assert_verdict(&report, Reason::Ok);
    let steps: Vec<Step> = report.steps.iter().map(|s| s.step).collect();
    assert_eq!(
        steps,
        vec![Step::Dns, Step::Tcp, Step::TlsHandshake, Step::Http]
    );
    let mcp = report.mcp.as_ref().expect("mcp info");
    assert_eq!(mcp.transport, Transport::StreamableHttp);
    assert_eq!(mcp.protocol_version.as_deref(), Some("2025-06-18"));
    assert_eq!(mcp.server_name.as_deref(), Some("test-mcp"));
    assert_eq!(mcp.server_version.as_deref(), Some("1.2.3"));
    assert_eq!(mcp.session_id.as_deref(), Some("sess-123"));
    let tls = report.tls.as_ref().expect("tls info");
    assert_eq!(tls.version.as_deref(), Some("TLSv1.3"));
    assert_eq!(tls.chain.len(), 1);
    assert_eq!(tls.chain[0].issuer, "CN=Test CA");
    assert!(tls.chain[0].sans.contains(&"IP:127.0.0.1".to_owned()));
    contains(
        tls.trusted_by.as_deref().unwrap_or_default(),
        &["\"CN=Test CA\" in the CA bundle"],
    );
    contains(
        &step(&report, Step::Http).message,
        &[
            "test-mcp",
            "1.2.3",
            "2025-06-18",
            "sess-123",
            "notifications/initialized → 202",
        ],
    );
    contains(&report.summary, &["test-mcp", "2025-06-18"]);
}

#[tokio::test]
async fn streamable_http_answer_as_event_stream_is_ok() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.server_leaf(&["localhost", "127.0.0.1"]);
    let server = serve(Some(server_config(&leaf, None, false)), |_| {
        streamable_mcp(Answer::EventStream)
    })
    .await;
    let mut o = opts(
        format!("https://127.0.0.1:{}/mcp", server.port()),
        Some(&ca.pem),
    );
    o.transport = Transport::StreamableHttp;
    let report = probe(&o).await;
    assert_verdict(&report, Reason::Ok);
    let mcp = report.mcp.as_ref().expect("mcp info");
    assert_eq!(mcp.server_name.as_deref(), Some("test-mcp"));
    contains(&step(&report, Step::Http).message, &["text/event-stream"]);
}

#[tokio::test]
async fn plain_http_endpoint_is_ok_without_tls_step() {
    let server = serve(None, |_| streamable_mcp(Answer::Json)).await;
    let report = probe(&opts(
        format!("http://127.0.0.1:{}/mcp", server.port()),
        None,
    ))
    .await;
    assert_verdict(&report, Reason::Ok);
    assert!(report.tls.is_none());
    assert!(report.steps.iter().all(|s| s.step != Step::TlsHandshake));
}

// 2
#[tokio::test]
async fn self_signed_server_is_self_signed() {
    let leaf = self_signed("my-laptop", &["localhost", "127.0.0.1"]);
    let server = serve(Some(server_config(&leaf, None, false)), |_| {
        streamable_mcp(Answer::Json)
    })
    .await;
    let ca = TestCa::new("Test CA");
    let report = probe(&opts(
        format!("https://localhost:{}/mcp", server.port()),
        Some(&ca.pem),
    ))
    .await;
    assert_verdict(&report, Reason::SelfSigned);
    let tls_step = step(&report, Step::TlsHandshake);
    contains(
        &tls_step.message,
        &[
            "self-signed",
            "CN=my-laptop",
            &leaf.sha256,
            "--pinned-sha256",
        ],
    );
    assert!(report.tls.as_ref().unwrap().chain[0].self_signed);
    assert!(report.mcp.is_none());
    assert_eq!(report.exit_code, 4);
}

// 3
#[tokio::test]
async fn ip_dialled_against_dns_only_san_is_hostname_mismatch() {
    let ca = TestCa::new("Test CA");
    let server = mcp_server(&ca, &["localhost"]).await;
    let report = probe(&opts(
        format!("https://127.0.0.1:{}/", server.port()),
        Some(&ca.pem),
    ))
    .await;
    assert_verdict(&report, Reason::HostnameMismatch);
    let message = &step(&report, Step::TlsHandshake).message;
    contains(
        message,
        &[
            "DNS:localhost",
            "127.0.0.1",
            "IP:127.0.0.1",
            "https://localhost:",
        ],
    );
    assert_eq!(report.exit_code, 5);
}

#[tokio::test]
async fn certificate_without_san_is_hostname_mismatch_naming_the_cn_problem() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.server_leaf_with(&[], |p| {
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
    });
    let server = serve(Some(server_config(&leaf, None, false)), |_| {
        streamable_mcp(Answer::Json)
    })
    .await;
    let report = probe(&opts(
        format!("https://localhost:{}/", server.port()),
        Some(&ca.pem),
    ))
    .await;
    assert_verdict(&report, Reason::HostnameMismatch);
    contains(
        &step(&report, Step::TlsHandshake).message,
        &["no subjectAltName", "CN", "subjectAltName=DNS:localhost"],
    );
}

#[tokio::test]
async fn server_name_override_verifies_the_given_name() {
    let ca = TestCa::new("Test CA");
    let server = mcp_server(&ca, &["mcp.internal.example"]).await;
    let mut o = opts(
        format!("https://127.0.0.1:{}/mcp", server.port()),
        Some(&ca.pem),
    );
    o.server_name = Some("mcp.internal.example".to_owned());
    let report = probe(&o).await;
    assert_verdict(&report, Reason::Ok);
    assert_eq!(
        report.tls.as_ref().unwrap().server_name,
        "mcp.internal.example"
    );
}

// 4
#[tokio::test]
async fn expired_certificate_is_expired() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.server_leaf_with(&["localhost", "127.0.0.1"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let server = serve(Some(server_config(&leaf, None, false)), |_| {
        streamable_mcp(Answer::Json)
    })
    .await;
    let report = probe(&opts(
        format!("https://localhost:{}/mcp", server.port()),
        Some(&ca.pem),
    ))
    .await;
    assert_verdict(&report, Reason::Expired);
    contains(
        &step(&report, Step::TlsHandshake).message,
        &["expired at 2021-01-01T00:00:00Z", "renew"],
    );
    assert_eq!(report.exit_code, 6);
}

#[tokio::test]
async fn injected_clock_decides_validity() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.server_leaf_with(&["localhost"], |p| {
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2030, 1, 1);
    });
    let server = serve(Some(server_config(&leaf, None, false)), |_| {
        streamable_mcp(Answer::Json)
    })
    .await;
    let url = format!("https://localhost:{}/mcp", server.port());

    // Three days before notAfter: a warning, exit 0, and the MCP exchange still runs.
    let mut o = opts(url.clone(), Some(&ca.pem));
    o.now = Some(Y2030 - 3 * 86_400);
    let report = probe(&o).await;
    assert_verdict(&report, Reason::ExpiringSoon);
    assert_eq!(report.exit_code, 0);
    assert!(report.mcp.is_some());
    let tls_step = step(&report, Step::TlsHandshake);
    assert!(tls_step.ok);
    contains(
        &tls_step.message,
        &["expires at 2030-01-01T00:00:00Z", "in 3 days"],
    );

    // After notAfter.
    o.now = Some(Y2030 + 86_400);
    assert_verdict(&probe(&o).await, Reason::Expired);

    // Before notBefore.
    o.now = Some(1_600_000_000);
    let report = probe(&o).await;
    assert_verdict(&report, Reason::NotYetValid);
    contains(
        &step(&report, Step::TlsHandshake).message,
        &["valid only from 2024-01-01T00:00:00Z"],
    );
}

// 5
#[tokio::test]
async fn mtls_server_client_certificates() {
    let ca = TestCa::new("Test CA");
    let client_ca = TestCa::new("Client CA");
    let other_ca = TestCa::new("Other CA");
    let leaf = ca.server_leaf(&["localhost", "127.0.0.1"]);
    let server = serve(
        Some(server_config(&leaf, Some(&client_ca.pem), false)),
        |_| streamable_mcp(Answer::Json),
    )
    .await;
    let url = format!("https://localhost:{}/mcp", server.port());

    // None configured.
    let report = probe(&opts(url.clone(), Some(&ca.pem))).await;
    assert_verdict(&report, Reason::ClientCertificateRequired);
    let tls_step = step(&report, Step::TlsHandshake);
    assert!(!tls_step.ok);
    contains(
        &tls_step.message,
        &[
            "requires a client certificate",
            "none was configured",
            "CN=Client CA",
        ],
    );
    assert!(report.steps.iter().all(|s| s.step != Step::Http));
    assert!(report.tls.as_ref().unwrap().client_certificate_requested);
    assert_eq!(report.exit_code, 7);

    // One from another CA.
    let wrong = other_ca.client_leaf("intruder");
    let mut o = opts(url.clone(), Some(&ca.pem));
    o.client_cert_pem = Some(wrong.cert_pem.into_bytes());
    o.client_key_pem = Some(wrong.key_pem.into_bytes());
    let report = probe(&o).await;
    assert_verdict(&report, Reason::ClientCertificateRequired);
    contains(
        &step(&report, Step::TlsHandshake).message,
        &[
            "rejected the client certificate",
            "CN=intruder",
            "issued by \"CN=Other CA\"",
        ],
    );

    // The right one (attached although a custom CA bundle is set as well).
    let right = client_ca.client_leaf("probe-client");
    o.client_cert_pem = Some(right.cert_pem.into_bytes());
    o.client_key_pem = Some(right.key_pem.into_bytes());
    let report = probe(&o).await;
    assert_verdict(&report, Reason::Ok);
    let tls = report.tls.as_ref().unwrap();
    assert_eq!(
        tls.client_certificate_sent.as_deref(),
        Some("CN=probe-client")
    );
    assert_eq!(
        tls.acceptable_client_issuers,
        vec!["CN=Client CA".to_owned()]
    );
    assert!(report.mcp.is_some());
}

#[tokio::test]
async fn mtls_over_tls12_fails_in_the_handshake() {
    let ca = TestCa::new("Test CA");
    let client_ca = TestCa::new("Client CA");
    let leaf = ca.server_leaf(&["localhost"]);
    let server = serve(
        Some(server_config(&leaf, Some(&client_ca.pem), true)),
        |_| streamable_mcp(Answer::Json),
    )
    .await;
    let url = format!("https://localhost:{}/mcp", server.port());
    let report = probe(&opts(url.clone(), Some(&ca.pem))).await;
    assert_verdict(&report, Reason::ClientCertificateRequired);
    contains(
        &step(&report, Step::TlsHandshake).message,
        &["none was configured"],
    );

    let right = client_ca.client_leaf("probe-client");
    let mut o = opts(url, Some(&ca.pem));
    o.client_cert_pem = Some(right.cert_pem.into_bytes());
    o.client_key_pem = Some(right.key_pem.into_bytes());
    let report = probe(&o).await;
    assert_verdict(&report, Reason::Ok);
    assert_eq!(
        report.tls.as_ref().unwrap().version.as_deref(),
        Some("TLSv1.2")
    );
}

// 6
#[tokio::test]
async fn unknown_ca_is_unknown_authority_naming_it() {
    let ca = TestCa::new("Test CA");
    let rogue = TestCa::new("Corp Internal CA");
    let server = mcp_server(&rogue, &["localhost"]).await;
    let report = probe(&opts(
        format!("https://localhost:{}/mcp", server.port()),
        Some(&ca.pem),
    ))
    .await;
    assert_verdict(&report, Reason::UnknownAuthority);
    contains(
        &step(&report, Step::TlsHandshake).message,
        &[
            "chain ends at \"CN=Corp Internal CA\"",
            "not in the CA bundle",
            "spec.trust.sources or --ca-file",
        ],
    );
    assert_eq!(report.exit_code, 4);
}

#[tokio::test]
async fn default_roots_do_not_trust_a_private_ca() {
    let rogue = TestCa::new("Corp Internal CA");
    let server = mcp_server(&rogue, &["localhost"]).await;
    let report = probe(&opts(
        format!("https://localhost:{}/mcp", server.port()),
        None,
    ))
    .await;
    assert_verdict(&report, Reason::UnknownAuthority);
    contains(
        &step(&report, Step::TlsHandshake).message,
        &["CN=Corp Internal CA", "Mozilla root store"],
    );
}

// 7
#[tokio::test]
async fn mitm_proxy_is_proxy_resigned_then_ok_with_its_ca() {
    let ca = TestCa::new("Test CA");
    let proxy_ca = Arc::new(TestCa::new("Corp Proxy CA"));
    let server = mcp_server(&ca, &["localhost", "127.0.0.1"]).await;
    let proxy = mitm_proxy(proxy_ca.clone(), ca.pem.clone()).await;
    let url = format!("https://127.0.0.1:{}/mcp", server.port());

    let mut o = opts(url.clone(), Some(&ca.pem));
    o.proxy = Some(format!("http://127.0.0.1:{}", proxy.port()));
    let report = probe(&o).await;
    assert_verdict(&report, Reason::ProxyReSigned);
    contains(
        &step(&report, Step::TlsHandshake).message,
        &[
            "re-signs TLS",
            "\"CN=Corp Proxy CA\"",
            "direct connection shows \"CN=Test CA\"",
            "add the proxy's CA certificate",
        ],
    );
    let comparison = report.tls.as_ref().unwrap().proxy.as_ref().unwrap();
    assert_eq!(comparison.resigned, Some(true));
    assert_eq!(comparison.proxy_issuer, "CN=Corp Proxy CA");
    assert!(step(&report, Step::ProxyConnect).ok);

    // With the proxy's CA in the bundle: Ok, with a note that the proxy re-signs.
    let both = format!("{}{}", ca.pem, proxy_ca.pem);
    o.ca_bundle_pem = Some(both.into_bytes());
    let report = probe(&o).await;
    assert_verdict(&report, Reason::Ok);
    let tls_step = step(&report, Step::TlsHandshake);
    assert!(
        tls_step
            .notes
            .iter()
            .any(|n| n.contains("re-signs TLS") && n.contains("CN=Corp Proxy CA")),
        "{tls_step:#?}"
    );
    assert_eq!(
        report.mcp.as_ref().unwrap().server_name.as_deref(),
        Some("test-mcp")
    );

    // Step 12 (text): every step name of a full run through a proxy.
    let text = render_text(&report);
    for s in [
        Step::Dns,
        Step::Tcp,
        Step::ProxyConnect,
        Step::TlsHandshake,
        Step::Http,
    ] {
        contains(&text, &[&format!("[ok]   {}", s.title())]);
    }
    contains(&text, &["verdict: Ok (exit code 0)", "#0 CN=mcp-server"]);
}

#[tokio::test]
async fn mitm_proxy_without_direct_route_is_unknown_authority_with_a_hint() {
    let ca = TestCa::new("Test CA");
    let proxy_ca = Arc::new(TestCa::new("Corp Proxy CA"));
    let server = mcp_server(&ca, &["localhost", "127.0.0.1"]).await;
    let proxy = mitm_proxy_to(proxy_ca, ca.pem.clone(), Some(server.addr)).await;
    // Only the proxy reaches this address (nothing listens on it locally).
    let unreachable = closed_port().await;
    let mut o = opts(
        format!("https://127.0.0.1:{unreachable}/mcp"),
        Some(&ca.pem),
    );
    o.proxy = Some(format!("http://127.0.0.1:{}", proxy.port()));
    let report = probe(&o).await;
    assert_verdict(&report, Reason::UnknownAuthority);
    contains(
        &step(&report, Step::TlsHandshake).message,
        &[
            "chain ends at \"CN=Corp Proxy CA\"",
            "could not compare with a direct connection",
            "if the proxy intercepts TLS, \"CN=Corp Proxy CA\" is its CA",
        ],
    );
    let comparison = report.tls.as_ref().unwrap().proxy.as_ref().unwrap();
    assert_eq!(comparison.resigned, None);
    assert!(comparison.direct_error.is_some());
}

#[tokio::test]
async fn tunnelling_proxy_is_ok_and_not_resigned() {
    let ca = TestCa::new("Test CA");
    let server = mcp_server(&ca, &["localhost", "127.0.0.1"]).await;
    let proxy = tunnel_proxy().await;
    let mut o = opts(
        format!("https://localhost:{}/mcp", server.port()),
        Some(&ca.pem),
    );
    o.proxy = Some(format!("127.0.0.1:{}", proxy.port()));
    let report = probe(&o).await;
    assert_verdict(&report, Reason::Ok);
    assert_eq!(
        report.proxy.as_deref(),
        Some(&*format!("http://127.0.0.1:{}", proxy.port()))
    );
    assert_eq!(
        report
            .tls
            .as_ref()
            .unwrap()
            .proxy
            .as_ref()
            .unwrap()
            .resigned,
        Some(false)
    );
    contains(
        &step(&report, Step::Dns).message,
        &["the proxy resolves localhost itself"],
    );
}

#[tokio::test]
async fn refusing_proxy_is_proxy_connect_failed() {
    let proxy = refusing_proxy().await;
    let mut o = opts("https://mcp.example.com/mcp".to_owned(), None);
    o.proxy = Some(format!("http://127.0.0.1:{}", proxy.port()));
    let report = probe(&o).await;
    assert_verdict(&report, Reason::ProxyConnectFailed);
    contains(
        &step(&report, Step::ProxyConnect).message,
        &["403 Forbidden", "CONNECT mcp.example.com:443", "allow-list"],
    );
    assert_eq!(report.exit_code, 3);
}

// 8
#[tokio::test]
async fn https_to_http_redirect_is_scheme_downgrade() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.server_leaf(&["localhost", "127.0.0.1"]);
    let server = serve(Some(server_config(&leaf, None, false)), |addr| {
        let port = addr.port();
        handler(move |req| async move {
            if req.uri().path() == "/mcp" {
                let mut r = full(307, "text/html", "");
                r.headers_mut().insert(
                    "location",
                    format!("http://127.0.0.1:{port}/mcp/").parse().unwrap(),
                );
                r
            } else {
                full(404, "text/plain", "nope")
            }
        })
    })
    .await;
    let port = server.port();
    let report = probe(&opts(
        format!("https://127.0.0.1:{port}/mcp"),
        Some(&ca.pem),
    ))
    .await;
    assert_verdict(&report, Reason::SchemeDowngradeRedirect);
    let message = &step(&report, Step::Http).message;
    contains(
        message,
        &[
            &format!("https://127.0.0.1:{port}/mcp was redirected (307 Temporary Redirect)"),
            &format!("to http://127.0.0.1:{port}/mcp/"),
            &format!("https://127.0.0.1:{port}/mcp/"),
            "trailing slash",
        ],
    );
    assert_eq!(report.redirects.len(), 1);
    assert_eq!(report.exit_code, 8);
}

#[tokio::test]
async fn same_scheme_redirect_is_followed() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.server_leaf(&["localhost"]);
    let mcp = streamable_mcp(Answer::Json);
    let server = serve(Some(server_config(&leaf, None, false)), move |_| {
        handler(move |req| {
            let mcp = mcp.clone();
            async move {
                if req.uri().path() == "/mcp" {
                    let mut r = full(308, "", "");
                    r.headers_mut().insert("location", "/mcp/".parse().unwrap());
                    r
                } else {
                    mcp(req).await
                }
            }
        })
    })
    .await;
    let report = probe(&opts(
        format!("https://localhost:{}/mcp", server.port()),
        Some(&ca.pem),
    ))
    .await;
    assert_verdict(&report, Reason::Ok);
    assert_eq!(report.redirects.len(), 1);
    assert!(report.mcp.as_ref().unwrap().url.ends_with("/mcp/"));
}

// 9
#[tokio::test]
async fn sse_endpoint_is_ok_with_endpoint() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.server_leaf(&["localhost", "127.0.0.1"]);
    let server = serve(Some(server_config(&leaf, None, false)), |_| sse_mcp()).await;
    for transport in [Transport::Sse, Transport::Auto] {
        let mut o = opts(
            format!("https://localhost:{}/sse", server.port()),
            Some(&ca.pem),
        );
        o.transport = transport;
        let report = probe(&o).await;
        assert_verdict(&report, Reason::Ok);
        let mcp = report.mcp.as_ref().expect("mcp info");
        assert_eq!(mcp.transport, Transport::Sse);
        assert_eq!(mcp.endpoint.as_deref(), Some("/messages?sessionId=abc"));
        assert_eq!(
            mcp.endpoint_url.as_deref(),
            Some(&*format!(
                "https://localhost:{}/messages?sessionId=abc",
                server.port()
            ))
        );
        assert_eq!(mcp.protocol_version.as_deref(), Some("2025-06-18"));
        assert_eq!(mcp.server_name.as_deref(), Some("test-mcp"));
        contains(
            &step(&report, Step::Http).message,
            &["endpoint /messages?sessionId=abc"],
        );
    }
}

// 10
#[tokio::test]
async fn html_page_is_not_an_mcp_endpoint() {
    let ca = TestCa::new("Test CA");
    let leaf = ca.server_leaf(&["localhost"]);
    let server = serve(Some(server_config(&leaf, None, false)), |_| html_page()).await;
    let report = probe(&opts(
        format!("https://localhost:{}/", server.port()),
        Some(&ca.pem),
    ))
    .await;
    assert_verdict(&report, Reason::NotAnMcpEndpoint);
    contains(
        &step(&report, Step::Http).message,
        &["200 OK", "text/html", "web page", "Welcome"],
    );
}

#[tokio::test]
async fn not_found_falls_back_and_is_not_an_mcp_endpoint() {
    let server = serve(None, |_| {
        handler(|_req| async { full(404, "text/plain", "404 page not found") })
    })
    .await;
    let report = probe(&opts(
        format!("http://127.0.0.1:{}/mcp", server.port()),
        None,
    ))
    .await;
    assert_verdict(&report, Reason::NotAnMcpEndpoint);
    let http = step(&report, Step::Http);
    contains(&http.message, &["404 Not Found", "text/plain"]);
    assert!(http.notes.iter().any(|n| n.contains("sse was tried too")));
}

// 11
#[tokio::test]
async fn pinned_certificate_changed_and_matching_pin() {
    let current = self_signed("pinned-server", &["localhost"]);
    let previous = self_signed("pinned-server", &["localhost"]);
    let server = serve(Some(server_config(&current, None, false)), |_| {
        streamable_mcp(Answer::Json)
    })
    .await;
    let url = format!("https://localhost:{}/mcp", server.port());

    let mut o = opts(url, None);
    o.pinned_sha256 = Some(previous.sha256.to_uppercase());
    let report = probe(&o).await;
    assert_verdict(&report, Reason::PinnedCertificateChanged);
    contains(
        &step(&report, Step::TlsHandshake).message,
        &[&previous.sha256, &current.sha256, "update the pin"],
    );

    // A matching pin trusts the self-signed certificate: Ok.
    o.pinned_sha256 = Some(format!("sha256:{}", current.sha256));
    let report = probe(&o).await;
    assert_verdict(&report, Reason::Ok);
    contains(
        report.tls.as_ref().unwrap().trusted_by.as_deref().unwrap(),
        &["pinned fingerprint", &current.sha256],
    );
    assert!(report.mcp.is_some());
}

#[tokio::test]
async fn connection_refused_and_invalid_options() {
    let port = closed_port().await;
    let report = probe(&opts(format!("https://127.0.0.1:{port}/mcp"), None)).await;
    assert_verdict(&report, Reason::ConnectionRefused);
    contains(
        &step(&report, Step::Tcp).message,
        &["refused", "nothing listens"],
    );
    assert_eq!(report.exit_code, 2);

    let report = probe(&opts("ftp://example.com/".to_owned(), None)).await;
    assert_verdict(&report, Reason::InvalidOptions);
    assert_eq!(report.steps[0].step, Step::Options);

    let mut o = opts(format!("https://127.0.0.1:{port}/"), None);
    o.pinned_sha256 = Some("not-a-fingerprint".to_owned());
    assert_verdict(&probe(&o).await, Reason::InvalidOptions);

    let mut o = opts(format!("https://127.0.0.1:{port}/"), Some("garbage"));
    o.pinned_sha256 = None;
    let report = probe(&o).await;
    assert_verdict(&report, Reason::InvalidOptions);
    contains(&report.summary, &["CA bundle"]);

    let ca = TestCa::new("Test CA");
    let c = ca.client_leaf("a");
    let other = ca.client_leaf("b");
    let mut o = opts(format!("https://127.0.0.1:{port}/"), None);
    o.client_cert_pem = Some(c.cert_pem.into_bytes());
    o.client_key_pem = Some(other.key_pem.into_bytes());
    let report = probe(&o).await;
    assert_verdict(&report, Reason::InvalidOptions);
    contains(&report.summary, &["does not belong"]);
}

// 12
#[tokio::test]
async fn text_and_json_rendering() {
    let ca = TestCa::new("Test CA");
    let server = mcp_server(&ca, &["localhost"]).await;
    let report = probe(&opts(
        format!("https://127.0.0.1:{}/mcp", server.port()),
        Some(&ca.pem),
    ))
    .await;
    assert_verdict(&report, Reason::HostnameMismatch);
    let text = render_text(&report);
    for needle in [
        "[ok]   DNS",
        "[ok]   TCP",
        "[FAIL] TLS handshake: HostnameMismatch",
        "[skip] HTTP",
        "verdict: HostnameMismatch (exit code 5)",
    ] {
        contains(&text, &[needle]);
    }

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["verdict"], "HostnameMismatch");
    assert_eq!(json["exitCode"], 5);
    assert_eq!(json["steps"][2]["step"], "TlsHandshake");
    assert_eq!(json["steps"][2]["reason"], "HostnameMismatch");
    assert!(json["steps"][0]["durationMs"].is_u64());
    let back: ProbeReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);

    for reason in Reason::ALL {
        let s = serde_json::to_string(&reason).unwrap();
        assert_eq!(s, format!("\"{}\"", reason.as_str()));
        let back: Reason = serde_json::from_str(&s).unwrap();
        assert_eq!(back, reason);
    }
    for t in [Transport::Auto, Transport::StreamableHttp, Transport::Sse] {
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            format!("\"{}\"", t.as_str())
        );
    }
}

#[tokio::test]
async fn cli_run_outputs_text_and_json_with_exit_code() {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: mcptrust::probe::ProbeArgs,
    }
    let ca = TestCa::new("Test CA");
    let server = mcp_server(&ca, &["localhost"]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let url = format!("https://localhost:{}/mcp", server.port());
    let cli = Cli::try_parse_from([
        "probe",
        url.as_str(),
        "--ca-file",
        ca_file.to_str().unwrap(),
        "--output",
        "json",
        "--proxy",
        "",
    ])
    .unwrap();
    let (out, code) = mcptrust::probe::cli::run(&cli.args).await.unwrap();
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "Ok");
    assert_eq!(v["mcp"]["serverName"], "test-mcp");

    let cli = Cli::try_parse_from(["probe", url.as_str(), "--proxy", ""]).unwrap();
    let (out, code) = mcptrust::probe::cli::run(&cli.args).await.unwrap();
    assert_eq!(code, 4);
    assert!(
        out.contains("[FAIL] TLS handshake: UnknownAuthority"),
        "{out}"
    );
}
