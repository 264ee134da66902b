use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, QueryBuilder, Row, Transaction, Type,
};
use uuid::Uuid;

use super::{Column, Dialect, SqlStore};
use crate::domain::sla_clock::Reply;
use crate::domain::{
    Caller, Comment, EventKind, IdempotencyKey, NewEvent, NewTicket, PublicTicket, Role, Ticket, TicketEvent,
    TicketId, User, UserId, access,
};
use crate::store::{ChangeOutcome, Result, StoreError, TicketEdit, Tickets, Write, now};

#[async_trait]
impl<DB: Dialect> Tickets for SqlStore<DB>
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
    Option<i32>: Column<DB>,
    Option<String>: Column<DB>,
    Option<DateTime<Utc>>: Column<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn create_ticket(&self, ticket: &NewTicket, key: Option<&IdempotencyKey>) -> Result<Write<Ticket>> {
        let now = now();
        let mut tx = self.begin_write().await?;
        if let Some(key) = key
            && let Some(first) = Self::claim_idempotency_key(&mut tx, key, now).await?
        {
            return Ok(Write::Replayed(first));
        }
        let files = Self::take_uploads(&mut tx, ticket.created_by, &ticket.attachments, now).await?;
        let created: Ticket = sqlx::query_as(concat!(
            "INSERT INTO tickets (subject, description, status, priority, created_by, embed_token, created_at, updated_at, attachments)
             VALUES ($1, $2, 'open', $3, $4, $5, $6, $6, $7) RETURNING ",
            ticket_columns!()
        ))
        .bind(ticket.subject.as_str())
        .bind(ticket.description.as_str())
        .bind(ticket.priority.as_str())
        .bind(ticket.created_by)
        .bind(Uuid::new_v4())
        .bind(now)
        .bind(files.to_column())
        .fetch_one(&mut *tx)
        .await?;
        let mut created = created;
        Self::move_clocks(&mut tx, None, &mut created, None, now).await?;
        Self::place_uploads(&mut tx, &files, created.id, None, false).await?;
        let event = NewEvent {
            kind: EventKind::Created,
            from: None,
            to: Some(created.status.as_str().to_owned()),
            internal: false,
        };
        Self::record_event(&mut tx, created.id, Some(ticket.created_by), &event, None, now).await?;
        Self::commit_keeping(tx, key, &created).await?;
        self.announce_deliveries();
        Ok(Write::Written(created))
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn caller_and_ticket(
        &self,
        user: UserId,
        session: Uuid,
        ticket: TicketId,
    ) -> Result<(Option<Caller>, Option<Ticket>)> {
        let row: Option<CallerAndTicket> = self
            .read(async move |connection| {
                sqlx::query_as(concat!(
                    "SELECT u.id AS caller_id, u.username, u.role, u.active, u.token_version, ",
                    session_open!(),
                    ", ",
                    with_ticket_columns!(joined_column_list),
                    " FROM users u LEFT JOIN tickets t ON t.id = $3 WHERE u.id = $1",
                ))
                .bind(user)
                .bind(session)
                .bind(ticket)
                .fetch_optional(connection)
                .await
            })
            .await?;
        Ok(row.map_or((None, None), |CallerAndTicket(caller, ticket)| (Some(caller), ticket)))
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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
        let comment = outcome
            .comment
            .as_ref()
            .ok_or_else(|| StoreError::Internal("the change added no comment".into()))?;
        Self::commit_keeping(tx, Some(key), comment).await?;
        self.announce_change_to(id);
        Ok(Write::Written(outcome))
    }
}

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
    Option<i32>: Column<DB>,
    Option<String>: Column<DB>,
    Option<DateTime<Utc>>: Column<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
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
        .ok_or(StoreError::NotFound("ticket not found"))?;

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
                .map_err(StoreError::Internal)?;
            access::check_assignable(agent_id, agent)?;
        }
        let Some(write) = change.write_to(&current, now) else {
            return Ok(ChangeOutcome { ticket: current, comment: None });
        };
        let after = write.fields;
        // Only the columns that change are named: SQLite rewrites the entries of every index on a
        // column the statement sets, changed or not (three more for a priority change).
        let mut update = QueryBuilder::<DB>::new("UPDATE tickets SET updated_at = ");
        update.push_bind(after.updated_at);
        if after.status != current.status {
            update.push(", status = ").push_bind(after.status.as_str());
        }
        if after.priority != current.priority {
            update.push(", priority = ").push_bind(after.priority.as_str());
        }
        if after.assigned_to != current.assigned_to {
            update.push(", assigned_to = ").push_bind(after.assigned_to);
        }
        if after.embed_token != current.embed_token {
            update.push(", embed_token = ").push_bind(after.embed_token);
        }
        update.push(" WHERE id = ").push_bind(id).push(concat!(" RETURNING ", ticket_columns!()));
        let mut ticket: Ticket = update.build_query_as().fetch_one(&mut **tx).await?;

        let comment: Option<Comment> = match &change.comment {
            Some(comment) => {
                let files = Self::take_uploads(tx, comment.author_id, &comment.attachments, now).await?;
                let added: Comment = sqlx::query_as(concat!(
                    "INSERT INTO comments (ticket_id, author_id, body, internal, created_at, attachments)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
                    comment_columns!()
                ))
                .bind(id)
                .bind(comment.author_id)
                .bind(comment.body.as_str())
                .bind(comment.internal)
                .bind(now)
                .bind(files.to_column())
                .fetch_one(&mut **tx)
                .await?;
                Self::place_uploads(tx, &files, id, Some(added.id), comment.internal).await?;
                Some(added)
            }
            None => None,
        };
        for event in &write.events {
            let comment_id = comment.as_ref().filter(|_| event.kind == EventKind::CommentAdded).map(|c| c.id);
            Self::record_event(tx, id, Some(actor), event, comment_id, now).await?;
        }
        let reply = change.comment.as_ref().filter(|comment| !comment.internal).map(|comment| match comment
            .author_role
        {
            Role::Customer => Reply::ByCustomer,
            Role::Agent | Role::Admin => Reply::ByStaff,
        });
        Self::move_clocks(tx, Some(&current), &mut ticket, reply, now).await?;
        Ok(ChangeOutcome { ticket, comment })
    }
}

/// A row of `users LEFT JOIN tickets`: the caller's columns, its id as `caller_id` beside the
/// ticket's `id`, then the ticket's (null when there is no such ticket), read by the ticket's own
/// `FromRow`, so its columns are named once, in `with_ticket_columns!`.
struct CallerAndTicket(Caller, Option<Ticket>);

impl<'r, R: Row> FromRow<'r, R> for CallerAndTicket
where
    Ticket: FromRow<'r, R>,
    &'r str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        let role = Role::try_from(row.try_get::<String, _>("role")?)
            .map_err(|e| sqlx::Error::ColumnDecode { index: "role".into(), source: e.into() })?;
        let user = User {
            id: row.try_get("caller_id")?,
            username: row.try_get("username")?,
            role,
            active: row.try_get("active")?,
            token_version: row.try_get("token_version")?,
        };
        let caller = Caller { user, session_open: row.try_get("session_open")? };
        let ticket = match row.try_get::<Option<TicketId>, _>("id")? {
            Some(_) => Some(Ticket::from_row(row)?),
            None => None,
        };
        Ok(Self(caller, ticket))
    }
}
