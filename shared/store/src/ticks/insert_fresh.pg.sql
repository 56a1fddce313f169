-- Ticks known to be new (see `plan::all_newer`): no conflict check, nothing returned.
INSERT INTO ticks (symbol, ts_us, trade_id, price, size, side)
SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::float8[], $5::float8[], $6::int2[])
