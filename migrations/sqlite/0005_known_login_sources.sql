-- Account-and-address pairs that logged in successfully lately (stored as the same hash as their
-- throttle key). A login from one is judged by that pair's own failure counter only, so guesses
-- from elsewhere cannot lock the real user out of an account from where they usually log in.
CREATE TABLE known_login_sources (
    key          TEXT PRIMARY KEY,
    last_success TEXT NOT NULL
) STRICT;
CREATE INDEX known_login_sources_last_success_idx ON known_login_sources (last_success);
