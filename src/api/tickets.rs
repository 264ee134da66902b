use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tower_http::cors::{Any, CorsLayer};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::allow;
use super::extract::{Json, Path};
use crate::auth::CurrentUser;
use crate::domain::{
    Description, NewTicket, Subject, Ticket, TicketChange, TicketId, TicketScope, TicketStatus, UserId,
    access,
};
use crate::error::{Error, Result};
use crate::state::AppState;

const NOT_FOUND: Error = Error::NotFound("ticket not found");

pub fn router() -> OpenApiRouter<AppState> {
    let embed = OpenApiRouter::new()
        .routes(routes!(embed))
        // Chatbots on any site may read it; it takes no credentials, so no cookie can ride along.
        .layer(CorsLayer::new().allow_origin(Any).allow_methods([axum::http::Method::GET]));
    OpenApiRouter::new()
        .routes(routes!(create_ticket, list_tickets))
        // The collection also answers without its trailing slash.
        .route("/tickets", get(list_tickets).post(create_ticket))
        .routes(routes!(my_tickets))
        .routes(routes!(get_ticket, update_ticket))
        .routes(routes!(assign_ticket))
        .merge(embed)
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"subject": "App crashes on start", "description": "Since the last update the app closes right after the splash screen."}))]
struct CreateTicket {
    /// 1 to 200 characters once surrounding white space is trimmed; no NUL characters.
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000]*[^\s\u0085\u0000][^\u0000]*$")]
    subject: String,
    /// Up to 10,000 characters; no NUL characters.
    #[schema(max_length = 10000, pattern = r"^[^\u0000]*$")]
    description: String,
}

/// Submit a ticket (customers).
#[utoipa::path(
    post,
    path = "/tickets/",
    tag = "tickets",
    request_body = CreateTicket,
    security(("oauth2" = [])),
    responses(
        (status = 201, description = "Created", body = Ticket,
            headers(("Location" = String, description = "The new ticket's URL, `/tickets/{id}`"))),
        (status = 400, response = super::docs::BadRequest),
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 413, response = super::docs::PayloadTooLarge),
        (status = 415, response = super::docs::UnsupportedMediaType),
        (status = 422, response = super::docs::Unprocessable),
    )
)]
async fn create_ticket(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(body): Json<CreateTicket>,
) -> Result<impl IntoResponse> {
    allow(access::can_create_ticket(&user), "only customers submit tickets")?;
    let new = NewTicket {
        subject: Subject::parse(&body.subject).map_err(Error::Validation)?,
        description: Description::parse(body.description).map_err(Error::Validation)?,
        created_by: user.id,
    };
    let ticket = state.store.create_ticket(&new).await?;
    let location = format!("/tickets/{}", ticket.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(ticket)))
}

/// The caller's own tickets, newest first (customers).
#[utoipa::path(
    get,
    path = "/tickets/my",
    tag = "tickets",
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The caller's tickets, newest first", body = [Ticket]),
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn my_tickets(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<Ticket>>> {
    allow(access::can_create_ticket(&user), "only customers have tickets of their own; use GET /tickets/")?;
    Ok(Json(state.store.tickets(TicketScope::CreatedBy(user.id)).await?))
}

/// Tickets to work: an agent's assigned tickets, or all of them for an admin; newest first.
#[utoipa::path(
    get,
    path = "/tickets/",
    tag = "tickets",
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "Tickets, newest first", body = [Ticket]),
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn list_tickets(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<Ticket>>> {
    let scope = access::listing_scope(&user)
        .ok_or(Error::Forbidden("customers list their tickets with GET /tickets/my"))?;
    Ok(Json(state.store.tickets(scope).await?))
}

/// One ticket: customers see their own, agents those assigned to them, admins all.
#[utoipa::path(
    get,
    path = "/tickets/{id}",
    tag = "tickets",
    params(("id" = TicketId, Path, description = "Ticket id")),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The ticket", body = Ticket),
        (status = 400, response = super::docs::BadRequest),
        (status = 401, response = super::docs::Unauthorized),
        (status = 404, response = super::docs::NotFound),
    )
)]
async fn get_ticket(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<TicketId>,
) -> Result<Json<Ticket>> {
    let ticket = state.store.ticket(id).await?;
    ticket.filter(|ticket| access::can_view(&user, ticket)).map(Json).ok_or(NOT_FOUND)
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"status": "resolved"}))]
struct UpdateTicket {
    status: TicketStatus,
}

/// Change a ticket's status (its assigned agent, or an admin).
#[utoipa::path(
    patch,
    path = "/tickets/{id}",
    tag = "tickets",
    params(("id" = TicketId, Path, description = "Ticket id")),
    request_body = UpdateTicket,
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The updated ticket", body = Ticket),
        (status = 400, response = super::docs::BadRequest),
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 404, response = super::docs::NotFound),
        (status = 413, response = super::docs::PayloadTooLarge),
        (status = 415, response = super::docs::UnsupportedMediaType),
        (status = 422, response = super::docs::Unprocessable),
    )
)]
async fn update_ticket(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<TicketId>,
    Json(body): Json<UpdateTicket>,
) -> Result<Json<Ticket>> {
    let ticket = state
        .store
        .update_ticket(id, &|current| {
            if !access::can_view(&user, current) {
                return Err(NOT_FOUND);
            }
            allow(
                access::can_change_status(&user, current),
                "only the assigned agent or an admin changes a ticket's status",
            )?;
            Ok(TicketChange { status: Some(body.status), ..TicketChange::default() })
        })
        .await?;
    Ok(Json(ticket))
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"agent_id": 2}))]
struct AssignTicket {
    /// The id of an agent (find them with `GET /users?role=agent`).
    agent_id: UserId,
}

/// Assign a ticket to an agent (admins).
#[utoipa::path(
    patch,
    path = "/tickets/{id}/assign",
    tag = "tickets",
    params(("id" = TicketId, Path, description = "Ticket id")),
    request_body = AssignTicket,
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The updated ticket", body = Ticket),
        (status = 400, response = super::docs::BadRequest),
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 404, response = super::docs::NotFound),
        (status = 413, response = super::docs::PayloadTooLarge),
        (status = 415, response = super::docs::UnsupportedMediaType),
        (status = 422, response = super::docs::Unprocessable),
    )
)]
async fn assign_ticket(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<TicketId>,
    Json(body): Json<AssignTicket>,
) -> Result<Json<Ticket>> {
    allow(access::can_assign(&user), "only admins assign tickets")?;
    let change = TicketChange { assign_to: Some(body.agent_id), ..TicketChange::default() };
    let ticket = state.store.update_ticket(id, &|_| Ok(change.clone())).await?;
    Ok(Json(ticket))
}

/// All a chatbot may show about a ticket; nothing about its people or its text.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "subject": "App crashes on start",
    "status": "In Progress",
    "last_updated": "2026-07-23T12:30:00Z",
    "link": "https://support.example.com/tickets/9f40cb91-6a0e-4b7e-9d3c-2f1e5a7b8c90"
}))]
struct EmbedView {
    subject: String,
    /// Human label: Open, In Progress, Resolved or Closed.
    status: &'static str,
    last_updated: DateTime<Utc>,
    link: String,
}

/// A ticket's public status, for chatbots: no login, the embed token is the key.
#[utoipa::path(
    get,
    path = "/tickets/embed/{token}",
    tag = "embed",
    params(("token" = Uuid, Path, description = "The ticket's embed token")),
    responses(
        (status = 200, description = "The ticket's public status", body = EmbedView),
        (status = 404, response = super::docs::NotFound),
    )
)]
async fn embed(State(state): State<AppState>, Path(token): Path<String>) -> Result<Json<EmbedView>> {
    // A malformed token is as unknown as a well-formed one that matches nothing.
    let token = Uuid::parse_str(&token).map_err(|_| NOT_FOUND)?;
    let ticket = state.store.ticket_by_embed_token(token).await?.ok_or(NOT_FOUND)?;
    Ok(Json(EmbedView {
        subject: ticket.subject,
        status: ticket.status.label(),
        last_updated: ticket.updated_at,
        link: state.links.ticket(ticket.embed_token),
    }))
}
