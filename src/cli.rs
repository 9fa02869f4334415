//! The command line: one binary, `mcptrust`, with subcommands. Every flag also reads an
//! environment variable (shown in `--help`), as in Linkerd's and kube-rs' controllers.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::api::McpServer;
use crate::telemetry::LogArgs;

// Kept at their old paths for callers of `mcptrust::cli::{ConfigArgs, wait_stop}`; they
// live below both the command line and the operator.
pub use crate::config::ConfigArgs;
pub use crate::shutdown::wait_stop;

/// mcptrust: TLS that just works for MCP servers and their sandboxes.
#[derive(Parser, Debug)]
#[command(name = "mcptrust", version, about, long_about = None)]
pub struct Cli {
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inject the CA volume, the CA/proxy env block and annotations into manifests
    /// (Pods and workloads), offline, like `istioctl kube-inject`.
    Inject(InjectArgs),
    /// Serve the mutating admission webhook (AdmissionReview v1 over HTTPS) and the
    /// admin port, injecting from the config file (no cluster needed).
    Webhook(WebhookCommand),
    /// Assemble a trust bundle: `ca.pem` (private CAs) and `ca-bundle.pem` (Mozilla roots
    /// plus private CAs).
    Bundle(crate::pki::cli::BundleArgs),
    /// Print the McpServer CustomResourceDefinition (YAML).
    Crd,
    /// Print a generated reference document (`docs/api.md`, the values table of
    /// `docs/helm.md`).
    #[command(subcommand)]
    Docs(DocsCommand),
    /// Diagnose one MCP endpoint the way the controller does: DNS, TCP, proxy CONNECT, TLS
    /// handshake, HTTP and the MCP `initialize` exchange. The exit code names the failure
    /// class (see docs/probe.md).
    Probe(crate::probe::ProbeArgs),
    /// Run the operator: controller (leader-elected), webhook and admin port, in cluster or
    /// out of cluster against any kubeconfig.
    Run(Box<crate::operator::RunArgs>),
    /// Renew an McpServer's certificates now (as `cmctl renew`): annotates it, and the
    /// controller re-issues once and records it in an Event.
    Renew(crate::renew::RenewArgs),
    /// The `mcptrust-reloader` sidecar of `rotation.strategy: Signal`: watches the mounted
    /// certificate directories and signals the pod's server process when that is safe.
    Reload(crate::reload::cli::ReloadArgs),
}

/// `mcptrust docs` subcommands.
#[derive(Subcommand, Debug)]
pub enum DocsCommand {
    /// The McpServer API reference from the CRD schema (`docs/api.md`).
    Api,
    /// The chart's values table, from `values.yaml` and `values.schema.json`.
    HelmValues {
        /// The chart directory.
        #[arg(long, env = "MCPTRUST_DOCS_CHART", default_value = "charts/mcptrust")]
        chart: PathBuf,
        /// Write the table into this file, between its generated-table markers, instead
        /// of printing it (e.g. `docs/helm.md`).
        #[arg(long, env = "MCPTRUST_DOCS_UPDATE")]
        update: Option<PathBuf>,
    },
}

/// Runs `mcptrust docs`.
fn docs(command: DocsCommand) -> anyhow::Result<ExitCode> {
    match command {
        DocsCommand::Api => print!("{}", crate::docs::api_markdown()?),
        DocsCommand::HelmValues { chart, update } => {
            let read = |name: &str| {
                std::fs::read_to_string(chart.join(name))
                    .with_context(|| format!("reading {}", chart.join(name).display()))
            };
            let table = crate::docs::helm_values_markdown(
                &read("values.yaml")?,
                &read("values.schema.json")?,
            )?;
            match update {
                None => print!("{table}"),
                Some(path) => {
                    let doc = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let new = crate::docs::replace_generated(&doc, &table).with_context(|| {
                        format!("{} has no generated-table markers", path.display())
                    })?;
                    std::fs::write(&path, new)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `mcptrust inject` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct InjectArgs {
    /// Manifest file (multi-document YAML), or `-` for standard input.
    #[arg(
        short = 'f',
        long = "filename",
        env = "MCPTRUST_INJECT_FILE",
        default_value = "-"
    )]
    pub filename: String,
    /// An McpServer manifest whose trust, proxy and env apply to the pods it selects.
    #[arg(long = "mcpserver", env = "MCPTRUST_INJECT_MCPSERVER")]
    pub mcpserver: Option<PathBuf>,
    /// Config.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `mcptrust webhook` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookCommand {
    /// Webhook listener and TLS files.
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookArgs,
    /// Admin port.
    #[command(flatten)]
    pub admin: crate::admin::AdminArgs,
    /// Config.
    #[command(flatten)]
    pub config: ConfigArgs,
}

fn read_input(name: &str) -> anyhow::Result<String> {
    if name == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(name).with_context(|| format!("cannot read {name}"))
    }
}

/// Loads an McpServer manifest (YAML).
///
/// # Errors
/// Unreadable file, invalid YAML, or not an McpServer.
pub fn load_mcpserver(path: &std::path::Path) -> anyhow::Result<McpServer> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read McpServer {}", path.display()))?;
    let server: McpServer = serde_saphyr::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "invalid McpServer {}: {}",
            path.display(),
            crate::config::parse_message(&e)
        )
    })?;
    Ok(server)
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the subcommand reports; `main` prints it and exits 1.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd => {
            print!("{}", crate::api::crd_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Docs(command) => docs(command),
        Command::Inject(args) => {
            let config = args.config.load()?;
            let server = args.mcpserver.as_deref().map(load_mcpserver).transpose()?;
            let input = read_input(&args.filename)?;
            let out = crate::inject::manifest::inject_manifests(&input, &config, server.as_ref())
                .map_err(|e| anyhow::anyhow!("{}: {e}", args.filename))?;
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle(args) => {
            let summary = crate::pki::cli::run(&args)?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe(args) => {
            let (out, code) = block_on(crate::probe::cli::run(&args))?;
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            Ok(ExitCode::from(code))
        }
        Command::Renew(args) => {
            println!("{}", block_on(crate::renew::run(&args))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload(args) => {
            block_on(crate::reload::run::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            block_on(crate::operator::run(*args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Webhook(args) => {
            let config = args.config.load()?;
            block_on(crate::webhook::standalone::run(
                &args.webhook,
                &args.admin,
                &config,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `fut` to completion on a fresh multi-threaded tokio runtime.
fn block_on<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(fut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_positional() || matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_env().is_none() {
                missing.push(format!("{path} --{id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            check(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }

    #[test]
    fn every_flag_has_an_env_var() {
        let mut missing = Vec::new();
        check(&Cli::command(), "mcptrust", &mut missing);
        assert!(missing.is_empty(), "flags without env: {missing:?}");
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
