//! What ingestion did with the rows it was sent: `tickmesh_ingestion_rows_total{kind, outcome}`
//! (stored, duplicate, rejected), `tickmesh_ingestion_rejected_rows_total{kind, field}` and the
//! time a batch's commit took, `tickmesh_ingestion_batch_commit_seconds{kind}`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::validate::Violation;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RowLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    kind: &'static str,
    field: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Ingestion's counters; clones share them.
#[derive(Clone, Debug)]
pub(crate) struct IngestMetrics {
    rows: Family<RowLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    commit: Family<KindLabels, Histogram>,
}

impl IngestMetrics {
    /// The families, registered in `metrics`.
    pub(crate) fn new(metrics: &tickmesh_mesh::Metrics) -> Self {
        let this = Self {
            rows: Family::default(),
            rejected: Family::default(),
            commit: Family::new_with_constructor(
                tickmesh_mesh::telemetry::metrics::latency_histogram,
            ),
        };
        // Every (kind, outcome) at 0 from the start, so rates over them exist before the first.
        for kind in ["tick", "candle"] {
            for outcome in ["stored", "duplicate", "rejected"] {
                let _ = this.rows.get_or_create(&RowLabels { kind, outcome });
            }
        }
        metrics.register(|registry| {
            registry.register(
                "tickmesh_ingestion_rows",
                "Rows sent to ingestion by kind (tick, candle) and outcome: stored (new or a \
                 correction), duplicate (already stored as sent), rejected (failed validation)",
                this.rows.clone(),
            );
            registry.register(
                "tickmesh_ingestion_rejected_rows",
                "Rows rejected by validation, by kind and the field that failed",
                this.rejected.clone(),
            );
            registry.register_with_unit(
                "tickmesh_ingestion_batch_commit",
                "Time to commit one batch of valid rows (one transaction)",
                Unit::Seconds,
                this.commit.clone(),
            );
        });
        this
    }

    /// Counts a batch of `kind`: `valid` rows of which `stored` were new, and `violations`.
    pub(crate) fn batch(
        &self,
        kind: &'static str,
        valid: usize,
        stored: u64,
        violations: &[Violation],
    ) {
        let count = |outcome, n: u64| {
            if n > 0 {
                self.rows
                    .get_or_create(&RowLabels { kind, outcome })
                    .inc_by(n);
            }
        };
        count("stored", stored);
        count("duplicate", (valid as u64).saturating_sub(stored));
        count("rejected", violations.len() as u64);
        for v in violations {
            self.rejected
                .get_or_create(&RejectLabels {
                    kind,
                    field: v.field,
                })
                .inc();
        }
    }

    /// Records how long the commit of a batch of `kind` took.
    pub(crate) fn committed(&self, kind: &'static str, started: std::time::Instant) {
        self.commit
            .get_or_create(&KindLabels { kind })
            .observe(started.elapsed().as_secs_f64());
    }
}
