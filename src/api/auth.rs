use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Form, Json};
use crate::domain::Role;
use crate::error::{Error, Result};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login)).routes(routes!(register))
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
#[schema(example = json!({"access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...", "token_type": "bearer", "expires_in": 1800}))]
struct TokenResponse {
    access_token: String,
    /// Always `bearer`.
    token_type: &'static str,
    /// Seconds until the token expires.
    expires_in: u64,
}

/// Log in with a username and password; get a bearer token.
///
/// Wrong passwords and unknown usernames get the same answer, in the same time.
#[utoipa::path(
    post,
    path = "/auth/token",
    tag = "auth",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Logged in", body = TokenResponse,
            headers(("Cache-Control" = String, description = "`no-store`: tokens must not be cached"))),
        (status = 400, response = super::docs::BadRequest),
        (status = 401, response = super::docs::Unauthorized),
        (status = 413, response = super::docs::PayloadTooLarge),
        (status = 415, response = super::docs::UnsupportedMediaType),
        (status = 422, response = super::docs::Unprocessable),
    )
)]
async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Result<impl IntoResponse> {
    if form.grant_type.as_deref().is_some_and(|grant| grant != "password") {
        return Err(Error::BadRequest("grant_type must be `password`".into()));
    }
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
    let token = state.jwt.issue(&user)?;
    tracing::info!(user_id = user.id, "logged in");
    Ok((
        [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        Json(TokenResponse { access_token: token.token, token_type: "bearer", expires_in: token.expires_in }),
    ))
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
#[utoipa::path(
    post,
    path = "/auth/register",
    tag = "auth",
    request_body = Registration,
    responses(
        (status = 201, description = "Registered; log in with POST /auth/token", body = crate::domain::User,
            headers(("Location" = String, description = "`/users/{id}`"))),
        (status = 400, response = super::docs::BadRequest),
        (status = 403, response = super::docs::Forbidden),
        (status = 409, response = super::docs::Conflict),
        (status = 413, response = super::docs::PayloadTooLarge),
        (status = 415, response = super::docs::UnsupportedMediaType),
        (status = 422, response = super::docs::Unprocessable),
    )
)]
async fn register(
    State(state): State<AppState>,
    Json(body): Json<Registration>,
) -> Result<axum::response::Response> {
    if !state.self_registration {
        return Err(Error::Forbidden("self-registration is disabled on this server"));
    }
    let new =
        super::users::CreateUser { username: body.username, password: body.password, role: Role::Customer };
    super::users::add_user(&state, new).await
}
