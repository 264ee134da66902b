use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::refusal::Refusal;

pub type UserId = i64;

/// What a user may do is decided by their role alone (see [`super::access`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Agent,
    Admin,
}

text_enum!(Role { Customer => "customer", Agent => "agent", Admin => "admin" });

/// A user as the API shows it: never with a password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({"id": 1, "username": "alice", "role": "customer", "active": true}))]
pub struct User {
    pub id: UserId,
    pub username: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// A deactivated user cannot log in, and their tokens stop working at once.
    pub active: bool,
    /// Bumped when the password changes; a token carrying an older version is refused.
    #[serde(skip)]
    pub token_version: i32,
}

/// What login needs: the user and their argon2id PHC hash. Not `Serialize`, so it cannot leak.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserCredentials {
    #[sqlx(flatten)]
    pub user: User,
    pub password_hash: String,
}

/// 3 to 64 characters: letters, digits, `.`, `_` and `-`. Usernames are how people log in and
/// appear in logs, so nothing invisible or confusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, Refusal> {
        let n = raw.chars().count();
        if !(3..=64).contains(&n) {
            return Err(Refusal::Invalid(format!("username must be 3 to 64 characters (got {n})")));
        }
        if !raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(Refusal::invalid("username may hold only letters, digits, `.`, `_` and `-`"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password someone chooses: 8 to 128 characters, not one of the most common passwords, not
/// the username. (Existing passwords, like the demo users', are not re-checked.)
#[derive(Clone, PartialEq, Eq)]
pub struct NewPassword(String);

const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

impl NewPassword {
    pub fn parse(raw: &str, username: &str) -> Result<Self, Refusal> {
        super::reject_nul("password", raw)?;
        let n = raw.chars().count();
        if !(8..=128).contains(&n) {
            return Err(Refusal::Invalid(format!("password must be 8 to 128 characters (got {n})")));
        }
        let lowered = raw.to_lowercase();
        if COMMON_PASSWORDS.lines().any(|common| common == lowered) {
            return Err(Refusal::invalid("that password is among the most common ones; choose another"));
        }
        if lowered == username.to_lowercase() {
            return Err(Refusal::invalid("the password must not be the username"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword([redacted])")
    }
}

/// What an admin may change on a user; `None` leaves it as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    pub role: Option<Role>,
    pub active: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password_hash: String,
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_short_plain_names() {
        for ok in ["bob", "alice.smith", "agent_007", "a-b"] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ab", "has space", "émile", "a\u{0}b", "tab\t", &"x".repeat(65)] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_are_long_enough_and_not_common() {
        assert!(NewPassword::parse("correct horse battery", "alice").is_ok());
        assert!(NewPassword::parse("short", "alice").is_err());
        assert!(NewPassword::parse(&"x".repeat(129), "alice").is_err());
        assert!(NewPassword::parse(&"x".repeat(128), "alice").is_ok());
        assert!(NewPassword::parse("Password123", "alice").is_err(), "common, whatever the case");
        assert!(NewPassword::parse(&"\0".repeat(8), "alice").is_err());
        assert!(NewPassword::parse("Alice.Smith", "alice.smith").is_err(), "the username");
        assert_eq!(
            format!("{:?}", NewPassword::parse("correct horse", "a").unwrap()),
            "NewPassword([redacted])"
        );
    }

    #[test]
    fn role_text_matches_the_api() {
        crate::domain::assert_text_matches_serde(Role::ALL, Role::as_str);
    }
}
