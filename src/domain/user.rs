use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
#[schema(example = json!({"id": 1, "username": "alice", "role": "customer"}))]
pub struct User {
    pub id: UserId,
    pub username: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
}

/// What login needs: the user and their argon2id PHC hash. Not `Serialize`, so it cannot leak.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserCredentials {
    #[sqlx(flatten)]
    pub user: User,
    pub password_hash: String,
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
    fn role_text_matches_the_api() {
        crate::domain::assert_text_matches_serde(Role::ALL, Role::as_str);
    }
}
