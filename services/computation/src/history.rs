//! Candle history from the store, as the columns the indicator library works on.

use tickmesh_store::{CandleQuery, CandleRow, Store, resample};
use tonic::Status;

/// Most candles one symbol's history may hold in one computation.
pub const MAX_BARS: usize = 100_000;

/// Candles read from the store per query.
const PAGE: usize = 10_000;

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

    /// Bytes the columns hold on the heap (their capacity, 48 per bar when exact).
    pub fn heap_bytes(&self) -> usize {
        self.time_us.capacity() * size_of::<i64>()
            + [&self.open, &self.high, &self.low, &self.close, &self.volume]
                .iter()
                .map(|column| column.capacity() * size_of::<f64>())
                .sum::<usize>()
    }

    /// Appends a page of rows (newest first, as read), growing each column by exactly the page:
    /// `push` alone would double the capacity and hold up to twice the bars, e.g. 131,072 bars
    /// of room for [`MAX_BARS`].
    fn push_page(&mut self, rows: Vec<CandleRow>) {
        self.time_us.reserve_exact(rows.len());
        for column in self.value_columns() {
            column.reserve_exact(rows.len());
        }
        for row in rows {
            self.time_us.push(row.open_time_us);
            self.open.push(row.open);
            self.high.push(row.high);
            self.low.push(row.low);
            self.close.push(row.close);
            self.volume.push(row.volume);
        }
    }

    /// The five value columns (open, high, low, close, volume), for what is done to each alike.
    fn value_columns(&mut self) -> [&mut Vec<f64>; 5] {
        [
            &mut self.open,
            &mut self.high,
            &mut self.low,
            &mut self.close,
            &mut self.volume,
        ]
    }

    /// Puts the bars read newest first in time order.
    fn reverse(&mut self) {
        self.time_us.reverse();
        for column in self.value_columns() {
            column.reverse();
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

/// Bars a load returns for a requested `limit` (0: as many as held, at most [`MAX_BARS`]).
fn bars_wanted(limit: usize) -> usize {
    if limit == 0 {
        MAX_BARS
    } else {
        limit.min(MAX_BARS)
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
    let limit = bars_wanted(limit);
    let mut history = History::default();
    let mut after = None;
    // Newest first in pages, so that `limit` keeps the most recent bars; reversed at the end.
    while history.len() < limit {
        let page = (limit - history.len()).min(PAGE);
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
        if let Some(last) = rows.last() {
            after = Some(last.open_time_us);
        }
        history.push_page(rows);
        if done {
            break;
        }
    }
    history.reverse();
    Ok(history)
}

/// The last `limit` resampled bars (0: up to [`MAX_BARS`]) of `symbol` made by `plan` from
/// stored bars with open times in `[start, end)`, oldest first. A bar the symbol's stored
/// intervals cannot make is INVALID_ARGUMENT (`bar`).
pub async fn load_resampled(
    store: &Store,
    plan: &resample::Plan,
    (symbol, bar): (&str, &str),
    start_us: i64,
    end_us: i64,
    limit: usize,
) -> Result<History, Status> {
    let limit = bars_wanted(limit);
    let unavailable = |e: tickmesh_store::StoreError| {
        Status::unavailable(format!("reading candles of {symbol}: {e}"))
    };
    let range = resample::Range {
        symbol: symbol.to_owned(),
        start_us: (start_us > 0).then_some(start_us),
        end_us: (end_us > 0).then_some(end_us),
    };
    let source = match resample::source(store, plan, &range)
        .await
        .map_err(unavailable)?
    {
        Ok(Some(source)) => source,
        Ok(None) => return Ok(History::default()),
        Err(stored) => {
            return Err(crate::convert::bad_field(
                "bar",
                resample::unmakeable(bar, symbol, &stored),
            ));
        }
    };
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let bars = resample::latest(store, plan, &range, source, limit, now_us)
        .await
        .map_err(unavailable)?;
    let mut history = History::default();
    for column in history.value_columns() {
        column.reserve_exact(bars.len());
    }
    history.time_us.reserve_exact(bars.len());
    for bar in bars {
        history.time_us.push(bar.open_time_us);
        history.open.push(bar.open);
        history.high.push(bar.high);
        history.low.push(bar.low);
        history.close.push(bar.close);
        history.volume.push(bar.volume);
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of `n` synthetic candles, newest first, ending before `before_us`.
    fn page(n: usize, before_us: i64) -> Vec<CandleRow> {
        (1..=n as i64)
            .map(|i| CandleRow {
                symbol: "SYM".to_owned(),
                interval_code: 1,
                open_time_us: before_us - i * 60_000_000,
                open: 100.0,
                high: 101.0,
                low: 99.0,
                close: 100.5,
                volume: 1e3,
                trade_count: 10,
                closed: true,
            })
            .collect()
    }

    /// A full history as `load` builds it: pages of [`PAGE`] rows until [`MAX_BARS`].
    fn full_history() -> History {
        let mut history = History::default();
        let mut before = 0;
        while history.len() < MAX_BARS {
            let rows = page((MAX_BARS - history.len()).min(PAGE), before);
            before = rows.last().map_or(before, |r| r.open_time_us);
            history.push_page(rows);
        }
        history.reverse();
        history
    }

    #[test]
    fn a_million_candles_are_held_in_under_50_mb() {
        // Ten symbols of MAX_BARS candles each, held at once as a ComputeIndicators call does.
        let histories: Vec<History> = (0..10).map(|_| full_history()).collect();
        let bars: usize = histories.iter().map(History::len).sum();
        let bytes: usize = histories.iter().map(History::heap_bytes).sum();
        assert_eq!(bars, 1_000_000);
        assert!(bytes < 50_000_000, "{bars} candles hold {bytes} bytes");
        assert_eq!(bytes, bars * 48, "the columns have no spare capacity");
    }

    #[test]
    fn pages_read_newest_first_end_up_oldest_first() {
        let history = full_history();
        assert!(history.time_us.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(history.len(), MAX_BARS);
    }
}
