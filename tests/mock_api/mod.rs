//! The Kubernetes API server of the controller tests: kube's mock service (tower-test)
//! driven in the `ApiServerVerifier` style of kube-rs' controller-rs example.
//!
//! The code under test gets a real [`kube::Client`] whose requests land in a [`Verifier`];
//! the test takes them one by one, in the order the code must make them, asserts each
//! ([`Verifier::expect`]: method, path, query parts) and answers it as the API server would
//! ([`Call::ok`], [`Call::echo`], [`Call::not_found`], [`Call::conflict`], ...). A request
//! the test did not expect fails on its method or path; a request the code never makes fails
//! after [`HANG_GUARD`] instead of hanging the test; a request the code makes after the test
//! is done is caught by [`Verifier::expect_done`].
//!
//! Used by `tests/controller.rs`, `tests/egress.rs`, `tests/endpoint.rs` and
//! `tests/webhook_cert.rs` (`mod mock_api;`); not every file uses every helper.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use mcptrust::controller::{Context, ControllerConfig, ControllerMetrics};
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

/// How long [`Verifier::next`] waits for the next request: past it, the code under test
/// stopped calling the API (or waits for an answer the test never gives) and the test
/// fails rather than hangs.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// The test's end of kube's mock service.
pub type Mock = Handle<Request<Body>, Response<Body>>;

/// The mock API server: yields the requests of the [`Client`] made with it by [`pair`].
pub struct Verifier {
    /// The raw tower-test handle.
    pub handle: Mock,
}

/// A client on the mock API server, and the server's end.
pub fn pair() -> (Client, Verifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), Verifier { handle })
}

/// The controller configuration the tests start from (struct-update the fields a test
/// needs: `ControllerConfig { default_include_system_roots: true, ..controller_config() }`):
/// operator namespace `mcptrust`, federation CA Secret `mcptrust-federation-ca` (created by
/// the controller, `ca_validity_secs` 0), no default private CAs or system roots,
/// namespace-default ConfigMap `mcptrust-trust`, default egress.
pub fn controller_config() -> ControllerConfig {
    ControllerConfig {
        operator_namespace: "mcptrust".into(),
        ca_secret_name: "mcptrust-federation-ca".into(),
        ca_user_supplied: false,
        ca_validity_secs: 0,
        default_cas_pem: String::new(),
        default_include_system_roots: false,
        default_config_map: "mcptrust-trust".into(),
        egress: Default::default(),
        stale_certificate_grace_secs: mcptrust::controller::DEFAULT_STALE_CERTIFICATE_GRACE_SECS
            .into(),
    }
}

/// A controller [`Context`] (reporter `test`, a clock stopped at `now`, fresh metrics) on a
/// mock API server.
pub fn context(config: ControllerConfig, now: i64) -> (Context, Verifier) {
    let (client, api) = pair();
    let ctx = Context::new(
        client,
        config,
        ControllerMetrics::default(),
        Arc::new(move || now),
        "test",
    );
    (ctx, api)
}

/// One request, taken from the [`Verifier`], waiting for its answer.
pub struct Call {
    /// The request method.
    pub method: Method,
    /// Path and query, e.g. `/api/v1/namespaces/a/secrets/s?fieldManager=m&force=true`.
    pub uri: String,
    /// The JSON body; `Null` when there is none.
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

impl Call {
    /// The URI without its query.
    pub fn path(&self) -> &str {
        self.uri
            .split_once('?')
            .map_or(self.uri.as_str(), |(p, _)| p)
    }

    /// Answers with `status` and `body`.
    pub fn reply(self, status: StatusCode, body: &Value) {
        self.send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(body).expect("json")))
                .expect("response"),
        );
    }

    /// Answers 200 with `body`.
    pub fn ok(self, body: &Value) {
        self.reply(StatusCode::OK, body)
    }

    /// Answers 200 with the request body (as an apply would).
    pub fn echo(self) {
        let body = self.body.clone();
        self.ok(&body)
    }

    /// Answers 201 with the request body (as a create would).
    pub fn created(self) {
        let body = self.body.clone();
        self.reply(StatusCode::CREATED, &body)
    }

    /// Answers a DELETE: 200 with a `Success` Status.
    pub fn deleted(self) {
        self.ok(&json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}))
    }

    /// Answers 404 with a `NotFound` Status.
    pub fn not_found(self) {
        self.reply(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        )
    }

    /// Answers 409 with a Status of `reason`: `AlreadyExists` for a create that lost a race,
    /// `Conflict` for a write whose resourceVersion precondition failed.
    pub fn conflict(self, reason: &str, message: &str) {
        self.reply(
            StatusCode::CONFLICT,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": 409, "message": message}),
        )
    }

    /// Answers a status apply of `/apis/mcptrust.io/v1alpha1/namespaces/<ns>/mcpservers/<name>/status`
    /// with that McpServer (empty spec) carrying the applied status.
    pub fn status_ok(self) {
        let segments: Vec<&str> = self.path().split('/').collect();
        let (ns, name) = match segments.as_slice() {
            [.., "namespaces", ns, "mcpservers", name, "status"] => (*ns, *name),
            _ => panic!("not an McpServer status apply: {}", self.uri),
        };
        let body = json!({"apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
            "metadata": {"name": name, "namespace": ns}, "spec": {}, "status": self.body["status"]});
        self.ok(&body)
    }
}

impl Verifier {
    /// The next request, whatever it is.
    ///
    /// # Panics
    /// After [`HANG_GUARD`] without a request, or when the client is gone.
    pub async fn next(&mut self) -> Call {
        let (req, send) = tokio::time::timeout(HANG_GUARD, self.handle.next_request())
            .await
            .expect("the reconciler stopped calling the API")
            .expect("service not called");
        let method = req.method().clone();
        let uri = req.uri().to_string();
        let bytes = req.into_body().collect_bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("json body")
        };
        Call {
            method,
            uri,
            body,
            send,
        }
    }

    /// The next request; asserts its method, that its path (the URI without the query) is
    /// `path`, and that its query contains each of `query` (e.g. `fieldManager=mcptrust-trust`,
    /// `force=true`).
    pub async fn expect(&mut self, method: Method, path: &str, query: &[&str]) -> Call {
        let call = self.next().await;
        assert_eq!(call.method, method, "method of {}", call.uri);
        let (p, q) = call.uri.split_once('?').unwrap_or((call.uri.as_str(), ""));
        assert_eq!(p, path, "path");
        for want in query {
            assert!(q.contains(want), "{} lacks {want}", call.uri);
        }
        call
    }

    /// An event (events.k8s.io/v1) in namespace `ns` regarding an McpServer; answers 201 and
    /// returns its type, reason and note.
    pub async fn expect_event(&mut self, ns: &str) -> (String, String, String) {
        let call = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
                &[],
            )
            .await;
        let field = |k: &str| call.body[k].as_str().unwrap_or_default().to_string();
        let out = (field("type"), field("reason"), field("note"));
        assert_eq!(call.body["regarding"]["kind"], "McpServer");
        let mut body = call.body.clone();
        body["metadata"]["name"] = json!("ev");
        call.reply(StatusCode::CREATED, &body);
        out
    }

    /// The forced apply (field manager `mcptrust-trust`) of the trust ConfigMap McpServer
    /// `ns/_server` uses: a shared `mcptrust-trust-<16 hex digits>` (its name derives from
    /// the trust ingredients, see `mcptrust::api::trust_config_map_name`), labelled with
    /// that key and owned by no McpServer; echoes it and returns the applied body.
    pub async fn expect_trust(&mut self, ns: &str, _server: &str) -> Value {
        let call = self.next().await;
        assert_eq!(call.method, Method::PATCH, "method of {}", call.uri);
        let (path, query) = call.uri.split_once('?').unwrap_or((call.uri.as_str(), ""));
        let prefix = format!("/api/v1/namespaces/{ns}/configmaps/mcptrust-trust-");
        let key = path
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("not a shared trust ConfigMap: {path}"));
        assert!(
            key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "{path}"
        );
        for want in ["fieldManager=mcptrust-trust", "force=true"] {
            assert!(query.contains(want), "{} lacks {want}", call.uri);
        }
        assert_eq!(
            call.body["metadata"]["labels"]["mcptrust.io/trust-key"],
            key
        );
        assert!(call.body["metadata"].get("ownerReferences").is_none());
        let body = call.body.clone();
        call.echo();
        body
    }

    /// The forced status apply (field manager `mcptrust-status`) of McpServer `ns/name`,
    /// unanswered: the caller asserts its body and answers (usually [`Call::status_ok`]).
    pub async fn expect_status_apply(&mut self, ns: &str, name: &str) -> Call {
        self.expect(
            Method::PATCH,
            &format!("/apis/mcptrust.io/v1alpha1/namespaces/{ns}/mcpservers/{name}/status"),
            &["fieldManager=mcptrust-status", "force=true"],
        )
        .await
    }

    /// [`Self::expect_status_apply`], answered with [`Call::status_ok`]; returns the status.
    pub async fn expect_status(&mut self, ns: &str, name: &str) -> Value {
        let call = self.expect_status_apply(ns, name).await;
        let status = call.body["status"].clone();
        call.status_ok();
        status
    }

    /// The code under test is done and dropped its client: asserts that it made no further
    /// request (the test consumed exactly the expected ones).
    ///
    /// # Panics
    /// On a further request (with its method and URI), or when the client is still held
    /// after [`HANG_GUARD`] (a task still running would otherwise hang the test).
    pub async fn expect_done(mut self) {
        let next = tokio::time::timeout(HANG_GUARD, self.handle.next_request())
            .await
            .expect("the client is still held: the code under test did not finish");
        if let Some((req, _)) = next {
            panic!("an unexpected API call: {} {}", req.method(), req.uri());
        }
    }
}

/// The condition of `type_` in an McpServer status.
///
/// # Panics
/// When the status has no such condition.
pub fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

/// The base64-decoded `data[key]` of a Secret's JSON.
///
/// # Panics
/// When the key is missing or not base64.
pub fn decode(secret: &Value, key: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {secret}"));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64")
}
