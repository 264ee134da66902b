-- Refresh tokens, login throttling shared by every replica, idempotent retries.

-- Refresh tokens are stored only as SHA-256 hashes. Each login starts a family; every refresh
-- uses one token and issues the next in the same family. A used token presented again means it
-- was stolen (or replayed), so the whole family is revoked.
CREATE TABLE refresh_tokens (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash    TEXT        NOT NULL UNIQUE,
    family        UUID        NOT NULL,
    user_id       BIGINT      NOT NULL REFERENCES users (id),
    -- The user's token_version when issued: a password change retires the family too.
    token_version INTEGER     NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    used_at       TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);

-- Failed-login counters, one row per throttled key (an account, a client address, or both).
CREATE TABLE login_throttle (
    key          TEXT        PRIMARY KEY,
    failures     INTEGER     NOT NULL,
    last_attempt TIMESTAMPTZ NOT NULL,
    locked_until TIMESTAMPTZ
);
CREATE INDEX login_throttle_last_attempt_idx ON login_throttle (last_attempt);

-- The first response to each (user, Idempotency-Key), replayed to retries for 24 hours.
CREATE TABLE idempotency_keys (
    user_id     BIGINT      NOT NULL REFERENCES users (id),
    key         TEXT        NOT NULL,
    -- SHA-256 of the operation and its parsed body: the same key with another request is refused.
    fingerprint TEXT        NOT NULL,
    status      SMALLINT    NOT NULL,
    location    TEXT,
    body        TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
