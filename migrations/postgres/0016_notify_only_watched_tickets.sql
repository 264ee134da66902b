-- Live embed streams: a server records each ticket its streams follow here (renewed while they
-- do, lapsing after), and a ticket's change is announced only when some server watches it. A
-- NOTIFY makes its commit take a lock every notifying commit waits on, so writes to tickets no
-- stream follows, nearly all of them, no longer pay for one.
CREATE TABLE embed_watches (
    ticket_id  BIGINT      PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE OR REPLACE FUNCTION notify_ticket_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM embed_watches WHERE ticket_id = NEW.id) THEN
        PERFORM pg_notify('ticketdesk_tickets', NEW.id::text);
    END IF;
    RETURN NULL;
END $$;
