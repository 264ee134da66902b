-- Due deliveries per webhook, oldest first. A claim asks each active webhook with room for
-- attempts for its oldest; in one index over every webhook, the deliveries of a paused webhook
-- or one with its share of attempts in flight were walked past on every claim: O(backlog).
-- Only deliveries with a time are in it (the ones held back behind a ticket's earlier delivery
-- are not), so a lookup of a ticket's pending deliveries, which names no time, cannot take it
-- for the queue index and filter every pending delivery of the webhook.
DROP INDEX webhook_deliveries_due_idx;
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (webhook_id, next_attempt_at, id)
    WHERE state = 'pending' AND next_attempt_at IS NOT NULL;
