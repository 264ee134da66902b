-- Users and tickets; the same shape as the Postgres schema. AUTOINCREMENT so that an id is
-- never reused, even after the newest row is deleted. Timestamps are RFC 3339 text in UTC.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 64),
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('customer', 'agent', 'admin')),
    created_at    TEXT    NOT NULL
) STRICT;

CREATE TABLE tickets (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    subject     TEXT    NOT NULL CHECK (length(subject) BETWEEN 1 AND 200),
    description TEXT    NOT NULL CHECK (length(description) <= 10000),
    status      TEXT    NOT NULL DEFAULT 'open'
                        CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    created_by  INTEGER NOT NULL REFERENCES users (id),
    assigned_to INTEGER REFERENCES users (id),
    embed_token BLOB    NOT NULL UNIQUE CHECK (length(embed_token) = 16),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
) STRICT;

CREATE INDEX tickets_created_by_id_idx ON tickets (created_by, id DESC);
CREATE INDEX tickets_assigned_to_id_idx ON tickets (assigned_to, id DESC) WHERE assigned_to IS NOT NULL;
