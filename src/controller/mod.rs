//! The McpServer controller: trust bundles, the federation CA, mTLS Secrets with renewal,
//! rolling restarts on rotation, status conditions and events.
//!
//! Structure (after kube-rs controller-rs and Stackable's operators): one [`Context`]
//! holding the client, the event recorder, metrics and config; [`reconcile::reconcile`]
//! as a pipeline whose desired objects come from the pure [`build`] module; every write a
//! server-side apply with a named field manager.

pub mod build;
pub mod bundles;
pub mod egress;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod namespaces;
pub mod rbac;
pub mod reconcile;
pub mod reloaders;
pub mod resolver;
pub mod trust_index;
pub mod webhook_cert;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as RuntimeConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::api::McpServer;
use crate::pki::issue::CertificateAuthority;

pub use error::{Error, Result};
pub use events::{Event, EventType, Recorder, Reporter};
pub use metrics::{ControllerMetrics, DurationGuard, ErrorLabels};

/// Field manager of the trust ConfigMaps.
pub const FIELD_MANAGER_TRUST: &str = "mcptrust-trust";
/// Field manager of the TLS Secrets.
pub const FIELD_MANAGER_CERTS: &str = "mcptrust-certificates";
/// Field manager of McpServer status.
pub const FIELD_MANAGER_STATUS: &str = "mcptrust-status";
/// Field manager of the rotation annotation on workloads.
pub const FIELD_MANAGER_ROTATION: &str = "mcptrust-rotation";
/// Field manager of the egress NetworkPolicies and allow-list ConfigMaps.
pub const FIELD_MANAGER_EGRESS: &str = "mcptrust-egress";
/// Label that makes a Secret used as a trust source trigger a reconcile when it changes
/// (Secrets are watched label-scoped only; unlabelled ones are re-read at each resync).
pub const LABEL_TRUST_SOURCE: &str = "mcptrust.io/trust-source";

/// Controller flags (all with environment variables).
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Namespace the operator runs in (the federation CA Secret and the Lease live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "mcptrust")]
    pub operator_namespace: String,
    /// Name of the federation CA Secret (`tls.crt`, `tls.key`) in the operator namespace.
    #[arg(
        long,
        env = "MCPTRUST_FEDERATION_CA_SECRET",
        default_value = "mcptrust-federation-ca"
    )]
    pub federation_ca_secret: String,
    /// The federation CA Secret is supplied by the user: never create it.
    #[arg(
        long,
        env = "MCPTRUST_FEDERATION_CA_USER_SUPPLIED",
        default_value_t = false
    )]
    pub federation_ca_user_supplied: bool,
    /// Lifetime of a generated federation CA, in days.
    #[arg(long, env = "MCPTRUST_FEDERATION_CA_DAYS", default_value_t = 3650)]
    pub federation_ca_days: i64,
    /// Do not probe McpServer endpoints (no EndpointVerified condition), e.g. when running
    /// out of cluster where in-cluster Service names do not resolve.
    #[arg(long, env = "MCPTRUST_DISABLE_ENDPOINT_PROBE", default_value_t = false)]
    pub disable_endpoint_probe: bool,
    /// How many McpServers are reconciled at once (at least 1). A burst of changes (a
    /// `helm upgrade`, a restart of the operator, a thousand creates) waits in the queue
    /// instead of running all at once, so the operator's memory follows this number and the
    /// number of McpServers, not the size of the burst.
    #[arg(
        long,
        env = "MCPTRUST_RECONCILE_CONCURRENCY",
        default_value_t = DEFAULT_RECONCILE_CONCURRENCY,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub reconcile_concurrency: u16,
    /// This replica's identity for events and the Lease (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "mcptrust")]
    pub pod_name: String,
    /// Seconds after the server certificate's Secret changed during which the endpoint may
    /// still serve the previous certificate with `EndpointVerified` True (kubelet's Secret
    /// volume sync plus the reloader's debounce); past it the probe reports
    /// `ServingStaleCertificate`.
    #[arg(
        long,
        env = "MCPTRUST_STALE_CERTIFICATE_GRACE_SECONDS",
        default_value_t = DEFAULT_STALE_CERTIFICATE_GRACE_SECS,
        value_parser = clap::value_parser!(u32)
    )]
    pub stale_certificate_grace_seconds: u32,
}

/// Default of `--stale-certificate-grace-seconds` (2 minutes): kubelet syncs a Secret
/// volume within about a minute (its sync period plus the cache's TTL), and the reloader
/// waits its debounce (2 s) before it signals.
pub const DEFAULT_STALE_CERTIFICATE_GRACE_SECS: u32 = 120;

/// Default of `--reconcile-concurrency`: enough to overlap API round trips on a small
/// (2-core) node, few enough that a burst costs a few bundles' worth of memory.
pub const DEFAULT_RECONCILE_CONCURRENCY: u16 = 4;

/// How long a trigger waits before its reconcile starts, so that the watch events of one
/// reconcile's own writes (the ConfigMap, the Secrets, the status: one event each, within
/// milliseconds) and of a burst of edits lead to one reconcile, not several
/// (kube-runtime's `Config::debounce`).
pub const RECONCILE_DEBOUNCE: Duration = Duration::from_millis(500);

/// Controller configuration (resolved from [`ControllerArgs`] and the operator config).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Operator namespace.
    pub operator_namespace: String,
    /// Federation CA Secret name.
    pub ca_secret_name: String,
    /// Never create the CA Secret.
    pub ca_user_supplied: bool,
    /// Lifetime of a generated CA (seconds).
    pub ca_validity_secs: i64,
    /// Private CAs (PEM) for namespace-default bundles (`mcptrust-trust`).
    pub default_cas_pem: String,
    /// Include the Mozilla roots in namespace-default bundles.
    pub default_include_system_roots: bool,
    /// Name of the namespace-default trust ConfigMap.
    pub default_config_map: String,
    /// The proxy and DNS the egress NetworkPolicies allow (from the operator config).
    pub egress: egress::EgressDefaults,
    /// Seconds after a server certificate changed during which the endpoint may still
    /// serve the previous one (`--stale-certificate-grace-seconds`).
    pub stale_certificate_grace_secs: i64,
}

impl ControllerConfig {
    /// From flags and the operator config file.
    pub fn new(args: &ControllerArgs, config: &crate::inject::InjectConfig) -> Self {
        Self {
            operator_namespace: args.operator_namespace.clone(),
            ca_secret_name: args.federation_ca_secret.clone(),
            ca_user_supplied: args.federation_ca_user_supplied,
            ca_validity_secs: args.federation_ca_days.saturating_mul(86_400),
            default_cas_pem: config.default_trust.extra_cas_pem.clone(),
            default_include_system_roots: config.default_trust.include_system_roots,
            default_config_map: config.trust_config_map.clone(),
            egress: egress::EgressDefaults::from_config(config),
            stale_certificate_grace_secs: i64::from(args.stale_certificate_grace_seconds),
        }
    }
}

/// A clock returning unix seconds; tests fix it.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    })
}

/// Everything a reconcile needs.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes events on McpServers (`kubectl describe` shows them), remembering at most
    /// [`events::MAX_CACHED_SERIES`] series.
    pub recorder: Recorder,
    /// Configuration.
    pub config: ControllerConfig,
    /// Metrics.
    pub metrics: ControllerMetrics,
    /// The clock (unix seconds).
    pub clock: Clock,
    /// Probes endpoints (the live network probe, or a test double).
    pub prober: endpoint::SharedProber,
    /// Whether endpoints are probed at all (`--disable-endpoint-probe` turns it off).
    pub probe_endpoints: bool,
    /// Reads the `mcptrust-reloader` sidecars' `/status` (live HTTP, or a test double).
    pub reloaders: reloaders::SharedReloaderReader,
    /// At most this many McpServers are reconciled at once ([`DEFAULT_RECONCILE_CONCURRENCY`];
    /// `--reconcile-concurrency`).
    pub reconcile_concurrency: u16,
    /// The federation CA, once loaded.
    pub(crate) ca: tokio::sync::Mutex<Option<Arc<CertificateAuthority>>>,
    /// Bundles built recently, shared by the McpServers with the same sources.
    pub(crate) bundles: bundles::BundleCache,
    /// The managed ConfigMaps (metadata only) while [`run`] runs: a trust ConfigMap that
    /// already holds the bundle is not applied again.
    pub(crate) managed_config_maps: Mutex<Option<Store<PartialObjectMeta<ConfigMap>>>>,
    /// The managed Secrets (metadata only) while [`run`] runs: with
    /// [`Context::certificates`], a TLS Secret unchanged since this process last read or
    /// wrote it is not read again.
    pub(crate) managed_secrets: Mutex<Option<Store<PartialObjectMeta<Secret>>>>,
    /// What this process last found valid in each TLS Secret (`(namespace, name)` key).
    pub(crate) certificates: Mutex<HashMap<(String, String), reconcile::CertRecord>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// Builds a context.
    pub fn new(
        client: Client,
        config: ControllerConfig,
        metrics: ControllerMetrics,
        clock: Clock,
        reporter: &str,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "mcptrust".into(),
                instance: Some(reporter.to_string()),
            },
        );
        Self {
            client,
            recorder,
            config,
            metrics,
            clock,
            prober: Arc::new(endpoint::LiveProber),
            probe_endpoints: true,
            reloaders: Arc::new(reloaders::LiveReloaderReader),
            reconcile_concurrency: DEFAULT_RECONCILE_CONCURRENCY,
            ca: tokio::sync::Mutex::new(None),
            bundles: bundles::BundleCache::default(),
            managed_config_maps: Mutex::new(None),
            managed_secrets: Mutex::new(None),
            certificates: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The cache of managed Secrets' metadata, once it has listed them (`None` outside
    /// [`run`], or when it has not listed within 30 s).
    pub(crate) async fn managed_secrets(&self) -> Option<Store<PartialObjectMeta<Secret>>> {
        listed(&self.managed_secrets).await
    }

    /// Drops the [`Context::certificates`] records of Secrets that the managed Secrets'
    /// cache no longer holds (deleted with their McpServer, by garbage collection or by
    /// hand), so that the records are bounded by the Secrets that exist, not by every
    /// Secret this process has ever checked. A record is only consulted when the cache
    /// holds its Secret, so dropping it changes no decision. Returns how many were
    /// dropped; 0 while the cache has not listed (nothing is dropped then).
    pub async fn forget_deleted_certificates(&self) -> usize {
        let Some(store) = self.managed_secrets().await else {
            return 0;
        };
        let mut records = self.certificates.lock().unwrap_or_else(|p| p.into_inner());
        let before = records.len();
        records.retain(|(ns, name), _| store.get(&ObjectRef::new(name).within(ns)).is_some());
        before - records.len()
    }

    /// Sets how many McpServers [`run`] reconciles at once (0 is taken as 1).
    pub fn with_reconcile_concurrency(mut self, n: u16) -> Self {
        self.reconcile_concurrency = n.max(1);
        self
    }

    /// The cache of managed ConfigMaps, once it has listed them (`None` outside [`run`]).
    pub(crate) async fn managed_config_maps(&self) -> Option<Store<PartialObjectMeta<ConfigMap>>> {
        listed(&self.managed_config_maps).await
    }

    /// Replaces the prober (tests).
    pub fn with_prober(mut self, prober: endpoint::SharedProber) -> Self {
        self.prober = prober;
        self
    }

    /// Replaces the reader of the reloader sidecars' status (tests).
    pub fn with_reloader_reader(mut self, reader: reloaders::SharedReloaderReader) -> Self {
        self.reloaders = reader;
        self
    }

    /// Turns endpoint probing off (no EndpointVerified condition; Ready ignores it).
    pub fn without_endpoint_probe(mut self) -> Self {
        self.probe_endpoints = false;
        self
    }

    /// Now, in unix seconds.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Publishes an event on `server`; a failure to publish is logged, never fatal (see
    /// [`Context::event_about`] for the retries).
    pub async fn event(&self, server: &McpServer, type_: EventType, reason: &str, note: &str) {
        self.event_about(server, None, type_, reason, note).await
    }

    /// Publishes an event on `server` about a related object (a Secret, a workload), which
    /// also keeps events about different objects in separate series.
    ///
    /// An issuance is only visible to people through its event, so a transient failure (the
    /// API server unreachable or restarting, a 5xx or 429 answer) is retried with backoff
    /// (0.25 s doubling, about 30 s in all) before the event is given up and logged; other
    /// refusals (403, 422) are logged at once.
    pub async fn event_about(
        &self,
        server: &McpServer,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".to_string(),
            secondary: related,
        };
        let reference = server.object_ref(&());
        let mut delay = Duration::from_millis(250);
        loop {
            match self.recorder.publish(&ev, &reference).await {
                Ok(()) => return,
                Err(e) if transient(e.kube_error()) && delay <= Duration::from_secs(16) => {
                    tracing::debug!(
                        reason,
                        "publishing an event failed, retrying in {delay:?}: {e}"
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::warn!(
                        reason,
                        error = e.reason(),
                        "publishing an event failed: {e}"
                    );
                    return;
                }
            }
        }
    }

    /// Per-object exponential backoff: 5 s, 10 s, 20 s... capped at 300 s.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs((5u64 << (*n - 1).min(6)).min(300))
    }

    /// Forgets an object's failures (after a successful reconcile).
    pub fn reset_backoff(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// The store in `slot` once it has listed its objects; `None` when there is none or it has
/// not listed within 30 s. Not listed yet (a restart): wait, so that nothing is written
/// only for want of a cache; never wait forever on a watch that cannot list.
async fn listed<K>(slot: &Mutex<Option<Store<K>>>) -> Option<Store<K>>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let store = slot.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
    tokio::time::timeout(Duration::from_secs(30), store.wait_until_ready())
        .await
        .ok()?
        .ok()?;
    Some(store)
}

/// The federation CA Secret (`kubernetes.io/tls` with `tls.crt`, `tls.key` and `ca.crt`).
pub fn build_ca_secret(cfg: &ControllerConfig, ca: &CertificateAuthority) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(cfg.ca_secret_name.clone()),
            namespace: Some(cfg.operator_namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    build::LABEL_MANAGED_BY.to_string(),
                    build::MANAGED_BY.to_string(),
                ),
                (
                    build::LABEL_COMPONENT.to_string(),
                    "federation-ca".to_string(),
                ),
            ])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_string(),
                ByteString(ca.cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(ca.key_pem.clone().into_bytes()),
            ),
            (
                "ca.crt".to_string(),
                ByteString(ca.cert_pem.clone().into_bytes()),
            ),
        ])),
        ..Default::default()
    }
}

/// Maps an object mcptrust wrote back to its McpServer, from its labels.
fn managed_to_server<K: Resource>(obj: &K) -> Option<ObjectRef<McpServer>> {
    let labels = obj.meta().labels.as_ref()?;
    let name = labels.get(build::LABEL_MCPSERVER)?;
    let ns = labels.get(build::LABEL_MCPSERVER_NAMESPACE)?;
    Some(ObjectRef::new(name).within(ns))
}

/// How often the series of deleted McpServers are removed (compared with the
/// controller's cache of McpServers, no API call).
pub const METRICS_PRUNE_INTERVAL: Duration = Duration::from_secs(15);

/// Removes the metric series of the McpServers that are no longer in `store` (the
/// controller's cache: they were deleted). Returns how many McpServers were dropped.
pub fn prune_deleted(
    metrics: &ControllerMetrics,
    store: &kube::runtime::reflector::Store<McpServer>,
) -> usize {
    metrics.retain_servers(|ns, name| store.get(&ObjectRef::new(name).within(ns)).is_some())
}

/// Runs the McpServer controller until `shutdown` resolves.
///
/// Metrics: `mcptrust_controller_leader` is 1 while this runs (it runs on the leader only,
/// or always without leader election); every [`METRICS_PRUNE_INTERVAL`] the series of
/// McpServers no longer in the cache (deleted) are removed; on return every per-McpServer
/// series is removed, so a replica that lost the lead reports none.
///
/// Watches: McpServers; the ConfigMaps and Secrets mcptrust manages (label
/// `app.kubernetes.io/managed-by=mcptrust`, metadata only); ConfigMaps named as trust
/// sources (metadata only); Secrets labelled `mcptrust.io/trust-source=true` (metadata
/// only). A change to any re-reconciles the McpServers concerned.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    // The McpServers, cached without what no reconcile reads (managedFields, kubectl's
    // last-applied copy of the spec): a third of each object's memory.
    let servers: Api<McpServer> = Api::all(client.clone());
    let (store, server_writer) = reflector::store();
    // Which McpServers use which trust ConfigMap and name which source, kept by the same
    // watch (after the store's write): events find their McpServers without a scan.
    let index = trust_index::TrustIndex::default();
    let server_stream = {
        let index = index.clone();
        reflector(
            server_writer,
            watcher(servers, watcher::Config::default().any_semantic()).modify(slim_server),
        )
        .inspect(move |event| {
            if let Ok(event) = event {
                index.apply_watcher_event(event);
            }
        })
        .applied_objects()
    };
    let controller = Controller::for_stream(server_stream, store.clone()).with_config(
        RuntimeConfig::default()
            .concurrency(ctx.reconcile_concurrency.max(1))
            .debounce(RECONCILE_DEBOUNCE),
    );
    let managed = watcher::Config::default().labels(&format!(
        "{}={}",
        build::LABEL_MANAGED_BY,
        build::MANAGED_BY
    ));
    let metrics = ctx.metrics.clone();
    metrics.set_leader(true);
    // The managed ConfigMaps' metadata: one watch that both triggers reconciles and fills
    // the cache the reconciles compare with (managedFields kept as manager names only).
    let (cm_store, cm_writer) = reflector::store();
    let pruner = {
        let (metrics, store, ctx) = (metrics.clone(), store.clone(), ctx.clone());
        let (cm_store, index) = (cm_store.clone(), index.clone());
        async move {
            if store.wait_until_ready().await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(METRICS_PRUNE_INTERVAL);
            loop {
                tick.tick().await;
                let removed = prune_deleted(&metrics, &store);
                if removed > 0 {
                    tracing::debug!(removed, "removed the metrics of deleted McpServers");
                }
                let forgotten = ctx.forget_deleted_certificates().await;
                if forgotten > 0 {
                    tracing::debug!(forgotten, "forgot the records of deleted TLS Secrets");
                }
                let swept = sweep_trust_config_maps(&ctx, &cm_store, &index).await;
                if swept > 0 {
                    tracing::info!(swept, "deleted trust ConfigMaps no McpServer uses");
                }
            }
        }
    };
    let cm_stream = reflector(
        cm_writer,
        watcher(
            Api::<PartialObjectMeta<ConfigMap>>::all(client.clone()),
            managed.clone(),
        )
        .modify(slim_managed),
    )
    .touched_objects();
    *ctx.managed_config_maps
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(cm_store);
    // The managed Secrets' metadata, likewise: a trigger and a cache.
    let (secret_store, secret_writer) = reflector::store();
    let secret_stream = reflector(
        secret_writer,
        watcher(
            Api::<PartialObjectMeta<Secret>>::all(client.clone()),
            managed,
        )
        .modify(slim_secret),
    )
    .touched_objects();
    *ctx.managed_secrets
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(secret_store);
    // Api<PartialObjectMeta<K>> makes metadata-only list/watch requests.
    let ctx_run = ctx.clone();
    let (index_managed, index_cm, index_secret) = (index.clone(), index.clone(), index.clone());
    let controller = controller
        .watches_stream(cm_stream, move |o| {
            // The McpServers that use a trust ConfigMap (a change or a deletion is healed
            // by one of them); a managed ConfigMap may also be named as a trust source.
            let (name, ns) = (o.name_any(), o.namespace().unwrap_or_default());
            let mut refs = index_managed.users_of_config_map(&ns, &name);
            refs.extend(index_managed.users_of_source(
                &ns,
                trust_index::SourceKind::ConfigMap,
                &name,
            ));
            refs.extend(managed_to_server(&o));
            refs
        })
        .watches_stream(secret_stream, |o| managed_to_server(&o))
        .watches_stream(
            // Every ConfigMap may be a trust source, but not the ones mcptrust writes.
            metadata(
                Api::<PartialObjectMeta<ConfigMap>>::all(client.clone()),
                watcher::Config::default().labels(&format!(
                    "{}!={}",
                    build::LABEL_MANAGED_BY,
                    build::MANAGED_BY
                )),
            ),
            move |o| {
                index_cm.users_of_source(
                    &o.namespace().unwrap_or_default(),
                    trust_index::SourceKind::ConfigMap,
                    &o.name_any(),
                )
            },
        )
        .watches_stream(
            metadata(
                Api::<PartialObjectMeta<Secret>>::all(client.clone()),
                watcher::Config::default().labels(&format!("{LABEL_TRUST_SOURCE}=true")),
            ),
            move |o| {
                index_secret.users_of_source(
                    &o.namespace().unwrap_or_default(),
                    trust_index::SourceKind::Secret,
                    &o.name_any(),
                )
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile_and_reset, reconcile::error_policy, ctx_run)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!("controller: {e}");
            }
        });
    tokio::select! {
        () = controller => {},
        () = pruner => {},
    }
    *ctx.managed_config_maps
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = None;
    *ctx.managed_secrets
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = None;
    ctx.certificates
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    metrics.set_leader(false);
}

/// A metadata-only watch of `api` as a trigger stream, each object slimmed by
/// [`slim_managed`].
fn metadata<K>(
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
) -> impl futures::Stream<Item = std::result::Result<PartialObjectMeta<K>, watcher::Error>>
+ Send
+ 'static
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    watcher(api, config).modify(slim_managed).touched_objects()
}

/// Drops from a cached McpServer what no reconcile reads: `managedFields` and kubectl's
/// `kubectl.kubernetes.io/last-applied-configuration` (a copy of the whole spec). The
/// optimization kube-rs recommends for reflector caches
/// (<https://kube.rs/controllers/optimization/>).
fn slim_server(server: &mut McpServer) {
    server.managed_fields_mut().clear();
    server
        .annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// Keeps of a watched object's `managedFields` only the manager names (what
/// [`reconcile::trust_config_map_cached`] reads), dropping the field sets.
fn slim_managed<K: Resource>(obj: &mut K) {
    for entry in obj.meta_mut().managed_fields.iter_mut().flatten() {
        entry.fields_v1 = None;
        entry.time = None;
    }
    obj.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// Keeps of a managed Secret's metadata only what the reconciles read from the cache: its
/// name, namespace and `resourceVersion`, and the two labels that name its McpServer
/// ([`managed_to_server`]). 2,000 Secrets for 1,000 mTLS McpServers.
fn slim_secret(secret: &mut PartialObjectMeta<Secret>) {
    let meta = &mut secret.metadata;
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.annotations = None;
    meta.finalizers = None;
    meta.creation_timestamp = None;
    meta.uid = None;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k == build::LABEL_MCPSERVER || k == build::LABEL_MCPSERVER_NAMESPACE);
    }
}

async fn reconcile_and_reset(
    server: Arc<McpServer>,
    ctx: Arc<Context>,
) -> Result<kube::runtime::controller::Action> {
    let key = format!(
        "{}/{}",
        server.namespace().unwrap_or_default(),
        server.name_any()
    );
    let action = reconcile::reconcile(server, ctx.clone()).await?;
    ctx.reset_backoff(&key);
    Ok(action)
}

/// Deletes the trust ConfigMaps mcptrust wrote for McpServers (the shared
/// `mcptrust-trust-<key>`, labelled [`build::LABEL_TRUST_KEY`], and the per-server
/// `mcptrust-<name>-trust` of earlier versions, labelled [`build::LABEL_MCPSERVER`]) that
/// no McpServer of their namespace uses any more ([`trust_index::TrustIndex`]: neither
/// as its current ConfigMap nor as a previous one its pods still mount). The
/// namespace-default `mcptrust-trust` carries neither label and is never swept. Each
/// delete is conditional on the cached `resourceVersion`: a ConfigMap changed meanwhile
/// waits for the next sweep. Returns how many were deleted; 0 until both the index and
/// the cache have listed.
pub(crate) async fn sweep_trust_config_maps(
    ctx: &Context,
    store: &Store<PartialObjectMeta<ConfigMap>>,
    index: &trust_index::TrustIndex,
) -> usize {
    if !index.is_listed() || ctx.managed_config_maps().await.is_none() {
        return 0;
    }
    let mut deleted = 0;
    for cm in store.state() {
        let meta = &cm.metadata;
        let labels = meta.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        let ours = label(build::LABEL_COMPONENT) == Some("trust")
            && (label(build::LABEL_TRUST_KEY).is_some() || label(build::LABEL_MCPSERVER).is_some());
        let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
            continue;
        };
        if !ours || index.is_used(ns, name) {
            continue;
        }
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: meta.resource_version.clone(),
                uid: meta.uid.clone(),
            }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                tracing::info!(configmap = %format!("{ns}/{name}"), "deleted a trust ConfigMap no McpServer uses");
                deleted += 1;
            }
            // Gone already, or changed since the cache saw it: the next sweep decides.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                tracing::warn!(configmap = %format!("{ns}/{name}"), "deleting an unused trust ConfigMap failed: {e}")
            }
        }
    }
    deleted
}

/// Whether an API error is worth retrying: no answer at all, or 429 / 5xx.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::Auth(_) | kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => false,
        _ => true,
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn secret_meta(ns: &str, name: &str) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    /// The records of Secrets that left the managed Secrets' cache are dropped, the others
    /// kept; nothing is dropped before the cache has listed.
    #[tokio::test]
    async fn records_of_deleted_secrets_are_forgotten() {
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let ctx = Context::new(
            Client::new(service, "default"),
            ControllerConfig {
                operator_namespace: "mcptrust".into(),
                ca_secret_name: "mcptrust-federation-ca".into(),
                ca_user_supplied: false,
                ca_validity_secs: 0,
                default_cas_pem: String::new(),
                default_include_system_roots: false,
                default_config_map: "mcptrust-trust".into(),
                egress: Default::default(),
                stale_certificate_grace_secs: DEFAULT_STALE_CERTIFICATE_GRACE_SECS.into(),
            },
            ControllerMetrics::default(),
            Arc::new(|| 0),
            "test",
        );
        for (ns, name) in [("a", "kept-tls"), ("a", "deleted-tls"), ("b", "kept-tls")] {
            ctx.certificates.lock().unwrap().insert(
                (ns.into(), name.into()),
                reconcile::CertRecord::at_version("1"),
            );
        }
        // No cache: nothing is known to be deleted.
        assert_eq!(ctx.forget_deleted_certificates().await, 0);
        let (store, mut writer) = reflector::store::<PartialObjectMeta<Secret>>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for (ns, name) in [("a", "kept-tls"), ("b", "kept-tls"), ("a", "other-tls")] {
            writer.apply_watcher_event(&watcher::Event::InitApply(secret_meta(ns, name)));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        *ctx.managed_secrets.lock().unwrap() = Some(store);
        assert_eq!(ctx.certificates.lock().unwrap().len(), 3);
        assert_eq!(ctx.forget_deleted_certificates().await, 1);
        assert_eq!(ctx.certificates.lock().unwrap().len(), 2);
        let records = ctx.certificates.lock().unwrap();
        assert!(records.contains_key(&("a".into(), "kept-tls".into())));
        assert!(records.contains_key(&("b".into(), "kept-tls".into())));
    }
}
