-- The session advisory lock that makes one process the outbox relay (key 0x7469636b7265).
SELECT pg_try_advisory_lock(127995988374117) AS locked
