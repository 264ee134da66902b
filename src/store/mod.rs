//! Storage: the [`Store`] trait the handlers depend on, and its PostgreSQL and SQLite backends.
//! The backend is picked from the database URL's scheme.

mod error;
mod postgres;
mod reads;
mod sql;
mod sqlite;
pub mod watches;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{DatabaseUrl, PoolSettings};
use crate::domain::Refusal;
use crate::domain::service_level::{Calendar, CalendarId, NewCalendar, NewSlaPolicy, SlaPolicy, SlaPolicyId};
use crate::domain::sla_clock::{ClockStatus, RecordedNews};
use crate::domain::throttle::Locked;
use crate::domain::{
    Attachment, AttachmentId, AttemptOutcome, Caller, Comment, Delivery, DeliveryId, DueDelivery,
    IdempotencyKey, InFlight, NewRefreshToken, NewTicket, NewUser, NewWebhook, PublicTicket, ThrottleKey,
    Ticket, TicketChange, TicketEvent, TicketId, TicketScope, User, UserChange, UserCredentials, UserId,
    Webhook, WebhookChange, WebhookId, WebhookSecret,
};
use crate::domain::{Priority, Role, TicketStatus};

pub use error::{Result, StoreError};
pub use postgres::renew_watches;
pub use sql::{Dialect, SqlStore};
pub use watches::TicketWatch;

/// Decides, inside the write's transaction and from the ticket as it is there, what to change;
/// an `Err` aborts the transaction with nothing written.
pub type TicketEdit<'a> = dyn Fn(&Ticket) -> Result<TicketChange, Refusal> + Send + Sync + 'a;

/// What a write keyed by an `Idempotency-Key` did. The write's own transaction claims the key
/// and keeps what it created beside it; a repeat of the request writes nothing and gets that
/// back. (The key with another request is [`StoreError::KeyReused`].)
#[derive(Debug)]
pub enum Write<T, Created = T> {
    Written(T),
    /// The same request was written before: this is what it created then.
    Replayed(Created),
}

/// The connection pool's state, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// Which users a listing covers; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub active: Option<bool>,
}

/// A listing of tickets: whose (the scope the caller's role allows), which (filters), in what order,
/// and which page.
#[derive(Debug, Clone)]
pub struct TicketQuery {
    pub scope: TicketScope,
    pub status: Option<TicketStatus>,
    pub priority: Option<Priority>,
    /// `Some(Some(agent))`: assigned to that agent; `Some(None)`: unassigned.
    pub assignee: Option<Option<UserId>>,
    pub created_by: Option<UserId>,
    pub updated_since: Option<DateTime<Utc>>,
    /// Tickets whose service targets are, overall, in this state (see `TicketSla::status`).
    pub sla_status: Option<ClockStatus>,
    /// Tickets with a running target due at or before this time.
    pub sla_due_before: Option<DateTime<Utc>>,
    /// Full-text search over subject, description and public comments; words are ANDed and
    /// stemmed (English) on both backends.
    pub text: Option<String>,
    pub sort: TicketSort,
    pub after: Option<TicketCursor>,
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Creation order (ids are issued in creation order).
    Created,
    /// Time of the last change.
    Updated,
    /// When the ticket's next service target is due; only tickets with a running target.
    SlaDue,
}

impl SortKey {
    /// The ticket column the order goes by (with ids among equal values).
    pub fn column(self) -> &'static str {
        match self {
            SortKey::Created => "id",
            SortKey::Updated => "updated_at",
            SortKey::SlaDue => "sla_due_at",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketSort {
    pub key: SortKey,
    pub descending: bool,
}

/// Where a page of tickets continues: after this row, in this order. Ids break ties between equal
/// times, so the order is total and no row is skipped or repeated across pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketCursor {
    pub sort: TicketSort,
    /// The row's time the order goes by (update or SLA due time); none when it goes by id.
    pub at: Option<DateTime<Utc>>,
    pub id: TicketId,
}

impl TicketCursor {
    pub fn after(ticket: &Ticket, sort: TicketSort) -> Self {
        let at = match sort.key {
            SortKey::Created => None,
            SortKey::Updated => Some(ticket.updated_at),
            SortKey::SlaDue => ticket.sla.next_due(),
        };
        Self { sort, at, id: ticket.id }
    }
}

/// What a ticket write produced: the ticket as it now is, and the comment it added, if any.
#[derive(Debug)]
pub struct ChangeOutcome {
    pub ticket: Ticket,
    pub comment: Option<Comment>,
}

/// A change the store announces to the webhook delivery of the server that made it. (Ticket
/// changes reach the live streams that follow them through [`Operations::watch`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// New webhook deliveries may be due.
    Deliveries,
    /// Announcements may have been lost (the connection to the database was, or a listener fell
    /// behind): listeners look again.
    Missed,
}

/// Everything the handlers hold: one trait per aggregate, each implemented in its own file of
/// `store/sql/`. Code names the aggregates it uses (`use crate::store::Tickets`).
pub trait Store: Operations + Accounts + Tickets + Listing + Webhooks + Attachments + ServiceLevels {}

impl<T: Operations + Accounts + Tickets + Listing + Webhooks + Attachments + ServiceLevels> Store for T {}

/// The store as a whole: readiness, pool figures, closing, counts, and change announcements.
#[async_trait]
pub trait Operations: Send + Sync + 'static {
    /// Whether the database answers and every migration this build knows is applied.
    async fn ready(&self) -> Result<()>;
    fn pool_stats(&self) -> PoolStats;
    /// Closes the pool: waits for connections in use to come back, then closes them all.
    async fn close(&self);
    /// How many tickets there are in each status (statuses with none may be left out).
    async fn ticket_counts(&self) -> Result<Vec<(TicketStatus, i64)>>;
    /// Changes as they are committed (see [`Change`]).
    fn changes(&self) -> tokio::sync::broadcast::Receiver<Change>;
    /// Follows `ticket` for a live stream: the watch wakes after each change to what its embed
    /// shows, made by any server, committed after this returns.
    async fn watch(&self, ticket: TicketId) -> Result<TicketWatch>;
}

/// Users, their sessions (refresh token families) and login throttling.
#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    async fn user_credentials(&self, username: &str) -> Result<Option<UserCredentials>>;
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    /// The user an access token names, and whether its login session is still open: what
    /// authenticates a request, in one query.
    async fn caller(&self, id: UserId, session: Uuid) -> Result<Option<Caller>>;
    /// Up to `limit` users matching `filter` with ids above `after`, by id.
    async fn users(&self, filter: &UserFilter, after: Option<UserId>, limit: u32) -> Result<Vec<User>>;
    /// A taken username is a `Conflict`.
    async fn create_user(&self, user: &NewUser) -> Result<User>;
    async fn update_user(&self, id: UserId, change: &UserChange) -> Result<User>;
    /// Stores a new password hash and retires every token issued before; in the same transaction,
    /// settles the throttle keys of the attempt that `proved` the old password (none for an
    /// operator's reset), as a successful login does.
    async fn set_password(&self, id: UserId, password_hash: &str, proved: &[ThrottleKey]) -> Result<()>;
    /// Counts a password attempt (a login, a password change) against each key it counts against
    /// (all, or only the pair's own from a known source), in one transaction with the rows
    /// locked, or refuses it with `Locked` while any of them is locked, counting nothing.
    async fn admit_login(&self, keys: &[ThrottleKey]) -> Result<Result<(), Locked>>;
    /// After a correct password, in one transaction: applies each throttle key's `on_success`,
    /// remembers the account-and-address pair as a known source, and stores the new session's
    /// first refresh token.
    async fn start_session(&self, keys: &[ThrottleKey], token: &NewRefreshToken) -> Result<()>;
    /// Uses the refresh token whose hash is `presented`, in one transaction: if it may be used,
    /// marks it used, stores `next_hash` as the next token of its family (expiring at
    /// `expires_at`) and returns the user to issue for, with the session (family) it continues;
    /// `None` if it may not be used (unknown, expired, revoked, its user deactivated or logged out
    /// everywhere). A used token revokes its family.
    async fn rotate_refresh_token(
        &self,
        presented: &str,
        next_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<(User, Uuid)>>;
    /// Revokes the family of the refresh token whose hash is `presented`; unknown ones are ignored.
    async fn revoke_refresh_family(&self, presented: &str) -> Result<()>;
}

/// One ticket: creating, reading and changing it, its conversation and history.
#[async_trait]
pub trait Tickets: Send + Sync + 'static {
    /// Creates the ticket and its `created` event; at most once per `key`.
    async fn create_ticket(&self, ticket: &NewTicket, key: Option<&IdempotencyKey>) -> Result<Write<Ticket>>;
    async fn ticket(&self, id: TicketId) -> Result<Option<Ticket>>;
    /// A caller (as [`Store::caller`]) and a ticket in one query (one round trip), for the
    /// hottest read path.
    async fn caller_and_ticket(
        &self,
        user: UserId,
        session: Uuid,
        ticket: TicketId,
    ) -> Result<(Option<Caller>, Option<Ticket>)>;
    /// What the embed shows of the ticket whose embed token is `token`.
    async fn public_ticket(&self, token: Uuid) -> Result<Option<PublicTicket>>;
    /// Reads the ticket, asks `edit` what to change, writes it with its history events (by
    /// `actor`), all in one transaction with the row locked, so the rules and the write see the
    /// same ticket. A change that changes nothing writes nothing. A missing ticket is `NotFound`.
    async fn update_ticket(
        &self,
        id: TicketId,
        actor: UserId,
        edit: &TicketEdit<'_>,
    ) -> Result<ChangeOutcome>;
    /// `update_ticket` for a change that adds a comment, at most once per `key`: a repeat gets
    /// the comment the first one added.
    async fn add_comment_once(
        &self,
        id: TicketId,
        actor: UserId,
        edit: &TicketEdit<'_>,
        key: &IdempotencyKey,
    ) -> Result<Write<ChangeOutcome, Comment>>;
    /// Up to `limit` of the ticket's comments with ids above `after`, oldest first; internal
    /// notes only if asked for.
    async fn comments(
        &self,
        ticket: TicketId,
        include_internal: bool,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Comment>>;
    /// Up to `limit` of the ticket's history events with ids above `after`, oldest first;
    /// events about internal notes only if asked for.
    async fn events(
        &self,
        ticket: TicketId,
        include_internal: bool,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TicketEvent>>;
}

/// Ticket listings and search.
#[async_trait]
pub trait Listing: Send + Sync + 'static {
    /// One page of the tickets `query` selects, in its order.
    async fn tickets(&self, query: &TicketQuery) -> Result<Vec<Ticket>>;
}

/// Webhooks and their deliveries.
#[async_trait]
pub trait Webhooks: Send + Sync + 'static {
    async fn create_webhook(&self, webhook: &NewWebhook) -> Result<Webhook>;
    /// Up to `limit` webhooks with ids above `after`, by id.
    async fn webhooks(&self, after: Option<WebhookId>, limit: u32) -> Result<Vec<Webhook>>;
    async fn webhook(&self, id: WebhookId) -> Result<Option<Webhook>>;
    /// A missing webhook is `NotFound`.
    async fn update_webhook(&self, id: WebhookId, change: &WebhookChange) -> Result<Webhook>;
    /// Deletes the webhook and its deliveries; a missing one is `NotFound`.
    async fn delete_webhook(&self, id: WebhookId) -> Result<()>;
    async fn set_webhook_secret(&self, id: WebhookId, secret: &WebhookSecret) -> Result<Webhook>;
    /// Up to `limit` of the webhook's deliveries with ids below `before`, newest first.
    async fn deliveries(
        &self,
        webhook: WebhookId,
        before: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
    /// Claims up to `limit` due deliveries of active webhooks for this server until
    /// `lease_until` (when another may claim them again): the webhooks waiting longest first,
    /// each's oldest first, no more of a webhook's than `in_flight` leaves room for. A delivery
    /// is due only once the ones before it for the same ticket and webhook are done. Servers on
    /// one database each claim different ones.
    async fn claim_deliveries(
        &self,
        limit: u32,
        lease_until: DateTime<Utc>,
        in_flight: &InFlight,
    ) -> Result<Vec<DueDelivery>>;
    /// Makes deliveries this server claimed and did not attempt due again now, for any server.
    async fn release_deliveries(&self, deliveries: &[DeliveryId]) -> Result<()>;
    /// History events with their tickets as they are now and their comments, if any, in one
    /// read; events no longer stored are left out.
    async fn events_in_context(&self, events: &[i64]) -> Result<Vec<(Ticket, TicketEvent, Option<Comment>)>>;
    /// Records how attempts went, all in one transaction; once a delivery is done (delivered or
    /// failed for good), the next one for its ticket and webhook becomes due.
    async fn record_attempts(&self, attempts: &[(DueDelivery, AttemptOutcome)]) -> Result<()>;
}

/// Business calendars and SLA policies (admin configuration).
#[async_trait]
pub trait ServiceLevels: Send + Sync + 'static {
    /// A taken name is `Taken`.
    async fn create_calendar(&self, calendar: &NewCalendar) -> Result<Calendar>;
    /// Every calendar, by id.
    async fn calendars(&self) -> Result<Vec<Calendar>>;
    async fn calendar(&self, id: CalendarId) -> Result<Option<Calendar>>;
    /// Replaces the calendar whole; a missing one is `NotFound`, a taken name `Taken`.
    async fn replace_calendar(&self, id: CalendarId, calendar: &NewCalendar) -> Result<Calendar>;
    /// A missing calendar is `NotFound`; one a policy uses is refused (`Conflict`).
    async fn delete_calendar(&self, id: CalendarId) -> Result<()>;
    /// A taken name or position is refused (`Conflict`), an unknown calendar too (`Invalid`).
    async fn create_sla_policy(&self, policy: &NewSlaPolicy) -> Result<SlaPolicy>;
    /// Every policy, by position: the order they are tried in.
    async fn sla_policies(&self) -> Result<Vec<SlaPolicy>>;
    async fn sla_policy(&self, id: SlaPolicyId) -> Result<Option<SlaPolicy>>;
    /// Replaces the policy whole, with `create_sla_policy`'s checks; a missing one is `NotFound`.
    async fn replace_sla_policy(&self, id: SlaPolicyId, policy: &NewSlaPolicy) -> Result<SlaPolicy>;
    /// A missing policy is `NotFound`.
    async fn delete_sla_policy(&self, id: SlaPolicyId) -> Result<()>;
    /// Records the warnings and breaches due by `now` of up to `limit` clocks, reading only the
    /// clocks due (an index on their next check), each once across every server: the ticket's
    /// row is taken first, and a ticket another server holds is left for the next call. Returns
    /// what it recorded.
    async fn check_clocks(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<RecordedNews>>;
}

/// Uploaded files: their records while they are written, wait to be referenced and are read;
/// their removal. (A ticket or comment takes uploads in its own write: `create_ticket`,
/// `update_ticket` with a comment.)
#[async_trait]
pub trait Attachments: Send + Sync + 'static {
    /// Records an upload about to be written at `key`, pending until `expires_at`; whatever is
    /// left of it then, bytes included, the sweeper removes. Refused (`Refusal::TooMany`) if
    /// `uploader` already holds `pending_cap` uploads nothing references; concurrent uploads of one
    /// user are counted one after the other (their user row is locked).
    async fn begin_upload(
        &self,
        uploader: UserId,
        key: &str,
        filename: &str,
        expires_at: DateTime<Utc>,
        pending_cap: u64,
    ) -> Result<AttachmentId>;
    /// Its bytes are stored: records what they are, and the hash of the token that may reference
    /// it. `NotFound` if it was swept meanwhile (it took longer than its expiry).
    async fn finish_upload(
        &self,
        id: AttachmentId,
        content_type: &str,
        size: u64,
        sha256: &str,
        token_hash: &str,
    ) -> Result<Attachment>;
    /// A file that is not deleted.
    async fn attachment(&self, id: AttachmentId) -> Result<Option<Attachment>>;
    /// Deletes a file (its bytes go next): marks it deleted, takes it off its ticket's or
    /// comment's list and records who did it in the ticket's history, in one transaction. The row
    /// is left to the sweeper, which removes the bytes too if the caller could not. `NotFound` if
    /// there is no such file.
    async fn delete_attachment(&self, id: AttachmentId, actor: UserId) -> Result<Attachment>;
    /// Claims up to `limit` uploads still unreferenced at `now` after their expiry, for removal
    /// until `lease_until` (when another sweeper may claim them again); claimed, none can be
    /// referenced any more. Returns their ids and keys.
    async fn expired_uploads(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(AttachmentId, String)>>;
    /// Forgets uploads whose bytes are gone (or were never stored).
    async fn forget_uploads(&self, ids: &[AttachmentId]) -> Result<()>;
}

/// Connects to the database the URL names, creating it if it is a new SQLite file, and applies
/// pending migrations.
pub async fn connect(url: &DatabaseUrl, pool: &PoolSettings) -> Result<Arc<dyn Store>> {
    let raw = url.expose();
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        Ok(Arc::new(SqlStore::<sqlx::Postgres>::connect(raw, pool).await?))
    } else if raw.starts_with("sqlite:") {
        Ok(Arc::new(SqlStore::<sqlx::Sqlite>::connect(raw, pool).await?))
    } else {
        Err(StoreError::Internal(format!(
            "unsupported DATABASE_URL {:?}: use postgres://... or sqlite://...",
            url.redacted()
        )))
    }
}

/// How a backend's `DATABASE_MAX_CONNECTIONS` are shared: `1 / share_of_writes` for writes
/// (sqlx's pool), the rest for reads, at least one each.
fn write_and_read_connections(total: u32, share_of_writes: u32) -> (u32, u32) {
    let writes = (total / share_of_writes).max(1);
    (writes, total.saturating_sub(writes).max(1))
}

/// A unique-constraint violation is the client's conflict, not our failure.
fn taken_if_unique(error: sqlx::Error, what: &'static str) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Taken(what),
        _ => StoreError::Database(error),
    }
}

/// Both backends store microseconds, so timestamps read back equal to what was written.
fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
