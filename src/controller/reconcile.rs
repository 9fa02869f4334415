//! Reconciling one McpServer, as a pipeline: trust sources → bundle → ConfigMap;
//! federation CA → server and client certificates; rotation; status. Desired objects come
//! from [`super::build`]; this module only reads, decides and applies.

use std::sync::Arc;
use std::time::Duration;

use super::EventType;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::build;
use super::error::{Error, Result};
use super::{
    Context, FIELD_MANAGER_CERTS, FIELD_MANAGER_ROTATION, FIELD_MANAGER_STATUS, FIELD_MANAGER_TRUST,
};
use crate::api::conditions::{self, DesiredCondition, types};
use crate::api::{
    CertificateStatus, ClientCertificateStatus, McpServer, McpServerStatus, RotationStrategy,
    TrustBundleStatus, TrustSpec,
};
use crate::pki::issue::{self, CertificateAuthority, Decision, LeafRequest, Usage};
use crate::pki::{BundleOptions, CaInput, TrustBundle};

/// Longest time between two reconciles of an unchanged McpServer (seconds): picks up new
/// Mozilla roots after an upgrade and heals drift.
pub const RESYNC_SECS: i64 = 3600;

/// GET that maps 404 to `None`.
pub(crate) async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(api.get_opt(name).await?)
}

/// `Accept` of [`apply_answered_with_metadata`]: the API server answers with the object's
/// `meta.k8s.io/v1` `PartialObjectMetadata` instead of the whole object, as it does for a
/// metadata-only GET (the response transformation of the API server's handlers, which
/// PATCH shares with GET).
const ACCEPT_METADATA: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";

/// `req` with `Accept: ` [`ACCEPT_METADATA`].
fn answered_with_metadata(mut req: http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    req.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static(ACCEPT_METADATA),
    );
    req
}

/// A forced server-side apply of `obj` as `name` by `field_manager`, answered with the
/// object's metadata only (returned). For objects whose bodies are large (a trust
/// ConfigMap holds the Mozilla roots twice, about 370 kB) or secret (a TLS Secret's key):
/// the answer does not send them back, so neither side encodes, sends or parses them a
/// second time.
///
/// # Errors
/// [`Error::Kube`] when the request cannot be built or the API server refuses the apply.
pub(crate) async fn apply_answered_with_metadata<K>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
    field_manager: &str,
    obj: &K,
) -> Result<ObjectMeta>
where
    K: Resource + serde::Serialize + Clone + DeserializeOwned + std::fmt::Debug,
{
    let req = kube::core::Request::new(api.resource_url())
        .patch(
            name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(obj),
        )
        .map_err(kube::Error::BuildRequest)?;
    let answer: kube::core::PartialObjectMeta<K> =
        ctx.client.request(answered_with_metadata(req)).await?;
    Ok(answer.metadata)
}

/// Creates `obj` (POST, with `field_manager`), answered with its metadata only; `None`
/// when it exists already (409 AlreadyExists).
///
/// Why a create rather than an apply for a new object: the API server reads an apply body
/// through its YAML decoder, which costs about 2.3 times a JSON create for a trust
/// ConfigMap (40 ms against 17 ms for 374 kB on the benchmark machine, one request at a
/// time), and a burst of new McpServers is a burst of creates. The object is then owned by
/// `field_manager` with `operation: Update`; its next change is an apply by the same
/// manager, which takes the fields over.
///
/// # Errors
/// [`Error::Kube`] when the request cannot be built or the API server refuses it.
pub(crate) async fn create_answered_with_metadata<K>(
    ctx: &Context,
    api: &Api<K>,
    field_manager: &str,
    obj: &K,
) -> Result<Option<ObjectMeta>>
where
    K: Resource + serde::Serialize + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = PostParams {
        field_manager: Some(field_manager.to_owned()),
        ..PostParams::default()
    };
    let req = kube::core::Request::new(api.resource_url())
        .create(
            &params,
            serde_json::to_vec(obj).map_err(kube::Error::SerdeError)?,
        )
        .map_err(kube::Error::BuildRequest)?;
    match ctx
        .client
        .request::<kube::core::PartialObjectMeta<K>>(answered_with_metadata(req))
        .await
    {
        Ok(answer) => Ok(Some(answer.metadata)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes `obj` as `name`: [`create_answered_with_metadata`] when `absent` says it does not
/// exist yet, otherwise (and when the create finds it exists after all) a forced
/// [`apply_answered_with_metadata`].
///
/// # Errors
/// [`Error::Kube`] when the API server refuses the write.
pub(crate) async fn create_or_apply<K>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
    field_manager: &str,
    obj: &K,
    absent: bool,
) -> Result<ObjectMeta>
where
    K: Resource + serde::Serialize + Clone + DeserializeOwned + std::fmt::Debug,
{
    if absent
        && let Some(meta) = create_answered_with_metadata(ctx, api, field_manager, obj).await?
    {
        return Ok(meta);
    }
    apply_answered_with_metadata(ctx, api, name, field_manager, obj).await
}

/// Reads one trust source into a [`CaInput`].
async fn read_sources(server: &McpServer, ns: &str, ctx: &Context) -> Result<Vec<CaInput>> {
    let trust = server.spec.trust.clone().unwrap_or_default();
    let mut out = Vec::new();
    for (i, src) in trust.sources.iter().enumerate() {
        let (kind, r) = match (&src.config_map, &src.secret) {
            (Some(r), _) => ("ConfigMap", r),
            (None, Some(r)) => ("Secret", r),
            (None, None) => {
                return Err(Error::InvalidSpec(format!(
                    "spec.trust.sources[{i}] names neither a configMap nor a secret"
                )));
            }
        };
        let key = r.key_or_default();
        let (found, keys, value): (bool, Vec<String>, Option<Vec<u8>>) = if kind == "ConfigMap" {
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
            match get_opt(&api, &r.name).await? {
                None => (false, vec![], None),
                Some(cm) => {
                    let mut keys: Vec<String> =
                        cm.data.iter().flatten().map(|(k, _)| k.clone()).collect();
                    keys.extend(cm.binary_data.iter().flatten().map(|(k, _)| k.clone()));
                    let v = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|s| s.as_bytes().to_vec())
                        .or_else(|| {
                            cm.binary_data
                                .as_ref()
                                .and_then(|d| d.get(key))
                                .map(|b| b.0.clone())
                        });
                    (true, keys, v)
                }
            }
        } else {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
            match get_opt(&api, &r.name).await? {
                None => (false, vec![], None),
                Some(s) => {
                    let keys = s.data.iter().flatten().map(|(k, _)| k.clone()).collect();
                    let v = s
                        .data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|b| b.0.clone());
                    (true, keys, v)
                }
            }
        };
        let what = format!("{kind} {ns}/{}", r.name);
        if !found {
            return Err(Error::SourceNotFound(format!(
                "{what} (spec.trust.sources[{i}]) was not found; create it or fix the name"
            )));
        }
        let Some(pem) = value else {
            return Err(Error::SourceNotFound(format!(
                "{what} (spec.trust.sources[{i}]) has no key {key:?}; its keys are [{}]",
                keys.join(", ")
            )));
        };
        out.push(CaInput::new(format!("{what} key {key}"), pem));
    }
    Ok(out)
}

/// Builds the McpServer's bundle from its sources (and the pinned certificate, when any).
async fn trust_bundle(server: &McpServer, ns: &str, ctx: &Context) -> Result<Arc<TrustBundle>> {
    let trust: TrustSpec = server.spec.trust.clone().unwrap_or_default();
    let inputs = read_sources(server, ns, ctx).await?;
    let opts = BundleOptions {
        include_system_roots: trust.include_system_roots,
        now_unix: ctx.now(),
    };
    let pinned: Vec<CaInput> = server
        .status
        .as_ref()
        .and_then(|s| s.pinned_certificate.as_ref())
        .map(|pem| {
            vec![CaInput::new(
                "status.pinnedCertificate",
                pem.clone().into_bytes(),
            )]
        })
        .unwrap_or_default();
    let bundle = ctx.bundles.get_or_build(&inputs, &pinned, &opts).map_err(|e| match e {
        crate::pki::BundleError::EmptyBundle => Error::EmptyBundle(
            "the bundle would be empty: add spec.trust.sources or set spec.trust.includeSystemRoots: true".into(),
        ),
        e => Error::InvalidCertificate(e.to_string()),
    })?;
    for w in &bundle.warnings {
        tracing::warn!(mcpserver = %format!("{ns}/{}", server.name_any()), "{w}");
    }
    Ok(bundle)
}

/// What the cache of managed ConfigMaps says of one trust ConfigMap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cached {
    /// It holds the bundle as this controller writes it: nothing to send.
    Current,
    /// It exists but differs (or was edited): apply.
    Differs,
    /// The cache has listed the managed ConfigMaps and this one is not among them: create.
    Absent,
    /// No cache (outside the controller, or not listed within 30 s): apply.
    Unknown,
}

/// Whether the trust ConfigMap `ns/cm_name` in the cache of managed ConfigMaps already
/// holds the bundle `bundle_sha256` as this controller writes it ([`Cached::Current`]): the
/// hash annotation, a truststore (`ca-bundle.p12`) annotation, `labels`, the controller
/// owner reference to `owner_uid` (when given), and no field manager but
/// [`FIELD_MANAGER_TRUST`] in `managedFields` (a `kubectl edit` of the data adds one, so an
/// edit is healed by the next reconcile). When unsure (no cache, not listed within 30 s),
/// [`Cached::Unknown`]: the apply is then sent.
pub(crate) async fn trust_config_map_cached(
    ctx: &Context,
    ns: &str,
    cm_name: &str,
    labels: &std::collections::BTreeMap<String, String>,
    owner_uid: Option<&str>,
    bundle_sha256: &str,
) -> Cached {
    let Some(store) = ctx.managed_config_maps().await else {
        return Cached::Unknown;
    };
    let Some(cm) = store.get(&kube::runtime::reflector::ObjectRef::new(cm_name).within(ns)) else {
        return Cached::Absent;
    };
    let meta = &cm.metadata;
    let annotation = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::inject::ANNOTATION_BUNDLE_SHA256));
    let labels_match = labels
        .iter()
        .all(|(k, v)| meta.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
    let owner_matches = owner_uid.is_none_or(|uid| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == uid && r.controller == Some(true))
    });
    let only_ours = meta.managed_fields.as_ref().is_some_and(|fields| {
        fields
            .iter()
            .all(|f| f.manager.as_deref() == Some(FIELD_MANAGER_TRUST))
    });
    // A ConfigMap written before ca-bundle.p12 existed lacks its annotation: rewrite it
    // once. (Its bytes differ per process, PKCS#12 salts being random, so only its
    // presence is compared: a restart must not rewrite every ConfigMap.)
    let has_truststore = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(super::build::ANNOTATION_TRUSTSTORE_SHA256));
    if annotation.map(String::as_str) == Some(bundle_sha256)
        && has_truststore
        && labels_match
        && owner_matches
        && only_ours
    {
        Cached::Current
    } else {
        Cached::Differs
    }
}

/// Loads (or creates, once) the federation CA. Creation is conflict-safe: a `create` that
/// loses the race (409) reads the winner's Secret. A valid CA is never regenerated.
pub(crate) async fn federation_ca(ctx: &Context) -> Result<Arc<CertificateAuthority>> {
    let mut cached = ctx.ca.lock().await;
    if let Some(ca) = cached.as_ref()
        && ca.not_after() > ctx.now()
    {
        ctx.metrics.set_federation_ca_not_after(ca.not_after());
        return Ok(ca.clone());
    }
    let cfg = &ctx.config;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &cfg.operator_namespace);
    let parse = |s: &Secret| -> Result<CertificateAuthority> {
        let get = |k: &str| {
            s.data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .ok_or_else(|| {
                    Error::FederationCa(format!(
                        "Secret {}/{} has no {k}",
                        cfg.operator_namespace, cfg.ca_secret_name
                    ))
                })
        };
        CertificateAuthority::from_pem(&get("tls.crt")?, &get("tls.key")?)
            .map_err(|e| Error::FederationCa(e.to_string()))
    };
    let ca = match get_opt(&api, &cfg.ca_secret_name).await? {
        Some(secret) => parse(&secret)?,
        None if cfg.ca_user_supplied => {
            return Err(Error::FederationCa(format!(
                "Secret {}/{} (--federation-ca-secret) does not exist; create it with tls.crt and tls.key of a CA",
                cfg.operator_namespace, cfg.ca_secret_name
            )));
        }
        None => {
            let now = ctx.now();
            let ca =
                CertificateAuthority::generate("mcptrust federation CA", now, cfg.ca_validity_secs)
                    .map_err(|e| Error::Issue(e.to_string()))?;
            let secret = super::build_ca_secret(cfg, &ca);
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(secret = %cfg.ca_secret_name, "created the federation CA");
                    ca
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let winner = api.get(&cfg.ca_secret_name).await?;
                    parse(&winner)?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    if ca.not_after() <= ctx.now() {
        return Err(Error::FederationCa(format!(
            "the CA in Secret {}/{} expired; delete the Secret to have a new one generated (clients must then trust the new ca.crt)",
            cfg.operator_namespace, cfg.ca_secret_name
        )));
    }
    ctx.metrics.set_federation_ca_not_after(ca.not_after());
    let ca = Arc::new(ca);
    *cached = Some(ca.clone());
    Ok(ca)
}

/// One certificate's outcome.
struct CertOutcome {
    status: CertificateStatus,
    /// Unix seconds.
    renewal_time: i64,
    /// A client certificate (not a server one).
    client: bool,
    /// The certificate and key in use (PEM), for the endpoint probe.
    pem: Option<(String, String)>,
}

/// What this process last found valid in one TLS Secret: kept in [`Context::certificates`]
/// so that a reconcile of an unchanged Secret (same `resourceVersion` in the metadata
/// cache, same request, before its renewal time) reuses the decision without a GET.
#[derive(Clone, Debug)]
pub(crate) struct CertRecord {
    /// The Secret's `metadata.resourceVersion` when it was read or written.
    resource_version: String,
    /// [`request_fingerprint`] of the request the Secret was checked against.
    fingerprint: u64,
    status: CertificateStatus,
    /// Unix seconds.
    renewal_time: i64,
    /// The certificate and key (PEM) of client certificates, which the endpoint probe
    /// presents; `None` for server certificates and when endpoints are not probed.
    pem: Option<(String, String)>,
}

#[cfg(test)]
impl CertRecord {
    /// A record of a Secret at `resource_version` (unit tests).
    pub(crate) fn at_version(resource_version: &str) -> Self {
        Self {
            resource_version: resource_version.into(),
            fingerprint: 0,
            status: CertificateStatus::default(),
            renewal_time: 0,
            pem: None,
        }
    }
}

/// A hash of everything [`issue::decide`] compares a Secret with, besides the Secret and
/// the clock: the CA, the request (names, usage, lifetime), `renew_before` (seconds) and
/// the McpServer's renewal request ([`crate::api::ANNOTATION_RENEW_REQUESTED`]).
/// In-process only (std's `DefaultHasher`), never stored.
fn request_fingerprint(
    ca: &CertificateAuthority,
    req: &LeafRequest,
    renew_before: i64,
    renew_request: Option<&str>,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    renew_request.hash(&mut h);
    ca.cert_pem.hash(&mut h);
    req.common_name.hash(&mut h);
    req.dns_names.hash(&mut h);
    req.ip_addresses.hash(&mut h);
    matches!(req.usage, Usage::Server).hash(&mut h);
    req.duration_secs.hash(&mut h);
    renew_before.hash(&mut h);
    h.finish()
}

/// What the metadata cache of managed Secrets says of one Secret.
enum SecretCache {
    /// No cache (outside the controller, or not listed yet): read the Secret.
    Unknown,
    /// Listed, and not there: issue without reading.
    Absent,
    /// There, at this `resourceVersion`.
    Present(String),
}

async fn secret_cache(ctx: &Context, ns: &str, name: &str) -> SecretCache {
    let Some(store) = ctx.managed_secrets().await else {
        return SecretCache::Unknown;
    };
    match store.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns)) {
        None => SecretCache::Absent,
        Some(meta) => match meta.metadata.resource_version.clone() {
            Some(rv) => SecretCache::Present(rv),
            None => SecretCache::Unknown,
        },
    }
}

/// Records in [`Context::certificates`] that the Secret `(namespace, name)` at
/// `resource_version` holds `outcome` for the request `fingerprint`; forgets it when the
/// version is unknown. Client certificates keep their PEM when endpoints are probed (the
/// probe presents it).
fn remember(
    ctx: &Context,
    (ns, name): (&str, &str),
    resource_version: Option<String>,
    fingerprint: u64,
    outcome: &CertOutcome,
) {
    let mut records = ctx.certificates.lock().unwrap_or_else(|p| p.into_inner());
    let key = (ns.to_owned(), name.to_owned());
    let Some(resource_version) = resource_version else {
        records.remove(&key);
        return;
    };
    let keep_pem = outcome.client && ctx.probe_endpoints;
    records.insert(
        key,
        CertRecord {
            resource_version,
            fingerprint,
            status: outcome.status.clone(),
            renewal_time: outcome.renewal_time,
            pem: outcome.pem.clone().filter(|_| keep_pem),
        },
    );
}

/// Ensures one TLS Secret: reads it, decides, issues and applies when needed, and emits
/// an event naming the reason.
///
/// Reads: none when the metadata cache shows the Secret at the `resourceVersion` this
/// process last checked or wrote, for the same request, before its renewal time; none
/// either when the cache (listed) has no such Secret, which is then created (a create that
/// finds it exists after all, 409, falls back to a read); one GET otherwise.
#[allow(clippy::too_many_arguments)]
async fn ensure_certificate(
    ctx: &Context,
    server: &McpServer,
    ca: &CertificateAuthority,
    secret_ns: &str,
    secret_name: &str,
    labels: std::collections::BTreeMap<String, String>,
    same_namespace: bool,
    req: &LeafRequest,
    renew_before: i64,
) -> Result<CertOutcome> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), secret_ns);
    let now = ctx.now();
    let renew_request = server
        .annotations()
        .get(crate::api::ANNOTATION_RENEW_REQUESTED)
        .map(String::as_str)
        .filter(|v| !v.is_empty());
    let fingerprint = request_fingerprint(ca, req, renew_before, renew_request);
    let client = matches!(req.usage, Usage::Client);
    let mut skip_read = match secret_cache(ctx, secret_ns, secret_name).await {
        SecretCache::Present(rv) => {
            let record = ctx
                .certificates
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(secret_ns.to_owned(), secret_name.to_owned()))
                .cloned();
            if let Some(r) = record.filter(|r| {
                r.resource_version == rv && r.fingerprint == fingerprint && now < r.renewal_time
            }) {
                return Ok(CertOutcome {
                    status: r.status,
                    renewal_time: r.renewal_time,
                    client,
                    pem: r.pem,
                });
            }
            false
        }
        SecretCache::Absent => true,
        SecretCache::Unknown => false,
    };
    loop {
        let current = if skip_read {
            None
        } else {
            get_opt(&api, secret_name).await?
        };
        let data = current.as_ref().map(|s| {
            s.data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect::<std::collections::BTreeMap<String, Vec<u8>>>()
        });
        let renewed_for = current.as_ref().and_then(|s| {
            s.annotations()
                .get(crate::api::ANNOTATION_RENEWED_FOR)
                .cloned()
        });
        let decision = match issue::decide(data.as_ref(), ca, req, renew_before, now) {
            // A renewal request this Secret was not issued for: honoured once.
            Decision::Keep { .. }
                if renew_request.is_some() && renewed_for.as_deref() != renew_request =>
            {
                Decision::Issue {
                    reason: issue::IssueReason::ManuallyTriggered,
                    message: format!(
                        "renewal requested through {}={}",
                        crate::api::ANNOTATION_RENEW_REQUESTED,
                        renew_request.unwrap_or_default()
                    ),
                }
            }
            d => d,
        };
        let (not_after, renewal_time, sha256, pem, version) = match decision {
            Decision::Keep {
                not_after,
                renewal_time,
                sha256,
            } => {
                let pem = data.as_ref().and_then(|d| {
                    let text = |k: &str| d.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
                    Some((text("tls.crt")?, text("tls.key")?))
                });
                (
                    not_after,
                    renewal_time,
                    sha256,
                    pem,
                    current.and_then(|s| s.metadata.resource_version),
                )
            }
            Decision::Issue { reason, message } => {
                let issued = issue::issue(ca, req, now).map_err(|e| Error::Issue(e.to_string()))?;
                let role = match req.usage {
                    Usage::Server => "server",
                    Usage::Client => "client",
                };
                let owner = if same_namespace {
                    build::owner(server)
                } else {
                    None
                };
                let mut secret =
                    build::tls_secret(secret_name, secret_ns, labels.clone(), owner, &issued);
                // Every issuance carries the request it answers, so that the next
                // reconcile does not honour it again.
                if let Some(r) = renew_request {
                    secret.annotations_mut().insert(
                        crate::api::ANNOTATION_RENEWED_FOR.to_string(),
                        r.to_string(),
                    );
                }
                let created = if current.is_none() {
                    create_answered_with_metadata(ctx, &api, FIELD_MANAGER_CERTS, &secret).await?
                } else {
                    None
                };
                let written = match created {
                    Some(meta) => meta,
                    None if skip_read => {
                        // Created meanwhile, unseen by the cache: read it and decide again.
                        skip_read = false;
                        continue;
                    }
                    None => {
                        apply_answered_with_metadata(
                            ctx,
                            &api,
                            secret_name,
                            FIELD_MANAGER_CERTS,
                            &secret,
                        )
                        .await?
                    }
                };
                ctx.metrics.certificate_issued(role, reason);
                let verb = match reason {
                    issue::IssueReason::DoesNotExist => "Issued",
                    issue::IssueReason::Renewing
                    | issue::IssueReason::Expired
                    | issue::IssueReason::ManuallyTriggered => "Renewed",
                    _ => "Reissued",
                };
                let related = k8s_openapi::api::core::v1::ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Secret".into()),
                    name: Some(secret_name.to_string()),
                    namespace: Some(secret_ns.to_string()),
                    ..Default::default()
                };
                ctx.event_about(
                    server,
                    Some(related),
                    EventType::Normal,
                    verb,
                    &format!(
                        "{verb} Secret {secret_ns}/{secret_name} ({}: {message}); valid until {}",
                        reason.as_str(),
                        build::rfc3339(issued.not_after)
                    ),
                )
                .await;
                (
                    issued.not_after,
                    issued.not_after - renew_before,
                    issued.sha256,
                    Some((issued.cert_pem, issued.key_pem)),
                    written.resource_version,
                )
            }
        };
        let serial = pem.as_ref().and_then(|(cert, _)| leaf_serial(cert));
        let outcome = CertOutcome {
            pem,
            status: CertificateStatus {
                secret_name: secret_name.to_string(),
                not_after: Some(build::time(not_after)),
                renewal_time: Some(build::time(renewal_time)),
                sha256: Some(sha256),
                serial,
                changed_at: None,
            },
            renewal_time,
            client,
        };
        remember(
            ctx,
            (secret_ns, secret_name),
            version,
            fingerprint,
            &outcome,
        );
        return Ok(outcome);
    }
}

/// The serial number (lowercase hex) of the first certificate in `cert_pem`.
fn leaf_serial(cert_pem: &str) -> Option<String> {
    let ders = crate::pki::parse_pem_certificates("tls.crt", cert_pem.as_bytes()).ok()?;
    crate::pki::inspect(ders.first()?).ok().map(|i| i.serial)
}

/// What the certificate step produced.
struct Certificates {
    server: Option<CertificateStatus>,
    clients: Vec<ClientCertificateStatus>,
    next_renewal: Option<i64>,
    /// The federation CA (PEM) the server certificate chains to.
    ca_pem: String,
    /// The first client's certificate and key, to probe as the gateway would.
    probe_client: Option<(String, String)>,
}

async fn certificates(
    server: &McpServer,
    ns: &str,
    name: &str,
    ctx: &Context,
) -> Result<Option<Certificates>> {
    let Some(mtls) = &server.spec.mtls else {
        return Ok(None);
    };
    let (duration, renew_before) =
        issue::durations(Some(mtls)).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let ca = federation_ca(ctx).await?;
    let url = server.spec.endpoint.as_ref().map(|e| e.url.as_str());
    let (dns_names, ip_addresses) = issue::server_sans(name, ns, url, mtls.server.as_ref());
    let common_name = dns_names
        .first()
        .cloned()
        .unwrap_or_else(|| name.to_string());
    let server_req = LeafRequest {
        common_name,
        dns_names,
        ip_addresses,
        usage: Usage::Server,
        duration_secs: duration,
    };
    let server_secret = crate::api::server_tls_secret_name(name);
    let s = ensure_certificate(
        ctx,
        server,
        &ca,
        ns,
        &server_secret,
        build::labels(name, ns, "server"),
        true,
        &server_req,
        renew_before,
    )
    .await?;
    let mut next = s.renewal_time;
    let mut clients = Vec::new();
    let mut probe_client = None;
    for c in &mtls.clients {
        let cns = c.namespace.clone().unwrap_or_else(|| ns.to_string());
        let req = LeafRequest {
            common_name: c.name.clone(),
            dns_names: vec![],
            ip_addresses: vec![],
            usage: Usage::Client,
            duration_secs: duration,
        };
        let secret_name = build::client_tls_secret_name(name, ns, &c.name);
        let mut labels = build::labels(name, ns, "client");
        labels.insert(build::LABEL_CLIENT.to_string(), c.name.clone());
        let out = ensure_certificate(
            ctx,
            server,
            &ca,
            &cns,
            &secret_name,
            labels,
            cns == ns,
            &req,
            renew_before,
        )
        .await?;
        next = next.min(out.renewal_time);
        if probe_client.is_none() {
            probe_client = out.pem.clone();
        }
        clients.push(ClientCertificateStatus {
            name: c.name.clone(),
            namespace: cns,
            certificate: out.status,
        });
    }
    Ok(Some(Certificates {
        server: Some(s.status),
        clients,
        next_renewal: Some(next),
        ca_pem: ca.cert_pem.clone(),
        probe_client,
    }))
}

/// Rolls the Deployments, StatefulSets and DaemonSets whose pod templates `selector`
/// selects, by applying [`build::ANNOTATION_ROTATION_HASH`] = `hash`, each with a
/// `RollingRestart` Event that says `why`. Returns the restarted workloads as `Kind/name`.
async fn rolling_restart(
    ctx: &Context,
    server: &McpServer,
    ns: &str,
    selector: &LabelSelector,
    hash: &str,
    why: &str,
) -> Result<Vec<String>> {
    let mut restarted = Vec::new();
    macro_rules! roll {
        ($ty:ty, $kind:literal) => {{
            let api: Api<$ty> = Api::namespaced(ctx.client.clone(), ns);
            for w in api.list(&ListParams::default()).await?.items {
                let labels = w
                    .spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                let current = w
                    .spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.annotations.as_ref())
                    .and_then(|a| a.get(build::ANNOTATION_ROTATION_HASH).cloned());
                if !crate::api::selector_matches(selector, &labels)
                    || current.as_deref() == Some(hash)
                {
                    continue;
                }
                let wname = w.name_any();
                api.patch(
                    &wname,
                    &PatchParams::apply(FIELD_MANAGER_ROTATION).force(),
                    &Patch::Apply(build::rotation_patch($kind, &wname, hash)),
                )
                .await?;
                ctx.event_about(
                    server,
                    Some(w.object_ref(&())),
                    EventType::Normal,
                    "RollingRestart",
                    &format!("Restarted {}/{wname}: {why} (rotation hash {hash})", $kind),
                )
                .await;
                ctx.metrics.rolling_restart($kind);
                restarted.push(format!("{}/{wname}", $kind));
            }
        }};
    }
    roll!(Deployment, "Deployment");
    roll!(StatefulSet, "StatefulSet");
    roll!(DaemonSet, "DaemonSet");
    Ok(restarted)
}

/// Reconciles one McpServer. Returns when to look again: at the earliest certificate
/// renewal time, and at most [`RESYNC_SECS`] later.
///
/// # Errors
/// API failures (retried by [`error_policy`] with backoff). Problems a user must fix
/// (missing sources, bad PEM) are not errors: they become conditions and events.
pub async fn reconcile(server: Arc<McpServer>, ctx: Arc<Context>) -> Result<Action> {
    let ns = server
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = server
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("name"))?;
    let _timer = ctx.metrics.reconcile_started();
    let now = ctx.now();
    let mut desired: Vec<DesiredCondition> = Vec::new();
    let old_status = server.status.clone().unwrap_or_default();
    let mut status = McpServerStatus {
        observed_generation: server.metadata.generation,
        endpoint: old_status.endpoint.clone(),
        pinned_sha256: old_status.pinned_sha256.clone(),
        pinned_certificate: old_status.pinned_certificate.clone(),
        ..Default::default()
    };

    // 1. Trust bundle.
    let mut stale_pods = false;
    let mut bundle_ok = false;
    let mut current_bundle: Option<Arc<TrustBundle>> = None;
    match trust_bundle(&server, &ns, &ctx).await {
        Ok(bundle) => {
            // The ConfigMap shared by the McpServers of this namespace with the same trust
            // ingredients. Applied only when the cached ConfigMap does not already hold
            // this bundle: a no-op apply is still a write the API server has to process,
            // and the other users of a shared ConfigMap find it current.
            let cm_name = crate::api::trust_config_map_name(&server);
            let cm = build::trust_config_map(&ns, &cm_name, &bundle);
            let labels = cm.metadata.labels.clone().unwrap_or_default();
            let cached =
                trust_config_map_cached(&ctx, &ns, &cm_name, &labels, None, &bundle.sha256).await;
            if cached != Cached::Current {
                let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
                let absent = cached == Cached::Absent;
                create_or_apply(&ctx, &api, &cm_name, FIELD_MANAGER_TRUST, &cm, absent).await?;
            }
            // The ConfigMaps it used before, while its running pods still mount them.
            let previous = still_mounted(&ctx, &ns, &name, &cm_name, &old_status).await?;
            let strategy = server.spec.rotation.clone().unwrap_or_default().strategy;
            let previous_note = previous_note(&previous, &cm_name, strategy);
            if !previous.is_empty() {
                stale_pods = true;
            }
            desired.push(DesiredCondition::new(
                types::TRUST_BUNDLE_READY,
                true,
                "BundleReady",
                format!(
                    "ConfigMap {cm_name} holds {} certificates ({} private CA{}{}), sha256 {}{previous_note}",
                    bundle.certificates,
                    bundle.private_cas,
                    if bundle.private_cas == 1 { "" } else { "s" },
                    if bundle.certificates > bundle.private_cas {
                        " plus the Mozilla roots"
                    } else {
                        ""
                    },
                    &bundle.sha256[..12.min(bundle.sha256.len())]
                ),
            ));
            status.trust_bundle = Some(TrustBundleStatus {
                config_map_name: cm_name,
                previous_config_maps: previous.into_iter().map(|(cm, _)| cm).collect(),
                sha256: bundle.sha256.clone(),
                certificates: bundle.certificates,
            });
            bundle_ok = true;
            current_bundle = Some(bundle);
        }
        Err(Error::EmptyBundle(_)) if awaiting_pin(&server) => {
            desired.push(DesiredCondition::new(
                types::TRUST_BUNDLE_READY,
                false,
                "AwaitingPin",
                "the bundle has no certificates until the endpoint's self-signed certificate is pinned (spec.trust.pinServerCertificate)",
            ));
        }
        Err(
            e @ (Error::SourceNotFound(_)
            | Error::InvalidCertificate(_)
            | Error::InvalidSpec(_)
            | Error::EmptyBundle(_)),
        ) => {
            desired.push(DesiredCondition::new(
                types::TRUST_BUNDLE_READY,
                false,
                e.reason(),
                e.to_string(),
            ));
            // Keep reporting the last good bundle: the ConfigMap still holds it.
            status.trust_bundle = old_status.trust_bundle.clone();
            if !old_condition_matches(
                &old_status,
                types::TRUST_BUNDLE_READY,
                e.reason(),
                &e.to_string(),
            ) {
                ctx.event(&server, EventType::Warning, e.reason(), &e.to_string())
                    .await;
            }
        }
        Err(e) => return Err(e),
    }

    // 2. Certificates.
    let mut certs_ok = true;
    let mut next_renewal: Option<i64> = None;
    let mut probe_material = super::endpoint::ProbeMaterial::default();
    match certificates(&server, &ns, &name, &ctx).await {
        Ok(None) => desired.push(DesiredCondition::new(
            types::CERTIFICATES_READY,
            true,
            "NotRequested",
            "spec.mtls is not set: no certificates to issue",
        )),
        Ok(Some(c)) => {
            let server_part = c
                .server
                .as_ref()
                .map(|s| {
                    format!(
                        "server certificate in Secret {} valid until {}",
                        s.secret_name,
                        s.not_after
                            .as_ref()
                            .map(|t| t.0.to_string())
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            desired.push(DesiredCondition::new(
                types::CERTIFICATES_READY,
                true,
                "Issued",
                format!(
                    "{server_part}; {} client certificate(s) issued",
                    c.clients.len()
                ),
            ));
            status.server_certificate = c.server.map(|mut cur| {
                // When the Secret came to hold this certificate: kept while it is the
                // same one, now when it changed (or was never recorded).
                cur.changed_at = old_status
                    .server_certificate
                    .as_ref()
                    .filter(|o| o.sha256 == cur.sha256)
                    .and_then(|o| o.changed_at.clone())
                    .or_else(|| Some(build::time(now)));
                cur
            });
            status.client_certificates = c.clients;
            next_renewal = c.next_renewal;
            probe_material.client = c.probe_client;
            probe_material.ca_bundle_pem = Some(c.ca_pem);
        }
        Err(e @ (Error::Issue(_) | Error::FederationCa(_) | Error::InvalidSpec(_))) => {
            certs_ok = false;
            desired.push(DesiredCondition::new(
                types::CERTIFICATES_READY,
                false,
                e.reason(),
                e.to_string(),
            ));
            status.server_certificate = old_status.server_certificate.clone();
            status.client_certificates = old_status.client_certificates.clone();
            if !old_condition_matches(
                &old_status,
                types::CERTIFICATES_READY,
                e.reason(),
                &e.to_string(),
            ) {
                ctx.event(&server, EventType::Warning, e.reason(), &e.to_string())
                    .await;
            }
        }
        Err(e) => return Err(e),
    }

    // 2b. Endpoint: probe as a gateway would, on an interval, on change, and when the
    // grace period after a certificate change ends.
    let mut next_probe: Option<i64> = None;
    let mut requeue_now = false;
    let rotation = server.spec.rotation.clone().unwrap_or_default();
    let grace = ctx.config.stale_certificate_grace_secs;
    let mut serving_stale = false;
    let mut reloaders_need_fallback = false;
    if ctx.probe_endpoints
        && server.spec.transport != crate::api::Transport::Stdio
        && server.spec.endpoint.is_some()
    {
        let bundle_changed = old_status.trust_bundle.as_ref().map(|b| &b.sha256)
            != status.trust_bundle.as_ref().map(|b| &b.sha256);
        let grace_probe = super::endpoint::grace_probe_time(
            status.server_certificate.as_ref(),
            old_status.endpoint.as_ref(),
            grace,
        );
        let due = super::endpoint::is_due(&server, &old_status, bundle_changed, now)
            || grace_probe.is_some_and(|t| now >= t);
        // What to probe with: the bundle plus the federation CA; or, while a self-signed
        // certificate waits to be pinned and nothing is trusted yet, no bundle at all.
        let plan = match &current_bundle {
            Some(bundle) if due => {
                let mut pem = bundle.ca_bundle_pem.clone();
                if let Some(ca) = probe_material.ca_bundle_pem.take() {
                    pem.push_str(&ca);
                }
                probe_material.ca_bundle_pem = Some(pem);
                Some(super::endpoint::pinned_fingerprint(&server))
            }
            None if due && awaiting_pin(&server) => {
                probe_material.ca_bundle_pem = None;
                Some(None)
            }
            _ => None,
        };
        let opts = plan.and_then(|pinned| {
            super::endpoint::options(&server, &probe_material, pinned.as_deref(), now)
        });
        if let Some(opts) = opts {
            let started = std::time::Instant::now();
            let report = ctx.prober.probe(opts).await;
            let elapsed = started.elapsed();
            let mut eval = super::endpoint::evaluate(&server, &report, now);
            // RotationReady (Signal only): the sidecars, read at each probe.
            let mut explanation = None;
            if rotation.strategy == RotationStrategy::Signal {
                let agg = super::reloaders::read(&ctx, &ns, &name).await?;
                let c = &agg.condition;
                if c.reason == super::reloaders::REASON_SIGNAL_KILLED_TARGET
                    && !old_condition_matches_reason(&old_status, types::ROTATION_READY, &c.reason)
                {
                    ctx.event(&server, EventType::Warning, &c.reason, &c.message)
                        .await;
                }
                reloaders_need_fallback = agg.needs_fallback;
                explanation = agg.explanation;
                desired.push(agg.condition);
            }
            // Served vs current: the Secret's certificate, after the grace period.
            let issuer = match status.server_certificate {
                Some(_) => federation_ca(&ctx).await?.subject().to_string(),
                None => String::new(),
            };
            let staleness = super::endpoint::staleness(
                status.server_certificate.as_ref(),
                eval.endpoint.peer.as_ref(),
                &issuer,
                grace,
                now,
            );
            if let Some(current) = status.server_certificate.as_ref() {
                eval.condition = super::endpoint::stale_condition(
                    eval.condition,
                    staleness,
                    current,
                    eval.endpoint.peer.as_ref(),
                    rotation.strategy,
                    explanation.as_deref(),
                );
            }
            serving_stale =
                eval.condition.reason == super::endpoint::REASON_SERVING_STALE_CERTIFICATE;
            let c = &eval.condition;
            ctx.metrics
                .probe_finished(&ns, &name, c.status == "True", &c.reason, elapsed);
            if let Some(pin) = &eval.pin {
                ctx.event(&server, EventType::Normal, "Pinned", &c.message)
                    .await;
                status.pinned_sha256 = Some(pin.sha256.clone());
                status.pinned_certificate = Some(pin.pem.clone());
                // Rebuild the bundle with the pinned certificate right away.
                requeue_now = true;
            } else if serving_stale {
                // One event per transition: the message names the time, which stays, but
                // also the reloader's explanation, which may change.
                if !old_condition_matches_reason(&old_status, types::ENDPOINT_VERIFIED, &c.reason) {
                    ctx.metrics.serving_stale_certificate();
                    ctx.event(&server, EventType::Warning, &c.reason, &c.message)
                        .await;
                }
            } else if c.status != "True"
                && !old_condition_matches(
                    &old_status,
                    types::ENDPOINT_VERIFIED,
                    &c.reason,
                    &c.message,
                )
            {
                ctx.event(&server, EventType::Warning, &c.reason, &c.message)
                    .await;
            }
            let verified = eval.condition.status == "True";
            desired.push(eval.condition);
            status.endpoint = Some(eval.endpoint);
            let mut next = now + super::endpoint::next_delay(&server, &old_status, verified, now);
            if let super::endpoint::Staleness::InGrace { until, .. } = staleness {
                next = next.min(until + 1);
            }
            next_probe = Some(next);
        } else {
            if let Some(c) = super::endpoint::carried_over(&old_status) {
                desired.push(c);
            }
            next_probe = super::endpoint::next_probe_time(&server, &old_status);
            if let Some(g) = grace_probe {
                next_probe = Some(next_probe.map_or(g, |p| p.min(g)));
            }
        }
    }

    // 2c. Egress policy: NetworkPolicy and proxy allow-list (see super::egress).
    desired.push(super::egress::reconcile(&ctx, &server, &ns, &name, &old_status).await?);

    // 3. Status: Ready summarises; one apply, only when something changed.
    // Audit mode is a choice, not a failure: Ready stays True and says so.
    let failing: Vec<&DesiredCondition> = desired
        .iter()
        .filter(|c| {
            c.status != "True" && !super::egress::is_advisory(c) && c.type_ != types::ROTATION_READY
        })
        .collect();
    let ready = match failing.first() {
        None => {
            let mut message = ready_message(&server, &status);
            if let Some(note) = super::egress::ready_note(&desired) {
                message = format!("{message}; {note}");
            }
            DesiredCondition::new(types::READY, true, "Ready", message)
        }
        Some(f) => DesiredCondition::new(
            types::READY,
            false,
            &f.reason,
            format!("{}: {}", f.type_, f.message),
        ),
    };
    desired.push(ready);
    status.conditions = conditions::merge(
        &old_status.conditions,
        &desired,
        server.metadata.generation,
        &build::time(now),
    );
    if rotation.strategy != RotationStrategy::Signal {
        status
            .conditions
            .retain(|c| c.type_ != types::ROTATION_READY);
    }
    if server.status.as_ref() != Some(&status) {
        let api: Api<McpServer> = Api::namespaced(ctx.client.clone(), &ns);
        let body = json!({
            "apiVersion": McpServer::api_version(&()),
            "kind": McpServer::kind(&()),
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER_STATUS).force(),
            &Patch::Apply(&body),
        )
        .await?;
    }
    ctx.metrics
        .record_server(&super::metrics::ServerSnapshot::from_status(
            &ns,
            &name,
            &status,
            current_bundle.as_deref(),
        ));

    // 4. Rotation, after the status: the webhook labels each new pod with the bundle hash it
    // reads from the trust ConfigMap and the status, both written by now, so no pod of the
    // rollout is admitted with the old hash.
    let strategy = rotation.strategy;
    if let (RotationStrategy::RollingRestart, Some(selector), Some(new_hash)) = (
        strategy,
        server.spec.pod_selector.as_ref(),
        status_rotation_hash(&status),
    ) {
        let old_hash = status_rotation_hash(&old_status);
        // Roll only on a real change of material that pods already had.
        if old_hash.is_some_and(|h| h != new_hash) {
            let restarted = rolling_restart(
                &ctx,
                &server,
                &ns,
                selector,
                &new_hash,
                "the trust bundle or certificate changed",
            )
            .await?;
            if !restarted.is_empty() {
                tracing::info!(mcpserver = %name, ?restarted, "rolled workloads after rotation");
            }
        }
    }

    // 4b. The Signal strategy's fallback: the endpoint still serves a previous
    // certificate past the grace period, or a sidecar could not signal safely. One roll
    // per certificate (the hash includes it).
    if strategy == RotationStrategy::Signal
        && rotation.fallback_or_default() == crate::api::RotationFallback::RollingRestart
        && (serving_stale || reloaders_need_fallback)
        && let (Some(selector), Some(hash)) = (
            server.spec.pod_selector.as_ref(),
            status_rotation_hash(&status),
        )
    {
        let why = if serving_stale {
            "the endpoint still serves the previous certificate past the grace period (spec.rotation.fallback: RollingRestart)"
        } else {
            "the mcptrust-reloader could not signal the server safely (spec.rotation.fallback: RollingRestart)"
        };
        let restarted = rolling_restart(&ctx, &server, &ns, selector, &hash, why).await?;
        if !restarted.is_empty() {
            tracing::info!(mcpserver = %name, ?restarted, serving_stale, "applied the Signal strategy's fallback: rolled workloads");
        }
    }

    let _ = (bundle_ok, certs_ok);
    let mut wait = RESYNC_SECS;
    if let Some(r) = next_renewal {
        wait = wait.min((r - now).max(1));
    }
    if let Some(p) = next_probe {
        wait = wait.min((p - now).max(1));
    }
    if requeue_now {
        wait = 1;
    }
    if desired.iter().any(|c| c.reason == "SourceNotFound") {
        wait = wait.min(60);
    }
    if stale_pods {
        // Pods are not watched: look again for the ones that still mount a previous
        // ConfigMap.
        wait = wait.min(STALE_POD_RECHECK_SECS);
    }
    Ok(Action::requeue(Duration::from_secs(wait.unsigned_abs())))
}

/// The rotation hash ([`build::rotation_hash`]) of the trust bundle and server
/// certificate in `status`; `None` without a bundle.
fn status_rotation_hash(status: &McpServerStatus) -> Option<String> {
    let bundle = status.trust_bundle.as_ref()?;
    Some(build::rotation_hash(
        &bundle.config_map_name,
        &bundle.sha256,
        status
            .server_certificate
            .as_ref()
            .and_then(|c| c.sha256.as_deref()),
    ))
}

/// How often (seconds) an McpServer whose pods still mount a previous trust ConfigMap
/// looks for them again.
pub const STALE_POD_RECHECK_SECS: i64 = 15;

/// The trust ConfigMaps McpServer `ns/name` used before `current` (its status's
/// `configMapName` when it differs, and its `previousConfigMaps`) that running pods of it
/// still mount, each with how many do. A pod counts when it is annotated
/// `mcptrust.io/mcpserver: <ns>/<name>` (the webhook's mark), has not finished
/// (`Succeeded`/`Failed`) and has a ConfigMap volume of that name. One list of the
/// namespace's pods, only when there is a previous ConfigMap at all.
///
/// # Errors
/// [`Error::Kube`] when the pods cannot be listed.
async fn still_mounted(
    ctx: &Context,
    ns: &str,
    name: &str,
    current: &str,
    old: &McpServerStatus,
) -> Result<Vec<(String, usize)>> {
    let Some(tb) = old.trust_bundle.as_ref() else {
        return Ok(Vec::new());
    };
    let mut candidates: Vec<String> = tb.previous_config_maps.clone();
    candidates.push(tb.config_map_name.clone());
    candidates.retain(|c| c != current);
    candidates.sort();
    candidates.dedup();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ctx.client.clone(), ns);
    let marker = format!("{ns}/{name}");
    let mut counts: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for pod in pods.list(&ListParams::default()).await?.items {
        let ours = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::inject::ANNOTATION_MCPSERVER))
            == Some(&marker);
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        if !ours || finished {
            continue;
        }
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some(cm) = v
                .config_map
                .as_ref()
                .filter(|c| candidates.contains(&c.name))
            {
                *counts.entry(cm.name.clone()).or_default() += 1;
            }
        }
    }
    Ok(counts.into_iter().collect())
}

/// The part of the TrustBundleReady message about pods still mounting a previous
/// ConfigMap (empty when none does).
fn previous_note(
    previous: &[(String, usize)],
    current: &str,
    strategy: RotationStrategy,
) -> String {
    if previous.is_empty() {
        return String::new();
    }
    let list = previous
        .iter()
        .map(|(cm, n)| format!("{n} pod(s) still mount the previous ConfigMap {cm}"))
        .collect::<Vec<_>>()
        .join(", ");
    match strategy {
        RotationStrategy::None | RotationStrategy::Signal => format!(
            "; {list}: rotation strategy {strategy:?} does not restart them, restart them to mount {current}"
        ),
        RotationStrategy::RollingRestart => {
            format!("; {list} until the rolling restart replaces them")
        }
    }
}

/// Pinning is requested and nothing is pinned yet.
fn awaiting_pin(server: &McpServer) -> bool {
    server
        .spec
        .trust
        .as_ref()
        .is_some_and(|t| t.pin_server_certificate)
        && server
            .status
            .as_ref()
            .and_then(|s| s.pinned_certificate.as_ref())
            .is_none()
}

fn ready_message(server: &McpServer, status: &McpServerStatus) -> String {
    let mut parts = vec![format!(
        "trust bundle {} is current",
        status
            .trust_bundle
            .as_ref()
            .map(|b| b.config_map_name.as_str())
            .unwrap_or("?")
    )];
    if server.spec.mtls.is_some() {
        parts.push(format!(
            "server and {} client certificate(s) valid",
            status.client_certificates.len()
        ));
    }
    parts.join("; ")
}

fn old_condition_matches_reason(old: &McpServerStatus, type_: &str, reason: &str) -> bool {
    old.conditions
        .iter()
        .any(|c| c.type_ == type_ && c.reason == reason)
}

fn old_condition_matches(old: &McpServerStatus, type_: &str, reason: &str, message: &str) -> bool {
    old.conditions
        .iter()
        .any(|c| c.type_ == type_ && c.reason == reason && c.message == message)
}

/// The error policy: log, count, and retry with a per-object backoff (5 s doubling to
/// 5 min), as controller-rs does.
pub fn error_policy(server: Arc<McpServer>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(mcpserver = %server.name_any(), reason = error.reason(), "reconcile failed: {error}");
    ctx.metrics.reconcile_failed(error.reason());
    let key = format!(
        "{}/{}",
        server.namespace().unwrap_or_default(),
        server.name_any()
    );
    Action::requeue(ctx.backoff(&key))
}
