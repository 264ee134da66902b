-- Priorities, conversations, history, deactivation and token revocation, full-text search.

ALTER TABLE users ADD COLUMN active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1));
-- Bumped when a password changes: access tokens carry it, so older ones stop working.
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;

ALTER TABLE tickets ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal'
    CHECK (priority IN ('low', 'normal', 'high', 'urgent'));

CREATE TABLE comments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id  INTEGER NOT NULL REFERENCES tickets (id),
    author_id  INTEGER NOT NULL REFERENCES users (id),
    body       TEXT    NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    -- Internal notes are for agents and admins only.
    internal   INTEGER NOT NULL CHECK (internal IN (0, 1)),
    created_at TEXT    NOT NULL
) STRICT;
CREATE INDEX comments_ticket_id_idx ON comments (ticket_id, id);

CREATE TABLE ticket_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id  INTEGER NOT NULL REFERENCES tickets (id),
    actor_id   INTEGER NOT NULL REFERENCES users (id),
    kind       TEXT    NOT NULL CHECK (kind IN ('created', 'assigned', 'unassigned', 'status_changed',
                                                'priority_changed', 'comment_added', 'embed_token_rotated')),
    from_value TEXT,
    to_value   TEXT,
    comment_id INTEGER REFERENCES comments (id),
    -- Set on events customers must not see (an internal note was added).
    internal   INTEGER NOT NULL DEFAULT 0 CHECK (internal IN (0, 1)),
    created_at TEXT    NOT NULL
) STRICT;
CREATE INDEX ticket_events_ticket_id_idx ON ticket_events (ticket_id, id);

CREATE INDEX tickets_status_id_idx ON tickets (status, id DESC);
CREATE INDEX tickets_updated_at_id_idx ON tickets (updated_at DESC, id DESC);

-- Full-text search: FTS5 indexes kept in step by triggers. Subjects and descriptions are indexed
-- per ticket (rowid = ticket id); public comments per comment (rowid = comment id).
CREATE VIRTUAL TABLE tickets_fts USING fts5(
    subject, description, content = 'tickets', content_rowid = 'id', tokenize = 'porter unicode61'
);
CREATE TRIGGER tickets_fts_insert AFTER INSERT ON tickets BEGIN
    INSERT INTO tickets_fts (rowid, subject, description) VALUES (new.id, new.subject, new.description);
END;
CREATE TRIGGER tickets_fts_update AFTER UPDATE OF subject, description ON tickets BEGIN
    INSERT INTO tickets_fts (tickets_fts, rowid, subject, description)
        VALUES ('delete', old.id, old.subject, old.description);
    INSERT INTO tickets_fts (rowid, subject, description) VALUES (new.id, new.subject, new.description);
END;
INSERT INTO tickets_fts (tickets_fts) VALUES ('rebuild');

CREATE VIRTUAL TABLE comments_fts USING fts5(
    body, content = 'comments', content_rowid = 'id', tokenize = 'porter unicode61'
);
CREATE TRIGGER comments_fts_insert AFTER INSERT ON comments WHEN new.internal = 0 BEGIN
    INSERT INTO comments_fts (rowid, body) VALUES (new.id, new.body);
END;
