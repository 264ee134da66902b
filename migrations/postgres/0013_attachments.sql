-- Files on tickets and comments. The bytes live in object storage under `storage_key` (never
-- derived from the uploader's file name); this row says whose they are and where they belong.
-- An upload is pending (ticket_id null, expires_at set) until a ticket or comment references
-- it by its token; the sweeper removes pending ones after expires_at, bytes first.
CREATE TABLE attachments (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uploader_id  BIGINT      NOT NULL REFERENCES users (id),
    storage_key  TEXT        NOT NULL UNIQUE,
    filename     TEXT        NOT NULL,
    content_type TEXT        NOT NULL DEFAULT 'application/octet-stream',
    size         BIGINT      NOT NULL DEFAULT 0,
    sha256       TEXT        NOT NULL DEFAULT '',
    -- Set once the bytes are stored; cleared when a ticket or comment takes the upload.
    token_hash   TEXT        UNIQUE,
    expires_at   TIMESTAMPTZ,
    ticket_id    BIGINT      REFERENCES tickets (id),
    comment_id   BIGINT      REFERENCES comments (id),
    -- On an internal note: staff only.
    internal     BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at   TIMESTAMPTZ NOT NULL,
    deleted_at   TIMESTAMPTZ,
    deleted_by   BIGINT      REFERENCES users (id)
);
CREATE INDEX attachments_pending_expiry_idx ON attachments (expires_at) WHERE ticket_id IS NULL;
CREATE INDEX attachments_pending_uploader_idx ON attachments (uploader_id) WHERE ticket_id IS NULL;

-- What a ticket (its description) and each comment show of their files, kept beside them so the
-- hot reads stay one row: a JSON array of {id, filename, content_type, size}.
ALTER TABLE tickets ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]';
ALTER TABLE comments ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]';

-- An admin deleting a file is history too.
ALTER TABLE ticket_events DROP CONSTRAINT ticket_events_kind_check;
ALTER TABLE ticket_events ADD CONSTRAINT ticket_events_kind_check CHECK (kind IN ('created', 'assigned',
    'unassigned', 'status_changed', 'priority_changed', 'comment_added', 'embed_token_rotated',
    'attachment_deleted'));
