//! Service levels (admins): business calendars, and the SLA policies that count their targets in
//! a calendar's time. Both are replaced whole (`PUT`): a calendar's week or a policy's targets
//! are one thing to an admin, not fields to patch one by one.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Json, Path};
use crate::auth::CurrentUser;
use crate::domain::service_level::{
    Calendar, CalendarId, CalendarInput, SlaPolicy, SlaPolicyId, SlaPolicyInput,
};
use crate::domain::{User, access, allow};
use crate::error::{Error, Result};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_calendars, create_calendar))
        .routes(routes!(get_calendar, replace_calendar, delete_calendar))
        .routes(routes!(list_policies, create_policy))
        .routes(routes!(get_policy, replace_policy, delete_policy))
}

fn admins_only(user: &User) -> Result<()> {
    Ok(allow(access::can_manage_service_levels(user), "only admins manage calendars and SLA policies")?)
}

fn created<T: serde::Serialize>(location: String, body: T) -> Response {
    (StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response()
}

/// Add a business calendar (admins): a time zone, weekly hours (several ranges a day; a range
/// whose end is not after its start runs past midnight) and holidays.
#[utoipa::path(
    post,
    path = "/calendars",
    tag = "service levels",
    request_body = CalendarInput,
    security(("oauth2" = [])),
    responses(
        (status = 201, description = "Created", body = Calendar,
            headers(("Location" = String, description = "`/calendars/{id}`"))),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 409, response = super::docs::Conflict),
    )
)]
async fn create_calendar(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(body): Json<CalendarInput>,
) -> Result<Response> {
    admins_only(&user)?;
    let calendar = state.store.create_calendar(&body.check()?).await?;
    Ok(created(format!("/calendars/{}", calendar.id), calendar))
}

/// Every business calendar, by id (admins).
#[utoipa::path(
    get,
    path = "/calendars",
    tag = "service levels",
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "Calendars, by id", body = [Calendar]),
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn list_calendars(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<Calendar>>> {
    admins_only(&user)?;
    Ok(Json(state.store.calendars().await?))
}

/// One business calendar (admins).
#[utoipa::path(
    get,
    path = "/calendars/{id}",
    tag = "service levels",
    params(("id" = CalendarId, Path, description = "Calendar id")),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The calendar", body = Calendar),
        super::docs::LookupErrors,
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn get_calendar(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<CalendarId>,
) -> Result<Json<Calendar>> {
    admins_only(&user)?;
    Ok(Json(state.store.calendar(id).await?.ok_or(Error::NotFound("calendar not found"))?))
}

/// Replace a business calendar whole (admins). Due times already set keep their instant; the
/// next change of a ticket's clock (a pause, a resume, a priority change) counts in the new hours.
#[utoipa::path(
    put,
    path = "/calendars/{id}",
    tag = "service levels",
    params(("id" = CalendarId, Path, description = "Calendar id")),
    request_body = CalendarInput,
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The calendar as it now is", body = Calendar),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 404, response = super::docs::NotFound),
        (status = 409, response = super::docs::Conflict),
    )
)]
async fn replace_calendar(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<CalendarId>,
    Json(body): Json<CalendarInput>,
) -> Result<Json<Calendar>> {
    admins_only(&user)?;
    Ok(Json(state.store.replace_calendar(id, &body.check()?).await?))
}

/// Delete a business calendar (admins); one a policy uses is refused (409).
#[utoipa::path(
    delete,
    path = "/calendars/{id}",
    tag = "service levels",
    params(("id" = CalendarId, Path, description = "Calendar id")),
    security(("oauth2" = [])),
    responses(
        (status = 204, description = "Deleted"),
        super::docs::LookupErrors,
        (status = 403, response = super::docs::Forbidden),
        (status = 409, response = super::docs::Conflict),
    )
)]
async fn delete_calendar(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<CalendarId>,
) -> Result<StatusCode> {
    admins_only(&user)?;
    state.store.delete_calendar(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add an SLA policy (admins): which tickets (conditions), what is promised (targets in business
/// minutes per metric), in whose time (calendar; none: around the clock), and in which statuses
/// the clocks pause (default `pending`). Policies are tried by ascending position; the first
/// that matches a ticket applies.
#[utoipa::path(
    post,
    path = "/sla-policies",
    tag = "service levels",
    request_body = SlaPolicyInput,
    security(("oauth2" = [])),
    responses(
        (status = 201, description = "Created", body = SlaPolicy,
            headers(("Location" = String, description = "`/sla-policies/{id}`"))),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 409, response = super::docs::Conflict),
    )
)]
async fn create_policy(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(body): Json<SlaPolicyInput>,
) -> Result<Response> {
    admins_only(&user)?;
    let policy = state.store.create_sla_policy(&body.check()?).await?;
    Ok(created(format!("/sla-policies/{}", policy.id), policy))
}

/// Every SLA policy, in the order they are tried (admins).
#[utoipa::path(
    get,
    path = "/sla-policies",
    tag = "service levels",
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "Policies, by position", body = [SlaPolicy]),
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn list_policies(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<SlaPolicy>>> {
    admins_only(&user)?;
    Ok(Json(state.store.sla_policies().await?))
}

/// One SLA policy (admins).
#[utoipa::path(
    get,
    path = "/sla-policies/{id}",
    tag = "service levels",
    params(("id" = SlaPolicyId, Path, description = "Policy id")),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The policy", body = SlaPolicy),
        super::docs::LookupErrors,
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn get_policy(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<SlaPolicyId>,
) -> Result<Json<SlaPolicy>> {
    admins_only(&user)?;
    Ok(Json(state.store.sla_policy(id).await?.ok_or(Error::NotFound("SLA policy not found"))?))
}

/// Replace an SLA policy whole (admins). It applies to tickets that match it from then on;
/// clocks already running keep their due times until the ticket's priority changes.
#[utoipa::path(
    put,
    path = "/sla-policies/{id}",
    tag = "service levels",
    params(("id" = SlaPolicyId, Path, description = "Policy id")),
    request_body = SlaPolicyInput,
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The policy as it now is", body = SlaPolicy),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 404, response = super::docs::NotFound),
        (status = 409, response = super::docs::Conflict),
    )
)]
async fn replace_policy(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<SlaPolicyId>,
    Json(body): Json<SlaPolicyInput>,
) -> Result<Json<SlaPolicy>> {
    admins_only(&user)?;
    Ok(Json(state.store.replace_sla_policy(id, &body.check()?).await?))
}

/// Delete an SLA policy (admins).
#[utoipa::path(
    delete,
    path = "/sla-policies/{id}",
    tag = "service levels",
    params(("id" = SlaPolicyId, Path, description = "Policy id")),
    security(("oauth2" = [])),
    responses(
        (status = 204, description = "Deleted"),
        super::docs::LookupErrors,
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn delete_policy(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<SlaPolicyId>,
) -> Result<StatusCode> {
    admins_only(&user)?;
    state.store.delete_sla_policy(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
