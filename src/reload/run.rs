//! The `mcptrust reload` loop (to be built: watch, debounce, decide, signal, serve).

use super::cli::ReloadArgs;

/// Runs the sidecar until SIGTERM.
///
/// # Errors
/// Not built yet.
pub async fn run(args: ReloadArgs) -> anyhow::Result<()> {
    anyhow::bail!("mcptrust reload is not built yet ({:?})", args.watch)
}
