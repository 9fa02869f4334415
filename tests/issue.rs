//! Certificate issuance and the renewal decision against real certificates: the CA and
//! leaves come from `mcptrust::pki::issue`, are parsed with x509-parser, verified with
//! rustls' webpki verifiers and used in a real mutual-TLS handshake on 127.0.0.1. Every
//! check runs at a fixed "now" (rustls gets a fixed `TimeProvider`), never the wall clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use mcptrust::api::{MtlsSpec, ServerCertSpec};
use mcptrust::pki::{
    CA_CRT, CertificateAuthority, Decision, IssueError, IssueReason, IssuedCertificate,
    LeafRequest, SECRET_TYPE, TLS_CRT, TLS_KEY, Usage, client_request, decide, decoded_secret_data,
    durations, issue, parse_pem_certificates, secret_data, server_request, server_sans,
    verify_self_signed,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256,
};
use x509_parser::prelude::{FromDer as _, X509Certificate};

#[path = "common/skip.rs"]
mod skip;

/// 2027-01-15T08:00:00Z: the fixed "now" of every test.
const NOW: i64 = 1_800_000_000;
const YEAR: i64 = 365 * 86_400;
const H: i64 = 3600;
const CA_CN: &str = "mcptrust federation CA";

fn new_ca() -> CertificateAuthority {
    CertificateAuthority::generate(CA_CN, NOW, 10 * YEAR).expect("CA")
}

fn server_req() -> LeafRequest {
    LeafRequest {
        common_name: "github-mcp.agents.svc".into(),
        dns_names: vec![
            "github-mcp".into(),
            "github-mcp.agents".into(),
            "github-mcp.agents.svc".into(),
            "github-mcp.agents.svc.cluster.local".into(),
        ],
        ip_addresses: vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
        usage: Usage::Server,
        duration_secs: 2160 * H,
    }
}

fn client_req(name: &str) -> LeafRequest {
    LeafRequest {
        common_name: name.into(),
        dns_names: vec![],
        ip_addresses: vec![],
        usage: Usage::Client,
        duration_secs: 2160 * H,
    }
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    let mut certs = parse_pem_certificates("test", pem.as_bytes()).expect("pem");
    assert_eq!(certs.len(), 1);
    certs.remove(0)
}

fn x509(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).expect("x509");
    assert!(rest.is_empty());
    cert
}

fn ski(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

fn aki(cert: &X509Certificate<'_>) -> Option<(Vec<u8>, bool)> {
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a
                .key_identifier
                .as_ref()
                .map(|k| (k.0.to_vec(), e.critical)),
            _ => None,
        })
}

fn assert_p256(cert: &X509Certificate<'_>) {
    let spki = cert.public_key();
    assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .expect("named curve");
    assert_eq!(curve, OID_EC_P256);
    assert_eq!(
        cert.signature_algorithm.algorithm,
        OID_SIG_ECDSA_WITH_SHA256
    );
}

/// The Secret data as the controller reads it back from the API server.
fn bytes(issued: &IssuedCertificate) -> BTreeMap<String, Vec<u8>> {
    secret_data(issued)
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn at(unix: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(unix).expect("positive")))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateAuthority) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("root");
    Arc::new(roots)
}

fn server_verifier(ca: &CertificateAuthority) -> Arc<WebPkiServerVerifier> {
    WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .expect("server verifier")
}

fn client_verifier(ca: &CertificateAuthority) -> Arc<dyn ClientCertVerifier> {
    WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .expect("client verifier")
}

// ---------------------------------------------------------------------------------------
// The certificate profile
// ---------------------------------------------------------------------------------------

#[test]
fn ca_profile_is_python_strict() {
    let ca = new_ca();
    let der = ca.cert_der();
    let cert = x509(der);

    let bc = cert.basic_constraints().expect("bc").expect("bc present");
    assert!(bc.critical, "basicConstraints must be critical");
    assert!(bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));

    let ku = cert.key_usage().expect("ku").expect("ku present");
    assert!(ku.critical);
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign() && ku.value.digital_signature());

    let ski = ski(&cert).expect("SubjectKeyIdentifier");
    assert_eq!(ski.len(), 20);
    let (aki, aki_critical) = aki(&cert).expect("AKI");
    assert_eq!(aki, ski, "a self-signed CA's AKI is its own SKI");
    assert!(!aki_critical);

    assert_p256(&cert);
    verify_self_signed(der).expect("self-signed");
    assert_eq!(ca.subject(), "CN=mcptrust federation CA");
    assert_eq!(ca.not_before(), NOW - H);
    assert_eq!(ca.not_after(), NOW + 10 * YEAR);
    assert_eq!(ca.sha256(), mcptrust::pki::sha256_hex(der));
    assert_eq!(ca.sha256().len(), 64);
    assert!(cert.raw_serial().len() >= 8, "serial of at least 64 bits");
    assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(ca.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // The bundle code accepts it as a private CA.
    let info = mcptrust::pki::inspect(der).expect("inspect");
    assert!(info.is_ca && info.basic_constraints_critical && info.self_issued);
    assert_eq!(info.key_cert_sign, Some(true));
}

#[test]
fn debug_output_never_shows_keys() {
    let ca = new_ca();
    let issued = issue(&ca, &server_req(), NOW).expect("issue");
    let key_line = |pem: &str| pem.lines().nth(1).expect("body").to_owned();
    let ca_debug = format!("{ca:?}");
    let leaf_debug = format!("{issued:?}");
    assert!(!ca_debug.contains(&key_line(&ca.key_pem)), "{ca_debug}");
    assert!(
        !leaf_debug.contains(&key_line(&issued.key_pem)),
        "{leaf_debug}"
    );
    assert!(ca_debug.contains("elided") && leaf_debug.contains("elided"));
}

#[test]
fn server_leaf_profile() {
    let ca = new_ca();
    let ca_cert_der = ca.cert_der().clone();
    let ca_cert = x509(&ca_cert_der);
    let req = server_req();
    let issued = issue(&ca, &req, NOW).expect("issue");
    let der = der_of(&issued.cert_pem);
    let cert = x509(&der);

    // AKI = the CA's SKI; the leaf has its own SKI.
    let (aki, aki_critical) = aki(&cert).expect("AKI");
    assert_eq!(aki, ski(&ca_cert).expect("CA SKI"));
    assert!(!aki_critical);
    assert!(ski(&cert).is_some());

    // Not a CA: basicConstraints critical CA:FALSE.
    let bc = cert.basic_constraints().expect("bc").expect("bc present");
    assert!(!bc.value.ca);
    assert!(bc.critical);
    assert_eq!(bc.value.path_len_constraint, None);

    let ku = cert.key_usage().expect("ku").expect("ku present");
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());

    let eku = cert
        .extended_key_usage()
        .expect("eku")
        .expect("eku present");
    assert!(eku.value.server_auth && !eku.value.client_auth && !eku.value.any);

    // SANs exactly as requested, in order.
    let san = cert
        .subject_alternative_name()
        .expect("san")
        .expect("san present");
    assert!(!san.critical);
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|g| match g {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                format!("IP:{}", IpAddr::from(<[u8; 4]>::try_from(*b).expect("v4")))
            }
            GeneralName::IPAddress(b) => {
                format!("IP:{}", IpAddr::from(<[u8; 16]>::try_from(*b).expect("v6")))
            }
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "DNS:github-mcp",
            "DNS:github-mcp.agents",
            "DNS:github-mcp.agents.svc",
            "DNS:github-mcp.agents.svc.cluster.local",
            "IP:127.0.0.1",
            "IP:::1"
        ]
    );

    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok()),
        Some("github-mcp.agents.svc")
    );
    assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
    cert.verify_signature(Some(ca_cert.public_key()))
        .expect("signed by the CA");
    assert_p256(&cert);

    assert_eq!(issued.not_before, NOW - 300);
    assert_eq!(issued.not_after, NOW + 2160 * H);
    assert_eq!(cert.validity().not_before.timestamp(), issued.not_before);
    assert_eq!(cert.validity().not_after.timestamp(), issued.not_after);
    assert_eq!(issued.sha256, mcptrust::pki::sha256_hex(&der));
    assert_eq!(issued.serial_hex, hex::encode(cert.raw_serial()));
    assert_eq!(issued.serial_hex.len(), 32, "16-byte serial");
    assert_eq!(issued.ca_pem, ca.cert_pem);
    assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));

    let again = issue(&ca, &req, NOW).expect("issue");
    assert_ne!(again.serial_hex, issued.serial_hex, "serials are random");
    assert_ne!(
        again.key_pem, issued.key_pem,
        "every issuance has a fresh key"
    );
}

#[test]
fn client_leaf_profile() {
    let ca = new_ca();
    let issued = issue(&ca, &client_req("gateway"), NOW).expect("issue");
    let der = der_of(&issued.cert_pem);
    let cert = x509(&der);
    let eku = cert
        .extended_key_usage()
        .expect("eku")
        .expect("eku present");
    assert!(eku.value.client_auth && !eku.value.server_auth);
    assert!(cert.subject_alternative_name().expect("san").is_none());
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok()),
        Some("gateway")
    );
    assert!(!cert.basic_constraints().expect("bc").expect("bc").value.ca);
    assert!(aki(&cert).is_some());
    assert_p256(&cert);
}

/// `openssl verify -x509_strict` applies the same OpenSSL checks as Python 3.13's default
/// `VERIFY_X509_STRICT` (cpython#107361). Skipped when no `openssl` binary is installed.
#[test]
fn openssl_x509_strict_accepts_the_chain() {
    let Ok(version) = std::process::Command::new("openssl")
        .arg("version")
        .output()
    else {
        skip::skip_or_fail("openssl", "apt-get install openssl (Debian)");
        return;
    };
    assert!(version.status.success());
    let ca = new_ca();
    let server = issue(&ca, &server_req(), NOW).expect("server");
    let client = issue(&ca, &client_req("gateway"), NOW).expect("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let ca_path = write("ca.pem", &ca.cert_pem);
    let server_path = write("server.pem", &server.cert_pem);
    let client_path = write("client.pem", &client.cert_pem);
    let verify = |extra: &[&str], leaf: &std::path::Path| {
        let out = std::process::Command::new("openssl")
            .arg("verify")
            .args(["-x509_strict", "-attime", &NOW.to_string(), "-CAfile"])
            .arg(&ca_path)
            .args(extra)
            .arg(leaf)
            .output()
            .expect("openssl verify");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    for extra in [
        &[
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "github-mcp.agents.svc",
        ][..],
        &["-purpose", "sslserver", "-verify_ip", "127.0.0.1"][..],
        &["-purpose", "sslserver", "-verify_ip", "::1"][..],
    ] {
        let (ok, out) = verify(extra, &server_path);
        assert!(ok && out.contains(": OK"), "{extra:?}: {out}");
    }
    let (ok, out) = verify(&["-purpose", "sslclient"], &client_path);
    assert!(ok && out.contains(": OK"), "{out}");
    // And the checks bite: wrong name, wrong purpose.
    let (ok, out) = verify(&["-verify_hostname", "other.example.com"], &server_path);
    assert!(!ok, "{out}");
    let (ok, out) = verify(&["-purpose", "sslserver"], &client_path);
    assert!(!ok, "{out}");
}

// ---------------------------------------------------------------------------------------
// rustls / webpki
// ---------------------------------------------------------------------------------------

#[test]
fn webpki_verifies_the_server_certificate_by_name_and_by_ip() {
    let ca = new_ca();
    let issued = issue(&ca, &server_req(), NOW).expect("issue");
    let leaf = der_of(&issued.cert_pem);
    let verifier = server_verifier(&ca);
    let check = |name: ServerName<'_>, now: i64| {
        verifier.verify_server_cert(&leaf, &[], &name, &[], at(now))
    };
    for name in [
        "github-mcp.agents.svc",
        "github-mcp",
        "github-mcp.agents.svc.cluster.local",
    ] {
        check(ServerName::try_from(name).expect("name"), NOW).expect(name);
    }
    // Seed 001: a client dialling 127.0.0.1 checks the IP SANs.
    check(ServerName::from(IpAddr::V4(Ipv4Addr::LOCALHOST)), NOW).expect("127.0.0.1");
    check(ServerName::from(IpAddr::V6(Ipv6Addr::LOCALHOST)), NOW).expect("::1");

    // Negative cases: name or IP not in the SANs, expired, not yet valid.
    assert!(check(ServerName::try_from("other.agents.svc").expect("n"), NOW).is_err());
    assert!(
        check(
            ServerName::from(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            NOW
        )
        .is_err()
    );
    assert!(
        check(
            ServerName::try_from("github-mcp").expect("n"),
            issued.not_after + 1
        )
        .is_err()
    );
    assert!(check(ServerName::try_from("github-mcp").expect("n"), NOW - 3600).is_err());

    // A certificate from another CA is not trusted.
    let other = CertificateAuthority::generate(CA_CN, NOW, YEAR).expect("other CA");
    let foreign = der_of(&issue(&other, &server_req(), NOW).expect("issue").cert_pem);
    let err = verifier
        .verify_server_cert(
            &foreign,
            &[],
            &ServerName::try_from("github-mcp").expect("n"),
            &[],
            at(NOW),
        )
        .expect_err("foreign CA");
    assert!(
        format!("{err:?}").contains("UnknownIssuer") || format!("{err:?}").contains("BadSignature"),
        "{err:?}"
    );
}

#[test]
fn webpki_checks_extended_key_usage_both_ways() {
    let ca = new_ca();
    let server = der_of(&issue(&ca, &server_req(), NOW).expect("server").cert_pem);
    let client = der_of(
        &issue(&ca, &client_req("gateway"), NOW)
            .expect("client")
            .cert_pem,
    );

    let clients = client_verifier(&ca);
    clients
        .verify_client_cert(&client, &[], at(NOW))
        .expect("the client certificate is accepted");
    assert!(
        clients.verify_client_cert(&server, &[], at(NOW)).is_err(),
        "a serverAuth-only certificate is not a client certificate"
    );
    assert!(
        server_verifier(&ca)
            .verify_server_cert(
                &client,
                &[],
                &ServerName::try_from("gateway").expect("n"),
                &[],
                at(NOW)
            )
            .is_err(),
        "a clientAuth-only certificate is not a server certificate"
    );
}

/// rustls' clock for the handshakes: the fixed test "now".
#[derive(Debug)]
struct FixedClock(i64);

impl TimeProvider for FixedClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(at(self.0))
    }
}

fn chain_and_key(
    data: &BTreeMap<String, Vec<u8>>,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let certs = CertificateDer::pem_slice_iter(&data[TLS_CRT])
        .collect::<Result<Vec<_>, _>>()
        .expect("tls.crt");
    let key = PrivateKeyDer::from_pem_slice(&data[TLS_KEY]).expect("tls.key");
    (certs, key)
}

fn mtls_server_config(ca: &CertificateAuthority, server: &IssuedCertificate) -> ServerConfig {
    let (chain, key) = chain_and_key(&bytes(server));
    ServerConfig::builder_with_details(provider(), Arc::new(FixedClock(NOW + 60)))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(client_verifier(ca))
        .with_single_cert(chain, key)
        .expect("server cert")
}

fn client_config(ca: &CertificateAuthority, client: Option<&IssuedCertificate>) -> ClientConfig {
    let builder = ClientConfig::builder_with_details(provider(), Arc::new(FixedClock(NOW + 60)))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots(ca));
    match client {
        Some(client) => {
            let (chain, key) = chain_and_key(&bytes(client));
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    }
}

/// One connection to 127.0.0.1 (dialled by IP): the client sends `ping`, the server
/// answers `pong`. Returns the server's outcome (the bytes it read and the SHA-256 of the
/// client certificate it saw) and the client's (the bytes it read).
async fn exchange(
    server_config: ServerConfig,
    client_config: ClientConfig,
) -> (
    Result<([u8; 4], Option<String>), std::io::Error>,
    Result<[u8; 4], std::io::Error>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(Arc::new(server_config));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| mcptrust::pki::sha256_hex(c));
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        Ok::<_, std::io::Error>((buf, peer))
    });
    let connector = TlsConnector::from(Arc::new(client_config));
    let client = async {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::from(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let client = tokio::time::timeout(Duration::from_secs(20), client)
        .await
        .expect("client timed out");
    let server = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server timed out")
        .expect("server task");
    (server, client)
}

/// The rustls error inside a tokio-rustls I/O error.
fn rustls_error(err: &std::io::Error) -> Option<&rustls::Error> {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
}

#[tokio::test]
async fn mtls_handshake_on_127_0_0_1() {
    let ca = new_ca();
    // What the controller would write: the server's serving certificate for an endpoint
    // dialled by IP, and a client certificate for the gateway.
    let req = server_request(
        "github-mcp",
        "agents",
        Some("https://127.0.0.1:8443/mcp/"),
        None,
    )
    .expect("request");
    assert_eq!(req.ip_addresses, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let server = issue(&ca, &req, NOW).expect("server");
    let client = issue(&ca, &client_req("gateway"), NOW).expect("client");

    let (served, received) = exchange(
        mtls_server_config(&ca, &server),
        client_config(&ca, Some(&client)),
    )
    .await;
    let (got, peer) = served.expect("server side");
    assert_eq!(&got, b"ping");
    assert_eq!(peer.as_deref(), Some(client.sha256.as_str()));
    assert_eq!(&received.expect("client side"), b"pong");
}

#[tokio::test]
async fn mtls_rejects_a_client_without_certificate() {
    let ca = new_ca();
    let req = server_request(
        "github-mcp",
        "agents",
        Some("https://127.0.0.1:8443/"),
        None,
    )
    .expect("request");
    let server = issue(&ca, &req, NOW).expect("server");
    let (served, received) =
        exchange(mtls_server_config(&ca, &server), client_config(&ca, None)).await;
    let err = served.expect_err("the server requires a client certificate");
    assert_eq!(
        rustls_error(&err),
        Some(&rustls::Error::NoCertificatesPresented),
        "{err}"
    );
    assert!(received.is_err(), "the client sees the handshake fail");
}

#[tokio::test]
async fn mtls_rejects_a_client_certificate_from_another_ca() {
    let ca = new_ca();
    let other = CertificateAuthority::generate("someone else's CA", NOW, YEAR).expect("other");
    let req = server_request(
        "github-mcp",
        "agents",
        Some("https://127.0.0.1:8443/"),
        None,
    )
    .expect("request");
    let server = issue(&ca, &req, NOW).expect("server");
    let intruder = issue(&other, &client_req("gateway"), NOW).expect("client");
    let (served, received) = exchange(
        mtls_server_config(&ca, &server),
        client_config(&ca, Some(&intruder)),
    )
    .await;
    let err = served.expect_err("foreign client certificate");
    assert_eq!(
        rustls_error(&err),
        Some(&rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        )),
        "{err}"
    );
    assert!(received.is_err());
}

// ---------------------------------------------------------------------------------------
// decide()
// ---------------------------------------------------------------------------------------

const RENEW_BEFORE: i64 = 720 * H;

fn issue_reason(d: Decision) -> (IssueReason, String) {
    match d {
        Decision::Issue { reason, message } => (reason, message),
        Decision::Keep { .. } => panic!("expected Issue, got {d:?}"),
    }
}

#[test]
fn decide_keeps_a_good_certificate_until_its_renewal_time() {
    let ca = new_ca();
    let req = server_req();
    let issued = issue(&ca, &req, NOW).expect("issue");
    let data = bytes(&issued);
    let renewal = issued.not_after - RENEW_BEFORE;
    assert_eq!(renewal, NOW + 1440 * H);

    let keep = decide(Some(&data), &ca, &req, RENEW_BEFORE, NOW);
    assert_eq!(
        keep,
        Decision::Keep {
            not_after: NOW + 2160 * H,
            renewal_time: renewal,
            sha256: issued.sha256.clone(),
        }
    );
    assert_eq!(keep.reason(), None);
    assert!(matches!(
        decide(Some(&data), &ca, &req, RENEW_BEFORE, renewal - 1),
        Decision::Keep { .. }
    ));

    // Renewing from the renewal time, Expired from notAfter.
    let (reason, message) = issue_reason(decide(Some(&data), &ca, &req, RENEW_BEFORE, renewal));
    assert_eq!(reason, IssueReason::Renewing);
    assert!(message.contains("2027-03-16T08:00:00Z"), "{message}");
    let d = decide(Some(&data), &ca, &req, RENEW_BEFORE, issued.not_after - 1);
    assert_eq!(d.reason(), Some(IssueReason::Renewing));
    let (reason, message) = issue_reason(decide(
        Some(&data),
        &ca,
        &req,
        RENEW_BEFORE,
        issued.not_after,
    ));
    assert_eq!(reason, IssueReason::Expired);
    assert!(message.contains("expired"), "{message}");
    assert_eq!(
        decide(
            Some(&data),
            &ca,
            &req,
            RENEW_BEFORE,
            issued.not_after + YEAR
        )
        .reason(),
        Some(IssueReason::Expired)
    );

    // cert-manager's clamp: a renewBefore not shorter than the lifetime means a third.
    let d = decide(Some(&data), &ca, &req, 10 * YEAR, NOW);
    let lifetime = issued.not_after - issued.not_before;
    assert_eq!(
        d,
        Decision::Keep {
            not_after: issued.not_after,
            renewal_time: issued.not_after - lifetime / 3,
            sha256: issued.sha256.clone(),
        }
    );
}

#[test]
fn decide_does_not_exist_and_missing_data() {
    let ca = new_ca();
    let req = server_req();
    let issued = issue(&ca, &req, NOW).expect("issue");

    let (reason, message) = issue_reason(decide(None, &ca, &req, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::DoesNotExist);
    assert_eq!(message, "the Secret does not exist");

    let mut data = bytes(&issued);
    data.remove(CA_CRT);
    let (reason, message) = issue_reason(decide(Some(&data), &ca, &req, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::MissingData);
    assert_eq!(message, "the Secret is missing ca.crt");

    data.insert(TLS_KEY.into(), b"\n".to_vec());
    data.remove(TLS_CRT);
    let (reason, message) = issue_reason(decide(Some(&data), &ca, &req, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::MissingData);
    assert_eq!(
        message,
        "the Secret is missing tls.crt, tls.key (empty), ca.crt"
    );

    let (reason, _) = issue_reason(decide(Some(&BTreeMap::new()), &ca, &req, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::MissingData);
}

#[test]
fn decide_invalid_key_pair() {
    let ca = new_ca();
    let req = server_req();
    let issued = issue(&ca, &req, NOW).expect("issue");
    let other = issue(&ca, &req, NOW).expect("issue");
    let key_body = |pem: &str| pem.lines().nth(1).expect("body").to_owned();

    // The key of another issuance.
    let mut data = bytes(&issued);
    data.insert(TLS_KEY.into(), other.key_pem.clone().into_bytes());
    let (reason, message) = issue_reason(decide(Some(&data), &ca, &req, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::InvalidKeyPair);
    assert_eq!(message, "tls.key does not match the public key of tls.crt");
    assert!(!message.contains(&key_body(&other.key_pem)));

    // Garbage in either file.
    let mut data = bytes(&issued);
    data.insert(
        TLS_KEY.into(),
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
    );
    let (reason, message) = issue_reason(decide(Some(&data), &ca, &req, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::InvalidKeyPair);
    assert!(!message.contains("AAAA"), "{message}");

    let mut data = bytes(&issued);
    data.insert(TLS_CRT.into(), b"not a certificate".to_vec());
    let (reason, message) = issue_reason(decide(Some(&data), &ca, &req, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::InvalidKeyPair);
    assert!(
        message.starts_with("tls.crt is not a PEM certificate"),
        "{message}"
    );

    // A private key pasted into tls.crt is named by its label, never shown.
    let mut data = bytes(&issued);
    data.insert(TLS_CRT.into(), issued.key_pem.clone().into_bytes());
    let (reason, message) = issue_reason(decide(Some(&data), &ca, &req, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::InvalidKeyPair);
    assert!(!message.contains(&key_body(&issued.key_pem)), "{message}");
}

#[test]
fn decide_incorrect_issuer() {
    let ca = new_ca();
    let req = server_req();

    // Same CN, different key: only the signature check can tell (a rotated CA).
    let rotated_away = CertificateAuthority::generate(CA_CN, NOW, 10 * YEAR).expect("CA");
    let foreign = issue(&rotated_away, &req, NOW).expect("issue");
    let (reason, message) =
        issue_reason(decide(Some(&bytes(&foreign)), &ca, &req, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::IncorrectIssuer);
    assert!(message.contains("signature does not verify"), "{message}");

    // A different issuer name.
    let other = CertificateAuthority::generate("someone else's CA", NOW, YEAR).expect("CA");
    let foreign = issue(&other, &req, NOW).expect("issue");
    let (reason, message) =
        issue_reason(decide(Some(&bytes(&foreign)), &ca, &req, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::IncorrectIssuer);
    assert_eq!(
        message,
        "tls.crt was issued by \"CN=someone else's CA\", not by the current CA \
         \"CN=mcptrust federation CA\""
    );

    // Our leaf, but ca.crt holds another CA.
    let issued = issue(&ca, &req, NOW).expect("issue");
    let mut data = bytes(&issued);
    data.insert(CA_CRT.into(), other.cert_pem.clone().into_bytes());
    let (reason, message) = issue_reason(decide(Some(&data), &ca, &req, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::IncorrectIssuer);
    assert!(
        message.starts_with("ca.crt does not contain the current CA"),
        "{message}"
    );

    // ca.crt holding the old and the new CA (a rotation overlap) is fine.
    data.insert(
        CA_CRT.into(),
        format!("{}{}", other.cert_pem, ca.cert_pem).into_bytes(),
    );
    assert!(matches!(
        decide(Some(&data), &ca, &req, RENEW_BEFORE, NOW),
        Decision::Keep { .. }
    ));
}

#[test]
fn decide_request_changed() {
    let ca = new_ca();
    let req = server_req();
    let issued = issue(&ca, &req, NOW).expect("issue");
    let data = bytes(&issued);

    let mut more = req.clone();
    more.dns_names.push("mcp.example.com".into());
    let (reason, message) = issue_reason(decide(Some(&data), &ca, &more, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::RequestChanged);
    assert_eq!(message, "DNS names changed (added mcp.example.com)");

    let mut fewer = req.clone();
    fewer.ip_addresses.pop();
    fewer.common_name = "github-mcp".into();
    let (reason, message) = issue_reason(decide(Some(&data), &ca, &fewer, RENEW_BEFORE, NOW));
    assert_eq!(reason, IssueReason::RequestChanged);
    assert_eq!(
        message,
        "IP addresses changed (removed ::1); common name changed from \
         \"github-mcp.agents.svc\" to \"github-mcp\""
    );

    let mut as_client = req.clone();
    as_client.usage = Usage::Client;
    let (_, message) = issue_reason(decide(Some(&data), &ca, &as_client, RENEW_BEFORE, NOW));
    assert_eq!(
        message,
        "extended key usage changed from serverAuth to clientAuth"
    );

    let mut shorter = req.clone();
    shorter.duration_secs = 720 * H;
    let (_, message) = issue_reason(decide(Some(&data), &ca, &shorter, RENEW_BEFORE, NOW));
    assert_eq!(message, "duration changed from 2160h to 720h");

    // DNS names compare case-insensitively, as sets: order does not matter.
    let mut shuffled = req.clone();
    shuffled.dns_names.reverse();
    shuffled.dns_names[0] = shuffled.dns_names[0].to_uppercase();
    shuffled.ip_addresses.reverse();
    assert!(matches!(
        decide(Some(&data), &ca, &shuffled, RENEW_BEFORE, NOW),
        Decision::Keep { .. }
    ));

    // RequestChanged comes before time: an expired certificate whose request changed
    // says so.
    assert_eq!(
        decide(Some(&data), &ca, &more, RENEW_BEFORE, issued.not_after).reason(),
        Some(IssueReason::RequestChanged)
    );
}

#[test]
fn decide_round_trips_through_a_secret_object() {
    use k8s_openapi::api::core::v1::Secret;
    let ca = new_ca();
    let req = server_req();
    let issued = issue(&ca, &req, NOW).expect("issue");
    let secret = Secret {
        type_: Some(SECRET_TYPE.into()),
        data: Some(secret_data(&issued)),
        ..Secret::default()
    };
    // Through JSON, as the API server returns it (base64 data).
    let json = serde_json::to_string(&secret).expect("json");
    let back: Secret = serde_json::from_str(&json).expect("secret");
    let data = decoded_secret_data(Some(&back));
    assert_eq!(
        data.as_ref().map(|d| d.keys().cloned().collect::<Vec<_>>()),
        Some(vec![
            CA_CRT.to_owned(),
            TLS_CRT.to_owned(),
            TLS_KEY.to_owned()
        ])
    );
    assert!(matches!(
        decide(data.as_ref(), &ca, &req, RENEW_BEFORE, NOW),
        Decision::Keep { .. }
    ));
    assert_eq!(decoded_secret_data(None), None);
    assert_eq!(
        decide(
            decoded_secret_data(None).as_ref(),
            &ca,
            &req,
            RENEW_BEFORE,
            NOW
        )
        .reason(),
        Some(IssueReason::DoesNotExist)
    );
    assert_eq!(IssueReason::DoesNotExist.as_str(), "DoesNotExist");
    assert_eq!(IssueReason::RequestChanged.to_string(), "RequestChanged");
}

// ---------------------------------------------------------------------------------------
// SANs, requests, durations
// ---------------------------------------------------------------------------------------

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[test]
fn server_sans_from_endpoint_urls() {
    let service = [
        "github-mcp",
        "github-mcp.agents",
        "github-mcp.agents.svc",
        "github-mcp.agents.svc.cluster.local",
    ];
    let sans = |url: &str| server_sans("github-mcp", "agents", Some(url), None);

    assert_eq!(
        sans("https://github-mcp.agents.svc:8443/mcp/"),
        (service.map(String::from).to_vec(), vec![])
    );
    assert_eq!(
        sans("http://github-mcp:8080/"),
        (service.map(String::from).to_vec(), vec![])
    );
    assert_eq!(
        sans("https://github-mcp.agents:8443/"),
        (service.map(String::from).to_vec(), vec![])
    );
    assert_eq!(
        sans("https://github-mcp.agents.svc.cluster.local/"),
        (service.map(String::from).to_vec(), vec![])
    );
    // A Service in another namespace.
    assert_eq!(
        sans("https://gh.tools.svc/").0,
        [
            "gh",
            "gh.tools",
            "gh.tools.svc",
            "gh.tools.svc.cluster.local"
        ]
    );
    // A custom cluster domain is kept verbatim too.
    assert_eq!(
        sans("https://gh.tools.svc.corp.internal/").0,
        [
            "gh",
            "gh.tools",
            "gh.tools.svc",
            "gh.tools.svc.cluster.local",
            "gh.tools.svc.corp.internal"
        ]
    );
    // IP literals become IP SANs (seed 001: CN=localhost does not cover 127.0.0.1).
    assert_eq!(
        sans("https://127.0.0.1:8443/"),
        (vec![], vec![v4(127, 0, 0, 1)])
    );
    assert_eq!(
        sans("https://[::1]:8443/"),
        (vec![], vec![IpAddr::V6(Ipv6Addr::LOCALHOST)])
    );
    // localhost covers both ways of dialling it.
    assert_eq!(
        sans("https://localhost:9000/sse"),
        (
            vec!["localhost".to_owned()],
            vec![v4(127, 0, 0, 1), IpAddr::V6(Ipv6Addr::LOCALHOST)]
        )
    );
    // A remote server: verbatim, lowercased; `a.b` outside the namespace is a domain.
    assert_eq!(
        sans("https://mcp.example.com/"),
        (vec!["mcp.example.com".to_owned()], vec![])
    );
    assert_eq!(
        sans("https://MCP.Example.com./"),
        (vec!["mcp.example.com".to_owned()], vec![])
    );
    assert_eq!(sans("https://example.com/").0, ["example.com"]);
    // No URL, or an unparsable one: nothing derived.
    assert_eq!(server_sans("x", "agents", None, None), (vec![], vec![]));
    assert_eq!(sans("not a url"), (vec![], vec![]));
}

#[test]
fn server_sans_add_configured_names_deduplicated() {
    let spec = ServerCertSpec {
        dns_names: vec![
            "github-mcp.agents.svc".into(),
            "mcp.example.com".into(),
            "MCP.example.com".into(),
        ],
        ip_addresses: vec![
            "10.0.0.7".into(),
            "127.0.0.1".into(),
            "bogus".into(),
            "::1".into(),
        ],
    };
    let (dns, ips) = server_sans(
        "github-mcp",
        "agents",
        Some("https://127.0.0.1:8443/"),
        Some(&spec),
    );
    assert_eq!(dns, ["github-mcp.agents.svc", "mcp.example.com"]);
    assert_eq!(
        ips,
        [
            v4(127, 0, 0, 1),
            v4(10, 0, 0, 7),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        ]
    );

    let (dns, _) = server_sans(
        "github-mcp",
        "agents",
        Some("https://github-mcp.agents.svc:8443/mcp/"),
        Some(&spec),
    );
    assert_eq!(
        dns,
        [
            "github-mcp",
            "github-mcp.agents",
            "github-mcp.agents.svc",
            "github-mcp.agents.svc.cluster.local",
            "mcp.example.com"
        ]
    );
}

#[test]
fn server_and_client_requests() {
    let mtls = MtlsSpec {
        duration: Some("720h".into()),
        ..MtlsSpec::default()
    };
    let req = server_request(
        "github-mcp",
        "agents",
        Some("https://github-mcp.agents.svc:8443/mcp/"),
        Some(&mtls),
    )
    .expect("request");
    assert_eq!(req.common_name, "github-mcp.agents.svc");
    assert_eq!(req.usage, Usage::Server);
    assert_eq!(req.duration_secs, 720 * H);
    assert_eq!(req.dns_names.len(), 4);

    let req =
        server_request("github-mcp", "agents", Some("https://[::1]:8443/"), None).expect("request");
    assert_eq!(req.common_name, "::1");
    assert_eq!(req.duration_secs, 2160 * H);

    // stdio server without SANs: nothing to put in a serving certificate.
    let err = server_request("github-mcp", "agents", None, None).expect_err("no SANs");
    assert_eq!(err, IssueError::NoSubjectAltNames);

    let bad_ip = MtlsSpec {
        server: Some(ServerCertSpec {
            dns_names: vec![],
            ip_addresses: vec!["300.1.1.1".into()],
        }),
        ..MtlsSpec::default()
    };
    let err = server_request("gh", "agents", Some("https://gh/"), Some(&bad_ip)).expect_err("ip");
    assert_eq!(err.reason(), "InvalidIPAddress");
    assert!(err.to_string().contains("300.1.1.1"), "{err}");

    let client = client_request("gateway", Some(&mtls)).expect("client");
    assert_eq!(
        client,
        LeafRequest {
            common_name: "gateway".into(),
            dns_names: vec![],
            ip_addresses: vec![],
            usage: Usage::Client,
            duration_secs: 720 * H,
        }
    );
}

#[test]
fn durations_defaults_and_errors() {
    assert_eq!(durations(None), Ok((2160 * H, 720 * H)));
    assert_eq!(
        durations(Some(&MtlsSpec::default())),
        Ok((2160 * H, 720 * H))
    );
    let spec = |d: Option<&str>, r: Option<&str>| MtlsSpec {
        duration: d.map(String::from),
        renew_before: r.map(String::from),
        ..MtlsSpec::default()
    };
    assert_eq!(
        durations(Some(&spec(Some("720h"), None))),
        Ok((720 * H, 240 * H))
    );
    assert_eq!(
        durations(Some(&spec(Some("24h"), Some("8h")))),
        Ok((24 * H, 8 * H))
    );
    assert_eq!(
        durations(Some(&spec(None, Some("1h30m")))),
        Ok((2160 * H, 5400))
    );
    assert_eq!(durations(Some(&spec(Some("1h"), None))), Ok((H, 1200)));

    let err = durations(Some(&spec(Some("24h"), Some("24h")))).expect_err("equal");
    assert_eq!(
        err,
        IssueError::RenewBeforeTooLong {
            renew_before_secs: 24 * H,
            duration_secs: 24 * H
        }
    );
    assert_eq!(err.reason(), "InvalidRenewBefore");
    let err = durations(Some(&spec(None, Some("2161h")))).expect_err("longer than default");
    assert_eq!(err.reason(), "InvalidRenewBefore");
    let err = durations(Some(&spec(Some("30m"), None))).expect_err("short");
    assert_eq!(err.reason(), "InvalidDuration");
    assert!(err.to_string().contains("at least 1h"), "{err}");
    let err = durations(Some(&spec(Some("90d"), None))).expect_err("days");
    assert!(
        err.to_string().starts_with("spec.mtls.duration \"90d\""),
        "{err}"
    );
    let err = durations(Some(&spec(None, Some("-1h")))).expect_err("negative");
    assert!(
        err.to_string().starts_with("spec.mtls.renewBefore"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Loading a CA; issuance errors
// ---------------------------------------------------------------------------------------

#[test]
fn ca_from_pem_round_trip() {
    let ca = new_ca();
    let loaded = CertificateAuthority::from_pem(&ca.cert_pem, &ca.key_pem).expect("load");
    assert_eq!(loaded.sha256(), ca.sha256());
    assert_eq!(loaded.cert_pem, ca.cert_pem);
    assert_eq!(loaded.not_after(), ca.not_after());

    // A leaf issued by the loaded CA carries the same AKI and is kept by the original.
    let req = server_req();
    let issued = issue(&loaded, &req, NOW).expect("issue");
    let leaf_der = der_of(&issued.cert_pem);
    let ca_der = ca.cert_der().clone();
    assert_eq!(aki(&x509(&leaf_der)).map(|a| a.0), ski(&x509(&ca_der)));
    assert!(matches!(
        decide(Some(&bytes(&issued)), &ca, &req, RENEW_BEFORE, NOW),
        Decision::Keep { .. }
    ));
    server_verifier(&ca)
        .verify_server_cert(
            &leaf_der,
            &[],
            &ServerName::try_from("github-mcp").expect("n"),
            &[],
            at(NOW),
        )
        .expect("verifies against the original CA");
}

#[test]
fn ca_from_pem_rejects_bad_inputs() {
    let ca = new_ca();
    let other = new_ca();

    let err = CertificateAuthority::from_pem(&ca.cert_pem, &other.key_pem).expect_err("mismatch");
    assert_eq!(err.reason(), "CAKeyMismatch");
    assert!(
        !err.to_string()
            .contains(other.key_pem.lines().nth(1).expect("body"))
    );

    let err = CertificateAuthority::from_pem(
        &ca.cert_pem,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect_err("garbage key");
    assert_eq!(err.reason(), "InvalidCAKey");
    assert!(!err.to_string().contains("AAAA"), "{err}");

    let err = CertificateAuthority::from_pem("", &ca.key_pem).expect_err("empty");
    assert_eq!(err.reason(), "InvalidCACertificate");

    let two = format!("{}{}", ca.cert_pem, other.cert_pem);
    let err = CertificateAuthority::from_pem(&two, &ca.key_pem).expect_err("two");
    assert!(err.to_string().contains("exactly one"), "{err}");

    let leaf = issue(&ca, &server_req(), NOW).expect("leaf");
    let err = CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem).expect_err("leaf");
    assert_eq!(err.reason(), "NotACertificateAuthority");

    // A CA without keyCertSign (made with rcgen directly) is refused.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).expect("cert");
    let err = CertificateAuthority::from_pem(&cert.pem(), &key.serialize_pem()).expect_err("ku");
    assert_eq!(err.reason(), "NonStrictCAProfile");
    assert!(err.to_string().contains("keyCertSign"), "{err}");
}

#[test]
fn issue_rejects_bad_requests() {
    let ca = new_ca();
    let mut req = server_req();
    req.dns_names = vec![];
    req.ip_addresses = vec![];
    assert_eq!(
        issue(&ca, &req, NOW).expect_err("no SAN"),
        IssueError::NoSubjectAltNames
    );

    let mut req = server_req();
    req.dns_names.push("bad name".into());
    let err = issue(&ca, &req, NOW).expect_err("dns");
    assert_eq!(err.reason(), "InvalidDNSName");
    assert!(err.to_string().contains("\"bad name\""), "{err}");

    let mut req = server_req();
    req.common_name = "x".repeat(65);
    assert_eq!(
        issue(&ca, &req, NOW).expect_err("cn").reason(),
        "InvalidCommonName"
    );

    let mut req = server_req();
    req.duration_secs = 0;
    assert_eq!(
        issue(&ca, &req, NOW).expect_err("dur").reason(),
        "InvalidValidity"
    );

    // The CA must be valid at issuance time.
    let err = issue(&ca, &server_req(), ca.not_after()).expect_err("expired CA");
    assert_eq!(err.reason(), "CANotValid");
    assert!(err.to_string().contains("rotate the CA"), "{err}");
    assert_eq!(
        issue(&ca, &server_req(), NOW - 2 * H)
            .expect_err("too early")
            .reason(),
        "CANotValid"
    );

    // Wildcards are allowed in requested DNS names; a client certificate needs no SAN.
    let mut req = server_req();
    req.dns_names = vec!["*.agents.svc".into()];
    issue(&ca, &req, NOW).expect("wildcard");
    issue(&ca, &client_req("gateway"), NOW).expect("client");

    assert_eq!(
        CertificateAuthority::generate("", NOW, YEAR)
            .expect_err("cn")
            .reason(),
        "InvalidCommonName"
    );
    assert_eq!(
        CertificateAuthority::generate(CA_CN, NOW, 0)
            .expect_err("validity")
            .reason(),
        "InvalidValidity"
    );
}
