//! The `mcptrust` binary: installs the rustls crypto provider, parses the CLI, runs.

use clap::Parser;

/// mimalloc (feature `mimalloc`, on by default): see Cargo.toml and
/// docs/performance.md for the measured difference.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Exactly one process-level provider (ring), before anything touches TLS.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = mcptrust::cli::Cli::parse();
    mcptrust::telemetry::init(&cli.log);
    match mcptrust::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line, each cause once (see `mcptrust::report`).
            eprintln!("error: {}", mcptrust::report::one_line_anyhow(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
