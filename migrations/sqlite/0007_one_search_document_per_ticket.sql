-- Search reads one FTS5 row per ticket (rowid = ticket id): its subject, its description and its
-- public comments, each appended as it is added. Before, comments had an index of their own,
-- keyed by comment, so a search had to collect every match of both and sort them. The table
-- keeps its own copy of the text, so no rebuild can pull internal notes in.
DROP TRIGGER tickets_fts_insert;
DROP TRIGGER tickets_fts_update;
DROP TRIGGER comments_fts_insert;
DROP TABLE tickets_fts;
DROP TABLE comments_fts;

CREATE VIRTUAL TABLE tickets_fts USING fts5(subject, description, comments, tokenize = 'porter unicode61');
INSERT INTO tickets_fts (rowid, subject, description, comments)
    SELECT t.id, t.subject, t.description,
           coalesce((SELECT group_concat(c.body, ' ') FROM comments c WHERE c.ticket_id = t.id AND NOT c.internal), '')
    FROM tickets t;
CREATE TRIGGER tickets_fts_insert AFTER INSERT ON tickets BEGIN
    INSERT INTO tickets_fts (rowid, subject, description, comments) VALUES (new.id, new.subject, new.description, '');
END;
CREATE TRIGGER tickets_fts_comment AFTER INSERT ON comments WHEN NOT new.internal BEGIN
    UPDATE tickets_fts SET comments = comments || ' ' || new.body WHERE rowid = new.ticket_id;
END;
