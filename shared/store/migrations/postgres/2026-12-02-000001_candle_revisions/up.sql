-- A counter per (symbol, interval) that every write changing one of its candles moves forward,
-- in the same transaction: a reader that finds the same revision knows nothing it derived from
-- those candles (a cached indicator series) has gone stale.
CREATE TABLE candle_revisions (
    symbol TEXT NOT NULL,
    interval_code SMALLINT NOT NULL,
    revision BIGINT NOT NULL,
    PRIMARY KEY (symbol, interval_code)
);
