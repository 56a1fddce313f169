//! `ReplaySource`: replays a recorded CSV source from the server's replay directory into the
//! store, through the source's token bucket and a circuit breaker around the store, streaming
//! progress. The caller going away stops the replay.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tickmesh_proto::v1::{Interval, ReplaySourceRequest, ReplaySourceResponse};
use tickmesh_resilience::breaker::CircuitBreaker;
use tickmesh_resilience::token_bucket::TokenBucket;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use tracing::{info, warn};

use crate::csv_source::{Batch, CsvSource};
use crate::{IngestionApi, ReplayStream, Tally, validate};

/// Rows per batch read from a source.
const BATCH_ROWS: usize = 1000;

/// A checked replay request, ready to run.
pub(crate) struct Replay {
    source: CsvSource,
    total: u64,
}

fn source_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Replay {
    /// Checks the request and opens the source file (`<replay dir>/<source>.csv`).
    pub(crate) async fn prepare(
        dir: Option<&Path>,
        request: &ReplaySourceRequest,
    ) -> Result<Replay, Status> {
        let dir = dir.ok_or_else(|| {
            Status::failed_precondition(
                "this server has no replay directory; start it with --replay-dir DIR",
            )
        })?;
        if !source_name_ok(&request.source) {
            return Err(Status::invalid_argument(
                "source: 1-64 characters of A-Z a-z 0-9 . _ -, not starting with a dot",
            ));
        }
        let symbol = if request.symbol.is_empty() {
            &request.source
        } else {
            &request.symbol
        };
        validate::symbol(symbol).map_err(|r| Status::invalid_argument(format!("symbol: {r}")))?;
        if !(request.speed.is_finite() && request.speed >= 0.0) {
            return Err(Status::invalid_argument("speed: must be finite and >= 0"));
        }
        let interval = match request.interval {
            0 => None,
            n => Some(
                Interval::try_from(n)
                    .map_err(|_| Status::invalid_argument(format!("interval: unknown {n}")))?,
            ),
        };
        let path: PathBuf = dir.join(format!("{}.csv", request.source));
        if !path.is_file() {
            return Err(Status::not_found(format!(
                "no source {:?} in the replay directory",
                request.source
            )));
        }
        let symbol = symbol.clone();
        tokio::task::spawn_blocking(move || {
            let total = CsvSource::count_rows(&path)?;
            let source = CsvSource::open(&path, &symbol, None, interval)?;
            Ok(Replay { source, total })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e: crate::csv_source::SourceError| {
            Status::failed_precondition(format!("source {:?}: {e}", request.source))
        })
    }

    /// Starts the replay; the stream reports progress after every batch and ends with `done`.
    pub(crate) fn run(self, api: IngestionApi, request: ReplaySourceRequest) -> ReplayStream {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            if let Err(status) = self.feed(&api, &request, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    async fn feed(
        mut self,
        api: &IngestionApi,
        request: &ReplaySourceRequest,
        tx: &tokio::sync::mpsc::Sender<Result<ReplaySourceResponse, Status>>,
    ) -> Result<(), Status> {
        let config = api.config.current().config;
        let mut bucket = TokenBucket::for_source(&config, &request.source);
        let mut breaker = CircuitBreaker::new(
            format!("store for source {}", request.source),
            &config.circuit_breaker.unwrap_or_default(),
        );
        let started = Instant::now();
        let mut origin = None;
        let mut tally = Tally::default();
        let mut rows_read = 0u64;
        let mut batch_index = 0u32;
        loop {
            let mut source = self.source;
            let (returned, next) = tokio::task::spawn_blocking(move || {
                let next = source.next_batch(BATCH_ROWS);
                (source, next)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
            self.source = returned;
            let batch = match next {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(e) => {
                    return Err(Status::failed_precondition(format!(
                        "source {:?}: {e}",
                        request.source
                    )));
                }
            };
            let rows = batch.len();
            if request.speed > 0.0
                && let Some(first) = batch.first_time_us()
            {
                let origin = *origin.get_or_insert(first);
                let due = Duration::from_secs_f64(
                    ((first - origin) as f64 / 1e6 / request.speed).max(0.0),
                );
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            bucket.take(u32::try_from(rows).unwrap_or(u32::MAX)).await;
            let (valid, stored, violations) =
                write_through_breaker(api, &mut breaker, batch).await?;
            tally.add(batch_index, valid, stored, violations);
            batch_index = batch_index.saturating_add(1);
            rows_read += rows as u64;
            let progress = ReplaySourceResponse {
                rows_read,
                rows_total: self.total,
                summary: Some(tally.summary.clone()),
                done: false,
            };
            if tx.send(Ok(progress)).await.is_err() {
                info!(
                    source = request.source,
                    rows_read, "replay cancelled by the caller"
                );
                return Ok(());
            }
        }
        let summary = tally.finish(&request.source, "replay");
        let _ = tx
            .send(Ok(ReplaySourceResponse {
                rows_read,
                rows_total: self.total,
                summary: Some(summary),
                done: true,
            }))
            .await;
        Ok(())
    }
}

/// Writes one batch, waiting while the store's breaker is open and retrying while the store is
/// unavailable (writes are idempotent).
async fn write_through_breaker(
    api: &IngestionApi,
    breaker: &mut CircuitBreaker,
    batch: Batch,
) -> Result<(usize, u64, Vec<validate::Violation>), Status> {
    loop {
        if let Err(wait) = breaker.admit(Instant::now()) {
            tokio::time::sleep(wait).await;
            continue;
        }
        let result = match batch.clone() {
            Batch::Candles(candles) => api.candle_batch(candles).await,
            Batch::Ticks(ticks) => api.tick_batch(ticks).await,
        };
        match result {
            Ok(written) => {
                breaker.success();
                return Ok(written);
            }
            Err(status) if status.code() == Code::Unavailable => {
                warn!(error = status.message(), "replay write failed; retrying");
                breaker.failure(Instant::now());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => return Err(status),
        }
    }
}
