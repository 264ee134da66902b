-- Usernames are unique regardless of case: `Alice` cannot be created beside `alice`, and logins
-- match whatever the case. A database that already holds names differing only in case cannot be
-- migrated until someone decides which account keeps its name: this migration refuses, naming them.
DO $$
DECLARE
    clashes TEXT;
BEGIN
    SELECT string_agg(names, '; ' ORDER BY names) INTO clashes
    FROM (SELECT string_agg(username || ' (id ' || id || ')', ', ' ORDER BY username) AS names
          FROM users GROUP BY lower(username) HAVING count(*) > 1) AS same_name;
    IF clashes IS NOT NULL THEN
        RAISE EXCEPTION 'usernames must be unique regardless of case, but these differ only in case: %; rename all but one of each (UPDATE users SET username = ... WHERE id = ...), then start the server again', clashes;
    END IF;
END $$;

CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));
-- The case-sensitive constraint is implied by the new one.
ALTER TABLE users DROP CONSTRAINT users_username_key;
