//! All integration tests, as modules of one binary so the crate links once.

mod helpers;

mod attachments;
mod auth;
mod bad_input;
mod clamd;
mod conversation;
mod embed;
mod finding;
mod hardening;
mod history;
mod hostile;
mod idempotency;
mod lifecycle;
mod logs;
mod openapi;
mod operations;
mod outage;
mod people;
mod roles;
mod round_trips;
mod s3;
mod service_levels;
mod serving;
mod sessions;
mod sla;
mod startup;
mod streams;
mod throttling;
mod tickets;
mod tokens;
mod webhooks;
