//! Rows of the store's tables.

use diesel::prelude::*;

use crate::schema::{candles, outbox, signals, ticks};

/// One trade.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = ticks)]
#[diesel(treat_none_as_default_value = false)]
pub struct TickRow {
    /// Instrument symbol.
    pub symbol: String,
    /// Trade time, microseconds since the epoch, UTC.
    pub ts_us: i64,
    /// Venue trade id.
    pub trade_id: String,
    /// Trade price.
    pub price: f64,
    /// Trade size.
    pub size: f64,
    /// `tickmesh.v1.Side` as its number.
    pub side: i16,
}

/// One OHLCV bar.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = candles)]
#[diesel(treat_none_as_default_value = false)]
pub struct CandleRow {
    /// Instrument symbol.
    pub symbol: String,
    /// `tickmesh.v1.Interval` as its number.
    pub interval_code: i16,
    /// Start of the bar, microseconds since the epoch, UTC.
    pub open_time_us: i64,
    /// Open price.
    pub open: f64,
    /// High price.
    pub high: f64,
    /// Low price.
    pub low: f64,
    /// Close price.
    pub close: f64,
    /// Traded volume.
    pub volume: f64,
    /// Trades rolled into the bar.
    pub trade_count: i64,
    /// Whether the bar's interval has ended.
    pub closed: bool,
}

/// One trading signal.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = signals)]
#[diesel(treat_none_as_default_value = false)]
pub struct SignalRow {
    /// Instrument symbol.
    pub symbol: String,
    /// `tickmesh.v1.Interval` as its number.
    pub interval_code: i16,
    /// Open time of the bar the signal was computed on.
    pub time_us: i64,
    /// `tickmesh.v1.Strategy` as its number.
    pub strategy: i16,
    /// `tickmesh.v1.SignalAction` as its number.
    pub action: i16,
    /// Confidence in [0, 1].
    pub confidence: f64,
    /// Close price of the bar.
    pub price: f64,
    /// The whole `tickmesh.v1.Signal`, protobuf-encoded.
    pub body: Vec<u8>,
}

impl SignalRow {
    /// The row `signal` is stored as: its key and filter columns, and the whole message.
    pub fn of(signal: &tickmesh_proto::v1::Signal) -> Self {
        Self {
            symbol: signal.symbol.clone(),
            interval_code: signal.interval as i16,
            time_us: signal.time_us,
            strategy: signal.strategy as i16,
            action: signal.action as i16,
            confidence: signal.confidence,
            price: signal.price,
            body: prost::Message::encode_to_vec(signal),
        }
    }
}

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    /// Publication order.
    pub id: i64,
    /// When the event was written, microseconds since the epoch, UTC.
    pub created_us: i64,
    /// The `tickmesh.v1.MarketEvent`, protobuf-encoded.
    pub body: Vec<u8>,
}

/// A new outbox event.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = outbox)]
#[diesel(treat_none_as_default_value = false)]
pub struct NewOutboxRow {
    /// When the event was written, microseconds since the epoch, UTC.
    pub created_us: i64,
    /// The `tickmesh.v1.MarketEvent`, protobuf-encoded.
    pub body: Vec<u8>,
}
