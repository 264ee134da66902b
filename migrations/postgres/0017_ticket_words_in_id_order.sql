-- Each word (lexeme) of each ticket's own search document, in ticket-id order: a search can read
-- the newest (or oldest) matches of a word and stop, where the GIN index gives all of them or
-- none. A word frequent in old tickets and absent from recent ones then costs a seek, not its
-- whole match list. Subjects and descriptions are never edited and comments only add words, so
-- rows are only ever added; chunks (migration 0011) stay with their own index.
CREATE TABLE ticket_words (
    word      TEXT   NOT NULL,
    ticket_id BIGINT NOT NULL,
    PRIMARY KEY (word, ticket_id)
);

INSERT INTO ticket_words (word, ticket_id)
    SELECT word, id FROM tickets, unnest(tsvector_to_array(search)) AS word;

CREATE FUNCTION ticket_words_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ticket_words (word, ticket_id)
        SELECT word, NEW.id FROM unnest(tsvector_to_array(NEW.search)) AS word
        WHERE TG_OP = 'INSERT' OR NOT word = ANY (tsvector_to_array(OLD.search))
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER ticket_words_on_insert AFTER INSERT ON tickets
    FOR EACH ROW EXECUTE FUNCTION ticket_words_added();
CREATE TRIGGER ticket_words_on_update AFTER UPDATE OF search ON tickets
    FOR EACH ROW WHEN (OLD.search IS DISTINCT FROM NEW.search) EXECUTE FUNCTION ticket_words_added();
