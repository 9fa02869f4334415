//! Publishes Kubernetes Events (`events.k8s.io/v1`) about McpServers, as kube-runtime's
//! `Recorder` does, with a compact and bounded cache of the series.
//!
//! What people see (`kubectl describe`, `kubectl get events`) is the same as with
//! kube-runtime 5's `Recorder`: the first occurrence of an event creates an Event named
//! `<regarding name>.<unix nanoseconds in hex>` in the regarding object's namespace, with
//! `eventTime`, `regarding`, `related`, `note`, `reason`, `action`, `type`,
//! `reportingController` and `reportingInstance`; a repeat of the same event within
//! [`CACHE_TTL`] of its last occurrence becomes a `series` update `{count,
//! lastObservedTime}` of that Event (`kubectl describe` shows `(x2 over 10s)`) instead of a
//! new Event. The note is not part of the series key, so a repeat with another note counts
//! in the series and the Event keeps its first note (as with kube-runtime).
//!
//! What differs is the cache. kube-runtime 5 keeps every Event it published whole (the
//! `events.k8s.io/v1` object and a key holding two cloned `ObjectReference`s) for 6 minutes
//! with no bound on their number: about 6.7 KiB per McpServer in a burst of mTLS
//! McpServers (two `Issued` Events each), a quarter of the operator's heap at 2,000
//! McpServers. Here an entry is a 64-bit hash of the series key and what a series update
//! needs (the Event's namespace and name, the count, the last time): [`MAX_CACHED_SERIES`]
//! entries at most, the least recently used evicted first (client-go's bound), each
//! forgotten [`CACHE_TTL`] after its last occurrence. docs/performance.md ("Event recorder
//! cache") has the heap per entry before and after.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use lru::LruCache;

pub use kube::runtime::events::{Event, EventType, Reporter};

/// How long a series is remembered after its last occurrence: a repeat later than this
/// creates a new Event (6 minutes, kube-runtime's `CACHE_TTL`).
pub const CACHE_TTL: SignedDuration = SignedDuration::from_mins(6);

/// The most series remembered at once; beyond it the least recently used is forgotten
/// (its next occurrence creates a new Event). 4,096 is client-go's bound on its own event
/// caches (`maxLruCacheEntries = 4096` in `k8s.io/client-go/tools/record/events_cache.go`).
pub const MAX_CACHED_SERIES: usize = 4096;

/// Field manager of the Events mcptrust creates and of their series updates.
pub const FIELD_MANAGER_EVENTS: &str = "mcptrust-events";

/// Publishing an Event failed.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Creating the Event (the first occurrence of a series) was refused or not answered.
    #[error("creating Event {namespace}/{name}: {source}")]
    Create {
        /// The Event's namespace.
        namespace: String,
        /// The Event's name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
    /// Patching the `series` of an existing Event was refused (other than with 404, which
    /// creates a new Event) or not answered.
    #[error("updating the series of Event {namespace}/{name}: {source}")]
    Series {
        /// The Event's namespace.
        namespace: String,
        /// The Event's name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

impl EventError {
    /// A stable CamelCase reason (logs, metric labels).
    pub fn reason(&self) -> &'static str {
        match self {
            EventError::Create { .. } => "EventCreateFailed",
            EventError::Series { .. } => "EventSeriesUpdateFailed",
        }
    }

    /// The API error underneath (to tell a transient failure from a refusal).
    pub fn kube_error(&self) -> &kube::Error {
        match self {
            EventError::Create { source, .. } | EventError::Series { source, .. } => source,
        }
    }
}

/// The series key of `ev` about `regarding`: a 64-bit hash (std's `DefaultHasher`, fixed
/// keys) of the type, action and reason, the regarding object's kind, namespace, name and
/// uid, and the related object's kind, namespace and name. Two different series whose
/// hashes collide (about one chance in 2^64 per pair) are counted as one series: the
/// second updates the first one's Event.
pub fn series_key(ev: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = DefaultHasher::new();
    ev.type_.hash(&mut h);
    ev.action.hash(&mut h);
    ev.reason.hash(&mut h);
    regarding.kind.hash(&mut h);
    regarding.namespace.hash(&mut h);
    regarding.name.hash(&mut h);
    regarding.uid.hash(&mut h);
    let related = ev.secondary.as_ref();
    related.map(|r| &r.kind).hash(&mut h);
    related.map(|r| &r.namespace).hash(&mut h);
    related.map(|r| &r.name).hash(&mut h);
    h.finish()
}

/// What a series update needs of the Event that started a series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Series {
    /// The Event's namespace.
    pub namespace: Box<str>,
    /// The Event's name.
    pub name: Box<str>,
    /// How many times the event occurred (1 for a new Event).
    pub count: i32,
    /// When it last occurred.
    pub last_observed: Timestamp,
}

/// The series published recently, by [`series_key`]: at most `capacity` (least recently
/// used evicted), each forgotten `ttl` after its last occurrence.
pub struct SeriesCache {
    entries: LruCache<u64, Series>,
    ttl: SignedDuration,
}

impl SeriesCache {
    /// An empty cache of at most `capacity` series, each kept `ttl` after its last
    /// occurrence.
    pub fn new(capacity: NonZeroUsize, ttl: SignedDuration) -> Self {
        Self {
            entries: LruCache::new(capacity),
            ttl,
        }
    }

    /// How many series are held (expired ones included until the next [`Self::live`]).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no series is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The series of `key` unless it last occurred `ttl` or longer before `now`. Drops
    /// the expired series first: the least recently used end holds the oldest, so this
    /// stops at the first one still live.
    pub fn live(&mut self, key: u64, now: Timestamp) -> Option<Series> {
        while let Some((_, oldest)) = self.entries.peek_lru() {
            if !self.expired(oldest, now) {
                break;
            }
            self.entries.pop_lru();
        }
        match self.entries.peek(&key) {
            Some(s) if self.expired(s, now) => {
                self.entries.pop(&key);
                None
            }
            other => other.cloned(),
        }
    }

    /// Records an occurrence of the series `key` (a new one, or one more of a known one),
    /// as the most recently used; returns the series evicted to make room, if any.
    pub fn record(&mut self, key: u64, series: Series) -> Option<(u64, Series)> {
        self.entries.push(key, series).filter(|(k, _)| *k != key)
    }

    /// Whether `key` is held (without touching its recency).
    pub fn contains(&self, key: u64) -> bool {
        self.entries.contains(&key)
    }

    fn expired(&self, series: &Series, now: Timestamp) -> bool {
        series.last_observed + self.ttl <= now
    }
}

/// Publishes Events about objects (mcptrust's McpServers), all reported by one
/// [`Reporter`]; a drop-in for kube-runtime's `Recorder` with a bounded cache (see the
/// module's documentation).
///
/// RBAC: `create` and `patch` on `events.k8s.io` `events` in the namespaces of the
/// regarding objects.
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    cache: Mutex<SeriesCache>,
}

impl Recorder {
    /// A recorder with an empty cache of [`MAX_CACHED_SERIES`] series and [`CACHE_TTL`].
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self::with_cache(
            client,
            reporter,
            SeriesCache::new(
                NonZeroUsize::new(MAX_CACHED_SERIES).unwrap_or(NonZeroUsize::MIN),
                CACHE_TTL,
            ),
        )
    }

    /// A recorder with the given cache (tests: a small capacity or a short TTL).
    pub fn with_cache(client: Client, reporter: Reporter, cache: SeriesCache) -> Self {
        Self {
            client,
            reporter,
            cache: Mutex::new(cache),
        }
    }

    /// How many series the cache holds now (at most [`MAX_CACHED_SERIES`]).
    pub fn cached_series(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SeriesCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `ev` about `regarding`: a new Event, or, when the same series (see
    /// [`series_key`]) occurred less than the TTL ago, a merge patch of that Event's
    /// `series` (`{count, lastObservedTime}`); when that Event is gone (404), a new Event
    /// that starts the series again. The cache is only updated once the API server
    /// accepted the write.
    ///
    /// # Errors
    /// [`EventError::Create`] or [`EventError::Series`] with the API error.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), EventError> {
        let now = Timestamp::now();
        let key = series_key(ev, regarding);
        let known = self.lock().live(key, now);
        if let Some(series) = known {
            let count = series.count.saturating_add(1);
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &series.namespace);
            let patch = serde_json::json!({
                "series": EventSeries { count, last_observed_time: MicroTime(now) }
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER_EVENTS.into()),
                ..PatchParams::default()
            };
            match api
                .patch(&series.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.lock().record(
                        key,
                        Series {
                            count,
                            last_observed: now,
                            ..series
                        },
                    );
                    return Ok(());
                }
                // Deleted (by hand, or by the API server's event TTL): start again.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(EventError::Series {
                        namespace: series.namespace.into(),
                        name: series.name.into(),
                        source,
                    });
                }
            }
        }
        let event = generate_event(&self.reporter, ev, regarding, now);
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let name = event.metadata.name.clone().unwrap_or_default();
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER_EVENTS.into()),
            ..PostParams::default()
        };
        match api.create(&params, &event).await {
            Ok(_) => {
                self.lock().record(
                    key,
                    Series {
                        namespace: namespace.into(),
                        name: name.into(),
                        count: 1,
                        last_observed: now,
                    },
                );
                Ok(())
            }
            Err(source) => Err(EventError::Create {
                namespace,
                name,
                source,
            }),
        }
    }
}

/// The Event kube-runtime 5's `Recorder::generate_event` builds, field for field, except
/// that a cluster-scoped regarding object's Event names the `default` namespace
/// explicitly (where kube-runtime posts it too).
fn generate_event(
    reporter: &Reporter,
    ev: &Event,
    regarding: &ObjectReference,
    now: Timestamp,
) -> K8sEvent {
    let controller = &reporter.controller;
    K8sEvent {
        action: Some(ev.action.clone()),
        reason: Some(ev.reason.clone()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        note: ev.note.clone(),
        metadata: ObjectMeta {
            namespace: Some(
                regarding
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            name: Some(format!(
                "{}.{:x}",
                regarding.name.as_ref().unwrap_or(controller),
                now.as_nanosecond()
            )),
            ..ObjectMeta::default()
        },
        reporting_controller: Some(controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| controller.clone()),
        ),
        type_: Some(
            match ev.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        related: ev.secondary.clone(),
        ..K8sEvent::default()
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn server(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("mcptrust.io/v1alpha1".into()),
            kind: Some("McpServer".into()),
            name: Some(name.into()),
            namespace: Some("agents".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectReference::default()
        }
    }

    fn secret(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            name: Some(name.into()),
            namespace: Some("agents".into()),
            ..ObjectReference::default()
        }
    }

    fn issued(related: Option<ObjectReference>) -> Event {
        Event {
            type_: EventType::Normal,
            reason: "Issued".into(),
            note: Some("Issued Secret agents/x-tls".into()),
            action: "Reconcile".into(),
            secondary: related,
        }
    }

    fn series(name: &str, at: Timestamp) -> Series {
        Series {
            namespace: "agents".into(),
            name: name.into(),
            count: 1,
            last_observed: at,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// Every part of the key tells series apart; the note, the regarding object's
    /// resourceVersion and apiVersion, and the related object's uid do not.
    #[test]
    fn key_tells_series_apart() {
        let base = series_key(&issued(Some(secret("a-tls"))), &server("a"));
        let mut differing = vec![
            series_key(&issued(Some(secret("b-tls"))), &server("a")),
            series_key(&issued(None), &server("a")),
            series_key(&issued(Some(secret("a-tls"))), &server("b")),
        ];
        let mut other_type = issued(Some(secret("a-tls")));
        other_type.type_ = EventType::Warning;
        differing.push(series_key(&other_type, &server("a")));
        let mut other_reason = issued(Some(secret("a-tls")));
        other_reason.reason = "Renewed".into();
        differing.push(series_key(&other_reason, &server("a")));
        let mut other_action = issued(Some(secret("a-tls")));
        other_action.action = "Finalize".into();
        differing.push(series_key(&other_action, &server("a")));
        let mut other_ns = server("a");
        other_ns.namespace = Some("tools".into());
        differing.push(series_key(&issued(Some(secret("a-tls"))), &other_ns));
        let mut other_uid = server("a");
        other_uid.uid = Some("recreated".into());
        differing.push(series_key(&issued(Some(secret("a-tls"))), &other_uid));
        let mut other_kind = secret("a-tls");
        other_kind.kind = Some("ConfigMap".into());
        differing.push(series_key(&issued(Some(other_kind)), &server("a")));
        let mut related_ns = secret("a-tls");
        related_ns.namespace = Some("tools".into());
        differing.push(series_key(&issued(Some(related_ns)), &server("a")));
        // Strings are hashed with a terminator: ("ab", "c") is not ("a", "bc").
        let mut shifted = issued(Some(secret("a-tls")));
        shifted.action = "Reconcil".into();
        shifted.reason = "eIssued".into();
        differing.push(series_key(&shifted, &server("a")));
        let distinct: std::collections::BTreeSet<u64> = differing.iter().copied().collect();
        assert_eq!(distinct.len(), differing.len(), "{differing:?}");
        assert!(!distinct.contains(&base));

        let mut same = issued(Some(secret("a-tls")));
        same.note = Some("another note".into());
        let mut regarding = server("a");
        regarding.resource_version = Some("42".into());
        regarding.api_version = Some("mcptrust.io/v1".into());
        let mut related = secret("a-tls");
        related.uid = Some("u".into());
        same.secondary = Some(related);
        assert_eq!(series_key(&same, &regarding), base);
    }

    /// 4,097 distinct series leave 4,096: the least recently used one is evicted, and a
    /// series used again is not.
    #[test]
    fn bounded_least_recently_used_first() {
        let mut cache = SeriesCache::new(NonZeroUsize::new(MAX_CACHED_SERIES).unwrap(), CACHE_TTL);
        for k in 0..MAX_CACHED_SERIES as u64 {
            assert_eq!(cache.record(k, series(&format!("e{k}"), at(0))), None);
        }
        assert_eq!(cache.len(), MAX_CACHED_SERIES);
        // Series 0 occurs again: series 1 is now the least recently used.
        let again = cache.live(0, at(1)).unwrap();
        assert_eq!(&*again.name, "e0");
        cache.record(
            0,
            Series {
                count: 2,
                last_observed: at(1),
                ..again
            },
        );
        let evicted = cache.record(4096, series("e4096", at(2)));
        assert_eq!(evicted.map(|(k, s)| (k, s.name)), Some((1, "e1".into())));
        assert_eq!(cache.len(), MAX_CACHED_SERIES);
        assert!(!cache.contains(1));
        assert_eq!(cache.live(1, at(3)), None);
        assert_eq!(cache.live(0, at(3)).unwrap().count, 2);
        assert!(cache.contains(2) && cache.contains(4096));
        // Recording a known series again replaces it, evicting nothing.
        assert_eq!(cache.record(2, series("e2", at(4))), None);
        assert_eq!(cache.len(), MAX_CACHED_SERIES);
    }

    /// A series is live until the TTL after its last occurrence, then forgotten; each
    /// occurrence extends it; a lookup drops every expired series, oldest first.
    #[test]
    fn series_expire_after_the_ttl_since_their_last_occurrence() {
        let ttl = SignedDuration::from_mins(6);
        let mut cache = SeriesCache::new(NonZeroUsize::new(8).unwrap(), ttl);
        cache.record(1, series("one", at(0)));
        cache.record(2, series("two", at(100)));
        cache.record(3, series("three", at(200)));
        assert!(cache.live(1, at(359)).is_some());
        // Series 1 occurs again at 300 s: live until 660 s.
        cache.record(
            1,
            Series {
                count: 2,
                last_observed: at(300),
                ..series("one", at(0))
            },
        );
        // At 460 s series 2 (last at 100 s) has expired and is dropped by any lookup.
        assert_eq!(cache.live(3, at(460)).map(|s| s.name), Some("three".into()));
        assert!(!cache.contains(2));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.live(1, at(659)).map(|s| s.count), Some(2));
        // Exactly the TTL after the last occurrence: a new Event (kube-runtime's `>`).
        assert_eq!(cache.live(1, at(660)), None);
        assert!(!cache.contains(1));
        assert_eq!(cache.live(3, at(560)), None);
        assert!(cache.is_empty());
    }

    /// The Event has kube-runtime's fields; the name is `<regarding>.<hex nanoseconds>`.
    #[test]
    fn generated_event_has_kube_runtime_fields() {
        let reporter = Reporter {
            controller: "mcptrust".into(),
            instance: Some("mcptrust-0".into()),
        };
        let now = Timestamp::from_nanosecond(1_800_000_000_123_456_789).unwrap();
        let ev = issued(Some(secret("a-tls")));
        let e = generate_event(&reporter, &ev, &server("a"), now);
        assert_eq!(e.metadata.name.as_deref(), Some("a.18fae2769b0fcd15"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("agents"));
        assert_eq!(e.event_time, Some(MicroTime(now)));
        assert_eq!(e.regarding, Some(server("a")));
        assert_eq!(e.related, Some(secret("a-tls")));
        assert_eq!(e.note.as_deref(), Some("Issued Secret agents/x-tls"));
        assert_eq!(e.reason.as_deref(), Some("Issued"));
        assert_eq!(e.action.as_deref(), Some("Reconcile"));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.reporting_controller.as_deref(), Some("mcptrust"));
        assert_eq!(e.reporting_instance.as_deref(), Some("mcptrust-0"));
        assert_eq!(e.series, None);
        let mut cluster_scoped = server("n");
        cluster_scoped.namespace = None;
        let e = generate_event(&reporter, &ev, &cluster_scoped, now);
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
    }
}
