-- Releases the lock of migration_lock.sql.
SELECT pg_advisory_unlock(127995988372837)
