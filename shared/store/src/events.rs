//! The market events a write produces, encoded for the outbox (one `MarketEventBatch` per
//! committed write): the ticks it stored, the candles it closed or corrected, the signals it
//! stored.

use prost::encoding::{self, WireType};
use tickmesh_proto::v1::{Candle, MarketEvent, Signal, Tick, market_event::Payload};

use crate::{CandleRow, SignalRow, TickRow};

/// Event id of a tick: its key, so a re-delivery carries the same id.
pub fn tick_id(t: &TickRow) -> String {
    format!("t:{}:{}:{}", t.symbol, t.ts_us, t.trade_id)
}

/// Event id of a candle: its key, trade count and a digest of its values, so a correction
/// (by a late tick, or an ingested candle replacing a stored one) is a new event while a
/// re-delivery is not.
pub fn candle_id(c: &CandleRow) -> String {
    // FNV-1a over the bits of the values: stable across processes and versions.
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    for value in [c.open, c.high, c.low, c.close, c.volume] {
        for byte in value.to_bits().to_le_bytes() {
            digest = (digest ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!(
        "c:{}:{}:{}:{}:{digest:016x}",
        c.symbol, c.interval_code, c.open_time_us, c.trade_count
    )
}

/// Event id of a signal: its key.
pub fn signal_id(symbol: &str, interval: i32, time_us: i64, strategy: i32) -> String {
    format!("s:{symbol}:{interval}:{time_us}:{strategy}")
}

/// The event of a signal, as published on the bus (`published_time_us` 0 for a replay).
pub fn signal_event(signal: Signal, published_time_us: i64) -> MarketEvent {
    MarketEvent {
        event_id: signal_id(
            &signal.symbol,
            signal.interval,
            signal.time_us,
            signal.strategy,
        ),
        published_time_us,
        payload: Some(Payload::Signal(signal)),
    }
}

/// `MarketEvent.signal`'s field number.
const SIGNAL_FIELD: u32 = 5;

/// The encoded batch of events for newly stored signals (`None` when there are none): for
/// each row, the bytes of [`signal_event`] of its `body` (the signal as computation encoded
/// it), written without decoding the body.
pub fn encode_signals(now_us: i64, signals: &[SignalRow]) -> Option<Vec<u8>> {
    if signals.is_empty() {
        return None;
    }
    let mut buf = Vec::with_capacity(signals.iter().map(|s| s.body.len() + 64).sum());
    for s in signals {
        let id = signal_id(
            &s.symbol,
            i32::from(s.interval_code),
            s.time_us,
            i32::from(s.strategy),
        );
        let event_len = string_len(1, &id)
            + int64_len(2, now_us)
            + encoding::bytes::encoded_len(SIGNAL_FIELD, &s.body);
        encoding::encode_key(1, WireType::LengthDelimited, &mut buf);
        encoding::encode_varint(event_len as u64, &mut buf);
        encoding::string::encode(1, &id, &mut buf);
        if now_us != 0 {
            encoding::int64::encode(2, &now_us, &mut buf);
        }
        encoding::bytes::encode(SIGNAL_FIELD, &s.body, &mut buf);
    }
    Some(buf)
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
///
/// Tick events are written field by field into one buffer (the bytes prost would write for
/// the same `MarketEventBatch`, without building a message and three strings per tick): a
/// write of ten thousand ticks encodes them on the write's critical path.
pub fn encode(now_us: i64, ticks: &[TickRow], candles: &[CandleRow]) -> Option<Vec<u8>> {
    if ticks.is_empty() && candles.is_empty() {
        return None;
    }
    let mut buf = Vec::with_capacity(ticks.len() * 96 + candles.len() * 128);
    let mut id = String::with_capacity(64);
    for t in ticks {
        encode_tick_event(now_us, t, &mut id, &mut buf);
    }
    for c in candles {
        let event = MarketEvent {
            event_id: candle_id(c),
            published_time_us: now_us,
            payload: Some(Payload::Candle(candle_message(c))),
        };
        encoding::message::encode(1, &event, &mut buf);
    }
    Some(buf)
}

/// Appends `MarketEventBatch.events` entry (field 1) for one tick, as prost encodes it: proto3
/// scalars equal to their default are left out.
fn encode_tick_event(now_us: i64, t: &TickRow, id: &mut String, buf: &mut Vec<u8>) {
    use std::fmt::Write as _;
    id.clear();
    // Writing into a String cannot fail.
    let _ = write!(id, "t:{}:{}:{}", t.symbol, t.ts_us, t.trade_id);
    let side = i32::from(t.side);
    let tick_len = string_len(1, &t.symbol)
        + int64_len(2, t.ts_us)
        + string_len(3, &t.trade_id)
        + double_len(4, t.price)
        + double_len(5, t.size)
        + if side != 0 {
            encoding::int32::encoded_len(6, &side)
        } else {
            0
        };
    let event_len = string_len(1, id)
        + int64_len(2, now_us)
        + encoding::key_len(3)
        + encoding::encoded_len_varint(tick_len as u64)
        + tick_len;
    encoding::encode_key(1, WireType::LengthDelimited, buf);
    encoding::encode_varint(event_len as u64, buf);
    if !id.is_empty() {
        encoding::string::encode(1, id, buf);
    }
    if now_us != 0 {
        encoding::int64::encode(2, &now_us, buf);
    }
    encoding::encode_key(3, WireType::LengthDelimited, buf);
    encoding::encode_varint(tick_len as u64, buf);
    if !t.symbol.is_empty() {
        encoding::string::encode(1, &t.symbol, buf);
    }
    if t.ts_us != 0 {
        encoding::int64::encode(2, &t.ts_us, buf);
    }
    if !t.trade_id.is_empty() {
        encoding::string::encode(3, &t.trade_id, buf);
    }
    if t.price != 0.0 {
        encoding::double::encode(4, &t.price, buf);
    }
    if t.size != 0.0 {
        encoding::double::encode(5, &t.size, buf);
    }
    if side != 0 {
        encoding::int32::encode(6, &side, buf);
    }
}

fn string_len(tag: u32, value: &String) -> usize {
    if value.is_empty() {
        0
    } else {
        encoding::string::encoded_len(tag, value)
    }
}

fn int64_len(tag: u32, value: i64) -> usize {
    if value == 0 {
        0
    } else {
        encoding::int64::encoded_len(tag, &value)
    }
}

fn double_len(tag: u32, value: f64) -> usize {
    if value == 0.0 {
        0
    } else {
        encoding::double::encoded_len(tag, &value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use tickmesh_proto::v1::MarketEventBatch;

    fn prost_encoding(now_us: i64, ticks: &[TickRow], candles: &[CandleRow]) -> Vec<u8> {
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
        MarketEventBatch { events }.encode_to_vec()
    }

    #[test]
    fn ticks_are_encoded_as_prost_encodes_the_batch() {
        let mut ticks = Vec::new();
        // Defaults (left out by proto3), negative and large values, long strings.
        for (i, (ts_us, price, size, side)) in [
            (0, 0.0, 0.0, 0),
            (1_736_121_600_000_123, 101.25, 0.5, 1),
            (-5, -0.0, 1e300, 2),
            (i64::MAX, f64::MIN_POSITIVE, 3.0, 0),
        ]
        .into_iter()
        .enumerate()
        {
            ticks.push(TickRow {
                symbol: if i == 0 {
                    String::new()
                } else {
                    "X".repeat(i * 40)
                },
                ts_us,
                trade_id: if i == 3 {
                    String::new()
                } else {
                    format!("trade-{i}")
                },
                price,
                size,
                side,
            });
        }
        let candle = CandleRow {
            symbol: "GOOG".into(),
            interval_code: 7,
            open_time_us: 1_736_121_600_000_000,
            open: 1.0,
            high: 2.0,
            low: 0.5,
            close: 1.5,
            volume: 10.0,
            trade_count: 3,
            closed: true,
        };
        for now in [0, 1_763_700_000_000_000] {
            let ours = encode(now, &ticks, std::slice::from_ref(&candle));
            assert_eq!(
                ours,
                Some(prost_encoding(now, &ticks, std::slice::from_ref(&candle)))
            );
            let decoded = MarketEventBatch::decode(ours.unwrap_or_default().as_slice());
            assert_eq!(decoded.map(|b| b.events.len()).ok(), Some(5));
        }
        assert_eq!(encode(1, &[], &[]), None);
    }

    #[test]
    fn signals_are_encoded_as_prost_encodes_their_events() {
        use tickmesh_proto::v1::{Interval, SignalAction, Strategy};
        let signals: Vec<Signal> = (0..3)
            .map(|i| Signal {
                symbol: format!("SYM{i}"),
                interval: Interval::Interval1m as i32,
                time_us: 1_736_121_600_000_000 + i64::from(i),
                strategy: Strategy::try_from(i + 1).map_or(0, |s| s as i32),
                action: SignalAction::Buy as i32,
                confidence: 0.25 * f64::from(i),
                price: 100.0,
                ..Signal::default()
            })
            .collect();
        let rows: Vec<SignalRow> = signals.iter().map(SignalRow::of).collect();
        for now in [0, 1_763_700_000_000_000] {
            let prost = MarketEventBatch {
                events: signals
                    .iter()
                    .map(|s| signal_event(s.clone(), now))
                    .collect(),
            }
            .encode_to_vec();
            assert_eq!(encode_signals(now, &rows), Some(prost));
        }
        assert_eq!(encode_signals(1, &[]), None);
    }
}
