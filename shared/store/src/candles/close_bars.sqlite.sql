-- Closes the open bars of symbol ?1 that ended at or before its newest stored tick.
-- {bar_length} is the length of the row's bar (rollup.rs).
UPDATE candles SET closed = TRUE
WHERE symbol = ?1 AND NOT closed AND open_time_us + {bar_length} <= (SELECT max(ts_us) FROM ticks WHERE symbol = ?1)
RETURNING symbol, interval_code, open_time_us, open, high, low, close, volume, trade_count, closed
