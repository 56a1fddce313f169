-- Candles rolled up from ticks remember which tick opened and which closed them, so a late or
-- out-of-order tick can be merged in without re-reading the bar's ticks.
ALTER TABLE candles ADD COLUMN first_ts_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE candles ADD COLUMN first_trade_id TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE candles ADD COLUMN last_ts_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE candles ADD COLUMN last_trade_id TEXT COLLATE "C" NOT NULL DEFAULT '';
-- Open candles per symbol, found quickly when a later tick closes them.
CREATE INDEX candles_open_by_symbol ON candles (symbol, interval_code, open_time_us) WHERE NOT closed;
