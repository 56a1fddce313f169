DROP TABLE candle_revisions;
