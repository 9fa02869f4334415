//! The proxy's allow-list for one McpServer: `allowlist.txt` (the hostname entries) and
//! the Squid configuration that enforces it, in the ConfigMap the proxy reads. Pure builders.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    ALLOWLIST_FILE, COMPONENT_ALLOWLIST, EgressEntry, SQUID_FILE, allowlist_config_map_name,
    mode_str,
};
use crate::api::{EgressMode, McpServer};
use crate::controller::build;
use crate::inject::ANNOTATION_EGRESS_MODE;

/// `allowlist.txt`: the hostname entries, one `host:port` per line (a wildcard kept as
/// `*.domain:port`), sorted, deduplicated, newline-terminated; empty when there are none.
pub fn allowlist_text(entries: &[EgressEntry]) -> String {
    let hosts: BTreeSet<String> = entries
        .iter()
        .filter(|e| e.is_host())
        .map(ToString::to_string)
        .collect();
    hosts.into_iter().map(|h| h + "\n").collect()
}

/// The Squid ACL name prefix of an McpServer: `mcptrust_<namespace>_<name>` (the namespace
/// too, since Squid merges ACLs of the same name), or `mcptrust_<hash>` when that would
/// not leave room for the port suffixes within Squid's 63-character ACL names.
pub fn squid_acl_base(namespace: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let base = format!("mcptrust_{}_{}", clean(namespace), clean(name));
    if base.len() <= 48 {
        base
    } else {
        let hash = crate::pki::sha256_hex(format!("{namespace}/{name}").as_bytes());
        format!("mcptrust_{}", &hash[..16])
    }
}

/// `squid.conf`: a snippet to include before the proxy's final `http_access deny all`.
/// Per port: `acl <base>_<port> dstdomain` lines (a wildcard `*.x` as Squid's `.x`, which
/// also matches `x` itself and deeper subdomains; names a wildcard covers are left out, as
/// Squid warns about them), `acl <base>_<port>_net dst` lines for the CIDR entries, a
/// `port` ACL, and the `http_access allow` lines.
pub fn squid_conf(
    namespace: &str,
    name: &str,
    mode: EgressMode,
    entries: &[EgressEntry],
) -> String {
    let base = squid_acl_base(namespace, name);
    let mut by_port: BTreeMap<u16, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for e in entries {
        let slot = by_port.entry(e.port()).or_default();
        match e {
            EgressEntry::Host {
                name,
                wildcard: true,
                ..
            } => {
                slot.0.insert(format!(".{name}"));
            }
            EgressEntry::Host { name, .. } => {
                slot.0.insert(name.clone());
            }
            EgressEntry::Cidr { net, .. } => {
                slot.1.insert(net.to_string());
            }
        }
    }
    let mut out = format!(
        "# mcptrust egress allow-list of McpServer {namespace}/{name} (spec.egress.mode: {}).\n\
         # Generated from spec.egress.allow; do not edit. Include it before the final\n\
         # \"http_access deny all\". A proxy shared by several McpServers allows the union of\n\
         # their lists: add a src ACL for these pods' addresses, or run a proxy per sandbox.\n\
         # *.example.com is written .example.com, which Squid also matches for example.com.\n",
        mode_str(mode)
    );
    if by_port.is_empty() {
        out.push_str("# No entries: nothing is allowed through the proxy for this McpServer.\n");
    }
    for (port, (domains, nets)) in &by_port {
        let acl = format!("{base}_{port}");
        let covered = |d: &String| {
            domains
                .iter()
                .any(|w| w != d && w.starts_with('.') && (d.ends_with(w.as_str()) || **d == w[1..]))
        };
        let domains: Vec<&String> = domains.iter().filter(|d| !covered(d)).collect();
        for d in &domains {
            out.push_str(&format!("acl {acl} dstdomain {d}\n"));
        }
        for n in nets {
            out.push_str(&format!("acl {acl}_net dst {n}\n"));
        }
        out.push_str(&format!("acl {acl}_port port {port}\n"));
        if !domains.is_empty() {
            out.push_str(&format!("http_access allow {acl}_port {acl}\n"));
        }
        if !nets.is_empty() {
            out.push_str(&format!("http_access allow {acl}_port {acl}_net\n"));
        }
    }
    out
}

/// The allow-list ConfigMap `mcptrust-<name>-egress-allowlist`: [`ALLOWLIST_FILE`] and
/// [`SQUID_FILE`], the mode as the [`ANNOTATION_EGRESS_MODE`] annotation, labels and an
/// owner reference.
pub fn allowlist_config_map(
    server: &McpServer,
    entries: &[EgressEntry],
    mode: EgressMode,
) -> ConfigMap {
    let name = server.metadata.name.clone().unwrap_or_default();
    let ns = server.metadata.namespace.clone().unwrap_or_default();
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(allowlist_config_map_name(&name)),
            namespace: Some(ns.clone()),
            labels: Some(build::labels(&name, &ns, COMPONENT_ALLOWLIST)),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_EGRESS_MODE.to_string(),
                mode_str(mode).to_string(),
            )])),
            owner_references: build::owner(server).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (ALLOWLIST_FILE.to_string(), allowlist_text(entries)),
            (
                SQUID_FILE.to_string(),
                squid_conf(&ns, &name, mode, entries),
            ),
        ])),
        ..Default::default()
    }
}
