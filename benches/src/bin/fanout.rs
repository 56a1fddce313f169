//! Stream fan-out of one query process: `--subscribers` streams of
//! `QueryService/StreamMarketData` (ticks of one symbol) on a `tickmesh up` started here, while
//! ticks of that symbol go into the ingestion service at a steady `--rate` (a batch every
//! `--batch-ms`, each tick stamped with the wall clock when it is sent). Reports the events
//! delivered per second, summed over the subscribers, and the delivery lag (receive time minus
//! the tick's time: ingestion, store commit, outbox relay, bus, fan-out, HTTP/2) at p50/p99/
//! p99.9. The baseline, in the same process and run, is the same ingest with one subscriber.
//!
//! Usage: cargo run --release -p tickmesh-benches --bin fanout -- [--subscribers N]
//! [--rate TICKS_PER_S] [--seconds S] [--connections K] [--batch-ms MS] [--bin PATH]
//! [--json FILE]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::market_event::Payload;
use tickmesh_proto::v1::query_service_client::QueryServiceClient;
use tickmesh_proto::v1::{EventKind, IngestTickBatchRequest, Side, StreamMarketDataRequest, Tick};
use tonic::transport::Channel;

/// Options of the run.
#[derive(Debug, Clone)]
struct Args {
    subscribers: usize,
    rate: f64,
    seconds: f64,
    connections: usize,
    batch_ms: u64,
    bin: PathBuf,
    json: Option<PathBuf>,
}

fn parse() -> anyhow::Result<Args> {
    let mut bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/tickmesh");
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        bin = PathBuf::from(dir).join("release/tickmesh");
    }
    let mut a = Args {
        subscribers: 1000,
        rate: 50.0,
        seconds: 10.0,
        connections: 8,
        batch_ms: 20,
        bin,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--subscribers" => a.subscribers = value()?.parse()?,
            "--rate" => a.rate = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--connections" => a.connections = value()?.parse()?,
            "--batch-ms" => a.batch_ms = value()?.parse()?,
            "--bin" => a.bin = value()?.into(),
            "--json" => a.json = Some(value()?.into()),
            other => bail!("unknown argument {other}"),
        }
    }
    ensure!(
        a.subscribers >= 1 && a.rate > 0.0 && a.seconds > 0.0 && a.batch_ms >= 1,
        "need --subscribers >= 1, --rate > 0, --seconds > 0 and --batch-ms >= 1"
    );
    a.connections = a.connections.max(1);
    Ok(a)
}

/// `tickmesh up` in a throwaway directory, stopped when dropped.
struct Mesh {
    child: Child,
    ingestion: String,
    query: String,
    _dir: tempfile::TempDir,
}

impl Mesh {
    fn start(bin: &PathBuf) -> anyhow::Result<Mesh> {
        ensure!(
            bin.exists(),
            "{} not found: build it first with `cargo build --release -p tickmesh`",
            bin.display()
        );
        let dir = tempfile::tempdir()?;
        let ready = dir.path().join("ready.json");
        let child = Command::new(bin)
            .args(["up", "--base-port", "0", "--ready-file"])
            .arg(&ready)
            .arg("--store")
            .arg(format!("sqlite:{}", dir.path().join("fanout.db").display()))
            .current_dir(dir.path())
            .env("TICKMESH_METRICS_ADDR", "127.0.0.1:0")
            .env(
                "TICKMESH_LOG",
                std::env::var("TICKMESH_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            ensure!(
                Instant::now() < deadline,
                "tickmesh up did not start in 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ready)?)?;
        let addr = |name: &str| {
            json[name]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("no {name} address in the ready file"))
        };
        Ok(Mesh {
            ingestion: addr("ingestion")?,
            query: addr("query")?,
            child,
            _dir: dir,
        })
    }

    /// Peak resident set size of the mesh process so far, in MiB.
    fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        tickmesh_benches::peak_rss_mib(self.child.id())
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

/// What one phase (a number of subscribers) measured.
#[derive(Debug)]
struct Phase {
    subscribers: usize,
    ticks_sent: u64,
    ticks_in_window: u64,
    window_s: f64,
    delivered_in_window: u64,
    lag: Histogram<u64>,
    stream_errors: std::collections::BTreeMap<String, u64>,
}

impl Phase {
    fn events_per_second(&self) -> f64 {
        self.delivered_in_window as f64 / self.window_s
    }

    fn delivered_fraction(&self) -> f64 {
        let expected = self.ticks_in_window as f64 * self.subscribers as f64;
        if expected > 0.0 {
            self.delivered_in_window as f64 / expected
        } else {
            f64::NAN
        }
    }

    fn lag_ms(&self, q: f64) -> f64 {
        self.lag.value_at_quantile(q) as f64 / 1000.0
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "subscribers": self.subscribers,
            "ticks_sent": self.ticks_sent,
            "ticks_per_second": self.ticks_in_window as f64 / self.window_s,
            "window_s": self.window_s,
            "events_delivered": self.delivered_in_window,
            "events_per_second": self.events_per_second(),
            "delivered_fraction": self.delivered_fraction(),
            "lag_p50_ms": self.lag_ms(0.5),
            "lag_p99_ms": self.lag_ms(0.99),
            "lag_p999_ms": self.lag_ms(0.999),
            "lag_max_ms": self.lag.max() as f64 / 1000.0,
            "stream_errors": self.stream_errors,
        })
    }
}

/// Ticks counted are those stamped inside the measuring window `[from_us, to_us)`; empty
/// until the warm-up is over.
#[derive(Debug)]
struct Window {
    from_us: AtomicI64,
    to_us: AtomicI64,
}

impl Window {
    fn contains(&self, time_us: i64) -> bool {
        time_us >= self.from_us.load(Ordering::Relaxed)
            && time_us < self.to_us.load(Ordering::Relaxed)
    }
}

/// Subscribes `n` streams to `symbol`'s ticks, ingests at the steady rate for the warm-up and
/// the measured window, and collects what every subscriber received.
async fn phase(
    mesh: &Mesh,
    symbol: &str,
    n: usize,
    args: &Args,
    progress: &ProgressBar,
) -> anyhow::Result<Phase> {
    let connections = args.connections.min(n);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(connect(&mesh.query).await?);
    }
    let window = Arc::new(Window {
        from_us: AtomicI64::new(i64::MAX),
        to_us: AtomicI64::new(i64::MAX),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let subscribed = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::with_capacity(n);
    progress.set_message(format!("{n} subscribers: subscribing"));
    for i in 0..n {
        let mut client = QueryServiceClient::new(channels[i % connections].clone());
        let request = StreamMarketDataRequest {
            symbols: vec![symbol.to_owned()],
            kinds: vec![EventKind::Tick as i32],
            intervals: Vec::new(),
            resume_from_time_us: 0,
        };
        let (window, mut stopped, subscribed, received) = (
            window.clone(),
            stopped.clone(),
            subscribed.clone(),
            received.clone(),
        );
        subscribers.push(tokio::spawn(async move {
            let mut lag = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            let mut counted = 0u64;
            let mut stream = client.stream_market_data(request).await?.into_inner();
            subscribed.fetch_add(1, Ordering::Relaxed);
            let mut error = None;
            loop {
                let next = tokio::select! {
                    next = stream.message() => next,
                    _ = stopped.changed() => break,
                };
                match next {
                    Ok(Some(response)) => {
                        let at = now_us();
                        let Some(Payload::Tick(tick)) = response.event.and_then(|e| e.payload)
                        else {
                            continue;
                        };
                        received.fetch_add(1, Ordering::Relaxed);
                        if window.contains(tick.time_us) {
                            counted += 1;
                            lag.saturating_record((at - tick.time_us).max(1) as u64);
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        error = Some(format!("{:?}", status.code()));
                        break;
                    }
                }
            }
            anyhow::Ok((lag, counted, error))
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while subscribed.load(Ordering::Relaxed) < n {
        ensure!(
            Instant::now() < deadline,
            "only {} of {n} subscriptions open after 60 s",
            subscribed.load(Ordering::Relaxed)
        );
        if subscribers.iter().any(|t| t.is_finished()) {
            break; // a subscription failed: its error is reported below
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Steady ingest: a batch every batch_ms, the ticks of each stamped with the time of sending.
    let mut ingestion = IngestionServiceClient::new(connect(&mesh.ingestion).await?);
    let period = Duration::from_millis(args.batch_ms);
    let per_batch = args.rate * period.as_secs_f64();
    let warmup = Duration::from_secs(1);
    let measured = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut owed = 0.0f64;
    let (mut sent, mut in_window) = (0u64, 0u64);
    let mut measuring = false;
    let mut from_us = 0;
    let mut batch_no = 0u32;
    progress.set_message(format!("{n} subscribers: ingesting {} ticks/s", args.rate));
    loop {
        let due = started + period * batch_no;
        batch_no += 1;
        if due >= started + warmup + measured {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if !measuring && due >= started + warmup {
            measuring = true;
            from_us = now_us();
            window.from_us.store(from_us, Ordering::Relaxed);
        }
        owed += per_batch;
        let count = owed.floor() as u64;
        owed -= count as f64;
        if count == 0 {
            continue;
        }
        let stamp = now_us();
        let ticks: Vec<Tick> = (0..count)
            .map(|k| {
                let id = sent + k;
                Tick {
                    symbol: symbol.to_owned(),
                    // Distinct times keep the stored ticks (symbol, time, trade id) distinct even
                    // when two batches get the same clock reading.
                    time_us: stamp + k as i64,
                    trade_id: format!("fan-{id}"),
                    price: 100.0 + (id % 100) as f64 * 0.01,
                    size: 1.0,
                    side: Side::Buy as i32,
                }
            })
            .collect();
        let summary = ingestion
            .ingest_tick_batch(IngestTickBatchRequest {
                ticks,
                source: "fanout-bench".into(),
            })
            .await?
            .into_inner()
            .summary
            .context("no ingest summary")?;
        ensure!(
            summary.stored == count,
            "stored {} of {count} ticks",
            summary.stored
        );
        sent += count;
        if measuring {
            in_window += count;
        }
        progress.set_position(received.load(Ordering::Relaxed));
    }
    let end_us = now_us();
    window.to_us.store(end_us, Ordering::Relaxed);
    let window_s = (end_us - from_us) as f64 / 1e6;
    // Let what is still on its way arrive: until every subscriber has everything, or 5 s.
    let expected_total = sent * n as u64;
    let drain = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) < expected_total && Instant::now() < drain {
        progress.set_position(received.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);

    let mut lag = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut delivered = 0;
    let mut stream_errors = std::collections::BTreeMap::new();
    for task in subscribers {
        match task.await? {
            Ok((h, counted, error)) => {
                lag.add(&h)?;
                delivered += counted;
                if let Some(code) = error {
                    *stream_errors.entry(code).or_insert(0) += 1;
                }
            }
            Err(e) => *stream_errors.entry(format!("{e:#}")).or_insert(0) += 1,
        }
    }
    Ok(Phase {
        subscribers: n,
        ticks_sent: sent,
        ticks_in_window: in_window,
        window_s,
        delivered_in_window: delivered,
        lag,
        stream_errors,
    })
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let mesh = Mesh::start(&args.bin)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}: {pos} events received")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(Duration::from_millis(100));
    let (base, fan) = runtime.block_on(async {
        let base = phase(&mesh, "FANOUT-ONE", 1, &args, &progress).await?;
        progress.set_position(0);
        let fan = phase(&mesh, "FANOUT-MANY", args.subscribers, &args, &progress).await?;
        anyhow::Ok((base, fan))
    })?;
    progress.finish_and_clear();
    let rss = mesh.peak_rss_mib()?;
    drop(mesh);

    println!(
        "StreamMarketData fan-out on one `tickmesh up`, ticks ingested at {} ticks/s (a batch every {} ms), {} s measured after 1 s warm-up, subscribers over {} connections:",
        args.rate, args.batch_ms, args.seconds, args.connections
    );
    println!(
        "{:>12} {:>10} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}  errors",
        "subscribers",
        "ticks/s",
        "events/s",
        "delivered",
        "lag p50",
        "lag p99",
        "lag p99.9",
        "lag max"
    );
    for p in [&base, &fan] {
        println!(
            "{:>12} {:>10.1} {:>12.0} {:>9.2}% {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms  {:?}",
            p.subscribers,
            p.ticks_in_window as f64 / p.window_s,
            p.events_per_second(),
            p.delivered_fraction() * 100.0,
            p.lag_ms(0.5),
            p.lag_ms(0.99),
            p.lag_ms(0.999),
            p.lag.max() as f64 / 1000.0,
            p.stream_errors
        );
    }
    let ratios = serde_json::json!({
        "events_per_second": fan.events_per_second() / base.events_per_second(),
        "ideal_events_per_second": fan.subscribers as f64 / base.subscribers as f64,
        "lag_p50": fan.lag_ms(0.5) / base.lag_ms(0.5),
        "lag_p99": fan.lag_ms(0.99) / base.lag_ms(0.99),
        "lag_p999": fan.lag_ms(0.999) / base.lag_ms(0.999),
    });
    println!(
        "{} subscribers / 1: events/s {:.1}x (ideal {}x), lag p50 {:.2}x, p99 {:.2}x; mesh peak RSS {rss:.1} MiB",
        fan.subscribers,
        fan.events_per_second() / base.events_per_second(),
        fan.subscribers,
        fan.lag_ms(0.5) / base.lag_ms(0.5),
        fan.lag_ms(0.99) / base.lag_ms(0.99),
    );
    if let Some(path) = &args.json {
        let out = serde_json::json!({
            "rate_ticks_per_s": args.rate,
            "batch_ms": args.batch_ms,
            "seconds": args.seconds,
            "connections": args.connections,
            "baseline": base.json(),
            "fanout": fan.json(),
            "ratio_to_baseline": ratios,
            "mesh_peak_rss_mib": rss,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
        println!("JSON written to {}", path.display());
    }
    ensure!(
        base.delivered_in_window > 0 && fan.delivered_in_window > 0,
        "no event was delivered in the window"
    );
    Ok(())
}
