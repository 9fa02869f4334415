//! The webhook over real TLS on 127.0.0.1: AdmissionReview round trips with the embedded
//! default injection, protocol errors, body limit, HTTP/2, and the admin router.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use common::{
    Proto, TestCa, TestServer, TlsFiles, admission_review, embedded_mutator, pod, post_once,
    post_review,
};
use http_body_util::BodyExt as _;
use mcptrust::admin::{self, Readiness};
use mcptrust::inject::{InjectConfig, StaticMutator};
use mcptrust::metrics::Metrics;
use serde_json::{Value, json};
use tower::ServiceExt as _;

struct Setup {
    ca: TestCa,
    serial: String,
    _dir: tempfile::TempDir,
    server: TestServer,
    metrics: Arc<Metrics>,
}

async fn setup(max_body_bytes: usize) -> Setup {
    let ca = TestCa::new("mcptrust test CA");
    let leaf = ca.leaf(1001);
    let (dir, files) = TlsFiles::temp_with(&leaf);
    let metrics = Arc::new(Metrics::new());
    let server = TestServer::start(
        &files,
        embedded_mutator(),
        metrics.clone(),
        max_body_bytes,
        Duration::from_secs(5),
    )
    .await;
    Setup {
        ca,
        serial: leaf.serial,
        _dir: dir,
        server,
        metrics,
    }
}

fn response(reply: &common::Reply) -> Value {
    assert_eq!(
        reply.status,
        200,
        "body: {}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let review = reply.json();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    review["response"].clone()
}

fn decode_patch(response: &Value) -> json_patch::Patch {
    assert_eq!(response["patchType"], "JSONPatch");
    let b64 = response["patch"]
        .as_str()
        .expect("patch is a base64 string");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("valid base64");
    serde_json::from_slice(&raw).expect("patch is a JSON Patch")
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?
        .get("value")?
        .as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_container_pod_is_patched_over_https() {
    let s = setup(3 * 1024 * 1024).await;
    let original = pod("github-mcp-7d9f", "agents", &["server", "sidecar"]);
    let body = admission_review(
        "6c1f2a8e-3b1d-4a51-9f7e-2f0c1d2e3f40",
        "CREATE",
        "agents",
        original.clone(),
    );
    let (reply, serial) = post_review(s.server.addr, &s.ca.pem, Proto::Http1, &body).await;
    assert_eq!(serial, s.serial);
    let resp = response(&reply);
    assert_eq!(resp["uid"], "6c1f2a8e-3b1d-4a51-9f7e-2f0c1d2e3f40");
    assert_eq!(resp["allowed"], true);
    let patch = decode_patch(&resp);

    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies to the pod");

    let volumes = patched["spec"]["volumes"].as_array().expect("volumes");
    let trust = volumes
        .iter()
        .find(|v| v["name"] == "mcptrust-trust")
        .expect("volume mcptrust-trust");
    assert_eq!(trust["configMap"]["name"], "mcptrust-trust");
    let containers = patched["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 2);
    for c in containers {
        assert_eq!(
            env_value(c, "SSL_CERT_FILE"),
            Some("/etc/mcptrust/trust/ca-bundle.pem"),
            "container {}",
            c["name"]
        );
        assert_eq!(env_value(c, "LOG_LEVEL"), Some("info"), "existing env kept");
        let mount = c["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|m| m["name"] == "mcptrust-trust")
            .expect("trust mount");
        assert_eq!(mount["mountPath"], "/etc/mcptrust/trust");
        assert_eq!(mount["readOnly"], true);
    }
    assert!(
        patched["metadata"]["annotations"]
            .get("mcptrust.io/injected")
            .is_some(),
        "annotation mcptrust.io/injected in {}",
        patched["metadata"]
    );
    assert_eq!(s.metrics.admission_requests("patched"), 1);
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_gets_a_valid_refusal() {
    let s = setup(3 * 1024 * 1024).await;
    let (reply, _) = post_once(
        s.server.addr,
        &s.ca.pem,
        Proto::Http1,
        b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": ".to_vec(),
    )
    .await
    .unwrap();
    let resp = response(&reply);
    assert_eq!(resp["allowed"], false);
    assert_eq!(resp["uid"], "");
    assert_eq!(resp["status"]["reason"], "InvalidRequest");
    let message = resp["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("cannot parse the AdmissionReview as JSON"),
        "{message}"
    );
    assert!(
        message.contains("EOF"),
        "message names the parse problem: {message}"
    );
    assert_eq!(s.metrics.admission_requests("invalid"), 1);
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uid_is_echoed_when_the_request_is_incomplete() {
    let s = setup(3 * 1024 * 1024).await;
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "0f0e0d0c-aaaa-4bbb-8ccc-123456789abc", "object": {"metadata": {}}}
    });
    let (reply, _) = post_review(s.server.addr, &s.ca.pem, Proto::Http1, &body).await;
    let resp = response(&reply);
    assert_eq!(resp["uid"], "0f0e0d0c-aaaa-4bbb-8ccc-123456789abc");
    assert_eq!(resp["allowed"], false);
    assert!(
        resp["status"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed AdmissionReview request")
    );
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_gets_a_valid_refusal() {
    let s = setup(1024).await;
    let mut big = pod("big", "agents", &["server"]);
    big["metadata"]["annotations"] = json!({"filler": "x".repeat(8 * 1024)});
    let body = admission_review(
        "1b2c3d4e-0000-4000-8000-00000000beef",
        "CREATE",
        "agents",
        big,
    );
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(bytes.len() > 1024);
    for proto in [Proto::Http1, Proto::Http2] {
        let (reply, _) = post_once(s.server.addr, &s.ca.pem, proto, bytes.clone())
            .await
            .unwrap();
        let resp = response(&reply);
        assert_eq!(resp["allowed"], false, "{proto:?}");
        assert_eq!(resp["status"]["code"], 400);
        let message = resp["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("exceeds the limit of 1024 bytes"),
            "{message}"
        );
    }
    // A body under the limit still works on the same server.
    let small = admission_review("small", "DELETE", "agents", json!({"kind": "Pod"}));
    let (reply, _) = post_review(s.server.addr, &s.ca.pem, Proto::Http1, &small).await;
    assert_eq!(response(&reply)["allowed"], true);
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_allowed_without_patch() {
    let s = setup(3 * 1024 * 1024).await;
    let body = admission_review(
        "9e8d7c6b-1111-4222-8333-444455556666",
        "DELETE",
        "agents",
        pod("old", "agents", &["server"]),
    );
    let (reply, _) = post_review(s.server.addr, &s.ca.pem, Proto::Http1, &body).await;
    let resp = response(&reply);
    assert_eq!(resp["uid"], "9e8d7c6b-1111-4222-8333-444455556666");
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none());
    assert!(resp.get("patchType").is_none());
    assert_eq!(s.metrics.admission_requests("skipped"), 1);
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_works_and_mutate_slash_alias() {
    let s = setup(3 * 1024 * 1024).await;
    let mut conn = common::Conn::connect(s.server.addr, &s.ca.pem, Proto::Http2)
        .await
        .unwrap();
    assert_eq!(conn.alpn.as_deref(), Some(&b"h2"[..]));
    let original = pod("h2-pod", "agents", &["server"]);
    for (i, path) in ["/mutate", "/mutate/", "/mutate"].into_iter().enumerate() {
        let uid = format!("h2-{i}");
        let body = admission_review(&uid, "CREATE", "agents", original.clone());
        let reply = conn
            .post(path, serde_json::to_vec(&body).unwrap())
            .await
            .unwrap();
        let resp = response(&reply);
        assert_eq!(resp["uid"], uid.as_str());
        assert_eq!(resp["allowed"], true);
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &decode_patch(&resp)).unwrap();
        assert_eq!(
            env_value(&patched["spec"]["containers"][0], "SSL_CERT_FILE"),
            Some("/etc/mcptrust/trust/ca-bundle.pem")
        );
    }
    drop(conn);
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_client_does_not_disturb_others() {
    let s = setup(3 * 1024 * 1024).await;
    // A client that trusts another CA fails its handshake...
    let other = TestCa::new("some other CA");
    let err = common::Conn::connect(s.server.addr, &other.pem, Proto::Http1)
        .await
        .err()
        .expect("handshake must fail");
    assert!(err.contains("handshake"), "{err}");
    // ...and a raw TCP client that sends garbage too...
    {
        use tokio::io::AsyncWriteExt as _;
        let mut tcp = tokio::net::TcpStream::connect(s.server.addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    }
    // ...while a good client is served.
    let body = admission_review("ok", "DELETE", "agents", pod("p", "agents", &["c"]));
    let (reply, _) = post_review(s.server.addr, &s.ca.pem, Proto::Http1, &body).await;
    assert_eq!(response(&reply)["allowed"], true);
    s.server.stop().await;
}

async fn get(router: &axum::Router, path: &str) -> (StatusCode, Option<String>, String) {
    let response = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_router_probes_and_metrics() {
    let s = setup(3 * 1024 * 1024).await;
    let readiness = Readiness::new();
    let router = admin::router(s.metrics.clone(), readiness.clone());

    let (status, _, body) = get(&router, "/livez").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

    let (status, _, body) = get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "not ready: TLS not loaded");
    readiness.set_ready();
    let (status, _, body) = get(&router, "/readyz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready"));

    let review = admission_review("m-1", "CREATE", "agents", pod("m", "agents", &["c"]));
    let (reply, _) = post_review(s.server.addr, &s.ca.pem, Proto::Http1, &review).await;
    assert_eq!(reply.status, 200);
    let (reply, _) = post_once(s.server.addr, &s.ca.pem, Proto::Http1, b"nope".to_vec())
        .await
        .unwrap();
    assert_eq!(reply.status, 200);

    let (status, content_type, text) = get(&router, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        content_type.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(
        text.contains("mcptrust_admission_requests_total{outcome=\"patched\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mcptrust_admission_requests_total{outcome=\"invalid\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mcptrust_admission_duration_seconds_count 2"),
        "{text}"
    );
    assert!(
        text.contains("mcptrust_tls_reloads_total{result=\"success\"} 0"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));

    let (status, _, _) = get(&router, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.server.stop().await;
}

#[tokio::test]
async fn webhook_router_oneshot_get_is_rejected_and_post_answers() {
    let metrics = Arc::new(Metrics::new());
    let mutator = Arc::new(StaticMutator::new(&InjectConfig::embedded_default(), None));
    let router = mcptrust::webhook::router(mutator, metrics, 1024 * 1024);
    let response = router
        .clone()
        .oneshot(Request::get("/mutate").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    let response = router
        .oneshot(
            Request::post("/mutate")
                .body(Body::from(b"[1,2,3]".to_vec()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["response"]["allowed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_serves_plain_http_until_shutdown() {
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::new();
    readiness.set_ready();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(admin::serve(
        listener,
        admin::router(metrics, readiness),
        async {
            let _ = stopped.await;
        },
    ));

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let response = sender
        .send_request(
            Request::get("/readyz")
                .header("host", "localhost")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ready");
    drop(sender);
    let _ = conn.await;

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A webhook serving the `Signal` McpServer of examples/mcpserver-signal.yaml (container
/// `mcp-host`), with the reloader image
/// configured as the chart configures it.
async fn signal_setup() -> (TestCa, tempfile::TempDir, TestServer) {
    let ca = TestCa::new("mcptrust test CA");
    let (dir, files) = TlsFiles::temp_with(&ca.leaf(1002));
    let text = std::fs::read_to_string("examples/mcpserver-signal.yaml").unwrap();
    let server: mcptrust::api::McpServer = serde_saphyr::from_str(&text).unwrap();
    let mut config = InjectConfig::embedded_default();
    config.reloader.image = Some("registry.example/mcptrust:0.1.0".into());
    let mutator = Arc::new(StaticMutator::new(&config, Some(&server)));
    let (server, _) = TestServer::start_default(&files, mutator).await;
    (ca, dir, server)
}

/// The API server's pod (tests/fixtures/admission/pod-typical.json: two containers, an
/// init container, the pod's runAsUser 10001 with runAsNonRoot) and its AdmissionReview.
fn typical_review(edit: impl FnOnce(&mut Value)) -> (Value, Value) {
    let text = std::fs::read_to_string("tests/fixtures/admission/pod-typical.json").unwrap();
    let mut review: Value = serde_json::from_str(&text).unwrap();
    edit(&mut review["request"]["object"]);
    (review["request"]["object"].clone(), review)
}

async fn admit(s: &(TestCa, tempfile::TempDir, TestServer), review: &Value) -> Value {
    let (reply, _) = post_review(s.2.addr, &s.0.pem, Proto::Http1, review).await;
    let resp = response(&reply);
    assert_eq!(resp["allowed"], true, "{resp}");
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_pod_gets_the_reloader_sidecar_over_https() {
    let s = signal_setup().await;
    let (original, review) = typical_review(|_| {});
    let resp = admit(&s, &review).await;
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &decode_patch(&resp)).expect("the patch applies");
    let spec = &patched["spec"];
    assert_eq!(spec["shareProcessNamespace"], true);
    let init = spec["initContainers"].as_array().expect("initContainers");
    let sidecar = init.last().expect("sidecar");
    assert_eq!(sidecar["name"], "mcptrust-reloader");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["image"], "registry.example/mcptrust:0.1.0");
    assert_eq!(
        sidecar["ports"],
        json!([{"name": "mcptrust-reload", "containerPort": 9899}])
    );
    assert_eq!(sidecar["securityContext"]["runAsUser"], 10001);
    assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
    // No mTLS in this McpServer: only the trust directory is watched.
    assert_eq!(
        sidecar["args"],
        json!([
            "reload",
            "--log-format",
            "json",
            "--watch",
            "/etc/mcptrust/trust",
            "--signal",
            "SIGHUP",
            "--container",
            "mcp-host",
            "--admin-addr",
            "0.0.0.0:9899"
        ])
    );
    assert_eq!(
        env_value(&spec["containers"][0], "MCPTRUST_RELOADER_TARGET"),
        Some("mcp-host")
    );
    assert_eq!(
        env_value(&spec["containers"][1], "MCPTRUST_RELOADER_TARGET"),
        None
    );
    // The result is a valid Pod, and admitting it again changes nothing.
    let _: k8s_openapi::api::core::v1::Pod = serde_json::from_value(patched.clone()).unwrap();
    let mut again = review.clone();
    again["request"]["object"] = patched;
    let resp = admit(&s, &again).await;
    assert!(resp.get("patch").is_none(), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_process_namespace_false_is_annotated_not_overridden_over_https() {
    let s = signal_setup().await;
    let (original, review) = typical_review(|pod| {
        pod["spec"]["shareProcessNamespace"] = json!(false);
    });
    let resp = admit(&s, &review).await;
    let warnings = resp["warnings"].to_string();
    assert!(
        warnings.contains("shareProcessNamespace is false"),
        "{warnings}"
    );
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &decode_patch(&resp)).expect("the patch applies");
    assert_eq!(patched["spec"]["shareProcessNamespace"], false);
    assert_eq!(
        patched["spec"]["initContainers"].as_array().map(Vec::len),
        original["spec"]["initContainers"].as_array().map(Vec::len),
        "no sidecar"
    );
    let reason = patched["metadata"]["annotations"]["mcptrust.io/reloader-skipped"]
        .as_str()
        .expect("reason");
    assert!(
        reason.starts_with("shareProcessNamespace is false"),
        "{reason}"
    );
    assert_eq!(
        env_value(&patched["spec"]["containers"][0], "SSL_CERT_FILE"),
        Some("/etc/mcptrust/trust/ca-bundle.pem"),
        "the rest of the injection applies"
    );
}

/// `GET /metrics` with a text far larger than one chunk (a registry with 20,000 series,
/// about 0.95 MB), over real HTTP/1.1 (chunked) and HTTP/1.0 (to the close) on 127.0.0.1:
/// the body is the registry's whole text, byte for byte; a scraper that goes away
/// mid-text leaves the next scrape whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_streamed_whole() {
    use prometheus_client::metrics::{family::Family, gauge::Gauge};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let metrics = Arc::new(Metrics::new());
    let family = Family::<Vec<(String, String)>, Gauge>::default();
    for i in 0..20_000 {
        family
            .get_or_create(&vec![("name".to_owned(), format!("server-{i:05}"))])
            .set(i);
    }
    metrics.register_with(|r| r.register("stream_test", "Streaming test series", family));
    let expected = metrics.encode();
    assert!(expected.len() > 900_000, "{}", expected.len());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(admin::serve(
        listener,
        admin::router(metrics.clone(), Readiness::new()),
        async {
            let _ = stop_rx.await;
        },
    ));
    let get = |version: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET /metrics {version}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), body.to_owned())
    };
    // HTTP/1.0: the body runs to the close.
    let (head, body) = get("HTTP/1.0").await;
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        body == expected,
        "HTTP/1.0 body differs ({} bytes)",
        body.len()
    );
    // HTTP/1.1: chunked; de-chunk it.
    let (head, body) = get("HTTP/1.1").await;
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut rest = body.as_str();
    let mut text = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            break;
        }
        text.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    assert!(
        text == expected,
        "HTTP/1.1 body differs ({} bytes)",
        text.len()
    );
    // A scraper that reads a little and goes away; the next scrape is whole.
    {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        let mut some = [0u8; 1024];
        let _ = s.read(&mut some).await.unwrap();
    }
    let (_, body) = get("HTTP/1.0").await;
    assert!(
        body == expected,
        "after an abandoned scrape ({} bytes)",
        body.len()
    );
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
