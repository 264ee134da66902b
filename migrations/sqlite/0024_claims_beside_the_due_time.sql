-- A claim's lease has a column of its own, beside the time a delivery is due (see PostgreSQL's
-- migration 0024): a delivery is due when `next_attempt_at` has come and no lease is running.
ALTER TABLE webhook_deliveries ADD COLUMN leased_until TEXT;
