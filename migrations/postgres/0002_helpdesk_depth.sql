-- Priorities, conversations, history, deactivation and token revocation, full-text search.

ALTER TABLE users
    ADD COLUMN active        BOOLEAN NOT NULL DEFAULT TRUE,
    -- Bumped when a password changes: access tokens carry it, so older ones stop working.
    ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;

ALTER TABLE tickets
    ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal'
        CHECK (priority IN ('low', 'normal', 'high', 'urgent'));

CREATE TABLE comments (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id  BIGINT      NOT NULL REFERENCES tickets (id),
    author_id  BIGINT      NOT NULL REFERENCES users (id),
    body       TEXT        NOT NULL CHECK (char_length(body) BETWEEN 1 AND 10000),
    -- Internal notes are for agents and admins only.
    internal   BOOLEAN     NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX comments_ticket_id_idx ON comments (ticket_id, id);

CREATE TABLE ticket_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id  BIGINT      NOT NULL REFERENCES tickets (id),
    actor_id   BIGINT      NOT NULL REFERENCES users (id),
    kind       TEXT        NOT NULL CHECK (kind IN ('created', 'assigned', 'unassigned', 'status_changed',
                                                    'priority_changed', 'comment_added', 'embed_token_rotated')),
    from_value TEXT,
    to_value   TEXT,
    comment_id BIGINT REFERENCES comments (id),
    -- Set on events customers must not see (an internal note was added).
    internal   BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX ticket_events_ticket_id_idx ON ticket_events (ticket_id, id);

-- Listings: by status, and sorted by last update.
CREATE INDEX tickets_status_id_idx ON tickets (status, id DESC);
CREATE INDEX tickets_updated_at_id_idx ON tickets (updated_at DESC, id DESC);

-- Full-text search over subject, description and public comments.
CREATE INDEX tickets_search_idx ON tickets
    USING GIN (to_tsvector('english', subject || ' ' || description));
CREATE INDEX comments_search_idx ON comments
    USING GIN (to_tsvector('english', body)) WHERE NOT internal;
