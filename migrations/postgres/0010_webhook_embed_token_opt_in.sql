-- Webhook payloads leave the ticket's embed token out unless the webhook asks for it: a receiver
-- that leaks its payloads would otherwise defeat every rotation of the token.
ALTER TABLE webhooks ADD COLUMN include_embed_token BOOLEAN NOT NULL DEFAULT FALSE;
