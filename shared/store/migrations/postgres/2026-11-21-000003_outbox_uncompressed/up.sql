-- An outbox body is a batch of events written once and read once by the relay: compressing it
-- (TOAST's default for large values) cost more than a third of a tick write's time.
ALTER TABLE outbox ALTER COLUMN body SET STORAGE EXTERNAL;
