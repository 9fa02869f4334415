//! Which McpServers use which trust ConfigMap, and which name which trust source: an
//! index kept by the controller's McpServer watch, so that a ConfigMap or Secret event
//! finds its McpServers without scanning them all, and the sweep of shared trust
//! ConfigMaps knows which are still in use.
//!
//! An McpServer uses the trust ConfigMap its spec and status derive
//! ([`crate::api::trust_config_map_name`]), the one its status names, and the
//! `status.trustBundle.previousConfigMaps` its pods still mount. The index follows the
//! watch's events (a relist replaces it whole at its end, as kube's reflector store does).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::api::McpServer;

/// Kind of a trust source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// `spec.trust.sources[].configMap`.
    ConfigMap,
    /// `spec.trust.sources[].secret`.
    Secret,
}

/// What one McpServer contributes to the index (namespace-local names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Uses {
    config_maps: BTreeSet<String>,
    sources: BTreeSet<(SourceKind, String)>,
}

impl Uses {
    fn of(server: &McpServer) -> Self {
        let mut config_maps = BTreeSet::from([crate::api::trust_config_map_name(server)]);
        if let Some(tb) = server.status.as_ref().and_then(|s| s.trust_bundle.as_ref()) {
            config_maps.insert(tb.config_map_name.clone());
            config_maps.extend(tb.previous_config_maps.iter().cloned());
        }
        let sources = server
            .spec
            .trust
            .iter()
            .flat_map(|t| &t.sources)
            .filter_map(|s| match (&s.config_map, &s.secret) {
                (Some(r), _) => Some((SourceKind::ConfigMap, r.name.clone())),
                (None, Some(r)) => Some((SourceKind::Secret, r.name.clone())),
                (None, None) => None,
            })
            .collect();
        Self {
            config_maps,
            sources,
        }
    }
}

/// `(namespace, name)`.
type Key = (String, String);

#[derive(Default)]
struct Inner {
    /// Each McpServer's uses.
    servers: HashMap<Key, Uses>,
    /// `(namespace, ConfigMap)` → McpServer names.
    config_maps: HashMap<Key, BTreeSet<String>>,
    /// `(namespace, kind, source name)` → McpServer names.
    sources: HashMap<(String, SourceKind, String), BTreeSet<String>>,
    /// A relist in progress: the McpServers seen so far.
    relist: Option<Vec<(Key, Uses)>>,
    /// A first list has completed.
    listed: bool,
}

impl Inner {
    fn insert(&mut self, key: Key, uses: Uses) {
        if self.servers.get(&key) == Some(&uses) {
            return;
        }
        self.remove(&key);
        let (ns, name) = &key;
        for cm in &uses.config_maps {
            self.config_maps
                .entry((ns.clone(), cm.clone()))
                .or_default()
                .insert(name.clone());
        }
        for (kind, src) in &uses.sources {
            self.sources
                .entry((ns.clone(), *kind, src.clone()))
                .or_default()
                .insert(name.clone());
        }
        self.servers.insert(key, uses);
    }

    fn remove(&mut self, key: &Key) {
        let Some(old) = self.servers.remove(key) else {
            return;
        };
        let (ns, name) = key;
        for cm in old.config_maps {
            let k = (ns.clone(), cm);
            if let Some(set) = self.config_maps.get_mut(&k) {
                set.remove(name);
                if set.is_empty() {
                    self.config_maps.remove(&k);
                }
            }
        }
        for (kind, src) in old.sources {
            let k = (ns.clone(), kind, src);
            if let Some(set) = self.sources.get_mut(&k) {
                set.remove(name);
                if set.is_empty() {
                    self.sources.remove(&k);
                }
            }
        }
    }
}

/// The index (cheap to clone: one shared state).
#[derive(Clone, Default)]
pub struct TrustIndex {
    inner: Arc<RwLock<Inner>>,
}

fn key_of(server: &McpServer) -> Key {
    (server.namespace().unwrap_or_default(), server.name_any())
}

impl TrustIndex {
    /// Follows one event of the McpServer watch. `Init` starts a relist whose objects
    /// replace the index at `InitDone`; `Apply` and `Delete` update one McpServer.
    pub fn apply_watcher_event(&self, event: &watcher::Event<McpServer>) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Apply(s) => inner.insert(key_of(s), Uses::of(s)),
            watcher::Event::Delete(s) => inner.remove(&key_of(s)),
            watcher::Event::Init => inner.relist = Some(Vec::new()),
            watcher::Event::InitApply(s) => {
                let entry = (key_of(s), Uses::of(s));
                inner.relist.get_or_insert_with(Vec::new).push(entry);
            }
            watcher::Event::InitDone => {
                let listed = inner.relist.take().unwrap_or_default();
                let mut fresh = Inner::default();
                for (k, u) in listed {
                    fresh.insert(k, u);
                }
                fresh.listed = true;
                *inner = fresh;
            }
        }
    }

    /// Whether a first list has completed (before that, nothing counts as unused).
    pub fn is_listed(&self) -> bool {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .listed
    }

    /// The McpServers of `ns` that use trust ConfigMap `name`.
    pub fn users_of_config_map(&self, ns: &str, name: &str) -> Vec<ObjectRef<McpServer>> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner
            .config_maps
            .get(&(ns.to_owned(), name.to_owned()))
            .into_iter()
            .flatten()
            .map(|n| ObjectRef::new(n).within(ns))
            .collect()
    }

    /// Whether an McpServer of `ns` uses trust ConfigMap `name`.
    pub fn is_used(&self, ns: &str, name: &str) -> bool {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner
            .config_maps
            .contains_key(&(ns.to_owned(), name.to_owned()))
    }

    /// The McpServers of `ns` whose trust sources name the `kind` object `name`.
    pub fn users_of_source(
        &self,
        ns: &str,
        kind: SourceKind,
        name: &str,
    ) -> Vec<ObjectRef<McpServer>> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner
            .sources
            .get(&(ns.to_owned(), kind, name.to_owned()))
            .into_iter()
            .flatten()
            .map(|n| ObjectRef::new(n).within(ns))
            .collect()
    }

    /// How many McpServers are indexed.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .servers
            .len()
    }

    /// Whether no McpServer is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server(
        ns: &str,
        name: &str,
        trust: serde_json::Value,
        status: serde_json::Value,
    ) -> McpServer {
        serde_json::from_value(json!({
            "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"transport": "stdio", "trust": trust},
            "status": status,
        }))
        .expect("McpServer")
    }

    fn names(refs: Vec<ObjectRef<McpServer>>) -> Vec<String> {
        let mut v: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        v.sort();
        v
    }

    #[test]
    fn follows_applies_deletes_and_relists() {
        let index = TrustIndex::default();
        let corp = json!({"sources": [{"configMap": {"name": "corp"}}]});
        let a = server("ns", "a", corp.clone(), json!({}));
        let b = server("ns", "b", corp.clone(), json!({}));
        let other_ns = server("other", "a", corp.clone(), json!({}));
        let cm = crate::api::trust_config_map_name(&a);
        assert_eq!(cm, crate::api::trust_config_map_name(&b));
        index.apply_watcher_event(&watcher::Event::Init);
        for s in [&a, &b, &other_ns] {
            index.apply_watcher_event(&watcher::Event::InitApply(s.clone()));
        }
        assert!(!index.is_listed());
        assert!(
            !index.is_used("ns", &cm),
            "nothing counts before the list ends"
        );
        index.apply_watcher_event(&watcher::Event::InitDone);
        assert!(index.is_listed());
        assert_eq!(names(index.users_of_config_map("ns", &cm)), ["a", "b"]);
        assert_eq!(
            names(index.users_of_source("ns", SourceKind::ConfigMap, "corp")),
            ["a", "b"]
        );
        assert!(
            index
                .users_of_source("ns", SourceKind::Secret, "corp")
                .is_empty()
        );
        assert_eq!(names(index.users_of_config_map("other", &cm)), ["a"]);

        // b's trust changes; its status still names the old ConfigMap and a previous one.
        let b2 = server(
            "ns",
            "b",
            json!({"includeSystemRoots": false, "sources": [{"secret": {"name": "vault"}}]}),
            json!({"trustBundle": {"configMapName": cm, "sha256": "ab", "certificates": 1,
                                   "previousConfigMaps": ["mcptrust-b-trust"]}}),
        );
        let cm2 = crate::api::trust_config_map_name(&b2);
        assert_ne!(cm, cm2);
        index.apply_watcher_event(&watcher::Event::Apply(b2.clone()));
        assert_eq!(names(index.users_of_config_map("ns", &cm)), ["a", "b"]);
        assert_eq!(names(index.users_of_config_map("ns", &cm2)), ["b"]);
        assert!(index.is_used("ns", "mcptrust-b-trust"));
        assert_eq!(
            names(index.users_of_source("ns", SourceKind::ConfigMap, "corp")),
            ["a"]
        );
        assert_eq!(
            names(index.users_of_source("ns", SourceKind::Secret, "vault")),
            ["b"]
        );

        // Its status moves on: the old ConfigMaps lose it.
        let b3 = server(
            "ns",
            "b",
            json!({"includeSystemRoots": false, "sources": [{"secret": {"name": "vault"}}]}),
            json!({"trustBundle": {"configMapName": cm2, "sha256": "cd", "certificates": 1}}),
        );
        index.apply_watcher_event(&watcher::Event::Apply(b3));
        assert_eq!(names(index.users_of_config_map("ns", &cm)), ["a"]);
        assert!(!index.is_used("ns", "mcptrust-b-trust"));

        index.apply_watcher_event(&watcher::Event::Delete(a.clone()));
        assert!(!index.is_used("ns", &cm));
        assert!(
            index
                .users_of_source("ns", SourceKind::ConfigMap, "corp")
                .is_empty()
        );
        assert_eq!(index.len(), 2);

        // A relist replaces everything at its end.
        index.apply_watcher_event(&watcher::Event::Init);
        index.apply_watcher_event(&watcher::Event::InitApply(a));
        assert!(
            index.is_used("ns", &cm2),
            "the old state serves until InitDone"
        );
        index.apply_watcher_event(&watcher::Event::InitDone);
        assert!(!index.is_used("ns", &cm2));
        assert_eq!(names(index.users_of_config_map("ns", &cm)), ["a"]);
        assert_eq!(index.len(), 1);
    }
}
