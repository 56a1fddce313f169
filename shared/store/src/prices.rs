//! The last traded price of a symbol, from its ticks or, for a candle feed, its bars.

use crate::backend::Backend;
use crate::{CandleQuery, StoreError, candles, rollup, ticks};

/// The last traded price of a symbol as `(price, time_us, size)`: its newest tick, else the
/// close of the newest bar of the finest interval that has one (size 0; the time of a closed
/// bar is its end).
pub(crate) async fn latest(
    backend: &Backend,
    symbol: &str,
) -> Result<Option<(f64, i64, f64)>, StoreError> {
    if let Some(tick) = ticks::latest(backend, symbol).await? {
        return Ok(Some((tick.price, tick.ts_us, tick.size)));
    }
    for (code, len) in rollup::INTERVALS {
        let newest = candles::page(
            backend,
            &CandleQuery {
                symbol: symbol.to_owned(),
                interval_code: code,
                start_us: None,
                end_us: None,
                after_us: None,
                descending: true,
                limit: 1,
            },
        )
        .await?;
        if let Some(row) = newest.into_iter().next() {
            let time_us = if row.closed {
                row.open_time_us + len
            } else {
                row.open_time_us
            };
            return Ok(Some((row.close, time_us, 0.0)));
        }
    }
    Ok(None)
}
