//! `tickmesh demo`: the whole mesh in one command on a fresh machine. It starts the four
//! services in this process with the embedded defaults (a throwaway SQLite store, the
//! in-process bus), replays market data through the ingestion service's gRPC API — the real
//! GOOG daily and EURUSD hourly candles of the `backtesting` Python package when it can find
//! them, otherwise a synthetic market clearly labelled as such — lets the computation service
//! turn the closed candles into signals, then queries everything back through the query
//! service's gRPC API like any client would, prints a summary per symbol and writes an SVG
//! chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tickmesh_mesh::{ConfigHandle, Shutdown};
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::query_service_client::QueryServiceClient;
use tickmesh_proto::v1::{
    Candle, GetCandlesRequest, GetIndicatorsRequest, GetLatestPricesRequest, GetSignalsRequest,
    IndicatorKind, IndicatorSeries, IndicatorSpec, IngestCandlesRequest, Interval, Signal,
    SignalAction, Strategy,
};
use tonic::transport::Channel;

use crate::app::{App, Deps, Target};
use crate::replay::{Kind, ReplayArgs};

/// Options of `tickmesh demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Folder holding GOOG.csv and EURUSD.csv (default: the `backtesting` package's test data,
    /// looked up with the Python of `.venv` or `python3`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Use the synthetic market even when real data is found.
    #[arg(long)]
    pub synthetic: bool,
    /// Where the chart goes.
    #[arg(long, default_value = "tickmesh-demo.svg")]
    pub chart: PathBuf,
    /// After the demo, keep the mesh up and serve the dashboard (at `--web-addr`) until
    /// Ctrl-C or SIGTERM.
    #[arg(long)]
    pub serve: bool,
    /// Where `--serve` serves the dashboard.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub web_addr: SocketAddr,
}

/// What the chart of one symbol is drawn from: symbol, candles, indicator series, signals.
type Chart = (String, Vec<Candle>, Vec<IndicatorSeries>, Vec<Signal>);

/// One symbol of the demo and where its data came from.
struct Dataset {
    symbol: String,
    interval: Interval,
    origin: String,
}

fn find_backtesting_data() -> Option<PathBuf> {
    let script = "import backtesting, os; print(os.path.join(os.path.dirname(backtesting.__file__), 'test'))";
    for python in [".venv/bin/python", "python3"] {
        let Ok(output) = std::process::Command::new(python)
            .args(["-c", script])
            .output()
        else {
            continue;
        };
        if output.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if dir.join("GOOG.csv").exists() {
                return Some(dir);
            }
        }
    }
    None
}

/// A small deterministic generator (xorshift64*), so the synthetic market is the same on every
/// run.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next_f64().max(1e-12), self.next_f64());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Hourly random walks with volatility regimes (calm and stormy stretches).
fn synthetic_market() -> Vec<(String, Vec<Candle>)> {
    const HOUR: i64 = 3_600_000_000;
    let start = 1_704_067_200_000_000; // 2024-01-01T00:00Z
    let specs = [
        ("SYN-ALPHA", 100.0, 1),
        ("SYN-BETA", 40.0, 2),
        ("SYN-GAMMA", 2500.0, 3),
    ];
    specs
        .iter()
        .map(|&(symbol, first, seed)| {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
            let mut price: f64 = first;
            let mut vol: f64 = 0.004;
            let candles = (0..1500)
                .map(|i| {
                    if rng.next_f64() < 0.01 {
                        vol = if vol < 0.006 { 0.012 } else { 0.004 }; // regime switch
                    }
                    let open = price;
                    let mut high = open;
                    let mut low = open;
                    for _ in 0..4 {
                        price *= (vol / 2.0 * rng.normal() + 0.00002).exp();
                        high = high.max(price);
                        low = low.min(price);
                    }
                    Candle {
                        symbol: symbol.into(),
                        interval: Interval::Interval1h as i32,
                        open_time_us: start + i * HOUR,
                        open,
                        high,
                        low,
                        close: price,
                        volume: (1000.0 * (1.0 + rng.next_f64())).round(),
                        trade_count: 0,
                        closed: true,
                    }
                })
                .collect();
            (symbol.to_owned(), candles)
        })
        .collect()
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

fn spec(kind: IndicatorKind, period: u32) -> IndicatorSpec {
    IndicatorSpec {
        kind: kind as i32,
        period,
        deviations: if kind == IndicatorKind::Bbands {
            2.0
        } else {
            0.0
        },
        ..Default::default()
    }
}

/// Runs the demo on a fresh store in `workdir`.
pub async fn run(args: DemoArgs, config: &ConfigHandle) -> anyhow::Result<()> {
    let workdir = tempfile::tempdir()?;
    let store = tickmesh_store::StoreOptions::new(format!(
        "sqlite:{}",
        workdir.path().join("demo.db").display()
    ));
    let deps = Deps::open(&store, None, config).await?;
    let shutdown = Shutdown::new();
    let targets: Vec<(Target, SocketAddr)> = Target::ALL
        .iter()
        .map(|&t| (t, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
        .collect();
    let web = if args.serve {
        Some(
            tokio::net::TcpListener::bind(args.web_addr)
                .await
                .with_context(|| format!("cannot listen on {} for the dashboard", args.web_addr))?,
        )
    } else {
        None
    };
    let listeners = App::bind(&targets).await?;
    let app = App::build_on(listeners, web, config, &deps, &shutdown).await?;
    let addrs = app.addrs();
    let ingestion_addr = addrs[&Target::Ingestion];
    println!("tickmesh demo: the four services are up on 127.0.0.1 (ports chosen by the OS)");

    // 1. Market data in, through the ingestion service.
    let data = if args.synthetic {
        None
    } else {
        args.data.clone().or_else(find_backtesting_data)
    };
    let mut datasets = Vec::new();
    match data {
        Some(dir) if dir.join("GOOG.csv").exists() => {
            for (file, symbol, interval) in [
                ("GOOG.csv", "GOOG", Interval::Interval1d),
                ("EURUSD.csv", "EURUSD", Interval::Interval1h),
            ] {
                let path = dir.join(file);
                if !path.exists() {
                    continue;
                }
                println!("replaying real data: {} as {symbol}", path.display());
                let summary = crate::replay::run(
                    ReplayArgs {
                        file: path.clone(),
                        symbol: symbol.into(),
                        kind: Kind::Candles,
                        interval: None,
                        target: ingestion_addr.to_string(),
                        source: "demo".into(),
                        speed: 0.0,
                        // Small batches: each is a bus event the computation service evaluates
                        // bar by bar, as a live feed would be.
                        batch: 50,
                        api_key: None,
                    },
                    &config.current().config,
                )
                .await?;
                println!("  {} bars stored", summary.stored);
                datasets.push(Dataset {
                    symbol: symbol.into(),
                    interval,
                    origin: format!("real: backtesting {file}"),
                });
            }
        }
        Some(dir) => bail!("{} holds no GOOG.csv", dir.display()),
        None => {
            println!(
                "no real data found (install the Python package `backtesting` or pass --data): \
                 replaying a SYNTHETIC market of random walks with volatility regimes"
            );
            let market = synthetic_market();
            let total: usize = market.iter().map(|(_, c)| c.len()).sum();
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} ingest [{bar:40}] {pos}/{len} bars, {per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            let mut ingest = IngestionServiceClient::new(connect(ingestion_addr).await?);
            for (symbol, candles) in market {
                for chunk in candles.chunks(50) {
                    ingest
                        .ingest_candles(IngestCandlesRequest {
                            candles: chunk.to_vec(),
                            source: "demo-synthetic".into(),
                        })
                        .await
                        .context("ingesting the synthetic market")?;
                    bar.inc(chunk.len() as u64);
                }
                datasets.push(Dataset {
                    symbol,
                    interval: Interval::Interval1h,
                    origin: "SYNTHETIC random walk".into(),
                });
            }
            bar.finish_and_clear();
        }
    }

    // 2. Let computation work through the bus, then query everything back.
    let mut query = QueryServiceClient::new(connect(addrs[&Target::Query]).await?);
    let mut latencies: Vec<Duration> = Vec::new();
    let symbols: Vec<String> = datasets.iter().map(|d| d.symbol.clone()).collect();
    wait_for_signals(&mut query, &symbols).await?;

    let mut rows = Vec::new();
    let mut chart: Option<Chart> = None;
    for dataset in &datasets {
        let started = Instant::now();
        let candles = all_candles(
            &mut query,
            &dataset.symbol,
            dataset.interval,
            &mut latencies,
        )
        .await?;
        let indicators_request = GetIndicatorsRequest {
            symbol: dataset.symbol.clone(),
            interval: dataset.interval as i32,
            indicators: vec![
                spec(IndicatorKind::Sma, 20),
                spec(IndicatorKind::Sma, 50),
                spec(IndicatorKind::Bbands, 20),
                spec(IndicatorKind::Rsi, 14),
            ],
            ..Default::default()
        };
        let mut indicators = Vec::new();
        let mut cache_hits = 0;
        // Asked twice, as a dashboard refreshing would: the second answer may come from a cache.
        for _ in 0..2 {
            let t = Instant::now();
            let response = query
                .get_indicators(indicators_request.clone())
                .await?
                .into_inner();
            latencies.push(t.elapsed());
            cache_hits += usize::from(response.cache_hit);
            indicators = response.series;
        }
        let signals = all_signals(&mut query, &dataset.symbol, &mut latencies).await?;
        let t = Instant::now();
        let latest = query
            .get_latest_prices(GetLatestPricesRequest {
                symbols: vec![dataset.symbol.clone()],
            })
            .await?
            .into_inner();
        latencies.push(t.elapsed());
        let last = |i: usize, output: &str| {
            indicators
                .get(i)
                .and_then(|s| s.outputs.iter().find(|o| o.name == output))
                .and_then(|o| o.values.last().copied())
                .unwrap_or(f64::NAN)
        };
        let mut by_strategy: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
        for signal in &signals {
            for vote in &signal.votes {
                let name = match Strategy::try_from(vote.strategy) {
                    Ok(Strategy::MaCrossover) => "ma",
                    Ok(Strategy::Rsi) => "rsi",
                    Ok(Strategy::Macd) => "macd",
                    Ok(Strategy::Bollinger) => "bb",
                    _ => continue,
                };
                let entry = by_strategy.entry(name).or_default();
                match SignalAction::try_from(vote.action) {
                    Ok(SignalAction::Buy) => entry.0 += 1,
                    Ok(SignalAction::Sell) => entry.1 += 1,
                    _ => {}
                }
            }
        }
        rows.push(vec![
            dataset.symbol.clone(),
            dataset.origin.clone(),
            candles.len().to_string(),
            latest
                .prices
                .first()
                .map_or("-".into(), |p| format!("{:.4}", p.price)),
            format!("{:.4}", last(0, "value")),
            format!("{:.1}", last(3, "value")),
            signals.len().to_string(),
            by_strategy
                .iter()
                .map(|(k, (b, s))| format!("{k} {b}/{s}"))
                .collect::<Vec<_>>()
                .join(", "),
            format!("{cache_hits}/2"),
            format!("{:.0} ms", started.elapsed().as_secs_f64() * 1e3),
        ]);
        if chart.is_none() {
            chart = Some((dataset.symbol.clone(), candles, indicators, signals));
        }
    }

    // 3. The report.
    println!();
    print_table(
        &[
            "symbol",
            "data",
            "bars",
            "last price",
            "SMA(20)",
            "RSI(14)",
            "signals",
            "votes buy/sell by strategy",
            "indicator cache hits",
            "queries",
        ],
        &rows,
    );
    let mut caching = tickmesh_proto::v1::caching_service_client::CachingServiceClient::new(
        connect(addrs[&Target::Caching]).await?,
    );
    let stats = caching
        .get_stats(tickmesh_proto::v1::GetStatsRequest::default())
        .await?
        .into_inner();
    println!(
        "\ncache (caching service GetStats): hit rate {:.1} % over all namespaces, {} entries in L1, {}",
        stats.hit_rate * 100.0,
        stats.l1_entries,
        if stats.l2_available {
            "L2 (Redis) available"
        } else {
            "L1 only (no Redis in the embedded setup)"
        }
    );
    latencies.sort();
    let q =
        |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    if !latencies.is_empty() {
        println!(
            "\n{} query calls through the query service's gRPC API: p50 {:.2} ms, p99 {:.2} ms",
            latencies.len(),
            q(0.5),
            q(0.99)
        );
    }
    if let Some((symbol, candles, indicators, signals)) = chart {
        let svg = chart_svg(&symbol, &candles, &indicators, &signals);
        std::fs::write(&args.chart, svg)
            .with_context(|| format!("cannot write {}", args.chart.display()))?;
        println!(
            "chart of {symbol} (candles, SMA 20/50, Bollinger Bands, buy/sell signals, RSI): {}",
            args.chart.display()
        );
    }
    if let Some(web) = app.web_addr() {
        let symbols: Vec<&str> = datasets.iter().map(|d| d.symbol.as_str()).collect();
        println!(
            "\ndashboard: http://{web}/?symbols={} (Ctrl-C stops the mesh)",
            symbols.join(",")
        );
        shutdown
            .on_signals()
            .context("cannot install the signal handlers")?;
    } else {
        shutdown.trigger();
    }
    app.wait().await?;
    Ok(())
}

/// Waits until the number of stored signals stops growing (the computation service has worked
/// through the replayed bars).
async fn wait_for_signals(
    query: &mut QueryServiceClient<Channel>,
    symbols: &[String],
) -> anyhow::Result<()> {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("computation is turning closed candles into signals");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut stable_since) = (usize::MAX, Instant::now());
    while Instant::now() < deadline {
        let count = query
            .get_signals(GetSignalsRequest {
                symbols: symbols.to_vec(),
                page_size: 5000,
                ..Default::default()
            })
            .await?
            .into_inner()
            .signals
            .len();
        if count != last {
            last = count;
            stable_since = Instant::now();
        } else if count > 0 && stable_since.elapsed() > Duration::from_millis(700) {
            break;
        }
        spinner.tick();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    spinner.finish_and_clear();
    Ok(())
}

async fn all_candles(
    query: &mut QueryServiceClient<Channel>,
    symbol: &str,
    interval: Interval,
    latencies: &mut Vec<Duration>,
) -> anyhow::Result<Vec<Candle>> {
    let (mut out, mut token) = (Vec::new(), String::new());
    loop {
        let t = Instant::now();
        let page = query
            .get_candles(GetCandlesRequest {
                symbol: symbol.into(),
                interval: interval as i32,
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        latencies.push(t.elapsed());
        out.extend(page.candles);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

async fn all_signals(
    query: &mut QueryServiceClient<Channel>,
    symbol: &str,
    latencies: &mut Vec<Duration>,
) -> anyhow::Result<Vec<Signal>> {
    let (mut out, mut token) = (Vec::new(), String::new());
    loop {
        let t = Instant::now();
        let page = query
            .get_signals(GetSignalsRequest {
                symbols: vec![symbol.into()],
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        latencies.push(t.elapsed());
        out.extend(page.signals);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(header.to_vec()));
    println!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for row in rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// The last 200 bars as an SVG: candles with SMA 20/50 and Bollinger Bands, buy/sell markers
/// from the signals, and an RSI panel.
pub fn chart_svg(
    symbol: &str,
    candles: &[Candle],
    indicators: &[IndicatorSeries],
    signals: &[Signal],
) -> String {
    const W: f64 = 1200.0;
    const TOP: f64 = 40.0;
    const PRICE_H: f64 = 420.0;
    const GAP: f64 = 30.0;
    const RSI_H: f64 = 140.0;
    const LEFT: f64 = 60.0;
    let n = candles.len().min(200);
    let first = candles.len() - n;
    let bars = &candles[first..];
    let series = |i: usize, name: &str| -> Vec<f64> {
        indicators
            .get(i)
            .and_then(|s| s.outputs.iter().find(|o| o.name == name))
            .map(|o| {
                o.values
                    .iter()
                    .skip(o.values.len().saturating_sub(n))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    };
    let (sma20, sma50) = (series(0, "value"), series(1, "value"));
    let (upper, lower) = (series(2, "upper"), series(2, "lower"));
    let rsi = series(3, "value");
    let finite = |v: &f64| v.is_finite();
    let lo = bars
        .iter()
        .map(|c| c.low)
        .chain(lower.iter().copied().filter(finite))
        .fold(f64::INFINITY, f64::min);
    let hi = bars
        .iter()
        .map(|c| c.high)
        .chain(upper.iter().copied().filter(finite))
        .fold(f64::NEG_INFINITY, f64::max);
    let step = (W - LEFT - 20.0) / n.max(1) as f64;
    let x = |i: usize| LEFT + (i as f64 + 0.5) * step;
    let y = |p: f64| TOP + (hi - p) / (hi - lo).max(f64::MIN_POSITIVE) * PRICE_H;
    let rsi_top = TOP + PRICE_H + GAP;
    let ry = |v: f64| rsi_top + (100.0 - v) / 100.0 * RSI_H;
    let height = rsi_top + RSI_H + 30.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(svg, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="24" font-size="16">{symbol}: last {n} bars, SMA 20 (orange) / 50 (purple), Bollinger 20x2 (grey), buy ▲ / sell ▼</text>"##
    );
    for (i, c) in bars.iter().enumerate() {
        let color = if c.close >= c.open {
            "#2e7d32"
        } else {
            "#c62828"
        };
        let (top, bottom) = (y(c.open.max(c.close)), y(c.open.min(c.close)));
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="{color}"/><rect x="{3:.1}" y="{top:.1}" width="{4:.1}" height="{5:.1}" fill="{color}"/>"##,
            x(i),
            y(c.high),
            y(c.low),
            x(i) - step * 0.35,
            step * 0.7,
            (bottom - top).max(0.5)
        );
    }
    let path = |values: &[f64], f: &dyn Fn(f64) -> f64| {
        let mut d = String::new();
        for (i, v) in values.iter().enumerate() {
            if v.is_finite() {
                let _ = write!(
                    d,
                    "{}{:.1},{:.1} ",
                    if d.is_empty() { "M" } else { "L" },
                    x(i),
                    f(*v)
                );
            }
        }
        d
    };
    for (values, color, width) in [
        (&upper, "#9e9e9e", 1.0),
        (&lower, "#9e9e9e", 1.0),
        (&sma20, "#ef6c00", 1.5),
        (&sma50, "#6a1b9a", 1.5),
    ] {
        let _ = writeln!(
            svg,
            r##"<path d="{}" fill="none" stroke="{color}" stroke-width="{width}"/>"##,
            path(values, &y)
        );
    }
    let index: BTreeMap<i64, usize> = bars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.open_time_us, i))
        .collect();
    for signal in signals {
        let Some(&i) = index.get(&signal.time_us) else {
            continue;
        };
        let c = &bars[i];
        match SignalAction::try_from(signal.action) {
            Ok(SignalAction::Buy) => {
                let (px, py) = (x(i), y(c.low) + 14.0);
                let _ = writeln!(
                    svg,
                    r##"<path d="M{px:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z" fill="#1565c0"/>"##,
                    py - 8.0,
                    px - 5.0,
                    py,
                    px + 5.0,
                    py
                );
            }
            Ok(SignalAction::Sell) => {
                let (px, py) = (x(i), y(c.high) - 14.0);
                let _ = writeln!(
                    svg,
                    r##"<path d="M{px:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z" fill="#d84315"/>"##,
                    py + 8.0,
                    px - 5.0,
                    py,
                    px + 5.0,
                    py
                );
            }
            _ => {}
        }
    }
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}">RSI(14)</text>"##,
        rsi_top - 6.0
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{rsi_top:.1}" width="{:.1}" height="{RSI_H}" fill="none" stroke="#bdbdbd"/>"##,
        W - LEFT - 20.0
    );
    for level in [30.0, 70.0] {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{1:.1}" y2="{1:.1}" stroke="#bdbdbd" stroke-dasharray="4 4"/>"##,
            W - 20.0,
            ry(level)
        );
    }
    let _ = writeln!(
        svg,
        r##"<path d="{}" fill="none" stroke="#00838f" stroke-width="1.5"/>"##,
        path(&rsi, &ry)
    );
    let _ = writeln!(
        svg,
        r##"<text x="4" y="{:.1}">{hi:.2}</text><text x="4" y="{:.1}">{lo:.2}</text>"##,
        TOP + 10.0,
        TOP + PRICE_H
    );
    svg.push_str("</svg>\n");
    svg
}

/// Whether `path` looks writable for the chart (its folder exists).
pub fn chart_folder_exists(path: &Path) -> bool {
    path.parent()
        .is_none_or(|p| p.as_os_str().is_empty() || p.exists())
}
