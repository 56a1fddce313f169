-- Ticks from six arrays (one bind each, not six per row: PostgreSQL parses and plans it far
-- faster); rows already stored are skipped and not returned.
INSERT INTO ticks (symbol, ts_us, trade_id, price, size, side)
SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::float8[], $5::float8[], $6::int2[])
ON CONFLICT DO NOTHING
RETURNING symbol, ts_us, trade_id, price, size, side
