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

use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status, TypeMeta};
use serde_json::Value;

use crate::inject::{InjectError, Mutator, Patch};

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

/// One answer to an AdmissionReview, ready for [`encode_review`]: the review, and the
/// JSONPatch that goes into its `response.patch` (base64) with `patchType: JSONPatch`.
///
/// The patch is kept typed ([`Patch`]) so that the encoder writes it straight into the
/// answer's base64, without the JSON text kube's `AdmissionResponse::with_patch` would
/// build first. [`Answer::to_kube_review`] gives kube's form (the patch as JSON bytes in
/// `response.patch`).
#[derive(Clone, Debug)]
pub struct Answer {
    /// The review, with `request: None` and a `response`. Its `response.patch` is `None`
    /// when [`Answer::patch`] is set (an answer built from a kube review may carry one).
    pub review: AdmissionReview<DynamicObject>,
    /// The JSONPatch of an allowed, patched request; `None` otherwise.
    pub patch: Option<Patch>,
}

impl Answer {
    /// The review's response (every answer [`review`] gives has one).
    pub fn response(&self) -> Option<&AdmissionResponse> {
        self.review.response.as_ref()
    }

    /// The answer as kube's `AdmissionReview`: the patch serialized into `response.patch`
    /// (JSON bytes) with `patch_type: JSONPatch`, by `AdmissionResponse::with_patch` of
    /// [`Patch::to_json_patch`]. Allocates the patch's `Value`s and JSON; the webhook does
    /// not use it.
    ///
    /// # Errors
    /// kube's error if the patch cannot be serialized (not expected: plain data).
    pub fn to_kube_review(
        &self,
    ) -> Result<AdmissionReview<DynamicObject>, kube::core::admission::SerializePatchError> {
        let mut review = self.review.clone();
        if let Some(patch) = &self.patch
            && let Some(response) = review.response.take()
        {
            review.response = Some(response.with_patch(patch.to_json_patch())?);
        }
        Ok(review)
    }
}

impl From<AdmissionReview<DynamicObject>> for Answer {
    /// An answer without a typed patch; a patch already in `response.patch` (JSON bytes)
    /// is still sent.
    fn from(review: AdmissionReview<DynamicObject>) -> Self {
        Self {
            review,
            patch: None,
        }
    }
}

/// Answers one AdmissionReview request body. Never panics, whatever `body` holds (a panic
/// in `mutator` is caught and answered as [`ReviewOutcome::Error`]).
///
/// The returned review always has `apiVersion: admission.k8s.io/v1`, `kind:
/// AdmissionReview` and a `response`; encode it with [`encode_review`].
pub fn review(body: &[u8], mutator: &dyn Mutator) -> (Answer, ReviewOutcome) {
    // The injector's view: the review whole, the object without what no Mutator reads.
    let mut root: Value = match crate::inject::view::parse_review(body) {
        Ok(value) => value,
        Err(err) => {
            let message = format!("cannot parse the AdmissionReview as JSON: {err}");
            return (
                invalid_review(&message, None).into(),
                ReviewOutcome::Invalid,
            );
        }
    };
    let uid = root
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .map(ToOwned::to_owned);
    let uid = uid.as_deref();
    let invalid = |message: String| {
        (
            Answer::from(invalid_review(&message, uid)),
            ReviewOutcome::Invalid,
        )
    };

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
        return (finish(response).into(), ReviewOutcome::Skipped);
    }

    let namespace = request.namespace.as_deref().filter(|ns| !ns.is_empty());
    let mutated = catch_unwind(AssertUnwindSafe(|| mutator.mutate(namespace, &object)));
    let outcome = match mutated {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => return (denied(response, &err).into(), ReviewOutcome::Error),
        Err(_) => {
            tracing::error!(uid = %request.uid, "the injector panicked");
            let message = "internal error: the mcptrust injector panicked";
            response.allowed = false;
            response.result = Status::failure(message, "InternalError").with_code(500);
            return (finish(response).into(), ReviewOutcome::Error);
        }
    };

    let noop = outcome.is_noop();
    let verdict = match (noop, outcome.skipped.is_empty()) {
        (false, _) => ReviewOutcome::Patched,
        (true, true) => ReviewOutcome::Unchanged,
        (true, false) => ReviewOutcome::Skipped,
    };
    if !outcome.skipped.is_empty() {
        response.warnings = Some(outcome.skipped);
    }
    let patch = (!noop).then_some(outcome.patch);
    (
        Answer {
            review: finish(response),
            patch,
        },
        verdict,
    )
}

fn denied(mut response: AdmissionResponse, err: &InjectError) -> AdmissionReview<DynamicObject> {
    response.allowed = false;
    response.result = Status::failure(&err.to_string(), err.reason()).with_code(400);
    finish(response)
}

/// The length of the last answer [`encode_review`] wrote: the next answer's buffer is
/// allocated at about this size, so that it is not grown (and copied) while it is written.
static LAST_ANSWER_LEN: AtomicUsize = AtomicUsize::new(1024);

/// Serializes an answer for the wire (JSON bytes, `admission.k8s.io/v1`
/// `AdmissionReview`): `apiVersion`, `kind` and the `response` with the field names and
/// omissions of kube's `AdmissionResponse`. Unlike serde's default for kube's
/// `AdmissionResponse.patch` (`Vec<u8>`, a JSON array of numbers), `response.patch` is
/// written as a base64 string, the documented encoding of the Go `[]byte` field, with
/// `patchType: JSONPatch` (the only type kube's `with_patch` sets). The request, if any,
/// is not sent back: the API server reads only the response.
///
/// The patch ([`Answer::patch`]) is written as JSON straight into a base64 encoder that
/// writes into the answer: no `Value`, no JSON text of the patch, no base64 `String`.
/// The buffer is allocated once, at the size of the previous answer.
pub fn encode_review(answer: &Answer) -> Vec<u8> {
    let hint = LAST_ANSWER_LEN.load(Ordering::Relaxed);
    let mut out = Vec::with_capacity(hint + hint / 8);
    encode_review_into(answer, &mut out);
    LAST_ANSWER_LEN.store(out.len(), Ordering::Relaxed);
    out
}

/// [`encode_review`] appending to `out`, e.g. a buffer reused from answer to answer.
pub fn encode_review_into(answer: &Answer, out: &mut Vec<u8>) {
    let start = out.len();
    if let Err(err) = write_review(answer, out) {
        // Not expected: everything in a review is plain data.
        tracing::error!(error = %err, "cannot serialize an AdmissionReview");
        out.truncate(start);
        let uid = answer.response().map(|r| r.uid.as_str());
        let fallback = serde_json::json!({
            "apiVersion": ADMISSION_API_VERSION,
            "kind": ADMISSION_KIND,
            "response": {
                "uid": uid.unwrap_or_default(),
                "allowed": false,
                "status": {"status": "Failure", "code": 500, "reason": "InternalError",
                           "message": "internal error: cannot serialize the AdmissionReview"},
            },
        });
        if serde_json::to_writer(&mut *out, &fallback).is_err() {
            out.truncate(start);
            out.extend_from_slice(b"{}");
        }
    }
}

/// Writes the review's JSON: the bytes `serde_json::to_vec` writes for the struct
/// `{apiVersion, kind, response?: {uid, allowed, status, patch?, patchType?,
/// auditAnnotations (if not empty), warnings?}}`.
fn write_review(answer: &Answer, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let review = &answer.review;
    out.extend_from_slice(b"{\"apiVersion\":");
    serde_json::to_writer(&mut *out, &review.types.api_version)?;
    out.extend_from_slice(b",\"kind\":");
    serde_json::to_writer(&mut *out, &review.types.kind)?;
    if let Some(r) = &review.response {
        out.extend_from_slice(b",\"response\":{\"uid\":");
        serde_json::to_writer(&mut *out, &r.uid)?;
        out.extend_from_slice(if r.allowed {
            b",\"allowed\":true,\"status\":"
        } else {
            b",\"allowed\":false,\"status\":"
        });
        serde_json::to_writer(&mut *out, &r.result)?;
        let patched = match (&answer.patch, &r.patch) {
            (Some(patch), _) => {
                out.extend_from_slice(b",\"patch\":\"");
                let mut sink = Base64Sink::new(out);
                let Base64Sink { out, block } = &mut sink;
                patch.write_json_in_pieces(block, |block| Base64Sink::drain(out, block))?;
                sink.finish();
                true
            }
            (None, Some(bytes)) => {
                out.extend_from_slice(b",\"patch\":\"");
                let mut sink = Base64Sink::new(out);
                sink.write_all(bytes).map_err(serde_json::Error::io)?;
                sink.finish();
                true
            }
            (None, None) => false,
        };
        if patched {
            // Base64 needs no escaping: the string is closed as it is.
            out.extend_from_slice(b"\",\"patchType\":\"JSONPatch\"");
        }
        if !r.audit_annotations.is_empty() {
            out.extend_from_slice(b",\"auditAnnotations\":");
            serde_json::to_writer(&mut *out, &r.audit_annotations)?;
        }
        if let Some(warnings) = &r.warnings {
            out.extend_from_slice(b",\"warnings\":");
            serde_json::to_writer(&mut *out, warnings)?;
        }
        out.push(b'}');
    }
    out.push(b'}');
    Ok(())
}

/// Standard base64 (with padding) of everything written to it, appended to a `Vec<u8>`.
/// Writes go to a small buffer (`block`), reused from answer to answer on each thread, that
/// [`Base64Sink::drain`] encodes when it holds a block's worth (whole 3-byte groups only,
/// so no padding mid-stream); [`Base64Sink::finish`] encodes the rest, with padding.
struct Base64Sink<'a> {
    out: &'a mut Vec<u8>,
    block: Vec<u8>,
}

/// Input bytes encoded at a time: 4 KiB of base64.
const BASE64_BLOCK: usize = 3 * 1024;

thread_local! {
    /// The sinks' buffers, one per thread, kept between answers.
    static BASE64_BLOCKS: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl<'a> Base64Sink<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        let mut block = BASE64_BLOCKS.take();
        block.clear();
        block.reserve(BASE64_BLOCK + 1024);
        Self { out, block }
    }

    /// Encodes the whole 3-byte groups of `block` if it holds at least a block's worth.
    fn drain(out: &mut Vec<u8>, block: &mut Vec<u8>) {
        if block.len() >= BASE64_BLOCK {
            let whole = block.len() / 3 * 3;
            encode_into(out, &block[..whole]);
            block.drain(..whole);
        }
    }

    fn finish(mut self) {
        encode_into(self.out, &self.block);
        self.block.clear();
        BASE64_BLOCKS.set(std::mem::take(&mut self.block));
    }
}

/// Appends the standard base64 (padded) of `input` to `out`.
fn encode_into(out: &mut Vec<u8>, input: &[u8]) {
    let at = out.len();
    out.resize(at + base64::encoded_len(input.len(), true).unwrap_or(0), 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(input, &mut out[at..])
        .unwrap_or(0);
    out.truncate(at + written);
}

impl std::io::Write for Base64Sink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.block.extend_from_slice(data);
        Self::drain(self.out, &mut self.block);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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

    fn wire(answer: &Answer) -> Value {
        serde_json::from_slice(&encode_review(answer)).expect("json")
    }

    fn patch_add() -> Outcome {
        Outcome {
            patch: serde_json::from_value::<json_patch::Patch>(json!([
                {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}
            ]))
            .expect("patch")
            .into(),
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
    fn kube_serde_wire(answer: &Answer) -> Value {
        let review = &answer.to_kube_review().expect("the patch serializes");
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
        if let Some(resp) = audited.review.response.as_mut() {
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
            patch: crate::inject::Patch::default(),
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

    /// The encoder before the patch was streamed: kube's review with the patch's JSON in
    /// `response.patch`, base64 into a `String`, then serde over a borrowed wire struct.
    /// [`encode_review`] must write the same bytes.
    fn encode_via_kube(answer: &Answer) -> Vec<u8> {
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
        let review = answer.to_kube_review().expect("the patch serializes");
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
        serde_json::to_vec(&wire).expect("serialize")
    }

    #[test]
    fn streamed_patch_writes_the_same_bytes_as_before() {
        let mut config = crate::inject::InjectConfig::sandbox_demo();
        config.trust_bundle_sha256 = Some("ab".repeat(32));
        let injector = crate::inject::StaticMutator::new(&config, None);
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admission");
        let mut answers = Vec::new();
        for name in ["pod-sandbox", "pod-typical", "pod-large", "deployment"] {
            let body = std::fs::read(format!("{dir}/{name}.json")).expect("fixture");
            let (answer, outcome) = review(&body, &injector);
            assert_eq!(outcome, ReviewOutcome::Patched, "{name}");
            answers.push(answer);
        }
        let mut warned = patch_add();
        warned.skipped = vec!["container \"x\": skipped".to_owned()];
        answers.push(
            review(
                &request("CREATE", json!({"metadata": {}})),
                &Fixed(Ok(warned)),
            )
            .0,
        );
        answers.push(review(b"{", &Fixed(Ok(patch_add()))).0);
        for answer in &answers {
            let streamed = encode_review(answer);
            assert_eq!(
                String::from_utf8_lossy(&streamed),
                String::from_utf8_lossy(&encode_via_kube(answer))
            );
            // kube's form (the patch as JSON bytes) is encoded the same way too.
            let kube = Answer::from(answer.to_kube_review().expect("serialize"));
            assert_eq!(encode_review(&kube), streamed);
        }
        // Patches of every length around the encoder's block size, padding included.
        for len in [0, 1, 2, 3, 3071, 3072, 3073, 3074, 6144, 6145] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let mut out = Vec::new();
            let mut sink = Base64Sink::new(&mut out);
            for chunk in data.chunks(5) {
                sink.write_all(chunk).expect("write");
            }
            sink.finish();
            assert_eq!(
                out,
                base64::engine::general_purpose::STANDARD
                    .encode(&data)
                    .as_bytes()
            );
        }
    }
}
