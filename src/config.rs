//! Where the injection config comes from: the `--config` flag shared by `mcptrust inject`,
//! `mcptrust webhook` and `mcptrust run`, and its loading. It sits below both the command
//! line ([`crate::cli`]) and the operator ([`crate::operator`]) so neither imports the other.

use std::path::PathBuf;

use crate::inject::InjectConfig;

/// Where the operator's injection config comes from.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Injection config file (YAML, see `examples/config.yaml`); without it the built-in
    /// default is used (a seed-000 sandbox proxy at 10.200.0.1:3128).
    #[arg(long = "config", env = "MCPTRUST_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Why the config file cannot be used; one line each, with the file named once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read (missing, permissions, a directory).
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid config: the YAML parser's message, with the line and column
    /// (`line 3 column 5: unknown field ...`), without its source snippet.
    #[error("invalid config {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's one-line message.
        message: String,
    },
}

impl ConfigError {
    /// A stable reason: `ConfigUnreadable` or `ConfigInvalid`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Read { .. } => "ConfigUnreadable",
            Self::Invalid { .. } => "ConfigInvalid",
        }
    }
}

/// The parser's message as one line: without the source snippet serde-saphyr renders
/// below it, and without its own `error: ` prefix.
pub(crate) fn parse_message(err: &serde_saphyr::Error) -> String {
    let text = err.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

impl ConfigArgs {
    /// Loads the config file, or the embedded default.
    ///
    /// # Errors
    /// [`ConfigError`]: an unreadable file, or invalid YAML (with line and column).
    pub fn load(&self) -> Result<InjectConfig, ConfigError> {
        match &self.config {
            None => Ok(InjectConfig::embedded_default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                InjectConfig::from_yaml(&text).map_err(|e| ConfigError::Invalid {
                    path: p.clone(),
                    message: parse_message(&e),
                })
            }
        }
    }
}
