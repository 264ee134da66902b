-- A ticket's `created` event is written in the transaction that inserts the ticket, so no
-- delivery of that ticket can be pending yet: its deliveries are due at once, without the probe
-- for an earlier one, which is what queueing costs most (bench/queue_cost.py). The probe stays
-- for every other event. The lookups' settings of migration 0020 are restated: a replaced
-- function loses them.
CREATE OR REPLACE FUNCTION ticket_event_to_webhooks() RETURNS trigger LANGUAGE plpgsql
    SET enable_seqscan = off SET jit = off AS $$
BEGIN
    -- Due now, unless an earlier one for the ticket waits (the ticket's row is locked meanwhile,
    -- and the store locks it too when it finishes a delivery, so none is missed).
    INSERT INTO webhook_deliveries (webhook_id, event_id, ticket_id, event_type, next_attempt_at, created_at)
    SELECT w.id, NEW.id, NEW.ticket_id, NEW.event_type,
           CASE WHEN NEW.kind <> 'created' AND EXISTS (SELECT 1 FROM webhook_deliveries e
                    WHERE e.webhook_id = w.id AND e.ticket_id = NEW.ticket_id AND e.state = 'pending')
                THEN NULL ELSE NEW.created_at END,
           NEW.created_at
    FROM webhooks w WHERE w.active AND strpos(w.events, ',' || NEW.event_type || ',') > 0;
    -- No NOTIFY: a commit that notifies takes a lock every such commit waits on. The server that
    -- made the change looks at once; the others poll.
    RETURN NULL;
END $$;
