use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{ClientAddress, Json, Path, Query};
use super::paging::Page;
use crate::auth::CurrentUser;
use crate::domain::allow;
use crate::domain::{NewPassword, NewUser, Role, User, UserChange, UserId, Username, access, throttle};
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::UserFilter;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(change_own_password))
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
    /// Only active (`true`) or deactivated (`false`) users.
    active: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// Where to continue: the `cursor` from the previous page's `Link: rel="next"` header.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// List users by id, e.g. the agents a ticket can be assigned to (admins).
///
/// Paged: when more users follow, the response carries `Link: </users?...&cursor=...>; rel="next"`.
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    params(UsersQuery),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "Users, by id", body = [User],
            headers(("Link" = String, description = "`<url>; rel=\"next\"` when another page follows")),
            example = json!([{"id": 2, "username": "bob", "role": "agent", "active": true}])),
        (status = 400, response = super::docs::BadRequest),
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn list_users(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    uri: Uri,
    Query(query): Query<UsersQuery>,
) -> Result<Response> {
    allow(access::can_manage_users(&user), "only admins list users")?;
    let page = Page::<UserId>::from_query(query.limit, query.cursor.as_deref())?;
    let filter = UserFilter { role: query.role, active: query.active };
    let users = state.store.users(&filter, page.after, page.fetch()).await?;
    Ok(page.respond(&uri, users, |user| user.id))
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"username": "dave", "password": "a long passphrase", "role": "agent"}))]
pub(super) struct CreateUser {
    /// 3 to 64 characters: letters, digits, `.`, `_`, `-`.
    #[schema(min_length = 3, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    pub username: String,
    /// 8 to 128 characters, not a common password, not the username.
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    pub role: Role,
}

/// Add a user (admins).
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    request_body = CreateUser,
    security(("oauth2" = [])),
    responses(
        (status = 201, description = "Created", body = User,
            headers(("Location" = String, description = "`/users/{id}`"))),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 409, response = super::docs::Conflict),
    )
)]
async fn create_user(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(body): Json<CreateUser>,
) -> Result<Response> {
    allow(access::can_manage_users(&user), "only admins add users")?;
    add_user(&state, body.validate()?).await
}

/// A new user whose name and password follow the rules; not stored yet.
pub(super) struct ValidNewUser {
    username: Username,
    password: NewPassword,
    role: Role,
}

impl CreateUser {
    pub(super) fn validate(self) -> Result<ValidNewUser> {
        let username = Username::parse(&self.username)?;
        let password = NewPassword::parse(&self.password, username.as_str())?;
        Ok(ValidNewUser { username, password, role: self.role })
    }
}

/// Stores a new user, hashing the password only once the name is known to be free; answers 201
/// with its Location. Shared with self-registration.
pub(super) async fn add_user(state: &AppState, new: ValidNewUser) -> Result<Response> {
    const TAKEN: &str = "that username is taken";
    if state.store.user_credentials(new.username.as_str()).await?.is_some() {
        return Err(Error::Conflict(TAKEN.into()));
    }
    let new = NewUser {
        username: new.username.as_str().to_owned(),
        password_hash: state.passwords.hash(new.password.as_str()).await?,
        role: new.role,
    };
    // Taken meanwhile: the store's unique index answers the same Conflict.
    let created = state.store.create_user(&new).await?;
    let location = format!("/users/{}", created.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(created)).into_response())
}

/// One user (admins, or the user themself).
#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    params(("id" = UserId, Path, description = "User id")),
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The user", body = User),
        super::docs::LookupErrors,
        (status = 403, response = super::docs::Forbidden),
    )
)]
async fn get_user(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<UserId>,
) -> Result<Json<User>> {
    allow(access::can_look_up_user(&user, id), "only admins look up other users")?;
    state.store.user(id).await?.map(Json).ok_or(Error::NotFound("user not found"))
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"active": false}), min_properties = 1)]
struct UpdateUser {
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "super::extract::not_null")]
    role: Option<Role>,
    /// `false` deactivates: no more logins, and the user's tokens stop working at once.
    #[schema(nullable = false)]
    #[serde(default, deserialize_with = "super::extract::not_null")]
    active: Option<bool>,
}

/// Change a user's role or deactivate/reactivate them (admins). Admins cannot demote or
/// deactivate themselves, so the last admin cannot lock everyone out by mistake.
#[utoipa::path(
    patch,
    path = "/users/{id}",
    tag = "users",
    params(("id" = UserId, Path, description = "User id")),
    request_body = UpdateUser,
    security(("oauth2" = [])),
    responses(
        (status = 200, description = "The updated user", body = User),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 404, response = super::docs::NotFound),
        (status = 409, response = super::docs::Conflict),
    )
)]
async fn update_user(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<UserId>,
    Json(body): Json<UpdateUser>,
) -> Result<Json<User>> {
    allow(access::can_manage_users(&user), "only admins change users")?;
    if body.role.is_none() && body.active.is_none() {
        return Err(Error::Validation("nothing to change: give role and/or active".into()));
    }
    let change = UserChange { role: body.role, active: body.active };
    access::check_user_change(&user, id, &change)?;
    Ok(Json(state.store.update_user(id, &change).await?))
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"current_password": "alice123", "new_password": "a much longer passphrase"}))]
struct ChangePassword {
    current_password: String,
    /// 8 to 128 characters, not a common password, not the username.
    #[schema(min_length = 8, max_length = 128)]
    new_password: String,
}

/// Change your own password. Every token issued before stops working (log in again).
///
/// A wrong `current_password` counts as a failed login for your account from your address, so
/// a stolen access token cannot be used to guess the password faster than logins could (429 with
/// `Retry-After` once locked).
#[utoipa::path(
    put,
    path = "/users/me/password",
    tag = "users",
    request_body = ChangePassword,
    security(("oauth2" = [])),
    responses(
        (status = 204, description = "Changed; log in again with the new password"),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 403, response = super::docs::Forbidden),
        (status = 429, response = super::docs::TooManyRequests),
    )
)]
async fn change_own_password(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddress(address): ClientAddress,
    Json(body): Json<ChangePassword>,
) -> Result<StatusCode> {
    let new_password = NewPassword::parse(&body.new_password, &user.username)?;
    // Counted before the password is checked, exactly as a login is.
    let throttle_keys = throttle::keys_for(&user.username, &address.to_string());
    state.store.admit_login(&throttle_keys).await??;
    let stored = state.store.user_credentials(&user.username).await?.map(|c| c.password_hash);
    if !state.passwords.verify(&body.current_password, stored).await? {
        return Err(Error::Forbidden("current_password is incorrect"));
    }
    let hash = state.passwords.hash(new_password.as_str()).await?;
    state.store.set_password(user.id, &hash, &throttle_keys).await?;
    Ok(StatusCode::NO_CONTENT)
}
