use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{ClientAddress, Form, Json};
use crate::auth::{RefreshSecret, hash_refresh_token};
use crate::domain::{NewRefreshToken, Role, User, throttle};
use crate::error::{Error, Result};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(register))
}

/// OAuth2 password grant form (RFC 6749 §4.3). `grant_type` may be left out; other fields that
/// OAuth2 clients send (client_id, scope) are ignored.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"username": "alice", "password": "alice123"}))]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    grant_type: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
    "token_type": "bearer",
    "expires_in": 1800,
    "refresh_token": "p3Xq0w8bV1sZ1cRz8mJ0c2t9Hk4uQm7yLr5aTe6fWgI",
    "refresh_expires_in": 1209600
}))]
struct TokenResponse {
    access_token: String,
    /// Always `bearer`.
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
    /// Single use: `POST /auth/refresh` trades it for new tokens. Keep it secret; a copy used
    /// after the original revokes the whole session.
    refresh_token: String,
    /// Seconds until the refresh token expires if unused.
    refresh_expires_in: u64,
}

/// A refresh token, to rotate (`/auth/refresh`) or revoke (`/auth/logout`).
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"refresh_token": "p3Xq0w8bV1sZ1cRz8mJ0c2t9Hk4uQm7yLr5aTe6fWgI"}))]
struct RefreshRequest {
    refresh_token: String,
}

/// The token response: a new access token for `user` in `session`, and `refresh`, already stored.
fn issue_tokens(
    state: &AppState,
    user: &User,
    session: uuid::Uuid,
    refresh: RefreshSecret,
) -> Result<impl IntoResponse + use<>> {
    let access = state.jwt.issue(user, session)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        Json(TokenResponse {
            access_token: access.token,
            token_type: "bearer",
            expires_in: access.expires_in,
            refresh_token: refresh.token,
            refresh_expires_in: state.refresh_token_ttl.as_secs(),
        }),
    ))
}

fn refresh_expiry(state: &AppState) -> Result<chrono::DateTime<chrono::Utc>> {
    chrono::TimeDelta::from_std(state.refresh_token_ttl)
        .map(|ttl| chrono::Utc::now() + ttl)
        .map_err(|e| Error::Internal(format!("refresh token lifetime: {e}")))
}

/// Log in with a username and password; get an access token and a refresh token.
///
/// Wrong passwords and unknown usernames get the same answer, in the same time. Repeated failures
/// for one account, from one address, or both, are refused for a while (429 with `Retry-After`,
/// doubling up to 15 minutes; an account alone is never locked for more than 30 seconds).
#[utoipa::path(
    post,
    path = "/auth/token",
    tag = "auth",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Logged in", body = TokenResponse,
            headers(("Cache-Control" = String, description = "`no-store`: tokens must not be cached"))),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
        (status = 429, response = super::docs::TooManyRequests),
    )
)]
async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Form(form): Form<LoginForm>,
) -> Result<impl IntoResponse> {
    if form.grant_type.as_deref().is_some_and(|grant| grant != "password") {
        return Err(Error::BadRequest("grant_type must be `password`".into()));
    }
    // Counted before the password is checked, so a burst of parallel guesses is counted too,
    // and a locked key costs no hashing.
    let throttle_keys = throttle::keys_for(&form.username, &address.to_string());
    state.store.admit_login(&throttle_keys).await??;
    let credentials = state.store.user_credentials(&form.username).await?;
    let stored_hash = credentials.as_ref().map(|c| c.password_hash.clone());
    let user = match (state.passwords.verify(&form.password, stored_hash).await?, credentials) {
        // A deactivated account gets the same answer as a wrong password: nothing to probe.
        (true, Some(credentials)) if credentials.user.active => credentials.user,
        _ => {
            state.metrics.login_failed();
            return Err(Error::Unauthorized {
                detail: "incorrect username or password",
                invalid_token: false,
            });
        }
    };
    let refresh = RefreshSecret::generate();
    let session = NewRefreshToken {
        token_hash: refresh.hash.clone(),
        family: uuid::Uuid::new_v4(),
        user_id: user.id,
        token_version: user.token_version,
        expires_at: refresh_expiry(&state)?,
    };
    state.store.start_session(&throttle_keys, &session).await?;
    tracing::info!(user_id = user.id, "logged in");
    issue_tokens(&state, &user, session.family, refresh)
}

/// Trade a refresh token for a new access token and a new refresh token.
///
/// Each refresh token works once. Presenting one that was already used revokes its whole session
/// (every token descended from the same login): someone else holds a copy.
#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens; the refresh token sent is now used up", body = TokenResponse,
            headers(("Cache-Control" = String, description = "`no-store`: tokens must not be cached"))),
        super::docs::BodyErrors,
        (status = 401, response = super::docs::Unauthorized),
    )
)]
async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<impl IntoResponse> {
    let next = RefreshSecret::generate();
    let (user, session) = state
        .store
        .rotate_refresh_token(&hash_refresh_token(&body.refresh_token), &next.hash, refresh_expiry(&state)?)
        .await?
        .ok_or(Error::Unauthorized {
            detail: "the refresh token is invalid, expired or revoked; log in again",
            invalid_token: false,
        })?;
    issue_tokens(&state, &user, session, next)
}

/// Log out: revoke the session the refresh token belongs to.
///
/// Its refresh tokens and the access tokens issued in it stop working at once. Unknown tokens are
/// accepted silently, as RFC 7009 asks.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "The session is revoked"),
        super::docs::BodyErrors,
    )
)]
async fn logout(State(state): State<AppState>, Json(body): Json<RefreshRequest>) -> Result<StatusCode> {
    state.store.revoke_refresh_family(&hash_refresh_token(&body.refresh_token)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"username": "dave", "password": "a long passphrase"}))]
struct Registration {
    #[schema(min_length = 3, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")]
    username: String,
    #[schema(min_length = 8, max_length = 128)]
    password: String,
}

/// Sign up as a customer, when the server allows it (`SELF_REGISTRATION=true`; off by default).
///
/// Every sign-up counts against the client's address as a failed login from there would, so this
/// route tells whether names are taken no faster than logins could (429 with `Retry-After` once
/// the address is locked).
#[utoipa::path(
    post,
    path = "/auth/register",
    tag = "auth",
    request_body = Registration,
    responses(
        (status = 201, description = "Registered; log in with POST /auth/token", body = crate::domain::User,
            headers(("Location" = String, description = "`/users/{id}`"))),
        super::docs::BodyErrors,
        (status = 403, response = super::docs::Forbidden),
        (status = 409, response = super::docs::Conflict),
        (status = 429, response = super::docs::TooManyRequests),
    )
)]
async fn register(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Json(body): Json<Registration>,
) -> Result<axum::response::Response> {
    if !state.self_registration {
        return Err(Error::Forbidden("self-registration is disabled on this server"));
    }
    let new =
        super::users::CreateUser { username: body.username, password: body.password, role: Role::Customer }
            .validate()?;
    // Counted before the name is looked up, and never taken back.
    state.store.admit_login(&throttle::sign_up_keys(&address.to_string())).await??;
    super::users::add_user(&state, new).await
}
