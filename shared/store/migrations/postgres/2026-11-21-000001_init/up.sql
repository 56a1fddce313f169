-- Market data. Time is integer microseconds since the epoch, UTC.
-- ticks and candles are range-partitioned by time (one partition per calendar month, created
-- ahead and on demand by the store; the DEFAULT partition catches anything outside them).

CREATE TABLE ticks (
    symbol      TEXT             NOT NULL,
    ts_us       BIGINT           NOT NULL,
    -- Byte order, as the rollup compares trade ids, whatever the cluster's locale.
    trade_id    TEXT COLLATE "C" NOT NULL,
    price       DOUBLE PRECISION NOT NULL,
    size        DOUBLE PRECISION NOT NULL,
    side        SMALLINT         NOT NULL,
    PRIMARY KEY (symbol, ts_us, trade_id)
) PARTITION BY RANGE (ts_us);
CREATE TABLE ticks_default PARTITION OF ticks DEFAULT;

CREATE TABLE candles (
    symbol          TEXT             NOT NULL,
    interval_code   SMALLINT         NOT NULL,
    open_time_us    BIGINT           NOT NULL,
    open            DOUBLE PRECISION NOT NULL,
    high            DOUBLE PRECISION NOT NULL,
    low             DOUBLE PRECISION NOT NULL,
    close           DOUBLE PRECISION NOT NULL,
    volume          DOUBLE PRECISION NOT NULL,
    trade_count     BIGINT           NOT NULL,
    closed          BOOLEAN          NOT NULL,
    PRIMARY KEY (symbol, interval_code, open_time_us)
) PARTITION BY RANGE (open_time_us);
CREATE TABLE candles_default PARTITION OF candles DEFAULT;

CREATE TABLE signals (
    symbol          TEXT             NOT NULL,
    interval_code   SMALLINT         NOT NULL,
    time_us         BIGINT           NOT NULL,
    strategy        SMALLINT         NOT NULL,
    action          SMALLINT         NOT NULL,
    confidence      DOUBLE PRECISION NOT NULL,
    price           DOUBLE PRECISION NOT NULL,
    -- The whole tickmesh.v1.Signal (indicator values, votes), protobuf-encoded.
    body            BYTEA            NOT NULL,
    PRIMARY KEY (symbol, interval_code, time_us, strategy)
);
CREATE INDEX signals_by_symbol_time ON signals (symbol, time_us DESC);
CREATE INDEX signals_by_action_time ON signals (action, time_us DESC);

-- Events written in the same transaction as the rows they describe and published on the bus
-- afterwards, so a crash or a bus outage between commit and publish loses nothing.
CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    created_us  BIGINT NOT NULL,
    body        BYTEA  NOT NULL
);
