//! Trust bundle assembly against real certificates: CAs and leaves generated with rcgen in
//! each test, and the real Mozilla roots from `webpki-root-certs`.

use std::collections::HashSet;

use mcptrust::pki::{
    BundleError, BundleOptions, CaInput, TrustBundle, assemble, assemble_with_pinned, inspect,
    parse_pem_certificates, system_roots, write_dir,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// 2027-01-15T08:00:00Z: a fixed "now" for the expiry checks.
const NOW: i64 = 1_800_000_000;

fn opts(include_system_roots: bool) -> BundleOptions {
    BundleOptions {
        include_system_roots,
        now_unix: NOW,
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "mcptrust tests");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    params
}

/// A self-signed CA, valid 2025..2035, ready to issue.
fn new_ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    CertifiedIssuer::self_signed(ca_params(cn), KeyPair::generate().expect("key")).expect("ca")
}

fn leaf_params(dns: &str) -> CertificateParams {
    let mut params = CertificateParams::new(vec![dns.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, dns);
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    params
}

fn certs_of(pem: &str) -> Vec<Vec<u8>> {
    if pem.is_empty() {
        return Vec::new();
    }
    parse_pem_certificates("test", pem.as_bytes())
        .expect("own output parses")
        .into_iter()
        .map(|c| c.to_vec())
        .collect()
}

fn unique_roots() -> usize {
    system_roots()
        .iter()
        .map(|c| mcptrust::pki::sha256_hex(c))
        .collect::<HashSet<_>>()
        .len()
}

fn recompute_sha256(bundle: &TrustBundle) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        bundle.ca_bundle_pem.as_bytes(),
    ))
}

#[test]
fn private_ca_with_system_roots() {
    let ca = new_ca("Corp Proxy CA");
    let bundle = assemble(&[CaInput::new("proxy-ca.pem", ca.pem())], &opts(true)).expect("ok");

    // ca.pem: exactly the private CA.
    assert_eq!(certs_of(&bundle.ca_pem), [ca.der().to_vec()]);
    assert_eq!(bundle.private_cas, 1);
    assert_eq!(bundle.cas.len(), 1);
    assert_eq!(bundle.cas[0].subject, "O=mcptrust tests,CN=Corp Proxy CA");
    assert!(bundle.warnings.is_empty(), "{:?}", bundle.warnings);

    // ca-bundle.pem: the real Mozilla roots, in crate order, then the private CA.
    let in_bundle = certs_of(&bundle.ca_bundle_pem);
    assert_eq!(in_bundle.len(), unique_roots() + 1);
    assert_eq!(bundle.certificates as usize, in_bundle.len());
    assert_eq!(in_bundle[0], system_roots()[0].to_vec());
    assert_eq!(in_bundle.last(), Some(&ca.der().to_vec()));
    let has_isrg = in_bundle.iter().any(|der| {
        let (_, cert) = X509Certificate::from_der(der).expect("x509");
        cert.subject().to_string().contains("ISRG Root X1")
    });
    assert!(has_isrg, "ISRG Root X1 missing from ca-bundle.pem");

    assert_eq!(bundle.sha256, recompute_sha256(&bundle));
    assert_eq!(bundle.sha256.len(), 64);
}

#[test]
fn duplicates_are_counted_once_with_warnings() {
    let ca = new_ca("Dup CA");
    let other = new_ca("Other CA");
    let twice = format!("{}{}{}", ca.pem(), other.pem(), ca.pem());
    let inputs = [
        CaInput::new("a.pem", ca.pem()),
        CaInput::new("b.pem", twice),
    ];
    let bundle = assemble(&inputs, &opts(true)).expect("ok");
    assert_eq!(
        certs_of(&bundle.ca_pem),
        [ca.der().to_vec(), other.der().to_vec()]
    );
    assert_eq!(bundle.private_cas, 2);
    assert_eq!(bundle.certificates as usize, unique_roots() + 2);
    let dups: Vec<_> = bundle
        .warnings
        .iter()
        .filter(|w| w.contains("duplicate"))
        .collect();
    assert_eq!(dups.len(), 2, "{:?}", bundle.warnings);
    assert!(dups[0].starts_with("b.pem: PEM block 0"), "{}", dups[0]);
    assert!(dups[0].contains("a.pem: PEM block 0"), "{}", dups[0]);
    assert!(dups[1].starts_with("b.pem: PEM block 2"), "{}", dups[1]);
}

#[test]
fn a_mozilla_root_given_as_private_ca_is_not_repeated() {
    let root = &system_roots()[0];
    let ca = new_ca("Corp CA");
    let pem = format!("{}{}", mcptrust::pki::encode_pem(root), ca.pem());
    let bundle = assemble(&[CaInput::new("mixed.pem", pem)], &opts(true)).expect("ok");
    assert_eq!(bundle.private_cas, 2);
    assert_eq!(certs_of(&bundle.ca_pem).len(), 2);
    let in_bundle = certs_of(&bundle.ca_bundle_pem);
    assert_eq!(in_bundle.len(), unique_roots() + 1);
    assert_eq!(in_bundle.iter().filter(|d| *d == &root.to_vec()).count(), 1);
    assert!(
        bundle.warnings.iter().any(
            |w| w.starts_with("mixed.pem: PEM block 0") && w.contains("already a Mozilla root")
        ),
        "{:?}",
        bundle.warnings
    );
}

#[test]
fn same_inputs_give_the_same_sha256() {
    let a = new_ca("A CA");
    let b = new_ca("B CA");
    let inputs = [
        CaInput::new("a.pem", a.pem()),
        CaInput::new("b.pem", b.pem()),
    ];
    let first = assemble(&inputs, &opts(true)).expect("ok");
    let second = assemble(&inputs, &opts(true)).expect("ok");
    assert_eq!(first, second);
    assert_eq!(first.sha256, second.sha256);

    // Input order is the private-CA order, so swapping the inputs changes the bytes.
    let swapped = [inputs[1].clone(), inputs[0].clone()];
    let third = assemble(&swapped, &opts(true)).expect("ok");
    assert_ne!(first.sha256, third.sha256);
    assert_eq!(first.certificates, third.certificates);
}

#[test]
fn garbage_file_is_an_error_naming_the_file() {
    let err = assemble(
        &[CaInput::new(
            "/etc/corp/garbage.pem",
            "hello, I am not a certificate\n",
        )],
        &opts(true),
    )
    .expect_err("garbage");
    assert!(matches!(err, BundleError::NotPem { .. }), "{err:?}");
    assert_eq!(err.reason(), "InvalidPem");
    assert!(
        err.to_string().starts_with("/etc/corp/garbage.pem: "),
        "{err}"
    );

    // A CERTIFICATE block whose DER is not X.509.
    let fake = mcptrust::pki::encode_pem(b"definitely not DER");
    let err = assemble(&[CaInput::new("fake.pem", fake)], &opts(true)).expect_err("not x509");
    assert!(
        matches!(err, BundleError::InvalidCertificate { ref source, index: 0, .. } if source == "fake.pem"),
        "{err:?}"
    );
    assert_eq!(err.reason(), "InvalidCertificate");
}

#[test]
fn a_leaf_at_block_1_is_not_a_ca() {
    let ca = new_ca("Corp CA");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = leaf_params("api.example.com")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let pem = format!("{}{}", ca.pem(), leaf.pem());
    let err = assemble(&[CaInput::new("corp.pem", pem)], &opts(true)).expect_err("leaf");
    assert_eq!(
        err,
        BundleError::NotACa {
            source: "corp.pem".into(),
            index: 1,
            subject: "CN=api.example.com".into(),
        }
    );
    assert_eq!(err.reason(), "NotACertificateAuthority");
    assert_eq!(
        err.to_string(),
        "corp.pem: PEM block 1 is a certificate for \"CN=api.example.com\", not a CA \
         (basicConstraints CA:TRUE missing); add the issuing CA instead"
    );
}

#[test]
fn a_self_signed_leaf_is_not_a_ca_but_can_be_pinned() {
    let key = KeyPair::generate().expect("key");
    let leaf = leaf_params("mcp.internal")
        .self_signed(&key)
        .expect("self-signed leaf");

    let err = assemble(&[CaInput::new("server.pem", leaf.pem())], &opts(true)).expect_err("leaf");
    assert!(
        matches!(err, BundleError::NotACa { index: 0, .. }),
        "{err:?}"
    );

    let pinned = [CaInput::from_der("probe/https://mcp.internal", leaf.der())];
    let bundle = assemble_with_pinned(&[], &pinned, &opts(false)).expect("pinned");
    assert_eq!(certs_of(&bundle.ca_pem), [leaf.der().to_vec()]);
    assert_eq!(bundle.ca_bundle_pem, bundle.ca_pem);
    assert_eq!(bundle.cas[0].sha256, mcptrust::pki::sha256_hex(leaf.der()));
}

#[test]
fn a_ca_signed_leaf_cannot_be_pinned() {
    let ca = new_ca("Corp CA");
    let key = KeyPair::generate().expect("key");
    let leaf = leaf_params("api.example.com")
        .signed_by(&key, &ca)
        .expect("leaf");
    let err = assemble_with_pinned(&[], &[CaInput::new("peer", leaf.pem())], &opts(true))
        .expect_err("not self-signed");
    assert!(
        matches!(err, BundleError::NotSelfSigned { index: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Corp CA"), "{err}");
}

#[test]
fn a_forged_self_issued_certificate_cannot_be_pinned() {
    // Same subject as issuer, but signed by a different key: self-issued, not self-signed.
    let ca = new_ca("mcp.internal");
    let key = KeyPair::generate().expect("key");
    let mut params = leaf_params("mcp.internal");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "mcptrust tests");
    let forged = params.signed_by(&key, &ca).expect("forged");
    assert!(inspect(forged.der()).expect("x509").self_issued);
    let err = assemble_with_pinned(&[], &[CaInput::new("peer", forged.pem())], &opts(true))
        .expect_err("signature");
    assert!(matches!(err, BundleError::NotSelfSigned { .. }), "{err:?}");
    assert!(err.to_string().contains("signature"), "{err}");
}

#[test]
fn a_private_key_block_is_an_unexpected_block() {
    let key = KeyPair::generate().expect("key");
    let ca = CertifiedIssuer::self_signed(ca_params("Keyed CA"), key).expect("ca");
    let key_pem = ca.key().serialize_pem();
    let pem = format!("{}{}", ca.pem(), key_pem);
    let err = assemble(&[CaInput::new("tls.pem", pem)], &opts(true)).expect_err("key");
    assert_eq!(
        err,
        BundleError::UnexpectedBlock {
            source: "tls.pem".into(),
            index: 1,
            label: "PRIVATE KEY".into(),
        }
    );
    assert_eq!(err.reason(), "UnexpectedPemBlock");
    let msg = err.to_string();
    assert!(msg.contains("must never be published"), "{msg}");
    // The key material never reaches the message.
    let b64_line = key_pem.lines().nth(1).expect("base64 line");
    assert!(!msg.contains(b64_line));
}

#[test]
fn an_expired_ca_is_kept_with_a_warning() {
    let mut params = ca_params("Old CA");
    params.not_before = rcgen::date_time_ymd(2010, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let old = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
    let fresh = new_ca("Fresh CA");
    let pem = format!("{}{}", fresh.pem(), old.pem());
    let bundle = assemble(&[CaInput::new("cas.pem", pem)], &opts(false)).expect("kept");
    assert_eq!(bundle.private_cas, 2);
    assert_eq!(bundle.warnings.len(), 1, "{:?}", bundle.warnings);
    let w = &bundle.warnings[0];
    assert!(w.starts_with("cas.pem: PEM block 1"), "{w}");
    assert!(w.contains("CN=Old CA"), "{w}");
    assert!(w.contains("expired at 2020-01-01T00:00:00Z"), "{w}");
}

#[test]
fn an_intermediate_ca_is_kept_with_a_warning() {
    let root = new_ca("Corp Root CA");
    let key = KeyPair::generate().expect("key");
    let intermediate = ca_params("Corp Issuing CA")
        .signed_by(&key, &root)
        .expect("intermediate");
    let bundle = assemble(
        &[CaInput::new("issuing.pem", intermediate.pem())],
        &opts(false),
    )
    .expect("ok");
    assert_eq!(bundle.private_cas, 1);
    assert!(
        bundle
            .warnings
            .iter()
            .any(|w| w.contains("intermediate CA") && w.contains("Corp Root CA")),
        "{:?}",
        bundle.warnings
    );
}

#[test]
fn without_system_roots_the_bundle_is_the_private_cas() {
    let a = new_ca("A CA");
    let b = new_ca("B CA");
    let inputs = [
        CaInput::new("a.pem", a.pem()),
        CaInput::new("b.pem", b.pem()),
    ];
    let bundle = assemble(&inputs, &opts(false)).expect("ok");
    assert_eq!(bundle.ca_bundle_pem, bundle.ca_pem);
    assert_eq!(bundle.certificates, 2);
    assert_eq!(bundle.private_cas, 2);
    assert_eq!(bundle.sha256, recompute_sha256(&bundle));

    let err = assemble(&[], &opts(false)).expect_err("empty");
    assert_eq!(err, BundleError::EmptyBundle);
}

#[test]
fn write_dir_writes_the_three_files() {
    let ca = new_ca("Corp CA");
    let bundle = assemble(&[CaInput::new("ca.pem", ca.pem())], &opts(true)).expect("ok");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("nested").join("trust");
    write_dir(&bundle, &dir).expect("write");
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem"),
        bundle.ca_pem
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ca-bundle.pem")).expect("ca-bundle.pem"),
        bundle.ca_bundle_pem
    );
    assert_eq!(
        std::fs::read(dir.join("ca-bundle.p12")).expect("ca-bundle.p12"),
        &bundle.ca_bundle_p12[..]
    );

    // Rewriting replaces the content and leaves no temporary files behind.
    let smaller = assemble(&[CaInput::new("ca.pem", ca.pem())], &opts(false)).expect("ok");
    write_dir(&smaller, &dir).expect("rewrite");
    assert_eq!(
        std::fs::read_to_string(dir.join("ca-bundle.pem")).expect("ca-bundle.pem"),
        smaller.ca_bundle_pem
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ca-bundle.p12", "ca-bundle.pem", "ca.pem"]);
    assert_eq!(
        std::fs::read(dir.join("ca-bundle.p12")).expect("ca-bundle.p12"),
        &smaller.ca_bundle_p12[..]
    );
}
