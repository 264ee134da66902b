-- Service levels: business calendars and SLA policies, and the `pending` status (waiting on the
-- customer, when service clocks pause).
ALTER TABLE tickets DROP CONSTRAINT tickets_status_check;
ALTER TABLE tickets ADD CONSTRAINT tickets_status_check
    CHECK (status IN ('open', 'in_progress', 'pending', 'resolved', 'closed'));

CREATE TABLE calendars (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT        NOT NULL UNIQUE,
    time_zone  TEXT        NOT NULL,
    -- JSON: {"monday": [{"start": "09:00", "end": "17:00"}], ...}, checked by the server.
    hours      TEXT        NOT NULL,
    -- JSON: ["2026-12-25", ...], local dates.
    holidays   TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE sla_policies (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                TEXT        NOT NULL UNIQUE,
    position            INTEGER     NOT NULL UNIQUE,
    -- JSON, checked by the server: {"priorities": [...]}, [{"metric": ..., "minutes": ...}], [status, ...].
    conditions          TEXT        NOT NULL,
    targets             TEXT        NOT NULL,
    warn_before_minutes INTEGER,
    -- A calendar in use cannot be deleted.
    calendar_id         BIGINT      REFERENCES calendars (id) ON DELETE RESTRICT,
    pause_statuses      TEXT        NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX sla_policies_calendar_id_idx ON sla_policies (calendar_id);
