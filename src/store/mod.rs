//! Storage: the [`Store`] trait the handlers depend on, and its PostgreSQL and SQLite backends.
//! The backend is picked from the database URL's scheme.

mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::config::DatabaseUrl;
use crate::domain::{
    Comment, NewTicket, NewUser, Ticket, TicketChange, TicketEvent, TicketId, TicketScope, User, UserChange,
    UserCredentials, UserId,
};
use crate::domain::{Role, access};
use crate::error::{Error, Result};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Decides, inside the write's transaction and from the ticket as it is there, what to change;
/// an `Err` aborts the transaction with nothing written.
pub type TicketEdit<'a> = dyn Fn(&Ticket) -> Result<TicketChange> + Send + Sync + 'a;

/// Which users a listing covers; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub active: Option<bool>,
}

/// What a ticket write produced: the ticket as it now is, and the comment it added, if any.
#[derive(Debug)]
pub struct ChangeOutcome {
    pub ticket: Ticket,
    pub comment: Option<Comment>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates the user unless the username is taken; returns whether it was created.
    async fn add_user_if_absent(&self, user: &NewUser) -> Result<bool>;
    async fn user_credentials(&self, username: &str) -> Result<Option<UserCredentials>>;
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    /// Up to `limit` users matching `filter` with ids above `after`, by id.
    async fn users(&self, filter: &UserFilter, after: Option<UserId>, limit: u32) -> Result<Vec<User>>;
    /// A taken username is a `Conflict`.
    async fn create_user(&self, user: &NewUser) -> Result<User>;
    async fn update_user(&self, id: UserId, change: &UserChange) -> Result<User>;
    /// Stores a new password hash and retires every token issued before.
    async fn set_password(&self, id: UserId, password_hash: &str) -> Result<()>;

    /// Creates the ticket and its `created` event.
    async fn create_ticket(&self, ticket: &NewTicket) -> Result<Ticket>;
    async fn ticket(&self, id: TicketId) -> Result<Option<Ticket>>;
    async fn ticket_by_embed_token(&self, token: Uuid) -> Result<Option<Ticket>>;
    /// The tickets in `scope`, newest first.
    async fn tickets(&self, scope: TicketScope) -> Result<Vec<Ticket>>;
    /// Reads the ticket, asks `edit` what to change, writes it with its history events (by
    /// `actor`), all in one transaction with the row locked, so the rules and the write see the
    /// same ticket. A change that changes nothing writes nothing. A missing ticket is `NotFound`.
    async fn update_ticket(
        &self,
        id: TicketId,
        actor: UserId,
        edit: &TicketEdit<'_>,
    ) -> Result<ChangeOutcome>;
    /// The ticket's comments, oldest first; internal notes only if asked for.
    async fn comments(&self, ticket: TicketId, include_internal: bool) -> Result<Vec<Comment>>;
    /// The ticket's history, oldest first; events about internal notes only if asked for.
    async fn events(&self, ticket: TicketId, include_internal: bool) -> Result<Vec<TicketEvent>>;
}

/// Connects to the database the URL names, creating it if it is a new SQLite file, and applies
/// pending migrations.
pub async fn connect(url: &DatabaseUrl) -> Result<Arc<dyn Store>> {
    let raw = url.expose();
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(raw).await?))
    } else if raw.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(raw).await?))
    } else {
        Err(Error::Internal(format!(
            "unsupported DATABASE_URL {:?}: use postgres://... or sqlite://...",
            url.redacted()
        )))
    }
}

/// The rule for an assignment target, applied by both backends to the role and active flag they
/// just read in the write's transaction.
fn ensure_assignable(agent_id: UserId, agent: Option<(Role, bool)>) -> Result<()> {
    match agent {
        Some((role, _)) if !access::can_be_assigned(role) => Err(Error::Validation(format!(
            "agent_id {agent_id} is a {}, not an agent; only agents can be assigned",
            role.as_str()
        ))),
        Some((_, false)) => {
            Err(Error::Validation(format!("agent {agent_id} is deactivated and cannot be assigned")))
        }
        Some(_) => Ok(()),
        None => Err(Error::Validation(format!("agent_id {agent_id} does not name an existing user"))),
    }
}

/// A unique-constraint violation is the client's conflict, not our failure.
fn conflict_if_unique(error: sqlx::Error, detail: &str) -> Error {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict(detail.to_owned()),
        _ => Error::Database(error),
    }
}

/// Both backends store microseconds, so timestamps read back equal to what was written.
fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
