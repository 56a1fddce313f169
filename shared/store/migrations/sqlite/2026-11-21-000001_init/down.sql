DROP TABLE outbox;
DROP TABLE signals;
DROP TABLE candles;
DROP TABLE ticks;
