DROP INDEX candles_open_by_symbol;
ALTER TABLE candles DROP COLUMN last_trade_id;
ALTER TABLE candles DROP COLUMN last_ts_us;
ALTER TABLE candles DROP COLUMN first_trade_id;
ALTER TABLE candles DROP COLUMN first_ts_us;
