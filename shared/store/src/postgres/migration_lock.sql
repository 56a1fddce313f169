-- Serialises migrations of pods starting at once (key 0x7469636b6d65).
SELECT pg_advisory_lock(127995988372837)
