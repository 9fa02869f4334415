//! `mcptrust reload` flags: what the webhook passes to the `mcptrust-reloader` sidecar.

use std::net::SocketAddr;
use std::path::PathBuf;

/// `mcptrust reload`: watch mounted certificate directories and signal the server process
/// of the pod (shared PID namespace) when they change, only when that is safe.
#[derive(clap::Args, Debug, Clone)]
pub struct ReloadArgs {
    /// Directories to watch, each a kubelet-managed volume mount (the sidecar watches the
    /// directory for kubelet's atomic `..data` rename, never the files). Repeat the flag,
    /// or separate with commas.
    #[arg(
        long = "watch",
        env = "MCPTRUST_RELOAD_WATCH",
        value_delimiter = ',',
        required = true
    )]
    pub watch: Vec<PathBuf>,
    /// The server certificate (PEM chain) whose pair with `--key` must parse and match,
    /// on two reads, before a signal is sent.
    #[arg(long, env = "MCPTRUST_RELOAD_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, env = "MCPTRUST_RELOAD_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The signal to send: SIGHUP, SIGUSR1 or SIGUSR2.
    #[arg(long, env = "MCPTRUST_RELOAD_SIGNAL", default_value = "SIGHUP", value_parser = parse_signal)]
    pub signal: crate::api::ReloadSignal,
    /// The target container's name: its processes carry
    /// `MCPTRUST_RELOADER_TARGET=<name>` in their environment (set by the webhook).
    #[arg(long, env = "MCPTRUST_RELOAD_CONTAINER")]
    pub container: Option<String>,
    /// A regular expression on the target's command line (arguments joined by spaces).
    #[arg(long, env = "MCPTRUST_RELOAD_PROCESS_NAME")]
    pub process_name: Option<String>,
    /// The McpServer says the target handles the signal (`spec.rotation.handlesSignal`);
    /// required to signal a Go program, whose `SigCgt` cannot tell.
    #[arg(long, env = "MCPTRUST_RELOAD_HANDLES_SIGNAL")]
    pub handles_signal: bool,
    /// Seconds of quiet after the last change before deciding (trailing edge).
    #[arg(long, env = "MCPTRUST_RELOAD_DEBOUNCE_SECONDS", default_value_t = 2)]
    pub debounce_seconds: u64,
    /// Seconds between re-hashes of the watched files, a backstop for a missed event.
    #[arg(long, env = "MCPTRUST_RELOAD_RESYNC_SECONDS", default_value_t = 60)]
    pub resync_seconds: u64,
    /// Seconds after a signal during which the target's exit counts as
    /// `SignalKilledTarget`.
    #[arg(long, env = "MCPTRUST_RELOAD_KILL_WATCH_SECONDS", default_value_t = 5)]
    pub kill_watch_seconds: u64,
    /// Admin address: `/livez`, `/readyz`, `/metrics`, `/status`.
    #[arg(
        long,
        env = "MCPTRUST_RELOAD_ADMIN_ADDR",
        default_value = "0.0.0.0:9899"
    )]
    pub admin_addr: SocketAddr,
    /// The proc filesystem of the shared PID namespace (tests point it elsewhere only for
    /// fixtures; the sidecar always uses `/proc`).
    #[arg(long, env = "MCPTRUST_RELOAD_PROC", default_value = "/proc")]
    pub proc_root: PathBuf,
}

fn parse_signal(s: &str) -> Result<crate::api::ReloadSignal, String> {
    crate::api::ReloadSignal::parse(s)
        .ok_or_else(|| format!("{s:?} is not SIGHUP, SIGUSR1 or SIGUSR2"))
}
