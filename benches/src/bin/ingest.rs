//! Ingestion throughput against the databases' own bulk paths, in the same run:
//!
//! - PostgreSQL: N ticks streamed through the gRPC ingestion service (`tickmesh serve
//!   --target ingestion`, release build) into a throwaway PostgreSQL, against `psql \copy` of
//!   the same rows into an empty table of the same shape;
//! - SQLite (the embedded default): the same stream into an SQLite store, against a raw
//!   batched multi-row INSERT of the same rows into an empty SQLite table, in one transaction.
//!
//! Also reports the server's peak RSS (VmHWM). Usage:
//! `cargo run --release -p tickmesh-benches --bin ingest -- [--ticks N] [--batch N] [--json FILE]`

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use diesel::{Connection, RunQueryDsl, SqliteConnection};
use indicatif::{ProgressBar, ProgressStyle};
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{IngestTicksRequest, Side, Tick};
use tickmesh_store::TickRow;

/// 2025-01-06T00:00:00Z.
const T0: i64 = 1_736_121_600_000_000;
const SYMBOLS: [&str; 4] = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD"];

fn tick(i: u64) -> Tick {
    let i = i as i64;
    Tick {
        symbol: SYMBOLS[(i % 4) as usize].to_owned(),
        // One tick per 250 µs per symbol: a million ticks are about four minutes of trading.
        time_us: T0 + i * 250,
        trade_id: format!("{i}"),
        price: 100.0 + (i % 1000) as f64 * 0.01,
        size: 0.001 * (1 + i % 50) as f64,
        side: if i % 2 == 0 { Side::Buy } else { Side::Sell } as i32,
    }
}

struct Server {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &PathBuf, store_url: &str) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let ready = dir.path().join("ready.json");
        let child = Command::new(bin)
            .args([
                "serve",
                "--target",
                "ingestion",
                "--listen",
                "127.0.0.1:0",
                "--ready-file",
            ])
            .arg(&ready)
            .env("TICKMESH_STORE_URL", store_url)
            .env("TICKMESH_METRICS_ADDR", "127.0.0.1:0")
            .env(
                "TICKMESH_LOG",
                std::env::var("TICKMESH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            ensure!(Instant::now() < deadline, "ingestion did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ready)?)?;
        let addr = json["ingestion"].as_str().context("address")?.to_owned();
        Ok(Server {
            child,
            addr,
            _dir: dir,
        })
    }

    /// Peak resident set size of the server so far, in MiB.
    fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        tickmesh_benches::peak_rss_mib(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Streams `n` ticks in batches through one IngestTicks call; returns the seconds it took
/// from the first message to the committed answer.
async fn stream(addr: &str, n: u64, batch: u64, label: &str) -> anyhow::Result<f64> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = IngestionServiceClient::new(channel).max_encoding_message_size(64 << 20);
    let bar = ProgressBar::new(n);
    bar.set_style(ProgressStyle::with_template(&format!(
        "{label:>18} [{{bar:40}}] {{pos}}/{{len}} ticks {{per_sec}}"
    ))?);
    let (tx, rx) = tokio::sync::mpsc::channel::<IngestTicksRequest>(4);
    let producer = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut next = 0;
            while next < n {
                let end = (next + batch).min(n);
                let ticks = (next..end).map(tick).collect();
                if tx
                    .send(IngestTicksRequest {
                        ticks,
                        source: "bench".into(),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
                bar.inc(end - next);
                next = end;
            }
        })
    };
    let started = Instant::now();
    let summary = client
        .ingest_ticks(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner()
        .summary
        .context("summary")?;
    let seconds = started.elapsed().as_secs_f64();
    producer.await?;
    bar.finish_and_clear();
    ensure!(summary.stored == n, "stored {} of {n}", summary.stored);
    Ok(seconds)
}

fn write_csv(n: u64) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new()?;
    {
        let mut out = std::io::BufWriter::new(file.as_file_mut());
        for i in 0..n {
            let t = tick(i);
            writeln!(
                out,
                "{},{},{},{},{},{}",
                t.symbol, t.time_us, t.trade_id, t.price, t.size, t.side
            )?;
        }
    }
    // The server user (postgres) reads it through psql's \copy, which runs as the caller:
    // the file only needs to be readable by whoever runs psql.
    Ok(file)
}

fn rows(n: u64) -> Vec<TickRow> {
    (0..n)
        .map(|i| {
            let t = tick(i);
            TickRow {
                symbol: t.symbol,
                ts_us: t.time_us,
                trade_id: t.trade_id,
                price: t.price,
                size: t.size,
                side: t.side as i16,
            }
        })
        .collect()
}

/// Raw batched multi-row INSERT into an empty SQLite table, with the store's pragmas.
fn sqlite_baseline(path: &str, n: u64, batch: usize) -> anyhow::Result<f64> {
    use tickmesh_store::schema::ticks;
    let mut conn = SqliteConnection::establish(path)?;
    for pragma in ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL"] {
        diesel::sql_query(pragma).execute(&mut conn)?;
    }
    let rows = rows(n);
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        conn.immediate_transaction(|c| {
            for part in chunk.chunks(5000) {
                diesel::insert_into(ticks::table).values(part).execute(c)?;
            }
            diesel::QueryResult::Ok(())
        })?;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let mut n = 1_000_000u64;
    let mut batch = 5_000u64;
    let mut json_out: Option<PathBuf> = None;
    let mut bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/tickmesh");
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        bin = PathBuf::from(dir).join("release/tickmesh");
    }
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ticks" => n = args.next().context("--ticks N")?.parse()?,
            "--batch" => batch = args.next().context("--batch N")?.parse()?,
            "--json" => json_out = Some(args.next().context("--json FILE")?.into()),
            "--bin" => bin = args.next().context("--bin PATH")?.into(),
            other => bail!("unknown argument {other}"),
        }
    }
    ensure!(
        bin.exists(),
        "{} not found: run `cargo build --release` first",
        bin.display()
    );
    let runtime = tokio::runtime::Runtime::new()?;

    // PostgreSQL.
    let pg = tickmesh_testkit::Postgres::start()?;
    let server = Server::start(&bin, &pg.url())?;
    let grpc_pg = runtime.block_on(stream(&server.addr, n, batch, "gRPC -> PostgreSQL"))?;
    let rss_pg = server.peak_rss_mib()?;
    drop(server);
    pg.psql("CREATE TABLE ticks_copy (LIKE ticks INCLUDING ALL)")?;
    let csv = write_csv(n)?;
    std::fs::set_permissions(
        csv.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    let started = Instant::now();
    pg.psql(&format!(
        "\\copy ticks_copy (symbol, ts_us, trade_id, price, size, side) FROM '{}' CSV",
        csv.path().display()
    ))?;
    let copy_pg = started.elapsed().as_secs_f64();
    ensure!(
        pg.psql("SELECT count(*) FROM ticks_copy")? == n.to_string(),
        "copy row count"
    );

    // SQLite.
    let dir = tempfile::tempdir()?;
    let store_path = dir.path().join("store.db");
    let server = Server::start(&bin, &format!("sqlite:{}", store_path.display()))?;
    let grpc_lite = runtime.block_on(stream(&server.addr, n, batch, "gRPC -> SQLite"))?;
    let rss_lite = server.peak_rss_mib()?;
    drop(server);
    let baseline_path = dir.path().join("baseline.db");
    runtime.block_on(tickmesh_store::Store::open(
        &tickmesh_store::StoreOptions::new(format!("sqlite:{}", baseline_path.display())),
    ))?;
    let raw_lite = sqlite_baseline(&baseline_path.to_string_lossy(), n, batch as usize)?;

    let rate = |s: f64| n as f64 / s;
    println!("ingestion of {n} ticks, batches of {batch}, same run:");
    println!(
        "  PostgreSQL: gRPC ingestion {:>9.0} ticks/s | psql \\copy {:>9.0} ticks/s | ratio {:.3}",
        rate(grpc_pg),
        rate(copy_pg),
        copy_pg / grpc_pg
    );
    println!(
        "  SQLite:     gRPC ingestion {:>9.0} ticks/s | raw batch  {:>9.0} ticks/s | ratio {:.3}",
        rate(grpc_lite),
        rate(raw_lite),
        raw_lite / grpc_lite
    );
    println!("  server peak RSS: {rss_pg:.1} MiB (PostgreSQL run), {rss_lite:.1} MiB (SQLite run)");
    if let Some(path) = json_out {
        let json = serde_json::json!({
            "ticks": n, "batch": batch,
            "postgres": {"grpc_ticks_per_s": rate(grpc_pg), "copy_ticks_per_s": rate(copy_pg), "ratio": copy_pg / grpc_pg, "peak_rss_mib": rss_pg},
            "sqlite": {"grpc_ticks_per_s": rate(grpc_lite), "raw_ticks_per_s": rate(raw_lite), "ratio": raw_lite / grpc_lite, "peak_rss_mib": rss_lite},
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
