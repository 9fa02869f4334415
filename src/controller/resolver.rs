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
    /// The env block of this McpServer's settings, computed by the first admission that
    /// needs it.
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
    /// Groups `servers` by namespace, keeping the env blocks of `previous` for the objects
    /// that have not changed (the same `Arc` in the store).
    fn build(
        generation: u64,
        servers: Vec<Arc<McpServer>>,
        previous: Option<&ServerIndex>,
    ) -> Self {
        let mut by_namespace: HashMap<String, Vec<Indexed>> = HashMap::new();
        for server in servers {
            let ns = server.metadata.namespace.clone().unwrap_or_default();
            by_namespace.entry(ns).or_default().push(Indexed {
                server,
                env: OnceLock::new(),
            });
        }
        for (ns, list) in &mut by_namespace {
            list.sort_by(|a, b| a.server.metadata.name.cmp(&b.server.metadata.name));
            let Some(old) = previous.and_then(|p| p.by_namespace.get(ns)) else {
                continue;
            };
            for entry in list.iter_mut() {
                let name = &entry.server.metadata.name;
                if let Ok(i) = old.binary_search_by(|o| o.server.metadata.name.cmp(name))
                    && Arc::ptr_eq(&old[i].server, &entry.server)
                    && let Some(env) = old[i].env.get()
                {
                    entry.env = OnceLock::from(env.clone());
                }
            }
        }
        Self {
            generation,
            by_namespace,
        }
    }
}

/// The McpServer that selects a pod, with its env block when one was remembered.
type Selected = (Arc<McpServer>, Option<EnvBlock>);

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
        let index = ServerIndex::build(generation, servers, slot.as_ref());
        f(of(slot.insert(index), namespace))
    }

    /// The McpServer that selects a pod with `labels` in `namespace` (the first by name
    /// when several do), with its env block.
    fn select(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Option<Selected> {
        self.with_namespace(namespace, |servers| {
            servers
                .iter()
                .find(|s| {
                    s.server
                        .spec
                        .pod_selector
                        .as_ref()
                        .is_some_and(|sel| crate::api::selector_matches(sel, labels))
                })
                .map(|s| (Arc::clone(&s.server), s.env.get().cloned()))
        })
    }

    /// Remembers the env block of `server` while the index still holds this object.
    fn remember_env(&self, server: &Arc<McpServer>, env: &EnvBlock) {
        let namespace = server.metadata.namespace.as_deref().unwrap_or_default();
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        let found = index.as_ref().and_then(|i| {
            let list = i.by_namespace.get(namespace)?;
            let at = list
                .binary_search_by(|s| s.server.metadata.name.cmp(&server.metadata.name))
                .ok()?;
            list.get(at).filter(|s| Arc::ptr_eq(&s.server, server))
        });
        if let Some(entry) = found {
            // Set once: a concurrent admission may have set the same block first.
            let _ = entry.env.set(env.clone());
        }
    }

    /// The settings for an object in `namespace` (pure over the caches' current state).
    pub fn injection_for(&self, namespace: &str, object: &Value) -> Injection {
        self.resolve(namespace, object).0
    }

    /// [`ClusterMutator::injection_for`], with the selected McpServer and its env block
    /// when one was remembered.
    fn resolve(&self, namespace: &str, object: &Value) -> (Injection, Option<Selected>) {
        let (labels, annotations) = template_labels_annotations(object);
        let selected = self.select(namespace, &labels);
        let server = selected.as_ref().map(|(s, _)| s.as_ref());
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
        (inj, selected)
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
        let (inj, selected) = self.resolve(ns, object);
        let env = match selected {
            None => self.default_env.clone(),
            Some((_, Some(env))) => env,
            Some((server, None)) => {
                let env = EnvBlock::new(&inj);
                self.remember_env(&server, &env);
                env
            }
        };
        inject_with_env(object, &inj, &env)
    }
}
