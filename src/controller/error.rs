//! The controller's typed errors, each with a stable reason used in conditions, events and
//! the `mcptrust_reconcile_errors_total{reason}` metric.

/// A reconcile failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed (network, RBAC, conflict...).
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// A trust source (ConfigMap or Secret key) is missing.
    #[error("{0}")]
    SourceNotFound(String),
    /// A trust source holds something that is not a usable CA certificate.
    #[error("{0}")]
    InvalidCertificate(String),
    /// The bundle would hold no certificate at all.
    #[error("{0}")]
    EmptyBundle(String),
    /// Certificate issuance failed.
    #[error("issuing a certificate: {0}")]
    Issue(String),
    /// The federation CA Secret is unusable.
    #[error("federation CA: {0}")]
    FederationCa(String),
    /// The object lacks a namespace or name (never happens for McpServers from the API).
    #[error("object without {0}")]
    MissingObjectKey(&'static str),
    /// A spec the CRD schema should have rejected.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// Serialising an object failed (a bug).
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    /// A finalizer step failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// A stable CamelCase reason (condition reasons, event reasons, metric labels).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApiError",
            Error::SourceNotFound(_) => "SourceNotFound",
            Error::InvalidCertificate(_) => "InvalidCertificate",
            Error::EmptyBundle(_) => "EmptyTrustBundle",
            Error::Issue(_) => "IssuanceFailed",
            Error::FederationCa(_) => "FederationCAInvalid",
            Error::MissingObjectKey(_) => "MissingObjectKey",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Serialization(_) => "SerializationError",
            Error::Finalizer(_) => "FinalizerError",
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
