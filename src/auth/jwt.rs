use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Role, User, UserId};
use crate::error::{Error, Result};

const ISSUER: &str = "ticketdesk";

/// How far ahead of ours another server's clock may be: a token whose `iat` or `nbf` lies further
/// in the future is refused (it was made by a wrong clock, or forged to outlive its key).
pub const CLOCK_SKEW_SECS: u64 = 10;

/// What an access token says. The role is informative: the extractor reloads the user, so the
/// database, not an old token, decides what a request may do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id, as a string (RFC 7519).
    pub sub: String,
    pub role: Role,
    /// The user's token version when issued; a password change bumps it and retires the token.
    pub ver: i32,
    /// The login session (refresh token family) it was issued in: logging out or a revoked
    /// session retires it.
    pub sid: Uuid,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
    /// Not before: we never set it, but a token that carries one is held to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

pub struct AccessToken {
    pub token: String,
    pub expires_in: u64,
}

/// HS256 signing and strict verification: only HS256 is accepted (never `none`, nor any other
/// algorithm: none other is even built, see `hs256`), and `exp`, `iat`, `sub` and our issuer are
/// required, with no leeway on expiry and [`CLOCK_SKEW_SECS`] on `iat` and `nbf`.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        // Fails only if it is installed already, which is as good.
        let _ = super::hs256::PROVIDER.install_default();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// An access token for `user` in the login session `session`.
    pub fn issue(&self, user: &User, session: Uuid) -> Result<AccessToken> {
        let iat = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.id.to_string(),
            role: user.role,
            ver: user.token_version,
            sid: session,
            iss: ISSUER.to_owned(),
            iat,
            exp: iat + self.ttl.as_secs(),
            nbf: None,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("signing a token failed: {e}")))?;
        Ok(AccessToken { token, expires_in: self.ttl.as_secs() })
    }

    /// The user id, token version and session of a valid token. Every failure gets the same vague
    /// answer on purpose.
    pub fn verify(&self, token: &str) -> Result<(UserId, i32, Uuid)> {
        let invalid = || Error::invalid_token("the access token is invalid or has expired");
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| invalid())?
            .claims;
        let latest = jsonwebtoken::get_current_timestamp() + CLOCK_SKEW_SECS;
        if claims.iat > latest || claims.nbf.is_some_and(|nbf| nbf > latest) {
            return Err(invalid());
        }
        Ok((claims.sub.parse().map_err(|_| invalid())?, claims.ver, claims.sid))
    }
}
