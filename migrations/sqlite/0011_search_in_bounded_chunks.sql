-- A ticket's search document stops growing: one ticket's long history may not make anyone's
-- write slower (each comment rewrote the ticket's whole FTS row under the single write lock).
-- The ticket's own row takes its public comments while they start within the first 8,192
-- characters of comment text; each later comment goes to the chunk of the next 8,192 characters
-- it starts in, which opens with the subject. A comment then rewrites one bounded row, never the
-- whole history. A search matches a ticket when its own row or one chunk matches.
ALTER TABLE tickets ADD COLUMN search_length INTEGER NOT NULL DEFAULT 0;

CREATE TABLE ticket_search_chunks (
    id        INTEGER PRIMARY KEY,
    ticket_id INTEGER NOT NULL REFERENCES tickets (id),
    chunk     INTEGER NOT NULL,
    body      TEXT    NOT NULL,
    UNIQUE (ticket_id, chunk)
);
-- The chunks hold public text only, so their index may read it from the table.
CREATE VIRTUAL TABLE ticket_search_chunks_fts USING fts5(
    body, content = 'ticket_search_chunks', content_rowid = 'id', tokenize = 'porter unicode61'
);
CREATE TRIGGER ticket_search_chunks_fts_insert AFTER INSERT ON ticket_search_chunks BEGIN
    INSERT INTO ticket_search_chunks_fts (rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER ticket_search_chunks_fts_update AFTER UPDATE ON ticket_search_chunks BEGIN
    INSERT INTO ticket_search_chunks_fts (ticket_search_chunks_fts, rowid, body) VALUES ('delete', old.id, old.body);
    INSERT INTO ticket_search_chunks_fts (rowid, body) VALUES (new.id, new.body);
END;

-- Tickets that have public comments, rebuilt as the trigger below would have built them.
CREATE TEMPORARY TABLE placed_comments AS
    SELECT ticket_id, id, body,
           coalesce(sum(length(body) + 1) OVER (PARTITION BY ticket_id ORDER BY id
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS starts_at
    FROM comments WHERE NOT internal;
UPDATE tickets SET search_length = (SELECT sum(length(body) + 1) FROM placed_comments p WHERE p.ticket_id = tickets.id)
WHERE id IN (SELECT ticket_id FROM placed_comments);
UPDATE tickets_fts SET comments = coalesce(
    (SELECT group_concat(body, ' ' ORDER BY id) FROM placed_comments p WHERE p.ticket_id = tickets_fts.rowid AND p.starts_at < 8192),
    '')
WHERE rowid IN (SELECT ticket_id FROM placed_comments WHERE starts_at >= 8192);
INSERT INTO ticket_search_chunks (ticket_id, chunk, body)
    SELECT p.ticket_id, p.starts_at / 8192, t.subject || ' ' || group_concat(p.body, ' ' ORDER BY p.id)
    FROM placed_comments p JOIN tickets t ON t.id = p.ticket_id
    WHERE p.starts_at >= 8192
    GROUP BY p.ticket_id, p.starts_at / 8192, t.subject;
DROP TABLE placed_comments;

DROP TRIGGER tickets_fts_comment;
CREATE TRIGGER tickets_search_add_comment AFTER INSERT ON comments WHEN NOT new.internal BEGIN
    UPDATE tickets_fts SET comments = comments || ' ' || new.body
        WHERE rowid = new.ticket_id AND (SELECT search_length FROM tickets WHERE id = new.ticket_id) < 8192;
    INSERT INTO ticket_search_chunks (ticket_id, chunk, body)
        SELECT id, search_length / 8192, subject || ' ' || new.body FROM tickets
        WHERE id = new.ticket_id AND search_length >= 8192
        ON CONFLICT (ticket_id, chunk) DO UPDATE SET body = body || ' ' || new.body;
    UPDATE tickets SET search_length = search_length + length(new.body) + 1 WHERE id = new.ticket_id;
END;
