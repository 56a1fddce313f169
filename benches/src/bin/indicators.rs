//! Batch indicators of `tickmesh-indicators` against TA-Lib on the same data, in the same run.
//!
//! Generates a seeded random-walk OHLCV series, writes its columns to a temporary file as raw
//! little-endian f64, times each Rust batch function (`*_into` into a preallocated buffer) and
//! then TA-Lib on the same file through the workspace's `.venv` python
//! (`shared/indicators/benches/talib_timing.py`, `time.perf_counter_ns`). Both report the median
//! over `--reps` runs after two warm-up runs, in nanoseconds per input point.
//!
//! Same memory on both sides: TA-Lib reads the five columns from one numpy array
//! (`reshape(5, n)`), so ours are slices of one `Vec` too, and numpy asks for transparent huge
//! pages (`madvise`) for arrays of 4 MiB and more, so the tool runs itself again with glibc's
//! `glibc.malloc.hugetlb=1` tunable, which makes malloc ask the same for its large blocks. At a
//! million points the loops that stream three columns at one bar per FMA latency (ATR) notice
//! the 4 KiB pages: `--no-huge-pages` measures without them.
//!
//! Usage: cargo run --release -p tickmesh-benches --bin indicators -- [--points N] [--reps N]
//! [--rounds N] [--json] [--no-huge-pages]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use tickmesh_indicators::ta::{ma, osc, vol, volume};

fn main() -> anyhow::Result<()> {
    let mut points = 1_000_000usize;
    let mut reps = 15usize;
    let mut json = false;
    let mut rounds = 5usize;
    let mut huge_pages = true;
    let mut one_round = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--points" => points = args.next().context("--points N")?.parse()?,
            "--reps" => reps = args.next().context("--reps N")?.parse()?,
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            "--json" => json = true,
            "--no-huge-pages" => huge_pages = false,
            // Internal: one round of our side on the columns in this file, as JSON.
            "--one-round" => one_round = Some(args.next().context("--one-round FILE")?),
            other => bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(
        points >= 100 && reps >= 1 && rounds >= 1,
        "need --points >= 100, --reps >= 1 and --rounds >= 1"
    );

    if let Some(path) = one_round {
        let columns = read_columns(path.as_ref(), points)?;
        println!(
            "{}",
            serde_json::to_string(&time_rust(&columns, points, reps)?)?
        );
        return Ok(());
    }
    if huge_pages && !huge_page_tunable() {
        return rerun_with_huge_pages();
    }

    let data = Ohlcv::random_walk(points, 0x5eed_1dea_u64);
    let mut file = tempfile::NamedTempFile::new()?;
    for column in [&data.open, &data.high, &data.low, &data.close, &data.volume] {
        let bytes: Vec<u8> = column.iter().flat_map(|v| v.to_le_bytes()).collect();
        file.write_all(&bytes)?;
    }
    file.flush()?;

    // Each round times both sides, each in a fresh process reading the same file: where a
    // process's pages land moves the memory-bound loops (ATR) by up to 10 % from one process
    // to the next, so both sides draw that lottery once per round. Rounds alternate which side
    // goes first, so that a slow spell of this shared machine lands on both; each ratio is the
    // median of the rounds' ratios.
    let mut ours: Vec<Vec<(String, f64)>> = Vec::with_capacity(rounds);
    let mut talib: Vec<BTreeMap<String, f64>> = Vec::with_capacity(rounds);
    for round in 0..rounds {
        if round % 2 == 0 {
            ours.push(time_rust_process(file.path(), points, reps)?);
            talib.push(time_talib(file.path(), points, reps)?);
        } else {
            talib.push(time_talib(file.path(), points, reps)?);
            ours.push(time_rust_process(file.path(), points, reps)?);
        }
    }
    let rows: Vec<Row> = ours[0]
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let tickmesh: Vec<f64> = ours.iter().map(|round| round[i].1).collect();
            let reference: Option<Vec<f64>> =
                talib.iter().map(|round| round.get(name).copied()).collect();
            let ratios = reference.as_ref().map(|reference| {
                tickmesh
                    .iter()
                    .zip(reference)
                    .map(|(ours, theirs)| ours / theirs)
                    .collect::<Vec<_>>()
            });
            Row {
                name: name.clone(),
                tickmesh: median(tickmesh),
                talib: reference.map(median),
                ratio: ratios.as_ref().map(|r| median(r.clone())),
                spread: ratios.map(|r| {
                    let low = r.iter().copied().fold(f64::INFINITY, f64::min);
                    let high = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (low, high)
                }),
            }
        })
        .collect();

    if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|row| {
                serde_json::json!({
                    "indicator": row.name,
                    "tickmesh_ns_per_point": row.tickmesh,
                    "talib_ns_per_point": row.talib,
                    "ratio": row.ratio,
                    "ratio_min": row.spread.map(|s| s.0),
                    "ratio_max": row.spread.map(|s| s.1),
                    "rounds": rounds,
                    "huge_pages": huge_pages,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{points} points; per round the median of {reps} runs of each side, {rounds} rounds; \
         ns per point (medians over rounds), ratio = tickmesh / TA-Lib (median and range of the \
         rounds' ratios); {}",
        if huge_pages {
            "huge pages asked for on both sides"
        } else {
            "huge pages for TA-Lib's numpy arrays only"
        }
    );
    println!("| indicator | tickmesh | TA-Lib | ratio | rounds |");
    println!("|---|---|---|---|---|");
    for row in &rows {
        let name = &row.name;
        match (row.talib, row.ratio, row.spread) {
            (Some(t), Some(ratio), Some((low, high))) => println!(
                "| {name} | {:.2} | {t:.2} | {ratio:.2} | {low:.2}-{high:.2} |",
                row.tickmesh
            ),
            _ => println!("| {name} | {:.2} | - | - | - |", row.tickmesh),
        }
    }
    Ok(())
}

/// The glibc tunable that puts malloc's large blocks on transparent huge pages.
const HUGE_PAGE_TUNABLE: &str = "glibc.malloc.hugetlb=1";

/// Whether this process runs with [`HUGE_PAGE_TUNABLE`].
fn huge_page_tunable() -> bool {
    std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.split(':').any(|t| t == HUGE_PAGE_TUNABLE))
}

/// Runs this tool again, same arguments, with [`HUGE_PAGE_TUNABLE`] added to `GLIBC_TUNABLES`
/// (read by glibc only at start-up), and exits with its status.
fn rerun_with_huge_pages() -> anyhow::Result<()> {
    let tunables = match std::env::var("GLIBC_TUNABLES") {
        Ok(t) if !t.is_empty() => format!("{t}:{HUGE_PAGE_TUNABLE}"),
        _ => HUGE_PAGE_TUNABLE.to_owned(),
    };
    let status = Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", tunables)
        .status()
        .context("running the indicators tool again with huge pages")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// OHLCV columns.
struct Ohlcv {
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    volume: Vec<f64>,
}

impl Ohlcv {
    /// A geometric random walk around 100 with intrabar ranges and volumes, from xorshift64*.
    fn random_walk(points: usize, seed: u64) -> Ohlcv {
        let mut state = seed.max(1);
        let mut uniform = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut data = Ohlcv {
            open: Vec::with_capacity(points),
            high: Vec::with_capacity(points),
            low: Vec::with_capacity(points),
            close: Vec::with_capacity(points),
            volume: Vec::with_capacity(points),
        };
        let mut close: f64 = 100.0;
        for _ in 0..points {
            let open = close;
            close *= 1.0 + (uniform() - 0.5) * 0.02;
            let high = open.max(close) * (1.0 + uniform() * 0.005);
            let low = open.min(close) * (1.0 - uniform() * 0.005);
            data.open.push(open);
            data.high.push(high);
            data.low.push(low);
            data.close.push(close);
            data.volume.push((uniform() * 1e6).floor());
        }
        data
    }
}

type Job<'a> = Box<dyn FnMut() -> Result<(), tickmesh_indicators::Error> + 'a>;

/// One indicator's figures over the rounds.
struct Row {
    name: String,
    tickmesh: f64,
    talib: Option<f64>,
    ratio: Option<f64>,
    /// Lowest and highest ratio of a round.
    spread: Option<(f64, f64)>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The five columns (open, high, low, close, volume) of `points` little-endian f64 each, in
/// one block as in the numpy array TA-Lib reads from the same file (`reshape(5, n)`).
fn read_columns(path: &std::path::Path, points: usize) -> anyhow::Result<Vec<f64>> {
    let bytes = std::fs::read(path)?;
    anyhow::ensure!(
        bytes.len() == 5 * 8 * points,
        "{} holds {} bytes, not 5 columns of {points} f64",
        path.display(),
        bytes.len()
    );
    Ok(bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect())
}

/// [`time_rust`] in a fresh process of this tool.
fn time_rust_process(
    path: &std::path::Path,
    points: usize,
    reps: usize,
) -> anyhow::Result<Vec<(String, f64)>> {
    let output = Command::new(std::env::current_exe()?)
        .arg("--one-round")
        .arg(path)
        .args(["--points", &points.to_string(), "--reps", &reps.to_string()])
        .output()?;
    if !output.status.success() {
        bail!(
            "a round of the indicators tool failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Median ns per point of every Rust batch function.
fn time_rust(columns: &[f64], n: usize, reps: usize) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let (h, rest) = columns[n..].split_at(n);
    let (l, rest) = rest.split_at(n);
    let (c, v) = rest.split_at(n);
    // Three output columns, in one block too.
    let mut outputs = vec![0.0; 3 * n];
    let (a, rest) = outputs.split_at_mut(n);
    let (b, e) = rest.split_at_mut(n);
    let mut results = Vec::new();
    macro_rules! bench {
        ($name:literal, |$a:ident, $b:ident, $e:ident| $call:expr) => {{
            let (a_, b_, e_) = (&mut *a, &mut *b, &mut *e);
            let mut job: Job = Box::new(move || {
                let ($a, $b, $e) = (&mut a_[..], &mut b_[..], &mut e_[..]);
                let _ = (&$a, &$b, &$e);
                $call
            });
            results.push(($name, median_ns(&mut job, reps)? / n as f64));
        }};
    }
    bench!("sma", |a, _b, _e| ma::sma_into(c, 20, a));
    bench!("ema", |a, _b, _e| ma::ema_into(c, 20, a));
    bench!("wma", |a, _b, _e| ma::wma_into(c, 20, a));
    bench!("dema", |a, _b, _e| ma::dema_into(c, 20, a));
    bench!("tema", |a, _b, _e| ma::tema_into(c, 20, a));
    bench!("rsi", |a, _b, _e| osc::rsi_into(c, 14, a));
    bench!("macd", |a, b, e| osc::macd_into(c, 12, 26, 9, a, b, e));
    bench!("bbands", |a, b, e| vol::bbands_into(c, 20, 2.0, a, b, e));
    bench!("atr", |a, _b, _e| vol::atr_into(h, l, c, 14, a));
    bench!("natr", |a, _b, _e| vol::natr_into(h, l, c, 14, a));
    bench!("stddev", |a, _b, _e| vol::stddev_into(c, 20, 1.0, a));
    bench!("roc", |a, _b, _e| osc::roc_into(c, 10, a));
    bench!("mom", |a, _b, _e| osc::mom_into(c, 10, a));
    bench!("stoch", |a, b, _e| osc::stoch_into(h, l, c, 5, 3, 3, a, b));
    bench!("willr", |a, _b, _e| osc::willr_into(h, l, c, 14, a));
    bench!("cci", |a, _b, _e| osc::cci_into(h, l, c, 14, a));
    bench!("mfi", |a, _b, _e| osc::mfi_into(h, l, c, v, 14, a));
    bench!("obv", |a, _b, _e| volume::obv_into(c, v, a));
    bench!("adx", |a, _b, _e| osc::adx_into(h, l, c, 14, a));
    bench!("vwap", |a, _b, _e| volume::vwap_into(h, l, c, v, 20, a));
    bench!("realized_volatility", |a, _b, _e| {
        vol::realized_volatility_into(c, 20, a)
    });
    Ok(results)
}

fn median_ns(job: &mut Job, reps: usize) -> anyhow::Result<f64> {
    job()?;
    job()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let started = Instant::now();
        job()?;
        times.push(started.elapsed().as_nanos() as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Median ns per point of every TA-Lib call, from the python helper.
fn time_talib(
    path: &std::path::Path,
    points: usize,
    reps: usize,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let root = tickmesh_testkit::workspace_root();
    let python = root.join(".venv/bin/python");
    let script = root.join("shared/indicators/benches/talib_timing.py");
    if !python.exists() {
        bail!(
            "{} not found: run scripts/test.sh to create the venv",
            python.display()
        );
    }
    let output = Command::new(&python)
        .arg(&script)
        .arg(path)
        .arg(points.to_string())
        .arg(reps.to_string())
        .output()?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}
