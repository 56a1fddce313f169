-- The newest stored tick time of each symbol in $1 (NULL for a symbol without ticks); each
-- subquery is an index lookup.
SELECT s AS symbol, (SELECT max(ts_us) FROM ticks WHERE symbol = s) AS ts_us
FROM unnest($1::text[]) AS s
