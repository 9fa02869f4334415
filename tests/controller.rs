//! Controller scenarios against kube's mock API service (tower-test), in the
//! `ApiServerVerifier` style of kube-rs controller-rs (the shared `tests/mock_api`): every
//! request the reconciler makes is asserted in order (method, path with field manager,
//! body), and answered as the API server would. Issued certificates are then used for a
//! real rustls mTLS handshake.

mod mock_api;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;
use k8s_openapi::api::core::v1::Secret;
use mcptrust::api::McpServer;
use mcptrust::controller::{Context, ControllerConfig, reconcile::reconcile};
use mcptrust::pki::issue::{CertificateAuthority, LeafRequest, Usage};
use mock_api::{Verifier, condition, controller_config, decode};
use serde_json::{Value, json};

/// 2026-11-21T00:00:00Z.
const NOW: i64 = 1_795_219_200;
const DAY: i64 = 86_400;
const FEDERATION_CA: &str = "/api/v1/namespaces/mcptrust/secrets/mcptrust-federation-ca";
const SERVER_TLS: &str = "/api/v1/namespaces/agents/secrets/github-server-tls";
const SOURCE_CM: &str = "/api/v1/namespaces/agents/configmaps/corp-proxy-ca";

/// A prober that records what it was asked and answers "verified" (these scenarios'
/// endpoints are cluster names; `tests/endpoint.rs` probes real servers).
#[derive(Default)]
struct StubProber {
    seen: std::sync::Mutex<Vec<mcptrust::probe::ProbeOptions>>,
}

impl mcptrust::controller::endpoint::Prober for StubProber {
    fn probe(
        &self,
        opts: mcptrust::probe::ProbeOptions,
    ) -> futures::future::BoxFuture<'_, mcptrust::probe::ProbeReport> {
        let url = opts.url.clone();
        self.seen.lock().expect("lock").push(opts);
        Box::pin(async move {
            serde_json::from_value(json!({
                "url": url, "transport": "streamable-http", "verdict": "Ok", "ok": true, "exitCode": 0,
                "summary": "verified", "steps": []
            }))
            .expect("report")
        })
    }
}

fn context(clock: i64) -> (Arc<Context>, Verifier) {
    let (ctx, api, _) = context_with_prober(clock);
    (ctx, api)
}

fn context_with_prober(clock: i64) -> (Arc<Context>, Verifier, Arc<StubProber>) {
    let config = ControllerConfig {
        ca_validity_secs: 3650 * DAY,
        ..controller_config()
    };
    let (ctx, api) = mock_api::context(config, clock);
    let prober = Arc::new(StubProber::default());
    (Arc::new(ctx.with_prober(prober.clone())), api, prober)
}

fn private_ca(cn: &str) -> CertificateAuthority {
    CertificateAuthority::generate(cn, NOW - 365 * DAY, 3650 * DAY).expect("ca")
}

fn server(spec: Value, status: Option<Value>) -> McpServer {
    let mut v = json!({
        "apiVersion": "mcptrust.io/v1alpha1",
        "kind": "McpServer",
        "metadata": {"name": "github", "namespace": "agents", "uid": "7c1e6c2e-0000-4000-8000-000000000001", "generation": 3},
        "spec": spec,
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    serde_json::from_value(v).expect("McpServer")
}

fn source_cm(pem: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "corp-proxy-ca", "namespace": "agents"},
           "data": {"ca.crt": pem}})
}

fn secret_json(s: &Secret) -> Value {
    serde_json::to_value(s).expect("secret")
}

fn ca_secret(ca: &CertificateAuthority) -> Value {
    let config = ControllerConfig {
        default_config_map: String::new(),
        ..controller_config()
    };
    let s = mcptrust::controller::build_ca_secret(&config, ca);
    secret_json(&s)
}

fn leaf_info(pem: &[u8]) -> (Vec<String>, Vec<String>, String) {
    let der = mcptrust::pki::parse_pem_certificates("test", pem).expect("pem");
    let (_, cert) = x509_parser::parse_x509_certificate(&der[0]).expect("x509");
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                    ips.push(format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]))
                }
                _ => {}
            }
        }
    }
    let eku = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .map(|e| {
            if e.value.server_auth {
                "serverAuth"
            } else if e.value.client_auth {
                "clientAuth"
            } else {
                ""
            }
        })
        .unwrap_or("")
        .to_string();
    (dns, ips, eku)
}

fn mtls_spec() -> Value {
    json!({
        "transport": "streamable-http",
        "endpoint": {"url": "https://github-mcp.agents.svc:8443/mcp/"},
        "podSelector": {"matchLabels": {"app": "github-mcp"}},
        "trust": {"includeSystemRoots": false, "sources": [{"configMap": {"name": "corp-proxy-ca", "key": "ca.crt"}}]},
        "mtls": {"server": {"ipAddresses": ["127.0.0.1"]}, "clients": [{"name": "mcpgateway", "namespace": "gateway"}],
                 "duration": "2160h", "renewBefore": "720h"}
    })
}

#[tokio::test]
async fn new_mcpserver_gets_bundle_ca_certificates_and_status() {
    let (ctx, mut api, prober) = context_with_prober(NOW);
    let corp = private_ca("Corp Proxy CA");
    let obj = Arc::new(server(mtls_spec(), None));
    let task = tokio::spawn(reconcile(obj, ctx.clone()));

    api.expect(Method::GET, SOURCE_CM, &[])
        .await
        .ok(&source_cm(&corp.cert_pem));

    // The ConfigMap shared by the McpServers of the namespace with this trust: named
    // after the trust's ingredients, owned by none of them.
    let cm_name = mcptrust::api::trust_config_map_name(&server(mtls_spec(), None));
    let cm = api
        .expect(
            Method::PATCH,
            &format!("/api/v1/namespaces/agents/configmaps/{cm_name}"),
            &["fieldManager=mcptrust-trust", "force=true"],
        )
        .await;
    assert_eq!(cm.body["kind"], "ConfigMap");
    assert!(cm.body["metadata"].get("ownerReferences").is_none());
    assert_eq!(
        cm.body["metadata"]["labels"]["mcptrust.io/trust-key"],
        cm_name.trim_start_matches("mcptrust-trust-")
    );
    assert_eq!(
        cm.body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "mcptrust"
    );
    let ca_pem = cm.body["data"]["ca.pem"]
        .as_str()
        .expect("ca.pem")
        .to_string();
    assert_eq!(ca_pem.trim(), corp.cert_pem.trim());
    assert_eq!(
        cm.body["data"]["ca-bundle.pem"], cm.body["data"]["ca.pem"],
        "no system roots requested"
    );
    let bundle_sha = cm.body["metadata"]["annotations"]["mcptrust.io/trust-bundle-sha256"]
        .as_str()
        .expect("sha")
        .to_string();
    assert_eq!(bundle_sha, mcptrust::pki::sha256_hex(ca_pem.as_bytes()));
    // The Java truststore: binaryData, its own sha256 annotation, the same certificate.
    use base64::Engine as _;
    let p12 = base64::engine::general_purpose::STANDARD
        .decode(
            cm.body["binaryData"]["ca-bundle.p12"]
                .as_str()
                .expect("binaryData ca-bundle.p12"),
        )
        .expect("base64");
    assert_eq!(
        cm.body["metadata"]["annotations"]["mcptrust.io/truststore-sha256"],
        mcptrust::pki::sha256_hex(&p12)
    );
    let store = p12_keystore::KeyStore::from_pkcs12(
        &p12,
        mcptrust::pki::TRUSTSTORE_PASSWORD,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .expect("PKCS#12");
    assert_eq!(store.entries_len(), 1, "one trusted certificate entry");
    cm.echo();

    // The federation CA: absent, so created once.
    api.expect(Method::GET, FEDERATION_CA, &[])
        .await
        .not_found();
    let created = api
        .expect(Method::POST, "/api/v1/namespaces/mcptrust/secrets", &[])
        .await;
    assert_eq!(created.body["type"], "kubernetes.io/tls");
    let fed_ca_pem = String::from_utf8(decode(&created.body, "tls.crt")).expect("utf8");
    assert!(!decode(&created.body, "tls.key").is_empty());
    created.created();

    // Server certificate.
    api.expect(Method::GET, SERVER_TLS, &[]).await.not_found();
    // A new Secret is created (POST: cheaper for the API server than an apply), with the
    // field manager; renewals are applies.
    let srv = api
        .expect(
            Method::POST,
            "/api/v1/namespaces/agents/secrets",
            &["fieldManager=mcptrust-certificates"],
        )
        .await;
    assert_eq!(srv.body["metadata"]["name"], "github-server-tls");
    assert_eq!(srv.body["type"], "kubernetes.io/tls");
    assert_eq!(srv.body["metadata"]["ownerReferences"][0]["name"], "github");
    let (dns, ips, eku) = leaf_info(&decode(&srv.body, "tls.crt"));
    for want in [
        "github-mcp",
        "github-mcp.agents",
        "github-mcp.agents.svc",
        "github-mcp.agents.svc.cluster.local",
    ] {
        assert!(dns.contains(&want.to_string()), "{want} not in {dns:?}");
    }
    assert_eq!(ips, vec!["127.0.0.1".to_string()]);
    assert_eq!(eku, "serverAuth");
    assert_eq!(
        String::from_utf8(decode(&srv.body, "ca.crt")).expect("utf8"),
        fed_ca_pem
    );
    let server_secret = srv.body.clone();
    srv.echo();
    let (_, reason, note) = api.expect_event("agents").await;
    assert_eq!(reason, "Issued");
    assert!(
        note.contains("DoesNotExist") && note.contains("agents/github-server-tls"),
        "{note}"
    );
    assert!(!note.contains("PRIVATE KEY"));

    // Client certificate in the gateway's namespace: no owner reference (cross-namespace).
    api.expect(
        Method::GET,
        "/api/v1/namespaces/gateway/secrets/github-agents-mcpgateway-client-tls",
        &[],
    )
    .await
    .not_found();
    let cli = api
        .expect(
            Method::POST,
            "/api/v1/namespaces/gateway/secrets",
            &["fieldManager=mcptrust-certificates"],
        )
        .await;
    assert_eq!(
        cli.body["metadata"]["name"],
        "github-agents-mcpgateway-client-tls"
    );
    assert!(cli.body["metadata"].get("ownerReferences").is_none());
    assert_eq!(
        cli.body["metadata"]["labels"]["mcptrust.io/mcpserver-namespace"],
        "agents"
    );
    let (_, _, eku) = leaf_info(&decode(&cli.body, "tls.crt"));
    assert_eq!(eku, "clientAuth");
    let client_secret = cli.body.clone();
    cli.echo();
    assert_eq!(api.expect_event("agents").await.1, "Issued");

    // One status apply.
    let st = api.expect_status_apply("agents", "github").await;
    let status = &st.body["status"];
    let status_seen = Some(status.clone());
    assert_eq!(st.body["kind"], "McpServer");
    assert_eq!(status["observedGeneration"], 3);
    for t in ["TrustBundleReady", "CertificatesReady", "Ready"] {
        let c = condition(status, t);
        assert_eq!(c["status"], "True", "{t}: {c}");
        assert_eq!(c["observedGeneration"], 3);
        assert!(c["lastTransitionTime"].is_string());
    }
    assert!(
        condition(status, "TrustBundleReady")["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&cm_name)
    );
    assert_eq!(status["trustBundle"]["sha256"], bundle_sha.as_str());
    assert_eq!(status["trustBundle"]["certificates"], 1);
    assert_eq!(
        status["serverCertificate"]["secretName"],
        "github-server-tls"
    );
    assert_eq!(
        status["serverCertificate"]["renewalTime"], "2027-01-20T00:00:00Z",
        "notAfter - 720h"
    );
    assert_eq!(status["clientCertificates"][0]["namespace"], "gateway");
    st.status_ok();

    let action = task.await.expect("join").expect("reconcile");
    assert!(
        format!("{action:?}").contains("requeue_after"),
        "{action:?}"
    );

    // The endpoint was probed as the gateway would: its client certificate attached and the
    // federation CA trusted besides the bundle.
    {
        let seen = prober.seen.lock().expect("lock");
        assert_eq!(seen.len(), 1);
        let opts = &seen[0];
        assert_eq!(opts.url, "https://github-mcp.agents.svc:8443/mcp/");
        assert_eq!(
            opts.client_cert_pem.as_deref(),
            Some(decode(&client_secret, "tls.crt").as_slice())
        );
        let bundle = String::from_utf8(opts.ca_bundle_pem.clone().expect("bundle")).expect("utf8");
        assert!(bundle.contains(corp.cert_pem.trim()) && bundle.contains(fed_ca_pem.trim()));
    }
    assert_eq!(
        condition(status_seen.as_ref().expect("status"), "EndpointVerified")["reason"],
        "Verified"
    );

    // What the reconcile recorded, rendered by the operator's registry: the issuances, the
    // certificates' series with the times of the status, the conditions and the probe.
    let registry = mcptrust::metrics::Metrics::new();
    registry.register_with(|r| ctx.metrics.register(r));
    let text = registry.encode();
    for line in [
        r#"mcptrust_certificate_issuances_total{role="server",reason="DoesNotExist"} 1"#,
        r#"mcptrust_certificate_issuances_total{role="client",reason="DoesNotExist"} 1"#,
        r#"mcptrust_certificate_renewal_timestamp_seconds{namespace="agents",name="github",role="server",secret="github-server-tls",secret_namespace="agents"} 1800403200"#,
        r#"mcptrust_certificate_expiration_timestamp_seconds{namespace="agents",name="github",role="server",secret="github-server-tls",secret_namespace="agents"} 1802995200"#,
        r#"mcptrust_mcpserver_status_condition{namespace="agents",name="github",type="Ready",status="True"} 1"#,
        r#"mcptrust_mcpserver_status_condition{namespace="agents",name="github",type="Ready",status="False"} 0"#,
        r#"mcptrust_trust_bundle_certificates{namespace="agents",name="github"} 1"#,
        r#"mcptrust_endpoint_probe_result{namespace="agents",name="github",reason="Verified"} 1"#,
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    for prefix in [
        r#"mcptrust_certificate_expiration_timestamp_seconds{namespace="agents",name="github",role="client",secret="github-agents-mcpgateway-client-tls",secret_namespace="gateway"} "#,
        r#"mcptrust_trust_bundle_private_ca_expiration_timestamp_seconds{namespace="agents",name="github"} "#,
        r#"mcptrust_endpoint_probe_duration_seconds{namespace="agents",name="github"} "#,
        "mcptrust_federation_ca_expiration_timestamp_seconds ",
    ] {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix}\n{text}"));
        assert!(
            value.parse::<f64>().is_ok_and(|v| v > 0.0),
            "{prefix}{value}"
        );
    }

    // The test's own Context (and its client) gone, the mock saw every request.
    drop(ctx);
    api.expect_done().await;

    mtls_handshake(&server_secret, &client_secret).await;
}

/// A real rustls mTLS handshake on 127.0.0.1 between the server Secret and the client
/// Secret the controller wrote, dialled by name and by IP.
async fn mtls_handshake(server_secret: &Value, client_secret: &Value) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = |pem: &[u8]| -> Vec<CertificateDer<'static>> {
        mcptrust::pki::parse_pem_certificates("t", pem).expect("certs")
    };
    let key =
        |pem: &[u8]| -> PrivateKeyDer<'static> { PrivateKeyDer::from_pem_slice(pem).expect("key") };
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&decode(server_secret, "ca.crt")) {
        roots.add(c).expect("root");
    }
    let roots = Arc::new(roots);
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(
            certs(&decode(server_secret, "tls.crt")),
            key(&decode(server_secret, "tls.key")),
        )
        .expect("server config");
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            certs(&decode(client_secret, "tls.crt")),
            key(&decode(client_secret, "tls.key")),
        )
        .expect("client config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
    for name in ["github-mcp.agents.svc", "127.0.0.1"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = acceptor.clone();
        let srv = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("server handshake");
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.len())
                .unwrap_or(0);
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.expect("read");
            tls.write_all(b"pong").await.expect("write");
            tls.shutdown().await.ok();
            (peer, buf)
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let sn = ServerName::try_from(name.to_string()).expect("name");
        let mut tls = connector.connect(sn, tcp).await.expect("client handshake");
        tls.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"pong");
        let (peer, got) = srv.await.expect("server");
        assert_eq!(peer, 1, "the server saw the client certificate");
        assert_eq!(&got, b"ping");
    }
}

#[tokio::test]
async fn missing_source_is_a_condition_not_an_error() {
    let (ctx, mut api) = context(NOW);
    let spec = json!({"transport": "stdio", "trust": {"includeSystemRoots": false, "sources": [{"configMap": {"name": "corp-proxy-ca"}}]}});
    let task = tokio::spawn(reconcile(Arc::new(server(spec, None)), ctx));
    api.expect(Method::GET, SOURCE_CM, &[]).await.not_found();
    let (_, reason, note) = api.expect_event("agents").await;
    assert_eq!(reason, "SourceNotFound");
    assert!(note.contains("ConfigMap agents/corp-proxy-ca"), "{note}");
    let st = api.expect_status_apply("agents", "github").await;
    let c = condition(&st.body["status"], "TrustBundleReady");
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "SourceNotFound");
    assert!(
        c["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.trust.sources[0]"),
        "{c}"
    );
    let ready = condition(&st.body["status"], "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "SourceNotFound");
    assert!(st.body["status"].get("trustBundle").is_none());
    st.status_ok();
    let action = task.await.expect("join").expect("reconcile");
    api.expect_done().await;
    assert!(
        format!("{action:?}").contains("60s"),
        "retry soon: {action:?}"
    );
}

#[tokio::test]
async fn missing_key_names_the_keys_present() {
    let (ctx, mut api) = context(NOW);
    let spec = json!({"transport": "stdio", "trust": {"includeSystemRoots": false, "sources": [{"secret": {"name": "proxy-ca", "key": "ca.pem"}}]}});
    let task = tokio::spawn(reconcile(Arc::new(server(spec, None)), ctx));
    api.expect(Method::GET, "/api/v1/namespaces/agents/secrets/proxy-ca", &[])
        .await
        .ok(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "proxy-ca", "namespace": "agents"}, "data": {"ca.crt": "Zm9v"}}));
    let (_, _, note) = api.expect_event("agents").await;
    assert!(
        note.contains("has no key \"ca.pem\"") && note.contains("ca.crt"),
        "{note}"
    );
    api.expect_status("agents", "github").await;
    task.await.expect("join").expect("reconcile");
    api.expect_done().await;
}

/// A Secret holding a certificate for the server, as the controller wrote it earlier.
fn issued_secret(
    ca: &CertificateAuthority,
    name: &str,
    issued_at: i64,
    dns_extra: Option<&str>,
) -> Value {
    let (mut dns, ips) = mcptrust::pki::issue::server_sans(
        "github",
        "agents",
        Some("https://github-mcp.agents.svc:8443/mcp/"),
        None,
    );
    if let Some(d) = dns_extra {
        dns.push(d.to_string());
    }
    let req = LeafRequest {
        common_name: dns[0].clone(),
        dns_names: dns,
        ip_addresses: ips,
        usage: Usage::Server,
        duration_secs: 90 * DAY,
    };
    let issued = mcptrust::pki::issue::issue(ca, &req, issued_at).expect("issue");
    let s = mcptrust::controller::build::tls_secret(name, "agents", BTreeMap::new(), None, &issued);
    secret_json(&s)
}

fn server_only_spec() -> Value {
    json!({
        "endpoint": {"url": "https://github-mcp.agents.svc:8443/mcp/"},
        "trust": {"includeSystemRoots": false, "sources": [{"configMap": {"name": "corp-proxy-ca"}}]},
        "mtls": {}
    })
}

/// The source ConfigMap read (holding `corp`) and the trust ConfigMap apply.
async fn expect_bundle(api: &mut Verifier, corp: &CertificateAuthority) {
    api.expect(Method::GET, SOURCE_CM, &[])
        .await
        .ok(&source_cm(&corp.cert_pem));
    api.expect_trust("agents", "github").await;
}

/// [`expect_bundle`], then the reads of the federation CA (`fed`) and of the server
/// certificate Secret (`secret`, or absent).
async fn expect_bundle_ca_and_secret(
    api: &mut Verifier,
    corp: &CertificateAuthority,
    fed: &CertificateAuthority,
    secret: Option<&Value>,
) {
    expect_bundle(api, corp).await;
    api.expect(Method::GET, FEDERATION_CA, &[])
        .await
        .ok(&ca_secret(fed));
    let get = api.expect(Method::GET, SERVER_TLS, &[]).await;
    match secret {
        Some(s) => get.ok(s),
        None => get.not_found(),
    }
}

async fn certificate_scenario(
    secret: Option<Value>,
    fed: &CertificateAuthority,
    now: i64,
    want_reason: &str,
) -> Value {
    certificate_scenario_of(
        server(server_only_spec(), None),
        secret,
        fed,
        now,
        want_reason,
    )
    .await
}

/// [`certificate_scenario`] for a given McpServer.
async fn certificate_scenario_of(
    mcpserver: McpServer,
    secret: Option<Value>,
    fed: &CertificateAuthority,
    now: i64,
    want_reason: &str,
) -> Value {
    let (ctx, mut api) = context(now);
    let corp = private_ca("Corp Proxy CA");
    let task = tokio::spawn(reconcile(Arc::new(mcpserver), ctx));
    expect_bundle_ca_and_secret(&mut api, &corp, fed, secret.as_ref()).await;
    let patch = api
        .expect(
            Method::PATCH,
            SERVER_TLS,
            &["fieldManager=mcptrust-certificates"],
        )
        .await;
    let written = patch.body.clone();
    patch.echo();
    let (_, _, note) = api.expect_event("agents").await;
    assert!(note.contains(want_reason), "{want_reason} not in {note}");
    api.expect_status("agents", "github").await;
    task.await.expect("join").expect("reconcile");
    api.expect_done().await;
    written
}

#[tokio::test]
async fn renewal_that_is_due() {
    let fed = private_ca("mcptrust federation CA");
    // Issued 61 days ago for 90 days with renewBefore 30 days (a third): due now.
    let old = issued_secret(&fed, "github-server-tls", NOW - 61 * DAY, None);
    let written = certificate_scenario(Some(old.clone()), &fed, NOW, "Renewing").await;
    assert_ne!(
        written["data"]["tls.crt"], old["data"]["tls.crt"],
        "a new certificate"
    );
    assert_ne!(
        written["data"]["tls.key"], old["data"]["tls.key"],
        "with a new key"
    );
}

#[tokio::test]
async fn corrupt_secret_is_reissued() {
    let fed = private_ca("mcptrust federation CA");
    let mut corrupt = issued_secret(&fed, "github-server-tls", NOW - DAY, None);
    let other = issued_secret(&fed, "x", NOW - DAY, None);
    corrupt["data"]["tls.key"] = other["data"]["tls.key"].clone();
    certificate_scenario(Some(corrupt), &fed, NOW, "InvalidKeyPair").await;

    let mut missing = issued_secret(&fed, "github-server-tls", NOW - DAY, None);
    missing["data"]
        .as_object_mut()
        .expect("data")
        .remove("ca.crt");
    certificate_scenario(Some(missing), &fed, NOW, "MissingData").await;

    let foreign = private_ca("Some Other CA");
    certificate_scenario(
        Some(issued_secret(
            &foreign,
            "github-server-tls",
            NOW - DAY,
            None,
        )),
        &fed,
        NOW,
        "IncorrectIssuer",
    )
    .await;

    let changed = issued_secret(
        &fed,
        "github-server-tls",
        NOW - DAY,
        Some("old-name.example.com"),
    );
    certificate_scenario(Some(changed), &fed, NOW, "RequestChanged").await;
}

#[tokio::test]
async fn valid_certificate_is_kept_and_unchanged_status_is_not_written() {
    let fed = private_ca("mcptrust federation CA");
    let corp = private_ca("Corp Proxy CA");
    let current = issued_secret(&fed, "github-server-tls", NOW - DAY, None);

    // First pass: learn the status the controller computes.
    let (ctx, mut api) = context(NOW);
    let task = tokio::spawn(reconcile(Arc::new(server(server_only_spec(), None)), ctx));
    expect_bundle_ca_and_secret(&mut api, &corp, &fed, Some(&current)).await;
    let status = api.expect_status("agents", "github").await;
    task.await.expect("join").expect("reconcile");
    api.expect_done().await;
    assert_eq!(condition(&status, "CertificatesReady")["status"], "True");

    // Second pass a minute later (no probe due), with that status: nothing to write but the (idempotent) apply of
    // the trust ConfigMap; no Secret write, no event, no status write.
    let (ctx, mut api) = context(NOW + 60);
    let task = tokio::spawn(reconcile(
        Arc::new(server(server_only_spec(), Some(status.clone()))),
        ctx,
    ));
    expect_bundle_ca_and_secret(&mut api, &corp, &fed, Some(&current)).await;
    task.await.expect("join").expect("reconcile");
    // The reconciler is done and dropped its client: no further request was made (no
    // status write when nothing changed).
    api.expect_done().await;
}

/// `mcptrust renew`'s annotation re-issues a valid certificate once (reason
/// `ManuallyTriggered`) and is recorded on the Secret; a Secret that already answers the
/// request is kept.
#[tokio::test]
async fn renew_annotation_is_honoured_once() {
    let fed = private_ca("mcptrust federation CA");
    let corp = private_ca("Corp Proxy CA");
    let current = issued_secret(&fed, "github-server-tls", NOW - DAY, None);
    let requested = |value: &str| {
        let mut s = server(server_only_spec(), None);
        s.metadata.annotations = Some(BTreeMap::from([(
            mcptrust::api::ANNOTATION_RENEW_REQUESTED.to_string(),
            value.to_string(),
        )]));
        s
    };

    // A new request: the valid certificate is replaced (a `Renewed` Event names
    // ManuallyTriggered), and the Secret names the request.
    let written = certificate_scenario_of(
        requested("r1"),
        Some(current.clone()),
        &fed,
        NOW,
        "ManuallyTriggered",
    )
    .await;
    assert_ne!(written["data"]["tls.crt"], current["data"]["tls.crt"]);
    assert_eq!(
        written["metadata"]["annotations"][mcptrust::api::ANNOTATION_RENEWED_FOR],
        "r1"
    );

    // The same request again, against the Secret it produced: kept, no write, no event.
    let (ctx, mut api) = context(NOW + 60);
    let task = tokio::spawn(reconcile(Arc::new(requested("r1")), ctx));
    expect_bundle_ca_and_secret(&mut api, &corp, &fed, Some(&written)).await;
    let status = api.expect_status("agents", "github").await;
    task.await.expect("join").expect("reconcile");
    assert_eq!(condition(&status, "CertificatesReady")["status"], "True");
    api.expect_done().await;
}

#[tokio::test]
async fn rotation_rolls_selected_workloads() {
    let corp = private_ca("Corp Proxy CA");
    let spec = json!({
        "transport": "stdio",
        "podSelector": {"matchLabels": {"app": "github-mcp"}},
        "trust": {"includeSystemRoots": false, "sources": [{"configMap": {"name": "corp-proxy-ca"}}]},
        "rotation": {"strategy": "RollingRestart"}
    });
    // The status remembers an older bundle.
    let cm_name = mcptrust::api::trust_config_map_name(&server(spec.clone(), None));
    let old_status = json!({"trustBundle": {"configMapName": cm_name, "sha256": "00".repeat(32), "certificates": 1}});
    let (ctx, mut api) = context(NOW);
    let task = tokio::spawn(reconcile(Arc::new(server(spec, Some(old_status))), ctx));
    expect_bundle(&mut api, &corp).await;
    // The status (which names the new bundle) is written before any workload is rolled.
    let st = api.expect_status_apply("agents", "github").await;
    assert_ne!(st.body["status"]["trustBundle"]["sha256"], "00".repeat(32));
    st.status_ok();
    let deployment = |name: &str, app: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "agents"},
               "spec": {"selector": {"matchLabels": {"app": app}},
                        "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    };
    api.expect(Method::GET, "/apis/apps/v1/namespaces/agents/deployments", &[])
        .await
        .ok(&json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {},
                     "items": [deployment("github-mcp", "github-mcp"), deployment("unrelated", "web")]}));
    let roll = api
        .expect(
            Method::PATCH,
            "/apis/apps/v1/namespaces/agents/deployments/github-mcp",
            &["fieldManager=mcptrust-rotation", "force=true"],
        )
        .await;
    let hash =
        roll.body["spec"]["template"]["metadata"]["annotations"]["mcptrust.io/rotation-hash"]
            .as_str()
            .expect("hash")
            .to_string();
    assert_eq!(hash.len(), 16);
    assert_eq!(roll.body["kind"], "Deployment");
    roll.ok(&deployment("github-mcp", "github-mcp"));
    let (_, reason, note) = api.expect_event("agents").await;
    assert_eq!(reason, "RollingRestart");
    assert!(note.contains("Deployment/github-mcp"), "{note}");
    api.expect(
        Method::GET,
        "/apis/apps/v1/namespaces/agents/statefulsets",
        &[],
    )
    .await
    .ok(&json!({"apiVersion": "apps/v1", "kind": "StatefulSetList", "metadata": {}, "items": []}));
    api.expect(
        Method::GET,
        "/apis/apps/v1/namespaces/agents/daemonsets",
        &[],
    )
    .await
    .ok(&json!({"apiVersion": "apps/v1", "kind": "DaemonSetList", "metadata": {}, "items": []}));
    task.await.expect("join").expect("reconcile");
    api.expect_done().await;
}

/// A reconcile of `github` (mTLS, no clients, one private trust source) started, its
/// bundle's source read; returns the federation CA to answer with, the API, the task.
async fn reconcile_server_without_clients() -> (
    CertificateAuthority,
    Verifier,
    tokio::task::JoinHandle<mcptrust::controller::Result<kube::runtime::controller::Action>>,
) {
    let fed = private_ca("mcptrust federation CA");
    let (ctx, mut api) = context(NOW);
    let spec = json!({"endpoint": {"url": "https://github-mcp.agents.svc/mcp"}, "trust": {"includeSystemRoots": false, "sources": [{"configMap": {"name": "corp-proxy-ca"}}]}, "mtls": {}});
    let task = tokio::spawn(reconcile(Arc::new(server(spec, None)), ctx));
    expect_bundle(&mut api, &private_ca("Corp Proxy CA")).await;
    (fed, api, task)
}

#[tokio::test]
async fn federation_ca_race_reads_the_winner() {
    let (fed, mut api, task) = reconcile_server_without_clients().await;
    api.expect(Method::GET, FEDERATION_CA, &[])
        .await
        .not_found();
    api.expect(Method::POST, "/api/v1/namespaces/mcptrust/secrets", &[])
        .await
        .conflict(
            "AlreadyExists",
            "secrets \"mcptrust-federation-ca\" already exists",
        );
    api.expect(Method::GET, FEDERATION_CA, &[])
        .await
        .ok(&ca_secret(&fed));
    api.expect(Method::GET, SERVER_TLS, &[]).await.not_found();
    let srv = api
        .expect(Method::POST, "/api/v1/namespaces/agents/secrets", &[])
        .await;
    assert_eq!(
        String::from_utf8(decode(&srv.body, "ca.crt")).expect("utf8"),
        fed.cert_pem,
        "signed by the winner's CA"
    );
    srv.echo();
    api.expect_event("agents").await;
    api.expect_status("agents", "github").await;
    task.await.expect("join").expect("reconcile");
    api.expect_done().await;
}

/// A TLS Secret that appears between the GET (404) and the create (409 AlreadyExists) is
/// then applied, and the reconcile goes on.
#[tokio::test]
async fn secret_created_meanwhile_is_applied() {
    let (fed, mut api, task) = reconcile_server_without_clients().await;
    api.expect(Method::GET, FEDERATION_CA, &[])
        .await
        .ok(&ca_secret(&fed));
    api.expect(Method::GET, SERVER_TLS, &[]).await.not_found();
    api.expect(
        Method::POST,
        "/api/v1/namespaces/agents/secrets",
        &["fieldManager=mcptrust-certificates"],
    )
    .await
    .conflict(
        "AlreadyExists",
        "secrets \"github-server-tls\" already exists",
    );
    let srv = api
        .expect(
            Method::PATCH,
            SERVER_TLS,
            &["fieldManager=mcptrust-certificates", "force=true"],
        )
        .await;
    assert_eq!(srv.body["metadata"]["name"], "github-server-tls");
    srv.echo();
    assert_eq!(api.expect_event("agents").await.1, "Issued");
    api.expect_status("agents", "github").await;
    task.await.expect("join").expect("reconcile");
    api.expect_done().await;
}

#[tokio::test]
async fn opted_in_namespace_gets_the_default_bundle() {
    let proxy_ca = private_ca("OpenShell Proxy CA");
    let config = ControllerConfig {
        default_cas_pem: proxy_ca.cert_pem.clone(),
        default_include_system_roots: true,
        ..controller_config()
    };
    let (ctx, mut api) = mock_api::context(config, NOW);
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "sandboxes", "labels": {"mcptrust.io/injection": "enabled"}}
    }))
    .expect("ns");
    let task = tokio::spawn(mcptrust::controller::namespaces::reconcile(
        Arc::new(ns),
        Arc::new(ctx),
    ));
    let cm = api
        .expect(
            Method::PATCH,
            "/api/v1/namespaces/sandboxes/configmaps/mcptrust-trust",
            &["fieldManager=mcptrust-trust", "force=true"],
        )
        .await;
    assert_eq!(
        cm.body["data"]["ca.pem"].as_str().map(str::trim),
        Some(proxy_ca.cert_pem.trim())
    );
    let bundle = cm.body["data"]["ca-bundle.pem"].as_str().expect("bundle");
    let roots = mcptrust::pki::system_roots().len();
    assert_eq!(
        bundle.matches("BEGIN CERTIFICATE").count(),
        roots + 1,
        "Mozilla roots plus the proxy CA"
    );
    assert!(
        bundle.trim_end().ends_with(proxy_ca.cert_pem.trim()),
        "private CAs after the roots"
    );
    cm.echo();
    task.await.expect("join").expect("reconcile");
    api.expect_done().await;
}
