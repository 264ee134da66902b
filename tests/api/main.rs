//! All integration tests, as modules of one binary so the crate links once.

mod helpers;

mod auth;
mod bad_input;
mod embed;
mod openapi;
mod roles;
mod startup;
mod tickets;
mod tokens;
