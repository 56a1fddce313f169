//! `tickmesh replay`: streams a CSV of candles or ticks into the ingestion service over gRPC,
//! through the source's token-bucket rate limit and circuit breaker, with a progress bar.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tickmesh_mesh::breaker::CircuitBreaker;
use tickmesh_mesh::token_bucket::TokenBucket;
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{
    Candle, IngestCandlesRequest, IngestSummary, IngestTickBatchRequest, Interval, Side, Tick,
};
use tickmesh_proto::v1::{CircuitBreakerConfig, PerformanceOptimizationConfig};
use tickmesh_store::time::days_from_civil;
use tonic::Code;
use tonic::transport::Channel;

/// What the rows of the file are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RowKind {
    /// OHLCV bars: time, open, high, low, close[, volume].
    Candles,
    /// Trades: time, price, size[, trade_id][, side].
    Ticks,
}

/// Options of `tickmesh replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// CSV file with a header row.
    pub file: PathBuf,
    /// Symbol the rows are stored under.
    #[arg(long)]
    pub symbol: String,
    /// What the rows are.
    #[arg(long, value_enum, default_value_t = RowKind::Candles)]
    pub kind: RowKind,
    /// Candle interval (1s, 1m, 5m, 15m, 1h, 4h, 1d); inferred from the first two rows if unset.
    #[arg(long)]
    pub interval: Option<String>,
    /// Address of the ingestion service.
    #[arg(long, default_value = "127.0.0.1:7401")]
    pub target: String,
    /// Name of the source, for its rate limit (`rate_limits.sources.<name>`) and the logs.
    #[arg(long, default_value = "replay")]
    pub source: String,
    /// Replay at this many times the recorded pace (0: as fast as the rate limit allows).
    #[arg(long, default_value_t = 0.0)]
    pub speed: f64,
    /// Rows per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

/// Parses a timestamp: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS[.frac]` (also with `T`, optional
/// `Z`), all UTC, or an integer count of seconds, milliseconds or microseconds since the epoch
/// (told apart by magnitude).
pub fn parse_time_us(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    if let Ok(n) = text.parse::<i64>() {
        return Some(match n.unsigned_abs() {
            0..1_000_000_000_000 => n * 1_000_000,
            1_000_000_000_000..1_000_000_000_000_000 => n * 1_000,
            _ => n,
        });
    }
    let (date, clock) = match text.split_once([' ', 'T']) {
        Some((d, c)) => (d, Some(c)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    if !(1..=9999).contains(&year) {
        return None;
    }
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut us = days_from_civil(year, month, day) * 86_400_000_000;
    if let Some(clock) = clock {
        let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
        let mut fields = hms.splitn(3, ':');
        let h: i64 = fields.next()?.parse().ok()?;
        let m: i64 = fields.next()?.parse().ok()?;
        let s: i64 = fields.next().unwrap_or("0").parse().ok()?;
        if h > 23 || m > 59 || s > 60 {
            return None;
        }
        let frac_us: i64 = if frac.is_empty() {
            0
        } else {
            let digits: String = frac.chars().take(6).collect();
            digits.parse::<i64>().ok()? * 10_i64.pow(6 - digits.len() as u32)
        };
        us += ((h * 60 + m) * 60 + s) * 1_000_000 + frac_us;
    }
    Some(us)
}

fn interval_by_name(name: &str) -> Option<Interval> {
    Some(match name {
        "1s" => Interval::Interval1s,
        "1m" => Interval::Interval1m,
        "5m" => Interval::Interval5m,
        "15m" => Interval::Interval15m,
        "1h" => Interval::Interval1h,
        "4h" => Interval::Interval4h,
        "1d" => Interval::Interval1d,
        _ => return None,
    })
}

fn interval_by_length(us: i64) -> Option<Interval> {
    [
        ("1s", 1_000_000),
        ("1m", 60_000_000),
        ("5m", 300_000_000),
        ("15m", 900_000_000),
        ("1h", 3_600_000_000),
        ("4h", 14_400_000_000),
        ("1d", 86_400_000_000),
    ]
    .into_iter()
    .find(|&(_, len)| len == us)
    .and_then(|(name, _)| interval_by_name(name))
}

/// Column positions found from the header.
struct Columns {
    time: usize,
    fields: Vec<Option<usize>>,
}

fn find_columns(headers: &csv::StringRecord, wanted: &[&[&str]]) -> Columns {
    let names: Vec<String> = headers
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let time = names
        .iter()
        .position(|n| ["time", "timestamp", "date", "datetime", "ts", ""].contains(&n.as_str()))
        .unwrap_or(0);
    let fields = wanted
        .iter()
        .map(|aliases| names.iter().position(|n| aliases.contains(&n.as_str())))
        .collect();
    Columns { time, fields }
}

fn number(
    record: &csv::StringRecord,
    index: Option<usize>,
    line: u64,
    name: &str,
) -> anyhow::Result<f64> {
    let Some(index) = index else {
        return Ok(0.0);
    };
    let text = record.get(index).unwrap_or("").trim();
    text.parse()
        .with_context(|| format!("line {line}: {name} {text:?} is not a number"))
}

/// Replays the file; returns the summed summary.
pub async fn run(
    args: ReplayArgs,
    config: &PerformanceOptimizationConfig,
) -> anyhow::Result<IngestSummary> {
    let total = count_rows(&args.file)?;
    let mut reader = csv::Reader::from_path(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let headers = reader.headers()?.clone();
    let columns = match args.kind {
        RowKind::Candles => find_columns(
            &headers,
            &[
                &["open", "o"],
                &["high", "h"],
                &["low", "l"],
                &["close", "c"],
                &["volume", "vol", "v"],
            ],
        ),
        RowKind::Ticks => find_columns(
            &headers,
            &[
                &["price", "p"],
                &["size", "qty", "quantity", "amount", "volume"],
                &["trade_id", "id", "tid"],
                &["side"],
            ],
        ),
    };
    let required = if args.kind == RowKind::Candles { 4 } else { 2 };
    if let Some(missing) = columns.fields[..required].iter().position(Option::is_none) {
        bail!(
            "{}: no column for {} in the header {:?}",
            args.file.display(),
            ["open/price", "high/size", "low", "close"][missing],
            headers
        );
    }

    let limits = config.rate_limits.clone().unwrap_or_default();
    let bucket = limits
        .sources
        .get(&args.source)
        .or(limits.default_source.as_ref())
        .map(TokenBucket::from_config)
        .unwrap_or_else(|| TokenBucket::new(50_000.0, 100_000));
    let breaker_config: CircuitBreakerConfig = config.circuit_breaker.unwrap_or_default();
    let retry = config.retry.unwrap_or_default();
    let mut sender = Sender {
        retry_initial: tickmesh_config::std_duration(retry.initial_backoff.as_ref())
            .max(Duration::from_millis(1)),
        retry_max: tickmesh_config::std_duration(retry.max_backoff.as_ref())
            .max(Duration::from_millis(1)),
        retry_multiplier: retry.backoff_multiplier.max(1.0),
        client: IngestionServiceClient::new(connect(&args.target).await?),
        bucket,
        breaker: CircuitBreaker::new(
            format!("ingestion for source {}", args.source),
            &breaker_config,
        ),
        summary: IngestSummary::default(),
        args: args.clone(),
        interval: None,
        progress: progress_bar(total),
        started: Instant::now(),
        first_time_us: None,
    };
    if let Some(name) = &args.interval {
        sender.interval = Some(interval_by_name(name).with_context(|| {
            format!("unknown interval {name:?}: use 1s, 1m, 5m, 15m, 1h, 4h or 1d")
        })?);
    }

    let mut candles = Vec::with_capacity(args.batch);
    let mut ticks = Vec::with_capacity(args.batch);
    let mut record = csv::StringRecord::new();
    let mut line = 1u64;
    let mut previous_time = None;
    while reader.read_record(&mut record)? {
        line += 1;
        let raw_time = record.get(columns.time).unwrap_or("");
        let time_us = parse_time_us(raw_time)
            .with_context(|| format!("line {line}: cannot read the time {raw_time:?}"))?;
        match args.kind {
            RowKind::Candles => {
                if sender.interval.is_none()
                    && let Some(previous) = previous_time
                {
                    sender.interval =
                        Some(interval_by_length(time_us - previous).with_context(|| {
                            format!(
                                "cannot infer the interval from rows {} µs apart: pass --interval",
                                time_us - previous
                            )
                        })?);
                }
                previous_time = Some(time_us);
                candles.push(Candle {
                    symbol: args.symbol.clone(),
                    interval: 0,
                    open_time_us: time_us,
                    open: number(&record, columns.fields[0], line, "open")?,
                    high: number(&record, columns.fields[1], line, "high")?,
                    low: number(&record, columns.fields[2], line, "low")?,
                    close: number(&record, columns.fields[3], line, "close")?,
                    volume: number(&record, columns.fields[4], line, "volume")?,
                    trade_count: 0,
                    closed: true,
                });
                if candles.len() >= args.batch && sender.interval.is_some() {
                    sender.send_candles(std::mem::take(&mut candles)).await?;
                }
            }
            RowKind::Ticks => {
                let side = columns.fields[3]
                    .and_then(|i| record.get(i))
                    .map(|s| match s.trim().to_ascii_lowercase().as_str() {
                        "buy" | "b" => Side::Buy,
                        "sell" | "s" => Side::Sell,
                        _ => Side::Unspecified,
                    })
                    .unwrap_or(Side::Unspecified);
                let trade_id = columns.fields[2]
                    .and_then(|i| record.get(i))
                    .map_or_else(|| line.to_string(), |s| s.trim().to_owned());
                ticks.push(Tick {
                    symbol: args.symbol.clone(),
                    time_us,
                    trade_id,
                    price: number(&record, columns.fields[0], line, "price")?,
                    size: number(&record, columns.fields[1], line, "size")?,
                    side: side as i32,
                });
                if ticks.len() >= args.batch {
                    sender.send_ticks(std::mem::take(&mut ticks)).await?;
                }
            }
        }
    }
    if !candles.is_empty() {
        if sender.interval.is_none() {
            bail!("a single candle: pass --interval");
        }
        sender.send_candles(candles).await?;
    }
    if !ticks.is_empty() {
        sender.send_ticks(ticks).await?;
    }
    sender.progress.finish_and_clear();
    Ok(sender.summary)
}

fn count_rows(path: &Path) -> anyhow::Result<u64> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut record = csv::ByteRecord::new();
    let mut rows = 0;
    while reader.read_byte_record(&mut record)? {
        rows += 1;
    }
    Ok(rows)
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replay [{bar:40}] {pos}/{len} rows, {per_sec}, eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

async fn connect(target: &str) -> anyhow::Result<Channel> {
    let endpoint = if target.contains("://") {
        target.to_owned()
    } else {
        format!("http://{target}")
    };
    Channel::from_shared(endpoint)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to the ingestion service at {target}"))
}

struct Sender {
    retry_initial: Duration,
    retry_max: Duration,
    retry_multiplier: f64,
    client: IngestionServiceClient<Channel>,
    bucket: TokenBucket,
    breaker: CircuitBreaker,
    summary: IngestSummary,
    args: ReplayArgs,
    interval: Option<Interval>,
    progress: ProgressBar,
    started: Instant,
    first_time_us: Option<i64>,
}

/// Statuses after which the same batch is sent again (writes are idempotent).
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
    )
}

impl Sender {
    /// Waits for the recorded pace (with --speed) and for the rate limit.
    async fn pace(&mut self, rows: usize, first_time_us: i64) {
        if self.args.speed > 0.0 {
            let origin = *self.first_time_us.get_or_insert(first_time_us);
            let due = Duration::from_secs_f64(
                ((first_time_us - origin) as f64 / 1e6 / self.args.speed).max(0.0),
            );
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        self.bucket
            .take(u32::try_from(rows).unwrap_or(u32::MAX))
            .await;
    }

    async fn send_candles(&mut self, mut candles: Vec<Candle>) -> anyhow::Result<()> {
        let interval = self.interval.context("interval unknown")? as i32;
        for c in &mut candles {
            c.interval = interval;
        }
        let rows = candles.len();
        self.pace(rows, candles[0].open_time_us).await;
        let request = IngestCandlesRequest {
            candles,
            source: self.args.source.clone(),
        };
        let summary = self
            .with_retries(rows, |mut client| {
                let request = request.clone();
                async move {
                    client
                        .ingest_candles(request)
                        .await
                        .map(|r| r.into_inner().summary)
                }
            })
            .await?;
        self.add(rows, summary);
        Ok(())
    }

    async fn send_ticks(&mut self, ticks: Vec<Tick>) -> anyhow::Result<()> {
        let rows = ticks.len();
        self.pace(rows, ticks[0].time_us).await;
        let request = IngestTickBatchRequest {
            ticks,
            source: self.args.source.clone(),
        };
        let summary = self
            .with_retries(rows, |mut client| {
                let request = request.clone();
                async move {
                    client
                        .ingest_tick_batch(request)
                        .await
                        .map(|r| r.into_inner().summary)
                }
            })
            .await?;
        self.add(rows, summary);
        Ok(())
    }

    /// Sends through the breaker, retrying retryable failures until the batch is committed.
    /// A batch with no valid row counts as rejected and the replay goes on.
    async fn with_retries<F, Fut>(
        &mut self,
        rows: usize,
        mut call: F,
    ) -> anyhow::Result<Option<IngestSummary>>
    where
        F: FnMut(IngestionServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Option<IngestSummary>, tonic::Status>>,
    {
        // Backoff from the `retry` settings; a replay keeps retrying (the breaker paces it)
        // because every batch must go in and writes are idempotent.
        let mut backoff = self.retry_initial;
        loop {
            if let Err(wait) = self.breaker.admit(Instant::now()) {
                self.progress.set_message(format!(
                    "(circuit open, retrying in {:.1}s)",
                    wait.as_secs_f64()
                ));
                tokio::time::sleep(wait).await;
                continue;
            }
            match call(self.client.clone()).await {
                Ok(summary) => {
                    self.breaker.success();
                    self.progress.set_message("");
                    return Ok(summary);
                }
                Err(status)
                    if status.code() == Code::InvalidArgument
                        && status.message().contains("over the limit") =>
                {
                    bail!("{}; pass a smaller --batch", status.message())
                }
                Err(status) if status.code() == Code::InvalidArgument => {
                    self.breaker.success();
                    self.progress.println(format!(
                        "batch of {rows} rows rejected: {}",
                        status.message()
                    ));
                    self.summary.rejected_count += rows as u64;
                    return Ok(None);
                }
                Err(status) if retryable(status.code()) => {
                    self.breaker.failure(Instant::now());
                    self.progress
                        .set_message(format!("({}: retrying)", status.code()));
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.mul_f64(self.retry_multiplier).min(self.retry_max);
                }
                Err(status) => bail!("ingestion refused a batch: {status}"),
            }
        }
    }

    fn add(&mut self, rows: usize, summary: Option<IngestSummary>) {
        if let Some(s) = summary {
            self.summary.stored += s.stored;
            self.summary.duplicates += s.duplicates;
            self.summary.rejected_count += s.rejected_count;
            self.summary.batches += s.batches;
        }
        self.progress.inc(rows as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_parse_as_utc_microseconds() {
        // 2004-08-19 is 12649 days after the epoch.
        assert_eq!(parse_time_us("2004-08-19"), Some(12_649 * 86_400_000_000));
        assert_eq!(
            parse_time_us("2017-04-19 09:00:00"),
            Some(parse_time_us("2017-04-19").unwrap() + 9 * 3_600_000_000)
        );
        assert_eq!(parse_time_us("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(parse_time_us("1700000000"), Some(1_700_000_000_000_000));
        assert_eq!(parse_time_us("1700000000000"), Some(1_700_000_000_000_000));
        assert_eq!(
            parse_time_us("1700000000000000"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(parse_time_us("2004-13-01"), None);
        assert_eq!(parse_time_us("yesterday"), None);
    }

    #[test]
    fn intervals_are_inferred_from_row_spacing() {
        assert_eq!(
            interval_by_length(3_600_000_000),
            Some(Interval::Interval1h)
        );
        assert_eq!(interval_by_length(7), None);
    }
}
