use std::sync::Arc;

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;

use crate::auth::{JwtKeys, Passwords};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// What every handler can reach. Cloned for every request, so it is one `Arc`: a clone is one
/// atomic increment, whatever it holds.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for Arc<dyn Store> {
    fn from_ref(state: &AppState) -> Self {
        state.store.clone()
    }
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

pub struct Shared {
    pub store: Arc<dyn Store>,
    pub jwt: Arc<JwtKeys>,
    pub passwords: Passwords,
    pub links: EmbedLinks,
    /// Whether `POST /auth/register` lets anyone sign up as a customer.
    pub self_registration: bool,
    pub metrics: Arc<Metrics>,
    /// How long a request may take, body included, before it is answered 408.
    pub request_timeout: std::time::Duration,
    pub refresh_token_ttl: std::time::Duration,
    /// Proxies trusted to name the client in `X-Forwarded-For`.
    pub trusted_proxies: Arc<[std::net::IpAddr]>,
    /// Origins allowed to call the API from a browser page.
    pub cors_allowed_origins: Arc<[String]>,
    /// Live embed streams open, in all and per client address.
    pub embed_streams: Arc<crate::server::Budget>,
    /// How long a live embed stream lasts before the server ends it.
    pub embed_stream_max_lifetime: std::time::Duration,
    /// Whether webhooks may point at non-public addresses.
    pub webhooks_may_reach_private_networks: bool,
    /// Where attachments' bytes are kept.
    pub files: crate::files::Files,
    pub attachments: crate::config::AttachmentSettings,
    /// Uploads being sent, per user.
    pub upload_slots: crate::files::UploadSlots,
    /// Cancelled when the server stops: live embed streams end at once, so they do not hold the
    /// stop up (their clients reconnect elsewhere).
    pub shutdown: CancellationToken,
}

impl AppState {
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        files: crate::files::Files,
        shutdown: CancellationToken,
    ) -> Self {
        let passwords = Passwords::for_this_machine(config.password_hash_queue);
        let metrics = Arc::new(Metrics::new(passwords.metrics(), config.embed_streams_max));
        Self(Arc::new(Shared {
            store,
            jwt: Arc::new(JwtKeys::new(config.jwt_secret.bytes(), config.access_token_ttl)),
            metrics,
            passwords,
            links: EmbedLinks { public_base_url: config.public_base_url.clone().into() },
            self_registration: config.self_registration,
            request_timeout: config.request_timeout,
            refresh_token_ttl: config.refresh_token_ttl,
            trusted_proxies: config.trusted_proxies.clone().into(),
            cors_allowed_origins: config.cors_allowed_origins.clone().into(),
            embed_streams: crate::server::Budget::new(
                config.embed_streams_max,
                config.embed_streams_per_client,
            ),
            embed_stream_max_lifetime: config.embed_stream_max_lifetime,
            webhooks_may_reach_private_networks: config.webhooks.allow_private_networks,
            files,
            attachments: config.attachments.clone(),
            upload_slots: crate::files::UploadSlots::new(config.attachments.in_flight_per_user),
            shutdown,
        }))
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
