-- Two statements that run with every write were planned anew on every call
-- (pg_stat_statements: as many plans as calls; bench/README.md, "Planned once a connection").
--
-- The statement that queues a ticket event's deliveries: PL/pgSQL keeps a generic plan only if
-- it costs no more than the custom ones so far, and a `created` event's custom plan is cheaper
-- (its constant kind drops the pending probe), so once created events came first, every event
-- was planned again: about a tenth of a write's CPU. Its plan depends on no value worth a plan
-- of its own: it is now planned once per connection. The probe for an earlier pending delivery
-- is now a lookup per webhook that stops at the first one found, where the EXISTS became a
-- hashed subplan reading every pending delivery of the ticket to any webhook. The lookups'
-- settings of migration 0020 are restated: a replaced function loses them.
CREATE OR REPLACE FUNCTION ticket_event_to_webhooks() RETURNS trigger LANGUAGE plpgsql
    SET enable_seqscan = off SET jit = off SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    -- Due now, unless an earlier one for the ticket waits (the ticket's row is locked meanwhile,
    -- and the store locks it too when it finishes a delivery, so none is missed). A ticket's
    -- `created` event is written with the ticket, so none can wait before it (migration 0023).
    INSERT INTO webhook_deliveries (webhook_id, event_id, ticket_id, event_type, next_attempt_at, created_at)
    SELECT w.id, NEW.id, NEW.ticket_id, NEW.event_type,
           CASE WHEN NEW.kind <> 'created' AND (SELECT e.id FROM webhook_deliveries e
                    WHERE e.webhook_id = w.id AND e.ticket_id = NEW.ticket_id AND e.state = 'pending'
                    LIMIT 1) IS NOT NULL
                THEN NULL ELSE NEW.created_at END,
           NEW.created_at
    FROM webhooks w WHERE w.active AND strpos(w.events, ',' || NEW.event_type || ',') > 0;
    -- No NOTIFY: a commit that notifies takes a lock every such commit waits on. The server that
    -- made the change looks at once; the others poll.
    RETURN NULL;
END $$;

-- `hour_of` (migration 0021) called `extract` on a timestamptz, which PostgreSQL marks stable
-- (some fields depend on the time zone): an immutable SQL function calling it is not inlined,
-- so each call ran as a statement of its own, three of them for every ticket write. The epoch of
-- the same instant read as UTC is the same number, from immutable functions only.
CREATE OR REPLACE FUNCTION hour_of(at TIMESTAMPTZ) RETURNS INTEGER LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT floor(extract(epoch FROM at AT TIME ZONE 'UTC') / 3600)::integer $$;
