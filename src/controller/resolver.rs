//! The webhook's view of the cluster: a [`Mutator`] that answers from reflector caches
//! (McpServers; the metadata of the ConfigMaps and Secrets mcptrust manages), never from
//! API calls on the admission path.
//!
//! For a pod in namespace N it picks the McpServer in N whose `podSelector` matches the
//! pod's labels (the first by name when several do), its trust ConfigMap, proxy and env,
//! and, with mTLS, mounts `<name>-server-tls` at `/etc/mcptrust/tls/server`. A pod
//! annotated `mcptrust.io/mtls-client-of: github,agents/jira` gets each client Secret at
//! `/etc/mcptrust/tls/clients/<server>`. Per-certificate sha256 and notAfter come from
//! the Secrets' annotations, so no Secret data is ever cached.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;

use super::build;
use crate::api::McpServer;
use crate::inject::{
    ANNOTATION_BUNDLE_SHA256, CLIENT_TLS_MOUNT_DIR, EnvBlock, InjectConfig, InjectError, Injection,
    Mutator, Outcome, SERVER_TLS_MOUNT_PATH, TlsMount, inject_with_env, pod_template_pointer,
};

/// Pod annotation naming the McpServers a pod is a client of: `name`, `namespace/name`,
/// or `namespace/name:client` to pick one of several client identities.
pub const ANNOTATION_MTLS_CLIENT_OF: &str = "mcptrust.io/mtls-client-of";
/// Volume name of the server certificate.
pub const SERVER_TLS_VOLUME: &str = "mcptrust-server-tls";

/// The caches the resolver reads.
#[derive(Clone)]
pub struct Caches {
    /// All McpServers.
    pub servers: Store<McpServer>,
    /// Metadata of Secrets labelled `app.kubernetes.io/managed-by=mcptrust`.
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// Metadata of ConfigMaps labelled `app.kubernetes.io/managed-by=mcptrust`.
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    /// Counts the changes to `servers` ([`Caches::servers_changed`]); the resolver's
    /// per-namespace index is rebuilt when it moves.
    servers_generation: Arc<AtomicU64>,
}

impl Caches {
    /// Wraps the three stores. Whoever writes to `servers` after this (the webhook's
    /// McpServer watcher) calls [`Caches::servers_changed`] after each write.
    pub fn new(
        servers: Store<McpServer>,
        secrets: Store<PartialObjectMeta<Secret>>,
        config_maps: Store<PartialObjectMeta<ConfigMap>>,
    ) -> Self {
        Self {
            servers,
            secrets,
            config_maps,
            servers_generation: Arc::default(),
        }
    }

    /// Records that the McpServer store has changed (an object applied or deleted, a
    /// relist): the next admission rebuilds the index of McpServers by namespace from the
    /// store. Call it after the store's write (kube's `reflector` writes before it yields
    /// the event, so a `for_each` after the reflector is the place).
    pub fn servers_changed(&self) {
        self.servers_generation.fetch_add(1, Ordering::Release);
    }
}

/// The McpServers of one namespace in the index, sorted by name.
struct Indexed {
    server: Arc<McpServer>,
    /// The env block of this McpServer's settings ([`Injection::resolve`] with it), computed
    /// by the first admission that needs it; a change of the McpServer rebuilds the index.
    env: OnceLock<EnvBlock>,
}

/// The McpServer store grouped by namespace, as of one [`Caches::servers_changed`] count:
/// an admission reads the McpServers of its own namespace, not all of them (with 1,000
/// McpServers, cloning the whole store on every admission cost more than the injection).
struct ServerIndex {
    generation: u64,
    by_namespace: HashMap<String, Vec<Indexed>>,
}

impl ServerIndex {
    /// Groups `servers` by namespace, each namespace's sorted by name.
    fn build(generation: u64, servers: Vec<Arc<McpServer>>) -> Self {
        let mut by_namespace: HashMap<String, Vec<Indexed>> = HashMap::new();
        for server in servers {
            let ns = server.metadata.namespace.clone().unwrap_or_default();
            by_namespace.entry(ns).or_default().push(Indexed {
                server,
                env: OnceLock::new(),
            });
        }
        for list in by_namespace.values_mut() {
            list.sort_by(|a, b| a.server.metadata.name.cmp(&b.server.metadata.name));
        }
        Self {
            generation,
            by_namespace,
        }
    }
}

/// A [`Mutator`] that follows the cluster through [`Caches`].
pub struct ClusterMutator {
    config: InjectConfig,
    caches: Caches,
    /// The env block of the config alone, for pods no McpServer selects.
    default_env: EnvBlock,
    index: RwLock<Option<ServerIndex>>,
}

impl ClusterMutator {
    /// Builds it.
    pub fn new(config: InjectConfig, caches: Caches) -> Self {
        let default_env = EnvBlock::new(&Injection::resolve(&config, None));
        Self {
            config,
            caches,
            default_env,
            index: RwLock::new(None),
        }
    }

    /// Runs `f` on the McpServers of `namespace` (sorted by name) from an index no older
    /// than the last [`Caches::servers_changed`] before this call.
    fn with_namespace<R>(&self, namespace: &str, f: impl FnOnce(&[Indexed]) -> R) -> R {
        fn of<'i>(index: &'i ServerIndex, namespace: &str) -> &'i [Indexed] {
            index
                .by_namespace
                .get(namespace)
                .map_or(&[][..], Vec::as_slice)
        }
        // Read the count before the store: a change after this read moves it again.
        let generation = self.caches.servers_generation.load(Ordering::Acquire);
        {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(index) = index.as_ref().filter(|i| i.generation == generation) {
                return f(of(index, namespace));
            }
        }
        let servers = self.caches.servers.state();
        let mut slot = self.index.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = slot.as_ref().filter(|i| i.generation >= generation) {
            // Another admission rebuilt it meanwhile, as of this change or a later one.
            return f(of(index, namespace));
        }
        let index = ServerIndex::build(generation, servers);
        f(of(slot.insert(index), namespace))
    }

    /// The McpServer that selects a pod with `labels` in `namespace` (the first by name
    /// when several do), with its env block.
    fn select(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<(Arc<McpServer>, EnvBlock)> {
        self.with_namespace(namespace, |servers| {
            let s = servers.iter().find(|s| {
                s.server
                    .spec
                    .pod_selector
                    .as_ref()
                    .is_some_and(|sel| crate::api::selector_matches(sel, labels))
            })?;
            // The block only reads what `Injection::resolve` takes from the config and
            // the McpServer, never the per-pod mounts or bundle hash.
            let env = s
                .env
                .get_or_init(|| EnvBlock::new(&Injection::resolve(&self.config, Some(&s.server))));
            Some((Arc::clone(&s.server), env.clone()))
        })
    }

    /// The settings for an object in `namespace` (pure over the caches' current state).
    pub fn injection_for(&self, namespace: &str, object: &Value) -> Injection {
        self.resolve(namespace, object).0
    }

    /// [`ClusterMutator::injection_for`], with the env block of its settings.
    fn resolve(&self, namespace: &str, object: &Value) -> (Injection, EnvBlock) {
        let (labels, annotations) = template_labels_annotations(object);
        let selected = self.select(namespace, &labels);
        let server = selected.as_ref().map(|(s, _)| s.as_ref());
        let env = selected
            .as_ref()
            .map_or_else(|| self.default_env.clone(), |(_, env)| env.clone());
        let mut inj = Injection::resolve(&self.config, server);
        // The hash of the bundle the pod mounts, from the trust ConfigMap's own metadata:
        // the controller writes the ConfigMap before anything else, so this is never older
        // than the McpServer's status (a rollout's first pod could otherwise be admitted
        // with the previous hash).
        let key = ObjectRef::new(&inj.config_map).within(namespace);
        if let Some(sha) = self.caches.config_maps.get(&key).and_then(|cm| {
            cm.metadata
                .annotations
                .as_ref()?
                .get(ANNOTATION_BUNDLE_SHA256)
                .cloned()
        }) {
            inj.bundle_sha256 = Some(sha);
        }
        if let Some(s) = server.filter(|s| s.spec.mtls.is_some()) {
            let name = s.metadata.name.clone().unwrap_or_default();
            let secret = crate::api::server_tls_secret_name(&name);
            inj.tls_mounts.push(self.tls_mount(
                namespace,
                &secret,
                SERVER_TLS_VOLUME,
                SERVER_TLS_MOUNT_PATH,
            ));
        }
        if let Some(list) = annotations.get(ANNOTATION_MTLS_CLIENT_OF) {
            for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                match self.client_mount(namespace, entry) {
                    Some(m) => inj.tls_mounts.push(m),
                    None => tracing::warn!(
                        namespace,
                        entry,
                        "{ANNOTATION_MTLS_CLIENT_OF}: no McpServer lists a client in this namespace for {entry:?}"
                    ),
                }
            }
        }
        (inj, env)
    }

    fn tls_mount(&self, namespace: &str, secret: &str, volume: &str, path: &str) -> TlsMount {
        let meta = self
            .caches
            .secrets
            .get(&ObjectRef::new(secret).within(namespace));
        let ann = meta
            .as_ref()
            .and_then(|m| m.metadata.annotations.clone())
            .unwrap_or_default();
        TlsMount {
            volume_name: volume.to_string(),
            secret_name: secret.to_string(),
            mount_path: path.to_string(),
            sha256: ann.get(build::ANNOTATION_CERT_SHA256).cloned(),
            not_after: ann.get(build::ANNOTATION_CERT_NOT_AFTER).cloned(),
        }
    }

    /// Resolves one `mtls-client-of` entry for a pod in `pod_ns`.
    fn client_mount(&self, pod_ns: &str, entry: &str) -> Option<TlsMount> {
        let (server_part, client_name) = match entry.split_once(':') {
            Some((s, c)) => (s, Some(c)),
            None => (entry, None),
        };
        let (server_ns, server_name) = server_part.split_once('/').unwrap_or((pod_ns, server_part));
        let server = self
            .caches
            .servers
            .get(&ObjectRef::new(server_name).within(server_ns))?;
        let mtls = server.spec.mtls.as_ref()?;
        let client = mtls.clients.iter().find(|c| {
            c.namespace.as_deref().unwrap_or(server_ns) == pod_ns
                && client_name.is_none_or(|n| n == c.name)
        })?;
        let secret = build::client_tls_secret_name(server_name, server_ns, &client.name);
        let volume: String = format!("mtls-client-{server_name}")
            .chars()
            .take(63)
            .collect();
        Some(self.tls_mount(
            pod_ns,
            &secret,
            &volume,
            &format!("{CLIENT_TLS_MOUNT_DIR}/{server_name}"),
        ))
    }
}

fn template_labels_annotations(
    object: &Value,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("Pod");
    let meta = pod_template_pointer(kind).and_then(|base| {
        let mut v = object;
        for t in base {
            v = v.get(*t)?;
        }
        v.get("metadata")
    });
    let read = |key: &str| -> BTreeMap<String, String> {
        meta.and_then(|m| m.get(key))
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default()
    };
    (read("labels"), read("annotations"))
}

impl Mutator for ClusterMutator {
    fn mutate(&self, namespace: Option<&str>, object: &Value) -> Result<Outcome, InjectError> {
        let ns = namespace
            .or_else(|| {
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
            })
            .unwrap_or("default");
        let (inj, env) = self.resolve(ns, object);
        inject_with_env(object, &inj, &env)
    }
}
