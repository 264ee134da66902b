-- Which webhook event type a history event is delivered as is decided in one place, the server's
-- `EventType::of`, and written with the event; the fan-out trigger reads it instead of mapping
-- kinds itself (migration 0009 did, a second copy of the rule).
ALTER TABLE ticket_events ADD COLUMN event_type TEXT NOT NULL DEFAULT '';
-- Events recorded before: the rule as it stood.
UPDATE ticket_events SET event_type = 'ticket.' ||
    CASE WHEN kind = 'comment_added' AND internal THEN 'internal_note_added' ELSE kind END;

DROP TRIGGER ticket_events_to_webhooks;
CREATE TRIGGER ticket_events_to_webhooks AFTER INSERT ON ticket_events BEGIN
    INSERT INTO webhook_deliveries (webhook_id, event_id, ticket_id, event_type, next_attempt_at, created_at)
    -- Due now, unless an earlier one for the ticket waits.
    SELECT w.id, new.id, new.ticket_id, new.event_type,
           CASE WHEN EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.webhook_id = w.id
                             AND e.ticket_id = new.ticket_id AND e.state = 'pending')
                THEN NULL ELSE new.created_at END,
           new.created_at
    FROM webhooks w
    WHERE w.active AND instr(w.events, ',' || new.event_type || ',') > 0;
END;
