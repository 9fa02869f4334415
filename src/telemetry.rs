//! Logging setup (tracing). Logs go to stderr, so that `mcptrust inject` can write the
//! mutated manifest to stdout.

use clap::ValueEnum;

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log pipelines).
    Json,
}

/// Logging flags, flattened into every subcommand.
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Log filter in `tracing_subscriber::EnvFilter` syntax, e.g. `info` or
    /// `mcptrust=debug,kube=info`.
    #[arg(long, env = "MCPTRUST_LOG", default_value = "info", global = true)]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "MCPTRUST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(args: &LogArgs) {
    let mut filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // kube's client logs every failed request at ERROR without saying where it went
    // (`failed with error client error (Connect)`); mcptrust logs each failure once with the
    // server's URL (`crate::report::ApiServer`). Unless the filter names kube_client itself.
    if !args.log_level.contains("kube_client")
        && let Ok(quiet) = "kube_client::client::builder=off".parse()
    {
        filter = filter.add_directive(quiet);
    }
    // Colour only on a terminal: files, pipes and `kubectl logs` get plain text. NO_COLOR
    // (https://no-color.org) turns it off on a terminal too.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
