-- Service clocks; the same shape as the Postgres schema (see there). Events without an actor
-- need ticket_events rebuilt (SQLite cannot drop a NOT NULL). webhook_deliveries refers to it, and
-- foreign keys cannot be switched off inside the migrations' transaction, so their checks wait
-- for the commit instead: the rows go back with their ids before then, and nothing dangles.
PRAGMA defer_foreign_keys = ON;
CREATE TABLE ticket_events_before_0015 AS SELECT * FROM ticket_events;
DROP TABLE ticket_events;
CREATE TABLE ticket_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id  INTEGER NOT NULL REFERENCES tickets (id),
    actor_id   INTEGER REFERENCES users (id),
    kind       TEXT    NOT NULL CHECK (kind IN ('created', 'assigned', 'unassigned', 'status_changed',
                                                'priority_changed', 'comment_added', 'embed_token_rotated',
                                                'attachment_deleted', 'sla_warning', 'sla_breached', 'sla_achieved')),
    from_value TEXT,
    to_value   TEXT,
    comment_id INTEGER REFERENCES comments (id),
    internal   INTEGER NOT NULL DEFAULT 0 CHECK (internal IN (0, 1)),
    created_at TEXT    NOT NULL,
    event_type TEXT    NOT NULL DEFAULT ''
) STRICT;
INSERT INTO ticket_events (id, ticket_id, actor_id, kind, from_value, to_value, comment_id, internal, created_at, event_type)
    SELECT id, ticket_id, actor_id, kind, from_value, to_value, comment_id, internal, created_at, event_type
    FROM ticket_events_before_0015;
DROP TABLE ticket_events_before_0015;
-- The index and the fan-out trigger come back after the copy (which must not fan out again).
CREATE INDEX ticket_events_ticket_id_idx ON ticket_events (ticket_id, id);
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

CREATE TABLE sla_clocks (
    ticket_id           INTEGER NOT NULL REFERENCES tickets (id),
    metric              TEXT    NOT NULL CHECK (metric IN ('first_response', 'next_response', 'resolution')),
    cycle               INTEGER NOT NULL,
    policy_id           INTEGER REFERENCES sla_policies (id) ON DELETE SET NULL,
    policy_name         TEXT    NOT NULL,
    target_minutes      INTEGER NOT NULL,
    warn_before_minutes INTEGER,
    calendar_id         INTEGER REFERENCES calendars (id) ON DELETE SET NULL,
    pause_statuses      TEXT    NOT NULL,
    used_seconds        INTEGER NOT NULL,
    running_since       TEXT,
    due_at              TEXT,
    warn_at             TEXT,
    warned              INTEGER NOT NULL CHECK (warned IN (0, 1)),
    breached_at         TEXT,
    completed_at        TEXT,
    achieved            INTEGER NOT NULL CHECK (achieved IN (0, 1)),
    next_check_at       TEXT,
    PRIMARY KEY (ticket_id, metric)
) STRICT;
CREATE INDEX sla_clocks_next_check_idx ON sla_clocks (next_check_at) WHERE next_check_at IS NOT NULL;
CREATE INDEX sla_clocks_calendar_id_idx ON sla_clocks (calendar_id) WHERE calendar_id IS NOT NULL;
CREATE INDEX sla_clocks_policy_id_idx ON sla_clocks (policy_id) WHERE policy_id IS NOT NULL;

ALTER TABLE tickets ADD COLUMN sla TEXT;
-- From the summary, for listings: the overall state, and when the next running target is due.
ALTER TABLE tickets ADD COLUMN sla_status TEXT;
ALTER TABLE tickets ADD COLUMN sla_due_at TEXT;
CREATE INDEX tickets_sla_due_at_id_idx ON tickets (sla_due_at, id) WHERE sla_due_at IS NOT NULL;
CREATE INDEX tickets_sla_status_id_idx ON tickets (sla_status, id DESC) WHERE sla_status IS NOT NULL;
