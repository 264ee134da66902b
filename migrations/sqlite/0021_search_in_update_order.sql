-- A second FTS5 index of each ticket's document, the same columns and text as `tickets_fts` (so
-- it matches what that one matches), keyed by the hour its ticket was last updated, then its id:
-- rowid = hour << 32 | id. A search sorted by update reads a word's matches newest hour first and
-- stops once its page is settled, where it read all of them before. A ticket's row moves when its
-- update time enters a new hour: once per hour a ticket is worked on, not once per write. Within
-- an hour the search ranks what it read by the exact time. The index is contentless: to remove a
-- row, FTS5 is given its text again, read from `tickets_fts`.
CREATE VIRTUAL TABLE tickets_fts_by_update USING fts5(
    subject, description, comments, content = '', tokenize = 'porter unicode61'
);

CREATE VIEW tickets_by_update_documents AS
    SELECT t.id AS ticket_id, t.search_length, ((unixepoch(t.updated_at) / 3600) << 32) | t.id AS key,
           f.subject, f.description, f.comments
    FROM tickets t JOIN tickets_fts f ON f.rowid = t.id;

INSERT INTO tickets_fts_by_update (rowid, subject, description, comments)
    SELECT key, subject, description, comments FROM tickets_by_update_documents;

-- `tickets_fts` gets the same text by another trigger, which may run after this one.
CREATE TRIGGER tickets_by_update_insert AFTER INSERT ON tickets BEGIN
    INSERT INTO tickets_fts_by_update (rowid, subject, description, comments)
        VALUES (((unixepoch(new.updated_at) / 3600) << 32) | new.id, new.subject, new.description, '');
END;

CREATE TRIGGER tickets_by_update_new_hour AFTER UPDATE OF updated_at ON tickets
    WHEN unixepoch(old.updated_at) / 3600 <> unixepoch(new.updated_at) / 3600 BEGIN
    INSERT INTO tickets_fts_by_update (tickets_fts_by_update, rowid, subject, description, comments)
        SELECT 'delete', ((unixepoch(old.updated_at) / 3600) << 32) | old.id, subject, description, comments
        FROM tickets_by_update_documents WHERE ticket_id = new.id;
    INSERT INTO tickets_fts_by_update (rowid, subject, description, comments)
        SELECT key, subject, description, comments FROM tickets_by_update_documents WHERE ticket_id = new.id;
END;

-- Migration 0011's trigger, with the comment's words added to the index by update too.
DROP TRIGGER tickets_search_add_comment;
CREATE TRIGGER tickets_search_add_comment AFTER INSERT ON comments WHEN NOT new.internal BEGIN
    INSERT INTO tickets_fts_by_update (tickets_fts_by_update, rowid, subject, description, comments)
        SELECT 'delete', key, subject, description, comments FROM tickets_by_update_documents
        WHERE ticket_id = new.ticket_id AND search_length < 8192;
    UPDATE tickets_fts SET comments = comments || ' ' || new.body
        WHERE rowid = new.ticket_id AND (SELECT search_length FROM tickets WHERE id = new.ticket_id) < 8192;
    INSERT INTO tickets_fts_by_update (rowid, subject, description, comments)
        SELECT key, subject, description, comments FROM tickets_by_update_documents
        WHERE ticket_id = new.ticket_id AND search_length < 8192;
    INSERT INTO ticket_search_chunks (ticket_id, chunk, body)
        SELECT id, search_length / 8192, subject || ' ' || new.body FROM tickets
        WHERE id = new.ticket_id AND search_length >= 8192
        ON CONFLICT (ticket_id, chunk) DO UPDATE SET body = body || ' ' || new.body;
    UPDATE tickets SET search_length = search_length + length(new.body) + 1 WHERE id = new.ticket_id;
END;
