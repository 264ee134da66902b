use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::JwtKeys;
use uuid::Uuid;

use crate::domain::{Caller, User, UserId};
use crate::error::{Error, Result};
use crate::store::Store;

/// The authenticated caller. A handler that takes it cannot run without a valid bearer token.
///
/// JWTs cannot be revoked, so the user and the token's session are reloaded on every request (in
/// one query): a deactivated user, a token issued before the last password change or
/// deactivation, or one whose session was logged out or revoked, is refused at once, and the
/// role comes from the database, not from the token.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

impl<S> FromRequestParts<S> for CurrentUser
where
    S: Send + Sync,
    Arc<JwtKeys>: FromRef<S>,
    Arc<dyn Store>: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let token = VerifiedToken::from_request_parts(parts, state).await?;
        let caller = Arc::<dyn Store>::from_ref(state).caller(token.user_id, token.session).await?;
        Ok(CurrentUser(token.admit(caller)?))
    }
}

/// A bearer token whose signature and claims are valid, before its user is loaded. Hot paths take
/// this and load the user in the same query as their data (one round trip), then call `admit`.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedToken {
    pub user_id: UserId,
    token_version: i32,
    /// The login session (refresh token family) the token was issued in.
    pub session: Uuid,
}

impl VerifiedToken {
    /// The token's user, if they may still act: they exist, are active, the token is not older
    /// than their last password change or deactivation, and its session is still open.
    pub fn admit(self, caller: Option<Caller>) -> Result<User> {
        let Caller { user, session_open } =
            caller.ok_or(Error::invalid_token("the access token's user no longer exists"))?;
        if !user.active {
            return Err(Error::invalid_token("this account is deactivated"));
        }
        if user.token_version != self.token_version {
            return Err(Error::invalid_token(
                "the access token was issued before the account's last password change or deactivation",
            ));
        }
        if !session_open {
            return Err(Error::invalid_token(
                "the access token's session has ended (logged out, or revoked because a refresh token \
                 was used twice); log in again",
            ));
        }
        Ok(user)
    }
}

impl<S> FromRequestParts<S> for VerifiedToken
where
    S: Send + Sync,
    Arc<JwtKeys>: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let (user_id, token_version, session) =
            Arc::<JwtKeys>::from_ref(state).verify(bearer_token(parts)?)?;
        Ok(VerifiedToken { user_id, token_version, session })
    }
}

fn bearer_token(parts: &Parts) -> Result<&str> {
    let missing = Error::Unauthorized {
        detail: "this route needs an `Authorization: Bearer <token>` header; get a token from POST /auth/token",
        invalid_token: false,
    };
    let value = parts.headers.get(AUTHORIZATION).ok_or(missing)?;
    let value =
        value.to_str().map_err(|_| Error::invalid_token("the Authorization header is not valid text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(token.trim())
        }
        _ => Err(Error::invalid_token("the Authorization header must be `Bearer <token>`")),
    }
}
