//! Candle history from the store, as the columns the indicator library works on.

use tickmesh_store::{CandleQuery, Store};
use tonic::Status;

/// Most candles one symbol's history may hold in one computation.
pub const MAX_BARS: usize = 100_000;

/// The candles of one symbol and interval, oldest first, as columns (48 bytes per bar).
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Open times, microseconds.
    pub time_us: Vec<i64>,
    /// Open prices.
    pub open: Vec<f64>,
    /// High prices.
    pub high: Vec<f64>,
    /// Low prices.
    pub low: Vec<f64>,
    /// Close prices.
    pub close: Vec<f64>,
    /// Volumes.
    pub volume: Vec<f64>,
}

impl History {
    /// Number of bars.
    pub fn len(&self) -> usize {
        self.time_us.len()
    }

    /// Whether there are no bars.
    pub fn is_empty(&self) -> bool {
        self.time_us.is_empty()
    }

    /// The columns for the indicator library.
    pub fn columns(&self) -> tickmesh_indicators::Columns<'_> {
        tickmesh_indicators::Columns {
            open: &self.open,
            high: &self.high,
            low: &self.low,
            close: &self.close,
            volume: &self.volume,
        }
    }

    /// Realised volatility of the last `window` bars (standard deviation of log returns), for
    /// ordering work by how much a symbol moves.
    pub fn volatility(&self, window: usize) -> f64 {
        let closes = &self.close[self.close.len().saturating_sub(window + 1)..];
        let returns: Vec<f64> = closes
            .windows(2)
            .filter(|w| w[0] > 0.0 && w[1] > 0.0)
            .map(|w| (w[1] / w[0]).ln())
            .collect();
        if returns.len() < 2 {
            return 0.0;
        }
        let mean = returns.iter().sum::<f64>() / returns.len() as f64;
        let var =
            returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (returns.len() - 1) as f64;
        var.sqrt()
    }
}

/// The last `limit` candles (0: up to [`MAX_BARS`]) of `symbol` at `interval` with open times in
/// `[start, end)` (0: unbounded), oldest first.
pub async fn load(
    store: &Store,
    symbol: &str,
    interval: i32,
    start_us: i64,
    end_us: i64,
    limit: usize,
) -> Result<History, Status> {
    let limit = if limit == 0 {
        MAX_BARS
    } else {
        limit.min(MAX_BARS)
    };
    let mut history = History::default();
    let mut after = None;
    // Newest first in pages, so that `limit` keeps the most recent bars; reversed at the end.
    while history.len() < limit {
        let page = (limit - history.len()).min(10_000);
        let rows = store
            .candles(&CandleQuery {
                symbol: symbol.to_owned(),
                interval_code: interval as i16,
                start_us: (start_us > 0).then_some(start_us),
                end_us: (end_us > 0).then_some(end_us),
                after_us: after,
                descending: true,
                limit: page as i64,
            })
            .await
            .map_err(|e| Status::unavailable(format!("reading candles of {symbol}: {e}")))?;
        let done = rows.len() < page;
        for row in rows {
            after = Some(row.open_time_us);
            history.time_us.push(row.open_time_us);
            history.open.push(row.open);
            history.high.push(row.high);
            history.low.push(row.low);
            history.close.push(row.close);
            history.volume.push(row.volume);
        }
        if done {
            break;
        }
    }
    for column in [
        &mut history.open,
        &mut history.high,
        &mut history.low,
        &mut history.close,
        &mut history.volume,
    ] {
        column.reverse();
    }
    history.time_us.reverse();
    Ok(history)
}
