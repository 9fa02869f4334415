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

    /// Replaces `of`'s entry in its namespace's index with `with` (or removes it): a
    /// few map operations, whatever the namespace holds.
    fn update_namespace(&self, of: &McpServer, with: Option<&McpServer>) {
        let ns = of.metadata.namespace.clone().unwrap_or_default();
        let name = of.metadata.name.clone().unwrap_or_default();
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        let namespace = index.by_namespace.entry(ns.clone()).or_default();
        namespace.remove(&name);
        if let Some(server) = with {
            // The store's own `Arc` (the reflector wrote it before this event): a copy
            // would double the McpServers' memory in the webhook.
            let shared = self
                .servers
                .get(&ObjectRef::from_obj(server))
                .unwrap_or_else(|| Arc::new(server.clone()));
            namespace.insert(name, Arc::new(Indexed::new(shared)));
        }
        if namespace.by_name.is_empty() {
            index.by_namespace.remove(&ns);
        }
    }

    /// The McpServer of `namespace` whose `podSelector` matches `labels`, the first by
    /// name when several do (read under the index's lock: a few hash lookups and the
    /// candidates' selectors).
    fn select(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Option<Arc<Indexed>> {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        index.by_namespace.get(namespace)?.select(labels)
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

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.server
            .spec
            .pod_selector
            .as_ref()
            .is_some_and(|sel| crate::api::selector_matches(sel, labels))
    }
}

/// Where an McpServer sits in its namespace's index.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bucket {
    /// Under the hash of its selector's first `matchLabels` pair (in key order).
    Label(u64),
    /// A selector without `matchLabels`: `matchExpressions` only, or `{}` (every pod).
    Unkeyed,
    /// No `podSelector`: it selects no pod.
    None,
}

impl Bucket {
    fn of(server: &McpServer) -> Self {
        match &server.spec.pod_selector {
            None => Self::None,
            Some(sel) => match sel.match_labels.as_ref().and_then(|m| m.iter().next()) {
                Some((k, v)) => Self::Label(label_hash(k, v)),
                None => Self::Unkeyed,
            },
        }
    }
}

/// The hash of one label pair. Two pairs with the same hash only share a bucket: every
/// candidate's whole selector is still checked.
fn label_hash(key: &str, value: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (key, value).hash(&mut h);
    h.finish()
}

/// The McpServers of one namespace, indexed for selection. An McpServer whose selector
/// has `matchLabels` can only select a pod that carries all of them, so it is filed under
/// its first pair: a pod's candidates are the buckets of its own labels, plus the
/// McpServers whose selectors have no `matchLabels`. With 10,000 McpServers in the
/// pod's namespace an admission looks at a handful, not 10,000 (issue 22; scanning the
/// namespace's list raised the p99 tenfold with 2,000). McpServers that share their first
/// pair (a common `app.kubernetes.io/part-of`, say) share a bucket, which is scanned.
#[derive(Default)]
struct NamespaceIndex {
    /// Every McpServer of the namespace, by name.
    by_name: HashMap<String, Arc<Indexed>>,
    /// [`Bucket::Label`]s, each sorted by name.
    by_label: HashMap<u64, BTreeMap<String, Arc<Indexed>>>,
    /// [`Bucket::Unkeyed`], sorted by name.
    unkeyed: BTreeMap<String, Arc<Indexed>>,
}

impl NamespaceIndex {
    fn insert(&mut self, name: String, entry: Arc<Indexed>) {
        match Bucket::of(&entry.server) {
            Bucket::Label(h) => {
                self.by_label
                    .entry(h)
                    .or_default()
                    .insert(name.clone(), Arc::clone(&entry));
            }
            Bucket::Unkeyed => {
                self.unkeyed.insert(name.clone(), Arc::clone(&entry));
            }
            Bucket::None => {}
        }
        self.by_name.insert(name, entry);
    }

    fn remove(&mut self, name: &str) {
        let Some(old) = self.by_name.remove(name) else {
            return;
        };
        match Bucket::of(&old.server) {
            Bucket::Label(h) => {
                if let Some(bucket) = self.by_label.get_mut(&h) {
                    bucket.remove(name);
                    if bucket.is_empty() {
                        self.by_label.remove(&h);
                    }
                }
            }
            Bucket::Unkeyed => {
                self.unkeyed.remove(name);
            }
            Bucket::None => {}
        }
    }

    fn select(&self, labels: &BTreeMap<String, String>) -> Option<Arc<Indexed>> {
        fn first<'a>(
            bucket: &'a BTreeMap<String, Arc<Indexed>>,
            labels: &BTreeMap<String, String>,
        ) -> Option<(&'a str, &'a Arc<Indexed>)> {
            bucket
                .iter()
                .find(|(_, i)| i.matches(labels))
                .map(|(n, i)| (n.as_str(), i))
        }
        let mut best = first(&self.unkeyed, labels);
        for (k, v) in labels {
            let Some(found) = self
                .by_label
                .get(&label_hash(k, v))
                .and_then(|b| first(b, labels))
            else {
                continue;
            };
            if best.is_none_or(|(name, _)| found.0 < name) {
                best = Some(found);
            }
        }
        best.map(|(_, i)| Arc::clone(i))
    }
}

/// The McpServers grouped by namespace, each namespace indexed by label
/// ([`NamespaceIndex`]): an admission reads its own namespace's index, not all McpServers
/// (with 1,000 McpServers, cloning the whole store on every admission cost more than the
/// injection).
#[derive(Default)]
struct ServerIndex {
    by_namespace: HashMap<String, NamespaceIndex>,
}

impl ServerIndex {
    /// Indexes `servers` by namespace and label.
    fn build(servers: Vec<Arc<McpServer>>) -> Self {
        let mut index = Self::default();
        for server in servers {
            let ns = server.metadata.namespace.clone().unwrap_or_default();
            let name = server.metadata.name.clone().unwrap_or_default();
            index
                .by_namespace
                .entry(ns)
                .or_default()
                .insert(name, Arc::new(Indexed::new(server)));
        }
        index
    }
}

/// Drops from an McpServer in the webhook's cache what no admission reads: `managedFields`,
/// kubectl's last-applied copy of the spec, and the status but for `trustBundle` (whose
/// `sha256` stands in until the trust ConfigMap's own annotation is cached). Passed to the
/// webhook's McpServer watcher (`WatchStreamExt::modify`), as kube-rs recommends for
/// reflector caches (<https://kube.rs/controllers/optimization/>).
pub fn slim_server(server: &mut McpServer) {
    server.metadata.managed_fields = None;
    if let Some(a) = server.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    if let Some(status) = server.status.take() {
        server.status = Some(crate::api::McpServerStatus {
            trust_bundle: status.trust_bundle,
            ..Default::default()
        });
    }
}

/// Keeps of a managed Secret's or ConfigMap's metadata, in the webhook's cache, only what
/// an admission reads: name, namespace, `resourceVersion` and the annotations that carry
/// the hashes and `notAfter` the webhook copies into pod annotations
/// ([`ANNOTATION_BUNDLE_SHA256`], [`build::ANNOTATION_CERT_SHA256`],
/// [`build::ANNOTATION_CERT_NOT_AFTER`]).
pub fn slim_meta<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.labels = None;
    meta.finalizers = None;
    meta.creation_timestamp = None;
    meta.uid = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.retain(|k, _| {
            k == ANNOTATION_BUNDLE_SHA256
                || k == build::ANNOTATION_CERT_SHA256
                || k == build::ANNOTATION_CERT_NOT_AFTER
        });
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
        let s = self.caches.select(namespace, labels)?;
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
