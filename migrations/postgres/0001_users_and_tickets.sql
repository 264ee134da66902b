-- Users and tickets. Roles and statuses are CHECK-constrained text: readable in psql, and
-- new values need no ALTER TYPE outside a transaction.

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT        NOT NULL UNIQUE CHECK (char_length(username) BETWEEN 1 AND 64),
    password_hash TEXT        NOT NULL,
    role          TEXT        NOT NULL CHECK (role IN ('customer', 'agent', 'admin')),
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE tickets (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject     TEXT        NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 200),
    description TEXT        NOT NULL CHECK (char_length(description) <= 10000),
    status      TEXT        NOT NULL DEFAULT 'open'
                            CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    created_by  BIGINT      NOT NULL REFERENCES users (id),
    assigned_to BIGINT      REFERENCES users (id),
    embed_token UUID        NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- "My tickets" and "assigned to me", newest first.
CREATE INDEX tickets_created_by_id_idx ON tickets (created_by, id DESC);
CREATE INDEX tickets_assigned_to_id_idx ON tickets (assigned_to, id DESC) WHERE assigned_to IS NOT NULL;
