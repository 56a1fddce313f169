//! The ingestion service: takes ticks and candles in, validates them, and stores them durably
//! and idempotently in batches. A write is answered only after its rows are committed; every
//! rejected row is reported back with its index and reason.

pub mod csv_source;
mod metrics;
mod replay;
pub mod status;
pub mod validate;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tickmesh_mesh::{ConfigHandle, Service};
use tickmesh_proto::v1::ingestion_service_server::{IngestionService, IngestionServiceServer};
use tickmesh_proto::v1::{
    IngestCandlesRequest, IngestCandlesResponse, IngestSummary, IngestTickBatchRequest,
    IngestTickBatchResponse, IngestTicksRequest, IngestTicksResponse, RejectedRow,
    ReplaySourceRequest, ReplaySourceResponse,
};
use tickmesh_store::{Store, TickRow};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use crate::validate::Violation;
use tickmesh_bus::Relay;

/// Rejected rows listed in one summary; `rejected_count` counts them all.
const MAX_REJECTED_LISTED: usize = 10_000;

/// `tickmesh.v1.IngestionService`.
#[derive(Debug, Clone)]
pub struct IngestionApi {
    config: ConfigHandle,
    store: Arc<Store>,
    relay: Relay,
    replay_dir: Option<PathBuf>,
    metrics: metrics::IngestMetrics,
}

type ReplayStream = Pin<Box<dyn Stream<Item = Result<ReplaySourceResponse, Status>> + Send>>;

/// The running totals of one call.
#[derive(Default)]
struct Tally {
    summary: IngestSummary,
    valid: u64,
}

impl Tally {
    fn add(&mut self, batch_index: u32, valid: usize, stored: u64, violations: Vec<Violation>) {
        self.valid += valid as u64;
        self.summary.stored += stored;
        self.summary.duplicates += valid as u64 - stored;
        self.summary.batches += 1;
        self.summary.rejected_count += violations.len() as u64;
        let room = MAX_REJECTED_LISTED.saturating_sub(self.summary.rejected.len());
        self.summary
            .rejected
            .extend(violations.into_iter().take(room).map(|v| RejectedRow {
                batch_index,
                row_index: v.row as u32,
                field: v.field.to_owned(),
                reason: v.reason,
            }));
    }
}

impl Tally {
    /// Logs the outcome of a call and hands its summary over.
    fn finish(self, source: &str, what: &'static str) -> IngestSummary {
        let s = &self.summary;
        info!(
            source,
            batches = s.batches,
            stored = s.stored,
            duplicates = s.duplicates,
            rejected = s.rejected_count,
            what,
            "write committed"
        );
        self.summary
    }
}

impl IngestionApi {
    fn max_batch_rows(&self) -> usize {
        self.config
            .current()
            .config
            .ingestion
            .map_or(10_000, |i| i.max_batch_rows as usize)
    }

    /// Validates and commits one batch of ticks; an all-invalid batch stores nothing and
    /// returns its violations.
    async fn tick_batch(
        &self,
        ticks: Vec<tickmesh_proto::v1::Tick>,
    ) -> Result<(usize, u64, Vec<Violation>), Status> {
        let (rows, violations) = self.check_ticks(ticks)?;
        let valid = rows.len();
        let stored = self.store_ticks(rows).await?;
        self.metrics.batch("tick", valid, stored, &violations);
        Ok((valid, stored, violations))
    }

    /// The valid rows of a batch of ticks and the violations of the others.
    fn check_ticks(
        &self,
        ticks: Vec<tickmesh_proto::v1::Tick>,
    ) -> Result<(Vec<TickRow>, Vec<Violation>), Status> {
        let max = self.max_batch_rows();
        if ticks.len() > max {
            return Err(status::too_many("ticks", ticks.len(), max));
        }
        Ok(validate::ticks(ticks))
    }

    /// Commits valid ticks; returns how many were new.
    async fn store_ticks(&self, rows: Vec<TickRow>) -> Result<u64, Status> {
        if rows.is_empty() {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let write = self
            .store
            .insert_ticks(rows)
            .await
            .map_err(status::from_store)?;
        self.metrics.committed("tick", started);
        if write.stored > 0 {
            self.relay.wake();
        }
        Ok(write.stored)
    }
}

impl IngestionApi {
    /// Validates and commits one batch of candles, like [`IngestionApi::tick_batch`].
    async fn candle_batch(
        &self,
        candles: Vec<tickmesh_proto::v1::Candle>,
    ) -> Result<(usize, u64, Vec<Violation>), Status> {
        let max = self.max_batch_rows();
        if candles.len() > max {
            return Err(status::too_many("candles", candles.len(), max));
        }
        let (rows, violations) = validate::candles(candles);
        let valid = rows.len();
        let stored = if rows.is_empty() {
            0
        } else {
            let started = std::time::Instant::now();
            let stored = self
                .store
                .insert_candles(rows)
                .await
                .map_err(status::from_store)?;
            self.metrics.committed("candle", started);
            stored
        };
        self.metrics.batch("candle", valid, stored, &violations);
        if stored > 0 {
            self.relay.wake();
        }
        Ok((valid, stored, violations))
    }
}

#[tonic::async_trait]
impl IngestionService for IngestionApi {
    async fn ingest_ticks(
        &self,
        request: Request<Streaming<IngestTicksRequest>>,
    ) -> Result<Response<IngestTicksResponse>, Status> {
        // At shutdown the stream stops taking frames: the batch being committed finishes and
        // the call ends with its summary, whose `batches` says how many of the frames sent were
        // committed (in order); the frames after them were not taken and are not stored.
        let draining = tickmesh_mesh::server::drain::Draining::of(&request);
        let is_draining = || draining.as_ref().is_some_and(|d| d.is_draining());
        let mut stream = request.into_inner();
        let mut tally = Tally::default();
        let mut first_violations = Vec::new();
        let mut source = String::new();
        let mut batch_index = 0u32;
        let mut cut_short = false;
        // Each batch is committed as it arrives, and the next one is received and decoded
        // while it is written, so memory is bounded by two batches. If the stream breaks, the
        // batches before stay committed and a retry of them is a no-op.
        let mut next = receive(&mut stream, draining.as_ref()).await?;
        while let Some(batch) = next.take() {
            if is_draining() {
                cut_short = true;
                break;
            }
            if source.is_empty() {
                source = batch.source.clone();
            }
            let (rows, violations) = self.check_ticks(batch.ticks)?;
            let valid = rows.len();
            let (stored, following) = tokio::join!(
                self.store_ticks(rows),
                receive(&mut stream, draining.as_ref())
            );
            let stored = stored?;
            next = following?;
            if tally.valid == 0 && first_violations.len() < 100 {
                first_violations.extend(violations.iter().take(100).cloned());
            }
            self.metrics.batch("tick", valid, stored, &violations);
            tally.add(batch_index, valid, stored, violations);
            batch_index = batch_index.saturating_add(1);
        }
        cut_short |= is_draining();
        if cut_short {
            info!(
                source,
                batches = tally.summary.batches,
                "tick stream ended by shutdown"
            );
            return Ok(Response::new(IngestTicksResponse {
                summary: Some(tally.finish(&source, "tick stream (ended by shutdown)")),
            }));
        }
        if tally.valid == 0 {
            return Err(status::nothing_valid("ticks", &first_violations));
        }
        Ok(Response::new(IngestTicksResponse {
            summary: Some(tally.finish(&source, "tick stream")),
        }))
    }

    async fn ingest_tick_batch(
        &self,
        request: Request<IngestTickBatchRequest>,
    ) -> Result<Response<IngestTickBatchResponse>, Status> {
        let request = request.into_inner();
        let (valid, stored, violations) = self.tick_batch(request.ticks).await?;
        if valid == 0 {
            return Err(status::nothing_valid("ticks", &violations));
        }
        let mut tally = Tally::default();
        tally.add(0, valid, stored, violations);
        Ok(Response::new(IngestTickBatchResponse {
            summary: Some(tally.finish(&request.source, "tick batch")),
        }))
    }

    async fn ingest_candles(
        &self,
        request: Request<IngestCandlesRequest>,
    ) -> Result<Response<IngestCandlesResponse>, Status> {
        let request = request.into_inner();
        let (valid, stored, violations) = self.candle_batch(request.candles).await?;
        if valid == 0 {
            return Err(status::nothing_valid("candles", &violations));
        }
        let mut tally = Tally::default();
        tally.add(0, valid, stored, violations);
        Ok(Response::new(IngestCandlesResponse {
            summary: Some(tally.finish(&request.source, "candle batch")),
        }))
    }

    type ReplaySourceStream = ReplayStream;

    async fn replay_source(
        &self,
        request: Request<ReplaySourceRequest>,
    ) -> Result<Response<Self::ReplaySourceStream>, Status> {
        let request = request.into_inner();
        let replay = replay::Replay::prepare(self.replay_dir.as_deref(), &request).await?;
        Ok(Response::new(replay.run(self.clone(), request)))
    }
}

/// The next frame of a tick stream, or `None` once the server drains (or the stream ended).
async fn receive(
    stream: &mut Streaming<IngestTicksRequest>,
    draining: Option<&tickmesh_mesh::server::drain::Draining>,
) -> Result<Option<IngestTicksRequest>, Status> {
    let Some(draining) = draining else {
        return stream.message().await;
    };
    tokio::select! {
        biased;
        () = draining.wait() => Ok(None),
        message = stream.message() => message,
    }
}

/// The ingestion service over `store`, whose committed events `relay` publishes, with the
/// recorded sources of `replay_dir` (if any), ready for [`tickmesh_mesh::serve`]; what it does
/// with rows is counted in `metrics`.
pub fn service(
    config: &ConfigHandle,
    store: Arc<Store>,
    relay: Relay,
    replay_dir: Option<PathBuf>,
    metrics: &tickmesh_mesh::Metrics,
) -> Service {
    let limit = config.current().message_limit();
    let server = IngestionServiceServer::new(IngestionApi {
        config: config.clone(),
        store,
        relay,
        replay_dir,
        metrics: metrics::IngestMetrics::new(metrics),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    Service::new(tickmesh_proto::service_names::INGESTION, server)
}
