//! Refresh tokens: long-lived, single-use, rotated on every refresh. Each login starts a family;
//! a token used twice means someone holds a copy, so the whole family is revoked (RFC 9700 §4.14.2).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{User, UserId};

/// A refresh token as stored (only its hash is).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredRefreshToken {
    pub family: Uuid,
    pub user_id: UserId,
    /// The user's token version when it was issued.
    pub token_version: i32,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who an access token speaks for, as the database has it now: the user, and whether the login
/// session (refresh token family) the token was issued in is still open.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Caller {
    #[sqlx(flatten)]
    pub user: User,
    /// False once the session was logged out or revoked (a refresh token used twice).
    pub session_open: bool,
}

/// A refresh token to store: its hash, family, owner and expiry.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub token_hash: String,
    pub family: Uuid,
    pub user_id: UserId,
    pub token_version: i32,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshVerdict {
    /// Mark it used and issue the next token of the family.
    Rotate,
    /// It was used before: revoke the whole family, refuse.
    RevokeFamily,
    /// Expired, revoked, or its user may no longer log in: refuse.
    Refuse,
}

impl StoredRefreshToken {
    pub fn verdict(&self, user: Option<&User>, now: DateTime<Utc>) -> RefreshVerdict {
        if self.revoked_at.is_some() {
            return RefreshVerdict::Refuse;
        }
        if self.used_at.is_some() {
            return RefreshVerdict::RevokeFamily;
        }
        let user_may_log_in =
            user.is_some_and(|user| user.active && user.token_version == self.token_version);
        if self.expires_at <= now || !user_may_log_in {
            return RefreshVerdict::Refuse;
        }
        RefreshVerdict::Rotate
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::Role;

    fn stored(now: DateTime<Utc>) -> StoredRefreshToken {
        StoredRefreshToken {
            family: Uuid::new_v4(),
            user_id: 7,
            token_version: 2,
            expires_at: now + TimeDelta::days(1),
            used_at: None,
            revoked_at: None,
        }
    }

    fn user() -> User {
        User { id: 7, username: "alice".into(), role: Role::Customer, active: true, token_version: 2 }
    }

    #[test]
    fn a_fresh_token_of_an_active_user_rotates() {
        let now = Utc::now();
        assert_eq!(stored(now).verdict(Some(&user()), now), RefreshVerdict::Rotate);
    }

    #[test]
    fn a_used_token_revokes_its_family_even_if_otherwise_valid() {
        let now = Utc::now();
        let used = StoredRefreshToken { used_at: Some(now), ..stored(now) };
        assert_eq!(used.verdict(Some(&user()), now), RefreshVerdict::RevokeFamily);
    }

    #[test]
    fn revoked_expired_or_orphaned_tokens_and_retired_users_are_refused() {
        let now = Utc::now();
        let revoked = StoredRefreshToken { revoked_at: Some(now), used_at: Some(now), ..stored(now) };
        assert_eq!(revoked.verdict(Some(&user()), now), RefreshVerdict::Refuse);
        let expired = StoredRefreshToken { expires_at: now, ..stored(now) };
        assert_eq!(expired.verdict(Some(&user()), now), RefreshVerdict::Refuse);
        assert_eq!(stored(now).verdict(None, now), RefreshVerdict::Refuse);
        let deactivated = User { active: false, ..user() };
        assert_eq!(stored(now).verdict(Some(&deactivated), now), RefreshVerdict::Refuse);
        let password_changed = User { token_version: 3, ..user() };
        assert_eq!(stored(now).verdict(Some(&password_changed), now), RefreshVerdict::Refuse);
    }
}
