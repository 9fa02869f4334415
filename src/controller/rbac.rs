//! The API calls mcptrust makes, per resource, with the reason for each: the single source
//! the Helm chart's ClusterRole is checked against (a test compares them).

/// One RBAC rule: API group, resource, verbs and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// API group (`""` for core).
    pub api_group: &'static str,
    /// Resource (plural, with `/subresource` where it applies).
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Why mcptrust needs them.
    pub why: &'static str,
}

/// Cluster-wide rules (ClusterRole).
pub const CLUSTER_RULES: &[Rule] = &[
    Rule {
        api_group: "mcptrust.io",
        resource: "mcpservers",
        verbs: &["get", "list", "watch"],
        why: "the controller reconciles McpServers and the webhook matches pods to them (reflector caches)",
    },
    Rule {
        api_group: "mcptrust.io",
        resource: "mcpservers/status",
        verbs: &["get", "patch"],
        why: "status is written by one server-side apply (field manager mcptrust-status)",
    },
    Rule {
        api_group: "",
        resource: "configmaps",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "read trust sources (get), watch them and the trust ConfigMaps mcptrust writes (metadata only), create the shared mcptrust-trust-<key> and mcptrust-trust (POST when new, cheaper for the API server than an apply of 370 kB) and update them by server-side apply (patch); delete a shared trust ConfigMap (and an earlier version's mcptrust-<name>-trust) once no McpServer uses it",
    },
    Rule {
        api_group: "",
        resource: "pods",
        verbs: &["list"],
        why: "after an McpServer moves to another trust ConfigMap: find its running pods that still mount the previous one (one namespace, only while status.trustBundle.previousConfigMaps is not empty)",
    },
    Rule {
        api_group: "",
        resource: "secrets",
        verbs: &["get", "list", "watch", "create", "patch"],
        why: "read Secret trust sources and the TLS Secrets (get); watch only label-scoped Secrets (managed-by=mcptrust, mcptrust.io/trust-source=true), metadata only; create TLS Secrets (POST when new) and renew them by server-side apply (patch); create the federation CA once",
    },
    Rule {
        api_group: "",
        resource: "namespaces",
        verbs: &["get", "list", "watch"],
        why: "namespaces labelled mcptrust.io/injection=enabled get the default bundle",
    },
    Rule {
        api_group: "apps",
        resource: "deployments",
        verbs: &["list", "patch"],
        why: "RollingRestart: find workloads whose pod template the McpServer selects, and annotate the template",
    },
    Rule {
        api_group: "apps",
        resource: "statefulsets",
        verbs: &["list", "patch"],
        why: "RollingRestart, as for deployments",
    },
    Rule {
        api_group: "apps",
        resource: "daemonsets",
        verbs: &["list", "patch"],
        why: "RollingRestart, as for deployments",
    },
    Rule {
        api_group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        why: "events on McpServers (issuance, renewal, restarts, errors); patch updates an event series",
    },
    Rule {
        api_group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: &["create", "patch", "delete"],
        why: "spec.egress Enforce: write mcptrust-<name>-egress by server-side apply (create/patch); delete it when the McpServer switches to Audit or drops spec.egress",
    },
    Rule {
        api_group: "admissionregistration.k8s.io",
        resource: "mutatingwebhookconfigurations",
        verbs: &["get", "list", "watch", "patch"],
        why: "webhook certificate (selfManaged mode): read the webhook configuration (get), watch it by name so a caBundle reset by an upgrade is repaired at once (list/watch, metadata only), and server-side apply webhooks[*].clientConfig.caBundle (patch, field manager mcptrust-webhook-cabundle)",
    },
];

/// Rules in the operator's own namespace (Role).
pub const NAMESPACE_RULES: &[Rule] = &[Rule {
    api_group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "list", "watch", "create", "patch"],
    why: "leader election (controller::leader): read and watch the Lease by name (a standby takes over as soon as it is released), create it once, apply claims and renewals",
}];
