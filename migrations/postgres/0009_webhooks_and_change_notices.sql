-- Webhooks and their deliveries. Each ticket history event fans out, by trigger and in the
-- event's own transaction, to a delivery row per active webhook subscribed to its type: the
-- outbox, so a crash or restart loses no delivery.

CREATE TABLE webhooks (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url        TEXT        NOT NULL CHECK (char_length(url) <= 2048),
    -- Subscribed event types as ',ticket.created,ticket.assigned,'.
    events     TEXT        NOT NULL,
    secret     TEXT        NOT NULL,
    active     BOOLEAN     NOT NULL DEFAULT TRUE,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE webhook_deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      BIGINT      NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        BIGINT      NOT NULL REFERENCES ticket_events (id),
    ticket_id       BIGINT      NOT NULL,
    event_type      TEXT        NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    -- When a pending delivery is due; a server that claims it moves this past its attempt. Null
    -- while an earlier delivery of the same ticket to the same webhook is pending: each is made
    -- due when the one before it is done, so due deliveries are exactly the ones to send now.
    next_attempt_at TIMESTAMPTZ,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    -- What the first attempt sent, so every retry sends the same bytes.
    body            TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);
-- Due deliveries, oldest first.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at, id) WHERE state = 'pending';
-- A ticket's pending deliveries to a webhook, in order; and a webhook's deliveries, newest first.
CREATE INDEX webhook_deliveries_queue_idx ON webhook_deliveries (webhook_id, ticket_id, id) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_listing_idx ON webhook_deliveries (webhook_id, id);

CREATE FUNCTION ticket_event_to_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    fired TEXT := 'ticket.' || CASE WHEN NEW.kind = 'comment_added' AND NEW.internal
                                    THEN 'internal_note_added' ELSE NEW.kind END;
BEGIN
    -- Due now, unless an earlier one for the ticket waits (the ticket's row is locked meanwhile,
    -- and the store locks it too when it finishes a delivery, so none is missed).
    INSERT INTO webhook_deliveries (webhook_id, event_id, ticket_id, event_type, next_attempt_at, created_at)
    SELECT w.id, NEW.id, NEW.ticket_id, fired,
           CASE WHEN EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.webhook_id = w.id
                             AND e.ticket_id = NEW.ticket_id AND e.state = 'pending')
                THEN NULL ELSE NEW.created_at END,
           NEW.created_at
    FROM webhooks w WHERE w.active AND strpos(w.events, ',' || fired || ',') > 0;
    -- No NOTIFY: a commit that notifies takes a lock every such commit waits on. The server that
    -- made the change looks at once; the others poll.
    RETURN NULL;
END $$;
CREATE TRIGGER ticket_events_to_webhooks AFTER INSERT ON ticket_events
    FOR EACH ROW EXECUTE FUNCTION ticket_event_to_webhooks();

-- Live embed streams on every replica hear of a change to what the embed shows, on commit.
CREATE FUNCTION notify_ticket_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ticketdesk_tickets', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER tickets_notify_change AFTER UPDATE ON tickets FOR EACH ROW
    WHEN (OLD.subject IS DISTINCT FROM NEW.subject OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.updated_at IS DISTINCT FROM NEW.updated_at OR OLD.embed_token IS DISTINCT FROM NEW.embed_token)
    EXECUTE FUNCTION notify_ticket_change();
