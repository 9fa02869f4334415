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

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;

use super::build;
use crate::api::McpServer;
use crate::inject::{
    ANNOTATION_BUNDLE_SHA256, CLIENT_TLS_MOUNT_DIR, InjectConfig, InjectError, Injection, Mutator,
    Outcome, SERVER_TLS_MOUNT_PATH, TlsMount, inject, pod_template_pointer,
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
}

/// A [`Mutator`] that follows the cluster through [`Caches`].
#[derive(Clone)]
pub struct ClusterMutator {
    config: InjectConfig,
    caches: Caches,
}

impl ClusterMutator {
    /// Builds it.
    pub fn new(config: InjectConfig, caches: Caches) -> Self {
        Self { config, caches }
    }

    /// The settings for an object in `namespace` (pure over the caches' current state).
    pub fn injection_for(&self, namespace: &str, object: &Value) -> Injection {
        let (labels, annotations) = template_labels_annotations(object);
        let mut servers: Vec<_> = self
            .caches
            .servers
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .filter(|s| {
                s.spec
                    .pod_selector
                    .as_ref()
                    .is_some_and(|sel| crate::api::selector_matches(sel, &labels))
            })
            .collect();
        servers.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let server = servers.first().map(|s| s.as_ref());
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
        inj
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
        inject(object, &self.injection_for(ns, object))
    }
}
