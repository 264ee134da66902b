//! Webhooks (admins): where ticket changes are pushed, and what was sent. Deliveries are made
//! by `crate::webhooks`; this is their management.

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Path, Query};
use super::paging::{Page, PageQuery};
use crate::auth::CurrentUser;
use crate::domain::allow;
use crate::domain::{
    DeliveryId, EventType, EventTypes, NewWebhook, User, Webhook, WebhookChange, WebhookId, WebhookSecret,
    WebhookUrl, access,
};
use crate::error::{Error, Result};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
}

fn admins_only(user: &User) -> Result<()> {
    Ok(allow(access::can_manage_webhooks(user), "only admins manage webhooks")?)
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"url": "https://hooks.example.com/ticketdesk",
    "events": ["ticket.created", "ticket.status_changed", "ticket.comment_added"]}))]
struct CreateWebhook {
    /// Where deliveries are POSTed: `http` or `https`, on a public address.
    #[schema(max_length = 2048, format = "uri")]
    url: String,
    /// The event types to deliver; at least one.
    #[schema(min_items = 1)]
    events: Vec<EventType>,
    /// Whether payloads carry the ticket's `embed_token` (default `false`). Anyone holding it can
    /// read the ticket's public status, and a leaky receiver would defeat every rotation.
    #[serde(default)]
    include_embed_token: bool,
}

/// A webhook with its signing secret: only in the answer that makes the secret, which no cache
/// may keep (`Cache-Control: no-store`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": 1, "url": "https://hooks.example.com/ticketdesk",
    "events": ["ticket.created", "ticket.status_changed"], "active": true, "include_embed_token": false,
    "created_at": "2026-07-23T12:30:00Z", "updated_at": "2026-07-23T12:30:00Z",
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwzZ3lK7NvQ4E="}))]
struct WebhookWithSecret {
    #[serde(flatten)]
    webhook: Webhook,
    /// `whsec_` and the base64 of 32 random bytes: the HMAC-SHA256 key of `webhook-signature`.
    /// Shown only now; keep it.
    secret: String,
}

impl IntoResponse for WebhookWithSecret {
    fn into_response(self) -> Response {
        ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(self)).into_response()
    }
}

/// A URL that parses and, unless private networks are allowed, points at public addresses.
async fn checked_url(state: &AppState, raw: &str) -> Result<WebhookUrl> {
    let url = WebhookUrl::parse(raw)?;
    crate::webhooks::check_destination(&url, state.webhooks_may_reach_private_networks).await?;
    Ok(url)
}

/// Register a webhook (admins). Its secret is in this answer only.
///
/// Each event of the chosen types is then POSTed to `url` as JSON `{"type", "timestamp",
/// "data": {"ticket", "event", "comment"}}`, signed the Standard Webhooks way (`webhook-id`,
/// `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`).
/// Any 2xx answer is success; anything else is retried with backoff (`WEBHOOK_RETRY_SECS`).
#[utoipa::path(
    post,
    path = "/webhooks",
    tag = "webhooks",
    request_body = CreateWebhook,
    security(("oauth2" = [])),
    responses(
        (status = 201, description = "Registered; the secret is shown only now", body = WebhookWithSecret,
            headers(
                ("Location" = String, description = "`/webhooks/{id}`"),
                ("Cache-Control" = String, description = "`no-store`: the secret must not be cached"),
            )),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn create_webhook(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(body): Json<CreateWebhook>,
) -> Result<Response> {
    admins_only(&user)?;
    let events = EventTypes::new(body.events)?;
    let url = checked_url(&state, &body.url).await?;
    let secret = WebhookSecret::generate();
    let include_embed_token = body.include_embed_token;
    let new = NewWebhook { url, events, secret: secret.clone(), include_embed_token };
    let webhook = state.store.create_webhook(&new).await?;
    let location = format!("/webhooks/{}", webhook.id);
    let body = WebhookWithSecret { webhook, secret: secret.expose().to_owned() };
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], body).into_response())
}

/// List webhooks by id (admins).
#[utoipa::path(
    get,
    path = "/webhooks",
    tag = "webhooks",
    params(PageQuery),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "Webhooks, by id", body = [Webhook],
            headers(("Link" = String, description = "`<url>; rel=\"next\"` when another page follows"))),
        (status = 400, response = super::docs::BadRequest),
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn list_webhooks(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    uri: Uri,
    Query(query): Query<PageQuery>,
) -> Result<Response> {
    admins_only(&user)?;
    let page = Page::<WebhookId>::from_query(query.limit, query.cursor.as_deref())?;
    let webhooks = state.store.webhooks(page.after, page.fetch()).await?;
    Ok(page.respond(&uri, webhooks, |webhook| webhook.id))
}

async fn existing(state: &AppState, id: WebhookId) -> Result<Webhook> {
    state.store.webhook(id).await?.ok_or(Error::NotFound("webhook not found"))
}

/// One webhook (admins).
#[utoipa::path(
    get,
    path = "/webhooks/{id}",
    tag = "webhooks",
    params(("id" = WebhookId, Path, description = "Webhook id")),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The webhook", body = Webhook),
        super::docs::LookupErrors,
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn get_webhook(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<WebhookId>,
) -> Result<Json<Webhook>> {
    admins_only(&user)?;
    Ok(Json(existing(&state, id).await?))
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"active": false}), min_properties = 1)]
struct UpdateWebhook {
    #[schema(nullable = false, max_length = 2048, format = "uri")]
    #[serde(default, deserialize_with = "super::extract::not_null")]
    url: Option<String>,
    #[schema(nullable = false, min_items = 1)]
    #[serde(default, deserialize_with = "super::extract::not_null")]
    events: Option<Vec<EventType>>,
    /// `false` pauses deliveries: new events are not queued for it, and queued ones wait.
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "super::extract::not_null")]
    active: Option<bool>,
    /// Whether payloads built from now on carry the ticket's `embed_token`.
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "super::extract::not_null")]
    include_embed_token: Option<bool>,
}

/// Change a webhook's URL, event types or whether it is active (admins).
#[utoipa::path(
    patch,
    path = "/webhooks/{id}",
    tag = "webhooks",
    params(("id" = WebhookId, Path, description = "Webhook id")),
    request_body = UpdateWebhook,
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The updated webhook", body = Webhook),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 404, response = super::docs::NotFound),
    )
)]
async fn update_webhook(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<WebhookId>,
    Json(body): Json<UpdateWebhook>,
) -> Result<Json<Webhook>> {
    admins_only(&user)?;
    if body.url.is_none()
        && body.events.is_none()
        && body.active.is_none()
        && body.include_embed_token.is_none()
    {
        return Err(Error::Validation(
            "nothing to change: give url, events, active and/or include_embed_token".into(),
        ));
    }
    let url = match &body.url {
        Some(raw) => Some(checked_url(&state, raw).await?),
        None => None,
    };
    let events = body.events.map(EventTypes::new).transpose()?;
    let change =
        WebhookChange { url, events, active: body.active, include_embed_token: body.include_embed_token };
    Ok(Json(state.store.update_webhook(id, &change).await?))
}

/// Delete a webhook and its delivery log (admins). Deliveries not yet made are dropped.
#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    tag = "webhooks",
    params(("id" = WebhookId, Path, description = "Webhook id")),
    security(("oauth2" = [])),
    responses(
        (status = 204, description = "Deleted"),
        super::docs::LookupErrors,
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn delete_webhook(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<WebhookId>,
) -> Result<StatusCode> {
    admins_only(&user)?;
    state.store.delete_webhook(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace a webhook's secret (admins): attempts from now on are signed with the new one,
/// retries of earlier deliveries included. The new secret is in this answer only.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    params(("id" = WebhookId, Path, description = "Webhook id")),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The webhook with its new secret", body = WebhookWithSecret,
            headers(("Cache-Control" = String, description = "`no-store`: the secret must not be cached"))),
        super::docs::LookupErrors,
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn rotate_secret(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<WebhookId>,
) -> Result<WebhookWithSecret> {
    admins_only(&user)?;
    let secret = WebhookSecret::generate();
    let webhook = state.store.set_webhook_secret(id, &secret).await?;
    Ok(WebhookWithSecret { webhook, secret: secret.expose().to_owned() })
}

/// What was sent to a webhook, newest first (admins): each event's delivery, its attempts, the
/// last status code or error, and when it is tried next or was delivered.
#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = WebhookId, Path, description = "Webhook id"), PageQuery),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "Deliveries, newest first", body = [crate::domain::Delivery],
            headers(("Link" = String, description = "`<url>; rel=\"next\"` when another page follows"))),
        super::docs::LookupErrors,
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn list_deliveries(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<WebhookId>,
    uri: Uri,
    Query(query): Query<PageQuery>,
) -> Result<Response> {
    admins_only(&user)?;
    existing(&state, id).await?;
    let page = Page::<DeliveryId>::from_query(query.limit, query.cursor.as_deref())?;
    let deliveries = state.store.deliveries(id, page.after, page.fetch()).await?;
    Ok(page.respond(&uri, deliveries, |delivery| delivery.id))
}
