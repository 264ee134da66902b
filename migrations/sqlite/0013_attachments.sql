-- Files on tickets and comments; the same shape as the Postgres schema (see there).
CREATE TABLE attachments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    uploader_id  INTEGER NOT NULL REFERENCES users (id),
    storage_key  TEXT    NOT NULL UNIQUE,
    filename     TEXT    NOT NULL,
    content_type TEXT    NOT NULL DEFAULT 'application/octet-stream',
    size         INTEGER NOT NULL DEFAULT 0,
    sha256       TEXT    NOT NULL DEFAULT '',
    token_hash   TEXT    UNIQUE,
    expires_at   TEXT,
    ticket_id    INTEGER REFERENCES tickets (id),
    comment_id   INTEGER REFERENCES comments (id),
    internal     INTEGER NOT NULL DEFAULT 0 CHECK (internal IN (0, 1)),
    created_at   TEXT    NOT NULL,
    deleted_at   TEXT,
    deleted_by   INTEGER REFERENCES users (id)
) STRICT;
CREATE INDEX attachments_pending_expiry_idx ON attachments (expires_at) WHERE ticket_id IS NULL;
CREATE INDEX attachments_pending_uploader_idx ON attachments (uploader_id) WHERE ticket_id IS NULL;

ALTER TABLE tickets ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]';
ALTER TABLE comments ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]';

-- An admin deleting a file is history too. SQLite cannot change a CHECK constraint, but it drops
-- a column with its own: a new column with the wider check takes the old one's place and name
-- (every insert names the kind; the default only satisfies ADD COLUMN).
ALTER TABLE ticket_events ADD COLUMN event_kind TEXT NOT NULL DEFAULT 'created'
    CHECK (event_kind IN ('created', 'assigned', 'unassigned', 'status_changed', 'priority_changed',
                          'comment_added', 'embed_token_rotated', 'attachment_deleted'));
UPDATE ticket_events SET event_kind = kind;
ALTER TABLE ticket_events DROP COLUMN kind;
ALTER TABLE ticket_events RENAME COLUMN event_kind TO kind;
