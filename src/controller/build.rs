//! Pure builders of desired state: the trust ConfigMap, the TLS Secrets, the status and the
//! rotation patch. No API calls here; the reconciler applies what these return.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::api::McpServer;
use crate::inject::{ANNOTATION_BUNDLE_SHA256, BUNDLE_FILE, CA_FILE, TRUSTSTORE_FILE};
use crate::pki::TrustBundle;
use crate::pki::issue::IssuedCertificate;

/// Label on everything mcptrust writes (`app.kubernetes.io/managed-by: mcptrust`); the
/// controller's and the webhook's watches of ConfigMaps and Secrets select on it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "mcptrust";
/// Label: the McpServer's name.
pub const LABEL_MCPSERVER: &str = "mcptrust.io/mcpserver";
/// Label: the McpServer's namespace (client Secrets live in other namespaces).
pub const LABEL_MCPSERVER_NAMESPACE: &str = "mcptrust.io/mcpserver-namespace";
/// Label: `trust`, `server` or `client`.
pub const LABEL_COMPONENT: &str = "mcptrust.io/component";
/// Label: the client name, on client Secrets.
pub const LABEL_CLIENT: &str = "mcptrust.io/client";
/// Secret annotation: SHA-256 (hex) of `tls.crt`'s leaf DER (read by the webhook from its
/// metadata-only cache).
pub const ANNOTATION_CERT_SHA256: &str = "mcptrust.io/certificate-sha256";
/// Secret annotation: `notAfter` of `tls.crt` (RFC 3339).
pub const ANNOTATION_CERT_NOT_AFTER: &str = "mcptrust.io/certificate-not-after";
/// Trust ConfigMap annotation: SHA-256 (hex) of the `ca-bundle.p12` truststore in its
/// `binaryData` (the PEM bundle's hash is [`ANNOTATION_BUNDLE_SHA256`]).
pub const ANNOTATION_TRUSTSTORE_SHA256: &str = "mcptrust.io/truststore-sha256";
/// Pod-template annotation written by the RollingRestart strategy: a hash of the bundle and
/// certificates; a change rolls the workload, as `kubectl rollout restart` does.
pub const ANNOTATION_ROTATION_HASH: &str = "mcptrust.io/rotation-hash";

/// Name of the client Secret for `client` of McpServer `server` in namespace `server_ns`.
/// It includes the server's namespace, since client Secrets of servers in different
/// namespaces can share the client's namespace.
pub fn client_tls_secret_name(server: &str, server_ns: &str, client: &str) -> String {
    format!("{server}-{server_ns}-{client}-client-tls")
}

/// Labels of an object written for McpServer `name` in `namespace`.
pub fn labels(name: &str, namespace: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_MCPSERVER.to_string(), name.to_string()),
        (LABEL_MCPSERVER_NAMESPACE.to_string(), namespace.to_string()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
    ])
}

/// The controller owner reference to `server` (same-namespace children only: the API
/// server rejects cross-namespace owners).
pub fn owner(server: &McpServer) -> Option<OwnerReference> {
    server.controller_owner_ref(&())
}

/// Label on the shared trust ConfigMaps: the [`crate::api::trust_key`] of the trust
/// ingredients they hold. The controller's sweep deletes a ConfigMap with this label once
/// no McpServer of its namespace uses it.
pub const LABEL_TRUST_KEY: &str = "mcptrust.io/trust-key";

/// Labels of the shared trust ConfigMap with trust key `key`. It names no McpServer: any
/// number of them share it.
pub fn shared_trust_labels(key: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_COMPONENT.to_string(), "trust".to_string()),
        (LABEL_TRUST_KEY.to_string(), key.to_string()),
    ])
}

/// The shared trust ConfigMap `ns/name` (`mcptrust-trust-<key>`, see
/// [`crate::api::trust_config_map_name`]): `ca.pem` (private CAs) and `ca-bundle.pem`
/// (roots plus private CAs) in `data`, `ca-bundle.p12` (the same certificates as a Java
/// PKCS#12 truststore) in `binaryData`, the two files' sha256 as annotations
/// ([`ANNOTATION_BUNDLE_SHA256`], [`ANNOTATION_TRUSTSTORE_SHA256`]), the
/// [`shared_trust_labels`]. No owner reference: the controller's sweep deletes it with
/// its last user.
pub fn trust_config_map(ns: &str, name: &str, bundle: &TrustBundle) -> ConfigMap {
    let key = name
        .strip_prefix(crate::api::SHARED_TRUST_PREFIX)
        .unwrap_or(name);
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels: Some(shared_trust_labels(key)),
            annotations: Some(bundle_annotations(bundle)),
            ..Default::default()
        },
        data: Some(bundle_data(bundle)),
        binary_data: Some(bundle_binary_data(bundle)),
        ..Default::default()
    }
}

/// Labels of the namespace-default trust ConfigMap.
pub fn default_trust_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_COMPONENT.to_string(), "trust".to_string()),
    ])
}

/// The namespace-default trust ConfigMap (`mcptrust-trust`) for a namespace that opted in
/// without an McpServer, with the same keys and annotations as [`trust_config_map`].
pub fn default_trust_config_map(namespace: &str, name: &str, bundle: &TrustBundle) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(default_trust_labels()),
            annotations: Some(bundle_annotations(bundle)),
            ..Default::default()
        },
        data: Some(bundle_data(bundle)),
        binary_data: Some(bundle_binary_data(bundle)),
        ..Default::default()
    }
}

fn bundle_annotations(bundle: &TrustBundle) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ANNOTATION_BUNDLE_SHA256.to_string(), bundle.sha256.clone()),
        (
            ANNOTATION_TRUSTSTORE_SHA256.to_string(),
            bundle.p12_sha256.clone(),
        ),
    ])
}

fn bundle_binary_data(bundle: &TrustBundle) -> BTreeMap<String, k8s_openapi::ByteString> {
    BTreeMap::from([(
        TRUSTSTORE_FILE.to_string(),
        k8s_openapi::ByteString(bundle.ca_bundle_p12.to_vec()),
    )])
}

fn bundle_data(bundle: &TrustBundle) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CA_FILE.to_string(), bundle.ca_pem.clone()),
        (BUNDLE_FILE.to_string(), bundle.ca_bundle_pem.clone()),
    ])
}

/// A `kubernetes.io/tls` Secret with `tls.crt`, `tls.key` and `ca.crt`, written in one
/// apply so that a key and its certificate always change together.
pub fn tls_secret(
    name: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
    owner: Option<OwnerReference>,
    issued: &IssuedCertificate,
) -> Secret {
    let data = crate::pki::issue::secret_data(issued);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([
                (ANNOTATION_CERT_SHA256.to_string(), issued.sha256.clone()),
                (
                    ANNOTATION_CERT_NOT_AFTER.to_string(),
                    rfc3339(issued.not_after),
                ),
            ])),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Default::default()
    }
}

/// Unix seconds as RFC 3339 (UTC, second precision); out-of-range values clamp to the epoch.
pub fn rfc3339(unix: i64) -> String {
    jiff_ts(unix).to_string()
}

/// Unix seconds as a `metav1.Time`.
pub fn time(unix: i64) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff_ts(unix))
}

fn jiff_ts(unix: i64) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// The rotation hash of an McpServer's current material: sha256 over the trust ConfigMap's
/// name, the bundle hash and the server certificate hash (16 hex digits). The name is part
/// of it because pods mount the ConfigMap by name: an McpServer that moves to another
/// ConfigMap (its trust changed; or the move from the per-server ConfigMaps of earlier
/// versions) rolls its workloads, so that they mount the new one.
pub fn rotation_hash(
    config_map: &str,
    bundle_sha256: &str,
    server_cert_sha256: Option<&str>,
) -> String {
    let mut input = format!("{config_map}:{bundle_sha256}");
    if let Some(s) = server_cert_sha256 {
        input.push(':');
        input.push_str(s);
    }
    crate::pki::sha256_hex(input.as_bytes())[..16].to_string()
}

/// The server-side-apply body that sets [`ANNOTATION_ROTATION_HASH`] on a workload's pod
/// template (`apps/v1` Deployment, StatefulSet or DaemonSet).
pub fn rotation_patch(kind: &str, name: &str, hash: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"template": {"metadata": {"annotations": {ANNOTATION_ROTATION_HASH: hash}}}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hashes() {
        assert_eq!(
            client_tls_secret_name("github", "agents", "mcpgateway"),
            "github-agents-mcpgateway-client-tls"
        );
        let a = rotation_hash("cm", "aa", Some("bb"));
        assert_eq!(a.len(), 16);
        assert_ne!(a, rotation_hash("cm", "aa", Some("cc")));
        assert_ne!(a, rotation_hash("cm", "aa", None));
        assert_ne!(a, rotation_hash("other", "aa", Some("bb")));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn rotation_patch_shape() {
        let p = rotation_patch("Deployment", "web", "abc");
        assert_eq!(
            p["spec"]["template"]["metadata"]["annotations"][ANNOTATION_ROTATION_HASH],
            "abc"
        );
        assert_eq!(p["apiVersion"], "apps/v1");
    }
}
