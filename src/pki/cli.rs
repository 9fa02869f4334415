//! `mcptrust bundle`: assemble `ca.pem`, `ca-bundle.pem` and `ca-bundle.p12` from local PEM
//! files, the way
//! the controller assembles a trust ConfigMap, e.g. to build the chart's default bundle or
//! to check a CA file before putting it in a ConfigMap:
//!
//! ```text
//! mcptrust bundle --ca corp-proxy-ca.pem,corp-root.pem --out ./trust
//! ```

use std::path::PathBuf;

use anyhow::Context as _;

use super::bundle::{
    BUNDLE_FILE, BundleOptions, CA_FILE, CaInput, TRUSTSTORE_FILE, assemble, write_dir,
};

/// Arguments of `mcptrust bundle`. Every flag can also be set by an environment variable.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct BundleArgs {
    /// PEM files of private CA certificates (CERTIFICATE blocks only), in order; repeat the
    /// flag or separate paths with commas. Without any, ca.pem is empty and ca-bundle.pem
    /// holds the system roots.
    #[arg(
        long = "ca",
        env = "MCPTRUST_BUNDLE_CA",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub ca: Vec<PathBuf>,
    /// Directory to write ca.pem, ca-bundle.pem and ca-bundle.p12 into (created if
    /// missing; each file is replaced atomically).
    #[arg(long, env = "MCPTRUST_BUNDLE_OUT", value_name = "DIR")]
    pub out: PathBuf,
    /// Leave the Mozilla root program out of ca-bundle.pem (private-only trust); then
    /// ca-bundle.pem equals ca.pem.
    #[arg(long = "no-system-roots", env = "MCPTRUST_BUNDLE_NO_SYSTEM_ROOTS")]
    pub no_system_roots: bool,
}

/// Run `mcptrust bundle`: read each `--ca` file, [`assemble`] them (system roots
/// included unless `--no-system-roots`; "now" from the system clock), log each warning with
/// `tracing::warn!`, [`write_dir`], and return a one-paragraph summary naming the three
/// paths, the certificate counts and the SHA-256 of `ca-bundle.pem` and `ca-bundle.p12`.
///
/// # Errors
/// A file that cannot be read (named), any [`BundleError`](super::BundleError) (its
/// message names the file and PEM block), or a failure to write the directory.
pub fn run(args: &BundleArgs) -> anyhow::Result<String> {
    let inputs = args
        .ca
        .iter()
        .map(|path| {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read CA file {}", path.display()))?;
            Ok(CaInput::new(path.display().to_string(), pem))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let include_system_roots = !args.no_system_roots;
    let bundle = assemble(&inputs, &BundleOptions::at_now(include_system_roots))?;
    for warning in &bundle.warnings {
        tracing::warn!("{warning}");
    }
    write_dir(&bundle, &args.out)
        .with_context(|| format!("cannot write the bundle into {}", args.out.display()))?;

    let ca_path = args.out.join(CA_FILE);
    let bundle_path = args.out.join(BUNDLE_FILE);
    let p12_path = args.out.join(TRUSTSTORE_FILE);
    let roots = if include_system_roots {
        "the Mozilla roots plus the private CAs"
    } else {
        "the private CAs only, system roots excluded"
    };
    let warnings = match bundle.warnings.len() {
        0 => String::new(),
        1 => " 1 warning was logged.".to_owned(),
        n => format!(" {n} warnings were logged."),
    };
    Ok(format!(
        "Wrote {} ({} private CA certificate{} from {} file{}), {} ({} certificates: {roots}), \
         sha256 {}, and {} (the same certificates as a Java PKCS#12 truststore, password \
         {}), sha256 {}.{warnings}",
        ca_path.display(),
        bundle.private_cas,
        plural(bundle.private_cas),
        inputs.len(),
        plural(u32::try_from(inputs.len()).unwrap_or(u32::MAX)),
        bundle_path.display(),
        bundle.certificates,
        bundle.sha256,
        p12_path.display(),
        super::bundle::TRUSTSTORE_PASSWORD,
        bundle.p12_sha256,
    ))
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bundle: BundleArgs,
    }

    #[test]
    fn flags_parse_with_commas_and_repeats() {
        let cli = Cli::try_parse_from([
            "bundle",
            "--ca",
            "a.pem,b.pem",
            "--ca",
            "c.pem",
            "--out",
            "/tmp/x",
            "--no-system-roots",
        ])
        .expect("parses");
        assert_eq!(
            cli.bundle.ca,
            [
                PathBuf::from("a.pem"),
                PathBuf::from("b.pem"),
                PathBuf::from("c.pem")
            ]
        );
        assert_eq!(cli.bundle.out, PathBuf::from("/tmp/x"));
        assert!(cli.bundle.no_system_roots);
    }

    #[test]
    fn every_flag_has_an_env_var() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for arg in cmd.get_arguments().filter(|a| a.get_long().is_some()) {
            if matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert!(
                env.starts_with("MCPTRUST_BUNDLE_"),
                "{} has no env var",
                arg.get_id()
            );
        }
    }

    #[test]
    fn run_writes_the_roots_only_bundle_and_names_the_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("trust");
        let args = BundleArgs {
            ca: Vec::new(),
            out: out.clone(),
            no_system_roots: false,
        };
        let summary = run(&args).expect("runs");
        assert!(
            summary.contains(&out.join("ca-bundle.pem").display().to_string()),
            "{summary}"
        );
        assert!(
            summary.contains("0 private CA certificates from 0 files"),
            "{summary}"
        );
        let written = std::fs::read_to_string(out.join("ca-bundle.pem")).expect("written");
        assert!(
            summary.contains(&crate::pki::sha256_hex(written.as_bytes())),
            "{summary}"
        );
        let p12 = std::fs::read(out.join("ca-bundle.p12")).expect("p12 written");
        assert!(summary.contains(&crate::pki::sha256_hex(&p12)), "{summary}");
    }

    #[test]
    fn run_names_an_unreadable_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        let args = BundleArgs {
            ca: vec![missing.clone()],
            out: dir.path().join("out"),
            no_system_roots: false,
        };
        let err = run(&args).expect_err("missing file");
        assert!(
            format!("{err:#}").contains(&missing.display().to_string()),
            "{err:#}"
        );
        assert!(!dir.path().join("out").exists());
    }
}
