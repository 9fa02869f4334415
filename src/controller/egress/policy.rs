//! The NetworkPolicy that binds an McpServer's pods to the cluster DNS, the proxy and the
//! CIDR entries: what the controller knows about the proxy ([`ProxyPlan`]) and the pure
//! builders of the policy's rules.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{COMPONENT_POLICY, EgressEntry, network_policy_name};
use crate::api::McpServer;
use crate::controller::build;
use crate::inject::{EgressConfig, InjectConfig, ProxyConfig};

/// What the controller knows about the proxy and DNS: the operator config's `egress`
/// section and its proxy defaults (which an McpServer's `spec.proxy` overrides).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressDefaults {
    /// The operator config's `egress` section.
    pub config: EgressConfig,
    /// The operator config's `proxy` section.
    pub proxy: ProxyConfig,
}

impl EgressDefaults {
    /// From the operator config.
    pub fn from_config(config: &InjectConfig) -> Self {
        Self {
            config: config.egress.clone(),
            proxy: config.proxy.clone(),
        }
    }
}

/// How the NetworkPolicy reaches the proxy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyPlan {
    /// Egress rules to the proxy (empty when it cannot be named).
    pub rules: Vec<NetworkPolicyEgressRule>,
    /// What the rules allow, for messages (`the proxy 10.200.0.1:3128`).
    pub reachable: Vec<String>,
    /// Why the proxy (or one of its URLs) cannot be named; empty when all is well.
    pub problems: Vec<String>,
    /// A proxy URL is configured at all.
    pub configured: bool,
}

impl ProxyPlan {
    /// True when a proxy is configured and the NetworkPolicy allows every proxy URL.
    pub fn usable(&self) -> bool {
        !self.rules.is_empty() && self.problems.is_empty()
    }
}

/// Splits a proxy URL (`http://[user@]host[:port][/]`) into host and port; the port
/// defaults to 80 (http, or no scheme) or 443 (https).
pub(super) fn proxy_host_port(url: &str) -> Option<(String, u16)> {
    let lower = url.to_ascii_lowercase();
    let (rest, default_port) = if lower.starts_with("https://") {
        (&url[8..], 443)
    } else if lower.starts_with("http://") {
        (&url[7..], 80)
    } else if url.contains("://") {
        return None;
    } else {
        (url, 80)
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || (host.contains(':') && host.parse::<Ipv6Addr>().is_err()) {
        return None;
    }
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
    };
    Some((host.to_string(), port))
}

fn port_rule(peers: Vec<NetworkPolicyPeer>, ports: &[(&str, u16)]) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(peers),
        ports: Some(
            ports
                .iter()
                .map(|(proto, port)| NetworkPolicyPort {
                    protocol: Some((*proto).to_string()),
                    port: Some(IntOrString::Int(i32::from(*port))),
                    end_port: None,
                })
                .collect(),
        ),
    }
}

fn ip_block(net: &IpNet) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: net.to_string(),
            except: None,
        }),
        ..Default::default()
    }
}

fn labels_selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: (!labels.is_empty()).then(|| labels.clone()),
        match_expressions: None,
    }
}

fn show_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "any".to_string();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Works out how the NetworkPolicy reaches the McpServer's proxy: the effective
/// `httpsProxy` and `httpProxy` (the McpServer's `spec.proxy` over the operator's), each
/// named by
///
/// 1. the operator config's `egress.proxyCidrs` or `proxyNamespaceSelector`/
///    `proxyPodSelector` (port `proxyPort`, else the URL's), when the URL is the operator's
///    own proxy;
/// 2. else its host as a /32 (or /128) ipBlock with the URL's port, when the host is an IP
///    literal outside the Service CIDRs (a ClusterIP is translated to the proxy pods' IPs
///    before NetworkPolicies see it, so an ipBlock for it would match nothing);
/// 3. else nothing: a hostname cannot go into a NetworkPolicy, which is a problem.
pub fn proxy_plan(server: &McpServer, defaults: &EgressDefaults) -> ProxyPlan {
    let own = server.spec.proxy.as_ref();
    let mut urls: Vec<(String, &'static str)> = Vec::new();
    let https = own
        .and_then(|p| p.https_proxy.clone())
        .map(|u| (u, "spec.proxy.httpsProxy"));
    let https = https.or_else(|| {
        defaults
            .proxy
            .https_proxy
            .clone()
            .map(|u| (u, "the operator's proxy.httpsProxy"))
    });
    let http = own
        .and_then(|p| p.http_proxy.clone())
        .map(|u| (u, "spec.proxy.httpProxy"));
    let http = http.or_else(|| {
        defaults
            .proxy
            .http_proxy
            .clone()
            .map(|u| (u, "the operator's proxy.httpProxy"))
    });
    for (url, source) in [https, http].into_iter().flatten() {
        if !urls.iter().any(|(u, _)| *u == url) {
            urls.push((url, source));
        }
    }
    let mut plan = ProxyPlan {
        configured: !urls.is_empty(),
        ..Default::default()
    };
    if urls.is_empty() {
        plan.problems.push(
            "no proxy is configured (spec.proxy.httpsProxy, or proxy.httpsProxy in the operator config)"
                .into(),
        );
        return plan;
    }
    let cfg = &defaults.config;
    let described_by_config = !cfg.proxy_cidrs.is_empty()
        || cfg.proxy_namespace_selector.is_some()
        || cfg.proxy_pod_selector.is_some();
    for (url, source) in urls {
        let Some((host, url_port)) = proxy_host_port(&url) else {
            plan.problems.push(format!(
                "{source} {url:?} is not a proxy URL such as http://10.200.0.1:3128"
            ));
            continue;
        };
        let operators = defaults.proxy.https_proxy.as_deref() == Some(url.as_str())
            || defaults.proxy.http_proxy.as_deref() == Some(url.as_str());
        let (rule, what) = if operators && described_by_config {
            let port = match cfg.proxy_port {
                Some(0) => {
                    plan.problems
                        .push("egress.proxyPort 0 in the operator config is not a port".into());
                    continue;
                }
                Some(p) => p,
                None => url_port,
            };
            let mut peers: Vec<NetworkPolicyPeer> = cfg.proxy_cidrs.iter().map(ip_block).collect();
            let mut parts: Vec<String> = cfg.proxy_cidrs.iter().map(|c| c.to_string()).collect();
            if cfg.proxy_namespace_selector.is_some() || cfg.proxy_pod_selector.is_some() {
                let ns = cfg.proxy_namespace_selector.clone().unwrap_or_default();
                peers.push(NetworkPolicyPeer {
                    ip_block: None,
                    namespace_selector: Some(labels_selector(&ns)),
                    pod_selector: cfg.proxy_pod_selector.as_ref().map(labels_selector),
                });
                parts.push(format!(
                    "pods {} in namespaces {}",
                    cfg.proxy_pod_selector
                        .as_ref()
                        .map_or_else(|| "any".to_string(), show_labels),
                    show_labels(&ns)
                ));
            }
            (
                port_rule(peers, &[("TCP", port)]),
                format!("the proxy ({}) on port {port}", parts.join("; ")),
            )
        } else {
            match host.parse::<IpAddr>() {
                Ok(ip) => {
                    if let Some(cidr) = defaults
                        .proxy
                        .service_cidrs
                        .iter()
                        .find(|c| c.contains(&ip))
                    {
                        plan.problems.push(format!(
                            "{source} {url} is a Service ClusterIP (inside the Service CIDR {cidr}), which NetworkPolicies never see (they match the proxy pods behind it): describe the proxy pods with egress.proxyNamespaceSelector and egress.proxyPodSelector in the operator config"
                        ));
                        continue;
                    }
                    let net = IpNet::from(ip);
                    (
                        port_rule(vec![ip_block(&net)], &[("TCP", url_port)]),
                        format!("the proxy {net} on port {url_port}"),
                    )
                }
                Err(_) => {
                    plan.problems.push(format!(
                        "{source} {url} names the host {host:?}, which a NetworkPolicy cannot allow (it takes IPs and label selectors only): {}",
                        if operators {
                            "describe the proxy with egress.proxyCidrs, or egress.proxyNamespaceSelector and egress.proxyPodSelector, in the operator config"
                        } else {
                            "use the proxy's IP address in the URL, or the operator's proxy (described in its config)"
                        }
                    ));
                    continue;
                }
            }
        };
        if !plan.rules.contains(&rule) {
            plan.rules.push(rule);
            plan.reachable.push(what);
        }
    }
    plan
}

/// The DNS rule: UDP and TCP 53 to the cluster DNS pods (namespace and pod labels from the
/// config) and the config's `dnsCidrs`.
pub fn dns_rule(cfg: &EgressConfig) -> NetworkPolicyEgressRule {
    let mut peers = vec![NetworkPolicyPeer {
        ip_block: None,
        namespace_selector: Some(labels_selector(&cfg.dns_namespace_labels)),
        pod_selector: Some(labels_selector(&cfg.dns_pod_labels)),
    }];
    peers.extend(cfg.dns_cidrs.iter().map(ip_block));
    port_rule(peers, &[("UDP", 53), ("TCP", 53)])
}

/// The McpServer's pod selector, unless it is missing or empty (an empty selector selects
/// every pod of the namespace).
pub fn effective_pod_selector(server: &McpServer) -> Option<&LabelSelector> {
    server.spec.pod_selector.as_ref().filter(|s| {
        s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
            || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
    })
}

/// The NetworkPolicy `mcptrust-<name>-egress`: it selects the McpServer's `podSelector`,
/// has policyType Egress, and allows only DNS ([`dns_rule`]), the proxy ([`proxy_plan`])
/// and each CIDR entry on its TCP port; everything else is denied. Labels and an owner
/// reference as every object mcptrust writes.
///
/// `None` when the McpServer has no (non-empty) `podSelector`: the policy would then
/// select every pod of the namespace.
pub fn network_policy(
    server: &McpServer,
    entries: &[EgressEntry],
    defaults: &EgressDefaults,
) -> Option<NetworkPolicy> {
    let selector = effective_pod_selector(server)?;
    let name = server.metadata.name.clone().unwrap_or_default();
    let ns = server.metadata.namespace.clone().unwrap_or_default();
    let mut rules = vec![dns_rule(&defaults.config)];
    let mut push = |r: NetworkPolicyEgressRule| {
        if !rules.contains(&r) {
            rules.push(r);
        }
    };
    for r in proxy_plan(server, defaults).rules {
        push(r);
    }
    for e in entries {
        if let EgressEntry::Cidr { net, port } = e {
            push(port_rule(vec![ip_block(net)], &[("TCP", *port)]));
        }
    }
    Some(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(network_policy_name(&name)),
            namespace: Some(ns.clone()),
            labels: Some(build::labels(&name, &ns, COMPONENT_POLICY)),
            owner_references: build::owner(server).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector.clone()),
            policy_types: Some(vec!["Egress".to_string()]),
            egress: Some(rules),
            ingress: None,
        }),
    })
}
