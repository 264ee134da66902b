-- Service clocks: one row per ticket and metric while a policy promises a target for it. The
-- ticket keeps a summary of its clocks beside it (`sla`, JSON, for staff), so reading a ticket
-- stays one row. Warnings, breaches and achievements are history written by the server itself:
-- such events have no actor.
CREATE TABLE sla_clocks (
    ticket_id           BIGINT      NOT NULL REFERENCES tickets (id),
    metric              TEXT        NOT NULL CHECK (metric IN ('first_response', 'next_response', 'resolution')),
    cycle               INTEGER     NOT NULL,
    policy_id           BIGINT      REFERENCES sla_policies (id) ON DELETE SET NULL,
    policy_name         TEXT        NOT NULL,
    target_minutes      INTEGER     NOT NULL,
    warn_before_minutes INTEGER,
    calendar_id         BIGINT      REFERENCES calendars (id) ON DELETE SET NULL,
    pause_statuses      TEXT        NOT NULL,
    used_seconds        BIGINT      NOT NULL,
    running_since       TIMESTAMPTZ,
    due_at              TIMESTAMPTZ,
    warn_at             TIMESTAMPTZ,
    warned              BOOLEAN     NOT NULL,
    breached_at         TIMESTAMPTZ,
    completed_at        TIMESTAMPTZ,
    achieved            BOOLEAN     NOT NULL,
    next_check_at       TIMESTAMPTZ,
    PRIMARY KEY (ticket_id, metric)
);
-- The evaluator reads only what is due.
CREATE INDEX sla_clocks_next_check_idx ON sla_clocks (next_check_at) WHERE next_check_at IS NOT NULL;
CREATE INDEX sla_clocks_calendar_id_idx ON sla_clocks (calendar_id) WHERE calendar_id IS NOT NULL;
CREATE INDEX sla_clocks_policy_id_idx ON sla_clocks (policy_id) WHERE policy_id IS NOT NULL;

ALTER TABLE tickets ADD COLUMN sla TEXT;
-- From the summary, for listings: the overall state, and when the next running target is due.
ALTER TABLE tickets ADD COLUMN sla_status TEXT;
ALTER TABLE tickets ADD COLUMN sla_due_at TIMESTAMPTZ;
CREATE INDEX tickets_sla_due_at_id_idx ON tickets (sla_due_at, id) WHERE sla_due_at IS NOT NULL;
CREATE INDEX tickets_sla_status_id_idx ON tickets (sla_status, id DESC) WHERE sla_status IS NOT NULL;

ALTER TABLE ticket_events ALTER COLUMN actor_id DROP NOT NULL;
ALTER TABLE ticket_events DROP CONSTRAINT ticket_events_kind_check;
ALTER TABLE ticket_events ADD CONSTRAINT ticket_events_kind_check CHECK (kind IN ('created', 'assigned',
    'unassigned', 'status_changed', 'priority_changed', 'comment_added', 'embed_token_rotated',
    'attachment_deleted', 'sla_warning', 'sla_breached', 'sla_achieved'));
