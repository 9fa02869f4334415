//! Injection settings: the operator's defaults (the `--config` file, or the chart's
//! ConfigMap) and the per-pod [`Injection`] resolved from them and an optional McpServer.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::api::McpServer;

/// Where the trust ConfigMap is mounted in every container: a whole directory, never a
/// subPath, so that kubelet's atomic `..data` swap reaches running pods.
pub const DEFAULT_MOUNT_PATH: &str = "/etc/mcptrust/trust";
/// Name of the pod volume that carries the trust ConfigMap.
pub const DEFAULT_VOLUME_NAME: &str = "mcptrust-trust";
/// The namespace-default trust ConfigMap (namespaces that opt in without an McpServer).
pub const DEFAULT_TRUST_CONFIGMAP: &str = "mcptrust-trust";
/// Key of the private-CA-only file (for add-style variables such as NODE_EXTRA_CA_CERTS).
pub const CA_FILE: &str = "ca.pem";
/// Key of the combined file: system roots plus private CAs (for replace-style variables).
pub const BUNDLE_FILE: &str = "ca-bundle.pem";
/// `binaryData` key of the same certificates as a PKCS#12 truststore, for Java's
/// `-Djavax.net.ssl.trustStore` (see `crate::pki::TrustBundle::ca_bundle_p12`).
pub const TRUSTSTORE_FILE: &str = "ca-bundle.p12";
/// Password of [`TRUSTSTORE_FILE`] (`changeit`, public: the file holds certificates only).
pub const TRUSTSTORE_PASSWORD: &str = "changeit";
/// The variable that carries the truststore and proxy system properties to every JVM
/// (HotSpot reads it at start; the `java` launcher prints "Picked up JAVA_TOOL_OPTIONS").
pub const JAVA_TOOL_OPTIONS: &str = "JAVA_TOOL_OPTIONS";

/// Distro trust-store paths that the opt-in system overlay mounts the combined bundle over
/// (Debian/Ubuntu/Alpine, and RHEL/Fedora). This reaches stdio children whose parent strips
/// the environment, at the price of a subPath mount that does not follow rotation.
pub const SYSTEM_TRUST_PATHS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];

/// Which file of the trust directory a CA variable points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CaFileKind {
    /// The variable *replaces* the runtime's store: it needs roots plus private CAs.
    Bundle,
    /// The variable *adds* to the built-in store: it needs the private CAs only.
    PrivateOnly,
}

/// One CA variable and the file it points to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaVariable {
    /// The environment variable name, e.g. `SSL_CERT_FILE`.
    pub name: String,
    /// Which file it points at.
    pub file: CaFileKind,
}

/// The CA variables of `shared/RUNTIMES.md`, in the order they are injected.
///
/// Replace-style (point at `ca-bundle.pem`): SSL_CERT_FILE (OpenSSL, Python ssl, httpx, Go,
/// Ruby, .NET, uv), REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE (requests, curl), PIP_CERT (pip),
/// GIT_SSL_CAINFO (git), AWS_CA_BUNDLE (AWS SDKs) and GRPC_DEFAULT_SSL_ROOTS_FILE_PATH
/// (gRPC C-core). Add-style (point at `ca.pem`): NODE_EXTRA_CA_CERTS (Node.js, Bun, npm)
/// and DENO_CERT (Deno). SSL_CERT_DIR is deliberately never set: it would replace the OS
/// directory.
pub fn default_ca_variables() -> Vec<CaVariable> {
    use CaFileKind::*;
    [
        ("SSL_CERT_FILE", Bundle),
        ("REQUESTS_CA_BUNDLE", Bundle),
        ("CURL_CA_BUNDLE", Bundle),
        ("PIP_CERT", Bundle),
        ("GIT_SSL_CAINFO", Bundle),
        ("AWS_CA_BUNDLE", Bundle),
        ("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", Bundle),
        ("NODE_EXTRA_CA_CERTS", PrivateOnly),
        ("DENO_CERT", PrivateOnly),
    ]
    .into_iter()
    .map(|(name, file)| CaVariable {
        name: name.to_string(),
        file,
    })
    .collect()
}

/// A plain `name=value` environment variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvPair {
    /// Variable name (a C identifier).
    pub name: String,
    /// Literal value.
    pub value: String,
}

/// Proxy settings that become HTTP(S)_PROXY / NO_PROXY in both cases.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    /// `http://host:port` of the forward proxy for plain-http requests.
    pub http_proxy: Option<String>,
    /// `http://host:port` of the CONNECT proxy for https requests (the MITM proxy of seed 000).
    pub https_proxy: Option<String>,
    /// Extra NO_PROXY entries. `*.example.com` is rewritten to `.example.com` and a
    /// `host:port` entry loses its port, since most runtimes understand neither.
    pub no_proxy: Vec<String>,
    /// The cluster's Service CIDRs (e.g. `10.96.0.0/12`), listed in NO_PROXY.
    pub service_cidrs: Vec<IpNet>,
    /// The cluster's Pod CIDRs (e.g. `10.244.0.0/16`), listed in NO_PROXY.
    pub pod_cidrs: Vec<IpNet>,
    /// The API server's IPs, listed exactly, since many runtimes ignore CIDRs in NO_PROXY.
    pub api_server_ips: Vec<IpAddr>,
    /// The cluster DNS domain (default `cluster.local`).
    pub cluster_domain: Option<String>,
}

impl ProxyConfig {
    /// True when a proxy is configured (either scheme).
    pub fn enabled(&self) -> bool {
        self.http_proxy.is_some() || self.https_proxy.is_some()
    }
}

/// The operator-wide injection defaults: what `--config FILE` holds (YAML), and what the
/// chart renders into the operator's ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct InjectConfig {
    /// Mount path of the trust directory (default `/etc/mcptrust/trust`).
    pub mount_path: String,
    /// Pod volume name (default `mcptrust-trust`).
    pub volume_name: String,
    /// Trust ConfigMap for pods that no McpServer selects (default `mcptrust-trust`).
    pub trust_config_map: String,
    /// sha256 (hex) of that ConfigMap's `ca-bundle.pem`, when known; written to the
    /// `mcptrust.io/trust-bundle-sha256` annotation.
    pub trust_bundle_sha256: Option<String>,
    /// Proxy defaults.
    pub proxy: ProxyConfig,
    /// The CA variables to set (default: [`default_ca_variables`]).
    pub ca_variables: Vec<CaVariable>,
    /// Also mount `ca-bundle.pem` over the distro trust paths ([`SYSTEM_TRUST_PATHS`]).
    /// Off by default; a pod can ask for it with the `mcptrust.io/overlay-system-trust: "true"`
    /// annotation.
    pub overlay_system_trust: bool,
    /// Extra environment for every injected container (a container's own env still wins).
    pub extra_env: Vec<EnvPair>,
    /// What the namespace-default trust ConfigMap (`trustConfigMap`) holds, for namespaces
    /// that opt in without an McpServer.
    pub default_trust: DefaultTrust,
    /// How the controller's egress NetworkPolicies reach the proxy and the cluster DNS
    /// (McpServers with `spec.egress`).
    pub egress: EgressConfig,
    /// The `mcptrust-reloader` sidecar injected into pods of McpServers with
    /// `spec.rotation.strategy: Signal`.
    pub reloader: ReloaderConfig,
}

/// The `mcptrust-reloader` sidecar's settings (the config's `reloader` section). The
/// chart fills `image` and `imagePullPolicy` with its own image; without an image the
/// webhook injects no sidecar and says so on the pod ([`crate::api::reloader::ANNOTATION_RELOADER_SKIPPED`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ReloaderConfig {
    /// The mcptrust image the sidecar runs (`repository:tag` or `repository@digest`).
    pub image: Option<String>,
    /// The sidecar's `imagePullPolicy` (`Always`, `IfNotPresent`, `Never`); unset leaves
    /// the API server's default.
    pub image_pull_policy: Option<String>,
    /// The sidecar's admin port (`/livez`, `/readyz`, `/metrics`, `/status`) on the pod IP,
    /// named [`crate::api::reloader::RELOADER_PORT_NAME`] (default
    /// [`crate::api::reloader::RELOADER_ADMIN_PORT`], 9899). It must not clash with the server's ports.
    pub admin_port: u16,
    /// The sidecar's resources, as Kubernetes quantities (default requests cpu `5m`, memory
    /// `16Mi`; limits memory `64Mi`).
    pub resources: ReloaderResources,
}

impl Default for ReloaderConfig {
    fn default() -> Self {
        Self {
            image: None,
            image_pull_policy: None,
            admin_port: crate::api::reloader::RELOADER_ADMIN_PORT,
            resources: ReloaderResources::default(),
        }
    }
}

/// A container's `resources` (`requests` and `limits`, resource name to quantity, e.g.
/// `cpu: 5m`, `memory: 16Mi`); the API server validates the quantities.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReloaderResources {
    /// Requests, e.g. `{cpu: 5m, memory: 16Mi}`.
    #[serde(default)]
    pub requests: std::collections::BTreeMap<String, String>,
    /// Limits, e.g. `{memory: 64Mi}`.
    #[serde(default)]
    pub limits: std::collections::BTreeMap<String, String>,
}

impl Default for ReloaderResources {
    fn default() -> Self {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        };
        Self {
            requests: map(&[("cpu", "5m"), ("memory", "16Mi")]),
            limits: map(&[("memory", "64Mi")]),
        }
    }
}

/// The sidecar to inject for an McpServer with `spec.rotation.strategy: Signal`
/// ([`Injection::reloader`]): what `spec.rotation` says, and the operator's
/// [`ReloaderConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloaderPlan {
    /// The signal to send (`spec.rotation.signal`, default SIGHUP).
    pub signal: crate::api::ReloadSignal,
    /// The server's container (`spec.rotation.container`); `None` means the pod's only
    /// container.
    pub container: Option<String>,
    /// `spec.rotation.processName`: a regular expression on the target's command line.
    pub process_name: Option<String>,
    /// `spec.rotation.handlesSignal`: the target handles the signal (needed for Go).
    pub handles_signal: bool,
    /// The operator's sidecar settings.
    pub config: ReloaderConfig,
}

/// Pod annotation: the egress mode (`Enforce` or `Audit`) of the McpServer whose
/// `spec.egress` applies to the pod.
pub const ANNOTATION_EGRESS_MODE: &str = "mcptrust.io/egress-mode";

/// Where the egress NetworkPolicies let pods go besides their CIDR entries: the proxy and
/// the cluster DNS. A NetworkPolicy cannot name a host, so an in-cluster proxy is described
/// by selectors (or CIDRs) here; a proxy URL whose host is an IP literal outside the Service
/// CIDRs needs nothing here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct EgressConfig {
    /// The proxy's addresses (e.g. `[10.200.0.1/32]`); they take precedence over the proxy
    /// URL's host for the operator's own proxy.
    pub proxy_cidrs: Vec<IpNet>,
    /// Labels of the proxy's namespace (e.g. `{kubernetes.io/metadata.name: egress}`).
    /// Without it, a `proxyPodSelector` matches pods in every namespace.
    pub proxy_namespace_selector: Option<std::collections::BTreeMap<String, String>>,
    /// Labels of the proxy's pods (e.g. `{app: squid}`).
    pub proxy_pod_selector: Option<std::collections::BTreeMap<String, String>>,
    /// The port the proxy *pods* listen on, when it differs from the proxy URL's port (a
    /// Service mapping 3128 to 8080: NetworkPolicies see the pod port).
    pub proxy_port: Option<u16>,
    /// Labels of the cluster DNS's namespace (default `{kubernetes.io/metadata.name: kube-system}`).
    pub dns_namespace_labels: std::collections::BTreeMap<String, String>,
    /// Labels of the cluster DNS pods (default `{k8s-app: kube-dns}`, CoreDNS included).
    pub dns_pod_labels: std::collections::BTreeMap<String, String>,
    /// Extra DNS addresses, e.g. NodeLocal DNSCache's `169.254.20.10/32`.
    pub dns_cidrs: Vec<IpNet>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            proxy_cidrs: Vec::new(),
            proxy_namespace_selector: None,
            proxy_pod_selector: None,
            proxy_port: None,
            dns_namespace_labels: std::collections::BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                "kube-system".to_string(),
            )]),
            dns_pod_labels: std::collections::BTreeMap::from([(
                "k8s-app".to_string(),
                "kube-dns".to_string(),
            )]),
            dns_cidrs: Vec::new(),
        }
    }
}

/// The operator's own private CAs (e.g. the sandbox proxy's CA), for namespace-default
/// bundles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct DefaultTrust {
    /// PEM CA certificates (the chart's `trust.extraCAs`).
    pub extra_cas_pem: String,
    /// Add the Mozilla roots to `ca-bundle.pem` (default true).
    pub include_system_roots: bool,
}

impl Default for DefaultTrust {
    fn default() -> Self {
        Self {
            extra_cas_pem: String::new(),
            include_system_roots: true,
        }
    }
}

impl Default for InjectConfig {
    fn default() -> Self {
        Self {
            mount_path: DEFAULT_MOUNT_PATH.to_string(),
            volume_name: DEFAULT_VOLUME_NAME.to_string(),
            trust_config_map: DEFAULT_TRUST_CONFIGMAP.to_string(),
            trust_bundle_sha256: None,
            proxy: ProxyConfig::default(),
            ca_variables: default_ca_variables(),
            overlay_system_trust: false,
            extra_env: Vec::new(),
            default_trust: DefaultTrust::default(),
            egress: EgressConfig::default(),
            reloader: ReloaderConfig::default(),
        }
    }
}

/// The built-in default configuration, used when no `--config` is given: the trust volume
/// and the CA variables, and no proxy (an operator must not point pods, or open egress, at
/// a proxy that its cluster does not have).
pub const EMBEDDED_DEFAULT_CONFIG: &str = include_str!("default-config.yaml");

/// The seed-000 sandbox demo config, the text of `examples/sandbox-config.yaml` less its
/// comments ([`InjectConfig::sandbox_demo`]).
pub const SANDBOX_DEMO_CONFIG: &str = "\
mountPath: /etc/mcptrust/trust
volumeName: mcptrust-trust
trustConfigMap: mcptrust-trust
proxy:
  httpProxy: http://10.200.0.1:3128
  httpsProxy: http://10.200.0.1:3128
  noProxy: []
  serviceCidrs: [10.96.0.0/12]
  podCidrs: [10.244.0.0/16]
  apiServerIps: [10.96.0.1]
  clusterDomain: cluster.local
overlaySystemTrust: false
";

impl InjectConfig {
    /// Parses a YAML config file's text.
    ///
    /// # Errors
    /// A YAML syntax error or an unknown field, with the line and column.
    pub fn from_yaml(text: &str) -> Result<Self, serde_saphyr::Error> {
        serde_saphyr::from_str(text)
    }

    /// The sandbox demo of seed 000 (a re-signing CONNECT proxy at 10.200.0.1:3128 on a
    /// kubeadm-style cluster): what `examples/sandbox-config.yaml` holds (a test compares
    /// them). Tests and benchmarks use it to exercise the whole env block.
    ///
    /// # Panics
    /// Never: the text is checked by a unit test.
    #[allow(clippy::expect_used)]
    pub fn sandbox_demo() -> Self {
        Self::from_yaml(SANDBOX_DEMO_CONFIG).expect("sandbox demo config parses")
    }

    /// The embedded default configuration ([`EMBEDDED_DEFAULT_CONFIG`]).
    ///
    /// # Panics
    /// Never: the embedded file is checked by a unit test.
    #[allow(clippy::expect_used)]
    pub fn embedded_default() -> Self {
        Self::from_yaml(EMBEDDED_DEFAULT_CONFIG).expect("embedded default config parses")
    }
}

/// Everything the injector needs for one object: the operator defaults, with an optional
/// McpServer's overrides merged in by [`Injection::resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    /// Mount path of the trust directory.
    pub mount_path: String,
    /// Pod volume name.
    pub volume_name: String,
    /// Trust ConfigMap to mount.
    pub config_map: String,
    /// sha256 (hex) of the bundle, for the annotation; `None` leaves the annotation out.
    pub bundle_sha256: Option<String>,
    /// Proxy settings (after McpServer overrides).
    pub proxy: ProxyConfig,
    /// CA variables to set.
    pub ca_variables: Vec<CaVariable>,
    /// Mount the bundle over the distro trust paths.
    pub overlay_system_trust: bool,
    /// Extra env (config first, then the McpServer's `spec.env`; later names win).
    pub extra_env: Vec<EnvPair>,
    /// The McpServer that selected this pod, as `namespace/name`, for the annotation.
    pub mcp_server: Option<String>,
    /// mTLS Secrets to mount (server certificate, client certificates).
    pub tls_mounts: Vec<TlsMount>,
    /// The McpServer's egress mode (`Enforce` or `Audit`), for [`ANNOTATION_EGRESS_MODE`];
    /// `None` when no `spec.egress` applies.
    pub egress_mode: Option<String>,
    /// The `mcptrust-reloader` sidecar to inject, when the McpServer's
    /// `spec.rotation.strategy` is `Signal`.
    pub reloader: Option<ReloaderPlan>,
}

/// A `kubernetes.io/tls` Secret mounted as a directory (`tls.crt`, `tls.key`, `ca.crt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMount {
    /// Pod volume name (a DNS label, at most 63 characters), e.g. `mcptrust-server-tls`.
    pub volume_name: String,
    /// The Secret.
    pub secret_name: String,
    /// Directory in every container, e.g. `/etc/mcptrust/tls/server`.
    pub mount_path: String,
    /// SHA-256 (hex) of the certificate, for the `sha256.mcptrust.io/<volume>` annotation.
    pub sha256: Option<String>,
    /// Expiry (RFC 3339), for the `not-after.mcptrust.io/<volume>` annotation.
    pub not_after: Option<String>,
}

/// Where the server certificate is mounted in an McpServer's pods.
pub const SERVER_TLS_MOUNT_PATH: &str = "/etc/mcptrust/tls/server";
/// Parent directory of client certificates (`<dir>/<server>`) in pods annotated
/// `mcptrust.io/mtls-client-of`.
pub const CLIENT_TLS_MOUNT_DIR: &str = "/etc/mcptrust/tls/clients";

impl Injection {
    /// Merges the operator defaults with an McpServer (when one selects the pod):
    /// its shared trust ConfigMap (`mcptrust-trust-<key>`, [`crate::api::trust_config_map_name`]) and bundle hash from status, its
    /// `spec.proxy` fields over the defaults, its `spec.env` after the config's
    /// `extraEnv`, its `spec.egress.mode` for the egress-mode annotation, and, with
    /// `spec.rotation.strategy: Signal`, the reloader sidecar ([`ReloaderPlan`]).
    pub fn resolve(config: &InjectConfig, server: Option<&McpServer>) -> Self {
        let mut out = Self {
            mount_path: config.mount_path.clone(),
            volume_name: config.volume_name.clone(),
            config_map: config.trust_config_map.clone(),
            bundle_sha256: config.trust_bundle_sha256.clone(),
            proxy: config.proxy.clone(),
            ca_variables: config.ca_variables.clone(),
            overlay_system_trust: config.overlay_system_trust,
            extra_env: config.extra_env.clone(),
            mcp_server: None,
            tls_mounts: Vec::new(),
            egress_mode: None,
            reloader: None,
        };
        let Some(server) = server else { return out };
        let name = server.metadata.name.clone().unwrap_or_default();
        out.config_map = crate::api::trust_config_map_name(server);
        out.bundle_sha256 = server
            .status
            .as_ref()
            .and_then(|s| s.trust_bundle.as_ref())
            .map(|b| b.sha256.clone());
        out.mcp_server = Some(format!(
            "{}/{}",
            server.metadata.namespace.as_deref().unwrap_or_default(),
            name
        ));
        if let Some(p) = &server.spec.proxy {
            if p.http_proxy.is_some() {
                out.proxy.http_proxy = p.http_proxy.clone();
            }
            if p.https_proxy.is_some() {
                out.proxy.https_proxy = p.https_proxy.clone();
            }
            out.proxy.no_proxy.extend(p.no_proxy.iter().cloned());
        }
        out.egress_mode = server.spec.egress.as_ref().map(|e| match e.mode {
            crate::api::EgressMode::Enforce => "Enforce".to_string(),
            crate::api::EgressMode::Audit => "Audit".to_string(),
        });
        out.reloader = server
            .spec
            .rotation
            .as_ref()
            .filter(|r| r.strategy == crate::api::RotationStrategy::Signal)
            .map(|r| ReloaderPlan {
                signal: r.signal_or_default(),
                container: r.container.clone(),
                process_name: r.process_name.clone(),
                handles_signal: r.handles_signal.unwrap_or(false),
                config: config.reloader.clone(),
            });
        for e in &server.spec.env {
            out.extra_env.retain(|x| x.name != e.name);
            out.extra_env.push(EnvPair {
                name: e.name.clone(),
                value: e.value.clone(),
            });
        }
        out
    }
}
