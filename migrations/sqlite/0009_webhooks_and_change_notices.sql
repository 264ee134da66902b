-- Webhooks and their deliveries. Each ticket history event fans out, by trigger and in the
-- event's own transaction, to a delivery row per active webhook subscribed to its type: the
-- outbox, so a crash or restart loses no delivery. (Live embed streams hear of changes in
-- process: SQLite has one server.)

CREATE TABLE webhooks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    url        TEXT    NOT NULL CHECK (length(url) <= 2048),
    -- Subscribed event types as ',ticket.created,ticket.assigned,'.
    events     TEXT    NOT NULL,
    secret     TEXT    NOT NULL,
    active     INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
) STRICT;

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        INTEGER NOT NULL REFERENCES ticket_events (id),
    ticket_id       INTEGER NOT NULL,
    event_type      TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- When a pending delivery is due; a server that claims it moves this past its attempt. Null
    -- while an earlier delivery of the same ticket to the same webhook is pending: each is made
    -- due when the one before it is done, so due deliveries are exactly the ones to send now.
    next_attempt_at TEXT,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    TEXT,
    -- What the first attempt sent, so every retry sends the same bytes.
    body            TEXT,
    created_at      TEXT    NOT NULL
) STRICT;
-- Due deliveries, oldest first.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at, id) WHERE state = 'pending';
-- A ticket's pending deliveries to a webhook, in order; and a webhook's deliveries, newest first.
CREATE INDEX webhook_deliveries_queue_idx ON webhook_deliveries (webhook_id, ticket_id, id) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_listing_idx ON webhook_deliveries (webhook_id, id);

CREATE TRIGGER ticket_events_to_webhooks AFTER INSERT ON ticket_events BEGIN
    INSERT INTO webhook_deliveries (webhook_id, event_id, ticket_id, event_type, next_attempt_at, created_at)
    -- Due now, unless an earlier one for the ticket waits.
    SELECT w.id, new.id, new.ticket_id, fired,
           CASE WHEN EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.webhook_id = w.id
                             AND e.ticket_id = new.ticket_id AND e.state = 'pending')
                THEN NULL ELSE new.created_at END,
           new.created_at
    FROM webhooks w,
         (SELECT 'ticket.' || CASE WHEN new.kind = 'comment_added' AND new.internal
                                   THEN 'internal_note_added' ELSE new.kind END AS fired)
    WHERE w.active AND instr(w.events, ',' || fired || ',') > 0;
END;
