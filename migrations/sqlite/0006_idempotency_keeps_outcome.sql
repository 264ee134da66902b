-- A keyed write keeps what it created (the ticket or the comment, as JSON), no longer an HTTP
-- response: the API answers a retry from it as it answered the first request. The bodies stored
-- so far are exactly those JSON documents, so they carry over; status and location are derived.
ALTER TABLE idempotency_keys DROP COLUMN status;
ALTER TABLE idempotency_keys DROP COLUMN location;
ALTER TABLE idempotency_keys RENAME COLUMN body TO outcome;
