//! The diesel schema, the same for PostgreSQL and SQLite (see `migrations/`).

diesel::table! {
    /// Trades, keyed by (symbol, time, trade id).
    ticks (symbol, ts_us, trade_id) {
        /// Instrument symbol.
        symbol -> Text,
        /// Trade time, microseconds since the epoch, UTC.
        ts_us -> BigInt,
        /// Venue trade id.
        trade_id -> Text,
        /// Trade price.
        price -> Double,
        /// Trade size.
        size -> Double,
        /// `tickmesh.v1.Side` as its number.
        side -> SmallInt,
    }
}

diesel::table! {
    /// OHLCV bars, keyed by (symbol, interval, open time).
    candles (symbol, interval_code, open_time_us) {
        /// Instrument symbol.
        symbol -> Text,
        /// `tickmesh.v1.Interval` as its number.
        interval_code -> SmallInt,
        /// Start of the bar, microseconds since the epoch, UTC.
        open_time_us -> BigInt,
        /// Open price.
        open -> Double,
        /// High price.
        high -> Double,
        /// Low price.
        low -> Double,
        /// Close price.
        close -> Double,
        /// Traded volume.
        volume -> Double,
        /// Trades rolled into the bar.
        trade_count -> BigInt,
        /// Whether the bar's interval has ended.
        closed -> Bool,
        /// Time of the tick that opened the bar (rolled-up candles).
        first_ts_us -> BigInt,
        /// Trade id of the tick that opened the bar.
        first_trade_id -> Text,
        /// Time of the tick that closed the bar so far.
        last_ts_us -> BigInt,
        /// Trade id of the tick that closed the bar so far.
        last_trade_id -> Text,
    }
}

diesel::table! {
    /// Trading signals, keyed by (symbol, interval, time, strategy).
    signals (symbol, interval_code, time_us, strategy) {
        /// Instrument symbol.
        symbol -> Text,
        /// `tickmesh.v1.Interval` as its number.
        interval_code -> SmallInt,
        /// Open time of the bar the signal was computed on.
        time_us -> BigInt,
        /// `tickmesh.v1.Strategy` as its number.
        strategy -> SmallInt,
        /// `tickmesh.v1.SignalAction` as its number.
        action -> SmallInt,
        /// Confidence in [0, 1].
        confidence -> Double,
        /// Close price of the bar.
        price -> Double,
        /// The whole `tickmesh.v1.Signal`, protobuf-encoded.
        body -> Binary,
    }
}

diesel::table! {
    /// Events committed with their rows, published on the bus afterwards.
    outbox (id) {
        /// Publication order.
        id -> BigInt,
        /// When the event was written, microseconds since the epoch, UTC.
        created_us -> BigInt,
        /// The `tickmesh.v1.MarketEvent`, protobuf-encoded.
        body -> Binary,
    }
}

diesel::table! {
    /// A counter per (symbol, interval), moved forward by every write that changes one of its
    /// candles, in the same transaction.
    candle_revisions (symbol, interval_code) {
        /// Instrument symbol.
        symbol -> Text,
        /// `tickmesh.v1.Interval` as its number.
        interval_code -> SmallInt,
        /// Writes that changed a candle of the pair so far.
        revision -> BigInt,
    }
}
