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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet};
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

const CERT_NOT_AFTER: Descriptor = Descriptor::gauge(
    "certificate_expiration_timestamp_seconds",
    "notAfter of a certificate issued for an McpServer, as Unix seconds.",
);
const CERT_RENEWAL: Descriptor = Descriptor::gauge(
    "certificate_renewal_timestamp_seconds",
    "When a certificate issued for an McpServer is renewed (notAfter - renewBefore), as Unix seconds.",
);
const CONDITION: Descriptor = Descriptor::gauge(
    "mcpserver_status_condition",
    "An McpServer condition: 1 for its current status, 0 for the two others.",
);
const BUNDLE_CERTIFICATES: Descriptor = Descriptor::gauge(
    "trust_bundle_certificates",
    "Certificates in an McpServer's ca-bundle.pem.",
);
const BUNDLE_PRIVATE_CA_NOT_AFTER: Descriptor = Descriptor::gauge(
    "trust_bundle_private_ca_expiration_timestamp_seconds",
    "Earliest notAfter among an McpServer's private CAs and pinned certificates, as Unix seconds.",
);
const PROBE_RESULT: Descriptor = Descriptor::gauge(
    "endpoint_probe_result",
    "1 with the reason of the last endpoint probe (EndpointVerified's reason).",
);
const PROBE_DURATION: Descriptor = Descriptor {
    unit: Some(&SECONDS),
    ..Descriptor::gauge(
        "endpoint_probe_duration",
        "Duration of the last endpoint probe.",
    )
};
const PROBE_TIMESTAMP: Descriptor = Descriptor::gauge(
    "endpoint_probe_timestamp_seconds",
    "When the last endpoint probe ran, as Unix seconds.",
);
const PEER_NOT_AFTER: Descriptor = Descriptor::gauge(
    "endpoint_peer_certificate_expiration_timestamp_seconds",
    "notAfter of the certificate the endpoint presented at the last probe, as Unix seconds.",
);

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

/// Every McpServer as `(namespace, name, what it exports)`, in the scrape's order.
fn rows(servers: &Servers) -> impl Iterator<Item = (&str, &str, &Server)> {
    servers
        .iter()
        .flat_map(|(ns, by_name)| by_name.iter().map(move |(n, s)| (&**ns, &**n, s)))
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

/// Encodes one gauge family from its samples; nothing at all when it has none.
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    descriptor: &Descriptor,
    samples: impl Iterator<Item = (L, V)>,
) -> fmt::Result {
    let mut samples = samples.peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(
        descriptor.name,
        descriptor.help,
        descriptor.unit,
        MetricType::Gauge,
    )?;
    for (labels, value) in samples {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// Encodes one gauge family of the server-level series (labels `namespace`, `name`) whose
/// value `value` gives.
fn server_gauges<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    descriptor: &Descriptor,
    servers: &Servers,
    value: impl Fn(&Server) -> Option<V>,
) -> fmt::Result {
    let samples =
        rows(servers).filter_map(|(ns, name, s)| value(s).map(|v| (server_labels(ns, name), v)));
    gauges(encoder, descriptor, samples)
}

impl Collector for ServerSeries {
    /// Encodes the families in the order the module table lists them. The lock is taken
    /// once per family, so that recording waits for one family's encoding at the most.
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for (descriptor, value) in [
            (
                &CERT_NOT_AFTER,
                (|c| c.not_after) as fn(&Certificate) -> i64,
            ),
            (&CERT_RENEWAL, |c| c.renewal),
        ] {
            let servers = self.lock();
            let samples = rows(&servers).flat_map(|(ns, name, s)| {
                s.certificates
                    .iter()
                    .map(move |c| (certificate_labels(ns, name, c), value(c)))
            });
            gauges(&mut encoder, descriptor, samples)?;
        }
        {
            let servers = self.lock();
            let samples = rows(&servers).flat_map(|(ns, name, s)| {
                s.conditions.iter().flat_map(move |(type_, current)| {
                    CONDITION_STATUSES
                        .iter()
                        .zip(0u8..)
                        .map(move |(status, i)| {
                            let labels: [(&'static str, &str); 4] = [
                                ("namespace", ns),
                                ("name", name),
                                ("type", type_),
                                ("status", status),
                            ];
                            (labels, i64::from(*current == i))
                        })
                })
            });
            gauges(&mut encoder, &CONDITION, samples)?;
        }
        server_gauges(&mut encoder, &BUNDLE_CERTIFICATES, &self.lock(), |s| {
            s.bundle_certificates.map(i64::from)
        })?;
        server_gauges(
            &mut encoder,
            &BUNDLE_PRIVATE_CA_NOT_AFTER,
            &self.lock(),
            |s| s.private_ca_not_after,
        )?;
        {
            let servers = self.lock();
            let samples = rows(&servers).filter_map(|(ns, name, s)| {
                let reason = s.probe.as_ref()?.reason.as_deref()?;
                let labels: [(&'static str, &str); 3] =
                    [("namespace", ns), ("name", name), ("reason", reason)];
                Some((labels, 1i64))
            });
            gauges(&mut encoder, &PROBE_RESULT, samples)?;
        }
        server_gauges(&mut encoder, &PROBE_DURATION, &self.lock(), |s| {
            s.probe.as_ref()?.duration
        })?;
        server_gauges(&mut encoder, &PROBE_TIMESTAMP, &self.lock(), |s| {
            s.probe.as_ref()?.timestamp
        })?;
        server_gauges(&mut encoder, &PEER_NOT_AFTER, &self.lock(), |s| {
            s.probe.as_ref()?.peer_not_after
        })
    }
}
