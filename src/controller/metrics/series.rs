//! The per-McpServer series, stored compactly and encoded at scrape time: a
//! prometheus-client [`Collector`] holding, for each McpServer, only its values (condition
//! types, probe reasons and roles as `&'static str` where the operator writes them,
//! namespaces shared), where one `Family` per series kind held a label set of several
//! `String`s for each series (about 10 KiB and 160 allocations per McpServer:
//! `benches/metric_series.rs` and docs/performance.md).
//!
//! [`ServerSeries`] encodes the same families, help texts, label names and values as those
//! `Family`s did; a family without a sample is left out, as the registry leaves out an
//! empty `Family`. The samples come in a stable order: McpServers by namespace, then name;
//! within one, its certificates and conditions in the order of its snapshot, and the three
//! statuses in [`CONDITION_STATUSES`] order.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, MetricEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::snapshot::{CONDITION_STATUSES, ServerSnapshot};
use crate::api::conditions::types;

/// One family's descriptor: name (without the registry's prefix and the unit), help text
/// (ending in `.`, as [`prometheus_client::registry::Registry::register`] writes it), unit.
struct Descriptor {
    name: &'static str,
    help: &'static str,
    unit: Option<&'static Unit>,
}

impl Descriptor {
    /// A family without a unit.
    const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            unit: None,
        }
    }
}

static SECONDS: Unit = Unit::Seconds;

/// `s` as one of `known` (no allocation) when it is one, else owned.
fn interned(s: &str, known: impl IntoIterator<Item = &'static str>) -> Cow<'static, str> {
    known
        .into_iter()
        .find(|k| *k == s)
        .map_or_else(|| Cow::Owned(s.to_owned()), Cow::Borrowed)
}

/// The `EndpointVerified` reasons the operator writes.
fn probe_reasons() -> impl Iterator<Item = &'static str> {
    [
        "Verified",
        "Pinned",
        super::super::endpoint::REASON_SERVING_STALE_CERTIFICATE,
    ]
    .into_iter()
    .chain(crate::probe::Reason::ALL.map(crate::probe::Reason::as_str))
}

/// One certificate row of an McpServer.
#[derive(Debug)]
struct Certificate {
    role: &'static str,
    secret: Box<str>,
    /// The McpServer's namespace (the map's key) or another one, shared where known.
    secret_namespace: Arc<str>,
    not_after: i64,
    renewal: i64,
}

/// The last probe of an McpServer: its reason and times come from the status
/// ([`ServerSeries::record`]), its duration from [`ServerSeries::probe_finished`].
#[derive(Debug, Default)]
struct Probe {
    reason: Option<Cow<'static, str>>,
    duration: Option<f64>,
    timestamp: Option<i64>,
    peer_not_after: Option<i64>,
}

/// What is exported for one McpServer.
#[derive(Debug, Default)]
struct Server {
    certificates: Box<[Certificate]>,
    /// `(type, index of the status in CONDITION_STATUSES)`; an index of 3 (another status)
    /// exports 0 for all three.
    conditions: Box<[(Cow<'static, str>, u8)]>,
    bundle_certificates: Option<u32>,
    private_ca_not_after: Option<i64>,
    /// Boxed: most McpServers are not probed.
    probe: Option<Box<Probe>>,
}

/// McpServers by namespace, then name.
type Servers = BTreeMap<Arc<str>, BTreeMap<Box<str>, Server>>;

/// The per-McpServer series of [`super::ControllerMetrics`], registered as one
/// [`Collector`] that encodes the nine per-McpServer families of the module table.
#[derive(Default)]
pub(super) struct ServerSeries {
    servers: Mutex<Servers>,
}

impl fmt::Debug for ServerSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers = self.lock();
        f.debug_struct("ServerSeries")
            .field(
                "servers",
                &servers.values().map(BTreeMap::len).sum::<usize>(),
            )
            .finish()
    }
}

impl ServerSeries {
    fn lock(&self) -> MutexGuard<'_, Servers> {
        self.servers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The map's key for `namespace`, inserted (with no McpServer yet) when missing.
    fn namespace_key(servers: &mut Servers, namespace: &str) -> Arc<str> {
        if let Some((key, _)) = servers.get_key_value(namespace) {
            return key.clone();
        }
        let key: Arc<str> = Arc::from(namespace);
        servers.insert(key.clone(), BTreeMap::new());
        key
    }

    /// The entry of `namespace/name`, created empty when missing.
    fn entry<'a>(servers: &'a mut Servers, namespace: &str, name: &str) -> &'a mut Server {
        let key = Self::namespace_key(servers, namespace);
        let by_name = servers.entry(key).or_default();
        if !by_name.contains_key(name) {
            by_name.insert(Box::from(name), Server::default());
        }
        by_name.get_mut(name).expect("inserted above")
    }

    /// Replaces what is exported for `snapshot`'s McpServer (see
    /// [`super::ControllerMetrics::record_server`]): certificates, conditions, bundle size
    /// and probe as the snapshot has them; the private CAs' notAfter only when the snapshot
    /// has a bundle built this time; the probe's duration only while it is probed. A
    /// certificate or condition named twice is exported once, with its last values.
    pub(super) fn record(&self, snapshot: &ServerSnapshot) {
        let mut servers = self.lock();
        let namespace = Self::namespace_key(&mut servers, &snapshot.namespace);
        let mut certificates: Vec<Certificate> = Vec::with_capacity(snapshot.certificates.len());
        for c in &snapshot.certificates {
            // The Secret's namespace shares the key of a namespace already in the map.
            let secret_namespace = servers
                .get_key_value(c.secret_namespace.as_str())
                .map_or_else(
                    || Arc::from(c.secret_namespace.as_str()),
                    |(k, _)| k.clone(),
                );
            let row = Certificate {
                role: c.role,
                secret: Box::from(c.secret.as_str()),
                secret_namespace,
                not_after: c.not_after,
                renewal: c.renewal,
            };
            match certificates.iter_mut().find(|o| {
                (o.role, &*o.secret, &*o.secret_namespace)
                    == (row.role, &*row.secret, &*row.secret_namespace)
            }) {
                Some(same) => *same = row,
                None => certificates.push(row),
            }
        }
        let mut conditions: Vec<(Cow<'static, str>, u8)> =
            Vec::with_capacity(snapshot.conditions.len());
        for (type_, status) in &snapshot.conditions {
            let status = CONDITION_STATUSES
                .iter()
                .position(|s| s == status)
                .unwrap_or(CONDITION_STATUSES.len()) as u8;
            match conditions
                .iter_mut()
                .find(|(t, _)| t.as_ref() == type_.as_str())
            {
                Some(same) => same.1 = status,
                None => conditions.push((interned(type_, types::ALL), status)),
            }
        }
        let server = Self::entry(&mut servers, &namespace, &snapshot.name);
        server.certificates = certificates.into_boxed_slice();
        server.conditions = conditions.into_boxed_slice();
        server.bundle_certificates = snapshot.bundle_certificates;
        if let Some(private_ca) = snapshot.private_ca_not_after {
            server.private_ca_not_after = private_ca;
        }
        let duration = server.probe.as_ref().and_then(|old| old.duration);
        server.probe = snapshot.probe.as_ref().map(|p| {
            Box::new(Probe {
                reason: Some(interned(&p.reason, probe_reasons())),
                duration,
                timestamp: p.timestamp,
                peer_not_after: p.peer_not_after,
            })
        });
    }

    /// Sets how long the last probe of `namespace/name` took (seconds), creating its entry
    /// when it has none yet.
    pub(super) fn probe_finished(&self, namespace: &str, name: &str, seconds: f64) {
        let mut servers = self.lock();
        let server = Self::entry(&mut servers, namespace, name);
        server.probe.get_or_insert_default().duration = Some(seconds);
    }

    /// Removes the series of `namespace/name`.
    pub(super) fn forget(&self, namespace: &str, name: &str) {
        let mut servers = self.lock();
        if let Some(by_name) = servers.get_mut(namespace) {
            by_name.remove(name);
            if by_name.is_empty() {
                servers.remove(namespace);
            }
        }
    }

    /// Keeps the McpServers for which `keep(namespace, name)` holds; returns how many were
    /// removed.
    pub(super) fn retain(&self, mut keep: impl FnMut(&str, &str) -> bool) -> usize {
        let mut servers = self.lock();
        let mut removed = 0;
        servers.retain(|ns, by_name| {
            by_name.retain(|name, _| {
                let kept = keep(ns, name);
                removed += usize::from(!kept);
                kept
            });
            !by_name.is_empty()
        });
        removed
    }

    /// The McpServers (`namespace`, `name`) that have series, sorted.
    pub(super) fn servers(&self) -> Vec<(String, String)> {
        let servers = self.lock();
        servers
            .iter()
            .flat_map(|(ns, by_name)| by_name.keys().map(|n| (ns.to_string(), n.to_string())))
            .collect()
    }
}

/// McpServers encoded per hold of the lock: a record waits for this many at the most.
const CHUNK: usize = 256;

/// Every McpServer after `after` (all of them for `None`) as `(namespace, name, what it
/// exports)`, in the scrape's order.
fn rows_after<'a>(
    servers: &'a Servers,
    after: Option<&(Arc<str>, Box<str>)>,
) -> impl Iterator<Item = (&'a str, &'a str, &'a Server)> {
    let from = after.map_or(Unbounded, |(ns, _)| Included(&**ns));
    servers
        .range::<str, _>((from, Unbounded))
        .flat_map(move |(ns, by_name)| {
            let names = match after {
                Some((after_ns, after_name)) if after_ns == ns => {
                    (Excluded(&**after_name), Unbounded)
                }
                _ => (Unbounded, Unbounded),
            };
            by_name
                .range::<str, _>(names)
                .map(move |(name, s)| (&**ns, &**name, s))
        })
}

impl ServerSeries {
    /// Calls `f` on every McpServer in the scrape's order, holding the lock for [`CHUNK`]
    /// McpServers at a time. One taken away meanwhile is skipped, one added meanwhile is
    /// seen if it sorts after the last seen; none is seen twice.
    fn for_each(&self, mut f: impl FnMut(&str, &str, &Server) -> fmt::Result) -> fmt::Result {
        let mut after: Option<(Arc<str>, Box<str>)> = None;
        loop {
            let servers = self.lock();
            let mut last = None;
            for (ns, name, s) in rows_after(&servers, after.as_ref()).take(CHUNK) {
                f(ns, name, s)?;
                last = Some((ns, name));
            }
            let Some((ns, name)) = last else {
                return Ok(());
            };
            after = Some((Arc::from(ns), Box::from(name)));
        }
    }
}

/// The `namespace` and `name` labels.
fn server_labels<'a>(namespace: &'a str, name: &'a str) -> [(&'static str, &'a str); 2] {
    [("namespace", namespace), ("name", name)]
}

/// The labels of a certificate's series.
fn certificate_labels<'a>(
    namespace: &'a str,
    name: &'a str,
    c: &'a Certificate,
) -> [(&'static str, &'a str); 5] {
    [
        ("namespace", namespace),
        ("name", name),
        ("role", c.role),
        ("secret", &c.secret),
        ("secret_namespace", &c.secret_namespace),
    ]
}

/// One gauge family being encoded. Its descriptor is written before its first sample, so
/// that a family without samples writes nothing, as the registry leaves out an empty
/// `Family`.
enum Family<'e, 's> {
    Pending(&'e mut DescriptorEncoder<'s>, &'static Descriptor),
    Open(MetricEncoder<'e>),
    /// The descriptor could not be written.
    Failed,
}

impl Family<'_, '_> {
    /// Writes one sample (the descriptor first, for the first one).
    fn sample<L: EncodeLabelSet, V: EncodeGaugeValue>(
        &mut self,
        labels: &L,
        value: V,
    ) -> fmt::Result {
        if let Family::Pending(..) = self
            && let Family::Pending(encoder, d) = std::mem::replace(self, Family::Failed)
        {
            *self = Family::Open(encoder.encode_descriptor(
                d.name,
                d.help,
                d.unit,
                MetricType::Gauge,
            )?);
        }
        match self {
            Family::Open(family) => family.encode_family(labels)?.encode_gauge(&value),
            Family::Pending(..) | Family::Failed => Err(fmt::Error),
        }
    }

    /// Writes the sample of a series labelled `namespace`, `name`, if it has a value.
    fn server<V: EncodeGaugeValue>(
        &mut self,
        namespace: &str,
        name: &str,
        value: Option<V>,
    ) -> fmt::Result {
        value.map_or(Ok(()), |v| self.sample(&server_labels(namespace, name), v))
    }

    /// Writes one sample per certificate of `server`, of value `value`.
    fn certificates(
        &mut self,
        namespace: &str,
        name: &str,
        server: &Server,
        value: fn(&Certificate) -> i64,
    ) -> fmt::Result {
        server
            .certificates
            .iter()
            .try_for_each(|c| self.sample(&certificate_labels(namespace, name, c), value(c)))
    }
}

/// Writes the samples of one McpServer (`namespace`, `name`, its values) into a family.
type Samples = fn(&mut Family<'_, '_>, &str, &str, &Server) -> fmt::Result;

/// The families, in the order of the module table, and how each gets its samples.
static FAMILIES: [(Descriptor, Samples); 9] = [
    (
        Descriptor::gauge(
            "certificate_expiration_timestamp_seconds",
            "notAfter of a certificate issued for an McpServer, as Unix seconds.",
        ),
        |f, ns, name, s| f.certificates(ns, name, s, |c| c.not_after),
    ),
    (
        Descriptor::gauge(
            "certificate_renewal_timestamp_seconds",
            "When a certificate issued for an McpServer is renewed (notAfter - renewBefore), as Unix seconds.",
        ),
        |f, ns, name, s| f.certificates(ns, name, s, |c| c.renewal),
    ),
    (
        Descriptor::gauge(
            "mcpserver_status_condition",
            "An McpServer condition: 1 for its current status, 0 for the two others.",
        ),
        |f, ns, name, s| {
            s.conditions.iter().try_for_each(|(type_, current)| {
                CONDITION_STATUSES
                    .iter()
                    .zip(0u8..)
                    .try_for_each(|(status, i)| {
                        let labels = [
                            ("namespace", ns),
                            ("name", name),
                            ("type", type_),
                            ("status", status),
                        ];
                        f.sample(&labels, i64::from(*current == i))
                    })
            })
        },
    ),
    (
        Descriptor::gauge(
            "trust_bundle_certificates",
            "Certificates in an McpServer's ca-bundle.pem.",
        ),
        |f, ns, name, s| f.server(ns, name, s.bundle_certificates.map(i64::from)),
    ),
    (
        Descriptor::gauge(
            "trust_bundle_private_ca_expiration_timestamp_seconds",
            "Earliest notAfter among an McpServer's private CAs and pinned certificates, as Unix seconds.",
        ),
        |f, ns, name, s| f.server(ns, name, s.private_ca_not_after),
    ),
    (
        Descriptor::gauge(
            "endpoint_probe_result",
            "1 with the reason of the last endpoint probe (EndpointVerified's reason).",
        ),
        |f, ns, name, s| match s.probe.as_ref().and_then(|p| p.reason.as_deref()) {
            Some(reason) => f.sample(
                &[("namespace", ns), ("name", name), ("reason", reason)],
                1i64,
            ),
            None => Ok(()),
        },
    ),
    (
        Descriptor {
            unit: Some(&SECONDS),
            ..Descriptor::gauge(
                "endpoint_probe_duration",
                "Duration of the last endpoint probe.",
            )
        },
        |f, ns, name, s| f.server(ns, name, s.probe.as_ref().and_then(|p| p.duration)),
    ),
    (
        Descriptor::gauge(
            "endpoint_probe_timestamp_seconds",
            "When the last endpoint probe ran, as Unix seconds.",
        ),
        |f, ns, name, s| f.server(ns, name, s.probe.as_ref().and_then(|p| p.timestamp)),
    ),
    (
        Descriptor::gauge(
            "endpoint_peer_certificate_expiration_timestamp_seconds",
            "notAfter of the certificate the endpoint presented at the last probe, as Unix seconds.",
        ),
        |f, ns, name, s| f.server(ns, name, s.probe.as_ref().and_then(|p| p.peer_not_after)),
    ),
];

impl Collector for ServerSeries {
    /// Encodes [`FAMILIES`] in order, each over every McpServer ([`ServerSeries::for_each`]).
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for (descriptor, samples) in &FAMILIES {
            let mut family = Family::Pending(&mut encoder, descriptor);
            self.for_each(|ns, name, s| samples(&mut family, ns, name, s))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    /// More McpServers than fit in one hold of the lock, with chunk boundaries inside a
    /// namespace and names interleaved across namespaces: every family still has each
    /// McpServer once, in order.
    #[test]
    fn families_span_chunks_in_order() {
        let series = Arc::new(ServerSeries::default());
        let mut registry = Registry::with_prefix("mcptrust");
        registry.register_collector(Box::new(series.clone()));
        let n = 2 * CHUNK + 88;
        // Recorded backwards: the order comes from the map, not from the records.
        for i in (0..n).rev() {
            series.record(&ServerSnapshot {
                namespace: format!("ns{}", i % 3),
                name: format!("s{i:04}"),
                certificates: Vec::new(),
                conditions: vec![("Ready".to_string(), "True".to_string())],
                bundle_certificates: Some(i as u32),
                private_ca_not_after: None,
                probe: None,
            });
        }
        let text = crate::metrics::encode_registry(&registry);
        let bundle: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mcptrust_trust_bundle_certificates{"))
            .collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|i| (i % 3, *i));
        let expected: Vec<String> = order
            .into_iter()
            .map(|i| {
                format!(
                    r#"mcptrust_trust_bundle_certificates{{namespace="ns{}",name="s{i:04}"}} {i}"#,
                    i % 3
                )
            })
            .collect();
        assert_eq!(bundle, expected);
        let ready_true: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(r#"type="Ready",status="True"} 1"#))
            .collect();
        assert_eq!(ready_true.len(), n, "{text}");
        assert_eq!(text.matches("# TYPE ").count(), 2, "{text}");
        assert_eq!(series.retain(|_, name| name != "s0000"), 1);
        assert_eq!(series.servers().len(), n - 1);
    }
}
