//! What the controller exports for one McpServer, as a pure function of the status the
//! reconcile just wrote (and of the bundle it built): [`ServerSnapshot::from_status`].

use crate::api::McpServerStatus;
use crate::api::conditions::types;
use crate::pki::TrustBundle;

/// The three values of a condition's `status`, in cert-manager's order.
pub const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

/// One issued certificate, as exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSeries {
    /// `server` or `client`.
    pub role: &'static str,
    /// Name of the `kubernetes.io/tls` Secret.
    pub secret: String,
    /// Namespace of the Secret (the McpServer's for the server certificate).
    pub secret_namespace: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Renewal time (`notAfter - renewBefore`), Unix seconds.
    pub renewal: i64,
}

/// The last endpoint probe, as exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSeries {
    /// The `EndpointVerified` reason: `Verified`, `Pinned`, a warning (`ExpiringSoon`,
    /// `AuthenticationRequired`) or a failure ([`crate::probe::Reason`]).
    pub reason: String,
    /// When it ran, Unix seconds (`status.endpoint.lastProbeTime`).
    pub timestamp: Option<i64>,
    /// The notAfter of the certificate the endpoint presented, Unix seconds.
    pub peer_not_after: Option<i64>,
}

/// Everything exported about one McpServer, computed from what the reconcile already has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSnapshot {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The server certificate, then the client certificates.
    pub certificates: Vec<CertificateSeries>,
    /// `(type, status)` of each condition.
    pub conditions: Vec<(String, String)>,
    /// `status.trustBundle.certificates`.
    pub bundle_certificates: Option<u32>,
    /// The earliest notAfter in `ca.pem` (private CAs and pinned certificates):
    /// `None` when this reconcile did not build the bundle (the exported value is kept,
    /// as the ConfigMap keeps the last good bundle); `Some(None)` when it holds none.
    pub private_ca_not_after: Option<Option<i64>>,
    /// The last probe (`None`: the endpoint is not probed).
    pub probe: Option<ProbeSeries>,
}

impl ServerSnapshot {
    /// The snapshot of `status` (what the reconcile just wrote), with `bundle` the bundle it
    /// built this time, if any.
    pub fn from_status(
        namespace: &str,
        name: &str,
        status: &McpServerStatus,
        bundle: Option<&TrustBundle>,
    ) -> Self {
        let secs = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.as_ref().map(|t| t.0.as_second())
        };
        let mut certificates = Vec::new();
        if let Some(c) = &status.server_certificate
            && let (Some(not_after), Some(renewal)) = (secs(&c.not_after), secs(&c.renewal_time))
        {
            certificates.push(CertificateSeries {
                role: "server",
                secret: c.secret_name.clone(),
                secret_namespace: namespace.to_string(),
                not_after,
                renewal,
            });
        }
        for c in &status.client_certificates {
            let cert = &c.certificate;
            if let (Some(not_after), Some(renewal)) =
                (secs(&cert.not_after), secs(&cert.renewal_time))
            {
                certificates.push(CertificateSeries {
                    role: "client",
                    secret: cert.secret_name.clone(),
                    secret_namespace: c.namespace.clone(),
                    not_after,
                    renewal,
                });
            }
        }
        let probe = status
            .conditions
            .iter()
            .find(|c| c.type_ == types::ENDPOINT_VERIFIED)
            .map(|c| ProbeSeries {
                reason: c.reason.clone(),
                timestamp: status
                    .endpoint
                    .as_ref()
                    .and_then(|e| secs(&e.last_probe_time)),
                peer_not_after: status
                    .endpoint
                    .as_ref()
                    .and_then(|e| e.peer.as_ref())
                    .and_then(|p| secs(&p.not_after)),
            });
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            certificates,
            conditions: status
                .conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect(),
            bundle_certificates: status.trust_bundle.as_ref().map(|b| b.certificates),
            private_ca_not_after: bundle.map(|b| b.cas.iter().map(|c| c.not_after).min()),
            probe,
        }
    }
}
