//! Egress policy per McpServer (seed 004): a NetworkPolicy that lets the server's pods
//! reach nothing but the cluster DNS, the proxy and the CIDR entries, plus an allow-list
//! ConfigMap for the proxy, which alone can enforce hostname entries.
//!
//! Environment-based proxying is voluntary (aiohttp, Java and older Node go direct), so
//! only the NetworkPolicy makes the proxy binding. The condition `EgressPolicyReady` says
//! plainly what is enforced and what is not:
//!
//! | reason | status | when |
//! |---|---|---|
//! | `Enforced` | True | NetworkPolicy applied; hostname entries (if any) go through a proxy the policy can name |
//! | `HostnameRulesRequireProxy` | False | Enforce mode, hostname entries, but no proxy the policy can name: those hosts are unreachable (fail closed) |
//! | `AuditOnly` | False | Audit mode: allow-list and pod annotation only, nothing enforced (Ready stays True) |
//! | `PodSelectorRequired` | False | Enforce mode without `spec.podSelector`: the policy would select every pod of the namespace |
//! | `InvalidEgressEntry` | False | an entry the CRD should have rejected; the last applied objects stay as they are |
//! | `NotRequested` | True | no `spec.egress` |
//!
//! Validation ([`parse_entry`]) is deliberately as strict as the CRD's CEL rule
//! ([`crate::api::EGRESS_ENTRY_RULE`]) and a little stricter: a CIDR with bits set beyond
//! its prefix (`10.0.0.1/8`) is rejected instead of silently widened, and an IPv4 literal
//! host (`10.1.2.3:443`) becomes the CIDR `10.1.2.3/32`, enforced by the NetworkPolicy.
//!
//! The builders here are pure; [`reconcile`] is the thin apply layer called by
//! [`super::reconcile::reconcile`].

use super::EventType;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::error::Result;
use super::{Context, FIELD_MANAGER_EGRESS};
use crate::api::conditions::{DesiredCondition, types};
use crate::api::{EgressMode, McpServer, McpServerStatus};
use crate::inject::ANNOTATION_EGRESS_MODE;

mod allowlist;
pub use allowlist::{allowlist_config_map, allowlist_text, squid_acl_base, squid_conf};

mod policy;
pub use policy::{
    EgressDefaults, ProxyPlan, dns_rule, effective_pod_selector, network_policy, proxy_plan,
};

mod entry;
pub use entry::{EgressEntry, EntryError, parse_entry, validate_entries};

/// Condition reasons of `EgressPolicyReady`.
pub mod reasons {
    /// Every entry is enforced.
    pub const ENFORCED: &str = "Enforced";
    /// Hostname entries exist but no proxy the NetworkPolicy can name is configured.
    pub const HOSTNAME_RULES_REQUIRE_PROXY: &str = "HostnameRulesRequireProxy";
    /// Audit mode: nothing is enforced.
    pub const AUDIT_ONLY: &str = "AuditOnly";
    /// Enforce mode without a pod selector.
    pub const POD_SELECTOR_REQUIRED: &str = "PodSelectorRequired";
    /// An entry failed the controller's validation.
    pub const INVALID_EGRESS_ENTRY: &str = "InvalidEgressEntry";
    /// No `spec.egress`.
    pub const NOT_REQUESTED: &str = "NotRequested";
}

/// Longest entry accepted (the CRD's `maxLength`).
pub const MAX_ENTRY_LEN: usize = 260;
/// Key of the plain allow-list (one `host:port` per line) in the allow-list ConfigMap.
pub const ALLOWLIST_FILE: &str = "allowlist.txt";
/// Key of the Squid snippet in the allow-list ConfigMap.
pub const SQUID_FILE: &str = "squid.conf";
/// `mcptrust.io/component` label of the NetworkPolicy.
pub const COMPONENT_POLICY: &str = "egress";
/// `mcptrust.io/component` label of the allow-list ConfigMap.
pub const COMPONENT_ALLOWLIST: &str = "egress-allowlist";

/// Name of the NetworkPolicy of McpServer `name`.
pub fn network_policy_name(name: &str) -> String {
    format!("mcptrust-{name}-egress")
}

/// Name of the allow-list ConfigMap of McpServer `name`.
pub fn allowlist_config_map_name(name: &str) -> String {
    format!("mcptrust-{name}-egress-allowlist")
}

/// `Enforce` or `Audit`.
pub fn mode_str(mode: EgressMode) -> &'static str {
    match mode {
        EgressMode::Enforce => "Enforce",
        EgressMode::Audit => "Audit",
    }
}

// ---------------------------------------------------------------------------------------
// Ready.

/// True for an `EgressPolicyReady` condition that must not make `Ready` False: Audit mode
/// is a choice, reported in `Ready`'s message ([`ready_note`]) instead.
pub fn is_advisory(c: &DesiredCondition) -> bool {
    c.type_ == types::EGRESS_POLICY_READY && c.reason == reasons::AUDIT_ONLY
}

/// What `Ready`'s message says about egress, when there is a policy.
pub fn ready_note(desired: &[DesiredCondition]) -> Option<&'static str> {
    let c = desired
        .iter()
        .find(|c| c.type_ == types::EGRESS_POLICY_READY)?;
    match c.reason.as_str() {
        reasons::ENFORCED => Some("egress policy enforced"),
        reasons::AUDIT_ONLY => {
            Some("egress policy in Audit mode: nothing is enforced (EgressPolicyReady=False)")
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// The apply layer.

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn list_some(entries: &[&EgressEntry]) -> String {
    let mut shown: Vec<String> = entries.iter().take(5).map(|e| e.to_string()).collect();
    if entries.len() > 5 {
        shown.push(format!("and {} more", entries.len() - 5));
    }
    shown.join(", ")
}

/// The NetworkPolicy may exist after a reconcile that ended with this reason.
fn policy_may_exist(old_reason: &str) -> bool {
    old_reason != reasons::AUDIT_ONLY && old_reason != reasons::NOT_REQUESTED
}

async fn delete_network_policy(ctx: &Context, ns: &str, name: &str) -> Result<bool> {
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .delete(&network_policy_name(name), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Empties the allow-list ConfigMap when `spec.egress` is removed, so that no proxy keeps
/// allowing stale entries (a merge patch: it does not create a missing ConfigMap). The
/// ConfigMap itself goes with the McpServer (owner reference).
async fn retire_allowlist(ctx: &Context, ns: &str, name: &str) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let body = json!({
        "metadata": {"annotations": {ANNOTATION_EGRESS_MODE: null}},
        "data": {
            ALLOWLIST_FILE: "",
            SQUID_FILE: format!(
                "# McpServer {ns}/{name} has no spec.egress any more: nothing is allowed through the proxy for it.\n"
            ),
        }
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER_EGRESS.to_string()),
        ..Default::default()
    };
    match api
        .patch(
            &allowlist_config_map_name(name),
            &params,
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Emits an event when the condition differs from the last one (type, reason, message):
/// Warning for every degradation, Normal when enforcement starts or changes.
async fn announce(
    ctx: &Context,
    server: &McpServer,
    old: &McpServerStatus,
    c: DesiredCondition,
) -> DesiredCondition {
    let same = old
        .conditions
        .iter()
        .any(|o| o.type_ == c.type_ && o.reason == c.reason && o.message == c.message);
    if !same {
        if c.status != "True" {
            ctx.event(server, EventType::Warning, &c.reason, &c.message)
                .await;
        } else if c.reason == reasons::ENFORCED {
            ctx.event(server, EventType::Normal, "EgressEnforced", &c.message)
                .await;
        }
    }
    c
}

/// The egress step of the reconcile pipeline: validates `spec.egress`, applies the
/// allow-list ConfigMap (both modes) and, in Enforce mode, the NetworkPolicy, deletes the
/// NetworkPolicy when switching to Audit (or removing `spec.egress`), emits events on
/// degradations, and returns the `EgressPolicyReady` condition.
///
/// Without `spec.egress` and without a previous `EgressPolicyReady` condition it makes no
/// API call. On an invalid entry or a missing pod selector, objects applied earlier stay
/// as they are (fail closed).
///
/// # Errors
/// API failures only.
pub async fn reconcile(
    ctx: &Context,
    server: &McpServer,
    ns: &str,
    name: &str,
    old: &McpServerStatus,
) -> Result<DesiredCondition> {
    let old_reason = old
        .conditions
        .iter()
        .find(|c| c.type_ == types::EGRESS_POLICY_READY)
        .map(|c| c.reason.clone());
    let np_name = network_policy_name(name);
    let cm_name = allowlist_config_map_name(name);

    let Some(spec) = server.spec.egress.as_ref() else {
        if let Some(r) = old_reason
            .as_deref()
            .filter(|r| *r != reasons::NOT_REQUESTED)
        {
            let deleted = policy_may_exist(r) && delete_network_policy(ctx, ns, name).await?;
            retire_allowlist(ctx, ns, name).await?;
            let note = if deleted {
                format!(
                    "spec.egress was removed: deleted NetworkPolicy {np_name} and emptied ConfigMap {cm_name}"
                )
            } else {
                format!("spec.egress was removed: emptied ConfigMap {cm_name}")
            };
            ctx.event(server, EventType::Normal, "EgressPolicyRemoved", &note)
                .await;
        }
        return Ok(DesiredCondition::new(
            types::EGRESS_POLICY_READY,
            true,
            reasons::NOT_REQUESTED,
            "spec.egress is not set: mcptrust does not restrict this server's egress",
        ));
    };

    let entries = match validate_entries(&spec.allow) {
        Ok(e) => e,
        Err(errors) => {
            let c = DesiredCondition::new(
                types::EGRESS_POLICY_READY,
                false,
                reasons::INVALID_EGRESS_ENTRY,
                format!(
                    "{} (the CRD should have rejected them; nothing was changed): {}",
                    plural(
                        errors.len(),
                        "invalid spec.egress.allow entry",
                        "invalid spec.egress.allow entries"
                    ),
                    errors.join("; ")
                ),
            );
            return Ok(announce(ctx, server, old, c).await);
        }
    };
    let hosts: Vec<&EgressEntry> = entries.iter().filter(|e| e.is_host()).collect();
    let cidrs: Vec<&EgressEntry> = entries.iter().filter(|e| !e.is_host()).collect();

    // The allow-list first, so that the proxy knows it before the policy forces traffic
    // through the proxy.
    let cm = allowlist_config_map(server, &entries, spec.mode);
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    cm_api
        .patch(
            &cm_name,
            &PatchParams::apply(FIELD_MANAGER_EGRESS).force(),
            &Patch::Apply(&cm),
        )
        .await?;

    let c = match spec.mode {
        EgressMode::Audit => {
            let deleted = match old_reason.as_deref() {
                Some(r) if policy_may_exist(r) => delete_network_policy(ctx, ns, name).await?,
                _ => false,
            };
            DesiredCondition::new(
                types::EGRESS_POLICY_READY,
                false,
                reasons::AUDIT_ONLY,
                format!(
                    "spec.egress.mode is Audit: nothing is enforced{}; ConfigMap {cm_name} lists {} for the proxy, and injected pods are annotated {ANNOTATION_EGRESS_MODE}=Audit; set mode: Enforce to apply NetworkPolicy {np_name}",
                    if deleted {
                        format!(" (NetworkPolicy {np_name} was deleted)")
                    } else {
                        String::new()
                    },
                    plural(hosts.len(), "hostname entry", "hostname entries"),
                ),
            )
        }
        EgressMode::Enforce => match network_policy(server, &entries, &ctx.config.egress) {
            None => DesiredCondition::new(
                types::EGRESS_POLICY_READY,
                false,
                reasons::POD_SELECTOR_REQUIRED,
                format!(
                    "spec.egress.mode is Enforce but spec.podSelector is not set (or empty): NetworkPolicy {np_name} would select every pod in namespace {ns}; set spec.podSelector to the server's pod labels, or use mode: Audit"
                ),
            ),
            Some(np) => {
                let np_api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
                np_api
                    .patch(
                        &np_name,
                        &PatchParams::apply(FIELD_MANAGER_EGRESS).force(),
                        &Patch::Apply(&np),
                    )
                    .await?;
                let plan = proxy_plan(server, &ctx.config.egress);
                if !hosts.is_empty() && !plan.usable() {
                    DesiredCondition::new(
                        types::EGRESS_POLICY_READY,
                        false,
                        reasons::HOSTNAME_RULES_REQUIRE_PROXY,
                        format!(
                            "{} ({}) can only be enforced by a proxy, but {}; NetworkPolicy {np_name} is applied and blocks them (fail closed), so these hosts are unreachable: set spec.proxy.httpsProxy to the proxy's IP address, or describe the operator's proxy with egress.proxyCidrs or egress.proxyNamespaceSelector/proxyPodSelector in the operator config",
                            plural(hosts.len(), "hostname entry", "hostname entries"),
                            list_some(&hosts),
                            plan.problems.join("; and "),
                        ),
                    )
                } else {
                    let mut allowed = vec!["DNS".to_string()];
                    allowed.extend(plan.reachable.iter().cloned());
                    if !cidrs.is_empty() {
                        allowed.push(format!(
                            "{} ({})",
                            plural(cidrs.len(), "CIDR entry", "CIDR entries"),
                            list_some(&cidrs)
                        ));
                    }
                    let mut msg =
                        format!("NetworkPolicy {np_name} allows only {}", allowed.join(", "));
                    if hosts.is_empty() {
                        msg.push_str("; no hostname entries");
                    } else {
                        msg.push_str(&format!(
                            "; {} through the proxy, which enforces ConfigMap {cm_name}",
                            plural(hosts.len(), "hostname entry goes", "hostname entries go")
                        ));
                    }
                    if plan.configured && !plan.problems.is_empty() {
                        msg.push_str(&format!(
                            "; the proxy is not reachable: {}",
                            plan.problems.join("; and ")
                        ));
                    }
                    DesiredCondition::new(types::EGRESS_POLICY_READY, true, reasons::ENFORCED, msg)
                }
            }
        },
    };
    Ok(announce(ctx, server, old, c).await)
}

#[cfg(test)]
mod tests {
    use super::policy::proxy_host_port;
    use super::*;

    #[test]
    fn proxy_urls() {
        assert_eq!(
            proxy_host_port("http://10.200.0.1:3128"),
            Some(("10.200.0.1".into(), 3128))
        );
        assert_eq!(
            proxy_host_port("https://user:pw@proxy.corp:8443/"),
            Some(("proxy.corp".into(), 8443))
        );
        assert_eq!(
            proxy_host_port("http://[fd00::1]:3128"),
            Some(("fd00::1".into(), 3128))
        );
        assert_eq!(proxy_host_port("http://proxy"), Some(("proxy".into(), 80)));
        assert_eq!(
            proxy_host_port("https://proxy"),
            Some(("proxy".into(), 443))
        );
        assert_eq!(proxy_host_port("socks5://proxy:1080"), None);
        assert_eq!(proxy_host_port("http://proxy:0"), None);
        assert_eq!(proxy_host_port("http://:3128"), None);
    }

    #[test]
    fn acl_base_names() {
        assert_eq!(
            squid_acl_base("agents", "sandbox-tools"),
            "mcptrust_agents_sandbox-tools"
        );
        assert_eq!(squid_acl_base("a", "b.c"), "mcptrust_a_b_c");
        let long = squid_acl_base(&"n".repeat(40), &"s".repeat(40));
        assert!(long.len() <= 48 && long.starts_with("mcptrust_"), "{long}");
    }
}
