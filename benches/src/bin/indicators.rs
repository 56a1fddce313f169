//! Batch indicators of `tickmesh-indicators` against TA-Lib on the same data, in the same run.
//!
//! Generates a seeded random-walk OHLCV series, writes its columns to a temporary file as raw
//! little-endian f64, times each Rust batch function (`*_into` into a preallocated buffer) and
//! then TA-Lib on the same file through the workspace's `.venv` python
//! (`shared/indicators/benches/talib_timing.py`, `time.perf_counter_ns`). Both report the median
//! over `--reps` runs after two warm-up runs, in nanoseconds per input point. numpy puts its
//! arrays of 4 MB and more on transparent huge pages, our `Vec`s get them only when the tool
//! runs with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (which the memory-bound loops, e.g. ATR,
//! notice at a million points).
//!
//! Usage: cargo run --release -p tickmesh-benches --bin indicators -- [--points N] [--reps N]
//! [--json]

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
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--points" => points = args.next().context("--points N")?.parse()?,
            "--reps" => reps = args.next().context("--reps N")?.parse()?,
            "--json" => json = true,
            other => bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(
        points >= 100 && reps >= 1,
        "need --points >= 100 and --reps >= 1"
    );

    let data = Ohlcv::random_walk(points, 0x5eed_1dea_u64);
    let mut file = tempfile::NamedTempFile::new()?;
    for column in [&data.open, &data.high, &data.low, &data.close, &data.volume] {
        let bytes: Vec<u8> = column.iter().flat_map(|v| v.to_le_bytes()).collect();
        file.write_all(&bytes)?;
    }
    file.flush()?;

    let ours = time_rust(&data, reps)?;
    let talib = time_talib(file.path(), points, reps)?;

    if json {
        let rows: Vec<_> = ours
            .iter()
            .map(|(name, ns)| {
                serde_json::json!({
                    "indicator": name,
                    "tickmesh_ns_per_point": ns,
                    "talib_ns_per_point": talib.get(*name),
                    "ratio": talib.get(*name).map(|t| ns / t),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{points} points, median of {reps} runs, ns per point (ratio = tickmesh / TA-Lib)");
    println!("| indicator | tickmesh | TA-Lib | ratio |");
    println!("|---|---|---|---|");
    for (name, ns) in &ours {
        match talib.get(*name) {
            Some(t) => println!("| {name} | {ns:.2} | {t:.2} | {:.2} |", ns / t),
            None => println!("| {name} | {ns:.2} | - | - |"),
        }
    }
    Ok(())
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

/// Median ns per point of every Rust batch function.
fn time_rust(d: &Ohlcv, reps: usize) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let n = d.close.len();
    let (h, l, c, v) = (&d.high[..], &d.low[..], &d.close[..], &d.volume[..]);
    let mut a = vec![0.0; n];
    let mut b = vec![0.0; n];
    let mut e = vec![0.0; n];
    let mut results = Vec::new();
    macro_rules! bench {
        ($name:literal, |$a:ident, $b:ident, $e:ident| $call:expr) => {{
            let (a_, b_, e_) = (&mut a, &mut b, &mut e);
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
