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
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
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
    /// The McpServers by namespace, kept by [`Caches::apply_server_event`] (the watcher's
    /// side); an admission only reads it.
    index: Arc<RwLock<ServerIndex>>,
}

impl Caches {
    /// Wraps the three stores and indexes the McpServers `servers` holds now. Whoever
    /// writes to `servers` after this (the webhook's McpServer watcher) passes each event
    /// to [`Caches::apply_server_event`] after the store's write.
    pub fn new(
        servers: Store<McpServer>,
        secrets: Store<PartialObjectMeta<Secret>>,
        config_maps: Store<PartialObjectMeta<ConfigMap>>,
    ) -> Self {
        let index = ServerIndex::build(servers.state());
        Self {
            servers,
            secrets,
            config_maps,
            index: Arc::new(RwLock::new(index)),
        }
    }

    /// Follows one event of the McpServer watch in the index, after the reflector wrote
    /// it to the store (kube's `reflector` writes before it yields the event, so an
    /// `inspect` or `for_each` after the reflector is the place). An applied or deleted
    /// McpServer replaces its namespace's list (the other McpServers' env blocks are
    /// kept); the end of a (re)list rebuilds the index from the store; the events of a
    /// list in progress change nothing (the store still serves the old state). The cost
    /// is the watcher's, never an admission's.
    pub fn apply_server_event(&self, event: &watcher::Event<McpServer>) {
        match event {
            watcher::Event::Apply(s) => self.update_namespace(s, Some(s)),
            watcher::Event::Delete(s) => self.update_namespace(s, None),
            watcher::Event::InitDone => {
                let index = ServerIndex::build(self.servers.state());
                *self.index.write().unwrap_or_else(PoisonError::into_inner) = index;
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }

    /// Replaces `of`'s entry in its namespace's list with `with` (or removes it).
    fn update_namespace(&self, of: &McpServer, with: Option<&McpServer>) {
        let ns = of.metadata.namespace.clone().unwrap_or_default();
        let name = of.metadata.name.as_deref();
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<Arc<Indexed>> = index
            .by_namespace
            .get(&ns)
            .map(|l| {
                l.iter()
                    .filter(|i| i.server.metadata.name.as_deref() != name)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if let Some(server) = with {
            let fresh = Indexed::new(Arc::new(server.clone()));
            let at = list.partition_point(|i| i.server.metadata.name.as_deref() < name);
            list.insert(at, Arc::new(fresh));
        }
        if list.is_empty() {
            index.by_namespace.remove(&ns);
        } else {
            index.by_namespace.insert(ns, list.into());
        }
    }

    /// The McpServers of `namespace`, sorted by name.
    fn namespace(&self, namespace: &str) -> Arc<[Arc<Indexed>]> {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        index
            .by_namespace
            .get(namespace)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }
}

/// One McpServer in the index.
struct Indexed {
    server: Arc<McpServer>,
    /// The env block of this McpServer's settings ([`Injection::resolve`] with it), computed
    /// by the first admission that needs it; a change of the McpServer replaces the entry.
    env: OnceLock<EnvBlock>,
}

impl Indexed {
    fn new(server: Arc<McpServer>) -> Self {
        Self {
            server,
            env: OnceLock::new(),
        }
    }
}

/// The McpServers grouped by namespace: an admission reads the McpServers of its own
/// namespace, not all of them (with 1,000 McpServers, cloning the whole store on every
/// admission cost more than the injection). Each namespace's list is shared (`Arc`), so a
/// reader holds the lock only to clone one pointer.
#[derive(Default)]
struct ServerIndex {
    by_namespace: HashMap<String, Arc<[Arc<Indexed>]>>,
}

impl ServerIndex {
    /// Groups `servers` by namespace, each namespace's sorted by name.
    fn build(servers: Vec<Arc<McpServer>>) -> Self {
        let mut lists: HashMap<String, Vec<Arc<Indexed>>> = HashMap::new();
        for server in servers {
            let ns = server.metadata.namespace.clone().unwrap_or_default();
            lists
                .entry(ns)
                .or_default()
                .push(Arc::new(Indexed::new(server)));
        }
        let by_namespace = lists
            .into_iter()
            .map(|(ns, mut list)| {
                list.sort_by(|a, b| a.server.metadata.name.cmp(&b.server.metadata.name));
                (ns, list.into())
            })
            .collect();
        Self { by_namespace }
    }
}

/// A [`Mutator`] that follows the cluster through [`Caches`].
pub struct ClusterMutator {
    config: InjectConfig,
    caches: Caches,
    /// The env block of the config alone, for pods no McpServer selects.
    default_env: EnvBlock,
}

impl ClusterMutator {
    /// Builds it.
    pub fn new(config: InjectConfig, caches: Caches) -> Self {
        let default_env = EnvBlock::new(&Injection::resolve(&config, None));
        Self {
            config,
            caches,
            default_env,
        }
    }

    /// The McpServer that selects a pod with `labels` in `namespace` (the first by name
    /// when several do), with its env block.
    fn select(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<(Arc<McpServer>, EnvBlock)> {
        let servers = self.caches.namespace(namespace);
        let s = servers.iter().find(|s| {
            s.server
                .spec
                .pod_selector
                .as_ref()
                .is_some_and(|sel| crate::api::selector_matches(sel, labels))
        })?;
        // The block only reads what `Injection::resolve` takes from the config and the
        // McpServer, never the per-pod mounts or bundle hash.
        let env = s
            .env
            .get_or_init(|| EnvBlock::new(&Injection::resolve(&self.config, Some(&s.server))));
        Some((Arc::clone(&s.server), env.clone()))
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
