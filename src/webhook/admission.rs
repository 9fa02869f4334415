//! AdmissionReview v1 handling, without any HTTP: bytes in, AdmissionReview out.
//!
//! The rules, in the way of Linkerd's policy controller:
//! - the answer is always a valid `admission.k8s.io/v1` `AdmissionReview` whose
//!   `response.uid` echoes `request.uid` whenever the uid can be read at all;
//! - a request that is not a readable AdmissionReview v1 (bad JSON, wrong kind or
//!   apiVersion, no request, malformed request fields, body too large) gets
//!   `allowed: false`, reason `InvalidRequest`, code 400 ([`ReviewOutcome::Invalid`]);
//! - a DELETE, or a request whose `object` is null, is allowed untouched;
//! - otherwise the [`Mutator`] decides: an empty patch is allowed without a patch, a
//!   non-empty one is returned as a `JSONPatch`; an [`InjectError`] is a denial with the
//!   error's message and reason, code 400 ([`ReviewOutcome::Error`]);
//! - the injector's skip reasons are returned as `warnings`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use base64::Engine as _;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status, TypeMeta};
use serde_json::Value;

use crate::inject::{InjectError, Mutator};

/// `apiVersion` of the reviews this webhook reads and writes.
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";
/// `kind` of the reviews this webhook reads and writes.
pub const ADMISSION_KIND: &str = "AdmissionReview";

/// What became of one AdmissionReview; the `outcome` label of
/// `mcptrust_admission_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReviewOutcome {
    /// Allowed with a non-empty JSONPatch.
    Patched,
    /// Allowed without a patch: the mutator had nothing to change (e.g. already injected).
    Unchanged,
    /// Allowed without a patch and without looking (DELETE, null object), or the mutator
    /// skipped the object and said why.
    Skipped,
    /// Refused because the request was not a readable AdmissionReview v1.
    Invalid,
    /// Refused because the mutator failed on the object (or panicked).
    Error,
}

impl ReviewOutcome {
    /// The metric label: `patched`, `unchanged`, `skipped`, `invalid` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewOutcome::Patched => "patched",
            ReviewOutcome::Unchanged => "unchanged",
            ReviewOutcome::Skipped => "skipped",
            ReviewOutcome::Invalid => "invalid",
            ReviewOutcome::Error => "error",
        }
    }
}

fn v1_types() -> TypeMeta {
    TypeMeta {
        api_version: ADMISSION_API_VERSION.to_owned(),
        kind: ADMISSION_KIND.to_owned(),
    }
}

/// An `allowed: false` review, reason `InvalidRequest`, code 400, echoing `uid` if known.
///
/// Use it when the request could not be read (for example a body over the size limit).
pub fn invalid_review(message: &str, uid: Option<&str>) -> AdmissionReview<DynamicObject> {
    let mut response = AdmissionResponse::invalid(message);
    response.result = Status::failure(message, "InvalidRequest").with_code(400);
    if let Some(uid) = uid {
        response.uid = uid.to_owned();
    }
    finish(response)
}

/// Wraps a response in a review and forces the v1 `apiVersion`/`kind` on both.
fn finish(mut response: AdmissionResponse) -> AdmissionReview<DynamicObject> {
    response.types = v1_types();
    let mut review = response.into_review();
    review.types = v1_types();
    review
}

/// Answers one AdmissionReview request body. Never panics, whatever `body` holds (a panic
/// in `mutator` is caught and answered as [`ReviewOutcome::Error`]).
///
/// The returned review always has `apiVersion: admission.k8s.io/v1`, `kind:
/// AdmissionReview` and a `response`; encode it with [`encode_review`].
pub fn review(
    body: &[u8],
    mutator: &dyn Mutator,
) -> (AdmissionReview<DynamicObject>, ReviewOutcome) {
    // The injector's view: the review whole, the object without what no Mutator reads.
    let mut root: Value = match crate::inject::view::parse_review(body) {
        Ok(value) => value,
        Err(err) => {
            let message = format!("cannot parse the AdmissionReview as JSON: {err}");
            return (invalid_review(&message, None), ReviewOutcome::Invalid);
        }
    };
    let uid = root
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .map(ToOwned::to_owned);
    let uid = uid.as_deref();
    let invalid = |message: String| (invalid_review(&message, uid), ReviewOutcome::Invalid);

    if !root.is_object() {
        return invalid("the AdmissionReview is not a JSON object".to_owned());
    }
    let kind = root.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind != ADMISSION_KIND {
        return invalid(format!(
            "expected kind {ADMISSION_KIND:?}, got {:?}",
            root.get("kind").unwrap_or(&Value::Null)
        ));
    }
    let api_version = root
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api_version != ADMISSION_API_VERSION {
        return invalid(format!(
            "expected apiVersion {ADMISSION_API_VERSION:?}, got {:?} (configure admissionReviewVersions: [v1])",
            root.get("apiVersion").unwrap_or(&Value::Null)
        ));
    }
    let mut request = match root.get_mut("request").map(Value::take) {
        Some(request @ Value::Object(_)) => request,
        Some(Value::Null) | None => {
            return invalid("the AdmissionReview has no request".to_owned());
        }
        Some(_) => return invalid("the AdmissionReview's request is not an object".to_owned()),
    };

    // Take the object out before the typed parse, which then only validates the request's
    // own fields (`oldObject` was not kept by the parse).
    let object = request
        .get_mut("object")
        .map(Value::take)
        .unwrap_or(Value::Null);
    let request: AdmissionRequest<DynamicObject> = match serde_json::from_value(request) {
        Ok(request) => request,
        Err(err) => return invalid(format!("malformed AdmissionReview request: {err}")),
    };

    let mut response = AdmissionResponse::from(&request);
    if request.operation == Operation::Delete || object.is_null() {
        return (finish(response), ReviewOutcome::Skipped);
    }

    let namespace = request.namespace.as_deref().filter(|ns| !ns.is_empty());
    let mutated = catch_unwind(AssertUnwindSafe(|| mutator.mutate(namespace, &object)));
    let outcome = match mutated {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => return (denied(response, &err), ReviewOutcome::Error),
        Err(_) => {
            tracing::error!(uid = %request.uid, "the injector panicked");
            let message = "internal error: the mcptrust injector panicked";
            response.allowed = false;
            response.result = Status::failure(message, "InternalError").with_code(500);
            return (finish(response), ReviewOutcome::Error);
        }
    };

    if !outcome.skipped.is_empty() {
        response.warnings = Some(outcome.skipped.clone());
    }
    if outcome.is_noop() {
        let verdict = if outcome.skipped.is_empty() {
            ReviewOutcome::Unchanged
        } else {
            ReviewOutcome::Skipped
        };
        return (finish(response), verdict);
    }
    match response.clone().with_patch(outcome.patch) {
        Ok(patched) => (finish(patched), ReviewOutcome::Patched),
        Err(err) => {
            let message = format!("internal error: cannot serialize the patch: {err}");
            response.allowed = false;
            response.result = Status::failure(&message, "InternalError").with_code(500);
            (finish(response), ReviewOutcome::Error)
        }
    }
}

fn denied(mut response: AdmissionResponse, err: &InjectError) -> AdmissionReview<DynamicObject> {
    response.allowed = false;
    response.result = Status::failure(&err.to_string(), err.reason()).with_code(400);
    finish(response)
}

/// The wire shape of an answer (`admission.k8s.io/v1` `AdmissionReview` with a
/// `response`), borrowed from the review so that nothing is cloned: the field names and
/// omissions of kube's `AdmissionResponse`, except `patch`, written as base64 text.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<WireResponse<'a>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    status: &'a Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
    audit_annotations: &'a std::collections::HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a Vec<String>>,
}

/// Serializes a review for the wire (JSON bytes). Unlike serde's default for kube's
/// `AdmissionResponse.patch` (`Vec<u8>`, a JSON array of numbers), `response.patch` is
/// written as a base64 string, the documented encoding of the Go `[]byte` field, with
/// `patchType: JSONPatch` (the only type kube's `with_patch` sets). The request, if any,
/// is not sent back: the API server reads only the response.
pub fn encode_review(review: &AdmissionReview<DynamicObject>) -> Vec<u8> {
    let wire = WireReview {
        api_version: &review.types.api_version,
        kind: &review.types.kind,
        response: review.response.as_ref().map(|r| {
            let patch = r
                .patch
                .as_deref()
                .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
            WireResponse {
                uid: &r.uid,
                allowed: r.allowed,
                status: &r.result,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                audit_annotations: &r.audit_annotations,
                warnings: r.warnings.as_ref(),
            }
        }),
    };
    match serde_json::to_vec(&wire) {
        Ok(bytes) => bytes,
        Err(err) => {
            // Not expected: everything in a review is plain data.
            tracing::error!(error = %err, "cannot serialize an AdmissionReview");
            let uid = review.response.as_ref().map(|r| r.uid.as_str());
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": ADMISSION_API_VERSION,
                "kind": ADMISSION_KIND,
                "response": {
                    "uid": uid.unwrap_or_default(),
                    "allowed": false,
                    "status": {"status": "Failure", "code": 500, "reason": "InternalError",
                               "message": "internal error: cannot serialize the AdmissionReview"},
                },
            }))
            .unwrap_or_else(|_| b"{}".to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::Outcome;
    use serde_json::json;

    struct Fixed(Result<Outcome, String>);

    impl Mutator for Fixed {
        fn mutate(&self, _ns: Option<&str>, _object: &Value) -> Result<Outcome, InjectError> {
            self.0.clone().map_err(InjectError::Malformed)
        }
    }

    struct Panics;

    impl Mutator for Panics {
        fn mutate(&self, _ns: Option<&str>, _object: &Value) -> Result<Outcome, InjectError> {
            panic!("boom")
        }
    }

    fn request(operation: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "agents",
                "operation": operation,
                "userInfo": {"username": "alice"},
                "object": object,
                "oldObject": null,
                "dryRun": false
            }
        }))
        .expect("serialize")
    }

    fn wire(review: &AdmissionReview<DynamicObject>) -> Value {
        serde_json::from_slice(&encode_review(review)).expect("json")
    }

    fn patch_add() -> Outcome {
        Outcome {
            patch: serde_json::from_value(json!([
                {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}
            ]))
            .expect("patch"),
            skipped: vec![],
        }
    }

    #[test]
    fn patch_is_base64_json_patch() {
        let (review, outcome) = review(
            &request("CREATE", json!({"metadata": {}})),
            &Fixed(Ok(patch_add())),
        );
        assert_eq!(outcome, ReviewOutcome::Patched);
        let v = wire(&review);
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], "u-1");
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let b64 = v["response"]["patch"].as_str().expect("base64 string");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        let patch: Value = serde_json::from_slice(&raw).expect("json");
        assert_eq!(patch[0]["op"], "add");
    }

    /// kube's own serialization, with `response.patch` turned into base64: the shape
    /// [`encode_review`] must produce without going through it.
    fn kube_serde_wire(review: &AdmissionReview<DynamicObject>) -> Value {
        let mut v = serde_json::to_value(review).expect("serialize");
        if let Some(p) = review.response.as_ref().and_then(|r| r.patch.as_ref()) {
            v["response"]["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(p));
        }
        v
    }

    #[test]
    fn wire_matches_kube_serialization() {
        let mut warned = patch_add();
        warned.skipped = vec!["container x: skipped".to_owned()];
        let cases = [
            review(
                &request("CREATE", json!({"metadata": {}})),
                &Fixed(Ok(patch_add())),
            )
            .0,
            review(
                &request("CREATE", json!({"metadata": {}})),
                &Fixed(Ok(warned)),
            )
            .0,
            review(&request("CREATE", json!({})), &Fixed(Err("bad".to_owned()))).0,
            review(&request("DELETE", json!({})), &Fixed(Ok(patch_add()))).0,
            review(b"{", &Fixed(Ok(patch_add()))).0,
            review(&request("CREATE", json!({})), &Panics).0,
        ];
        for r in &cases {
            assert_eq!(wire(r), kube_serde_wire(r));
        }
        let mut audited = cases[0].clone();
        if let Some(resp) = audited.response.as_mut() {
            resp.audit_annotations
                .insert("mcptrust.io/egress".to_owned(), "strict".to_owned());
        }
        assert_eq!(wire(&audited), kube_serde_wire(&audited));
        assert_eq!(
            wire(&audited)["response"]["auditAnnotations"]["mcptrust.io/egress"],
            "strict"
        );
    }

    #[test]
    fn garbage_is_invalid_without_uid() {
        for body in [&b"{not json"[..], b"", b"[]", b"null", b"\"x\""] {
            let (review, outcome) = review(body, &Fixed(Ok(Outcome::default())));
            assert_eq!(outcome, ReviewOutcome::Invalid);
            let v = wire(&review);
            assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(v["response"]["allowed"], false);
            assert_eq!(v["response"]["uid"], "");
            assert_eq!(v["response"]["status"]["code"], 400);
        }
    }

    #[test]
    fn uid_salvaged_from_wrong_kind_and_bad_request() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"Nope","request":{"uid":"u-9"}}"#;
        let (r, outcome) = review(body, &Fixed(Ok(Outcome::default())));
        assert_eq!(outcome, ReviewOutcome::Invalid);
        assert_eq!(wire(&r)["response"]["uid"], "u-9");

        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-8"}}"#;
        let (r, outcome) = review(body, &Fixed(Ok(Outcome::default())));
        assert_eq!(outcome, ReviewOutcome::Invalid);
        let v = wire(&r);
        assert_eq!(v["response"]["uid"], "u-8");
        assert!(
            v["response"]["status"]["message"]
                .as_str()
                .expect("message")
                .contains("malformed AdmissionReview request")
        );

        let body = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u-7"}}"#;
        let (r, _) = review(body, &Fixed(Ok(Outcome::default())));
        assert_eq!(wire(&r)["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(wire(&r)["response"]["uid"], "u-7");
    }

    #[test]
    fn missing_request_is_invalid() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        let (r, outcome) = review(body, &Fixed(Ok(Outcome::default())));
        assert_eq!(outcome, ReviewOutcome::Invalid);
        assert_eq!(wire(&r)["response"]["allowed"], false);
    }

    #[test]
    fn delete_and_null_object_are_allowed_untouched() {
        let mutator = Fixed(Ok(patch_add()));
        let (r, outcome) = review(&request("DELETE", Value::Null), &mutator);
        assert_eq!(outcome, ReviewOutcome::Skipped);
        let v = wire(&r);
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"].get("patch").is_none());
        let (r, outcome) = review(&request("UPDATE", Value::Null), &mutator);
        assert_eq!(outcome, ReviewOutcome::Skipped);
        assert!(wire(&r)["response"].get("patch").is_none());
    }

    #[test]
    fn noop_and_skips() {
        let (r, outcome) = review(
            &request("CREATE", json!({})),
            &Fixed(Ok(Outcome::default())),
        );
        assert_eq!(outcome, ReviewOutcome::Unchanged);
        let v = wire(&r);
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"].get("patchType").is_none());

        let skipped = Outcome {
            patch: json_patch::Patch(vec![]),
            skipped: vec!["opted out".to_owned()],
        };
        let (r, outcome) = review(&request("CREATE", json!({})), &Fixed(Ok(skipped)));
        assert_eq!(outcome, ReviewOutcome::Skipped);
        assert_eq!(wire(&r)["response"]["warnings"], json!(["opted out"]));
    }

    #[test]
    fn inject_error_and_panic_are_denials_with_uid() {
        let (r, outcome) = review(
            &request("CREATE", json!({"spec": 1})),
            &Fixed(Err("spec is not an object".to_owned())),
        );
        assert_eq!(outcome, ReviewOutcome::Error);
        let v = wire(&r);
        assert_eq!(v["response"]["uid"], "u-1");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["reason"], "MalformedObject");
        assert!(
            v["response"]["status"]["message"]
                .as_str()
                .expect("message")
                .contains("spec is not an object")
        );

        let (r, outcome) = review(&request("CREATE", json!({})), &Panics);
        assert_eq!(outcome, ReviewOutcome::Error);
        assert_eq!(wire(&r)["response"]["uid"], "u-1");
        assert_eq!(wire(&r)["response"]["allowed"], false);
    }
}
