//! Trust bundle assembly: private CAs (and pinned self-signed certificates) plus, optionally,
//! the Mozilla root program, deduplicated, in a stable order, as the two PEM files that
//! sandbox pods mount, and the same certificates as a PKCS#12 truststore for Java.
//!
//! Why two files (RUNTIMES.md): add-style variables (NODE_EXTRA_CA_CERTS, DENO_CERT) add
//! their file to a built-in store, so they get `ca.pem` with the private CAs only;
//! replace-style variables (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, PIP_CERT,
//! GIT_SSL_CAINFO, AWS_CA_BUNDLE, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH) replace the store, so
//! they get `ca-bundle.pem` with the system roots as well. A JVM reads no PEM variable at
//! all: `JAVA_TOOL_OPTIONS` points `javax.net.ssl.trustStore` at `ca-bundle.p12`, which
//! holds the certificates of `ca-bundle.pem` as PKCS#12 trusted-certificate entries.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::pki_types::CertificateDer;

use super::BundleError;
use super::pem::{CertInfo, encode_pem, inspect, parse_pem_certificates, sha256_hex};

/// File (and ConfigMap key) holding the private CAs only: `ca.pem`.
pub const CA_FILE: &str = "ca.pem";
/// File (and ConfigMap key) holding the system roots plus the private CAs: `ca-bundle.pem`.
pub const BUNDLE_FILE: &str = "ca-bundle.pem";
/// File (and ConfigMap `binaryData` key) holding the certificates of [`BUNDLE_FILE`] as a
/// PKCS#12 truststore for Java: `ca-bundle.p12`.
pub const TRUSTSTORE_FILE: &str = "ca-bundle.p12";
/// Password of [`TRUSTSTORE_FILE`]: `changeit`, the JDK's own default for `cacerts`. It
/// protects nothing (the file holds public certificates only and is published in a
/// ConfigMap); Java needs one because PKCS#12 files carry a MAC and encrypted certificate
/// bags, and with no password a JVM would read the truststore as empty.
pub const TRUSTSTORE_PASSWORD: &str = "changeit";

/// One source of PEM certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInput {
    /// How errors and warnings name this input: a file path, or
    /// `configmap/<namespace>/<name>[<key>]` / `secret/<namespace>/<name>[<key>]`.
    pub source: String,
    /// The PEM text: one or more `CERTIFICATE` blocks and nothing else (explanatory text
    /// between blocks is allowed, other blocks are errors; see
    /// [`parse_pem_certificates`]).
    pub pem: Vec<u8>,
}

impl CaInput {
    /// An input from PEM bytes.
    pub fn new(source: impl Into<String>, pem: impl Into<Vec<u8>>) -> Self {
        Self {
            source: source.into(),
            pem: pem.into(),
        }
    }

    /// An input from one DER certificate (e.g. the peer certificate a probe captured, for
    /// [`assemble_with_pinned`]); it is PEM-encoded with [`encode_pem`].
    pub fn from_der(source: impl Into<String>, der: &[u8]) -> Self {
        Self::new(source, encode_pem(der))
    }
}

/// How to assemble a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleOptions {
    /// Put the Mozilla root program ([`system_roots`]) at the head of `ca-bundle.pem`
    /// (`spec.trust.includeSystemRoots`, default true). Without it, `ca-bundle.pem` equals
    /// `ca.pem`.
    pub include_system_roots: bool,
    /// "Now" in Unix seconds, for the expiry and not-yet-valid warnings. Injectable so that
    /// tests and reconciles are deterministic; [`BundleOptions::at_now`] reads the clock.
    pub now_unix: i64,
}

impl BundleOptions {
    /// Options with `now_unix` read from the system clock.
    pub fn at_now(include_system_roots: bool) -> Self {
        Self {
            include_system_roots,
            now_unix: unix_now(),
        }
    }
}

/// The current time in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An assembled trust bundle: the contents of [`CA_FILE`] and [`BUNDLE_FILE`] plus facts
/// for status, annotations and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    /// `ca.pem`: the private CAs (then pinned certificates), deduplicated, in input order,
    /// PEM with 64-column lines. Empty when no CA was given (Node.js then prints a warning
    /// for NODE_EXTRA_CA_CERTS, so injectors may skip that variable when
    /// [`private_cas`](Self::private_cas) is 0).
    pub ca_pem: String,
    /// `ca-bundle.pem`: the Mozilla roots (`webpki_root_certs::TLS_SERVER_ROOT_CERTS`, in
    /// crate order) when included, then the certificates of `ca_pem` that are not already
    /// roots. Deduplicated by the SHA-256 of the DER.
    pub ca_bundle_pem: String,
    /// Lowercase hex SHA-256 of the bytes of `ca_bundle_pem` (the
    /// `mcptrust.io/trust-bundle-sha256` annotation and `status.trustBundle.sha256`).
    pub sha256: String,
    /// `ca-bundle.p12`: the certificates of `ca_bundle_pem`, in the same order, as PKCS#12
    /// trusted-certificate entries (each bag carries Java's trustedKeyUsage attribute, OID
    /// 2.16.840.1.113894.746875.1.1, so `keytool -list` and a JVM's TrustManagerFactory see
    /// them). Aliases are `mcptrust-NNNNN-<first 12 hex digits of the certificate's SHA-256>`,
    /// numbered from 0 in bundle order. Password [`TRUSTSTORE_PASSWORD`]; certificate bags
    /// encrypted with PBES2 (PBKDF2-SHA256, AES-256-CBC) and the file MACed with
    /// HMAC-SHA256, 10,000 iterations each, the JDK's defaults.
    ///
    /// PKCS#12 salts are random, so the bytes are not a function of the certificates. To
    /// keep a ConfigMap from changing at each reconcile, the bytes are memoised per
    /// process by `sha256`: the same `ca_bundle_pem` gives the same `ca_bundle_p12` until
    /// the process restarts (or more than 64 distinct bundles were built).
    pub ca_bundle_p12: Arc<[u8]>,
    /// Lowercase hex SHA-256 of `ca_bundle_p12` (the ConfigMap's
    /// `mcptrust.io/truststore-sha256` annotation and `mcptrust bundle`'s summary).
    pub p12_sha256: String,
    /// Number of certificates in `ca_bundle_pem`.
    pub certificates: u32,
    /// Number of certificates in `ca_pem` (private CAs plus pinned certificates).
    pub private_cas: u32,
    /// What was accepted but deserves attention, one sentence each, naming the source and
    /// PEM block: an expired or not-yet-valid certificate (kept), a duplicate (dropped), a
    /// private CA that is already a Mozilla root, a CA profile that strict clients reject
    /// (non-critical basicConstraints, keyUsage without keyCertSign), an intermediate CA.
    pub warnings: Vec<String>,
    /// A summary of each certificate in `ca_pem`, in the same order.
    pub cas: Vec<CertInfo>,
}

/// The Mozilla root program as compiled into this binary: the `webpki-root-certs` crate's
/// `TLS_SERVER_ROOT_CERTS` (DER, in crate order). Updating the crate updates the roots.
pub fn system_roots() -> &'static [CertificateDer<'static>] {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
}

/// The PEM text and fingerprints of [`system_roots`], computed once per process.
struct Roots {
    pem: String,
    fingerprints: HashSet<String>,
    count: u32,
    /// The deduplicated roots, in crate order.
    unique: Vec<&'static CertificateDer<'static>>,
}

fn roots() -> &'static Roots {
    static ROOTS: OnceLock<Roots> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = Roots {
            pem: String::new(),
            fingerprints: HashSet::new(),
            count: 0,
            unique: Vec::new(),
        };
        for der in system_roots() {
            if roots.fingerprints.insert(sha256_hex(der)) {
                roots.pem.push_str(&encode_pem(der));
                roots.count += 1;
                roots.unique.push(der);
            }
        }
        roots
    })
}

/// Assemble a bundle from private CA inputs. Same as [`assemble_with_pinned`] with no
/// pinned inputs.
///
/// # Errors
/// See [`assemble_with_pinned`].
pub fn assemble(inputs: &[CaInput], opts: &BundleOptions) -> Result<TrustBundle, BundleError> {
    assemble_with_pinned(inputs, &[], opts)
}

/// Assemble a bundle from private CA inputs and pinned self-signed certificates.
///
/// - Every certificate of `inputs` must be a CA (basicConstraints CA:TRUE). A leaf,
///   including a self-signed one, is [`BundleError::NotACa`].
/// - Every certificate of `pinned` skips that check but must really be self-signed: issuer
///   equals subject and its own key verifies its signature (DESIGN.md,
///   `spec.trust.pinServerCertificate`; a self-signed server certificate is its own trust
///   anchor). Otherwise [`BundleError::NotSelfSigned`]. Use [`CaInput::from_der`] for a
///   certificate captured by a probe.
///
/// Certificates are deduplicated by the SHA-256 of their DER: the first occurrence wins
/// and each later one is dropped with a warning. `ca_pem` holds the private CAs in input
/// order, then the pinned certificates; `ca_bundle_pem` holds the system roots (if
/// included) followed by the certificates of `ca_pem` that are not roots. The same inputs
/// and options always give byte-identical output, hence the same `sha256`.
///
/// Warnings (the certificate is kept): expired or not yet valid at `opts.now_unix`;
/// basicConstraints not critical (Python 3.13+ strict X.509 rejects such a CA,
/// cpython#107361, RUNTIMES.md); keyUsage without keyCertSign; an intermediate CA (issuer
/// differs from subject); a private CA that is already a Mozilla root.
///
/// # Errors
/// The first problem found, in input order and block order: any error of
/// [`parse_pem_certificates`], [`BundleError::InvalidCertificate`],
/// [`BundleError::NotACa`], [`BundleError::NotSelfSigned`], and
/// [`BundleError::EmptyBundle`] when the result would hold no certificate at all.
pub fn assemble_with_pinned(
    inputs: &[CaInput],
    pinned: &[CaInput],
    opts: &BundleOptions,
) -> Result<TrustBundle, BundleError> {
    let mut warnings = Vec::new();
    // Fingerprint → where it was first seen, e.g. "corp.pem: PEM block 0".
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut kept: Vec<(CertificateDer<'static>, CertInfo)> = Vec::new();

    let tagged = inputs
        .iter()
        .map(|input| (input, false))
        .chain(pinned.iter().map(|input| (input, true)));
    for (input, is_pinned) in tagged {
        let source = &input.source;
        for (index, der) in parse_pem_certificates(source, &input.pem)?
            .into_iter()
            .enumerate()
        {
            let info = inspect(&der).map_err(|e| BundleError::InvalidCertificate {
                source: source.clone(),
                index,
                detail: e.detail,
            })?;
            if is_pinned {
                super::pem::verify_self_signed(&der).map_err(|detail| {
                    BundleError::NotSelfSigned {
                        source: source.clone(),
                        index,
                        subject: info.subject.clone(),
                        detail,
                    }
                })?;
            } else if !info.is_ca {
                return Err(BundleError::NotACa {
                    source: source.clone(),
                    index,
                    subject: info.subject,
                });
            }

            let at = format!("{source}: PEM block {index}");
            if let Some(first) = seen.get(&info.sha256) {
                warnings.push(format!(
                    "{at} (\"{}\") duplicates {first}; the duplicate was dropped",
                    info.subject
                ));
                continue;
            }
            seen.insert(info.sha256.clone(), at.clone());
            profile_warnings(&at, &info, is_pinned, opts.now_unix, &mut warnings);
            kept.push((der, info));
        }
    }

    let mut ca_pem = String::new();
    let mut ca_bundle_pem = String::new();
    let mut certificates = 0u32;
    // The DER of each certificate of ca_bundle_pem, in order, for the truststore.
    let mut bundle_ders: Vec<&[u8]> = Vec::new();
    if opts.include_system_roots {
        let roots = roots();
        ca_bundle_pem.push_str(&roots.pem);
        certificates = roots.count;
        bundle_ders.extend(roots.unique.iter().map(|d| d.as_ref()));
    }
    for (der, info) in &kept {
        let pem = encode_pem(der);
        ca_pem.push_str(&pem);
        if opts.include_system_roots && roots().fingerprints.contains(&info.sha256) {
            warnings.push(format!(
                "{} (\"{}\") is already a Mozilla root; it is kept in {CA_FILE} but not \
                 repeated in {BUNDLE_FILE}",
                seen.get(&info.sha256)
                    .map_or("a private CA", String::as_str),
                info.subject
            ));
            continue;
        }
        ca_bundle_pem.push_str(&pem);
        bundle_ders.push(der.as_ref());
        certificates += 1;
    }
    if certificates == 0 {
        return Err(BundleError::EmptyBundle);
    }

    let sha256 = sha256_hex(ca_bundle_pem.as_bytes());
    let ca_bundle_p12 = truststore_memoised(&sha256, &bundle_ders)?;
    Ok(TrustBundle {
        p12_sha256: sha256_hex(&ca_bundle_p12),
        ca_bundle_p12,
        sha256,
        ca_pem,
        ca_bundle_pem,
        certificates,
        private_cas: u32::try_from(kept.len()).unwrap_or(u32::MAX),
        warnings,
        cas: kept.into_iter().map(|(_, info)| info).collect(),
    })
}

/// How many distinct truststores [`truststore_memoised`] keeps before it starts afresh.
const TRUSTSTORE_MEMO_LIMIT: usize = 64;

/// [`truststore`] of `ders`, memoised by `key` (the SHA-256 of the PEM bundle the DERs
/// came from), so that the same bundle gives byte-identical PKCS#12 in one process.
fn truststore_memoised(key: &str, ders: &[&[u8]]) -> Result<Arc<[u8]>, BundleError> {
    static MEMO: OnceLock<Mutex<HashMap<String, Arc<[u8]>>>> = OnceLock::new();
    let memo = MEMO.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(hit) = memo.lock().ok().and_then(|m| m.get(key).cloned()) {
        return Ok(hit);
    }
    let built: Arc<[u8]> = truststore(ders)?.into();
    if let Ok(mut m) = memo.lock() {
        if m.len() >= TRUSTSTORE_MEMO_LIMIT {
            m.clear();
        }
        // Another thread may have built the same bundle meanwhile: keep the first.
        return Ok(m.entry(key.to_owned()).or_insert(built).clone());
    }
    Ok(built)
}

/// A PKCS#12 truststore (password [`TRUSTSTORE_PASSWORD`]) holding `ders` as
/// trusted-certificate entries, in order, built with the `p12-keystore` crate (see
/// [`TrustBundle::ca_bundle_p12`] for aliases and algorithms).
///
/// # Errors
/// [`BundleError::Truststore`] when the crate rejects a certificate or fails to encode.
pub fn truststore(ders: &[&[u8]]) -> Result<Vec<u8>, BundleError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry};
    let mut store = KeyStore::new();
    for (i, der) in ders.iter().enumerate() {
        let cert = Certificate::from_der(der).map_err(|e| BundleError::Truststore {
            detail: format!("certificate {i} of the bundle: {e}"),
        })?;
        let fingerprint = sha256_hex(der);
        let alias = format!("mcptrust-{i:05}-{}", &fingerprint[..12]);
        store.add_entry(&alias, KeyStoreEntry::Certificate(cert));
    }
    store
        .writer(TRUSTSTORE_PASSWORD)
        .write()
        .map_err(|e| BundleError::Truststore {
            detail: e.to_string(),
        })
}

/// Warnings about a kept certificate's validity window and CA profile.
fn profile_warnings(
    at: &str,
    info: &CertInfo,
    is_pinned: bool,
    now_unix: i64,
    warnings: &mut Vec<String>,
) {
    let subject = &info.subject;
    if now_unix > info.not_after {
        warnings.push(format!(
            "{at} (\"{subject}\") expired at {} (notAfter); it is kept, but clients reject \
             certificates that chain to it: renew it",
            info.not_after_rfc3339()
        ));
    } else if now_unix < info.not_before {
        warnings.push(format!(
            "{at} (\"{subject}\") is not valid before {} (notBefore); it is kept, but clients \
             reject it until then: check the issuer's clock",
            info.not_before_rfc3339()
        ));
    }
    if is_pinned || !info.is_ca {
        return;
    }
    if !info.basic_constraints_critical {
        warnings.push(format!(
            "{at} (\"{subject}\") has a basicConstraints extension that is not marked \
             critical; Python 3.13+ strict X.509 verification rejects such a CA: reissue it \
             with critical basicConstraints CA:TRUE"
        ));
    }
    if info.key_cert_sign == Some(false) {
        warnings.push(format!(
            "{at} (\"{subject}\") has a keyUsage extension without keyCertSign, so verifiers \
             reject the certificates it signed: reissue it with keyUsage keyCertSign"
        ));
    }
    if !info.self_issued {
        warnings.push(format!(
            "{at} (\"{subject}\") is an intermediate CA issued by \"{}\"; clients that need a \
             self-signed trust anchor (OpenSSL without X509_V_FLAG_PARTIAL_CHAIN) also need \
             that root: add it too",
            info.issuer
        ));
    }
}

/// Write `bundle` into `dir` as [`CA_FILE`], [`BUNDLE_FILE`] and [`TRUSTSTORE_FILE`],
/// creating `dir` (and its parents) if missing.
///
/// Each file is replaced atomically: written to a hidden temporary file in `dir`, flushed
/// to disk, then renamed over the target, so a reader sees the old or the new content,
/// never a partial file. The files are replaced one after the other (`ca.pem` first, then
/// `ca-bundle.pem`, then `ca-bundle.p12`), not as a set.
///
/// # Errors
/// Any I/O error from creating the directory or writing, syncing or renaming a file; the
/// temporary file is removed on failure.
pub fn write_dir(bundle: &TrustBundle, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    write_atomic(dir, CA_FILE, bundle.ca_pem.as_bytes())?;
    write_atomic(dir, BUNDLE_FILE, bundle.ca_bundle_pem.as_bytes())?;
    write_atomic(dir, TRUSTSTORE_FILE, &bundle.ca_bundle_p12)?;
    // Make the renames durable; best effort (not every platform can sync a directory).
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(include_system_roots: bool) -> BundleOptions {
        BundleOptions {
            include_system_roots,
            now_unix: 1_800_000_000,
        }
    }

    #[test]
    fn roots_only_bundle_has_every_root_once() {
        let bundle = assemble(&[], &opts(true)).expect("roots only");
        assert_eq!(bundle.ca_pem, "");
        assert_eq!(bundle.private_cas, 0);
        let unique: HashSet<_> = system_roots().iter().map(|c| sha256_hex(c)).collect();
        assert_eq!(bundle.certificates as usize, unique.len());
        assert_eq!(
            bundle
                .ca_bundle_pem
                .matches("-----BEGIN CERTIFICATE-----")
                .count(),
            unique.len()
        );
        assert!(bundle.warnings.is_empty(), "{:?}", bundle.warnings);
    }

    #[test]
    fn nothing_at_all_is_an_empty_bundle_error() {
        let err = assemble(&[], &opts(false)).expect_err("empty");
        assert_eq!(err, BundleError::EmptyBundle);
        assert_eq!(err.reason(), "EmptyTrustBundle");
    }

    #[test]
    fn a_root_given_as_pinned_is_accepted_and_not_repeated() {
        let isrg = system_roots()
            .iter()
            .find(|c| inspect(c).is_ok_and(|i| i.subject.starts_with("CN=ISRG Root X1,")))
            .expect("ISRG Root X1");
        let input = CaInput::from_der("probe/isrg", isrg);
        let bundle = assemble_with_pinned(&[], &[input], &opts(true)).expect("pinned root");
        assert_eq!(bundle.private_cas, 1);
        assert_eq!(bundle.certificates, roots().count);
        assert!(
            bundle
                .warnings
                .iter()
                .any(|w| w.contains("already a Mozilla root"))
        );
    }

    #[test]
    fn truststore_holds_the_bundle_in_order_and_is_memoised() {
        let bundle = assemble(&[], &opts(true)).expect("roots only");
        let store = p12_keystore::KeyStore::from_pkcs12(
            &bundle.ca_bundle_p12,
            TRUSTSTORE_PASSWORD,
            p12_keystore::Pkcs12ImportPolicy::Strict,
        )
        .expect("reads back");
        // Strict import keeps only bags with Java's trusted-certificate attribute.
        assert_eq!(store.entries_len(), bundle.certificates as usize);
        let in_pem =
            parse_pem_certificates("bundle", bundle.ca_bundle_pem.as_bytes()).expect("pem parses");
        for ((alias, entry), (i, der)) in store.entries().zip(in_pem.iter().enumerate()) {
            let p12_keystore::KeyStoreEntry::Certificate(cert) = entry else {
                panic!("{alias} is not a certificate entry");
            };
            assert_eq!(cert.as_der(), der.as_ref(), "{alias}");
            assert_eq!(
                alias,
                &format!("mcptrust-{i:05}-{}", &sha256_hex(der)[..12])
            );
        }
        assert_eq!(bundle.p12_sha256, sha256_hex(&bundle.ca_bundle_p12));
        let again = assemble(&[], &opts(true)).expect("roots only");
        assert_eq!(again.ca_bundle_p12, bundle.ca_bundle_p12, "memoised");
        // PKCS#12 salts are random: the memo, not the encoder, keeps bytes stable.
        let fresh = truststore(&[in_pem[0].as_ref()]).expect("one cert");
        assert_ne!(fresh, truststore(&[in_pem[0].as_ref()]).expect("one cert"));
    }

    #[test]
    fn write_atomic_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_atomic(dir.path(), "x.pem", b"one").expect("write");
        write_atomic(dir.path(), "x.pem", b"two").expect("rewrite");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["x.pem"]);
        assert_eq!(fs::read(dir.path().join("x.pem")).expect("read"), b"two");
    }
}
