-- Search reads one stored document per ticket: its subject and description, then each public
-- comment appended as it is added. A listing can then walk tickets newest first and test each
-- row's document as it goes (no parsing per row), or ask the GIN index for a rare word; before,
-- every search collected all matches of two indexes (tickets and comments), then sorted them.
-- Subjects and descriptions are never edited; internal notes never enter the document.
ALTER TABLE tickets ADD COLUMN search tsvector;
UPDATE tickets t SET search = to_tsvector('english', t.subject || ' ' || t.description)
    || coalesce((SELECT to_tsvector('english', string_agg(c.body, ' ' ORDER BY c.id))
                 FROM comments c WHERE c.ticket_id = t.id AND NOT c.internal), ''::tsvector);
ALTER TABLE tickets ALTER COLUMN search SET NOT NULL;

CREATE FUNCTION tickets_search_document() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search := to_tsvector('english', NEW.subject || ' ' || NEW.description);
    RETURN NEW;
END $$;
CREATE TRIGGER tickets_search_on_insert BEFORE INSERT ON tickets
    FOR EACH ROW EXECUTE FUNCTION tickets_search_document();

CREATE FUNCTION tickets_search_add_comment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tickets SET search = search || to_tsvector('english', NEW.body) WHERE id = NEW.ticket_id;
    RETURN NULL;
END $$;
CREATE TRIGGER comments_search_on_insert AFTER INSERT ON comments
    FOR EACH ROW WHEN (NOT NEW.internal) EXECUTE FUNCTION tickets_search_add_comment();

DROP INDEX tickets_search_idx;
DROP INDEX comments_search_idx;
CREATE INDEX tickets_search_idx ON tickets USING GIN (search);
