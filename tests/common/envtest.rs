//! An envtest-style control plane for end-to-end tests: a real etcd and kube-apiserver
//! (the binaries of controller-runtime's `KUBEBUILDER_ASSETS` layout, which
//! `../shared/envtest/setup.sh DIR` lays out and `setup-envtest use 1.36 -p path` prints
//! elsewhere), started on free loopback ports with certificates made here.
//!
//! One control plane per test binary, started by the first test that asks for it
//! ([`control_plane`]) and shared by the binary's tests, each in a namespace of its own
//! ([`ControlPlane::namespace`]). Every process is started under a small `sh` supervisor
//! that holds the read end of a pipe from this process: when the test binary exits, however
//! it exits (a panic, an abort, a kill), the pipe closes and the supervisor stops its child
//! and removes the data directory. A static's destructor never runs, so nothing else would.
//!
//! Without `KUBEBUILDER_ASSETS` the e2e tests print one line saying how to get the binaries
//! and return; with `MCPTRUST_E2E_REQUIRED=1` (set by `.ci/run`) they fail instead.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The supervisor: starts `"$@"` with its output in `$LOG`, prints the child's pid, waits
/// until its own stdin closes (this test process's end of the pipe), then stops the child
/// (SIGTERM, then SIGKILL after 5 s) and removes `$CLEANUP` if set.
const SUPERVISOR: &str = r#"
"$@" >>"$LOG" 2>&1 </dev/null &
c=$!
echo "$c"
while read -r _; do :; done
kill -TERM "$c" 2>/dev/null
i=0
while kill -0 "$c" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
kill -KILL "$c" 2>/dev/null
wait "$c" 2>/dev/null
[ -n "$CLEANUP" ] && rm -rf "$CLEANUP"
exit 0
"#;

/// A process under the [`SUPERVISOR`]: stopped when this value is dropped, or when the
/// test binary exits.
pub struct Supervised {
    wrapper: Child,
    stdin: Option<ChildStdin>,
    /// The supervised process's pid (not the supervisor's).
    pub pid: u32,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
}

impl Supervised {
    /// Starts `program args` with its output appended to `log`. With `cleanup`, that path
    /// is removed once the process has stopped.
    pub fn start(
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
        cleanup: Option<&Path>,
    ) -> Self {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg("sh")
            .arg(program)
            .args(args)
            .env("LOG", log)
            .env("CLEANUP", cleanup.map(Path::as_os_str).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut wrapper = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("supervisor of {} gave no pid", program.display()));
        Self {
            stdin: wrapper.stdin.take(),
            wrapper,
            pid,
            log: log.to_owned(),
        }
    }

    /// Sends `signal` (a name such as `TERM`, `KILL`, `STOP`) to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args(["-s", signal, &self.pid.to_string()])
            .status();
    }

    /// Whether the process is still running.
    pub fn alive(&self) -> bool {
        // A zombie is not alive: the supervisor reaps its child, and `kill -0` on a
        // reaped pid fails.
        Command::new("kill")
            .args(["-0", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .is_ok_and(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
    }

    /// Waits up to `limit` for the process to exit; true if it did.
    pub fn wait_exit(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        !self.alive()
    }

    /// The last `lines` lines of the log.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the process (SIGTERM, SIGKILL after 5 s) and waits for it.
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.wrapper.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

pub use super::free_port;

/// Whether e2e tests must run (CI): `MCPTRUST_E2E_REQUIRED` is `1` or `true`
/// ([`super::skip::required`]).
pub fn required() -> bool {
    super::skip::required()
}

/// Paths and addresses of a running control plane.
pub struct ControlPlane {
    /// `KUBEBUILDER_ASSETS`.
    pub assets: PathBuf,
    /// Working directory: certificates, kubeconfig, logs, etcd data.
    pub dir: PathBuf,
    /// An admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// The cluster CA, PEM (signs the serving and client certificates).
    pub ca_pem: String,
    etcd_port: u16,
    etcd_peer_port: u16,
    api_port: u16,
    etcd: Mutex<Option<Supervised>>,
    apiserver: Mutex<Option<Supervised>>,
    namespaces: Mutex<std::collections::HashMap<String, u32>>,
    crds: OnceLock<()>,
}

static CONTROL_PLANE: OnceLock<Option<ControlPlane>> = OnceLock::new();

/// The binary's control plane, started on first use; `None` (after printing how to get
/// the binaries) when `KUBEBUILDER_ASSETS` is not set and e2e tests are not required.
///
/// # Panics
/// When the binaries are missing but required, or the control plane does not come up
/// within 90 s (with the tail of its logs).
pub fn control_plane() -> Option<&'static ControlPlane> {
    CONTROL_PLANE
        .get_or_init(|| {
            let assets = match std::env::var_os("KUBEBUILDER_ASSETS") {
                Some(a) if !a.is_empty() => PathBuf::from(a),
                _ => {
                    super::skip::skip_or_fail(
                        "kube-apiserver and etcd (KUBEBUILDER_ASSETS)",
                        "export KUBEBUILDER_ASSETS=$(../shared/envtest/setup.sh target/envtest) \
                         or `setup-envtest use 1.36 -p path`",
                    );
                    return None;
                }
            };
            Some(ControlPlane::start(assets))
        })
        .as_ref()
}

/// `let Some(cp) = e2e!() else { return };` in every e2e test.
#[macro_export]
macro_rules! e2e {
    () => {
        common::envtest::control_plane()
    };
}

fn ca() -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "envtest-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

fn leaf(
    ca: &(CertificateParams, KeyPair, String),
    cn: &str,
    org: Option<&str>,
    sans: &[SanType],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(o) = org {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.subject_alt_names = sans.to_vec();
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca.0, &ca.1);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig for `server` trusting `ca_pem`, authenticating with `user` (a YAML
/// mapping body such as `token: ...` or `client-certificate-data: ...`).
pub fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &str) -> String {
    let user = user
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: user\n  user:\n{user}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: user\ncurrent-context: envtest\n",
        b64(ca_pem)
    )
}

impl ControlPlane {
    fn start(assets: PathBuf) -> Self {
        for bin in ["kube-apiserver", "etcd"] {
            assert!(
                assets.join(bin).exists(),
                "{} missing: KUBEBUILDER_ASSETS must hold kube-apiserver and etcd",
                assets.join(bin).display()
            );
        }
        // etcd fsyncs every write: a tmpfs keeps that cheap on a busy 2-core machine.
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("mcptrust-envtest-")
            .tempdir_in(base)
            .unwrap()
            .keep();
        let ca = ca();
        let (serving_cert, serving_key) = leaf(
            &ca,
            "kube-apiserver",
            None,
            &[
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress("10.0.0.1".parse().unwrap()),
                SanType::DnsName("kubernetes.default.svc".try_into().unwrap()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (admin_cert, admin_key) = leaf(
            &ca,
            "envtest-admin",
            Some("system:masters"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let sa_key = KeyPair::generate().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write("ca.crt", &ca.2);
        write("serving.crt", &serving_cert);
        write("serving.key", &serving_key);
        write("sa.key", &sa_key.serialize_pem());
        write("sa.pub", &sa_key.public_key_pem());
        let api_port = free_port();
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("admin.kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(
                &server,
                &ca.2,
                &format!(
                    "client-certificate-data: {}\nclient-key-data: {}",
                    b64(&admin_cert),
                    b64(&admin_key)
                ),
            ),
        )
        .unwrap();
        let cp = Self {
            assets,
            ca_pem: ca.2.clone(),
            kubeconfig,
            server,
            etcd_port: free_port(),
            etcd_peer_port: free_port(),
            api_port,
            etcd: Mutex::new(None),
            apiserver: Mutex::new(None),
            namespaces: Mutex::default(),
            crds: OnceLock::new(),
            dir,
        };
        eprintln!(
            "envtest: {} (kube-apiserver at {}, logs and kubeconfig in {})",
            cp.assets.display(),
            cp.server,
            cp.dir.display()
        );
        cp.start_etcd();
        cp.start_apiserver();
        cp.wait_ready(Duration::from_secs(90));
        cp
    }

    fn start_etcd(&self) {
        let data = self.dir.join("etcd");
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        let args = [
            "--name",
            "default",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen-client-urls",
            &url(self.etcd_port),
            "--advertise-client-urls",
            &url(self.etcd_port),
            "--listen-peer-urls",
            &url(self.etcd_peer_port),
            "--initial-advertise-peer-urls",
            &url(self.etcd_peer_port),
            "--initial-cluster",
            &format!("default={}", url(self.etcd_peer_port)),
            "--log-level",
            "warn",
        ]
        .map(str::to_owned);
        let p = Supervised::start(
            &self.assets.join("etcd"),
            &args,
            &[("ETCD_UNSUPPORTED_ARCH", "")],
            &self.dir.join("etcd.log"),
            // The last supervisor to stop removes the whole working directory, unless
            // MCPTRUST_E2E_KEEP=1 asks to keep it (logs, kubeconfigs) for a post-mortem.
            (std::env::var_os("MCPTRUST_E2E_KEEP").is_none()).then_some(self.dir.as_path()),
        );
        *self.etcd.lock().unwrap() = Some(p);
    }

    fn start_apiserver(&self) {
        let d = |f: &str| self.dir.join(f).to_str().unwrap().to_owned();
        let args = [
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.api_port),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=RBAC".into(),
            format!("--client-ca-file={}", d("ca.crt")),
            format!("--tls-cert-file={}", d("serving.crt")),
            format!("--tls-private-key-file={}", d("serving.key")),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--endpoint-reconciler-type=none".into(),
            format!("--cert-dir={}", d("apiserver-certs")),
            "--allow-privileged=true".into(),
            // No kube-proxy: a webhook behind a Service is called at one of its
            // EndpointSlice's ready endpoints (a pod IP on the node's bridge).
            "--enable-aggregator-routing=true".into(),
            "--v=1".into(),
        ];
        let p = Supervised::start(
            &self.assets.join("kube-apiserver"),
            &args,
            &[],
            &self.dir.join("kube-apiserver.log"),
            None,
        );
        *self.apiserver.lock().unwrap() = Some(p);
    }

    /// The pids of kube-apiserver and etcd (`None` while one is down), for benchmarks that
    /// read their CPU time from `/proc/<pid>/stat`.
    pub fn pids(&self) -> (Option<u32>, Option<u32>) {
        let pid = |m: &Mutex<Option<Supervised>>| m.lock().unwrap().as_ref().map(|p| p.pid);
        (pid(&self.apiserver), pid(&self.etcd))
    }

    /// Waits until `/readyz` answers `ok`, panicking with the logs' tails after `limit`.
    pub fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.kubectl_output(&["get", "--raw", "/readyz"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "kube-apiserver not ready after {limit:?}: {}\n--- kube-apiserver log\n{}\n--- etcd log\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.log_tail("kube-apiserver", 30),
                    self.log_tail("etcd", 30),
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log_tail(&self, which: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{which}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills kube-apiserver (and with `etcd_too`, etcd) with SIGKILL, as a crash or a node
    /// loss would, starts them again after `down_for` on the same ports and data, and waits
    /// for `/readyz`. For fault tests; other tests of the same binary see the outage.
    pub fn restart(&self, etcd_too: bool, down_for: Duration) {
        if let Some(mut p) = self.apiserver.lock().unwrap().take() {
            p.signal("KILL");
            p.stop();
        }
        if etcd_too {
            let mut guard = self.etcd.lock().unwrap();
            if let Some(p) = guard.as_ref() {
                p.signal("KILL");
                p.wait_exit(Duration::from_secs(10));
            }
            // Its supervisor must not remove the data directory now: leave it blocked on
            // its pipe until the binary exits (when it finds its child gone and cleans up).
            std::mem::forget(guard.take());
        }
        std::thread::sleep(down_for);
        if etcd_too {
            self.start_etcd();
        }
        self.start_apiserver();
        self.wait_ready(Duration::from_secs(90));
    }

    /// A new `kube::Client` with admin rights (one per test: a client belongs to the
    /// tokio runtime it was first used in).
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig).await
    }

    /// Runs `kubectl --kubeconfig <admin> args...`.
    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        kubectl_with(&self.kubeconfig, args, None)
    }

    /// Runs kubectl and returns its stdout, panicking with stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kubectl with `stdin` as its input (`-f -`); returns the whole output.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        kubectl_with(&self.kubeconfig, args, Some(stdin))
    }

    /// `kubectl get args... -o json`, parsed; panics when kubectl fails.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).unwrap()
    }

    /// A forced server-side apply of `obj` (field manager `e2e`); panics when it fails.
    pub fn apply(&self, obj: &serde_json::Value) {
        let out = self.kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=e2e",
                "--force-conflicts",
                "-f",
                "-",
            ],
            &obj.to_string(),
        );
        assert!(
            out.status.success(),
            "applying {obj}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A fresh namespace with a `default` ServiceAccount (no controller-manager creates one
    /// here): `prefix` itself the first time a binary asks for it, then `<prefix>-<n>`.
    pub fn namespace(&self, prefix: &str) -> String {
        let name = {
            let mut used = self.namespaces.lock().unwrap();
            let n = used.entry(prefix.to_owned()).or_insert(0);
            *n += 1;
            if *n == 1 {
                prefix.to_owned()
            } else {
                format!("{prefix}-{}", *n - 1)
            }
        };
        self.kubectl(&["create", "namespace", &name]);
        // With a node, kube-controller-manager may have made it already.
        let sa = self.kubectl_output(&["-n", &name, "create", "serviceaccount", "default"]);
        assert!(
            sa.status.success() || String::from_utf8_lossy(&sa.stderr).contains("already exists"),
            "creating ServiceAccount {name}/default: {}",
            String::from_utf8_lossy(&sa.stderr)
        );
        name
    }

    /// Applies `crds/` server-side once per binary and waits until the CRDs are
    /// Established. Returns kubectl's stderr of that apply (warnings), empty on later calls.
    pub fn install_crds(&self) -> String {
        let mut warnings = String::new();
        self.crds.get_or_init(|| {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
            let out =
                self.kubectl_output(&["apply", "--server-side", "--field-manager=e2e", "-f", dir]);
            assert!(
                out.status.success(),
                "applying crds/: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            warnings = String::from_utf8_lossy(&out.stderr).into_owned();
            self.kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/mcpservers.mcptrust.io",
            ]);
        });
        warnings
    }

    /// Creates ServiceAccount `sa` in `namespace` and returns a kubeconfig file holding a
    /// TokenRequest token for it (`kubectl create token`), valid for an hour.
    pub fn service_account_kubeconfig(&self, namespace: &str, sa: &str) -> PathBuf {
        let _ = self.kubectl_output(&["-n", namespace, "create", "serviceaccount", sa]);
        let token = self.kubectl(&["-n", namespace, "create", "token", sa, "--duration=1h"]);
        let path = self.dir.join(format!("{namespace}-{sa}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig_yaml(
                &self.server,
                &self.ca_pem,
                &format!("token: {}", token.trim()),
            ),
        )
        .unwrap();
        path
    }
}

/// A client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Runs `kubectl --kubeconfig K args...`, optionally feeding `stdin`.
pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl on PATH");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Polls `cond` every 100 ms for up to `limit`; panics with `what` on time-out.
pub fn wait_until(limit: Duration, what: &str, cond: impl FnMut() -> bool) {
    wait_until_or(limit, what, cond, String::new);
}

/// [`wait_until`], adding what `diagnose` says to the panic message.
pub fn wait_until_or(
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
    diagnose: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                diagnose()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `mcptrust` binary built for this test run.
pub fn mcptrust_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcptrust"))
}

/// `mcptrust run` out of cluster under a supervisor, logging to `<cp.dir>/<name>.log`.
pub fn start_operator(
    cp: &ControlPlane,
    name: &str,
    kubeconfig: &Path,
    args: &[&str],
) -> Supervised {
    let mut all = vec![
        "run".to_owned(),
        "--kubeconfig".to_owned(),
        kubeconfig.to_str().unwrap().to_owned(),
    ];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    Supervised::start(
        &mcptrust_bin(),
        &all,
        &[("MCPTRUST_LOG", "info,mcptrust=debug"), ("POD_NAME", name)],
        &cp.dir.join(format!("{name}.log")),
        None,
    )
}

/// `GET path` over plain HTTP/1.0 on `127.0.0.1:port` (the admin port); the body, or an
/// empty string when nothing answers.
pub fn http_get(port: u16, path: &str) -> String {
    http_get_at("127.0.0.1", port, path)
}

/// `GET path` over plain HTTP/1.0 on `host:port` (an IP, e.g. a pod's admin port over the
/// node's bridge); the body, or an empty string when nothing answers within 5 s.
pub fn http_get_at(host: &str, port: u16, path: &str) -> String {
    use std::io::Read as _;
    let Ok(addr) = format!("{host}:{port}").parse::<std::net::SocketAddr>() else {
        return String::new();
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The sum of every sample of metric families whose name contains `needle` in a
/// Prometheus text exposition.
pub fn metric_sum(exposition: &str, needle: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' '])
                .next()
                .is_some_and(|n| n.contains(needle))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The documents of a rendered chart (`target/chart-render/<case>.yaml`, written by
/// `ci/helm-lint.py`, which `.ci/run` runs before the tests) whose kind is in `kinds`.
/// `None` (after [`super::skip::skip_or_fail`]) when the renders are missing or older than
/// the chart ([`super::skip::chart_renders`]).
///
/// # Panics
/// When the renders are fresh but `case` is not among them.
pub fn chart_documents(case: &str, kinds: &[&str]) -> Option<Vec<serde_json::Value>> {
    let path = super::skip::chart_renders()?.join(format!("{case}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (a case ci/helm-lint.py renders?)", path.display()));
    Some(
        mcptrust::inject::manifest::split_documents(&text)
            .into_iter()
            .filter_map(|d| {
                serde_saphyr::from_str::<Option<serde_json::Value>>(d.text)
                    .ok()
                    .flatten()
            })
            .filter(|v| v["kind"].as_str().is_some_and(|k| kinds.contains(&k)))
            .collect(),
    )
}

/// The operator's log with every line that mentions a refusal by the API server
/// (`forbidden`, 403): what a least-privilege test must not find.
pub fn forbidden_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden") || l.contains(" 403")
        })
        .map(str::to_owned)
        .collect()
}

/// `mcptrust run` as a controller only (no webhook, no endpoint probe: out of cluster,
/// Service names do not resolve) with admin rights, its operator namespace `namespace` and
/// its admin port on a free loopback port.
pub fn start_controller(cp: &ControlPlane, name: &str, namespace: &str) -> Supervised {
    start_controller_on(cp, name, namespace, free_port())
}

/// [`start_controller`] with its admin port (`/metrics`) on `127.0.0.1:admin_port`.
pub fn start_controller_on(
    cp: &ControlPlane,
    name: &str,
    namespace: &str,
    admin_port: u16,
) -> Supervised {
    start_operator(
        cp,
        name,
        &cp.kubeconfig,
        &[
            "--operator-namespace",
            namespace,
            "--disable-webhook",
            "--disable-endpoint-probe",
            "--admin-listen",
            &format!("127.0.0.1:{admin_port}"),
        ],
    )
}

/// The items of `kubectl -n ns get kind -o json`.
///
/// # Panics
/// When kubectl fails or prints no `items` list (an empty answer must not pass for "no
/// objects").
pub fn list_objects(cp: &ControlPlane, ns: &str, kind: &str) -> Vec<serde_json::Value> {
    let text = cp.kubectl(&["-n", ns, "get", kind, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("kubectl get {kind} -n {ns}: not JSON ({e}): {text}"));
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("kubectl get {kind} -n {ns}: no items: {text}"))
}

/// How many McpServers in `ns` have `Ready=True`.
pub fn ready_count(cp: &ControlPlane, ns: &str) -> usize {
    list_objects(cp, ns, "mcps")
        .iter()
        .filter(|s| {
            s["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .count()
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`...), in KiB; 0 when unreadable.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// McpServer `server-<i>` in `ns`: streamable HTTP at `https://server-<i>.<ns>.svc:8443/mcp/`,
/// mTLS with one client `gateway-<i>`, the system roots (the CRD's defaults).
pub fn mtls_server(ns: &str, i: usize) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "mcptrust.io/v1alpha1", "kind": "McpServer",
        "metadata": {"name": format!("server-{i}"), "namespace": ns},
        "spec": {
            "transport": "streamable-http",
            "endpoint": {"url": format!("https://server-{i}.{ns}.svc:8443/mcp/")},
            "mtls": {"clients": [{"name": format!("gateway-{i}")}]},
        },
    })
}

/// The binary's control plane with the CRDs installed, a namespace for the operator
/// (`mcptrust`) and one for the McpServers (`app`); `None` when e2e tests are skipped.
pub fn with_operator_namespaces(app: &str) -> Option<(&'static ControlPlane, String, String)> {
    let cp = control_plane()?;
    cp.install_crds();
    Some((cp, cp.namespace("mcptrust"), cp.namespace(app)))
}

/// `helm install|upgrade` of `charts/mcptrust` as `release` in `namespace`, with `values`
/// (JSON), through Helm's own library (helm-sdkpy, `ci/helm-release.py`). Helm's error
/// text on failure.
pub fn helm_release(
    cp: &ControlPlane,
    action: &str,
    release: &str,
    namespace: &str,
    values: &serde_json::Value,
) -> Result<String, String> {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/ci/helm-release.py"))
        .args([
            action,
            cp.kubeconfig.to_str().unwrap(),
            release,
            namespace,
            &values.to_string(),
        ])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The `caBundle` of the chart's MutatingWebhookConfiguration `mcptrust` (base64), empty
/// when unset.
///
/// # Panics
/// When the configuration or its webhook is missing: an absent object must not pass for
/// "no caBundle".
pub fn webhook_ca_bundle(cp: &ControlPlane) -> String {
    cp.kubectl(&[
        "get",
        "mutatingwebhookconfiguration",
        "mcptrust",
        "-o",
        "jsonpath={.webhooks[0].name}{\"\\n\"}{.webhooks[0].clientConfig.caBundle}",
    ])
    .split_once('\n')
    .filter(|(name, _)| !name.is_empty())
    .map(|(_, bundle)| bundle.to_owned())
    .expect("the chart's MutatingWebhookConfiguration has a webhook")
}

/// Whether Helm's library (helm-sdkpy) is importable; `false` after
/// [`super::skip::skip_or_fail`] (one line, or a failure when e2e tests are required).
pub fn helm_sdk() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import helm_sdkpy"])
        .output();
    if probe.is_ok_and(|o| o.status.success()) {
        return true;
    }
    super::skip::skip_or_fail(
        "helm-sdkpy",
        "pip install --ignore-requires-python helm-sdkpy cffi",
    );
    false
}
