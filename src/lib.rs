//! Ticket Management API: customers submit tickets, admins assign them, agents resolve them.
//!
//! `main.rs` only wires these together: [`config`] reads settings, [`store`] opens the database,
//! [`api::router`] builds the HTTP app over an [`state::AppState`].

pub mod api;
pub mod auth;
pub mod background;
pub mod cli;
pub mod clocks;
pub mod config;
pub mod demo;
pub mod domain;
pub mod error;
pub mod files;
pub mod metrics;
pub mod scan;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod webhooks;
