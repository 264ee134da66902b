-- Usernames are unique regardless of case: `Alice` cannot be created beside `alice`, and logins
-- match whatever the case. SQLite cannot raise an error naming the clashing names from here
-- (RAISE takes a fixed message, and only in triggers), so the store checks for them before it
-- runs this migration and refuses with their names (store/sqlite.rs); this index is the backstop.
-- The table's own case-sensitive UNIQUE stays: dropping it means rebuilding the table.
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));
