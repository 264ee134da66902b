-- Due deliveries per webhook, oldest first. A claim asks each active webhook with room for
-- attempts for its oldest; in one index over every webhook, the deliveries of a paused webhook
-- or one with its share of attempts in flight were walked past on every claim: O(backlog).
DROP INDEX webhook_deliveries_due_idx;
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (webhook_id, next_attempt_at, id) WHERE state = 'pending';
