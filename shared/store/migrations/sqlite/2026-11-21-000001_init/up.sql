-- The embedded store: the same tables as PostgreSQL, without partitioning.
-- Time is integer microseconds since the epoch, UTC.

CREATE TABLE ticks (
    symbol      TEXT    NOT NULL,
    ts_us       BIGINT  NOT NULL,
    trade_id    TEXT    NOT NULL,
    price       DOUBLE  NOT NULL,
    size        DOUBLE  NOT NULL,
    side        SMALLINT NOT NULL,
    PRIMARY KEY (symbol, ts_us, trade_id)
) WITHOUT ROWID;

CREATE TABLE candles (
    symbol          TEXT     NOT NULL,
    interval_code   SMALLINT NOT NULL,
    open_time_us    BIGINT   NOT NULL,
    open            DOUBLE   NOT NULL,
    high            DOUBLE   NOT NULL,
    low             DOUBLE   NOT NULL,
    close           DOUBLE   NOT NULL,
    volume          DOUBLE   NOT NULL,
    trade_count     BIGINT   NOT NULL,
    closed          BOOLEAN  NOT NULL,
    PRIMARY KEY (symbol, interval_code, open_time_us)
) WITHOUT ROWID;

CREATE TABLE signals (
    symbol          TEXT     NOT NULL,
    interval_code   SMALLINT NOT NULL,
    time_us         BIGINT   NOT NULL,
    strategy        SMALLINT NOT NULL,
    action          SMALLINT NOT NULL,
    confidence      DOUBLE   NOT NULL,
    price           DOUBLE   NOT NULL,
    body            BLOB     NOT NULL,
    PRIMARY KEY (symbol, interval_code, time_us, strategy)
);
CREATE INDEX signals_by_symbol_time ON signals (symbol, time_us DESC);
CREATE INDEX signals_by_action_time ON signals (action, time_us DESC);

CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created_us  BIGINT NOT NULL,
    body        BLOB   NOT NULL
);
