//! The store's SQL, written once for both databases. PostgreSQL and SQLite accept the same
//! statements here (`$n` parameters, `RETURNING`, `ON CONFLICT`); what really differs (how a
//! write transaction begins, row locks, full-text search, the migrations) is a [`Dialect`],
//! implemented for `sqlx::Postgres` in postgres.rs and for `sqlx::Sqlite` in sqlite.rs.
//!
//! sqlx's bounds for running these queries on a database are the `where` clauses of the two
//! `impl` blocks below (the trait and the steps its writes share). Rust does not carry `where`
//! clauses from one item to another, so both list them; a new column type is added to both.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Connection, Database, Decode, Encode, Executor, IntoArguments, Pool,
    QueryBuilder, SqlSafeStr, Transaction, Type,
};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::reads::ReadConnections;
use super::{
    CallerAndTicketRow, Change, ChangeOutcome, PoolStats, SortKey, Store, TicketCursor, TicketEdit,
    TicketQuery, TicketSort, UserFilter, Write, conflict_if_unique, now,
};
use crate::domain::throttle::{self, Counter, Locked, OnSuccess};
use crate::domain::{
    AttemptOutcome, Caller, Comment, Delivery, DeliveryId, DeliveryState, DueDelivery, EventKind,
    IdempotencyKey, InFlight, NewEvent, NewRefreshToken, NewTicket, NewUser, NewWebhook, NextStep,
    PublicTicket, RefreshVerdict, Role, StoredRefreshToken, ThrottleKey, Ticket, TicketEvent, TicketId,
    TicketScope, TicketStatus, User, UserChange, UserCredentials, UserId, Webhook, WebhookChange, WebhookId,
    WebhookSecret, access, idempotency, webhook,
};
use crate::error::{Error, Result};

/// Whether `error` means the connection was dead before the statement ran: its socket is gone,
/// or the server ended the session (SQLSTATE 57P01 to 57P03: shut down, crashed, starting up).
fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("57P0")),
        _ => false,
    }
}

// Column lists as literals, so that `concat!` builds each statement at compile time.
macro_rules! ticket_columns {
    () => {
        "id, subject, description, status, priority, created_by, assigned_to, embed_token, created_at, updated_at"
    };
}
/// Whether the login session `$2` names (a refresh token family) is open: some token of it is
/// not revoked. Logging out and a reused refresh token revoke them all.
macro_rules! session_open {
    () => {
        "EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.family = $2 AND r.revoked_at IS NULL) AS session_open"
    };
}

macro_rules! user_columns {
    () => {
        "id, username, role, active, token_version"
    };
}
macro_rules! comment_columns {
    () => {
        "id, ticket_id, author_id, body, internal, created_at"
    };
}
macro_rules! event_columns {
    () => {
        "id, ticket_id, actor_id, kind, from_value, to_value, comment_id, internal, created_at"
    };
}
macro_rules! webhook_columns {
    () => {
        "id, url, events, active, include_embed_token, created_at, updated_at"
    };
}

/// A Rust type the store both binds as a parameter and reads from a column.
pub trait Column<DB: Database>: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> {}
impl<DB: Database, T> Column<DB> for T where T: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> {}

/// How a search tests tickets for its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextMatch {
    /// Among the tickets of a walk, whose ids all lie within `ids` (lowest, highest): row by row,
    /// or the index's matches within those ids.
    Walk { ids: (TicketId, TicketId) },
    /// All matches from the full-text index, then the page of them: cheap when they are few.
    Index,
}

/// How many tickets of the filtered listing a search walks, in the page's order, before it asks
/// the index instead. A frequent word fills a page long before; a rare one costs this walk plus
/// an index lookup, and neither grows with the number of tickets.
const SEARCH_WALK: i64 = 2000;

/// The tickets a search walks: their lowest and highest ids, and the last of them in the page's
/// order if more follow.
struct Walk {
    end: Option<TicketCursor>,
    ids: (TicketId, TicketId),
}

/// A part of a listing: up to `limit` rows after `after` and up to `until` (inclusive).
#[derive(Debug, Clone)]
struct Span {
    after: Option<TicketCursor>,
    until: Option<TicketCursor>,
    text_match: TextMatch,
    limit: u32,
}

/// What differs between the databases the store runs on.
pub trait Dialect: Database {
    /// The statement that opens every write transaction.
    const BEGIN_WRITE: &'static str;
    /// Appended to a `SELECT` of the row a write transaction reads and then changes, to lock it.
    const LOCK_ROW: &'static str;
    /// Appended to the `SELECT` of the deliveries (`d`) a server claims: rows another server is
    /// claiming are passed over, not waited for.
    const SKIP_LOCKED: &'static str;
    /// Whether the database announces committed ticket changes to every server itself
    /// (PostgreSQL: a trigger and NOTIFY); if not, the store does, in process, after each commit.
    const ANNOUNCES_TICKET_CHANGES: bool;
    /// This database's migrations.
    fn migrator() -> &'static Migrator;
    /// Pushes ` AND <condition>` keeping the tickets whose subject, description and public
    /// comments together match `text` as a web search (words ANDed, English stemming), tested as
    /// `how` says.
    fn push_text_search(sql: &mut QueryBuilder<Self>, text: &str, how: TextMatch);
}

/// The [`Store`] on a SQL database: writes on sqlx's pool, reads on connections of their own.
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    reads: ReadConnections<DB>,
    changes: broadcast::Sender<Change>,
    /// The task relaying the database's announcements into `changes`, if it makes any; it stops
    /// when the store is closed (or dropped unclosed, as tests do).
    relay: Option<tokio::task::AbortHandle>,
}

impl<DB: Database> SqlStore<DB> {
    /// `pool` holds the connections for writes; `reads` more may be open for reads, with the
    /// same connect options and acquire timeout.
    pub(super) fn new(pool: Pool<DB>, reads: u32) -> Self {
        let options = (*pool.connect_options()).clone();
        let reads = ReadConnections::new(reads, options, pool.options().get_acquire_timeout());
        // Listeners that fall this far behind are told they missed some (`Change::Missed`).
        let (changes, _) = broadcast::channel(1024);
        Self { pool, reads, changes, relay: None }
    }

    /// Starts `relay(sender)` as the task relaying the database's announcements.
    pub(super) fn relaying<F>(mut self, relay: impl FnOnce(broadcast::Sender<Change>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.relay = Some(tokio::spawn(relay(self.changes.clone())).abort_handle());
        self
    }
}

impl<DB: Database> Drop for SqlStore<DB> {
    fn drop(&mut self) {
        if let Some(relay) = &self.relay {
            relay.abort();
        }
    }
}

#[async_trait]
impl<DB: Dialect> Store for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    Uuid: Column<DB>,
    DateTime<Utc>: Column<DB>,
    Option<i64>: Column<DB>,
    Option<bool>: Column<DB>,
    Option<DateTime<Utc>>: Column<DB>,
    Option<String>: Column<DB>,
    Option<i32>: Column<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    async fn ready(&self) -> Result<()> {
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "readiness check failed");
                Error::Unavailable("the database is unreachable".into())
            })?;
        let known = DB::migrator().migrations.len();
        if usize::try_from(applied).unwrap_or(0) < known {
            return Err(Error::Unavailable(format!("{applied} of {known} migrations are applied")));
        }
        Ok(())
    }

    async fn close(&self) {
        if let Some(relay) = &self.relay {
            relay.abort();
        }
        self.reads.close().await;
        self.pool.close().await;
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size() + self.reads.open(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX) + self.reads.idle(),
            max: self.pool.options().get_max_connections() + self.reads.max(),
        }
    }

    async fn ticket_counts(&self) -> Result<Vec<(TicketStatus, i64)>> {
        let rows: Vec<(String, i64)> = self
            .read(async move |connection| {
                sqlx::query_as("SELECT status, count(*) FROM tickets GROUP BY status")
                    .fetch_all(connection)
                    .await
            })
            .await?;
        rows.into_iter()
            .map(|(status, count)| Ok((TicketStatus::try_from(status).map_err(Error::Internal)?, count)))
            .collect()
    }

    async fn user_credentials(&self, username: &str) -> Result<Option<UserCredentials>> {
        // No stored name holds NUL (Postgres cannot even compare one), so none matches.
        if username.contains('\0') {
            return Ok(None);
        }
        // Usernames are unique regardless of case (ASCII only: nothing else is allowed in one),
        // and found the same way, through the unique index on lower(username).
        let name = username.to_ascii_lowercase();
        let credentials = self
            .read(async move |connection| {
                sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    ", password_hash FROM users WHERE lower(username) = $1"
                ))
                .bind(name.clone())
                .fetch_optional(connection)
                .await
            })
            .await?;
        Ok(credentials)
    }

    async fn caller(&self, id: UserId, session: Uuid) -> Result<Option<Caller>> {
        self.read(async move |connection| {
            sqlx::query_as(concat!(
                "SELECT ",
                user_columns!(),
                ", ",
                session_open!(),
                " FROM users WHERE id = $1"
            ))
            .bind(id)
            .bind(session)
            .fetch_optional(connection)
            .await
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        let user = self
            .read(async move |connection| {
                sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(connection)
                    .await
            })
            .await?;
        Ok(user)
    }

    async fn users(&self, filter: &UserFilter, after: Option<UserId>, limit: u32) -> Result<Vec<User>> {
        let UserFilter { role, active } = filter.clone();
        let users = self
            .read(async move |connection| {
                sqlx::query_as(concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users
             WHERE ($1 IS NULL OR role = $1) AND ($2 IS NULL OR active = $2) AND ($3 IS NULL OR id > $3)
             ORDER BY id LIMIT $4"
                ))
                .bind(role.map(Role::as_str))
                .bind(active)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(connection)
                .await
            })
            .await?;
        Ok(users)
    }

    async fn create_user(&self, user: &NewUser) -> Result<User> {
        sqlx::query_as(concat!(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING ",
            user_columns!()
        ))
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(now())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict_if_unique(e, "that username is taken"))
    }

    async fn update_user(&self, id: UserId, change: &UserChange) -> Result<User> {
        let mut tx = self.begin_write().await?;
        // Deactivation retires every token issued before it, access tokens through token_version
        // and refresh tokens below: reactivating revives none of them.
        let deactivating = change.active == Some(false);
        let user: User = sqlx::query_as(concat!(
            "UPDATE users SET role = COALESCE($2, role), active = COALESCE($3, active),
             token_version = token_version + $4 WHERE id = $1 RETURNING ",
            user_columns!()
        ))
        .bind(id)
        .bind(change.role.map(Role::as_str))
        .bind(change.active)
        .bind(i32::from(deactivating))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound("user not found"))?;
        if deactivating {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(user)
    }

    async fn set_password(&self, id: UserId, password_hash: &str, proved: &[ThrottleKey]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let updated: Option<UserId> = sqlx::query_scalar(
            "UPDATE users SET password_hash = $2, token_version = token_version + 1 WHERE id = $1 RETURNING id",
        )
        .bind(id)
        .bind(password_hash)
        .fetch_optional(&mut *tx)
        .await?;
        if updated.is_none() {
            return Err(Error::NotFound("user not found"));
        }
        Self::password_proved(&mut tx, proved, now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_ticket(&self, ticket: &NewTicket, key: Option<&IdempotencyKey>) -> Result<Write<Ticket>> {
        let now = now();
        let mut tx = self.begin_write().await?;
        if let Some(key) = key
            && let Some(first) = Self::claim_idempotency_key(&mut tx, key, now).await?
        {
            return Ok(Write::Replayed(first));
        }
        let created: Ticket = sqlx::query_as(concat!(
            "INSERT INTO tickets (subject, description, status, priority, created_by, embed_token, created_at, updated_at)
             VALUES ($1, $2, 'open', $3, $4, $5, $6, $6) RETURNING ",
            ticket_columns!()
        ))
        .bind(ticket.subject.as_str())
        .bind(ticket.description.as_str())
        .bind(ticket.priority.as_str())
        .bind(ticket.created_by)
        .bind(Uuid::new_v4())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let event = NewEvent {
            kind: EventKind::Created,
            from: None,
            to: Some(created.status.as_str().to_owned()),
            internal: false,
        };
        Self::record_event(&mut tx, created.id, ticket.created_by, &event, None, now).await?;
        Self::commit_keeping(tx, key, &created).await?;
        self.announce_deliveries();
        Ok(Write::Written(created))
    }

    async fn comments(
        &self,
        ticket: TicketId,
        include_internal: bool,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Comment>> {
        let comments = self
            .read(async move |connection| {
                sqlx::query_as(concat!(
                    "SELECT ",
                    comment_columns!(),
                    " FROM comments WHERE ticket_id = $1 AND ($2 OR NOT internal) AND id > $3 ORDER BY id LIMIT $4"
                ))
                .bind(ticket)
                .bind(include_internal)
                .bind(after.unwrap_or(0))
                .bind(i64::from(limit))
                .fetch_all(connection)
                .await
            })
            .await?;
        Ok(comments)
    }

    async fn events(
        &self,
        ticket: TicketId,
        include_internal: bool,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TicketEvent>> {
        let events = self
            .read(async move |connection| {
                sqlx::query_as(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM ticket_events WHERE ticket_id = $1 AND ($2 OR NOT internal) AND id > $3 ORDER BY id LIMIT $4"
                ))
                .bind(ticket)
                .bind(include_internal)
                .bind(after.unwrap_or(0))
                .bind(i64::from(limit))
                .fetch_all(connection)
                .await
            })
            .await?;
        Ok(events)
    }

    async fn ticket(&self, id: TicketId) -> Result<Option<Ticket>> {
        let ticket = self
            .read(async move |connection| {
                sqlx::query_as(concat!("SELECT ", ticket_columns!(), " FROM tickets WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(connection)
                    .await
            })
            .await?;
        Ok(ticket)
    }

    async fn caller_and_ticket(
        &self,
        user: UserId,
        session: Uuid,
        ticket: TicketId,
    ) -> Result<(Option<Caller>, Option<Ticket>)> {
        let row: Option<CallerAndTicketRow> = self
            .read(async move |connection| {
                sqlx::query_as(concat!(
                    "SELECT u.id, u.username, u.role, u.active, u.token_version, ",
                    session_open!(),
                    ", t.id AS t_id, t.subject AS t_subject, t.description AS t_description,
                    t.status AS t_status, t.priority AS t_priority, t.created_by AS t_created_by,
                    t.assigned_to AS t_assigned_to, t.embed_token AS t_embed_token,
                    t.created_at AS t_created_at, t.updated_at AS t_updated_at
             FROM users u LEFT JOIN tickets t ON t.id = $3 WHERE u.id = $1",
                ))
                .bind(user)
                .bind(session)
                .bind(ticket)
                .fetch_optional(connection)
                .await
            })
            .await?;
        match row {
            Some(row) => row.split().map(|(caller, ticket)| (Some(caller), ticket)),
            None => Ok((None, None)),
        }
    }

    async fn public_ticket(&self, token: Uuid) -> Result<Option<PublicTicket>> {
        self.read(async move |connection| {
            sqlx::query_as(
                "SELECT id, subject, status, updated_at, embed_token FROM tickets WHERE embed_token = $1",
            )
            .bind(token)
            .fetch_optional(connection)
            .await
        })
        .await
    }

    /// A search first walks the next `SEARCH_WALK` tickets of the filtered listing, in the page's
    /// order, testing each: a frequent word fills the page early, at a cost that does not grow
    /// with the table. If the walk ends with the page short, the word is rare there, and the
    /// index finds the rest.
    async fn tickets(&self, query: &TicketQuery) -> Result<Vec<Ticket>> {
        let whole = Span {
            after: query.after.clone(),
            until: None,
            text_match: TextMatch::Index,
            limit: query.limit,
        };
        if query.text.is_none() {
            return self.page(query, whole).await;
        }
        let Some(walk) = self.walk(query).await? else { return Ok(Vec::new()) };
        let text_match = TextMatch::Walk { ids: walk.ids };
        let walked = Span { until: walk.end.clone(), text_match, ..whole.clone() };
        let mut page = self.page(query, walked).await?;
        let missing = query.limit.saturating_sub(u32::try_from(page.len()).unwrap_or(query.limit));
        // Without an end, the walk covered every ticket left.
        if let Some(end) = walk.end.filter(|_| missing > 0) {
            let rest = Span { after: Some(end), limit: missing, ..whole };
            page.extend(self.page(query, rest).await?);
        }
        Ok(page)
    }

    async fn update_ticket(
        &self,
        id: TicketId,
        actor: UserId,
        edit: &TicketEdit<'_>,
    ) -> Result<ChangeOutcome> {
        let mut tx = self.begin_write().await?;
        let outcome = Self::change_ticket(&mut tx, id, actor, edit).await?;
        tx.commit().await?;
        self.announce_change_to(id);
        Ok(outcome)
    }

    async fn add_comment_once(
        &self,
        id: TicketId,
        actor: UserId,
        edit: &TicketEdit<'_>,
        key: &IdempotencyKey,
    ) -> Result<Write<ChangeOutcome, Comment>> {
        let mut tx = self.begin_write().await?;
        if let Some(first) = Self::claim_idempotency_key(&mut tx, key, now()).await? {
            return Ok(Write::Replayed(first));
        }
        let outcome = Self::change_ticket(&mut tx, id, actor, edit).await?;
        let comment =
            outcome.comment.as_ref().ok_or_else(|| Error::Internal("the change added no comment".into()))?;
        Self::commit_keeping(tx, Some(key), comment).await?;
        self.announce_change_to(id);
        Ok(Write::Written(outcome))
    }

    async fn admit_login(&self, keys: &[ThrottleKey]) -> Result<Result<(), Locked>> {
        let now = now();
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM login_throttle WHERE last_attempt < $1")
            .bind(now - throttle::WINDOW)
            .execute(&mut *tx)
            .await?;
        let known_source =
            match throttle::source_key(keys) {
                Some(source) => sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM known_login_sources WHERE key = $1 AND last_success >= $2)",
                )
                .bind(source)
                .bind(now - throttle::KNOWN_SOURCE_LIFETIME)
                .fetch_one(&mut *tx)
                .await?,
                None => false,
            };
        let mut counted = Vec::with_capacity(keys.len());
        for key in throttle::counted(keys, known_source) {
            sqlx::query(
                "INSERT INTO login_throttle (key, failures, last_attempt) VALUES ($1, 0, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(&key.key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let (failures, last_attempt, locked_until): (i32, DateTime<Utc>, Option<DateTime<Utc>>) =
                sqlx::query_as(Self::locking(
                    "SELECT failures, last_attempt, locked_until FROM login_throttle WHERE key = $1",
                ))
                .bind(&key.key)
                .fetch_one(&mut *tx)
                .await?;
            let counter =
                Counter { failures: u32::try_from(failures).unwrap_or(0), last_attempt, locked_until };
            match key.rule.admit(Some(counter), now) {
                Ok(next) => counted.push((key, next)),
                // Dropping the transaction rolls back: a refused attempt counts nothing.
                Err(until) => return Ok(Err(Locked { retry_after: throttle::seconds_until(until, now) })),
            }
        }
        for (key, counter) in counted {
            sqlx::query("UPDATE login_throttle SET failures = $2, last_attempt = $3, locked_until = $4 WHERE key = $1")
                .bind(&key.key)
                .bind(i32::try_from(counter.failures).unwrap_or(i32::MAX))
                .bind(counter.last_attempt)
                .bind(counter.locked_until)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn start_session(&self, keys: &[ThrottleKey], token: &NewRefreshToken) -> Result<()> {
        let now = now();
        let mut tx = self.begin_write().await?;
        Self::password_proved(&mut tx, keys, now).await?;
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
        Self::insert_refresh_token(&mut tx, token, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        presented: &str,
        next_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<(User, Uuid)>> {
        let now = now();
        let mut tx = self.begin_write().await?;
        let stored: Option<StoredRefreshToken> = sqlx::query_as(Self::locking(
            "SELECT family, user_id, token_version, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
        ))
        .bind(presented)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(stored) = stored else { return Ok(None) };
        let user: Option<User> =
            sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
                .bind(stored.user_id)
                .fetch_optional(&mut *tx)
                .await?;
        match (stored.verdict(user.as_ref(), now), user) {
            (RefreshVerdict::Rotate, Some(user)) => {
                sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1")
                    .bind(presented)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                let next = NewRefreshToken {
                    token_hash: next_hash.to_owned(),
                    family: stored.family,
                    user_id: user.id,
                    token_version: user.token_version,
                    expires_at,
                };
                Self::insert_refresh_token(&mut tx, &next, now).await?;
                tx.commit().await?;
                Ok(Some((user, stored.family)))
            }
            (RefreshVerdict::RevokeFamily, _) => {
                Self::revoke_family(&mut tx, stored.family, now).await?;
                tx.commit().await?;
                tracing::warn!(
                    user_id = stored.user_id,
                    "a used refresh token was presented again: its family is revoked"
                );
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    async fn revoke_refresh_family(&self, presented: &str) -> Result<()> {
        let now = now();
        let mut tx = self.begin_write().await?;
        let family: Option<Uuid> =
            sqlx::query_scalar("SELECT family FROM refresh_tokens WHERE token_hash = $1")
                .bind(presented)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(family) = family {
            Self::revoke_family(&mut tx, family, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn create_webhook(&self, webhook: &NewWebhook) -> Result<Webhook> {
        let mut tx = self.begin_write().await?;
        let created = sqlx::query_as(concat!(
            "INSERT INTO webhooks (url, events, secret, active, include_embed_token, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING ",
            webhook_columns!()
        ))
        .bind(webhook.url.as_str())
        .bind(webhook.events.to_column())
        .bind(webhook.secret.expose())
        .bind(true)
        .bind(webhook.include_embed_token)
        .bind(now())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn webhooks(&self, after: Option<WebhookId>, limit: u32) -> Result<Vec<Webhook>> {
        self.read(async move |connection| {
            sqlx::query_as(concat!(
                "SELECT ",
                webhook_columns!(),
                " FROM webhooks WHERE id > $1 ORDER BY id LIMIT $2"
            ))
            .bind(after.unwrap_or(0))
            .bind(i64::from(limit))
            .fetch_all(connection)
            .await
        })
        .await
    }

    async fn webhook(&self, id: WebhookId) -> Result<Option<Webhook>> {
        self.read(async move |connection| {
            sqlx::query_as(concat!("SELECT ", webhook_columns!(), " FROM webhooks WHERE id = $1"))
                .bind(id)
                .fetch_optional(connection)
                .await
        })
        .await
    }

    async fn update_webhook(&self, id: WebhookId, change: &WebhookChange) -> Result<Webhook> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query_as(concat!(
            "UPDATE webhooks SET url = coalesce($2, url), events = coalesce($3, events),
             active = coalesce($4, active), include_embed_token = coalesce($5, include_embed_token),
             updated_at = $6 WHERE id = $1 RETURNING ",
            webhook_columns!()
        ))
        .bind(id)
        .bind(change.url.as_ref().map(|url| url.as_str()))
        .bind(change.events.as_ref().map(|events| events.to_column()))
        .bind(change.active)
        .bind(change.include_embed_token)
        .bind(now())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound("webhook not found"))?;
        tx.commit().await?;
        // Deliveries held back while it was inactive are due again.
        self.announce_deliveries();
        Ok(updated)
    }

    async fn delete_webhook(&self, id: WebhookId) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted: Option<WebhookId> =
            sqlx::query_scalar("DELETE FROM webhooks WHERE id = $1 RETURNING id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        deleted.ok_or(Error::NotFound("webhook not found"))?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_webhook_secret(&self, id: WebhookId, secret: &WebhookSecret) -> Result<Webhook> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query_as(concat!(
            "UPDATE webhooks SET secret = $2, updated_at = $3 WHERE id = $1 RETURNING ",
            webhook_columns!()
        ))
        .bind(id)
        .bind(secret.expose())
        .bind(now())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound("webhook not found"))?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn deliveries(
        &self,
        webhook: WebhookId,
        before: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let mut deliveries: Vec<Delivery> = self
            .read(async move |connection| {
                sqlx::query_as(
                    "SELECT id, event_id, ticket_id, event_type, state, attempts, last_status, last_error,
                            next_attempt_at, delivered_at, created_at
                     FROM webhook_deliveries WHERE webhook_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                )
                .bind(webhook)
                .bind(before.unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(connection)
                .await
            })
            .await?;
        for delivery in &mut deliveries {
            delivery.message_id = webhook::message_id(delivery.id);
        }
        Ok(deliveries)
    }

    async fn claim_deliveries(
        &self,
        limit: u32,
        lease_until: DateTime<Utc>,
        in_flight: &InFlight,
    ) -> Result<Vec<DueDelivery>> {
        // Looked for first on a read connection: most polls find nothing, and take no write lock.
        let any_due: bool = self
            .read(async move |connection| {
                sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1)",
                )
                .bind(now())
                .fetch_one(connection)
                .await
            })
            .await?;
        if !any_due {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        // Only a ticket's first pending delivery to a webhook is ever due (see migration 0009),
        // so this reads `limit` rows of one index, however long the queue. Webhooks with their
        // share of attempts in flight here are left out.
        let mut select = QueryBuilder::<DB>::new(
            "SELECT d.id, d.webhook_id, d.ticket_id, d.event_id, d.attempts, d.body, w.url, w.secret,
                    w.include_embed_token
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.state = 'pending' AND d.next_attempt_at <= ",
        );
        select.push_bind(now()).push(" AND w.active");
        let full = in_flight.full();
        if !full.is_empty() {
            select.push(" AND d.webhook_id NOT IN (");
            let mut ids = select.separated(", ");
            for id in full {
                ids.push_bind(id);
            }
            select.push(")");
        }
        select
            .push(" ORDER BY d.next_attempt_at, d.id LIMIT ")
            .push_bind(i64::from(limit))
            .push(DB::SKIP_LOCKED);
        let candidates: Vec<DueDelivery> = select.build_query_as().fetch_all(&mut *tx).await?;
        let due = in_flight.choose(candidates, limit);
        if due.is_empty() {
            return Ok(due);
        }
        // Claimed until the lease ends: a server that dies mid-attempt leaves the delivery due
        // again then. The ids are listed, so the update reads them by primary key.
        let mut claim = QueryBuilder::<DB>::new("UPDATE webhook_deliveries SET next_attempt_at = ");
        claim.push_bind(lease_until).push(" WHERE id IN (");
        let mut ids = claim.separated(", ");
        for delivery in &due {
            ids.push_bind(delivery.id);
        }
        claim.push(")");
        claim.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(due)
    }

    async fn event_in_context(&self, event: i64) -> Result<Option<(Ticket, TicketEvent, Option<Comment>)>> {
        let event: Option<TicketEvent> = self
            .read(async move |connection| {
                sqlx::query_as(concat!("SELECT ", event_columns!(), " FROM ticket_events WHERE id = $1"))
                    .bind(event)
                    .fetch_optional(connection)
                    .await
            })
            .await?;
        let Some(event) = event else { return Ok(None) };
        let Some(ticket) = self.ticket(event.ticket_id).await? else { return Ok(None) };
        let comment = match event.comment_id {
            Some(id) => {
                self.read(async move |connection| {
                    sqlx::query_as(concat!("SELECT ", comment_columns!(), " FROM comments WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(connection)
                        .await
                })
                .await?
            }
            None => None,
        };
        Ok(Some((ticket, event, comment)))
    }

    async fn record_attempt(&self, delivery: &DueDelivery, outcome: &AttemptOutcome) -> Result<()> {
        let now = now();
        let (state, next_attempt_at, delivered_at) = match outcome.next {
            NextStep::Delivered => (DeliveryState::Delivered, None, Some(now)),
            NextStep::RetryAt(at) => (DeliveryState::Pending, Some(at), None),
            NextStep::GiveUp => (DeliveryState::Failed, None, None),
        };
        let mut tx = self.begin_write().await?;
        let done = state != DeliveryState::Pending;
        if done {
            // The ticket's writes queue deliveries with its row locked: locked here too, a
            // delivery queued meanwhile is either seen below or sees this one done.
            sqlx::query(Self::locking("SELECT id FROM tickets WHERE id = $1"))
                .bind(delivery.ticket_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, body = $2, last_status = $3,
             last_error = $4, state = $5, next_attempt_at = $6, delivered_at = $7 WHERE id = $1",
        )
        .bind(delivery.id)
        .bind(outcome.body.as_str())
        .bind(outcome.status.map(i32::from))
        .bind(outcome.error.as_deref())
        .bind(state.as_str())
        .bind(next_attempt_at)
        .bind(delivered_at)
        .execute(&mut *tx)
        .await?;
        if done {
            // The ticket's next delivery to this webhook, if any, is due now.
            sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = $3 WHERE id = (
                     SELECT min(id) FROM webhook_deliveries
                     WHERE webhook_id = $1 AND ticket_id = $2 AND state = 'pending')",
            )
            .bind(delivery.webhook_id)
            .bind(delivery.ticket_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The steps the writes above share, each inside the caller's transaction.
impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    Uuid: Column<DB>,
    DateTime<Utc>: Column<DB>,
    Option<i64>: Column<DB>,
    Option<bool>: Column<DB>,
    Option<DateTime<Utc>>: Column<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    /// Tells this server's listeners that new deliveries may be due (other servers poll).
    fn announce_deliveries(&self) {
        // No listener is no failure.
        let _ = self.changes.send(Change::Deliveries);
    }

    /// After a ticket's change: its embed may show something new (where the database does not
    /// say so itself), and deliveries may be due.
    fn announce_change_to(&self, ticket: TicketId) {
        if !DB::ANNOUNCES_TICKET_CHANGES {
            let _ = self.changes.send(Change::Ticket(ticket));
        }
        self.announce_deliveries();
    }

    async fn page(&self, query: &TicketQuery, span: Span) -> Result<Vec<Ticket>> {
        let query = query.clone();
        self.read(async move |connection| {
            Self::listing(&query, &span).build_query_as().fetch_all(connection).await
        })
        .await
    }

    /// Runs `read` on a read connection (one round trip). If that connection turns out dead
    /// (the database dropped it since its last use), the idle ones are forgotten and `read` runs
    /// once more on a new connection. Reads only: the failed attempt changed nothing.
    async fn read<T>(&self, read: impl AsyncFn(&mut DB::Connection) -> sqlx::Result<T>) -> Result<T> {
        let mut connection = self.reads.get().await?;
        let value = match read(&mut connection).await {
            Err(error) if connection_lost(&error) => {
                tracing::info!(%error, "a read connection was dead; reading again on a new one");
                drop(connection);
                self.reads.forget_idle();
                connection = self.reads.get().await?;
                read(&mut connection).await?
            }
            result => result?,
        };
        connection.keep();
        Ok(value)
    }

    /// Opens a write transaction. A dead pooled connection fails at `BEGIN`, before anything was
    /// written, so the transaction then begins again on a connection known to answer.
    async fn begin_write(&self) -> Result<Transaction<'static, DB>> {
        match self.pool.begin_with(DB::BEGIN_WRITE).await {
            Err(error) if connection_lost(&error) => {
                tracing::info!(%error, "a pooled connection was dead; beginning again on a live one");
                let connection = self.live_connection().await?;
                Ok(Transaction::begin(connection, Some(DB::BEGIN_WRITE.into_sql_str())).await?)
            }
            result => Ok(result?),
        }
    }

    /// A pooled connection that answers a ping. After one was found dead, the others that were
    /// idle when the database went away are dead too; each is closed as it is found.
    async fn live_connection(&self) -> Result<PoolConnection<DB>> {
        for _ in 0..=self.pool.options().get_max_connections() {
            let mut connection = self.pool.acquire().await?;
            match connection.ping().await {
                Ok(()) => return Ok(connection),
                Err(_) => connection.close_on_drop(),
            }
        }
        Err(Error::Unavailable("no database connection answers".into()))
    }

    /// The statement for a page of a ticket listing, or a part of one: up to `limit` rows after
    /// `span.after` and up to `span.until` (inclusive), in the query's order, testing the search
    /// text, if any, the way `span.text_match` says.
    fn listing(query: &TicketQuery, span: &Span) -> QueryBuilder<DB> {
        let mut sql =
            QueryBuilder::<DB>::new(concat!("SELECT ", ticket_columns!(), " FROM tickets WHERE 1 = 1"));
        Self::push_filters(&mut sql, query);
        if let Some(text) = &query.text {
            DB::push_text_search(&mut sql, text, span.text_match);
        }
        Self::push_span(&mut sql, query.sort, span.after.as_ref(), span.until.as_ref());
        sql.push(" LIMIT ").push_bind(i64::from(span.limit));
        sql
    }

    /// ` AND` the query's scope and filters, all but the search text.
    fn push_filters(sql: &mut QueryBuilder<DB>, query: &TicketQuery) {
        match query.scope {
            TicketScope::All => {}
            TicketScope::AssignedTo(agent) => {
                sql.push(" AND assigned_to = ").push_bind(agent);
            }
            TicketScope::CreatedBy(customer) => {
                sql.push(" AND created_by = ").push_bind(customer);
            }
        }
        if let Some(status) = query.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(priority) = query.priority {
            sql.push(" AND priority = ").push_bind(priority.as_str());
        }
        match query.assignee {
            Some(Some(agent)) => {
                sql.push(" AND assigned_to = ").push_bind(agent);
            }
            Some(None) => {
                sql.push(" AND assigned_to IS NULL");
            }
            None => {}
        }
        if let Some(customer) = query.created_by {
            sql.push(" AND created_by = ").push_bind(customer);
        }
        if let Some(since) = query.updated_since {
            sql.push(" AND updated_at >= ").push_bind(since);
        }
    }

    /// Keyset conditions: rows strictly after `after` and at or before `until`, in `sort`'s order
    /// (ids break ties between equal update times), then the `ORDER BY`.
    fn push_span(
        sql: &mut QueryBuilder<DB>,
        sort: TicketSort,
        after: Option<&TicketCursor>,
        until: Option<&TicketCursor>,
    ) {
        let (next, previous_or_same, order) =
            if sort.descending { ("<", ">=", "DESC") } else { (">", "<=", "ASC") };
        if let Some(row) = after {
            Self::push_side_of(sql, sort, row, next);
        }
        if let Some(row) = until {
            Self::push_side_of(sql, sort, row, previous_or_same);
        }
        match sort.key {
            SortKey::Created => sql.push(format_args!(" ORDER BY id {order}")),
            SortKey::Updated => sql.push(format_args!(" ORDER BY updated_at {order}, id {order}")),
        };
    }

    /// ` AND` the rows on one side of `row` (`op`: `<`, `>=`, ...): by id, or by update time with
    /// ids among equal times, as one row comparison, which an index on (updated_at, id) serves.
    fn push_side_of(sql: &mut QueryBuilder<DB>, sort: TicketSort, row: &TicketCursor, op: &str) {
        match (sort.key, row.updated_at) {
            (SortKey::Updated, Some(at)) => {
                sql.push(format_args!(" AND (updated_at, id) {op} (")).push_bind(at);
                sql.push(", ").push_bind(row.id).push(")");
            }
            _ => {
                sql.push(format_args!(" AND id {op} ")).push_bind(row.id);
            }
        }
    }

    /// The tickets a search walks: the next `SEARCH_WALK` of the filtered listing after the
    /// query's cursor, whatever their text (so the filters' indexes serve it). `None` when no
    /// ticket is left.
    async fn walk(&self, query: &TicketQuery) -> Result<Option<Walk>> {
        let (sort, after) = (query.sort, query.after.as_ref());
        let (walked_query, walked_after) = (query.clone(), after.cloned());
        let (lowest, highest, count): (Option<TicketId>, Option<TicketId>, i64) = self
            .read(async move |connection| {
                let mut sql = QueryBuilder::<DB>::new(
                    "SELECT min(id), max(id), count(*) FROM (SELECT id FROM tickets WHERE 1 = 1",
                );
                Self::push_filters(&mut sql, &walked_query);
                Self::push_span(&mut sql, sort, walked_after.as_ref(), None);
                sql.push(" LIMIT ").push_bind(SEARCH_WALK).push(") AS walked");
                sql.build_query_as().fetch_one(connection).await
            })
            .await?;
        let (Some(lowest), Some(highest)) = (lowest, highest) else { return Ok(None) };
        let end = if count < SEARCH_WALK {
            None
        } else if sort.key == SortKey::Created {
            let id = if sort.descending { lowest } else { highest };
            Some(TicketCursor { sort, updated_at: None, id })
        } else {
            let (query, after) = (query.clone(), after.cloned());
            let (id, updated_at): (TicketId, DateTime<Utc>) = self
                .read(async move |connection| {
                    let mut sql = QueryBuilder::<DB>::new("SELECT id, updated_at FROM tickets WHERE 1 = 1");
                    Self::push_filters(&mut sql, &query);
                    Self::push_span(&mut sql, sort, after.as_ref(), None);
                    sql.push(" LIMIT 1 OFFSET ").push_bind(SEARCH_WALK - 1);
                    sql.build_query_as().fetch_one(connection).await
                })
                .await?;
            Some(TicketCursor { sort, updated_at: Some(updated_at), id })
        };
        Ok(Some(Walk { end, ids: (lowest, highest) }))
    }

    /// A `SELECT` that locks the row it reads until the transaction ends.
    fn locking(select: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(format!("{select}{}", DB::LOCK_ROW))
    }

    /// Reads the ticket with its row locked, asks `edit` what to change, and writes the change
    /// with its history events, so the rules and the write see the same ticket.
    async fn change_ticket(
        tx: &mut Transaction<'static, DB>,
        id: TicketId,
        actor: UserId,
        edit: &TicketEdit<'_>,
    ) -> Result<ChangeOutcome> {
        let now = now();
        let current: Ticket = sqlx::query_as(Self::locking(concat!(
            "SELECT ",
            ticket_columns!(),
            " FROM tickets WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(Error::NotFound("ticket not found"))?;

        let change = edit(&current)?;
        if let Some(agent_id) = change.new_assignee(&current) {
            let agent: Option<(String, bool)> =
                sqlx::query_as("SELECT role, active FROM users WHERE id = $1")
                    .bind(agent_id)
                    .fetch_optional(&mut **tx)
                    .await?;
            let agent = agent
                .map(|(role, active)| Role::try_from(role).map(|role| (role, active)))
                .transpose()
                .map_err(Error::Internal)?;
            access::check_assignable(agent_id, agent).map_err(Error::Validation)?;
        }
        let events = crate::domain::event::events_for(&current, &change);
        if events.is_empty() {
            return Ok(ChangeOutcome { ticket: current, comment: None });
        }

        let after = change.apply_to(&current);
        // `updated_at` (and with it the ETag and the embed's `last_updated`) is what customers and
        // the embed see move: a change only staff can see leaves it.
        let updated_at = if events.iter().all(|event| event.internal) { current.updated_at } else { now };
        let embed_token = if change.rotate_embed_token { Uuid::new_v4() } else { current.embed_token };
        let ticket = sqlx::query_as(concat!(
            "UPDATE tickets SET status = $2, priority = $3, assigned_to = $4, embed_token = $5, updated_at = $6
             WHERE id = $1 RETURNING ",
            ticket_columns!()
        ))
        .bind(id)
        .bind(after.status.as_str())
        .bind(after.priority.as_str())
        .bind(after.assigned_to)
        .bind(embed_token)
        .bind(updated_at)
        .fetch_one(&mut **tx)
        .await?;

        let comment: Option<Comment> = match &change.comment {
            Some(comment) => Some(
                sqlx::query_as(concat!(
                    "INSERT INTO comments (ticket_id, author_id, body, internal, created_at)
                     VALUES ($1, $2, $3, $4, $5) RETURNING ",
                    comment_columns!()
                ))
                .bind(id)
                .bind(comment.author_id)
                .bind(comment.body.as_str())
                .bind(comment.internal)
                .bind(now)
                .fetch_one(&mut **tx)
                .await?,
            ),
            None => None,
        };
        for event in &events {
            let comment_id = comment.as_ref().filter(|_| event.kind == EventKind::CommentAdded).map(|c| c.id);
            Self::record_event(tx, id, actor, event, comment_id, now).await?;
        }
        Ok(ChangeOutcome { ticket, comment })
    }

    /// After a correct password: applies each throttle key's `on_success`, and remembers the
    /// account-and-address pair as a known source.
    async fn password_proved(
        tx: &mut Transaction<'static, DB>,
        keys: &[ThrottleKey],
        now: DateTime<Utc>,
    ) -> Result<()> {
        for key in keys {
            let statement = match key.rule.on_success {
                OnSuccess::Forget => "DELETE FROM login_throttle WHERE key = $1",
                OnSuccess::TakeBack => {
                    "UPDATE login_throttle SET failures = failures - 1 WHERE key = $1 AND failures > 0"
                }
            };
            sqlx::query(statement).bind(&key.key).execute(&mut **tx).await?;
        }
        if let Some(source) = throttle::source_key(keys) {
            // Expired sources are pruned here, on success, not on every attempt.
            sqlx::query("DELETE FROM known_login_sources WHERE last_success < $1")
                .bind(now - throttle::KNOWN_SOURCE_LIFETIME)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "INSERT INTO known_login_sources (key, last_success) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET last_success = excluded.last_success",
            )
            .bind(source)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn insert_refresh_token(
        tx: &mut Transaction<'static, DB>,
        token: &NewRefreshToken,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, token_version, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.token_hash)
        .bind(token.family)
        .bind(token.user_id)
        .bind(token.token_version)
        .bind(now)
        .bind(token.expires_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn revoke_family(
        tx: &mut Transaction<'static, DB>,
        family: Uuid,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family = $1 AND revoked_at IS NULL")
            .bind(family)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Claims `key` for this transaction's write, or returns what the request that claimed it
    /// first created, if it was the same request; the key with another request is a
    /// `Validation` error. On Postgres a concurrent claim of the same key waits on the primary
    /// key until this transaction ends, then finds the first outcome; SQLite runs one writer at a
    /// time.
    async fn claim_idempotency_key<T: DeserializeOwned>(
        tx: &mut Transaction<'static, DB>,
        key: &IdempotencyKey,
        now: DateTime<Utc>,
    ) -> Result<Option<T>> {
        sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND created_at < $2")
            .bind(key.user_id)
            .bind(now - idempotency::KEY_LIFETIME)
            .execute(&mut **tx)
            .await?;
        let claimed: Option<UserId> = sqlx::query_scalar(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, outcome, created_at)
             VALUES ($1, $2, $3, '', $4) ON CONFLICT (user_id, key) DO NOTHING RETURNING user_id",
        )
        .bind(key.user_id)
        .bind(&key.key)
        .bind(&key.fingerprint)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
        if claimed.is_some() {
            return Ok(None);
        }
        let (fingerprint, outcome): (String, String) = sqlx::query_as(
            "SELECT fingerprint, outcome FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        )
        .bind(key.user_id)
        .bind(&key.key)
        .fetch_one(&mut **tx)
        .await?;
        if fingerprint != key.fingerprint {
            return Err(Error::Validation(
                "this Idempotency-Key was already used for a different request; use a new key for a new request"
                    .into(),
            ));
        }
        let first = serde_json::from_str(&outcome)
            .map_err(|e| Error::Internal(format!("a stored idempotent outcome does not read back: {e}")))?;
        Ok(Some(first))
    }

    /// Keeps what a keyed write created beside it (for a retry to get back), then commits both.
    async fn commit_keeping(
        mut tx: Transaction<'static, DB>,
        key: Option<&IdempotencyKey>,
        created: &impl Serialize,
    ) -> Result<()> {
        if let Some(key) = key {
            let outcome = serde_json::to_string(created)
                .map_err(|e| Error::Internal(format!("serializing an idempotent outcome: {e}")))?;
            sqlx::query("UPDATE idempotency_keys SET outcome = $3 WHERE user_id = $1 AND key = $2")
                .bind(key.user_id)
                .bind(&key.key)
                .bind(outcome)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_event(
        tx: &mut Transaction<'static, DB>,
        ticket: TicketId,
        actor: UserId,
        event: &NewEvent,
        comment_id: Option<i64>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO ticket_events (ticket_id, actor_id, kind, from_value, to_value, comment_id, internal, created_at, event_type)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(ticket)
        .bind(actor)
        .bind(event.kind.as_str())
        .bind(event.from.as_deref())
        .bind(event.to.as_deref())
        .bind(comment_id)
        .bind(event.internal)
        .bind(at)
        .bind(crate::domain::EventType::of(event.kind, event.internal).as_str())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
