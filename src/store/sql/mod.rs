//! The store's SQL, written once for both databases. PostgreSQL and SQLite accept the same
//! statements here (`$n` parameters, `RETURNING`, `ON CONFLICT`); what really differs (how a
//! write transaction begins, row locks, full-text search, the migrations) is a [`Dialect`],
//! implemented for `sqlx::Postgres` in postgres.rs and for `sqlx::Sqlite` in sqlite.rs.
//!
//! One file per aggregate (accounts, tickets, listing, webhooks, attachments, service levels,
//! operations), each implementing its trait of `store/mod.rs`; this one holds what they share:
//! the column lists, the dialect, and the steps inside a transaction. Rust does not carry `where`
//! clauses from one item to another, so each `impl` lists the sqlx bounds its queries need, and
//! only those.

use std::sync::Arc;

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

use super::Change;
use super::reads::ReadConnections;
use super::watches::Watches;
use crate::domain::{
    AttachmentRef, Attachments, IdempotencyKey, NewEvent, Refusal, TicketId, UserId, idempotency,
};
use crate::store::{Result, StoreError};

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

/// The ticket row's columns, named once: `with_ticket_columns!(m)` is `m!(id, subject, ...)`.
macro_rules! with_ticket_columns {
    ($list:ident) => {
        $list!(
            id,
            subject,
            description,
            status,
            priority,
            created_by,
            assigned_to,
            embed_token,
            created_at,
            updated_at,
            attachments,
            sla
        )
    };
}
/// `a, b, c`
macro_rules! column_list {
    ($first:ident $(, $rest:ident)*) => {
        concat!(stringify!($first) $(, ", ", stringify!($rest))*)
    };
}
/// `t.a, t.b, ...`: the columns of the ticket joined as `t`.
macro_rules! joined_column_list {
    ($first:ident $(, $rest:ident)*) => {
        concat!("t.", stringify!($first) $(, ", t.", stringify!($rest))*)
    };
}
macro_rules! ticket_columns {
    () => {
        with_ticket_columns!(column_list)
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
        "id, ticket_id, author_id, body, internal, created_at, attachments"
    };
}
macro_rules! attachment_columns {
    () => {
        "id, filename, content_type, size, sha256, ticket_id, comment_id, internal, uploader_id, created_at, storage_key"
    };
}
macro_rules! event_columns {
    () => {
        "id, ticket_id, actor_id, kind, from_value, to_value, comment_id, internal, created_at"
    };
}
macro_rules! calendar_columns {
    () => {
        "id, name, time_zone, hours, holidays, created_at, updated_at"
    };
}
macro_rules! sla_policy_columns {
    () => {
        "id, name, position, conditions, targets, warn_before_minutes, calendar_id, pause_statuses, created_at, updated_at"
    };
}
macro_rules! webhook_columns {
    () => {
        "id, url, events, active, include_embed_token, created_at, updated_at"
    };
}

// One file per aggregate, each with the trait of `store/mod.rs` it implements (after the column
// lists above, which they use).
mod accounts;
mod attachments;
mod listing;
mod operations;
mod service_levels;
mod tickets;
mod webhooks;

/// A Rust type the store both binds as a parameter and reads from a column.
pub trait Column<DB: Database>: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> {}
impl<DB: Database, T> Column<DB> for T where T: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> {}

/// How a search tests tickets for its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextMatch {
    /// Among the tickets of a walk, whose ids all lie within `ids` (lowest, highest): row by row,
    /// or the index's matches within those ids.
    Walk { ids: (TicketId, TicketId) },
    /// Among `ids`, in id order, as [`Dialect::push_matches_in_id_order`] read them.
    Found { ids: Vec<TicketId> },
    /// Among `ids`, wherever they lie ([`Dialect::push_tickets_among`]), as
    /// [`Dialect::push_matches_in_update_order`] and [`Dialect::push_chunk_matches`] read them:
    /// tested again where those postings match more loosely than the search.
    Among { ids: Vec<TicketId> },
    /// All matches from the full-text index, then the page of them: cheap when they are few.
    Index,
}

/// What differs between the databases the store runs on.
pub trait Dialect: Database + sqlx::database::HasStatementCache {
    /// The statement that opens every write transaction.
    const BEGIN_WRITE: &'static str;
    /// Appended to a `SELECT` of the row a write transaction reads and then changes, to lock it.
    const LOCK_ROW: &'static str;
    /// Appended to the `SELECT` of the deliveries (`d`) a server claims: rows another server is
    /// claiming are passed over, not waited for.
    const SKIP_LOCKED: &'static str;
    /// Run first in a write transaction whose loss in a crash does no harm, so that its commit
    /// does not wait for the disk (where committing otherwise does).
    const COMMIT_WITHOUT_FLUSH: Option<&'static str>;
    /// Run first in the transaction claiming deliveries, so that the claim walks the due index in
    /// its order and stops at its limit. (Behind a burst of new deliveries PostgreSQL's estimates
    /// say few are due, and it reads and sorts every due row instead: O(backlog) per claim.)
    const CLAIM_IN_INDEX_ORDER: Option<&'static str>;
    /// Where the database itself announces the committed changes of watched tickets to every
    /// server (PostgreSQL: migration 0016's trigger NOTIFYs when the ticket has an
    /// `embed_watches` row), the statement recording that some server watches ticket `$1` until
    /// `$2`. Without one, the store announces each change in process, after its commit.
    const RECORD_WATCH: Option<&'static str>;
    /// This database's migrations.
    fn migrator() -> &'static Migrator;
    /// Pushes ` AND <condition>` keeping the tickets whose subject, description and public
    /// comments together match `text` as a web search (words ANDed, English stemming), tested as
    /// `how` says.
    fn push_text_search(sql: &mut QueryBuilder<Self>, text: &str, how: &TextMatch);
    /// Pushes a statement for the ids of up to `limit` tickets matching `text` (or a few more,
    /// which [`TextMatch::Found`] tests again) beyond `after` in id order (`descending` or not),
    /// read from an index in that order, so that it costs what it returns, however many match.
    /// `false`, pushing nothing, for a text no such index can answer.
    fn push_matches_in_id_order(
        sql: &mut QueryBuilder<Self>,
        text: &str,
        after: TicketId,
        descending: bool,
        limit: i64,
    ) -> bool;
    /// Like [`Dialect::push_matches_in_id_order`], for `(id, hour)` pairs, `hour` being the
    /// [`hour_of`] the ticket's last update, beyond `after` in the order of (hour, id).
    fn push_matches_in_update_order(
        sql: &mut QueryBuilder<Self>,
        text: &str,
        after: UpdatePosition,
        descending: bool,
        limit: i64,
    ) -> bool;
    /// Pushes a `FROM` item named `tickets` holding the tickets `ids`, fetched by id whatever the
    /// rest of the statement: left to itself, the planner may walk a filter's index in the page's
    /// order instead, testing each row against the ids, and for a sparse filter that reads most of
    /// the table.
    fn push_tickets_among(sql: &mut QueryBuilder<Self>, ids: &[TicketId]);
    /// Pushes the test that a value is one of `ids` (after `WHERE id `, say), the ids bound as
    /// one value: a statement of the same text whatever their number, so kept prepared and
    /// planned once, where a list bound id by id is a new statement for each length.
    fn push_one_of(sql: &mut QueryBuilder<Self>, ids: &[i64]);
    /// Pushes a statement for the ids of the tickets with a chunk of their long conversation
    /// (migration 0011) matching `text`.
    fn push_chunk_matches(sql: &mut QueryBuilder<Self>, text: &str);
}

/// A place in the postings a search reads in update order: just after the ticket `id`, whose last
/// update fell in `hour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdatePosition {
    pub hour: i64,
    pub id: TicketId,
}

/// The hour (since the Unix epoch) of a time, as the migrations' postings in update order count
/// it (PostgreSQL's `hour_of`, SQLite's `unixepoch(..) / 3600`).
pub fn hour_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(3600)
}

/// The [`Store`] on a SQL database: writes on sqlx's pool, reads on connections of their own.
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    reads: ReadConnections<DB>,
    changes: broadcast::Sender<Change>,
    /// The tickets this server's live streams follow.
    watches: Arc<Watches>,
    /// The task relaying the database's announcements into `changes` and `watches`, if it makes
    /// any; it stops when the store is closed (or dropped unclosed, as tests do).
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
        Self { pool, reads, changes, watches: Arc::default(), relay: None }
    }

    /// Starts `relay(pool, sender, watches)` as the task relaying the database's announcements.
    pub(super) fn relaying<F>(
        mut self,
        relay: impl FnOnce(Pool<DB>, broadcast::Sender<Change>, Arc<Watches>) -> F,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let relay = relay(self.pool.clone(), self.changes.clone(), self.watches.clone());
        self.relay = Some(tokio::spawn(relay).abort_handle());
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

/// How the aggregates reach the database: announcements, reads, write transactions.
impl<DB: Dialect> SqlStore<DB> {
    /// Tells this server's listeners that new deliveries may be due (other servers poll).
    fn announce_deliveries(&self) {
        // No listener is no failure.
        let _ = self.changes.send(Change::Deliveries);
    }

    /// After a ticket's change: its embed may show something new (where the database does not
    /// say so itself), and deliveries may be due.
    fn announce_change_to(&self, ticket: TicketId) {
        if DB::RECORD_WATCH.is_none() {
            self.watches.changed(ticket);
        }
        self.announce_deliveries();
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
        Err(StoreError::Unavailable("no database connection answers".into()))
    }

    /// A `SELECT` that locks the row it reads until the transaction ends.
    fn locking(select: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(format!("{select}{}", DB::LOCK_ROW))
    }
}

/// The steps the aggregates' writes share, each inside the caller's transaction.
impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    i64: Column<DB>,
    bool: Column<DB>,
    Uuid: Column<DB>,
    DateTime<Utc>: Column<DB>,
    Option<i64>: Column<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
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
            return Err(StoreError::KeyReused);
        }
        let first = serde_json::from_str(&outcome).map_err(|e| {
            StoreError::Internal(format!("a stored idempotent outcome does not read back: {e}"))
        })?;
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
                .map_err(|e| StoreError::Internal(format!("serializing an idempotent outcome: {e}")))?;
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

    /// Takes the uploads whose token hashes are `hashes` for a write by `uploader`: each must be
    /// theirs, stored, unexpired and not taken before, or the write is refused with nothing
    /// taken. Of two writes racing for one token, the second finds it gone (PostgreSQL re-reads
    /// the row once the first commits; SQLite runs one writer at a time).
    async fn take_uploads(
        tx: &mut Transaction<'static, DB>,
        uploader: UserId,
        hashes: &[String],
        now: DateTime<Utc>,
    ) -> Result<Attachments> {
        let mut files = Vec::with_capacity(hashes.len());
        for hash in hashes {
            let taken: Option<AttachmentRef> = sqlx::query_as(
                "UPDATE attachments SET token_hash = NULL, expires_at = NULL
                 WHERE token_hash = $1 AND uploader_id = $2 AND expires_at > $3 AND ticket_id IS NULL
                 RETURNING id, filename, content_type, size",
            )
            .bind(hash.as_str())
            .bind(uploader)
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?;
            files.push(taken.ok_or(StoreError::Refused(Refusal::invalid(
                "an upload token is unknown, expired, already used or not yours; upload the file again",
            )))?);
        }
        Ok(Attachments(files))
    }

    /// Files taken by [`Self::take_uploads`] now belong to `ticket` (and `comment`, if any).
    async fn place_uploads(
        tx: &mut Transaction<'static, DB>,
        files: &Attachments,
        ticket: TicketId,
        comment: Option<i64>,
        internal: bool,
    ) -> Result<()> {
        for file in &files.0 {
            sqlx::query(
                "UPDATE attachments SET ticket_id = $2, comment_id = $3, internal = $4 WHERE id = $1",
            )
            .bind(file.id)
            .bind(ticket)
            .bind(comment)
            .bind(internal)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn record_event(
        tx: &mut Transaction<'static, DB>,
        ticket: TicketId,
        actor: Option<UserId>,
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

#[cfg(test)]
mod tests {
    use sqlx::{Postgres, QueryBuilder, Sqlite};

    use super::Dialect;

    fn tickets_among<DB: Dialect>(ids: &[i64]) -> String {
        let mut sql = QueryBuilder::<DB>::new("SELECT id FROM tickets WHERE id ");
        DB::push_one_of(&mut sql, ids);
        sql.into_string()
    }

    /// Kept prepared, such a statement is planned once a connection: only if its text is the
    /// same for every number of ids.
    #[test]
    fn a_list_of_ids_makes_one_statement_text_whatever_its_length() {
        assert_eq!(tickets_among::<Postgres>(&[7]), tickets_among::<Postgres>(&[7, 8, 9]));
        assert_eq!(tickets_among::<Sqlite>(&[7]), tickets_among::<Sqlite>(&[7, 8, 9]));
    }
}
