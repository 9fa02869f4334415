//! Where the injection config comes from: the `--config` flag shared by `mcptrust inject`,
//! `mcptrust webhook` and `mcptrust run`, and its loading. It sits below both the command
//! line ([`crate::cli`]) and the operator ([`crate::operator`]) so neither imports the other.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::inject::InjectConfig;

/// Where the operator's injection config comes from.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Injection config file (YAML, see `examples/config.yaml`); without it the built-in
    /// default is used (a seed-000 sandbox proxy at 10.200.0.1:3128).
    #[arg(long = "config", env = "MCPTRUST_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    /// Loads the config file, or the embedded default.
    ///
    /// # Errors
    /// An unreadable file, or invalid YAML (with line and column).
    pub fn load(&self) -> anyhow::Result<InjectConfig> {
        match &self.config {
            None => Ok(InjectConfig::embedded_default()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                InjectConfig::from_yaml(&text)
                    .map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))
            }
        }
    }
}
