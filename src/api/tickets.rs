use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{IdempotencyKeyHeader, Json, Path, Query};
use super::paging::{Page, PageQuery};
use crate::auth::{CurrentUser, VerifiedToken};
use crate::domain::actions::{Precondition, Work};
use crate::domain::allow;
use crate::domain::sla_clock::ClockStatus;
use crate::domain::{
    Comment, CommentBody, Description, NewComment, NewTicket, Priority, Subject, Ticket, TicketEvent,
    TicketId, TicketScope, TicketStatus, User, UserId, access, actions, attachment,
};
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::{ChangeOutcome, SortKey, TicketCursor, TicketQuery, TicketSort, Write};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_ticket, list_tickets))
        // The collection also answers without its trailing slash.
        .route("/tickets", get(list_tickets).post(create_ticket))
        .routes(routes!(my_tickets))
        .routes(routes!(get_ticket, update_ticket))
        .routes(routes!(assign_ticket))
        .routes(routes!(add_comment, list_comments))
        .routes(routes!(list_events))
        .routes(routes!(rotate_embed_token))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"subject": "App crashes on start", "description": "Since the last update the app closes right after the splash screen."}))]
struct CreateTicket {
    /// 1 to 200 characters once surrounding white space is trimmed; no NUL characters.
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^\u0000]*[^\s\u0085\u0000][^\u0000]*$")]
    subject: String,
    /// Up to 10,000 characters; no NUL characters.
    #[schema(max_length = 10000, pattern = r"^[^\u0000]*$")]
    description: String,
    /// How urgent it is for the customer; `normal` if left out.
    #[serde(default)]
    priority: Priority,
    /// Files to send with it: the `token`s of your uploads (`POST /uploads`), at most 10.
    #[serde(default)]
    #[schema(max_items = 10)]
    attachments: Vec<String>,
}

/// Submit a ticket (customers).
#[utoipa::path(
    post,
    path = "/tickets/",
    tag = "tickets",
    params(IdempotencyParam),
    request_body = CreateTicket,
    security(("oauth2" = [])),
    responses(
        (status = 201, description = "Created", body = Ticket,
            headers(("Location" = String, description = "The new ticket's URL, `/tickets/{id}`"))),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn create_ticket(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    idempotency_key: IdempotencyKeyHeader,
    Json(body): Json<CreateTicket>,
) -> Result<impl IntoResponse> {
    actions::may_create(&user)?;
    let key = idempotency_key.for_request(user.id, "POST /tickets/", &body)?;
    let new = NewTicket {
        subject: Subject::parse(&body.subject)?,
        description: Description::parse(body.description)?,
        priority: body.priority,
        created_by: user.id,
        attachments: attachment::parse_upload_tokens(&body.attachments)?,
    };
    let (ticket, replayed) = match state.store.create_ticket(&new, key.as_ref()).await? {
        Write::Written(ticket) => (ticket, false),
        Write::Replayed(ticket) => (ticket, true),
    };
    let location = format!("/tickets/{}", ticket.id);
    Ok(created(replayed, Some(location), Json(ticket.as_seen_by(&user))))
}

/// The `Idempotency-Key` header, as documented on the routes that take it.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
struct IdempotencyParam {
    /// Makes a retry safe: a repeat with the same key and body within 24 hours gets the first
    /// response again (with `Idempotent-Replayed: true`) and creates nothing; the same key with
    /// another body is 422. 1 to 255 visible ASCII characters; a fresh UUID per request is ideal.
    // No example: Swagger UI would pre-fill it, and every try would reuse one key.
    #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,255}$")]
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

/// The 201 to a create, and to its retries with the same `Idempotency-Key`, which are marked.
fn created(replayed: bool, location: Option<String>, body: impl IntoResponse) -> Response {
    let mut response = (StatusCode::CREATED, body).into_response();
    let headers = response.headers_mut();
    if let Some(location) = location.and_then(|l| HeaderValue::try_from(l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Filters, order and page of a ticket listing. All filters combine (AND).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListTickets {
    status: Option<TicketStatus>,
    priority: Option<Priority>,
    /// An agent's user id, or `none` for unassigned tickets.
    // No example: Swagger UI would pre-fill it, and a first listing would silently show only
    // unassigned tickets.
    #[param(value_type = Option<String>, pattern = "^([0-9]+|none)$")]
    assigned_to: Option<String>,
    /// Only tickets submitted by this customer (admins).
    created_by: Option<UserId>,
    /// Only tickets changed at or after this time (RFC 3339; write `+` as `%2B`).
    updated_since: Option<DateTime<Utc>>,
    /// Staff: only tickets whose service targets are, overall, `breached` (any is), `active` (any
    /// runs), `paused` (any waits) or `achieved` (all met).
    #[param(inline)]
    sla_status: Option<ClockStatus>,
    /// Staff: only tickets with a running target due at or before this time (RFC 3339).
    sla_due_before: Option<DateTime<Utc>>,
    /// `created` (default), `updated`, or `sla_due` (staff: when the next target is due; only
    /// tickets with a running target).
    #[param(inline)]
    sort: Option<Sort>,
    /// `desc` (default, newest first) or `asc`.
    #[param(inline)]
    direction: Option<Direction>,
    /// Full-text search over subject, description and public comments (all words must match).
    #[param(max_length = 200)]
    q: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// Where to continue: the `cursor` from the previous page's `Link: rel="next"` header.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Sort {
    Created,
    Updated,
    SlaDue,
}

impl From<Sort> for SortKey {
    fn from(sort: Sort) -> Self {
        match sort {
            Sort::Created => SortKey::Created,
            Sort::Updated => SortKey::Updated,
            Sort::SlaDue => SortKey::SlaDue,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum Direction {
    Asc,
    Desc,
}

impl ListTickets {
    /// The store query for `scope`, checking what the caller may filter by.
    fn into_query(self, user: &User, scope: TicketScope) -> Result<(TicketQuery, Page<TicketCursor>)> {
        if self.created_by.is_some() && !access::can_filter_by_creator(user) {
            return Err(Error::Forbidden("only admins filter by created_by"));
        }
        let by_sla = self.sla_status.is_some()
            || self.sla_due_before.is_some()
            || matches!(self.sort, Some(Sort::SlaDue));
        if by_sla && !access::can_see_service_levels(user) {
            return Err(Error::Forbidden("service targets are for staff"));
        }
        let assignee = match self.assigned_to.as_deref() {
            None => None,
            Some("none") => Some(None),
            Some(id) => Some(Some(id.parse().map_err(|_| {
                Error::BadRequest(format!("assigned_to must be a user id or `none` (got {id:?})"))
            })?)),
        };
        let text = match self.q {
            Some(q) if q.trim().is_empty() || q.chars().count() > 200 || q.contains('\0') => {
                return Err(Error::BadRequest("q must be 1 to 200 characters of text".into()));
            }
            q => q,
        };
        let sort = TicketSort {
            key: self.sort.map_or(SortKey::Created, SortKey::from),
            descending: !matches!(self.direction, Some(Direction::Asc)),
        };
        let page = Page::<TicketCursor>::from_query(self.limit, self.cursor.as_deref())?;
        if page.after.as_ref().is_some_and(|cursor| cursor.sort != sort) {
            return Err(Error::BadRequest(
                "the cursor belongs to another sort order; start again without it".into(),
            ));
        }
        let query = TicketQuery {
            scope,
            status: self.status,
            priority: self.priority,
            assignee,
            created_by: self.created_by,
            updated_since: self.updated_since,
            sla_status: self.sla_status,
            sla_due_before: self.sla_due_before,
            text,
            sort,
            after: page.after.clone(),
            limit: page.fetch(),
        };
        Ok((query, page))
    }
}

async fn list(
    state: &AppState,
    user: &User,
    uri: &Uri,
    params: ListTickets,
    scope: TicketScope,
) -> Result<Response> {
    let (query, page) = params.into_query(user, scope)?;
    let tickets =
        state.store.tickets(&query).await?.into_iter().map(|ticket| ticket.as_seen_by(user)).collect();
    Ok(page.respond(uri, tickets, |ticket| TicketCursor::after(ticket, query.sort)))
}

/// The caller's own tickets, newest first unless sorted otherwise (customers).
///
/// Paged: when more tickets follow, the response carries `Link: <...&cursor=...>; rel="next"`.
#[utoipa::path(
    get,
    path = "/tickets/my",
    tag = "tickets",
    params(ListTickets),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The caller's tickets", body = [Ticket],
            headers(("Link" = String, description = "`<url>; rel=\"next\"` when another page follows"))),
        (status = 400, response = super::docs::BadRequest),
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn my_tickets(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    uri: Uri,
    Query(params): Query<ListTickets>,
) -> Result<Response> {
    allow(access::has_own_tickets(&user), "only customers have tickets of their own; use GET /tickets/")?;
    list(&state, &user, &uri, params, TicketScope::CreatedBy(user.id)).await
}

/// Tickets to work: an agent's assigned tickets, or all of them for an admin; newest first unless
/// sorted otherwise. Customers use `GET /tickets/my`.
///
/// Paged: when more tickets follow, the response carries `Link: <...&cursor=...>; rel="next"`.
#[utoipa::path(
    get,
    path = "/tickets/",
    tag = "tickets",
    params(ListTickets),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "Tickets", body = [Ticket],
            headers(("Link" = String, description = "`<url>; rel=\"next\"` when another page follows"))),
        (status = 400, response = super::docs::BadRequest),
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn list_tickets(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    uri: Uri,
    Query(params): Query<ListTickets>,
) -> Result<Response> {
    let scope = access::listing_scope(&user)
        .ok_or(Error::Forbidden("customers list their tickets with GET /tickets/my"))?;
    list(&state, &user, &uri, params, scope).await
}

/// One ticket: customers see their own, agents those assigned to them, admins all.
#[utoipa::path(
    get,
    path = "/tickets/{id}",
    tag = "tickets",
    params(("id" = TicketId, Path, description = "Ticket id")),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The ticket", body = Ticket,
            headers(("ETag" = String, description = "The ticket's version, for `If-Match` on PATCH"))),
        super::docs::LookupErrors,
    )
)]
async fn get_ticket(
    State(state): State<AppState>,
    token: VerifiedToken,
    Path(id): Path<TicketId>,
) -> Result<TicketWithEtag> {
    // The hottest authenticated read: one database round trip, authentication included (the
    // caller's user row comes back with the ticket), so deactivation still applies at once.
    let (caller, ticket) = state.store.caller_and_ticket(token.user_id, token.session, id).await?;
    let user = token.admit(caller)?;
    let ticket = ticket.ok_or(actions::NOT_FOUND)?;
    actions::visible(&user, &ticket)?;
    Ok(TicketWithEtag(ticket.as_seen_by(&user)))
}

/// The ticket, if the caller may see it; otherwise the same 404 as a missing one.
async fn visible_ticket(state: &AppState, user: &User, id: TicketId) -> Result<Ticket> {
    let ticket = state.store.ticket(id).await?.ok_or(actions::NOT_FOUND)?;
    actions::visible(user, &ticket)?;
    Ok(ticket)
}

/// A single ticket as JSON, with its ETag: the version a client sends back in `If-Match`.
struct TicketWithEtag(Ticket);

impl IntoResponse for TicketWithEtag {
    fn into_response(self) -> Response {
        let etag = etag(&self.0);
        ([(header::ETAG, etag)], Json(self.0)).into_response()
    }
}

/// Changes with every change of the ticket (each moves `updated_at`).
fn etag(ticket: &Ticket) -> String {
    format!("\"{}-{:x}\"", ticket.id, ticket.updated_at.timestamp_micros())
}

/// Whether the request's `If-Match` (if any) names the ticket's current version, judged inside the
/// write's transaction on the locked row, so two agents cannot silently overwrite each other
/// (RFC 9110 §13.1.1: strong comparison, a list of tags, or `*`).
fn precondition(headers: &HeaderMap, current: &Ticket) -> Precondition {
    if super::etag::if_match_holds(headers, &etag(current)) {
        Precondition::Holds
    } else {
        Precondition::Fails
    }
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"status": "in_progress", "priority": "high"}), min_properties = 1)]
struct UpdateTicket {
    /// The next state; see the lifecycle in the route's description.
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "super::extract::not_null")]
    status: Option<TicketStatus>,
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "super::extract::not_null")]
    priority: Option<Priority>,
}

/// Work a ticket: change its status and/or priority (its assigned agent, or an admin).
///
/// Status follows the lifecycle open -> in_progress -> resolved -> closed, with resolved -> open
/// (reopen) and in_progress -> open; in_progress -> pending while waiting on the customer (service
/// clocks pause; the customer's reply puts it back in progress), pending -> in_progress or
/// resolved; admins may close from any state; closed is final. Any other
/// move is a 409 whose detail lists the allowed next states. Setting a field to its current value
/// changes nothing.
#[utoipa::path(
    patch,
    path = "/tickets/{id}",
    tag = "tickets",
    params(("id" = TicketId, Path, description = "Ticket id"), ("If-Match" = Option<String>, Header, description = "Only change the ticket if its ETag is still this one (else 412)"),),
    request_body = UpdateTicket,
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The updated ticket", body = Ticket,
            headers(("ETag" = String, description = "The ticket's new version"))),
        (status = 412, response = super::docs::PreconditionFailed),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 404, response = super::docs::NotFound),
        (status = 409, response = super::docs::Conflict),
    )
)]
async fn update_ticket(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<TicketId>,
    headers: HeaderMap,
    Json(body): Json<UpdateTicket>,
) -> Result<TicketWithEtag> {
    let work = Work::new(body.status, body.priority)?;
    let outcome = state
        .store
        .update_ticket(id, user.id, &|current| {
            actions::work(&user, current, precondition(&headers, current), work)
        })
        .await?;
    Ok(TicketWithEtag(outcome.ticket.as_seen_by(&user)))
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"agent_id": 2}))]
struct AssignTicket {
    /// The id of an active agent (find them with `GET /users?role=agent`), or `null` to unassign.
    #[serde(deserialize_with = "present_or_null")]
    #[schema(value_type = Option<UserId>, required = true)]
    agent_id: Option<UserId>,
}

/// A required field that may be `null`: serde would otherwise read a missing one as `null`, and
/// `{}` would silently unassign. JSON does not tell `2` from `2.0` (the schema's `integer`
/// accepts both), so neither do we.
fn present_or_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<UserId>, D::Error> {
    Option::<super::extract::WholeNumber>::deserialize(deserializer).map(|id| id.map(|id| id.0))
}

/// Assign a ticket to an agent, or unassign it with `null` (admins).
#[utoipa::path(
    patch,
    path = "/tickets/{id}/assign",
    tag = "tickets",
    params(("id" = TicketId, Path, description = "Ticket id"), ("If-Match" = Option<String>, Header, description = "Only change the ticket if its ETag is still this one (else 412)"),),
    request_body = AssignTicket,
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The updated ticket", body = Ticket,
            headers(("ETag" = String, description = "The ticket's new version"))),
        (status = 412, response = super::docs::PreconditionFailed),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 404, response = super::docs::NotFound),
    )
)]
async fn assign_ticket(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<TicketId>,
    headers: HeaderMap,
    Json(body): Json<AssignTicket>,
) -> Result<TicketWithEtag> {
    actions::may_assign(&user)?;
    let outcome = state
        .store
        .update_ticket(id, user.id, &|current| {
            actions::assign(&user, current, precondition(&headers, current), body.agent_id)
        })
        .await?;
    Ok(TicketWithEtag(outcome.ticket.as_seen_by(&user)))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"body": "Could you send the crash log?", "internal": false}))]
struct AddComment {
    /// 1 to 10,000 characters, not blank.
    #[schema(min_length = 1, max_length = 10000, pattern = r"^[^\u0000]*[^\s\u0085\u0000][^\u0000]*$")]
    body: String,
    /// An internal note, hidden from the customer (agents and admins only).
    #[serde(default)]
    internal: bool,
    /// Files to send with it: the `token`s of your uploads (`POST /uploads`), at most 10. On an
    /// internal note they are staff-only too.
    #[serde(default)]
    #[schema(max_items = 10)]
    attachments: Vec<String>,
}

/// Reply on a ticket, or add an internal note (its customer, its agent, admins).
///
/// A customer's reply on a resolved ticket reopens it. Nobody comments on a closed ticket (409).
#[utoipa::path(
    post,
    path = "/tickets/{id}/comments",
    tag = "conversation",
    params(("id" = TicketId, Path, description = "Ticket id"), IdempotencyParam),
    request_body = AddComment,
    security(("oauth2" = [])),
    responses(
        (status = 201, description = "The comment", body = Comment),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 404, response = super::docs::NotFound),
        (status = 409, response = super::docs::Conflict),
    )
)]
async fn add_comment(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<TicketId>,
    idempotency_key: IdempotencyKeyHeader,
    Json(body): Json<AddComment>,
) -> Result<impl IntoResponse> {
    actions::may_comment(&user, body.internal)?;
    let key = idempotency_key.for_request(user.id, &format!("POST /tickets/{id}/comments"), &body)?;
    let comment = NewComment {
        author_id: user.id,
        author_role: user.role,
        body: CommentBody::parse(body.body)?,
        internal: body.internal,
        attachments: attachment::parse_upload_tokens(&body.attachments)?,
    };
    let edit = |current: &Ticket| actions::comment(&user, current, comment.clone());
    let (comment, replayed) = match key {
        Some(key) => match state.store.add_comment_once(id, user.id, &edit, &key).await? {
            Write::Written(outcome) => (added_comment(outcome)?, false),
            Write::Replayed(comment) => (comment, true),
        },
        None => (added_comment(state.store.update_ticket(id, user.id, &edit).await?)?, false),
    };
    Ok(created(replayed, None, Json(comment)))
}

fn added_comment(outcome: ChangeOutcome) -> Result<Comment> {
    outcome.comment.ok_or_else(|| Error::Internal("the comment was not stored".into()))
}

/// A ticket's conversation, oldest first, paged like every listing; customers do not see
/// internal notes.
#[utoipa::path(
    get,
    path = "/tickets/{id}/comments",
    tag = "conversation",
    params(("id" = TicketId, Path, description = "Ticket id"), PageQuery),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "Comments, oldest first", body = [Comment],
            headers(("Link" = String, description = "`<url>; rel=\"next\"` when another page follows"))),
        (status = 400, response = super::docs::BadRequest),
        super::docs::LookupErrors,
    )
)]
async fn list_comments(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<TicketId>,
    uri: Uri,
    Query(query): Query<PageQuery>,
) -> Result<Response> {
    let page = Page::<i64>::from_query(query.limit, query.cursor.as_deref())?;
    let ticket = visible_ticket(&state, &user, id).await?;
    let internal = access::can_see_internal_notes(&user);
    let comments = state.store.comments(ticket.id, internal, page.after, page.fetch()).await?;
    Ok(page.respond(&uri, comments, |comment| comment.id))
}

/// A ticket's history, oldest first: created, assigned/unassigned, status and priority changes,
/// comments, embed token rotations, each with who and when, paged like every listing.
/// Customers do not see internal notes.
#[utoipa::path(
    get,
    path = "/tickets/{id}/events",
    tag = "tickets",
    params(("id" = TicketId, Path, description = "Ticket id"), PageQuery),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "Events, oldest first", body = [TicketEvent],
            headers(("Link" = String, description = "`<url>; rel=\"next\"` when another page follows"))),
        (status = 400, response = super::docs::BadRequest),
        super::docs::LookupErrors,
    )
)]
async fn list_events(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<TicketId>,
    uri: Uri,
    Query(query): Query<PageQuery>,
) -> Result<Response> {
    let page = Page::<i64>::from_query(query.limit, query.cursor.as_deref())?;
    let ticket = visible_ticket(&state, &user, id).await?;
    let internal = access::can_see_internal_notes(&user);
    let events = state.store.events(ticket.id, internal, page.after, page.fetch()).await?;
    Ok(page.respond(&uri, events, |event| event.id))
}

/// Give a ticket a new embed token; the old one answers 404 at once (its customer, or an admin).
#[utoipa::path(
    post,
    path = "/tickets/{id}/embed-token",
    tag = "embed",
    params(("id" = TicketId, Path, description = "Ticket id")),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The ticket with its new embed token", body = Ticket),
        super::docs::LookupErrors,
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn rotate_embed_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<TicketId>,
) -> Result<Json<Ticket>> {
    let outcome = state
        .store
        .update_ticket(id, user.id, &|current| actions::rotate_embed_token(&user, current))
        .await?;
    Ok(Json(outcome.ticket.as_seen_by(&user)))
}
