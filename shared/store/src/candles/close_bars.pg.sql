-- Closes the open bars of the symbols in $1 that ended at or before their symbol's newest
-- stored tick, in one statement. {bar_length} is the length of the row's bar (rollup.rs).
UPDATE candles SET closed = TRUE
FROM (SELECT s, (SELECT max(ts_us) FROM ticks WHERE symbol = s) AS newest
      FROM unnest($1::text[]) AS s) AS n
WHERE candles.symbol = n.s AND NOT candles.closed AND candles.open_time_us + {bar_length} <= n.newest
RETURNING candles.symbol, candles.interval_code, candles.open_time_us, candles.open,
  candles.high, candles.low, candles.close, candles.volume, candles.trade_count, candles.closed
