-- A trigger's statements are planned once per connection and kept. Planned while a table is
-- nearly empty, a lookup in it is a sequential scan, and stays one as the table grows, until
-- the table's statistics change (autovacuum, a minute or more later): a ticket's pending
-- deliveries were found by reading every delivery, once per event. These lookups go by an
-- index whatever the table's size when they were planned. (A scan left without an index, as
-- of the few webhooks, is costed high enough with seqscan off to be compiled by JIT on every
-- call: JIT is off for them too.)
ALTER FUNCTION ticket_event_to_webhooks() SET enable_seqscan = off;
ALTER FUNCTION ticket_event_to_webhooks() SET jit = off;
ALTER FUNCTION notify_ticket_change() SET enable_seqscan = off;
ALTER FUNCTION notify_ticket_change() SET jit = off;
ALTER FUNCTION tickets_search_add_comment() SET enable_seqscan = off;
ALTER FUNCTION tickets_search_add_comment() SET jit = off;
