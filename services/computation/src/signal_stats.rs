//! The signal skip rate: how many evaluations computed a new signal and how many kept the
//! standing one because the price barely moved. Counted here, in the process that evaluates,
//! into its Prometheus counters (`tickmesh_signals_total{outcome}`) and per interval for
//! `GetSignalStats`; a cluster-wide figure is the sum over the processes' metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use tickmesh_mesh::Metrics;
use tickmesh_proto::v1::{
    GetSignalStatsResponse, Interval, IntervalSignalStats, SignalStats as SignalStatsProto,
};

/// Evaluations of one interval (or of several, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evaluations {
    /// Evaluations that computed a new signal.
    pub computed: u64,
    /// Evaluations skipped: the standing signal was kept.
    pub skipped: u64,
}

impl Evaluations {
    /// Computed plus skipped.
    pub fn evaluated(&self) -> u64 {
        self.computed.saturating_add(self.skipped)
    }

    /// Skipped over evaluated; 0 when nothing was evaluated.
    pub fn skip_rate(&self) -> f64 {
        match self.evaluated() {
            0 => 0.0,
            n => self.skipped as f64 / n as f64,
        }
    }

    fn plus(self, other: Evaluations) -> Evaluations {
        Evaluations {
            computed: self.computed.saturating_add(other.computed),
            skipped: self.skipped.saturating_add(other.skipped),
        }
    }

    fn to_proto(self) -> SignalStatsProto {
        SignalStatsProto {
            evaluated: self.evaluated(),
            skipped: self.skipped,
            skip_rate: self.skip_rate(),
        }
    }
}

/// The counters of this process's signal evaluations.
#[derive(Debug)]
pub struct SignalStats {
    computed: Counter,
    skipped: Counter,
    /// `tickmesh_signal_cycle_seconds`: one round of the signal worker over the closed bars
    /// it read, or one BatchSignals call.
    pub cycle: Histogram,
    /// `tickmesh_indicator_batch_seconds`: the pool's work of one ComputeIndicators call.
    pub indicator_batch: Histogram,
    /// Per interval code. A lock per evaluation is nothing next to the evaluation itself.
    by_interval: Mutex<BTreeMap<i32, Evaluations>>,
}

impl SignalStats {
    /// Counting into `metrics` as well.
    pub fn new(metrics: &Metrics) -> Self {
        let cycle = tickmesh_mesh::telemetry::metrics::latency_histogram();
        let indicator_batch = tickmesh_mesh::telemetry::metrics::latency_histogram();
        metrics.register(|registry| {
            registry.register_with_unit(
                "tickmesh_signal_cycle",
                "Time of one signal evaluation cycle: a round of the signal worker over the closed \
                 bars it read from the bus, or one BatchSignals call",
                Unit::Seconds,
                cycle.clone(),
            );
            registry.register_with_unit(
                "tickmesh_indicator_batch",
                "Time the computation pool spent on the indicator series of one ComputeIndicators call",
                Unit::Seconds,
                indicator_batch.clone(),
            );
        });
        Self {
            cycle,
            indicator_batch,
            computed: metrics.signal_outcome("computed"),
            skipped: metrics.signal_outcome("skipped"),
            by_interval: Mutex::default(),
        }
    }

    /// An evaluation of `interval` that computed a new signal.
    pub fn computed(&self, interval: i32) {
        self.computed.inc();
        self.add(
            interval,
            Evaluations {
                computed: 1,
                skipped: 0,
            },
        );
    }

    /// An evaluation of `interval` that kept the standing signal.
    pub fn skipped(&self, interval: i32) {
        self.skipped.inc();
        self.add(
            interval,
            Evaluations {
                computed: 0,
                skipped: 1,
            },
        );
    }

    fn add(&self, interval: i32, counts: Evaluations) {
        let mut by_interval = self.by_interval.lock().unwrap_or_else(|e| e.into_inner());
        let entry = by_interval.entry(interval).or_default();
        *entry = entry.plus(counts);
    }

    /// The evaluations of `interval`, or of every interval for `None`.
    pub fn get(&self, interval: Option<i32>) -> Evaluations {
        self.per_interval(interval)
            .into_iter()
            .fold(Evaluations::default(), |sum, (_, e)| sum.plus(e))
    }

    fn per_interval(&self, interval: Option<i32>) -> Vec<(i32, Evaluations)> {
        let by_interval = self.by_interval.lock().unwrap_or_else(|e| e.into_inner());
        by_interval
            .iter()
            .filter(|(code, _)| interval.is_none_or(|i| i == **code))
            .map(|(code, e)| (*code, *e))
            .collect()
    }

    /// The `GetSignalStats` answer for `interval` (unspecified: all of them).
    pub fn to_proto(&self, interval: Interval) -> GetSignalStatsResponse {
        let wanted = (interval != Interval::Unspecified).then_some(interval as i32);
        let per_interval = self.per_interval(wanted);
        let total = per_interval
            .iter()
            .fold(Evaluations::default(), |sum, (_, e)| sum.plus(*e));
        GetSignalStatsResponse {
            total: Some(total.to_proto()),
            intervals: per_interval
                .into_iter()
                .map(|(interval, e)| IntervalSignalStats {
                    interval,
                    stats: Some(e.to_proto()),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i32 = Interval::Interval1m as i32;
    const DAY: i32 = Interval::Interval1d as i32;

    fn record(stats: &SignalStats, interval: i32, skipped: u64, computed: u64) {
        for _ in 0..skipped {
            stats.skipped(interval);
        }
        for _ in 0..computed {
            stats.computed(interval);
        }
    }

    #[test]
    fn evaluations_add_up_per_interval_and_in_total() {
        let metrics = Metrics::new();
        let stats = SignalStats::new(&metrics);
        record(&stats, DAY, 3, 1);
        record(&stats, MINUTE, 1, 5);
        record(&stats, MINUTE, 2, 0);
        let all = stats.get(None);
        assert_eq!((all.skipped, all.computed), (3 + 1 + 2, 1 + 5));
        assert_eq!(all.skip_rate(), 6.0 / 12.0);
        let day = stats.get(Some(DAY));
        assert_eq!((day.skipped, day.computed), (3, 1));
        assert_eq!(day.skip_rate(), 3.0 / 4.0);

        let answer = stats.to_proto(Interval::Unspecified);
        let total = answer.total.unwrap();
        assert_eq!((total.evaluated, total.skipped), (12, 6));
        assert_eq!(total.skip_rate, 0.5);
        let intervals: Vec<i32> = answer.intervals.iter().map(|i| i.interval).collect();
        assert_eq!(intervals, vec![MINUTE, DAY]);
        let only_day = stats.to_proto(Interval::Interval1d);
        assert_eq!(only_day.total.unwrap().skip_rate, 0.75);
        assert_eq!(only_day.intervals.len(), 1);
    }

    #[test]
    fn the_counts_are_in_the_prometheus_metrics_too() {
        let metrics = Metrics::new();
        let stats = SignalStats::new(&metrics);
        record(&stats, DAY, 1, 3);
        let text = metrics.encode();
        assert!(
            text.contains("tickmesh_signals_total{outcome=\"skipped\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tickmesh_signals_total{outcome=\"computed\"} 3"),
            "{text}"
        );
        assert_eq!(stats.get(Some(DAY)).skip_rate(), 0.25);
    }

    #[test]
    fn nothing_evaluated_is_a_zero_rate() {
        let stats = SignalStats::new(&Metrics::new());
        assert_eq!(stats.get(None).skip_rate(), 0.0);
        let answer = stats.to_proto(Interval::Unspecified);
        assert_eq!(answer.total.unwrap().skip_rate, 0.0);
        assert!(answer.intervals.is_empty());
    }
}
