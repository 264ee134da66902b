-- Which webhook event type a history event is delivered as is decided in one place, the server's
-- `EventType::of`, and written with the event; the fan-out trigger reads it instead of mapping
-- kinds itself (migration 0009 did, a second copy of the rule).
ALTER TABLE ticket_events ADD COLUMN event_type TEXT;
-- Events recorded before: the rule as it stood.
UPDATE ticket_events SET event_type = 'ticket.' ||
    CASE WHEN kind = 'comment_added' AND internal THEN 'internal_note_added' ELSE kind END;
ALTER TABLE ticket_events ALTER COLUMN event_type SET NOT NULL;

CREATE OR REPLACE FUNCTION ticket_event_to_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Due now, unless an earlier one for the ticket waits (the ticket's row is locked meanwhile,
    -- and the store locks it too when it finishes a delivery, so none is missed).
    INSERT INTO webhook_deliveries (webhook_id, event_id, ticket_id, event_type, next_attempt_at, created_at)
    SELECT w.id, NEW.id, NEW.ticket_id, NEW.event_type,
           CASE WHEN EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.webhook_id = w.id
                             AND e.ticket_id = NEW.ticket_id AND e.state = 'pending')
                THEN NULL ELSE NEW.created_at END,
           NEW.created_at
    FROM webhooks w WHERE w.active AND strpos(w.events, ',' || NEW.event_type || ',') > 0;
    -- No NOTIFY: a commit that notifies takes a lock every such commit waits on. The server that
    -- made the change looks at once; the others poll.
    RETURN NULL;
END $$;
