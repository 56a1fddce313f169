//! `tickmesh replay`: streams a CSV of candles or ticks into the ingestion service over gRPC,
//! through the source's token-bucket rate limit and circuit breaker, with a progress bar.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tickmesh_ingestion::csv_source::{Batch, CsvSource, RowKind, interval_by_name};
use tickmesh_proto::v1::ingestion_service_client::IngestionServiceClient;
use tickmesh_proto::v1::{CircuitBreakerConfig, PerformanceOptimizationConfig};
use tickmesh_proto::v1::{IngestCandlesRequest, IngestSummary, IngestTickBatchRequest};
use tickmesh_resilience::breaker::CircuitBreaker;
use tickmesh_resilience::token_bucket::TokenBucket;
use tonic::Code;
use tonic::transport::Channel;

/// What the rows of the file are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
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
    #[arg(long, value_enum, default_value_t = Kind::Candles)]
    pub kind: Kind,
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
    /// API key with the `write` scope, sent as `authorization: Bearer <key>` (for a service with
    /// auth on).
    #[arg(long, env = "TICKMESH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// `message` with the API key in its metadata, if there is one.
fn keyed<T>(message: T, key: &Option<String>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key
        && let Ok(value) = format!("Bearer {key}").parse()
    {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Replays the file; returns the summed summary.
pub async fn run(
    args: ReplayArgs,
    config: &PerformanceOptimizationConfig,
) -> anyhow::Result<IngestSummary> {
    let file = args.file.display().to_string();
    let total = CsvSource::count_rows(&args.file).with_context(|| format!("cannot read {file}"))?;
    let interval = match &args.interval {
        Some(name) => Some(interval_by_name(name).with_context(|| {
            format!("unknown interval {name:?}: use 1s, 1m, 5m, 15m, 1h, 4h or 1d")
        })?),
        None => None,
    };
    let kind = match args.kind {
        Kind::Candles => RowKind::Candles,
        Kind::Ticks => RowKind::Ticks,
    };
    let mut source = CsvSource::open(&args.file, &args.symbol, Some(kind), interval)
        .with_context(|| format!("cannot read {file}"))?;

    let bucket = TokenBucket::for_source(config, &args.source);
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
        progress: progress_bar(total),
        started: Instant::now(),
        first_time_us: None,
    };
    while let Some(batch) = source
        .next_batch(args.batch)
        .with_context(|| format!("cannot read {file}"))?
    {
        sender.send(batch).await?;
    }
    sender.progress.finish_and_clear();
    Ok(sender.summary)
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

    /// Paces and sends one batch of candles or ticks.
    async fn send(&mut self, batch: Batch) -> anyhow::Result<()> {
        let rows = batch.len();
        if let Some(first) = batch.first_time_us() {
            self.pace(rows, first).await;
        }
        let source = self.args.source.clone();
        let key = self.args.api_key.clone();
        let summary = self
            .with_retries(rows, |mut client| {
                let (batch, source, key) = (batch.clone(), source.clone(), key.clone());
                async move {
                    match batch {
                        Batch::Candles(candles) => client
                            .ingest_candles(keyed(IngestCandlesRequest { candles, source }, &key))
                            .await
                            .map(|r| r.into_inner().summary),
                        Batch::Ticks(ticks) => client
                            .ingest_tick_batch(keyed(
                                IngestTickBatchRequest { ticks, source },
                                &key,
                            ))
                            .await
                            .map(|r| r.into_inner().summary),
                    }
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
