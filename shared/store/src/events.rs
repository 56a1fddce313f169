//! The market events a write produces, encoded for the outbox (one `MarketEventBatch` per
//! committed write).

use prost::Message;
use tickmesh_proto::v1::{Candle, MarketEvent, MarketEventBatch, Tick, market_event::Payload};

use crate::{CandleRow, TickRow};

/// Event id of a tick: its key, so a re-delivery carries the same id.
pub fn tick_id(t: &TickRow) -> String {
    format!("t:{}:{}:{}", t.symbol, t.ts_us, t.trade_id)
}

/// Event id of a candle: its key and trade count, so a correction by a late tick is a new
/// event while a re-delivery is not.
pub fn candle_id(c: &CandleRow) -> String {
    format!(
        "c:{}:{}:{}:{}",
        c.symbol, c.interval_code, c.open_time_us, c.trade_count
    )
}

/// Event id of a signal: its key.
pub fn signal_id(symbol: &str, interval: i32, time_us: i64, strategy: i32) -> String {
    format!("s:{symbol}:{interval}:{time_us}:{strategy}")
}

/// The proto candle of a row.
pub fn candle_message(c: &CandleRow) -> Candle {
    Candle {
        symbol: c.symbol.clone(),
        interval: i32::from(c.interval_code),
        open_time_us: c.open_time_us,
        open: c.open,
        high: c.high,
        low: c.low,
        close: c.close,
        volume: c.volume,
        trade_count: u64::try_from(c.trade_count).unwrap_or_default(),
        closed: c.closed,
    }
}

/// The proto tick of a row.
pub fn tick_message(t: &TickRow) -> Tick {
    Tick {
        symbol: t.symbol.clone(),
        time_us: t.ts_us,
        trade_id: t.trade_id.clone(),
        price: t.price,
        size: t.size,
        side: i32::from(t.side),
    }
}

/// The encoded batch of events for new ticks and closed candles (`None` when there are none).
pub fn encode(now_us: i64, ticks: &[TickRow], candles: &[CandleRow]) -> Option<Vec<u8>> {
    if ticks.is_empty() && candles.is_empty() {
        return None;
    }
    let events = ticks
        .iter()
        .map(|t| MarketEvent {
            event_id: tick_id(t),
            published_time_us: now_us,
            payload: Some(Payload::Tick(tick_message(t))),
        })
        .chain(candles.iter().map(|c| MarketEvent {
            event_id: candle_id(c),
            published_time_us: now_us,
            payload: Some(Payload::Candle(candle_message(c))),
        }))
        .collect();
    Some(MarketEventBatch { events }.encode_to_vec())
}
