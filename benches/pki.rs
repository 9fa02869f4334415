//! Criterion benchmarks of the PKI: assembling a trust bundle with the Mozilla roots (one
//! private CA plus the roots of `webpki-root-certs`, as the controller does for every
//! McpServer; the roots' PEM is computed once per process and shared), and issuing one
//! ECDSA P-256 server certificate from a federation CA (key generation, signing, PEM), and
//! encoding the Java truststore `ca-bundle.p12` of that bundle without the per-process memo
//! (what the first reconcile of a new bundle pays: two PBKDF2 derivations of 10,000
//! iterations, AES-256 over the certificates, an HMAC).
//! Run: `cargo bench --bench pki`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mcptrust::pki::bundle::{BundleOptions, CaInput, assemble, truststore};
use mcptrust::pki::issue::{CertificateAuthority, issue, server_request};

fn bench(c: &mut Criterion) {
    let now = mcptrust::pki::bundle::unix_now();
    let ca = CertificateAuthority::generate("mcptrust bench CA", now, 5 * 365 * 86_400)
        .expect("generate the CA");
    let private = [CaInput::new("corp-proxy-ca.pem", ca.cert_pem.clone())];
    let opts = BundleOptions::at_now(true);
    let bundle = assemble(&private, &opts).expect("assemble");
    println!(
        "bundle: {} certificates, ca-bundle.pem {} bytes",
        bundle.certificates,
        bundle.ca_bundle_pem.len()
    );
    println!("ca-bundle.p12: {} bytes", bundle.ca_bundle_p12.len());
    let ders = mcptrust::pki::parse_pem_certificates("bundle", bundle.ca_bundle_pem.as_bytes())
        .expect("the bundle parses");
    let ders: Vec<&[u8]> = ders.iter().map(|d| d.as_ref()).collect();

    let mut group = c.benchmark_group("pki");
    group.bench_function("assemble/1-private-ca+mozilla-roots", |b| {
        b.iter(|| assemble(black_box(&private), &opts))
    });
    let no_roots = BundleOptions::at_now(false);
    group.bench_function("assemble/1-private-ca", |b| {
        b.iter(|| assemble(black_box(&private), &no_roots))
    });
    group.bench_function("truststore/1-private-ca+mozilla-roots", |b| {
        b.iter(|| truststore(black_box(&ders)))
    });
    let req = server_request(
        "github",
        "agents",
        Some("https://github-mcp.agents.svc:8443/mcp/"),
        None,
    )
    .expect("server request");
    group.bench_function("issue/ecdsa-p256-server", |b| {
        b.iter(|| issue(&ca, black_box(&req), now))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
