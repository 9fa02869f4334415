//! The webhook's self-managed serving certificate (`--webhook-cert-mode selfManaged`):
//!
//! - the pure [`plan`] with a fixed clock: creation, keeping, leaf renewal, CA rotation with
//!   overlap, promotion only once published, dropping the expired CA, and a 12-year
//!   timeline checked with rustls' own verifier at each step;
//! - [`reconcile`] against kube's mock API service (tower-test), request by request in the
//!   `ApiServerVerifier` style (the shared `tests/mock_api`): creation, the create race (409),
//!   the update race (409 on the resourceVersion precondition), nothing to do, a caBundle
//!   reset by an upgrade;
//! - a real TLS handshake with `mcptrust::webhook::serve` on 127.0.0.1, dialled by the
//!   Service's DNS name through SNI with a client trusting only the published caBundle,
//!   across a CA rotation and a hot reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_api;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::{Method, Request, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use mcptrust::controller::webhook_cert::{
    CA_BUNDLE, CA_KEY, Change, NEXT_CA_CRT, NEXT_CA_KEY, Outcome, Plan, Published, Settings,
    WebhookCertError, build_secret, plan, reconcile,
};
use mcptrust::pki::IssueReason;
use mock_api::{HANG_GUARD, Verifier, decode};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};

/// 2026-11-21T00:00:00Z.
const NOW: i64 = 1_795_219_200;
const DAY: i64 = 86_400;
const YEAR: i64 = 365 * DAY;
const SERVICE_DNS: &str = "mcptrust-webhook.mcptrust.svc";
const SECRET_PATH: &str = "/api/v1/namespaces/mcptrust/secrets/mcptrust-webhook-tls";
const CONFIG_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mcptrust";

fn settings() -> Settings {
    Settings {
        namespace: "mcptrust".into(),
        secret_name: "mcptrust-webhook-tls".into(),
        config_name: "mcptrust".into(),
        service_name: "mcptrust-webhook".into(),
        ca_validity_secs: 5 * YEAR,
        leaf_validity_secs: YEAR,
        promotion_delay_secs: 300,
    }
}

// ---------------------------------------------------------------------------------------
// Helpers on plans and Secrets.

/// The Secret the API server would hold after writing `plan`'s data.
fn stored(plan: &Plan, resource_version: &str) -> Secret {
    build_secret(
        &settings(),
        plan.data.clone().expect("the plan writes"),
        Some(resource_version.to_string()),
    )
}

fn key(secret: &Secret, k: &str) -> Vec<u8> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(k))
        .map(|b| b.0.clone())
        .unwrap_or_else(|| panic!("{k} missing"))
}

fn certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    mcptrust::pki::parse_pem_certificates("test", pem).expect("PEM certificates")
}

fn sha(der: &[u8]) -> String {
    mcptrust::pki::sha256_hex(der)
}

/// SHA-256 of each certificate of a PEM bundle, in order.
fn bundle_shas(pem: &[u8]) -> Vec<String> {
    certs(pem).iter().map(|c| sha(c)).collect()
}

/// DNS SANs, issuer (RFC 4514-ish) and serverAuth of the first certificate of `pem`.
fn leaf_info(pem: &[u8]) -> (Vec<String>, String, bool) {
    let der = certs(pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der[0]).expect("x509");
    let mut dns = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                dns.push(d.to_string());
            }
        }
    }
    let server_auth = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|e| e.value.server_auth);
    (dns, cert.issuer().to_string(), server_auth)
}

/// Asserts that the first certificate of `leaf_pem` is a serverAuth certificate for the
/// Service's four DNS names, issued by (the subject of) the first certificate of `ca_pem`.
fn assert_service_leaf(leaf_pem: &[u8], ca_pem: &[u8]) {
    let (dns, issuer, server_auth) = leaf_info(leaf_pem);
    assert_eq!(
        dns,
        [
            "mcptrust-webhook",
            "mcptrust-webhook.mcptrust",
            "mcptrust-webhook.mcptrust.svc",
            "mcptrust-webhook.mcptrust.svc.cluster.local"
        ]
    );
    assert!(server_auth);
    assert_eq!(issuer, subject(ca_pem));
}

fn subject(pem: &[u8]) -> String {
    let der = certs(pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der[0]).expect("x509");
    cert.subject().to_string()
}

/// Verifies `leaf_pem` for [`SERVICE_DNS`] at `at` (Unix seconds) with rustls' WebPKI
/// verifier, trusting only the CAs of `bundle_pem` (what the API server does with the
/// caBundle).
fn verify(leaf_pem: &[u8], bundle_pem: &[u8], at: i64) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(bundle_pem) {
        roots.add(c).expect("root");
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        mcptrust::tls::crypto_provider(),
    )
    .build()
    .expect("verifier");
    let leaf = certs(leaf_pem).remove(0);
    verifier
        .verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(SERVICE_DNS).expect("name"),
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(at).expect("time"))),
        )
        .map(|_| ())
}

fn published(bundle: &[u8]) -> Published {
    Published::Bundles(vec![bundle.to_vec(), bundle.to_vec()])
}

// ---------------------------------------------------------------------------------------
// (1) The pure plan.

#[test]
fn nothing_creates_everything() {
    let p = plan(None, &Published::Missing, &settings(), NOW).expect("plan");
    assert!(
        matches!(p.changes[0], Change::NewCa { ref reason } if reason.contains("does not exist")),
        "{:?}",
        p.changes
    );
    assert!(p.changes.contains(&Change::LeafIssued {
        reason: IssueReason::DoesNotExist,
        message: "the Secret does not exist".into()
    }));
    assert!(
        p.changes
            .contains(&Change::BundleChanged { cas: 1, dropped: 0 })
    );
    let s = stored(&p, "1");
    let keys: Vec<&str> = s
        .data
        .as_ref()
        .expect("data")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["ca-bundle.crt", "ca.crt", "ca.key", "tls.crt", "tls.key"]
    );
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        key(&s, CA_BUNDLE),
        key(&s, "ca.crt"),
        "one CA: it is the bundle"
    );
    assert_eq!(p.ca_bundle, key(&s, CA_BUNDLE));
    assert_service_leaf(&key(&s, "tls.crt"), &key(&s, "ca.crt"));
    assert!(subject(&key(&s, "ca.crt")).starts_with("CN=mcptrust webhook CA 2026-11-21"));
    verify(&key(&s, "tls.crt"), &p.ca_bundle, NOW).expect("the leaf verifies");
    // The CA is ECDSA P-256 and lives 5 years (backdated 1 h).
    let ca = mcptrust::pki::CertificateAuthority::from_pem(
        &String::from_utf8(key(&s, "ca.crt")).expect("utf8"),
        &String::from_utf8(key(&s, CA_KEY)).expect("utf8"),
    )
    .expect("CA loads");
    assert_eq!(ca.not_after(), NOW + 5 * YEAR);
    // Next look: the leaf's renewal, at two thirds of its life.
    let leaf_not_before = NOW - 300;
    let leaf_not_after = NOW + YEAR;
    assert_eq!(
        p.next_check,
        leaf_not_after - YEAR / 3,
        "renewal of [{leaf_not_before}, {leaf_not_after}]"
    );
}

#[test]
fn a_valid_secret_is_kept() {
    let first = plan(None, &Published::Missing, &settings(), NOW).expect("plan");
    let s = stored(&first, "1");
    for at in [NOW + DAY, NOW + 200 * DAY] {
        let p = plan(Some(&s), &published(&first.ca_bundle), &settings(), at).expect("plan");
        assert!(p.changes.is_empty(), "{:?}", p.changes);
        assert!(!p.writes());
        assert_eq!(p.ca_bundle, first.ca_bundle);
        assert_eq!(p.next_check, first.next_check);
    }
}

#[test]
fn a_due_leaf_is_reissued_by_the_same_ca() {
    let first = plan(None, &Published::Missing, &settings(), NOW).expect("plan");
    let s = stored(&first, "1");
    let at = first.next_check + 1;
    let p = plan(Some(&s), &published(&first.ca_bundle), &settings(), at).expect("plan");
    assert!(
        matches!(
            p.changes.as_slice(),
            [Change::LeafIssued {
                reason: IssueReason::Renewing,
                ..
            }]
        ),
        "{:?}",
        p.changes
    );
    let renewed = stored(&p, "2");
    assert_eq!(key(&renewed, "ca.crt"), key(&s, "ca.crt"));
    assert_eq!(key(&renewed, CA_KEY), key(&s, CA_KEY));
    assert_eq!(key(&renewed, CA_BUNDLE), key(&s, CA_BUNDLE));
    assert_ne!(key(&renewed, "tls.crt"), key(&s, "tls.crt"));
    assert_ne!(key(&renewed, "tls.key"), key(&s, "tls.key"));
    verify(&key(&renewed, "tls.crt"), &first.ca_bundle, at).expect("same CA");
    assert!(p.next_check > at + 200 * DAY);
}

#[test]
fn a_broken_leaf_is_reissued_and_a_wrong_service_name_too() {
    let first = plan(None, &Published::Missing, &settings(), NOW).expect("plan");
    let mut s = stored(&first, "1");
    s.data.as_mut().expect("data").insert(
        "tls.key".into(),
        k8s_openapi::ByteString(b"garbage".to_vec()),
    );
    let p = plan(
        Some(&s),
        &published(&first.ca_bundle),
        &settings(),
        NOW + DAY,
    )
    .expect("plan");
    assert!(matches!(
        p.changes.as_slice(),
        [Change::LeafIssued {
            reason: IssueReason::InvalidKeyPair,
            ..
        }]
    ));
    let mut renamed = settings();
    renamed.service_name = "webhook".into();
    let p = plan(
        Some(&stored(&first, "1")),
        &published(&first.ca_bundle),
        &renamed,
        NOW + DAY,
    )
    .expect("plan");
    assert!(matches!(
        p.changes.as_slice(),
        [Change::LeafIssued {
            reason: IssueReason::RequestChanged,
            ..
        }]
    ));
}

/// A Secret created at `created`, and its plan, seen at `at`.
fn aged(created: i64, at: i64, published_bundle: Option<&[u8]>) -> (Plan, Secret, Plan) {
    let first = plan(None, &Published::Missing, &settings(), created).expect("plan");
    let s = stored(&first, "1");
    let bundle = published_bundle.map_or_else(|| first.ca_bundle.clone(), <[u8]>::to_vec);
    let p = plan(Some(&s), &published(&bundle), &settings(), at).expect("plan");
    (first, s, p)
}

#[test]
fn a_ca_near_expiry_gets_a_successor_in_the_bundle_first() {
    // Created 3.4 years ago: past two thirds of its 5 years.
    let created = NOW - 3 * YEAR - 146 * DAY;
    let (first, old, p) = aged(created, NOW, None);
    assert!(
        p.changes
            .iter()
            .any(|c| matches!(c, Change::CaRotationStarted { current_not_after, .. } if *current_not_after == created + 5 * YEAR)),
        "{:?}",
        p.changes
    );
    assert!(
        p.changes
            .contains(&Change::BundleChanged { cas: 2, dropped: 0 })
    );
    let rotating = stored(&p, "2");
    // The signing CA is unchanged, the successor waits in next-ca.*.
    assert_eq!(key(&rotating, "ca.crt"), key(&old, "ca.crt"));
    assert_eq!(key(&rotating, CA_KEY), key(&old, CA_KEY));
    let next = key(&rotating, NEXT_CA_CRT);
    assert!(!key(&rotating, NEXT_CA_KEY).is_empty());
    // Both in the bundle, the old first (ordered by notBefore).
    let shas = bundle_shas(&p.ca_bundle);
    assert_eq!(
        shas,
        [sha(&certs(&key(&old, "ca.crt"))[0]), sha(&certs(&next)[0])]
    );
    assert_eq!(key(&rotating, CA_BUNDLE), p.ca_bundle);
    // The leaf (expired after 3.4 years) was reissued by the *current* CA, which the
    // published bundle already trusts.
    assert_eq!(
        leaf_info(&key(&rotating, "tls.crt")).1,
        subject(&key(&old, "ca.crt"))
    );
    verify(&key(&rotating, "tls.crt"), &first.ca_bundle, NOW).expect("trusted before the patch");
    // The next look is the promotion, 5 minutes on.
    assert_eq!(p.next_check, NOW + 300);
}

#[test]
fn the_successor_signs_only_once_published_and_the_old_ca_stays_until_it_expires() {
    let created = NOW - 3 * YEAR - 146 * DAY;
    let (first, _, p) = aged(created, NOW, None);
    let rotating = stored(&p, "2");
    let both = p.ca_bundle.clone();
    let old_ca = key(&rotating, "ca.crt");
    let next = key(&rotating, NEXT_CA_CRT);

    // Not published yet (the configuration still holds only the old CA): no promotion,
    // whatever the time.
    let waiting = plan(
        Some(&rotating),
        &published(&first.ca_bundle),
        &settings(),
        NOW + DAY,
    )
    .expect("plan");
    assert!(waiting.changes.is_empty(), "{:?}", waiting.changes);
    assert_eq!(waiting.next_check, NOW + DAY + 60, "look again in a minute");
    // Published by one webhook entry only: still no promotion.
    let half = Published::Bundles(vec![both.clone(), first.ca_bundle.clone()]);
    assert!(
        plan(Some(&rotating), &half, &settings(), NOW + DAY)
            .expect("plan")
            .changes
            .is_empty()
    );
    // Published, but younger than the promotion delay: wait until it is due.
    let early = plan(Some(&rotating), &published(&both), &settings(), NOW + 60).expect("plan");
    assert!(early.changes.is_empty(), "{:?}", early.changes);
    assert_eq!(early.next_check, NOW + 300);

    // Published and old enough: promoted, leaf reissued by the successor, the bundle keeps both.
    let at = NOW + 300;
    let promoted = plan(Some(&rotating), &published(&both), &settings(), at).expect("plan");
    assert!(
        matches!(
            promoted.changes.as_slice(),
            [
                Change::CaPromoted { .. },
                Change::LeafIssued {
                    reason: IssueReason::IncorrectIssuer,
                    ..
                }
            ]
        ),
        "{:?}",
        promoted.changes
    );
    assert_eq!(
        promoted.ca_bundle, both,
        "same bundle: no caBundle patch needed"
    );
    let after = stored(&promoted, "3");
    assert_eq!(key(&after, "ca.crt"), next);
    assert!(
        after
            .data
            .as_ref()
            .expect("data")
            .get(NEXT_CA_CRT)
            .is_none()
    );
    assert!(
        after
            .data
            .as_ref()
            .expect("data")
            .get(NEXT_CA_KEY)
            .is_none()
    );
    assert_eq!(leaf_info(&key(&after, "tls.crt")).1, subject(&next));
    verify(&key(&after, "tls.crt"), &both, at).expect("new leaf, published bundle");
    verify(&key(&rotating, "tls.crt"), &both, at).expect("old leaf, still served somewhere");
    assert!(
        verify(&key(&after, "tls.crt"), &first.ca_bundle, at).is_err(),
        "the old bundle alone would not do: hence the overlap"
    );

    // The old CA leaves the bundle when it expires.
    let old_expiry = created + 5 * YEAR;
    let kept = plan(Some(&after), &published(&both), &settings(), old_expiry - 1).expect("plan");
    assert!(
        !kept
            .changes
            .iter()
            .any(|c| matches!(c, Change::BundleChanged { .. })),
        "{:?}",
        kept.changes
    );
    let dropped = plan(Some(&after), &published(&both), &settings(), old_expiry + 1).expect("plan");
    assert!(
        dropped
            .changes
            .contains(&Change::BundleChanged { cas: 1, dropped: 1 }),
        "{:?}",
        dropped.changes
    );
    assert_eq!(bundle_shas(&dropped.ca_bundle), [sha(&certs(&next)[0])]);
    assert_eq!(bundle_shas(&old_ca).len(), 1);
}

#[test]
fn an_expired_ca_without_successor_is_replaced() {
    let (_, _, p) = aged(NOW - 6 * YEAR, NOW, None);
    assert!(
        matches!(p.changes[0], Change::NewCa { ref reason } if reason.contains("expired")),
        "{:?}",
        p.changes
    );
    assert_eq!(
        bundle_shas(&p.ca_bundle).len(),
        1,
        "the expired CA is dropped"
    );
}

/// Twelve years of passes at the times the plans ask for, with the configuration
/// publishing each pass's bundle: at every pass, the leaf written verifies against the
/// caBundle the API server had *before* the pass, and the leaf replaced still verifies
/// against the caBundle published *after* it (replicas whose files lag behind).
#[test]
fn twelve_years_of_rotation_never_break_the_handshake() {
    let s = settings();
    let mut at = NOW;
    let first = plan(None, &Published::Missing, &s, at).expect("plan");
    let mut secret = stored(&first, "1");
    let mut config_bundle = first.ca_bundle.clone();
    let (mut passes, mut writes, mut promotions, mut drops) = (0, 0, 0, 0);
    while at < NOW + 12 * YEAR {
        at = plan(Some(&secret), &published(&config_bundle), &s, at)
            .expect("plan")
            .next_check;
        passes += 1;
        assert!(passes < 200, "the schedule must not spin");
        let p = plan(Some(&secret), &published(&config_bundle), &s, at).expect("plan");
        if !p.writes() {
            assert_eq!(p.ca_bundle, config_bundle);
            continue;
        }
        writes += 1;
        let old_leaf = key(&secret, "tls.crt");
        let next = stored(&p, &writes.to_string());
        let new_leaf = key(&next, "tls.crt");
        verify(&new_leaf, &config_bundle, at)
            .unwrap_or_else(|e| panic!("pass at {at}: new leaf vs published bundle: {e}"));
        if verify(&old_leaf, &config_bundle, at).is_ok() {
            verify(&old_leaf, &p.ca_bundle, at)
                .unwrap_or_else(|e| panic!("pass at {at}: old leaf vs new bundle: {e}"));
        }
        for c in &p.changes {
            match c {
                Change::CaPromoted { .. } => promotions += 1,
                Change::BundleChanged { dropped, .. } if *dropped > 0 => drops += 1,
                Change::NewCa { reason } => panic!("no CA regenerated from scratch: {reason}"),
                _ => {}
            }
        }
        assert!(!bundle_shas(&p.ca_bundle).is_empty());
        assert!(bundle_shas(&p.ca_bundle).len() <= 3);
        secret = next;
        config_bundle = p.ca_bundle.clone();
    }
    assert!(promotions >= 3, "{promotions} CA rotations in 12 years");
    assert!(drops >= 2, "{drops} expired CAs dropped");
}

// ---------------------------------------------------------------------------------------
// (2)-(4) reconcile against the mock API server.

/// The configuration as Helm installs it (no caBundle), or with `ca_bundle` in each entry.
fn config(ca_bundle: Option<&[u8]>) -> Value {
    let entry = |name: &str| {
        let mut client_config = json!({"service": {"name": "mcptrust-webhook", "namespace": "mcptrust", "path": "/mutate", "port": 443}});
        if let Some(b) = ca_bundle {
            client_config["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(b));
        }
        json!({
            "name": name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 5,
            "clientConfig": client_config,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "mcptrust", "resourceVersion": "7"},
        "webhooks": [entry("pods.mcptrust.io"), entry("workloads.mcptrust.io")],
    })
}

/// Asserts the caBundle apply: PATCH of the configuration by field manager
/// `mcptrust-webhook-cabundle`, forced, naming every entry with only its caBundle.
async fn expect_bundle_apply(api: &mut Verifier, bundle: &[u8]) {
    let call = api
        .expect(
            Method::PATCH,
            CONFIG_PATH,
            &["fieldManager=mcptrust-webhook-cabundle", "force=true"],
        )
        .await;
    assert_eq!(call.body["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(call.body["kind"], "MutatingWebhookConfiguration");
    assert_eq!(call.body["metadata"]["name"], "mcptrust");
    let b64 = base64::engine::general_purpose::STANDARD.encode(bundle);
    assert_eq!(
        call.body["webhooks"],
        json!([
            {"name": "pods.mcptrust.io", "clientConfig": {"caBundle": b64}},
            {"name": "workloads.mcptrust.io", "clientConfig": {"caBundle": b64}},
        ]),
        "only the caBundle of every entry; the rest stays Helm's"
    );
    call.ok(&config(Some(bundle)));
}

type Reconcile = tokio::task::JoinHandle<Result<Outcome, WebhookCertError>>;

/// Runs [`reconcile`] at [`NOW`] in the background against a fresh mock API, and answers
/// its first two requests, the reads of the Secret and of the webhook configuration, with
/// `secret` and `configuration` (`None`: 404).
async fn start(secret: Option<&Value>, configuration: Option<&Value>) -> (Reconcile, Verifier) {
    let (client, mut api) = mock_api::pair();
    let task = tokio::spawn(async move { reconcile(&client, &settings(), NOW).await });
    for (path, answer) in [(SECRET_PATH, secret), (CONFIG_PATH, configuration)] {
        let call = api.expect(Method::GET, path, &[]).await;
        match answer {
            Some(body) => call.ok(body),
            None => call.not_found(),
        }
    }
    (task, api)
}

/// Waits for [`reconcile`] to return, then asserts it made no request beyond those the
/// test answered ([`Verifier::expect_done`]).
async fn finish(task: Reconcile, api: Verifier) -> Outcome {
    let outcome = tokio::time::timeout(HANG_GUARD, task)
        .await
        .expect("reconcile made a request nobody answered")
        .expect("join")
        .expect("reconcile");
    api.expect_done().await;
    outcome
}

#[tokio::test]
async fn an_absent_secret_is_created_and_its_bundle_published() {
    let (task, mut api) = start(None, Some(&config(None))).await;
    let created = api
        .expect(
            Method::POST,
            "/api/v1/namespaces/mcptrust/secrets",
            &["fieldManager=mcptrust-webhook-cert"],
        )
        .await;
    let body = created.body.clone();
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["kind"], "Secret");
    assert_eq!(body["type"], "kubernetes.io/tls");
    assert_eq!(body["metadata"]["name"], "mcptrust-webhook-tls");
    assert_eq!(body["metadata"]["namespace"], "mcptrust");
    assert!(body["metadata"].get("resourceVersion").is_none());
    assert_eq!(
        body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "mcptrust"
    );
    assert_eq!(
        body["metadata"]["labels"]["mcptrust.io/component"],
        "webhook-cert"
    );
    let mut keys: Vec<&str> = body["data"]
        .as_object()
        .expect("data")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["ca-bundle.crt", "ca.crt", "ca.key", "tls.crt", "tls.key"]
    );
    assert_service_leaf(&decode(&body, "tls.crt"), &decode(&body, "ca.crt"));
    assert!(
        String::from_utf8(decode(&body, "ca.key"))
            .expect("utf8")
            .contains("BEGIN PRIVATE KEY")
    );
    let bundle = decode(&body, "ca-bundle.crt");
    assert_eq!(bundle, decode(&body, "ca.crt"));
    verify(&decode(&body, "tls.crt"), &bundle, NOW).expect("leaf verifies with the bundle");
    let mut stored = body.clone();
    stored["metadata"]["resourceVersion"] = json!("1");
    created.reply(StatusCode::CREATED, &stored);

    expect_bundle_apply(&mut api, &bundle).await;
    let outcome = finish(task, api).await;
    assert!(outcome.published);
    assert!(!outcome.changes.is_empty());
    assert_eq!(outcome.next_check, NOW + YEAR - YEAR / 3);
}

#[tokio::test]
async fn a_lost_create_race_publishes_the_winners_bundle() {
    // Another replica (a previous leader) created its Secret a moment ago.
    let winner = plan(None, &Published::Missing, &settings(), NOW - 60).expect("plan");
    let winner_secret = serde_json::to_value(stored(&winner, "5")).expect("json");
    let (task, mut api) = start(None, Some(&config(None))).await;
    let lost = api
        .expect(Method::POST, "/api/v1/namespaces/mcptrust/secrets", &[])
        .await;
    let ours = decode(&lost.body, "ca-bundle.crt");
    lost.conflict(
        "AlreadyExists",
        "secrets \"mcptrust-webhook-tls\" already exists",
    );
    api.expect(Method::GET, SECRET_PATH, &[])
        .await
        .ok(&winner_secret);
    // The winner's Secret is valid: no second write; its bundle is published.
    assert_ne!(ours, winner.ca_bundle);
    expect_bundle_apply(&mut api, &winner.ca_bundle).await;
    let outcome = finish(task, api).await;
    assert!(outcome.changes.is_empty(), "{:?}", outcome.changes);
    assert!(outcome.published);
}

#[tokio::test]
async fn nothing_changed_means_no_write() {
    let current = plan(None, &Published::Missing, &settings(), NOW - 30 * DAY).expect("plan");
    let secret = serde_json::to_value(stored(&current, "9")).expect("json");
    let (task, api) = start(Some(&secret), Some(&config(Some(&current.ca_bundle)))).await;
    let outcome = finish(task, api).await;
    assert!(outcome.changes.is_empty());
    assert!(!outcome.published);
    assert_eq!(outcome.next_check, current.next_check);
}

#[tokio::test]
async fn a_missing_configuration_is_left_alone() {
    let current = plan(None, &Published::Missing, &settings(), NOW - DAY).expect("plan");
    let secret = serde_json::to_value(stored(&current, "9")).expect("json");
    let (task, api) = start(Some(&secret), None).await;
    let outcome = finish(task, api).await;
    assert!(!outcome.published);
}

#[tokio::test]
async fn a_ca_bundle_reset_by_an_upgrade_is_patched_back_on_every_entry() {
    let current = plan(None, &Published::Missing, &settings(), NOW - DAY).expect("plan");
    let secret = serde_json::to_value(stored(&current, "9")).expect("json");
    let mut cfg = config(Some(&current.ca_bundle));
    cfg["webhooks"][1]["clientConfig"]
        .as_object_mut()
        .expect("clientConfig")
        .remove("caBundle");
    let (task, mut api) = start(Some(&secret), Some(&cfg)).await;
    expect_bundle_apply(&mut api, &current.ca_bundle).await;
    assert!(finish(task, api).await.published);
}

#[tokio::test]
async fn an_update_race_rereads_and_replans() {
    // Leaf due: this replica wants to renew it, but another writer got there first.
    let created = NOW - 250 * DAY;
    let current = plan(None, &Published::Missing, &settings(), created).expect("plan");
    let secret = serde_json::to_value(stored(&current, "41")).expect("json");
    let renewed_elsewhere = plan(
        Some(&stored(&current, "41")),
        &published(&current.ca_bundle),
        &settings(),
        NOW - 10,
    )
    .expect("plan");
    let renewed_secret = serde_json::to_value(stored(&renewed_elsewhere, "42")).expect("json");

    let (task, mut api) = start(Some(&secret), Some(&config(Some(&current.ca_bundle)))).await;
    let apply = api
        .expect(
            Method::PATCH,
            SECRET_PATH,
            &["fieldManager=mcptrust-webhook-cert", "force=true"],
        )
        .await;
    assert_eq!(apply.body["kind"], "Secret");
    assert_eq!(
        apply.body["metadata"]["resourceVersion"], "41",
        "the apply is conditional on the version read"
    );
    assert_ne!(
        decode(&apply.body, "tls.crt"),
        key(&stored(&current, "41"), "tls.crt")
    );
    apply.conflict("Conflict", "Operation cannot be fulfilled on secrets \"mcptrust-webhook-tls\": the object has been modified; please apply your changes to the latest version and try again");
    api.expect(Method::GET, SECRET_PATH, &[])
        .await
        .ok(&renewed_secret);
    // The re-read Secret is current: nothing more to write, and the bundle did not change.
    let outcome = finish(task, api).await;
    assert!(outcome.changes.is_empty(), "{:?}", outcome.changes);
    assert!(!outcome.published);
}

// ---------------------------------------------------------------------------------------
// (5) A real TLS handshake, by the Service's DNS name, trusting only the caBundle.

fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("time")
}

/// One AdmissionReview over HTTPS to `addr`, with SNI [`SERVICE_DNS`] and a client that
/// trusts only `ca_bundle`; returns the served certificate's issuer and the review's uid.
async fn review_by_service_name(
    addr: std::net::SocketAddr,
    ca_bundle: &[u8],
    uid: &str,
) -> Result<(String, String), String> {
    use http_body_util::BodyExt as _;
    let config = common::client_config(
        std::str::from_utf8(ca_bundle).expect("utf8"),
        &[b"http/1.1"],
    );
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(SERVICE_DNS).expect("name"), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let served = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).expect("x509");
            cert.issuer().to_string()
        })
        .ok_or("no certificate")?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("http1: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let review = common::admission_review(
        uid,
        "CREATE",
        "agents",
        common::pod("github-mcp", "agents", &["server"]),
    );
    let request = Request::post("/mutate")
        .header("host", SERVICE_DNS)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            serde_json::to_vec(&review).expect("json"),
        )))
        .expect("request");
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    driver.abort();
    let answer: Value = serde_json::from_slice(&body).expect("AdmissionReview");
    Ok((
        served,
        answer["response"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ))
}

fn leaf_of(secret: &Secret) -> common::Leaf {
    common::Leaf::from_pem(
        String::from_utf8(key(secret, "tls.crt")).expect("utf8"),
        String::from_utf8(key(secret, "tls.key")).expect("utf8"),
    )
}

#[tokio::test]
async fn the_webhook_serves_the_secret_by_service_name_across_a_ca_rotation() {
    use mcptrust::inject::{InjectConfig, StaticMutator};
    use mcptrust::tls::{CertReloader, CertResolver, server_config};

    // Short lifetimes so that real time (which the client's verifier uses) sits where we
    // want it: CA 30000 s, leaf 5000 s, no promotion delay.
    let mut s = settings();
    s.ca_validity_secs = 30_000;
    s.leaf_validity_secs = 5_000;
    s.promotion_delay_secs = 0;
    let now = unix_now();

    // Created 21000 s ago: the CA is past two thirds of its life, the leaf has expired.
    let first = plan(None, &Published::Missing, &s, now - 21_000).expect("plan");
    let p = plan(
        Some(&stored(&first, "1")),
        &published(&first.ca_bundle),
        &s,
        now,
    )
    .expect("plan");
    assert!(
        p.changes
            .iter()
            .any(|c| matches!(c, Change::CaRotationStarted { .. }))
    );
    let rotating = build_secret(&s, p.data.clone().expect("writes"), Some("2".into()));
    let both = p.ca_bundle.clone();

    // Serve the Secret's files the way the kubelet lays them out.
    let dir = tempfile::tempdir().expect("tempdir");
    let files = common::TlsFiles::in_dir(dir.path());
    files.write_kubernetes(&leaf_of(&rotating), 1);
    let resolver = Arc::new(CertResolver::from_files(&files.cert, &files.key).expect("load"));
    let tls = server_config(resolver.clone()).expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mutator = Arc::new(StaticMutator::new(&InjectConfig::embedded_default(), None));
    let server = tokio::spawn(mcptrust::webhook::serve(
        listener,
        tls,
        mutator,
        Arc::new(mcptrust::metrics::Metrics::new()),
        async {
            let _ = stop_rx.await;
        },
    ));

    // Phase 1: the leaf is still the old CA's; old and new bundles both accept it.
    let old_ca_subject = subject(&key(&rotating, "ca.crt"));
    let (issuer, uid) = review_by_service_name(addr, &both, "a1")
        .await
        .expect("both CAs");
    assert_eq!(
        (issuer.as_str(), uid.as_str()),
        (old_ca_subject.as_str(), "a1")
    );
    review_by_service_name(addr, &first.ca_bundle, "a2")
        .await
        .expect("the bundle published before the rotation still works");

    // Phase 2: the bundle with both is published; the successor signs; the kubelet swaps the
    // files and the reloader picks them up.
    let promoted = plan(Some(&rotating), &published(&both), &s, now).expect("plan");
    assert!(
        promoted
            .changes
            .iter()
            .any(|c| matches!(c, Change::CaPromoted { .. }))
    );
    assert_eq!(promoted.ca_bundle, both);
    let after = build_secret(&s, promoted.data.clone().expect("writes"), Some("3".into()));
    files.write_kubernetes(&leaf_of(&after), 2);
    let reloader = CertReloader::new(resolver.clone(), &files.cert, &files.key);
    assert!(
        reloader.reload().expect("reload").is_some(),
        "a new certificate"
    );
    let (issuer, _) = review_by_service_name(addr, &both, "b1")
        .await
        .expect("both CAs");
    assert_eq!(issuer, subject(&key(&after, "ca.crt")));
    assert_ne!(issuer, old_ca_subject);
    let refused = review_by_service_name(addr, &first.ca_bundle, "b2").await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("handshake")),
        "a caBundle without the successor must fail: {refused:?}"
    );

    let _ = stop_tx.send(());
    server.await.expect("server");
}

#[tokio::test]
async fn the_webhook_waits_for_the_secret_volume_to_be_filled() {
    use mcptrust::controller::webhook_cert::{CertMode, wait_for_tls_files};
    let dir = tempfile::tempdir().expect("tempdir");
    let files = common::TlsFiles::in_dir(dir.path());
    let (cert, key_path) = (files.cert.clone(), files.key.clone());
    let readiness = mcptrust::admin::Readiness::new();
    let waits = readiness.clone();
    let mut waiting = tokio::spawn(async move {
        wait_for_tls_files(&cert, &key_path, CertMode::SelfManaged, &waits).await;
    });
    // An empty volume (the Secret does not exist yet): still waiting.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err()
    );
    // `/readyz` says what it waits for.
    assert_eq!(
        readiness.reason(),
        format!("waiting for {}", files.cert.display())
    );
    // The leader writes the Secret; the kubelet fills the volume.
    let p = plan(None, &Published::Missing, &settings(), unix_now()).expect("plan");
    files.write_kubernetes(&leaf_of(&stored(&p, "1")), 1);
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait ends once the files load")
        .expect("join");
}
