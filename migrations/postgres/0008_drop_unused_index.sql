-- Idempotency keys are purged per user (WHERE user_id = ... AND created_at < ...), which the
-- primary key (user_id, key) serves; no query reads this index, and every claim had to write it.
DROP INDEX idempotency_keys_created_at_idx;
