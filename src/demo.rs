//! The demo users the README walks through. Created only when the server runs with `--demo`.

use crate::auth::Passwords;
use crate::domain::{NewUser, Role};
use crate::error::Result;
use crate::store::{Store, StoreError};

pub const DEMO_USERS: [(&str, &str, Role); 3] = [
    ("alice", "alice123", Role::Customer),
    ("bob", "bob123", Role::Agent),
    ("carol", "carol123", Role::Admin),
];

/// Adds each demo user that does not exist yet; existing users, demo or not, are left untouched.
/// Returns the usernames it created.
pub async fn ensure_demo_users(store: &dyn Store, passwords: &Passwords) -> Result<Vec<&'static str>> {
    let mut created = Vec::new();
    for (username, password, role) in DEMO_USERS {
        if store.user_credentials(username).await?.is_some() {
            continue;
        }
        let user =
            NewUser { username: username.to_owned(), password_hash: passwords.hash(password).await?, role };
        match store.create_user(&user).await {
            Ok(_) => created.push(username),
            // Another replica started with --demo at the same moment and created it first.
            Err(StoreError::Taken(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(created)
}
