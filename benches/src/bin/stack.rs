//! What the mesh's server stack costs. The same RPC (`ConfigService.GetConfig`, the same
//! implementation) is served twice in this process: by a bare tonic server, and by
//! `tickmesh_mesh::serve` with the whole stack (trace span, RED metrics, API-key auth, per-caller
//! rate limit, load shedding, default deadline, message-size status); a third server is the
//! bare one with only the metrics layer, for that layer's own cost. A closed-loop load of
//! `--concurrency` callers over `--connections` HTTP/2 connections runs against each in turn,
//! alternating rounds (ABBA), and the report gives the stack's throughput and latency as ratios to the
//! bare server's.
//!
//! Usage: cargo run --release -p tickmesh-benches --bin stack -- [--seconds S] [--rounds N]
//!        [--concurrency C] [--connections K] [--json FILE]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tickmesh_mesh::{ConfigHandle, Metrics, Shutdown};
use tickmesh_proto::v1::config_service_client::ConfigServiceClient;
use tickmesh_proto::v1::{ApiKey, AuthConfig, GetConfigRequest, Scope, TokenBucket};
use tokio::net::TcpListener;
use tonic::transport::Channel;

const KEY: &str = "bench-key-5d1c9e7a3b20f4";

struct Args {
    seconds: f64,
    rounds: usize,
    concurrency: usize,
    connections: usize,
    json: Option<std::path::PathBuf>,
}

fn parse() -> anyhow::Result<Args> {
    let mut parsed = Args {
        seconds: 3.0,
        rounds: 3,
        concurrency: 32,
        connections: 4,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => parsed.seconds = value()?.parse()?,
            "--rounds" => parsed.rounds = value()?.parse()?,
            "--concurrency" => parsed.concurrency = value()?.parse()?,
            "--connections" => parsed.connections = value()?.parse()?,
            "--json" => parsed.json = Some(value()?.into()),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(parsed)
}

/// The configuration of the stacked server: auth on with one key, a rate limit far above what
/// the load reaches (so the layer runs but never refuses).
fn config() -> anyhow::Result<ConfigHandle> {
    let mut loaded = tickmesh_config::load(None, std::iter::empty::<(String, String)>())?;
    loaded.config.auth = Some(AuthConfig {
        enabled: true,
        keys_file: String::new(),
        keys: vec![ApiKey {
            name: "bench".into(),
            key: KEY.into(),
            scopes: vec![Scope::Read as i32],
        }],
        peer_key_name: String::new(),
    });
    let limits = loaded
        .config
        .rate_limits
        .get_or_insert_with(Default::default);
    limits.default_caller = Some(TokenBucket {
        rate_per_second: 1e9,
        burst: 1_000_000_000,
    });
    Ok(ConfigHandle::new(loaded))
}

async fn bare(config: &ConfigHandle, shutdown: &Shutdown) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_service(tickmesh_mesh::server::config_service::server(
            config, shutdown,
        ))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    Ok(addr)
}

/// The bare server with only the metrics layer (what recording RPC metrics costs by itself).
async fn measured(
    config: &ConfigHandle,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .layer(metrics.layer())
        .add_service(tickmesh_mesh::server::config_service::server(
            config, shutdown,
        ))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    Ok(addr)
}

async fn stacked(
    config: &ConfigHandle,
    shutdown: &Shutdown,
) -> anyhow::Result<(SocketAddr, tempfile::TempDir)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    // Any tickmesh service will do as the port's own service; the calls go to ConfigService,
    // which every port serves. The query service needs a store and a bus: throwaway ones.
    let dir = tempfile::tempdir()?;
    let store = tickmesh_store::Store::open(&tickmesh_store::StoreOptions::new(format!(
        "sqlite:{}",
        dir.path().join("stack.db").display()
    )))
    .await?;
    let metrics = Metrics::new();
    let service = tickmesh_query::service(
        config,
        Arc::new(store),
        tickmesh_bus::Bus::in_process(16),
        None,
        None,
        &metrics,
        shutdown,
    );
    let running = tickmesh_mesh::serve(service, listener, config, &metrics, shutdown).await?;
    let addr = running.local_addr();
    tokio::spawn(running.wait());
    Ok((addr, dir))
}

/// Calls per second and sorted latencies of one closed-loop round.
async fn round(addr: SocketAddr, args: &Args) -> anyhow::Result<(f64, Vec<Duration>)> {
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let mut client = ConfigServiceClient::new(channels[i % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let mut request = tonic::Request::new(GetConfigRequest {});
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {KEY}").parse()?);
                let sent = Instant::now();
                client.get_config(request).await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    Ok((rate, all))
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let runtime = tokio::runtime::Runtime::new()?;
    // Logging as the binary sets it up (info, JSON), so that the per-RPC span costs what it
    // costs in production when no OTLP endpoint is set.
    let _telemetry = {
        let _entered = runtime.enter();
        tickmesh_mesh::telemetry::logging::init(
            "info",
            tickmesh_mesh::telemetry::logging::LogFormat::Json,
            "bench",
        )
    };
    runtime.block_on(async move {
        let config = Arc::new(config()?);
        let shutdown = Shutdown::new();
        let bare_addr = bare(&config, &shutdown).await?;
        let (stacked_addr, _store_dir) = stacked(&config, &shutdown).await?;
        let metrics_only = Metrics::new();
        let measured_addr = measured(&config, &metrics_only, &shutdown).await?;
        // Warm-up of all three.
        let warm = Args {
            seconds: 0.5,
            json: None,
            ..args
        };
        round(bare_addr, &warm).await?;
        round(stacked_addr, &warm).await?;
        round(measured_addr, &warm).await?;

        let (mut bare_rates, mut stacked_rates) = (Vec::new(), Vec::new());
        let (mut bare_lat, mut stacked_lat) = (Vec::new(), Vec::new());
        let (mut measured_rates, mut measured_lat) = (Vec::new(), Vec::new());
        for r in 0..args.rounds {
            // Which server goes first alternates (ABBA for the bare / full pair, the metrics-only
            // one in between), so a drift of the host over a round (a build starting, a CPU
            // frequency step) does not favour one side.
            let order = if r % 2 == 0 {
                [bare_addr, measured_addr, stacked_addr]
            } else {
                [stacked_addr, measured_addr, bare_addr]
            };
            for addr in order {
                let (rate, lat) = round(addr, &args).await?;
                if addr == bare_addr {
                    bare_rates.push(rate);
                    bare_lat.extend(lat);
                } else if addr == measured_addr {
                    measured_rates.push(rate);
                    measured_lat.extend(lat);
                } else {
                    stacked_rates.push(rate);
                    stacked_lat.extend(lat);
                }
            }
            eprintln!(
                "round {}/{}: bare {:.0} calls/s, full stack {:.0} calls/s ({:.3}x)",
                r + 1,
                args.rounds,
                bare_rates[r],
                stacked_rates[r],
                stacked_rates[r] / bare_rates[r]
            );
        }
        // The median of the rounds' paired ratios: a round the host disturbed moves it less
        // than it moves the ratio of the means.
        let mut paired: Vec<f64> = bare_rates
            .iter()
            .zip(&stacked_rates)
            .map(|(b, s)| s / b)
            .collect();
        paired.sort_by(f64::total_cmp);
        let median_ratio = paired[paired.len() / 2];
        let mut measured_paired: Vec<f64> = bare_rates
            .iter()
            .zip(&measured_rates)
            .map(|(b, m)| m / b)
            .collect();
        measured_paired.sort_by(f64::total_cmp);
        let measured_median = measured_paired[measured_paired.len() / 2];
        bare_lat.sort();
        stacked_lat.sort();
        measured_lat.sort();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (b, s) = (mean(&bare_rates), mean(&stacked_rates));
        let m = mean(&measured_rates);
        println!(
            "GetConfig, {} callers over {} connections, {} rounds of {} s each:",
            args.concurrency, args.connections, args.rounds, args.seconds
        );
        println!(
            "{:<12} {:>12} {:>10} {:>10}",
            "server", "calls/s", "p50 µs", "p99 µs"
        );
        for (name, rate, lat) in [
            ("bare tonic", b, &bare_lat),
            ("metrics only", m, &measured_lat),
            ("full stack", s, &stacked_lat),
        ] {
            println!(
                "{name:<12} {rate:>12.0} {:>10.1} {:>10.1}",
                quantile(lat, 0.5),
                quantile(lat, 0.99)
            );
        }
        println!(
            "full stack / bare: throughput {:.3}x ({:+.1} %; median of the rounds' ratios \
             {median_ratio:.3}x), p50 {:.2}x, p99 {:.2}x",
            s / b,
            (s / b - 1.0) * 100.0,
            quantile(&stacked_lat, 0.5) / quantile(&bare_lat, 0.5),
            quantile(&stacked_lat, 0.99) / quantile(&bare_lat, 0.99)
        );
        println!(
            "metrics layer / bare: throughput {:.3}x (median of the rounds' ratios \
             {measured_median:.3}x), p50 {:.2}x, p99 {:.2}x",
            m / b,
            quantile(&measured_lat, 0.5) / quantile(&bare_lat, 0.5),
            quantile(&measured_lat, 0.99) / quantile(&bare_lat, 0.99)
        );
        if let Some(path) = &args.json {
            let side = |rate: f64, rates: &[f64], lat: &[Duration]| {
                serde_json::json!({
                    "calls_per_second": rate,
                    "rounds_calls_per_second": rates,
                    "p50_us": quantile(lat, 0.5),
                    "p99_us": quantile(lat, 0.99),
                })
            };
            let out = serde_json::json!({
                "call": "tickmesh.v1.ConfigService/GetConfig",
                "concurrency": args.concurrency,
                "connections": args.connections,
                "rounds": args.rounds,
                "seconds": args.seconds,
                "bare": side(b, &bare_rates, &bare_lat),
                "full_stack": side(s, &stacked_rates, &stacked_lat),
                "metrics_only": side(m, &measured_rates, &measured_lat),
                "metrics_ratio": {
                    "throughput": m / b,
                    "throughput_median_of_rounds": measured_median,
                    "p50": quantile(&measured_lat, 0.5) / quantile(&bare_lat, 0.5),
                    "p99": quantile(&measured_lat, 0.99) / quantile(&bare_lat, 0.99),
                },
                "ratio": {
                    "throughput": s / b,
                    "throughput_median_of_rounds": median_ratio,
                    "rounds": paired,
                    "p50": quantile(&stacked_lat, 0.5) / quantile(&bare_lat, 0.5),
                    "p99": quantile(&stacked_lat, 0.99) / quantile(&bare_lat, 0.99),
                },
            });
            std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
        }
        shutdown.trigger();
        anyhow::Ok(())
    })
}
