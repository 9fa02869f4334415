//! Condition helpers, following the Kubernetes API conventions for `conditions`
//! (type, status, reason, message, lastTransitionTime, observedGeneration).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types of an McpServer.
pub mod types {
    /// The trust ConfigMap is written and current.
    pub const TRUST_BUNDLE_READY: &str = "TrustBundleReady";
    /// The serving and client certificates are issued and valid.
    pub const CERTIFICATES_READY: &str = "CertificatesReady";
    /// The endpoint answered a probe with the bundle (and client certificate).
    pub const ENDPOINT_VERIFIED: &str = "EndpointVerified";
    /// The egress policy is enforced as written.
    pub const EGRESS_POLICY_READY: &str = "EgressPolicyReady";
    /// `spec.rotation.strategy: Signal` only: the `mcptrust-reloader` sidecars of the
    /// selected pods are reachable and their last decision needs no fallback (read from
    /// each sidecar's `GET /status`). Not part of `Ready`.
    pub const ROTATION_READY: &str = "RotationReady";
    /// Summary.
    pub const READY: &str = "Ready";
    /// Every type above, in the order of their declarations.
    pub const ALL: [&str; 6] = [
        TRUST_BUNDLE_READY,
        CERTIFICATES_READY,
        ENDPOINT_VERIFIED,
        EGRESS_POLICY_READY,
        ROTATION_READY,
        READY,
    ];
}

/// A desired condition, before `lastTransitionTime` is decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// Condition type, e.g. `TrustBundleReady`.
    pub type_: String,
    /// `"True"`, `"False"` or `"Unknown"`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human message saying what to do.
    pub message: String,
}

impl DesiredCondition {
    /// A condition with status `True`/`False` from a bool.
    pub fn new(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.to_string(),
            status: if ok { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// Merges desired conditions into the existing ones: `lastTransitionTime` is kept unless
/// the status flips (API conventions), and `now` is used for new or flipped conditions.
/// Conditions of types not in `desired` are kept as they are. The output is ordered by
/// `desired`, then the untouched ones.
pub fn merge(
    existing: &[Condition],
    desired: &[DesiredCondition],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = desired
        .iter()
        .map(|d| {
            let old = existing.iter().find(|c| c.type_ == d.type_);
            let last_transition_time = match old {
                Some(o) if o.status == d.status => o.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: d.type_.clone(),
                status: d.status.clone(),
                reason: d.reason.clone(),
                message: d.message.clone(),
                last_transition_time,
                observed_generation: generation,
            }
        })
        .collect();
    out.extend(
        existing
            .iter()
            .filter(|c| !desired.iter().any(|d| d.type_ == c.type_))
            .cloned(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    #[test]
    fn keeps_transition_time_unless_status_flips() {
        let existing = vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Ok".into(),
            message: "old".into(),
            last_transition_time: t("2026-01-01T00:00:00Z"),
            observed_generation: Some(1),
        }];
        let now = t("2026-02-01T00:00:00Z");
        let same = merge(
            &existing,
            &[DesiredCondition::new("Ready", true, "Ok", "new message")],
            Some(2),
            &now,
        );
        assert_eq!(same[0].last_transition_time, t("2026-01-01T00:00:00Z"));
        assert_eq!(same[0].message, "new message");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(
            &existing,
            &[DesiredCondition::new("Ready", false, "Broken", "x")],
            Some(2),
            &now,
        );
        assert_eq!(flipped[0].last_transition_time, now);
        assert_eq!(flipped[0].status, "False");
    }

    #[test]
    fn keeps_unrelated_conditions() {
        let existing = vec![Condition {
            type_: "EndpointVerified".into(),
            status: "True".into(),
            reason: "Verified".into(),
            message: String::new(),
            last_transition_time: t("2026-01-01T00:00:00Z"),
            observed_generation: Some(1),
        }];
        let now = t("2026-02-01T00:00:00Z");
        let out = merge(
            &existing,
            &[DesiredCondition::new("Ready", true, "Ok", "")],
            Some(1),
            &now,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].type_, "EndpointVerified");
    }
}
