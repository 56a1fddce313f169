//! `tickmesh`: run the mesh, one service of it, or check its configuration.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tickmesh::startup::Waiting;
use tickmesh::{App, Deps, Target};
use tickmesh_mesh::telemetry::logging::{self, LogFormat};
use tickmesh_mesh::{ConfigHandle, Shutdown};
use tracing::{error, info};

/// A gRPC mesh for market-data analytics.
#[derive(Debug, Parser)]
#[command(name = "tickmesh", version, about)]
struct Cli {
    /// Configuration file (YAML, TOML or JSON) laid over the built-in defaults.
    #[arg(long, global = true, env = "TICKMESH_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `info,tickmesh_mesh=debug`.
    #[arg(long, global = true, env = "TICKMESH_LOG", default_value = "info")]
    log: String,
    /// Log format: text on a terminal and JSON otherwise when `auto`.
    #[arg(long, global = true, env = "TICKMESH_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Auto)]
    log_format: LogFormatArg,
    /// The store: `sqlite:PATH` (embedded) or `postgres://user@host:port/db`.
    #[arg(long, global = true, env = "TICKMESH_STORE_URL", hide_env_values = true, default_value = DEFAULT_STORE)]
    store: String,
    /// PostgreSQL read replica for queries (default: the store itself).
    #[arg(
        long,
        global = true,
        env = "TICKMESH_STORE_READ_URL",
        hide_env_values = true
    )]
    store_read_url: Option<String>,
    /// Directory of recorded CSV sources the ReplaySource RPC may replay (`<name>.csv`).
    #[arg(long, global = true, env = "TICKMESH_REPLAY_DIR")]
    replay_dir: Option<PathBuf>,
    /// `host:port` of the computation service when it is not in this process (the query service
    /// calls it); the name is resolved again periodically, so a headless service reaches every
    /// pod.
    #[arg(long, global = true, env = "TICKMESH_COMPUTATION_ADDR")]
    computation_addr: Option<String>,
    /// `host:port` of the caching service when it is not in this process (the query service
    /// reads latest prices and cached indicators through it; computation writes signals).
    #[arg(long, global = true, env = "TICKMESH_CACHING_ADDR")]
    caching_addr: Option<String>,
    /// The market-event bus: `redis://host:port/` for Redis Streams; in-process when unset.
    #[arg(long, global = true, env = "TICKMESH_BUS_URL", hide_env_values = true)]
    bus: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The embedded store of `tickmesh up`, relative to the working directory.
const DEFAULT_STORE: &str = "sqlite:tickmesh-data/tickmesh.db";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run all four services in this process with the embedded defaults (the default command).
    Up(UpArgs),
    /// Run one service (one per pod on Kubernetes).
    Serve(ServeArgs),
    /// Check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Apply the store's pending migrations and exit (a Kubernetes Job before the rollout).
    Migrate,
    /// Stream a CSV of candles or ticks into a running ingestion service.
    Replay(tickmesh::replay::ReplayArgs),
    /// The whole mesh on market data in one command: replay, compute, query back, chart.
    Demo(tickmesh::demo::DemoArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct UpArgs {
    /// Address to listen on; `up` is meant for one machine, so loopback by default.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Port of ingestion; computation, caching and query take the next three. 0 lets the OS
    /// pick a free port for each.
    #[arg(long, default_value_t = Target::Ingestion.default_port())]
    base_port: u16,
    /// Once every service is SERVING, write their addresses to this file as JSON.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Where `GET /metrics` (Prometheus text format) is served.
    #[arg(long, env = "TICKMESH_METRICS_ADDR", default_value = "127.0.0.1:9400")]
    metrics_addr: SocketAddr,
    /// Where the dashboard (and the gRPC-Web it calls) is served, or "off". Default: `web.addr`
    /// of the configuration, else the port before `--base-port` on `--bind` (7400; any free
    /// one with `--base-port 0`).
    #[arg(long)]
    web_addr: Option<String>,
}

impl Default for UpArgs {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: Target::Ingestion.default_port(),
            ready_file: None,
            metrics_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9400)),
            web_addr: None,
        }
    }
}

/// The dashboard's address from a `--web-addr` flag or `web.addr` ("off" or, for `serve`,
/// empty: none), else `default`.
fn web_addr(
    flag: Option<&str>,
    config: &str,
    default: Option<SocketAddr>,
) -> anyhow::Result<Option<SocketAddr>> {
    let (text, what) = match flag {
        Some(flag) => (flag, "--web-addr"),
        None => (config, "web.addr"),
    };
    match text {
        "off" => Ok(None),
        "" => Ok(default),
        addr => addr.parse().map(Some).with_context(|| {
            format!("{what} {addr:?} is not host:port (an IP address and a port)")
        }),
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The service to run.
    #[arg(long)]
    target: Target,
    /// Address to listen on (default: all interfaces on the target's documented port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Once the service is SERVING, write its address to this file as JSON.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Where `GET /metrics` (Prometheus text format) is served: loopback unless asked (the
    /// Kubernetes manifests bind `0.0.0.0:9400` for the scraper); it takes no key.
    #[arg(long, env = "TICKMESH_METRICS_ADDR", default_value = "127.0.0.1:9400")]
    metrics_addr: SocketAddr,
    /// Where the query service also serves the dashboard and gRPC-Web, or "off". Default:
    /// `web.addr` of the configuration (none when empty). Query only.
    #[arg(long)]
    web_addr: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (laid over the defaults, with TICKMESH_* overrides).
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the effective configuration.
    Print {
        /// Output format.
        #[arg(long, value_enum, default_value_t = PrintFormat::Yaml)]
        format: PrintFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PrintFormat {
    Yaml,
    Json,
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Up(UpArgs::default()));
    if let Command::Config(config) = command {
        return config_command(config, cli.config.as_deref());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tickmesh-io")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's connection lives on the runtime, so telemetry starts inside it.
    let telemetry = {
        let _entered = runtime.enter();
        logging::init(
            &cli.log,
            match cli.log_format {
                LogFormatArg::Auto => LogFormat::Auto,
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            },
            &trace_service_name(&command),
        )
    };
    let loaded = match tickmesh_config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(loaded) => loaded,
        Err(e) => {
            error!(error = %e, "configuration rejected");
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let logs = &telemetry;
    let result = runtime.block_on(async move {
        let config = ConfigHandle::new(loaded);
        info!(source = %config.current().source, "configuration loaded");
        logs.follow_config(&config);
        if let Command::Replay(args) = command {
            let file = args.file.display().to_string();
            let started = Instant::now();
            let summary = tickmesh::replay::run(args, &config.current().config).await?;
            let seconds = started.elapsed().as_secs_f64();
            let rows = summary.stored + summary.duplicates + summary.rejected_count;
            info!(file, stored = summary.stored, duplicates = summary.duplicates,
                rejected = summary.rejected_count, seconds, "replay done");
            println!(
                "replayed {file}: {rows} rows in {seconds:.2} s ({:.0} rows/s): {} stored, {} already stored, {} rejected",
                rows as f64 / seconds.max(1e-9),
                summary.stored,
                summary.duplicates,
                summary.rejected_count
            );
            return Ok(());
        }
        if let Command::Demo(args) = command {
            if !tickmesh::demo::chart_folder_exists(&args.chart) {
                anyhow::bail!("the folder of --chart {} does not exist", args.chart.display());
            }
            return tickmesh::demo::run(args, &config).await;
        }
        if let Command::Migrate = command {
            tickmesh_store::Store::open(&tickmesh_store::StoreOptions::new(&cli.store)).await?;
            // Migrations only: the read replica follows the primary.
            info!("store migrations applied");
            return Ok(());
        }
        let mut store = tickmesh_store::StoreOptions::new(&cli.store);
        store.read_url = cli.store_read_url.clone();
        let current = config.current();
        if let Some(ingestion) = current.config.ingestion {
            store.write_batch_rows = ingestion.write_batch_rows as usize;
        }
        if let Some(settings) = current.config.store {
            if let Some(timeout) = settings.connect_timeout {
                store.connect_timeout = tickmesh_config::std_duration(Some(&timeout));
            }
            store.pool_size = settings.pool_size;
        }
        let web_config = current.config.web.clone().unwrap_or_default().addr;
        let (targets, ready_file, metrics_addr, web) = match command {
            Command::Up(args) => up_targets(args, &web_config)?,
            Command::Serve(args) => serve_targets(args, &web_config)?,
            Command::Config(_) | Command::Migrate | Command::Replay(_) | Command::Demo(_) => {
                unreachable!("handled before the services start")
            }
        };
        let shutdown = Shutdown::new();
        shutdown
            .on_signals()
            .context("cannot install the signal handlers")?;
        // Every port is bound before anything else, so a taken one fails at once.
        let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("cannot listen on {metrics_addr} for metrics"))?;
        let web_listener = match web {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for the dashboard"))?,
            ),
            None => None,
        };
        // Auth off only on loopback, checked before anything answers on the ports.
        let auth = current.config.auth.clone().unwrap_or_default();
        if !auth.enabled
            && let Some(addr) = targets
                .iter()
                .map(|(_, a)| *a)
                .chain(web)
                .find(|a| !a.ip().is_loopback())
        {
            return Err(tickmesh_mesh::ServeError::AuthOffInPublic(addr).into());
        }
        let listeners = App::bind(&targets).await?;
        // Health answers (NOT_SERVING) while the store or the bus cannot be reached yet.
        let waiting = Waiting::start(listeners).await;
        let opened =
            Deps::open_waiting(&store, cli.bus.as_deref(), &config, &waiting, &shutdown).await?;
        let listeners = waiting.finish().await;
        let Some(mut deps) = opened else {
            info!("stopped while waiting for a dependency");
            return Ok(());
        };
        deps.replay_dir = cli.replay_dir.clone();
        deps.computation_addr = cli.computation_addr.clone();
        deps.caching_addr = cli.caching_addr.clone();
        deps.config_file = cli.config.clone();
        let serving = Serving {
            listeners,
            web_listener,
            ready_file,
            metrics_listener,
            shutdown,
        };
        run(serving, &config, &deps, started).await
    });
    // Pending spans go out before the runtime (which carries the exporter) stops.
    runtime.block_on(async move { telemetry.shutdown() });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "tickmesh stopped with an error");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The service name traces carry unless `OTEL_SERVICE_NAME` is set: `tickmesh-<target>` for one
/// service, `tickmesh` for the whole mesh.
fn trace_service_name(command: &Command) -> String {
    match command {
        Command::Serve(args) => format!("tickmesh-{}", args.target),
        _ => "tickmesh".to_owned(),
    }
}

/// What a command serves: its services and addresses, its ready file, its metrics address,
/// the dashboard's address.
type Plan = (
    Vec<(Target, SocketAddr)>,
    Option<PathBuf>,
    SocketAddr,
    Option<SocketAddr>,
);

/// The services `up` runs: all four, on consecutive ports from `--base-port`, and the
/// dashboard.
fn up_targets(args: UpArgs, web_config: &str) -> anyhow::Result<Plan> {
    if args.base_port > u16::MAX - 3 {
        anyhow::bail!(
            "--base-port {} leaves no room for the three ports after it",
            args.base_port
        );
    }
    let targets = Target::ALL
        .iter()
        .zip(0u16..)
        .map(|(&target, i)| {
            let port = match args.base_port {
                0 => 0,
                base => base + i,
            };
            (target, SocketAddr::new(args.bind, port))
        })
        .collect();
    // The port before the services' (7400 before 7401), so meshes on other base ports do not
    // collide on the dashboard's.
    let default_web = SocketAddr::new(args.bind, args.base_port.saturating_sub(1));
    let web = web_addr(args.web_addr.as_deref(), web_config, Some(default_web))?;
    Ok((targets, args.ready_file, args.metrics_addr, web))
}

/// The one service `serve` runs (and the dashboard next to the query service, when asked).
fn serve_targets(args: ServeArgs, web_config: &str) -> anyhow::Result<Plan> {
    let addr = args.listen.unwrap_or_else(|| {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            args.target.default_port(),
        )
    });
    let web = web_addr(args.web_addr.as_deref(), web_config, None)?;
    if web.is_some() && args.target != Target::Query {
        anyhow::bail!(
            "the dashboard is served by the query service only (--web-addr / web.addr with --target {})",
            args.target
        );
    }
    Ok((
        vec![(args.target, addr)],
        args.ready_file,
        args.metrics_addr,
        web,
    ))
}

/// What `up` and `serve` have bound before their dependencies are open.
struct Serving {
    listeners: Vec<(Target, tokio::net::TcpListener)>,
    web_listener: Option<tokio::net::TcpListener>,
    ready_file: Option<PathBuf>,
    metrics_listener: tokio::net::TcpListener,
    shutdown: Shutdown,
}

async fn run(
    serving: Serving,
    config: &ConfigHandle,
    deps: &Deps,
    started: Instant,
) -> anyhow::Result<()> {
    let Serving {
        listeners,
        web_listener,
        ready_file,
        metrics_listener,
        shutdown,
    } = serving;
    let app = App::build_on(listeners, web_listener, config, deps, &shutdown).await?;
    if let Some(path) = &deps.config_file {
        tickmesh_mesh::server::config_watch::spawn(path.clone(), config.clone(), &shutdown);
    }
    let (metrics_addr, metrics_task) = deps.metrics.serve(metrics_listener, &shutdown)?;
    let addrs = app.addrs();
    let web = app.web_addr();
    if let Some(web) = web {
        info!(url = format!("http://{web}/"), "dashboard");
    }
    let startup_us = started.elapsed().as_micros() as u64;
    info!(
        startup_us,
        services = addrs.len(),
        "all services serving; Ctrl-C or SIGTERM stops them"
    );
    if let Some(path) = &ready_file {
        write_ready_file(path, &addrs, web, metrics_addr, startup_us)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    app.wait().await?;
    let _ = metrics_task.await;
    Ok(())
}

/// Writes the addresses atomically (temp file + rename) so a reader never sees half a file.
fn write_ready_file(
    path: &Path,
    addrs: &BTreeMap<Target, SocketAddr>,
    web: Option<SocketAddr>,
    metrics: SocketAddr,
    startup_us: u64,
) -> std::io::Result<()> {
    let mut body = serde_json::Map::new();
    body.insert("metrics".to_owned(), metrics.to_string().into());
    if let Some(web) = web {
        body.insert("web".to_owned(), web.to_string().into());
    }
    for (target, addr) in addrs {
        body.insert(target.as_str().to_owned(), addr.to_string().into());
    }
    body.insert("startup_us".to_owned(), startup_us.into());
    body.insert("pid".to_owned(), std::process::id().into());
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::Value::Object(body).to_string())?;
    std::fs::rename(tmp, path)
}

fn config_command(command: ConfigCommand, file: Option<&Path>) -> ExitCode {
    let (file, printing) = match &command {
        ConfigCommand::Check { file } => (Some(file.as_path()), None),
        ConfigCommand::Print { format } => (file, Some(*format)),
    };
    match tickmesh_config::load(file, std::env::vars()) {
        Ok(loaded) => {
            let text = match printing {
                None => format!("ok: configuration is valid ({})\n", loaded.source),
                Some(PrintFormat::Yaml) => format!(
                    "# effective configuration: {}\n{}",
                    loaded.source,
                    tickmesh_config::to_yaml(&tickmesh_config::redacted(&loaded.config))
                ),
                Some(PrintFormat::Json) => {
                    format!(
                        "{:#}\n",
                        tickmesh_config::to_json(&tickmesh_config::redacted(&loaded.config))
                    )
                }
            };
            // A closed pipe (`tickmesh config print | head`) is the reader's choice, not an error.
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write the configuration: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
