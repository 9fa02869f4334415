//! `mcptrust run`: controller, webhook and admin server in one process, in cluster or out
//! of cluster against any kubeconfig (as kube-rs controllers run in development).
//!
//! Every replica serves the webhook from its own reflector caches; only the holder of the
//! Lease ([`controller::leader`]: client-go's algorithm on a `coordination.k8s.io/v1` Lease) runs
//! the controllers, so only one replica writes.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Config};
use tokio::sync::watch;

use crate::api::McpServer;
use crate::config::ConfigArgs;
use crate::controller::webhook_cert::{self, CertMode, WebhookCertArgs};
use crate::controller::{self, Context, ControllerArgs, ControllerConfig, ControllerMetrics};
use crate::shutdown::wait_stop;

/// `mcptrust run` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Kubeconfig file; without it, in-cluster config or the usual discovery
    /// ($KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "MCPTRUST_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current one).
    #[arg(long, env = "MCPTRUST_KUBE_CONTEXT")]
    pub context: Option<String>,
    /// Do not run the controller (webhook and admin only).
    #[arg(long, env = "MCPTRUST_DISABLE_CONTROLLER", default_value_t = false)]
    pub disable_controller: bool,
    /// Do not run the webhook (controller and admin only; no TLS files needed).
    #[arg(long, env = "MCPTRUST_DISABLE_WEBHOOK", default_value_t = false)]
    pub disable_webhook: bool,
    /// Run the controller without leader election (a single replica).
    #[arg(
        long,
        env = "MCPTRUST_DISABLE_LEADER_ELECTION",
        default_value_t = false
    )]
    pub disable_leader_election: bool,
    /// Name of the Lease used for leader election, in the operator namespace.
    #[arg(
        long,
        env = "MCPTRUST_LEASE_NAME",
        default_value = "mcptrust-controller"
    )]
    pub lease_name: String,
    /// Controller settings.
    #[command(flatten)]
    pub controller: ControllerArgs,
    /// Webhook listener and TLS files.
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookArgs,
    /// Admin port.
    #[command(flatten)]
    pub admin: crate::admin::AdminArgs,
    /// The webhook's serving certificate: selfManaged, certManager or provided.
    #[command(flatten)]
    pub webhook_cert: WebhookCertArgs,
    /// Operator config.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Start-up errors of the kube client configuration, one line each with the file named
/// once (kube's own errors quote the path again, in Debug form).
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The kubeconfig file cannot be read (missing, permissions, a directory).
    #[error("cannot read kubeconfig {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig file is not valid YAML: the parser's message with line and column.
    #[error("invalid kubeconfig {}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's one-line message, e.g. `unclosed bracket '[' at line 1, column 11`.
        message: String,
    },
    /// The kubeconfig file is not a usable kubeconfig (context, cluster, CA, keys).
    #[error("invalid kubeconfig {}: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// kube's error.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig was named and the usual discovery (in-cluster, `$KUBECONFIG`,
    /// `~/.kube/config`) failed.
    #[error("no cluster configuration found: {0}")]
    Discovery(#[source] kube::config::InferConfigError),
    /// `--context` without `--kubeconfig`: the discovered kubeconfig lacks it or fails.
    #[error("cannot use kubeconfig context {context}: {source}")]
    Context {
        /// The context.
        context: String,
        /// kube's error.
        #[source]
        source: kube::config::KubeconfigError,
    },
}

impl KubeconfigError {
    /// A stable reason: `KubeconfigUnreadable`, `KubeconfigInvalid` or `NoClusterConfig`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Read { .. } => "KubeconfigUnreadable",
            Self::Syntax { .. } | Self::Invalid { .. } => "KubeconfigInvalid",
            Self::Discovery(_) | Self::Context { .. } => "NoClusterConfig",
        }
    }
}

/// The client configuration from `--kubeconfig`/`--context`, or by the usual discovery.
///
/// # Errors
/// Unreadable or invalid kubeconfig, unknown context, no cluster configuration found.
pub async fn kube_config(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> anyhow::Result<Config> {
    Ok(kube_target(kubeconfig, context).await?.0)
}

/// [`kube_config`], with what error messages need about the server: its URL and where
/// its CA comes from ([`crate::report::ApiServer`]).
///
/// # Errors
/// [`KubeconfigError`].
pub async fn kube_target(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<(Config, crate::report::ApiServer), KubeconfigError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let (config, ca) = match kubeconfig {
        Some(path) => {
            // Read once ourselves so that an unreadable file is told apart from an invalid one.
            std::fs::read(path).map_err(|source| KubeconfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let invalid = |source| match source {
                kube::config::KubeconfigError::Parse(e) => KubeconfigError::Syntax {
                    path: path.to_owned(),
                    message: crate::config::parse_message(&e),
                },
                source => KubeconfigError::Invalid {
                    path: path.to_owned(),
                    source,
                },
            };
            let kc = Kubeconfig::read_from(path).map_err(invalid)?;
            let ca = kubeconfig_ca(&kc, context, path);
            let config = Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(invalid)?;
            (config, ca)
        }
        None => {
            let config = if let Some(context) = context {
                Config::from_kubeconfig(&options).await.map_err(|source| {
                    KubeconfigError::Context {
                        context: context.to_owned(),
                        source,
                    }
                })?
            } else {
                Config::infer().await.map_err(KubeconfigError::Discovery)?
            };
            let ca = config
                .root_cert
                .as_ref()
                .map(|_| "the discovered kubeconfig's certificate-authority".to_owned());
            (config, ca)
        }
    };
    let ca = match &config.root_cert_file {
        Some(file) => Some(file.display().to_string()),
        None => ca.filter(|_| config.root_cert.is_some()),
    };
    let server = crate::report::ApiServer {
        url: config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned(),
        ca,
    };
    Ok((config, server))
}

/// Where the CA of the cluster that `context` (or the current context) selects comes from:
/// its `certificate-authority` file, or `certificate-authority-data of cluster "<name>" in
/// <path>`; `None` when it names none (system roots) or the context is unknown.
fn kubeconfig_ca(kc: &Kubeconfig, context: Option<&str>, path: &std::path::Path) -> Option<String> {
    let name = context.or(kc.current_context.as_deref())?;
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == name)?
        .context
        .as_ref()?
        .cluster
        .clone();
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)?
        .cluster
        .as_ref()?;
    if cluster.certificate_authority_data.is_some() {
        Some(format!(
            "certificate-authority-data of cluster {cluster_name:?} in {}",
            path.display()
        ))
    } else {
        cluster.certificate_authority.clone()
    }
}

/// Builds a client from `--kubeconfig`/`--context`, or by the usual discovery.
///
/// # Errors
/// See [`kube_config`].
pub async fn client(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> anyhow::Result<Client> {
    Ok(Client::try_from(kube_config(kubeconfig, context).await?)?)
}

/// A client that counts every write request it sends in `mcptrust_api_writes_total`
/// ([`ControllerMetrics::api_request`]), whoever sends it: reconciles, events, the Lease,
/// the webhook certificate loop.
///
/// # Errors
/// When the configuration's TLS or proxy settings cannot be built into a client.
pub fn counting_client(config: Config, metrics: ControllerMetrics) -> anyhow::Result<Client> {
    let count =
        tower::util::MapRequestLayer::new(move |req: hyper::Request<kube::client::Body>| {
            metrics.api_request(req.method(), req.uri().path());
            req
        });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

/// Runs the operator until SIGTERM/Ctrl-C.
///
/// Start-up fails fast: a fatal error (config, kubeconfig, ports, TLS files of the
/// `provided` mode) stops every task already started and is returned at once. An
/// unreachable API server is not fatal: the loops log it (with the server's URL) and retry.
/// The `selfManaged` and `certManager` modes wait for their TLS files on purpose
/// ([`webhook_cert::wait_for_tls_files`]).
///
/// # Errors
/// Startup failures (kubeconfig, ports, TLS files), or the first task that fails.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let (kube, api_server) =
        kube_target(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let cert_mode = args.webhook_cert.webhook_cert_mode;
    if !args.disable_webhook && !cert_mode.waits_for_files() {
        // `provided`: the files must be there before the pod starts (the chart's volume is
        // not optional), so a missing or broken file is fatal, before anything listens.
        let webhook = &args.webhook;
        crate::tls::load_certified_key(&webhook.tls_cert_file, &webhook.tls_key_file)
            .map_err(crate::webhook::WebhookError::from)?;
    }
    let controller_metrics = ControllerMetrics::default();
    let client = counting_client(kube, controller_metrics.clone())?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    {
        let m = controller_metrics.clone();
        metrics.register_with(move |r| m.register(r));
    }
    let readiness = crate::admin::Readiness::default();
    // One stop flag: set by SIGTERM/Ctrl-C, or by the first task that fails.
    let (stop_tx, stop_rx) = watch::channel(false);
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        crate::webhook::shutdown_signal().await;
        let _ = on_signal.send(true);
    });
    let admin_listener = tokio::net::TcpListener::bind(args.admin.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin port)", args.admin.admin_listen))?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn({
        let router = crate::admin::router(metrics.clone(), readiness.clone());
        let stop = wait_stop(stop_rx.clone());
        async move {
            crate::admin::serve(admin_listener, router, stop)
                .await
                .context("admin server")
        }
    });

    if !args.disable_controller {
        let mut ctx = Context::new(
            client.clone(),
            ControllerConfig::new(&args.controller, &config),
            controller_metrics.clone(),
            controller::system_clock(),
            &args.controller.pod_name,
        );
        ctx = ctx.with_reconcile_concurrency(args.controller.reconcile_concurrency);
        if args.controller.disable_endpoint_probe {
            ctx = ctx.without_endpoint_probe();
        }
        let ctx = Arc::new(ctx);
        let leader_election = !args.disable_leader_election;
        let lease = args.lease_name.clone();
        let ns = args.controller.operator_namespace.clone();
        let identity = args.controller.pod_name.clone();
        let stop = stop_rx.clone();
        let api_server = api_server.clone();
        // selfManaged: the leader keeps the webhook's Secret and caBundle (only when this
        // process serves the webhook; `--disable-webhook` runs need no certificate).
        let cert = (args.webhook_cert.webhook_cert_mode == CertMode::SelfManaged
            && !args.disable_webhook)
            .then(|| webhook_cert::Settings::new(&args.webhook_cert, &ns));
        tasks.spawn(async move {
            let election = leader_election.then_some(api_server);
            run_controllers(ctx, cert, election, &lease, &ns, &identity, stop).await;
            Ok(())
        });
    }

    if !args.disable_webhook {
        let webhook_args = args.webhook.clone();
        let readiness = readiness.clone();
        let metrics = metrics.clone();
        let config = config.clone();
        let client = client.clone();
        let stop = stop_rx.clone();
        let api_url = api_server.url.clone();
        tasks.spawn(async move {
            // Serve only from synced caches; a SIGTERM while syncing still exits.
            readiness.set_waiting(format!("the API server {api_url} (webhook caches)"));
            let caches = tokio::select! {
                c = start_caches(client, stop.clone()) => c,
                _ = wait_stop(stop.clone()) => return Ok(()),
            };
            let mutator: Arc<dyn crate::inject::Mutator> =
                Arc::new(controller::resolver::ClusterMutator::new(config, caches));
            // The Secret volume (optional) is filled once the leader or cert-manager has
            // written it: wait for the files instead of failing.
            if cert_mode.waits_for_files() {
                let (cert, key) = (&webhook_args.tls_cert_file, &webhook_args.tls_key_file);
                tokio::select! {
                    () = webhook_cert::wait_for_tls_files(cert, key, cert_mode, &readiness) => {},
                    _ = wait_stop(stop.clone()) => return Ok(()),
                }
            }
            crate::webhook::run(&webhook_args, mutator, metrics, readiness, wait_stop(stop))
                .await
                .map_err(anyhow::Error::from)
        });
    } else {
        readiness.set_ready();
    }

    // The first task that fails stops all the others; its error is returned (and printed
    // once, by `main`). A panicked task counts as failed.
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        let failed = match done {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(join) => Some(anyhow::anyhow!("a task failed: {join}")),
        };
        if let Some(e) = failed {
            let _ = stop_tx.send(true);
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

/// Starts the webhook's reflectors and waits until each has listed once.
async fn start_caches(client: Client, stop: watch::Receiver<bool>) -> controller::resolver::Caches {
    let managed = watcher::Config::default().labels(&format!(
        "{}={}",
        controller::build::LABEL_MANAGED_BY,
        controller::build::MANAGED_BY
    ));
    let (servers, w1) = reflector::store::<McpServer>();
    let (secrets, w2) = reflector::store();
    let (config_maps, w3) = reflector::store();
    let caches = controller::resolver::Caches::new(servers, secrets, config_maps);
    let changed = caches.clone();
    let s1 = reflector(
        w1,
        watcher(
            Api::<McpServer>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(controller::resolver::slim_server),
    )
    .default_backoff()
    // The reflector has written the store when it yields: the resolver's index of
    // McpServers by namespace follows the event here, not on the admission path.
    .for_each(move |event| {
        if let Ok(event) = &event {
            changed.apply_server_event(event);
        }
        async {}
    });
    let s2 = reflector(
        w2,
        watcher(
            Api::<PartialObjectMeta<Secret>>::all(client.clone()),
            managed.clone(),
        )
        .modify(controller::resolver::slim_meta),
    )
    .default_backoff()
    .for_each(|_| async {});
    let s3 = reflector(
        w3,
        watcher(Api::<PartialObjectMeta<ConfigMap>>::all(client), managed)
            .modify(controller::resolver::slim_meta),
    )
    .default_backoff()
    .for_each(|_| async {});
    tokio::spawn(async move {
        tokio::select! {
            _ = futures::future::join3(s1, s2, s3) => {},
            _ = wait_stop(stop) => {},
        }
    });
    for (name, ready) in [
        (
            "McpServers",
            caches.servers.wait_until_ready().await.is_ok(),
        ),
        (
            "managed Secrets",
            caches.secrets.wait_until_ready().await.is_ok(),
        ),
        (
            "managed ConfigMaps",
            caches.config_maps.wait_until_ready().await.is_ok(),
        ),
    ] {
        tracing::info!(cache = name, ready, "webhook cache synced");
    }
    caches
}

/// Runs both controllers, and with `webhook_cert` (selfManaged mode) the webhook
/// certificate loop, while this replica holds the Lease (or always, without leader
/// election: `leader_election` is `None`; else it names the API server for the elector's
/// logs), until `stop` is set.
async fn run_controllers(
    ctx: Arc<Context>,
    webhook_cert: Option<webhook_cert::Settings>,
    leader_election: Option<crate::report::ApiServer>,
    lease: &str,
    namespace: &str,
    identity: &str,
    stop: watch::Receiver<bool>,
) {
    let run_both = |ctx: Arc<Context>, until: watch::Receiver<bool>| {
        let cert = webhook_cert.clone();
        async move {
            let cert_loop = async {
                if let Some(settings) = cert {
                    let (client, clock) = (ctx.client.clone(), ctx.clock.clone());
                    let metrics = ctx.metrics.clone();
                    webhook_cert::run(client, settings, clock, metrics, wait_stop(until.clone()))
                        .await;
                }
            };
            tokio::join!(
                controller::run(ctx.clone(), wait_stop(until.clone())),
                controller::namespaces::run(ctx.clone(), wait_stop(until.clone())),
                cert_loop,
            );
        }
    };
    let Some(api_server) = leader_election else {
        run_both(ctx, stop).await;
        return;
    };
    let elector = controller::leader::Elector::new(
        ctx.client.clone(),
        namespace,
        lease,
        identity,
        controller::leader::Timings::default(),
    )
    .with_api_server(api_server);
    elector
        .run(stop, |until| run_both(ctx.clone(), until))
        .await;
}
