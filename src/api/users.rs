use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::allow;
use super::extract::{Json, Query};
use crate::auth::CurrentUser;
use crate::domain::{Role, User, access};
use crate::error::Result;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me)).routes(routes!(list_users))
}

/// Who the bearer token belongs to.
#[utoipa::path(
    get,
    path = "/users/me",
    tag = "users",
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The caller", body = User),
        (status = 401, response = super::docs::Unauthorized),
    )
)]
async fn me(CurrentUser(user): CurrentUser) -> Json<User> {
    Json(user)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UsersQuery {
    /// Only users with this role, e.g. `agent` to find someone to assign.
    role: Option<Role>,
}

/// List users, e.g. the agents a ticket can be assigned to (admins only).
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    params(UsersQuery),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "Users, by id", body = [User],
            example = json!([{"id": 2, "username": "bob", "role": "agent"}])),
        (status = 400, response = super::docs::BadRequest),
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn list_users(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Query(query): Query<UsersQuery>,
) -> Result<Json<Vec<User>>> {
    allow(access::can_manage_users(&user), "only admins list users")?;
    Ok(Json(state.store.users(query.role).await?))
}
