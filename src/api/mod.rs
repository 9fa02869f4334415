//! The `McpServer` custom resource: group `mcptrust.io`, version `v1alpha1`, namespaced,
//! short name `mcps`.
//!
//! The schema carries the whole spec and status of `shared/DESIGN.md`; later stages fill in
//! the behaviour. Invalid specs are rejected by the API server through CEL rules
//! (`x-kubernetes-validations`) whose messages say what to change.

pub mod conditions;
pub mod reloader;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

/// Prefix of the shared trust ConfigMaps' names ([`trust_config_map_name`]).
pub const SHARED_TRUST_PREFIX: &str = "mcptrust-trust-";

/// The key of a trust's ingredients: 16 hex digits (64 bits) of a SHA-256 over what
/// changes a bundle's content besides the sources' own bytes: `includeSystemRoots`, each
/// source's kind, name and key in order, and the pinned certificate's fingerprint (from
/// `pinned_sha256`, the McpServer's `status.pinnedSha256`). McpServers of one namespace
/// with the same key share one trust ConfigMap. The sources' content is not part of it,
/// so a source CA's rotation updates that ConfigMap in place.
pub fn trust_key(trust: Option<&TrustSpec>, pinned_sha256: Option<&str>) -> String {
    let default = TrustSpec::default();
    let trust = trust.unwrap_or(&default);
    // A length-prefixed encoding, so that no two different lists give the same bytes.
    let mut input = Vec::with_capacity(128);
    let mut field = |bytes: &[u8]| {
        input.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        input.extend_from_slice(bytes);
    };
    field(b"mcptrust-trust-v1");
    field(&[u8::from(trust.include_system_roots)]);
    for src in &trust.sources {
        let (kind, r) = match (&src.config_map, &src.secret) {
            (Some(r), _) => ("ConfigMap", Some(r)),
            (None, Some(r)) => ("Secret", Some(r)),
            (None, None) => ("None", None),
        };
        field(kind.as_bytes());
        field(r.map_or("", |r| r.name.as_str()).as_bytes());
        field(r.map_or("", KeyRef::key_or_default).as_bytes());
    }
    field(
        pinned_sha256
            .map(str::to_ascii_lowercase)
            .unwrap_or_default()
            .as_bytes(),
    );
    // SHA-256 through ring directly: the API layer imports nothing above it (tests/layers.rs).
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &input))[..16].to_string()
}

/// Name of the trust ConfigMap McpServer `server` mounts: `mcptrust-trust-<key>` with the
/// [`trust_key`] of its `spec.trust` and `status.pinnedSha256`, shared by every McpServer
/// of its namespace with the same trust. The controller and the webhook both derive it.
pub fn trust_config_map_name(server: &McpServer) -> String {
    let pinned = server
        .status
        .as_ref()
        .and_then(|s| s.pinned_sha256.as_deref());
    format!(
        "{SHARED_TRUST_PREFIX}{}",
        trust_key(server.spec.trust.as_ref(), pinned)
    )
}

/// Name of the serving-certificate Secret the controller writes for McpServer `name`.
pub fn server_tls_secret_name(name: &str) -> String {
    format!("{name}-server-tls")
}

/// Annotation on an McpServer that asks for its certificates to be renewed now (what
/// `mcptrust renew` sets): any new value is honoured once. The controller re-issues the
/// server and client certificates, records the value on each Secret
/// ([`ANNOTATION_RENEWED_FOR`]) and emits a `Renewed` Event naming `ManuallyTriggered`.
pub const ANNOTATION_RENEW_REQUESTED: &str = "mcptrust.io/renew-requested";

/// Annotation on a certificate Secret: the [`ANNOTATION_RENEW_REQUESTED`] value it was
/// issued for, so that one request renews once.
pub const ANNOTATION_RENEWED_FOR: &str = "mcptrust.io/renewed-for";

/// The CEL rule that checks one egress entry: `host:port`, `*.domain:port` or `CIDR:port`,
/// lowercase DNS labels only, port 1 to 65535. Shared by the CRD and its tests.
pub const EGRESS_ENTRY_RULE: &str = concat!(
    "self.all(e, ",
    "(e.matches('^(\\\\*\\\\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\\\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?:[0-9]{1,5}$') ",
    "|| (e.matches('^[0-9a-fA-F.:]+/[0-9]{1,3}:[0-9]{1,5}$') && isCIDR(e.substring(0, e.lastIndexOf(':'))))) ",
    "&& int(e.substring(e.lastIndexOf(':') + 1)) >= 1 && int(e.substring(e.lastIndexOf(':') + 1)) <= 65535)"
);

/// Spec of an MCP server whose TLS mcptrust manages.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "mcptrust.io",
    version = "v1alpha1",
    kind = "McpServer",
    plural = "mcpservers",
    shortname = "mcps",
    namespaced,
    status = "McpServerStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Transport","type":"string","jsonPath":".spec.transport"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint.url","priority":1}"#,
    // `string`, not `date`: kubectl renders a `date` column as an age, and a future time
    // as `<invalid>`; the notAfter timestamp itself is what a reader wants here.
    printcolumn = r#"{"name":"Cert-Expiry","type":"string","jsonPath":".status.serverCertificate.notAfter"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 48").message("metadata.name must be at most 48 characters, so that the derived names (<name>-server-tls, mcptrust-<name>-egress) stay valid")
)]
#[x_kube(validation = Rule::new("self.transport == 'stdio' || has(self.endpoint)").message("spec.endpoint.url is required when spec.transport is streamable-http or sse: set it to the URL clients use, e.g. https://github-mcp.agents.svc:8443/mcp/"))]
#[x_kube(validation = Rule::new("!(has(self.mtls) || (has(self.trust) && has(self.trust.pinServerCertificate) && self.trust.pinServerCertificate)) || (has(self.endpoint) && self.endpoint.url.startsWith('https://'))").message("spec.endpoint.url must be an https:// URL when spec.mtls or spec.trust.pinServerCertificate is set: TLS settings cannot apply to a plain-http or missing endpoint"))]
#[x_kube(validation = Rule::new("!(has(self.rotation) && has(self.rotation.strategy) && self.rotation.strategy == 'Signal') || (has(self.podSelector) && self.transport != 'stdio')").message("spec.rotation.strategy: Signal needs spec.podSelector (the server's pods, where the reloader sidecar is injected) and an http transport: a stdio server has no listener to reload"))]
#[serde(rename_all = "camelCase")]
pub struct McpServerSpec {
    /// How clients talk to the server: `stdio` (a child process in a sandbox pod),
    /// `streamable-http` (MCP 2025-03-26 and later) or `sse` (the older HTTP+SSE transport).
    #[serde(default)]
    pub transport: Transport,

    /// Where clients reach the server (http transports only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,

    /// The pods that run this server (server side): they get the trust bundle, the env
    /// block and, with mTLS, the serving certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,

    /// What the server's pods (and its clients) trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustSpec>,

    /// Proxy settings for the server's pods; each field overrides the chart's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySpec>,

    /// Mutual TLS for gateway federation: a serving certificate and client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsSpec>,

    /// Extra environment for the server's pods. A container's own env always wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,

    /// What happens to running pods when the bundle or a certificate changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationSpec>,

    /// Outbound policy for the server's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressSpec>,
}

/// MCP transport.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Transport {
    /// A child process speaking JSON-RPC over stdin/stdout.
    #[serde(rename = "stdio")]
    Stdio,
    /// The streamable HTTP transport (one endpoint, POST plus optional SSE).
    #[default]
    #[serde(rename = "streamable-http")]
    StreamableHttp,
    /// The HTTP+SSE transport of protocol version 2024-11-05.
    #[serde(rename = "sse")]
    Sse,
}

/// Where clients reach the server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The URL clients use, in-cluster or remote, e.g. `https://github-mcp.agents.svc:8443/mcp/`.
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("spec.endpoint.url must start with https:// or http://"))]
    #[x_kube(validation = Rule::new("isURL(self)").message("spec.endpoint.url is not a valid URL"))]
    #[schemars(length(min = 8, max = 2048))]
    pub url: String,
}

/// A key of a ConfigMap or Secret in the McpServer's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Object name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding PEM certificates (default `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

impl KeyRef {
    /// The key, or the default `ca.crt`.
    pub fn key_or_default(&self) -> &str {
        self.key.as_deref().unwrap_or("ca.crt")
    }
}

/// A source of private CA certificates: exactly one of `configMap` or `secret`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMap) != has(self.secret)").message("each spec.trust.sources entry needs exactly one of configMap or secret"))]
pub struct TrustSource {
    /// A ConfigMap key (the usual home of CA certificates, as trust-manager uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<KeyRef>,
    /// A Secret key (e.g. the `ca.crt` of a cert-manager Certificate's Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<KeyRef>,
}

/// What the bundle holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustSpec {
    /// Add the Mozilla root program (from the `webpki-root-certs` crate) to `ca-bundle.pem`.
    /// Default true; turn it off for private-only trust.
    #[serde(default = "default_true")]
    pub include_system_roots: bool,
    /// Private CAs, read from ConfigMap or Secret keys in this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub sources: Vec<TrustSource>,
    /// Capture the endpoint's certificate, check that it really is self-signed (issuer ==
    /// subject and its own key verifies the signature), and trust exactly it (seed 003).
    #[serde(default)]
    pub pin_server_certificate: bool,
    /// The expected SHA-256 fingerprint (64 hex digits) of the pinned certificate; set it to
    /// re-pin after a deliberate change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{64}$')").message("spec.trust.pinnedSha256 must be 64 hex digits (the SHA-256 of the certificate's DER), e.g. from `mcptrust probe`"))]
    #[schemars(length(max = 64))]
    pub pinned_sha256: Option<String>,
}

impl Default for TrustSpec {
    fn default() -> Self {
        Self {
            include_system_roots: true,
            sources: Vec::new(),
            pin_server_certificate: false,
            pinned_sha256: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Proxy overrides.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    /// Proxy for plain-http requests, e.g. `http://10.200.0.1:3128`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("spec.proxy.httpProxy must be a URL such as http://10.200.0.1:3128"))]
    #[schemars(length(max = 2048))]
    pub http_proxy: Option<String>,
    /// Proxy for https requests (CONNECT), e.g. `http://10.200.0.1:3128`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("spec.proxy.httpsProxy must be a URL such as http://10.200.0.1:3128"))]
    #[schemars(length(max = 2048))]
    pub https_proxy: Option<String>,
    /// Extra NO_PROXY entries: exact names, leading-dot suffixes (`.svc`), IPs or CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(e, e.matches('^[A-Za-z0-9.:/_-]+$') && !e.startsWith('*'))").message("spec.proxy.noProxy entries are names, .suffixes, IPs or CIDRs without spaces; write .example.com instead of *.example.com, which Python and Node do not match"))]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub no_proxy: Vec<String>,
}

/// Mutual TLS for gateway federation (seed 001).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.renewBefore) || duration(self.renewBefore) < duration(has(self.duration) ? self.duration : '2160h')").message("spec.mtls.renewBefore must be shorter than spec.mtls.duration (default 2160h); cert-manager's default is a third of the duration, e.g. duration: 2160h, renewBefore: 720h"))]
#[x_kube(validation = Rule::new("!has(self.duration) || duration(self.duration) >= duration('1h')").message("spec.mtls.duration must be at least 1h"))]
pub struct MtlsSpec {
    /// The serving certificate for the server's pods (`<name>-server-tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerCertSpec>,
    /// Identities allowed to call the server; each gets a client certificate Secret in its
    /// namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub clients: Vec<ClientRef>,
    /// Certificate lifetime as a Go duration (default `2160h`, 90 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"),
        length(max = 32)
    )]
    pub duration: Option<String>,
    /// How long before `notAfter` to renew, as a Go duration (default a third of duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"),
        length(max = 32)
    )]
    pub renew_before: Option<String>,
}

/// SANs of the serving certificate, besides the service names derived from the endpoint URL.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerCertSpec {
    /// DNS SANs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^(\\\\*\\\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))").message("spec.mtls.server.dnsNames entries must be lowercase DNS names such as github-mcp.agents.svc; put IP addresses in ipAddresses"))]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub dns_names: Vec<String>,
    /// IP SANs (e.g. `127.0.0.1` when clients dial an IP: the CN=localhost lesson of seed 001).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(ip, isIP(ip))").message("spec.mtls.server.ipAddresses entries must be IP addresses such as 127.0.0.1 or ::1"))]
    #[schemars(length(max = 16), inner(length(min = 2, max = 45)))]
    pub ip_addresses: Vec<String>,
}

/// A client identity of the server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientRef {
    /// Client name: the certificate's CN and the Secret's prefix.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Namespace where the client Secret is written (default: the McpServer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: Option<String>,
}

/// One extra environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name: a C identifier.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("spec.env names must be C identifiers (letters, digits and _, not starting with a digit), e.g. MY_TOKEN_URL"))]
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Literal value.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// The CEL rule on [`RotationSpec`]: the `Signal` settings only with `strategy: Signal`.
/// Shared by the CRD and its tests.
pub const ROTATION_SIGNAL_FIELDS_RULE: &str = "(has(self.strategy) && self.strategy == 'Signal') || !(has(self.signal) || has(self.container) || has(self.processName) || has(self.handlesSignal) || has(self.fallback))";

/// Rotation policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new(ROTATION_SIGNAL_FIELDS_RULE).message("spec.rotation.signal, container, processName, handlesSignal and fallback apply only to strategy Signal: set spec.rotation.strategy: Signal, or remove them"))]
#[serde(rename_all = "camelCase")]
pub struct RotationSpec {
    /// `RollingRestart` (default) rolls the selected workloads when a hash changes, since
    /// Node reads NODE_EXTRA_CA_CERTS once at start; `None` relies on the mounted files
    /// refreshing in place; `Signal` has a sidecar (`mcptrust-reloader`) send the server
    /// process a signal once the new files are in place, so that it reloads without
    /// restarting or dropping connections.
    #[serde(default)]
    pub strategy: RotationStrategy,
    /// The signal that makes the server reload its certificate (`Signal` only; default
    /// `SIGHUP`, nginx's reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<ReloadSignal>,
    /// The server's container in its pods (`Signal` only); required when the pods have
    /// several containers, which the webhook checks and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub container: Option<String>,
    /// A regular expression on the target process's command line (`/proc/<pid>/cmdline`,
    /// arguments joined by spaces), to choose among the container's processes (`Signal`
    /// only); the topmost match is signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub process_name: Option<String>,
    /// The server handles `signal` by reloading (`Signal` only). Required for Go programs:
    /// Go's runtime catches every signal, so `/proc/<pid>/status` cannot tell whether the
    /// program called `signal.Notify`, and one that did not exits on SIGHUP. Without it, a
    /// Go target is not signalled (`SignalHandlingUnknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handles_signal: Option<bool>,
    /// What to do when the signal cannot be sent safely or did not work (`Signal` only):
    /// `None` (default) reports it; `RollingRestart` also rolls the selected workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<RotationFallback>,
}

impl RotationSpec {
    /// The signal to send (`SIGHUP` unless set).
    pub fn signal_or_default(&self) -> ReloadSignal {
        self.signal.unwrap_or_default()
    }

    /// The fallback (`None` unless set).
    pub fn fallback_or_default(&self) -> RotationFallback {
        self.fallback.unwrap_or_default()
    }
}

/// Rotation strategy.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum RotationStrategy {
    /// Annotate selected workloads' pod templates so that they roll.
    #[default]
    RollingRestart,
    /// Do nothing; files in the mounted volume refresh in place.
    None,
    /// A sidecar signals the server process once the mounted files changed.
    Signal,
}

/// The signals a server may reload on; all three terminate a process that does not
/// handle them, which is why the reloader checks first.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
pub enum ReloadSignal {
    /// Signal 1: nginx's reload.
    #[default]
    #[serde(rename = "SIGHUP")]
    Sighup,
    /// Signal 10.
    #[serde(rename = "SIGUSR1")]
    Sigusr1,
    /// Signal 12.
    #[serde(rename = "SIGUSR2")]
    Sigusr2,
}

impl ReloadSignal {
    /// The signal number on Linux (x86-64 and arm64): 1, 10 or 12.
    pub fn number(self) -> u8 {
        match self {
            Self::Sighup => 1,
            Self::Sigusr1 => 10,
            Self::Sigusr2 => 12,
        }
    }

    /// The name as written in the spec, e.g. `SIGHUP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sighup => "SIGHUP",
            Self::Sigusr1 => "SIGUSR1",
            Self::Sigusr2 => "SIGUSR2",
        }
    }

    /// Parses `SIGHUP`, `SIGUSR1` or `SIGUSR2` (also without the `SIG` prefix, any case).
    pub fn parse(s: &str) -> Option<Self> {
        let u = s.trim().to_ascii_uppercase();
        match u.strip_prefix("SIG").unwrap_or(&u) {
            "HUP" => Some(Self::Sighup),
            "USR1" => Some(Self::Sigusr1),
            "USR2" => Some(Self::Sigusr2),
            _ => None,
        }
    }
}

/// What `Signal` falls back to.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum RotationFallback {
    /// Report only (condition, Event, metric).
    #[default]
    None,
    /// Also roll the selected workloads, as `strategy: RollingRestart` would.
    RollingRestart,
}

/// Egress policy for sandboxed servers (seed 004).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressSpec {
    /// `Enforce` writes a NetworkPolicy; `Audit` only writes the allow-list.
    #[serde(default)]
    pub mode: EgressMode,
    /// Allowed destinations: `host:port`, `*.domain:port` or `CIDR:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new(EGRESS_ENTRY_RULE).message("spec.egress.allow entries must be host:port, *.domain:port or CIDR:port with a port from 1 to 65535, lowercase, with no spaces, quotes or other characters, e.g. api.github.com:443 or 10.20.0.0/16:5432"))]
    #[schemars(length(max = 128), inner(length(min = 3, max = 260)))]
    pub allow: Vec<String>,
}

/// Egress mode.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum EgressMode {
    /// Fail closed: only DNS, the proxy and the allowed CIDRs are reachable.
    #[default]
    Enforce,
    /// Report only.
    Audit,
}

/// Observed state, written by the controller in one server-side apply.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpServerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `TrustBundleReady`, `CertificatesReady`, `EndpointVerified`, `EgressPolicyReady`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The trust ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_bundle: Option<TrustBundleStatus>,
    /// The serving certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<CertificateStatus>,
    /// The client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_certificates: Vec<ClientCertificateStatus>,
    /// The last endpoint probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointStatus>,
    /// SHA-256 (hex) of the pinned self-signed server certificate. Clear it to re-pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_sha256: Option<String>,
    /// The pinned self-signed server certificate (PEM), added to the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_certificate: Option<String>,
}

/// The trust ConfigMap's identity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustBundleStatus {
    /// ConfigMap name (`mcptrust-trust-<key>`, shared by the McpServers of the namespace
    /// with the same trust ingredients: see [`trust_config_map_name`]).
    pub config_map_name: String,
    /// Trust ConfigMaps this McpServer used before (its trust changed, or an earlier
    /// version wrote `mcptrust-<name>-trust`) that running pods of it (annotated
    /// `mcptrust.io/mcpserver: <namespace>/<name>`) still mount. Each is kept until no such
    /// pod mounts it, then dropped from this list (and deleted once nothing else uses it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_config_maps: Vec<String>,
    /// SHA-256 (hex) of `ca-bundle.pem`.
    pub sha256: String,
    /// Number of certificates in `ca-bundle.pem`. Declared `int64` in the schema: the API
    /// server knows the OpenAPI formats `int32` and `int64` only, and warns on every apply of
    /// an object of a CRD that declares another (such as schemars' `uint32`).
    #[schemars(with = "i64", range(min = 0))]
    pub certificates: u32,
}

/// An issued certificate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// The `kubernetes.io/tls` Secret.
    pub secret_name: String,
    /// Expiry (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// When the controller renews it (`notAfter - renewBefore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// SHA-256 (hex) of the certificate's DER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Serial number, lowercase hex without separators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// When the Secret came to hold this certificate (this `sha256`), as the controller saw
    /// it: the time it issued or renewed it, or first found it there. Server certificates
    /// only; the endpoint probe allows the server `--stale-certificate-grace-seconds` from
    /// here to load it before it reports `ServingStaleCertificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<Time>,
}

/// An issued client certificate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateStatus {
    /// Client name (the certificate's CN).
    pub name: String,
    /// Namespace of the Secret.
    pub namespace: String,
    /// The certificate.
    #[serde(flatten)]
    pub certificate: CertificateStatus,
}

/// The last endpoint probe.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// When it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// Negotiated version, e.g. `TLSv1.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// The server's leaf certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerCertificate>,
    /// The MCP `initialize` result's `serverInfo` (`name version`) and protocol version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_info: Option<String>,
    /// The negotiated MCP protocol version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
}

/// A peer certificate as seen by the probe.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerCertificate {
    /// Subject DN (RFC 4514).
    pub subject: String,
    /// Issuer DN (RFC 4514).
    pub issuer: String,
    /// Expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// Issuer equals subject and its own key verifies its signature.
    #[serde(default)]
    pub self_signed: bool,
    /// SHA-256 (hex) of the DER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Serial number, lowercase hex without separators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// The CRD as YAML, exactly what `mcptrust crd` prints and `crds/` holds.
///
/// # Errors
/// Only if serialization fails, which would be a bug.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser_error::Error> {
    let crd = McpServer::crd();
    let mut out = String::from(
        "# Generated by `mcptrust crd`; do not edit (a test compares it with the code).\n",
    );
    out.push_str(&serde_saphyr::to_string(&crd)?);
    Ok(out)
}

/// True when `labels` satisfy `selector` (matchLabels and matchExpressions with the
/// operators In, NotIn, Exists and DoesNotExist, as the API server evaluates them).
/// An empty selector matches everything; an unknown operator matches nothing.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}
