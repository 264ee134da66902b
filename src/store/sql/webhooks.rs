use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, QueryBuilder, Type};
use uuid::Uuid;

use super::{Column, Dialect, SqlStore};
use crate::domain::{
    AttemptOutcome, Comment, Delivery, DeliveryId, DeliveryState, DueDelivery, InFlight, NewWebhook,
    NextStep, Ticket, TicketEvent, Webhook, WebhookChange, WebhookId, WebhookSecret, webhook,
};
use crate::store::{Result, StoreError};
use crate::store::{Tickets, Webhooks, now};

#[async_trait]
impl<DB: Dialect> Webhooks for SqlStore<DB>
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
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn webhook(&self, id: WebhookId) -> Result<Option<Webhook>> {
        self.read(async move |connection| {
            sqlx::query_as(concat!("SELECT ", webhook_columns!(), " FROM webhooks WHERE id = $1"))
                .bind(id)
                .fetch_optional(connection)
                .await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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
        .ok_or(StoreError::NotFound("webhook not found"))?;
        tx.commit().await?;
        // Deliveries held back while it was inactive are due again.
        self.announce_deliveries();
        Ok(updated)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn delete_webhook(&self, id: WebhookId) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // Not left to a foreign key: see migration 0019 (PostgreSQL).
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted: Option<WebhookId> =
            sqlx::query_scalar("DELETE FROM webhooks WHERE id = $1 RETURNING id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        deleted.ok_or(StoreError::NotFound("webhook not found"))?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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
        .ok_or(StoreError::NotFound("webhook not found"))?;
        tx.commit().await?;
        Ok(updated)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn claim_deliveries(
        &self,
        limit: u32,
        lease_until: DateTime<Utc>,
        in_flight: &InFlight,
    ) -> Result<Vec<DueDelivery>> {
        // Looked for first on a read connection (most polls find nothing, and take no write
        // lock): each active webhook's oldest due delivery, one index probe per webhook.
        // The worker's statements are planned on each use, not once per connection: a plan
        // made while the deliveries were few (a fresh database) scans them all, and would be
        // kept while they grow into a backlog.
        // (Compared and ordered here: in SQL both databases ran the subquery once for each use.)
        let at = now();
        let mut oldest: Vec<(WebhookId, Option<DateTime<Utc>>)> = self
            .read(async move |connection| {
                sqlx::query_as(
                    "SELECT w.id, (SELECT d.next_attempt_at FROM webhook_deliveries d
                         WHERE d.webhook_id = w.id AND d.state = 'pending' AND d.next_attempt_at IS NOT NULL
                         ORDER BY d.next_attempt_at LIMIT 1) FROM webhooks w WHERE w.active",
                )
                .persistent(false)
                .fetch_all(connection)
                .await
            })
            .await?;
        oldest.retain(|(_, due)| due.is_some_and(|due| due <= at));
        oldest.sort_by_key(|&(webhook, due)| (due, webhook));
        let shares = in_flight.shares(oldest.into_iter().map(|(webhook, _)| webhook), limit);
        if shares.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        if let Some(index_order) = DB::CLAIM_IN_INDEX_ORDER {
            sqlx::query(index_order).execute(&mut *tx).await?;
        }
        // Only a ticket's first pending delivery to a webhook is ever due (see migration 0009).
        // The inner SELECT walks the webhook's due index in its order, stopping after `room`
        // rows it could lock, however many are due (see `Dialect::CLAIM_IN_INDEX_ORDER`).
        let mut due: Vec<DueDelivery> = Vec::new();
        for (webhook, room) in shares {
            let mut select = QueryBuilder::<DB>::new(
                "SELECT d.id, d.webhook_id, d.ticket_id, d.event_id, d.attempts, d.body, w.url, w.secret,
                        w.include_embed_token
                 FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
                 WHERE w.active AND d.id IN (SELECT d.id FROM webhook_deliveries d WHERE d.webhook_id = ",
            );
            select.push_bind(webhook);
            select.push(" AND d.state = 'pending' AND d.next_attempt_at <= ").push_bind(at);
            select
                .push(" ORDER BY d.next_attempt_at, d.id LIMIT ")
                .push_bind(i64::from(room))
                .push(DB::SKIP_LOCKED)
                .push(") ORDER BY d.next_attempt_at, d.id");
            due.extend(select.build_query_as::<DueDelivery>().persistent(false).fetch_all(&mut *tx).await?);
        }
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
        claim.build().persistent(false).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(due)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn record_attempt(&self, delivery: &DueDelivery, outcome: &AttemptOutcome) -> Result<()> {
        let now = now();
        let (state, next_attempt_at, delivered_at) = match outcome.next {
            NextStep::Delivered => (DeliveryState::Delivered, None, Some(now)),
            NextStep::RetryAt(at) => (DeliveryState::Pending, Some(at), None),
            NextStep::GiveUp => (DeliveryState::Failed, None, None),
        };
        let mut tx = self.begin_write().await?;
        // A record lost to a database crash leaves the delivery claimed until its lease ends,
        // then attempted again: at least once, one attempt at a time and in order all hold, so
        // its commit need not wait for the disk.
        if let Some(relax) = DB::COMMIT_WITHOUT_FLUSH {
            sqlx::query(relax).execute(&mut *tx).await?;
        }
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
        .persistent(false)
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
            .persistent(false)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
