-- A delivery's foreign keys made every write that queues one lock the webhook's row FOR KEY
-- SHARE: with one webhook and concurrent writes, every such write made a new multixact on
-- that one row (a heap change and WAL of its own), and writes queued behind its buffer lock.
-- The event is the one whose insert queues the delivery (migration 0009's trigger), and a
-- webhook's deliveries are deleted with it by the store. A write that read the webhook just
-- before its deletion committed can still queue one for it; such a delivery is never claimed
-- (claims join the webhook) nor listed (the webhook is gone, and ids are never reused).
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_webhook_id_fkey;
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_id_fkey;
