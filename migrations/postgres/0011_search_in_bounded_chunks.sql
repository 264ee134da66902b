-- A ticket's search document stops growing: one ticket's long history may not make anyone's
-- write slower, nor fail (a tsvector holds at most 1 MB). The ticket's own document (subject,
-- description) takes its public comments while they start within the first 8,192 characters of
-- comment text; each later comment goes to the chunk of the next 8,192 characters it starts in,
-- which opens with the subject. A comment then rewrites one bounded document, never the whole
-- history, and the index holds each comment once. A search matches a ticket when its own
-- document or one chunk matches.
ALTER TABLE tickets ADD COLUMN search_length INTEGER NOT NULL DEFAULT 0;

CREATE TABLE ticket_search_chunks (
    ticket_id BIGINT   NOT NULL REFERENCES tickets (id),
    chunk     INTEGER  NOT NULL,
    document  tsvector NOT NULL,
    PRIMARY KEY (ticket_id, chunk)
);
CREATE INDEX ticket_search_chunks_document_idx ON ticket_search_chunks USING GIN (document);

-- Tickets that have public comments, rebuilt as the trigger below would have built them.
CREATE TEMPORARY TABLE placed_comments ON COMMIT DROP AS
    SELECT ticket_id, id, body,
           coalesce(sum(length(body) + 1) OVER (PARTITION BY ticket_id ORDER BY id
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS starts_at
    FROM comments WHERE NOT internal;
UPDATE tickets t SET
    search = to_tsvector('english', t.subject || ' ' || t.description)
        || coalesce((SELECT to_tsvector('english', string_agg(p.body, ' ' ORDER BY p.id))
                     FROM placed_comments p WHERE p.ticket_id = t.id AND p.starts_at < 8192), ''::tsvector),
    search_length = (SELECT sum(length(p.body) + 1) FROM placed_comments p WHERE p.ticket_id = t.id)
WHERE t.id IN (SELECT ticket_id FROM placed_comments);
INSERT INTO ticket_search_chunks (ticket_id, chunk, document)
    SELECT p.ticket_id, p.starts_at / 8192,
           to_tsvector('english', t.subject || ' ' || string_agg(p.body, ' ' ORDER BY p.id))
    FROM placed_comments p JOIN tickets t ON t.id = p.ticket_id
    WHERE p.starts_at >= 8192
    GROUP BY p.ticket_id, p.starts_at / 8192, t.subject;

CREATE OR REPLACE FUNCTION tickets_search_add_comment() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    comment_starts_at INTEGER;
    ticket_subject TEXT;
BEGIN
    UPDATE tickets SET
        search = CASE WHEN search_length < 8192 THEN search || to_tsvector('english', NEW.body) ELSE search END,
        search_length = search_length + length(NEW.body) + 1
    WHERE id = NEW.ticket_id
    RETURNING search_length - length(NEW.body) - 1, subject INTO comment_starts_at, ticket_subject;
    IF comment_starts_at >= 8192 THEN
        INSERT INTO ticket_search_chunks AS c (ticket_id, chunk, document)
        VALUES (NEW.ticket_id, comment_starts_at / 8192, to_tsvector('english', ticket_subject || ' ' || NEW.body))
        ON CONFLICT (ticket_id, chunk) DO UPDATE SET document = c.document || to_tsvector('english', NEW.body);
    END IF;
    RETURN NULL;
END $$;
