//! Start-up failures of the real binary (`mcptrust webhook`, `mcptrust run`): each fatal
//! error exits non-zero at once with exactly one `error:` line naming the file or address
//! and the cause once; the deliberate waits (an unreachable API server) are logged with the
//! server's URL, the retry period and how long it has failed, and end cleanly on SIGTERM.
//!
//! Time to exit is measured here from spawn (or from SIGTERM) to exit, bounded generously
//! by [`EXIT_BOUND`]; the measured figure is printed.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestCa, TlsFiles, free_port, self_signed};

/// The bound on time to exit (the "within a second", with room for a loaded CI).
const EXIT_BOUND: Duration = Duration::from_secs(5);
/// Past this, the child is killed and the test fails.
const HARD_LIMIT: Duration = Duration::from_secs(30);

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcptrust"));
    cmd.env_remove("MCPTRUST_LOG")
        .env_remove("KUBECONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// How a run ended.
struct Exit {
    code: Option<i32>,
    stderr: String,
    elapsed: Duration,
}

impl Exit {
    /// The lines starting with `error:` (there must be exactly one, the last line).
    fn error_line(&self) -> &str {
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "one error line: {}", self.stderr);
        assert_eq!(
            self.stderr.lines().last(),
            Some(errors[0]),
            "the error line is the last line: {}",
            self.stderr
        );
        errors[0]
    }
}

/// Waits for `child` (stderr piped to a file `log`) up to [`HARD_LIMIT`], timing from `t0`.
fn wait(mut child: Child, log: &Path, t0: Instant) -> Exit {
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if t0.elapsed() > HARD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {HARD_LIMIT:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Exit {
        code: status.code(),
        stderr: std::fs::read_to_string(log).expect("stderr log"),
        elapsed: t0.elapsed(),
    }
}

/// Runs `mcptrust <args>` to its exit.
fn run_to_exit(dir: &Path, args: &[&str]) -> Exit {
    run_to_exit_with(dir, args, &[])
}

/// [`run_to_exit`] with environment variables set.
fn run_to_exit_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Exit {
    let log = dir.join(format!("stderr-{}.log", free_port()));
    let t0 = Instant::now();
    let child = bin()
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn mcptrust");
    wait(child, &log, t0)
}

/// Asserts a fatal start-up: exit code 1, within [`EXIT_BOUND`], with exactly `line`.
fn assert_fails(dir: &Path, args: &[&str], line: &str) {
    let exit = run_to_exit(dir, args);
    println!("{args:?}: exit {:?} after {:?}", exit.code, exit.elapsed);
    assert_eq!(exit.error_line(), line, "stderr: {}", exit.stderr);
    assert_eq!(exit.code, Some(1), "stderr: {}", exit.stderr);
    assert!(
        exit.elapsed < EXIT_BOUND,
        "took {:?} to exit: {}",
        exit.elapsed,
        exit.stderr
    );
}

fn os_error(code: i32) -> String {
    std::io::Error::from_raw_os_error(code).to_string()
}

const ENOENT: i32 = 2;
const EISDIR: i32 = 21;
const EADDRINUSE: i32 = 98;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `mcptrust webhook` flags with both ports on free loopback ports and `files`.
fn webhook_args(files: &TlsFiles) -> Vec<String> {
    let mut args = vec!["webhook".to_owned()];
    args.extend(serve_args(
        &format!("127.0.0.1:{}", free_port()),
        &format!("127.0.0.1:{}", free_port()),
        files,
    ));
    args
}

/// The admin and webhook addresses and the TLS files, as flags.
fn serve_args(admin: &str, webhook: &str, files: &TlsFiles) -> Vec<String> {
    [
        "--admin-listen",
        admin,
        "--webhook-listen",
        webhook,
        "--tls-cert-file",
        s(&files.cert),
        "--tls-key-file",
        s(&files.key),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A valid serving pair in a tempdir.
fn valid_files() -> (tempfile::TempDir, TlsFiles) {
    let ca = TestCa::new("startup test CA");
    TlsFiles::temp_with(&ca.server_leaf(&["localhost"]))
}

#[test]
fn webhook_tls_files_missing() {
    let (dir, files) = TlsFiles::temp();
    assert_fails(
        dir.path(),
        &refs(&webhook_args(&files)),
        &format!(
            "error: cannot read {}: {}",
            files.cert.display(),
            os_error(ENOENT)
        ),
    );
}

#[test]
fn webhook_tls_cert_file_names_a_directory() {
    let (dir, files) = valid_files();
    let mut args = webhook_args(&files);
    args[6] = s(dir.path()).into();
    assert_fails(
        dir.path(),
        &refs(&args),
        &format!(
            "error: cannot read {}: {}",
            dir.path().display(),
            os_error(EISDIR)
        ),
    );
}

#[test]
fn webhook_cert_and_key_do_not_match() {
    let (dir, files) = valid_files();
    // Another certificate's key.
    std::fs::write(&files.key, self_signed("other", &["other"]).key_pem).expect("key");
    assert_fails(
        dir.path(),
        &refs(&webhook_args(&files)),
        &format!(
            "error: private key {} does not match certificate {}: {}",
            files.key.display(),
            files.cert.display(),
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)
        ),
    );
}

#[test]
fn webhook_certificate_expired() {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).expect("cert");
    let (dir, files) = TlsFiles::temp();
    std::fs::write(&files.cert, cert.pem()).expect("cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("key");
    let not_after = mcptrust::tls::CertInfo::from_der(cert.der())
        .expect("info")
        .not_after_text;
    assert_fails(
        dir.path(),
        &refs(&webhook_args(&files)),
        &format!(
            "error: certificate {} expired at {not_after}",
            files.cert.display()
        ),
    );
}

/// `mcptrust webhook` with the address at `args[index]` taken: fails with
/// `cannot listen on <addr><what>: Address already in use`.
fn assert_port_in_use(index: usize, what: &str) {
    let (dir, files) = valid_files();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let mut args = webhook_args(&files);
    args[index] = addr.to_string();
    assert_fails(
        dir.path(),
        &refs(&args),
        &format!(
            "error: cannot listen on {addr}{what}: {}",
            os_error(EADDRINUSE)
        ),
    );
}

#[test]
fn webhook_admin_port_in_use() {
    assert_port_in_use(2, " (admin port)");
}

/// The webhook fails after the admin port is up: the admin port must stop too (the
/// process used to linger with probes answered and no webhook until a signal).
#[test]
fn webhook_port_in_use_stops_the_admin_port() {
    assert_port_in_use(4, "");
}

#[test]
fn config_file_missing() {
    let (dir, files) = valid_files();
    let config = dir.path().join("missing.yaml");
    let mut args = webhook_args(&files);
    args.extend(["--config".into(), s(&config).into()]);
    assert_fails(
        dir.path(),
        &refs(&args),
        &format!(
            "error: cannot read config {}: {}",
            config.display(),
            os_error(ENOENT)
        ),
    );
}

#[test]
fn config_file_invalid_names_line_and_column() {
    let (dir, files) = valid_files();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "proxy:\n  url: [\n").expect("config");
    let mut args = webhook_args(&files);
    args.extend(["--config".into(), s(&config).into()]);
    assert_fails(
        dir.path(),
        &refs(&args),
        &format!(
            "error: invalid config {}: unclosed bracket '[' at line 2, column 8",
            config.display()
        ),
    );
    std::fs::write(&config, "proxi: {}\n").expect("config");
    let exit = run_to_exit(dir.path(), &refs(&args));
    let line = exit.error_line();
    assert!(
        line.starts_with(&format!(
            "error: invalid config {}: unknown field `proxi`",
            config.display()
        )) && line.ends_with(" at line 1, column 1"),
        "{line}"
    );
}

/// A kubeconfig for `server` that trusts `ca_pem` (or skips verification without it).
fn kubeconfig(dir: &Path, server: &str, ca_pem: Option<&str>) -> PathBuf {
    use base64::Engine as _;
    let trust = match ca_pem {
        Some(pem) => format!(
            "certificate-authority-data: {}",
            base64::engine::general_purpose::STANDARD.encode(pem)
        ),
        None => "insecure-skip-tls-verify: true".to_owned(),
    };
    let path = dir.join("kubeconfig.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    {trust}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\nusers:\n- name: test\n  user: {{token: abc}}\n"
        ),
    )
    .expect("kubeconfig");
    path
}

/// A kubeconfig for a loopback port where nothing listens, and that server's URL.
fn unreachable_kubeconfig(dir: &Path) -> (PathBuf, String) {
    let server = format!("https://127.0.0.1:{}", free_port());
    (kubeconfig(dir, &server, None), server)
}

fn run_args(kubeconfig: &Path, admin_port: u16) -> Vec<String> {
    vec![
        "run".into(),
        "--kubeconfig".into(),
        s(kubeconfig).into(),
        "--admin-listen".into(),
        format!("127.0.0.1:{admin_port}"),
        "--webhook-listen".into(),
        format!("127.0.0.1:{}", free_port()),
    ]
}

#[test]
fn kubeconfig_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nonexistent");
    assert_fails(
        dir.path(),
        &refs(&run_args(&missing, free_port())),
        &format!(
            "error: cannot read kubeconfig {}: {}",
            missing.display(),
            os_error(ENOENT)
        ),
    );
}

/// Unreadable: a directory (permission bits do not stop root, who runs CI).
#[test]
fn kubeconfig_unreadable() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_fails(
        dir.path(),
        &refs(&run_args(dir.path(), free_port())),
        &format!(
            "error: cannot read kubeconfig {}: {}",
            dir.path().display(),
            os_error(EISDIR)
        ),
    );
}

/// No `--kubeconfig`, not in a cluster, no `~/.kube/config`: kube's message (which names
/// the file it tried), its cause once.
#[test]
fn no_cluster_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exit = run_to_exit_with(
        dir.path(),
        &["run", "--admin-listen", "127.0.0.1:0"],
        &[("HOME", s(dir.path())), ("KUBERNETES_SERVICE_HOST", "")],
    );
    let line = exit.error_line();
    assert!(
        line.starts_with("error: no cluster configuration found: failed to infer config: "),
        "{line}"
    );
    assert!(
        line.contains(&format!("{}/.kube/config", dir.path().display())),
        "{line}"
    );
    assert_eq!(line.matches(&os_error(ENOENT)).count(), 1, "{line}");
    assert_eq!(exit.code, Some(1));
    assert!(exit.elapsed < EXIT_BOUND, "took {:?}", exit.elapsed);
}

#[test]
fn kubeconfig_invalid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig.yaml");
    std::fs::write(&path, "clusters: [\n").expect("write");
    assert_fails(
        dir.path(),
        &refs(&run_args(&path, free_port())),
        &format!(
            "error: invalid kubeconfig {}: unclosed bracket '[' at line 1, column 11",
            path.display()
        ),
    );
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\ncurrent-context: nope\n",
    )
    .expect("write");
    assert_fails(
        dir.path(),
        &refs(&run_args(&path, free_port())),
        &format!(
            "error: invalid kubeconfig {}: failed to load current context: nope",
            path.display()
        ),
    );
}

#[test]
fn run_admin_port_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kc, _) = unreachable_kubeconfig(dir.path());
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    assert_fails(
        dir.path(),
        &refs(&run_args(&kc, addr.port())),
        &format!(
            "error: cannot listen on {addr} (admin port): {}",
            os_error(EADDRINUSE)
        ),
    );
}

/// `provided` mode: the files must exist before the pod starts, so missing ones are fatal
/// before anything listens (the other modes wait for them on purpose).
#[test]
fn run_provided_tls_files_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kc, _) = unreachable_kubeconfig(dir.path());
    let cert = dir.path().join("tls.crt");
    let mut args = run_args(&kc, free_port());
    args.extend([
        "--webhook-cert-mode".into(),
        "provided".into(),
        "--tls-cert-file".into(),
        s(&cert).into(),
        "--tls-key-file".into(),
        s(&dir.path().join("tls.key")).into(),
    ]);
    assert_fails(
        dir.path(),
        &refs(&args),
        &format!(
            "error: cannot read {}: {}",
            cert.display(),
            os_error(ENOENT)
        ),
    );
}

/// Starts `mcptrust run` against `kc`; returns the child, its stderr log and admin port.
fn start_run(dir: &Path, kc: &Path) -> (Child, PathBuf, u16) {
    let admin = free_port();
    let log = dir.join("run.log");
    let child = bin()
        .args(refs(&run_args(kc, admin)))
        .env("POD_NAME", "startup-test")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn mcptrust run");
    (child, log, admin)
}

/// The `leader election:` warnings logged so far, from their message on.
fn election_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.find("leader election: ").map(|i| l[i..].to_owned()))
        .collect()
}

/// Waits (up to 30 s) until at least `n` election warnings are logged.
fn wait_for_lines(log: &Path, n: usize) -> Vec<String> {
    let t0 = Instant::now();
    loop {
        let lines = election_lines(log);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            t0.elapsed() < HARD_LIMIT,
            "no {n} election warnings: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm_exits_cleanly(child: Child, log: &Path) {
    let pid = child.id().to_string();
    let t0 = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = wait(child, log, t0);
    println!("SIGTERM to exit: {:?}", exit.elapsed);
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
    assert!(exit.elapsed < EXIT_BOUND, "took {:?}", exit.elapsed);
    assert!(
        !exit.stderr.lines().any(|l| l.starts_with("error:")),
        "{}",
        exit.stderr
    );
}

/// The API server is unreachable: `run` keeps retrying (not fatal), logs each attempt with
/// the server's URL, the retry period and how long it has failed, says on `/readyz` what it
/// waits for, and a SIGTERM ends it cleanly.
#[test]
fn api_server_unreachable_is_retried_with_its_address_and_ends_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kc, server) = unreachable_kubeconfig(dir.path());
    let (child, log, admin) = start_run(dir.path(), &kc);
    let lines = wait_for_lines(&log, 2);
    let refused = format!(
        "leader election: cannot reach the API server {server}: client error (Connect): tcp connect error: {}; retrying in 2s",
        os_error(111)
    );
    assert_eq!(lines[0], format!("{refused} (failing for 0s)"), "{lines:?}");
    assert_eq!(lines[1], format!("{refused} (failing for 2s)"), "{lines:?}");
    assert_eq!(
        common::envtest::http_get(admin, "/readyz"),
        format!("not ready: waiting for the API server {server} (webhook caches)")
    );
    // kube's own per-request ERROR line (no address) is not printed.
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains("kube_client"), "{text}");
    sigterm_exits_cleanly(child, &log);
}

/// A TLS failure to the API server names the CA that the client trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_with_an_unknown_ca_names_the_trusted_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A real TLS server on loopback whose certificate the kubeconfig's CA did not sign.
    let server_ca = TestCa::new("the API server's CA");
    let leaf = server_ca.server_leaf(&["127.0.0.1"]);
    let (_files_dir, files) = TlsFiles::temp_with(&leaf);
    let (server, _metrics) =
        common::TestServer::start_default(&files, common::embedded_mutator()).await;
    let url = format!("https://{}", server.addr);
    let other_ca = TestCa::new("not the API server's CA");
    let kc = kubeconfig(dir.path(), &url, Some(&other_ca.pem));
    let (child, log, _admin) = start_run(dir.path(), &kc);
    let lines = tokio::task::spawn_blocking({
        let log = log.clone();
        move || wait_for_lines(&log, 1)
    })
    .await
    .expect("join");
    assert_eq!(
        lines[0],
        format!(
            "leader election: cannot reach the API server {url} (trusting the CA from certificate-authority-data of cluster \"test\" in {}): client error (Connect): invalid peer certificate: UnknownIssuer; retrying in 2s (failing for 0s)",
            kc.display()
        )
    );
    tokio::task::spawn_blocking(move || sigterm_exits_cleanly(child, &log))
        .await
        .expect("join");
    server.stop().await;
}

/// Starts `mcptrust run` on the envtest control plane (webhook only), stderr to `log`.
fn start_run_on(cp: &common::envtest::ControlPlane, log: &Path, args: &[String]) -> Child {
    cp.install_crds();
    bin()
        .args([
            "run",
            "--kubeconfig",
            s(&cp.kubeconfig),
            "--disable-controller",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn mcptrust run")
}

/// certManager mode: the webhook waits for its Secret volume on purpose, logs `waiting for
/// <path>` at once, says so on `/readyz`, turns ready once the files appear, and a SIGTERM
/// ends it cleanly.
#[test]
fn run_waits_for_cert_manager_files_and_says_so() {
    let Some(cp) = common::envtest::control_plane() else {
        return;
    };
    let (dir, files) = TlsFiles::temp();
    let admin = free_port();
    let log = dir.path().join("run.log");
    let mut args = serve_args(
        &format!("127.0.0.1:{admin}"),
        &format!("127.0.0.1:{}", free_port()),
        &files,
    );
    args.extend(["--webhook-cert-mode".into(), "certManager".into()]);
    let child = start_run_on(cp, &log, &args);
    let waiting = format!("waiting for {}", files.cert.display());
    common::envtest::wait_until(HARD_LIMIT, "the waiting line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&waiting))
    });
    let text = std::fs::read_to_string(&log).expect("log");
    let line = text
        .lines()
        .find_map(|l| l.find(&waiting).map(|i| &l[i..]))
        .expect("line");
    assert_eq!(
        line.split(" mode=").next(),
        Some(
            format!(
                "{waiting} (the Secret is written by cert-manager): cannot read {}: {}",
                files.cert.display(),
                os_error(ENOENT)
            )
            .as_str()
        ),
        "{text}"
    );
    assert_eq!(
        common::envtest::http_get(admin, "/readyz"),
        format!("not ready: {waiting}")
    );
    // cert-manager fills the volume: the webhook turns ready (polled every 2 s).
    files.write_kubernetes(
        &TestCa::new("cert-manager CA").server_leaf(&["localhost"]),
        1,
    );
    common::envtest::wait_until(HARD_LIMIT, "ready", || {
        common::envtest::http_get(admin, "/readyz") == "ready"
    });
    sigterm_exits_cleanly(child, &log);
}

/// `run`: the webhook port is taken. The webhook binds after its caches have synced; its
/// failure then stops the admin port and the caches, and the process exits at once.
#[test]
fn run_webhook_port_in_use_exits_at_once() {
    let Some(cp) = common::envtest::control_plane() else {
        return;
    };
    let (dir, files) = valid_files();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let log = dir.path().join("run.log");
    let t0 = Instant::now();
    let mut args = serve_args(
        &format!("127.0.0.1:{}", free_port()),
        &addr.to_string(),
        &files,
    );
    args.extend(["--webhook-cert-mode".into(), "provided".into()]);
    let child = start_run_on(cp, &log, &args);
    let exit = wait(child, &log, t0);
    println!(
        "run, webhook port in use: exit {:?} after {:?}",
        exit.code, exit.elapsed
    );
    assert_eq!(
        exit.error_line(),
        format!("error: cannot listen on {addr}: {}", os_error(EADDRINUSE))
    );
    assert_eq!(exit.code, Some(1));
    assert!(exit.elapsed < EXIT_BOUND, "took {:?}", exit.elapsed);
}
