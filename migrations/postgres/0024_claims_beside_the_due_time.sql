-- A claim wrote its lease into `next_attempt_at`, an indexed column: every claim was a new row
-- version with an entry in each of the table's four indexes, and it left a dead entry at the
-- head of the due index that every later claim walked until vacuum. The lease now has a column
-- of its own, in no index, so a claim is a HOT update where the page has room (hence the
-- fillfactor, for pages written from now on). A delivery is due when `next_attempt_at` has come
-- and no lease is running; claims made before this migration (their lease in `next_attempt_at`)
-- come due when it ends, as before.
ALTER TABLE webhook_deliveries ADD COLUMN leased_until TIMESTAMPTZ;
ALTER TABLE webhook_deliveries SET (fillfactor = 80);
