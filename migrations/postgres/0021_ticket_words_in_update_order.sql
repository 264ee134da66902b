-- Each posting of `ticket_words` (migration 0017) also carries the hour its ticket was last
-- updated, so that a search sorted by update can read a word's matches newest hour first and stop
-- once its page is settled, where it read all of them before. A ticket's postings move when its
-- update time enters a new hour: once per hour a ticket is worked on, not once per write. Within
-- an hour the search ranks what it read by the exact time.
CREATE FUNCTION hour_of(at TIMESTAMPTZ) RETURNS INTEGER LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT floor(extract(epoch FROM at) / 3600)::integer $$;

ALTER TABLE ticket_words ADD COLUMN updated_hour INTEGER;
UPDATE ticket_words w SET updated_hour = hour_of(t.updated_at) FROM tickets t WHERE t.id = w.ticket_id;
ALTER TABLE ticket_words ALTER COLUMN updated_hour SET NOT NULL;
CREATE INDEX ticket_words_in_update_order ON ticket_words (word, updated_hour, ticket_id);

CREATE OR REPLACE FUNCTION ticket_words_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ticket_words (word, ticket_id, updated_hour)
        SELECT word, NEW.id, hour_of(NEW.updated_at) FROM unnest(tsvector_to_array(NEW.search)) AS word
        WHERE TG_OP = 'INSERT' OR NOT word = ANY (tsvector_to_array(OLD.search))
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

-- Words are only ever added to a ticket's document, so its postings are those of its words.
CREATE FUNCTION ticket_words_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ticket_words SET updated_hour = hour_of(NEW.updated_at)
        WHERE word = ANY (tsvector_to_array(NEW.search)) AND ticket_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER ticket_words_on_new_hour AFTER UPDATE OF updated_at ON tickets
    FOR EACH ROW WHEN (hour_of(OLD.updated_at) <> hour_of(NEW.updated_at))
    EXECUTE FUNCTION ticket_words_moved();
