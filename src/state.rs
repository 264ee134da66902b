use std::sync::Arc;

use axum::extract::FromRef;

use crate::auth::{JwtKeys, Passwords};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// What every handler can reach. Cheap to clone: all shared behind `Arc`s.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub jwt: Arc<JwtKeys>,
    pub passwords: Passwords,
    pub links: EmbedLinks,
    /// Whether `POST /auth/register` lets anyone sign up as a customer.
    pub self_registration: bool,
    pub metrics: Arc<Metrics>,
    /// How long a request may take, body included, before it is answered 408.
    pub request_timeout: std::time::Duration,
    #[from_ref(skip)]
    pub refresh_token_ttl: std::time::Duration,
    /// Proxies trusted to name the client in `X-Forwarded-For`.
    #[from_ref(skip)]
    pub trusted_proxies: Arc<[std::net::IpAddr]>,
    /// Origins allowed to call the API from a browser page.
    #[from_ref(skip)]
    pub cors_allowed_origins: Arc<[String]>,
}

impl AppState {
    pub fn new(config: &Config, store: Arc<dyn Store>) -> Self {
        let passwords = Passwords::for_this_machine(config.password_hash_queue);
        Self {
            store,
            jwt: Arc::new(JwtKeys::new(config.jwt_secret.bytes(), config.access_token_ttl)),
            metrics: Arc::new(Metrics::new(passwords.metrics())),
            passwords,
            links: EmbedLinks { public_base_url: config.public_base_url.clone().into() },
            self_registration: config.self_registration,
            request_timeout: config.request_timeout,
            refresh_token_ttl: config.refresh_token_ttl,
            trusted_proxies: config.trusted_proxies.clone().into(),
            cors_allowed_origins: config.cors_allowed_origins.clone().into(),
        }
    }
}

/// Builds the public links the embed endpoint hands out.
#[derive(Clone)]
pub struct EmbedLinks {
    public_base_url: Arc<str>,
}

impl EmbedLinks {
    pub fn ticket(&self, embed_token: uuid::Uuid) -> String {
        format!("{}/tickets/{embed_token}", self.public_base_url)
    }
}
