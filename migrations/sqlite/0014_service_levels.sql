-- Service levels; the same shape as the Postgres schema (see there).

-- The `pending` status. SQLite cannot change a CHECK constraint, but it drops a column with its
-- own: a new column with the wider check takes the old one's place and name (its index goes and
-- comes back with it; every insert names the status, the default only satisfies ADD COLUMN).
DROP INDEX tickets_status_id_idx;
ALTER TABLE tickets ADD COLUMN ticket_status TEXT NOT NULL DEFAULT 'open'
    CHECK (ticket_status IN ('open', 'in_progress', 'pending', 'resolved', 'closed'));
UPDATE tickets SET ticket_status = status;
ALTER TABLE tickets DROP COLUMN status;
ALTER TABLE tickets RENAME COLUMN ticket_status TO status;
CREATE INDEX tickets_status_id_idx ON tickets (status, id DESC);

CREATE TABLE calendars (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    time_zone  TEXT    NOT NULL,
    hours      TEXT    NOT NULL,
    holidays   TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
) STRICT;

CREATE TABLE sla_policies (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT    NOT NULL UNIQUE,
    position            INTEGER NOT NULL UNIQUE,
    conditions          TEXT    NOT NULL,
    targets             TEXT    NOT NULL,
    warn_before_minutes INTEGER,
    calendar_id         INTEGER REFERENCES calendars (id) ON DELETE RESTRICT,
    pause_statuses      TEXT    NOT NULL,
    created_at          TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL
) STRICT;
CREATE INDEX sla_policies_calendar_id_idx ON sla_policies (calendar_id);
