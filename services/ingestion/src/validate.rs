//! Validation of incoming ticks and candles: each row is either turned into a store row or
//! rejected with the field and the reason.

use std::time::{SystemTime, UNIX_EPOCH};

use tickmesh_proto::Symbol;
use tickmesh_proto::v1::{Candle, Interval, Side, Tick};
use tickmesh_store::{CandleRow, TickRow};

/// 1900-01-01T00:00:00Z: older than any market data we expect.
pub const MIN_TIME_US: i64 = -2_208_988_800_000_000;
/// How far in the future a timestamp may lie (clock skew between feed and server).
pub const MAX_FUTURE_US: i64 = 24 * 3_600 * 1_000_000;
/// Longest trade id.
pub const MAX_TRADE_ID_LEN: usize = 64;

/// Why one row was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Index of the row in its batch.
    pub row: usize,
    /// The offending field, e.g. `price`.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(i64::MAX / 2)
}

/// Checks a symbol with the one rule every service applies ([`Symbol::check`]).
pub fn symbol(value: &str) -> Result<(), String> {
    Symbol::check(value).map_err(|e| e.to_string())
}

fn time(value: i64, now: i64) -> Result<(), String> {
    if value < MIN_TIME_US {
        return Err("is before 1900-01-01; timestamps are microseconds since the epoch".into());
    }
    if value > now.saturating_add(MAX_FUTURE_US) {
        return Err(
            "is more than a day in the future; timestamps are microseconds since the epoch".into(),
        );
    }
    Ok(())
}

fn positive(value: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!("must be finite and > 0 (got {value})"))
    }
}

fn non_negative(value: f64) -> Result<(), String> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(format!("must be finite and >= 0 (got {value})"))
    }
}

/// Splits ticks into valid store rows and violations (at most one per row: the first found).
pub fn ticks(batch: Vec<Tick>) -> (Vec<TickRow>, Vec<Violation>) {
    let now = now_us();
    let mut rows = Vec::with_capacity(batch.len());
    let mut violations = Vec::new();
    for (row, tick) in batch.into_iter().enumerate() {
        let checked = symbol(&tick.symbol)
            .map_err(|r| ("symbol", r))
            .and_then(|()| time(tick.time_us, now).map_err(|r| ("time_us", r)))
            .and_then(|()| {
                if tick.trade_id.is_empty() || tick.trade_id.len() > MAX_TRADE_ID_LEN {
                    Err((
                        "trade_id",
                        format!("must be 1-{MAX_TRADE_ID_LEN} characters"),
                    ))
                } else {
                    Ok(())
                }
            })
            .and_then(|()| positive(tick.price).map_err(|r| ("price", r)))
            .and_then(|()| non_negative(tick.size).map_err(|r| ("size", r)))
            .and_then(|()| {
                Side::try_from(tick.side)
                    .map(|_| ())
                    .map_err(|_| ("side", format!("unknown side {}", tick.side)))
            });
        match checked {
            Ok(()) => rows.push(TickRow {
                symbol: tick.symbol,
                ts_us: tick.time_us,
                trade_id: tick.trade_id,
                price: tick.price,
                size: tick.size,
                side: tick.side as i16,
            }),
            Err((field, reason)) => violations.push(Violation { row, field, reason }),
        }
    }
    (rows, violations)
}

fn candle(c: &Candle, now: i64) -> Result<(), (&'static str, String)> {
    symbol(&c.symbol).map_err(|r| ("symbol", r))?;
    let interval = Interval::try_from(c.interval)
        .ok()
        .and_then(Interval::length_us)
        .ok_or((
            "interval",
            format!("unknown or unspecified interval {}", c.interval),
        ))?;
    time(c.open_time_us, now).map_err(|r| ("open_time_us", r))?;
    if c.open_time_us.rem_euclid(interval) != 0 {
        return Err((
            "open_time_us",
            "must be aligned to the interval (a multiple of its length since the epoch, UTC)"
                .into(),
        ));
    }
    for (field, value) in [
        ("open", c.open),
        ("high", c.high),
        ("low", c.low),
        ("close", c.close),
    ] {
        positive(value).map_err(|r| (field, r))?;
    }
    non_negative(c.volume).map_err(|r| ("volume", r))?;
    if c.low > c.open.min(c.close) || c.low > c.high {
        return Err(("low", "must not exceed open, close or high".into()));
    }
    if c.high < c.open.max(c.close) {
        return Err(("high", "must not be below open or close".into()));
    }
    if c.trade_count > i64::MAX as u64 {
        return Err(("trade_count", "is too large".into()));
    }
    Ok(())
}

/// Splits candles into valid store rows and violations.
pub fn candles(batch: Vec<Candle>) -> (Vec<CandleRow>, Vec<Violation>) {
    let now = now_us();
    let mut rows = Vec::with_capacity(batch.len());
    let mut violations = Vec::new();
    for (row, c) in batch.into_iter().enumerate() {
        match candle(&c, now) {
            Ok(()) => rows.push(CandleRow {
                symbol: c.symbol,
                interval_code: c.interval as i16,
                open_time_us: c.open_time_us,
                open: c.open,
                high: c.high,
                low: c.low,
                close: c.close,
                volume: c.volume,
                trade_count: c.trade_count as i64,
                closed: c.closed,
            }),
            Err((field, reason)) => violations.push(Violation { row, field, reason }),
        }
    }
    (rows, violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_tick() -> Tick {
        Tick {
            symbol: "BTC-USD".into(),
            time_us: 1_700_000_000_000_000,
            trade_id: "1".into(),
            price: 42_000.5,
            size: 0.1,
            side: Side::Buy as i32,
        }
    }

    fn field_of(tick: Tick) -> &'static str {
        let (rows, violations) = ticks(vec![tick]);
        assert!(rows.is_empty());
        violations[0].field
    }

    #[test]
    fn a_good_tick_passes() {
        let (rows, violations) = ticks(vec![good_tick()]);
        assert_eq!(rows.len(), 1);
        assert!(violations.is_empty());
    }

    #[test]
    fn nan_infinite_zero_and_negative_prices_are_rejected() {
        for price in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -1.0] {
            assert_eq!(
                field_of(Tick {
                    price,
                    ..good_tick()
                }),
                "price",
                "{price}"
            );
        }
        assert_eq!(
            field_of(Tick {
                size: -0.5,
                ..good_tick()
            }),
            "size"
        );
        assert_eq!(
            field_of(Tick {
                size: f64::NAN,
                ..good_tick()
            }),
            "size"
        );
    }

    #[test]
    fn huge_empty_and_sql_symbols_are_rejected() {
        for symbol in [
            "",
            &"A".repeat(33),
            "X'; DROP TABLE ticks; --",
            "BTC USD",
            "ÄPFEL",
        ] {
            assert_eq!(
                field_of(Tick {
                    symbol: symbol.into(),
                    ..good_tick()
                }),
                "symbol",
                "{symbol:?}"
            );
        }
    }

    #[test]
    fn timestamps_outside_sane_bounds_are_rejected() {
        // Seconds or nanoseconds by mistake land far outside the bounds.
        let far_future_ns = 1_700_000_000_000_000_000;
        assert_eq!(
            field_of(Tick {
                time_us: far_future_ns,
                ..good_tick()
            }),
            "time_us"
        );
        assert_eq!(
            field_of(Tick {
                time_us: i64::MIN,
                ..good_tick()
            }),
            "time_us"
        );
    }

    #[test]
    fn unknown_sides_are_rejected() {
        assert_eq!(
            field_of(Tick {
                side: 7,
                ..good_tick()
            }),
            "side"
        );
    }

    #[test]
    fn candles_must_be_aligned_and_consistent() {
        let good = Candle {
            symbol: "GOOG".into(),
            interval: Interval::Interval1d as i32,
            open_time_us: 1_700_006_400_000_000,
            open: 10.0,
            high: 12.0,
            low: 9.0,
            close: 11.0,
            volume: 5.0,
            trade_count: 0,
            closed: true,
        };
        assert_eq!(candles(vec![good.clone()]).0.len(), 1);
        let cases = [
            (
                Candle {
                    open_time_us: good.open_time_us + 1,
                    ..good.clone()
                },
                "open_time_us",
            ),
            (
                Candle {
                    interval: 0,
                    ..good.clone()
                },
                "interval",
            ),
            (
                Candle {
                    interval: 99,
                    ..good.clone()
                },
                "interval",
            ),
            (
                Candle {
                    low: 11.5,
                    ..good.clone()
                },
                "low",
            ),
            (
                Candle {
                    high: 10.5,
                    ..good.clone()
                },
                "high",
            ),
            (
                Candle {
                    volume: f64::NAN,
                    ..good.clone()
                },
                "volume",
            ),
            (
                Candle {
                    close: f64::INFINITY,
                    ..good.clone()
                },
                "close",
            ),
        ];
        for (candle, field) in cases {
            let (rows, violations) = candles(vec![candle]);
            assert!(rows.is_empty());
            assert_eq!(violations[0].field, field);
        }
    }
}
