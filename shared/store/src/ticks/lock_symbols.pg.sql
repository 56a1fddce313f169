-- Takes the transaction-scoped write lock of every symbol in $1, in one fixed order, so two
-- writers of the same symbol queue instead of deadlocking, and the second sees the bars the
-- first created when it closes bars.
SELECT pg_advisory_xact_lock(h)
FROM (SELECT DISTINCT hashtext(s) AS h FROM unnest($1::text[]) AS s ORDER BY 1) AS locks
