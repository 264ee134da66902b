use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, QueryBuilder, Type};
use uuid::Uuid;

use super::{Column, Dialect, SqlStore};
use crate::domain::{
    AttemptOutcome, Comment, Delivery, DeliveryId, DeliveryState, DueDelivery, InFlight, NewWebhook,
    NextStep, Ticket, TicketEvent, TicketId, Webhook, WebhookChange, WebhookId, WebhookSecret, webhook,
};
use crate::store::{Result, StoreError};
use crate::store::{Webhooks, now};

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
                    // A claimed delivery is next attempted when its lease ends, if not before.
                    "SELECT id, event_id, ticket_id, event_type, state, attempts, last_status, last_error,
                            COALESCE(leased_until, next_attempt_at) AS next_attempt_at, delivered_at, created_at
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
        // (Compared and ordered here: in SQL both databases ran the subquery once for each use.)
        // The worker's statements of one text are kept prepared: planning them was a third of
        // PostgreSQL's CPU a delivery (bench/README.md, "Kept plans"). Their plans follow the
        // due index's order whatever the table held when they were made (a generic plan made on
        // an empty table included), which only the statement with a time bound could leave,
        // for a bitmap scan: the claim turns those off.
        // Claimed deliveries keep their place in the due index, so the probe steps over the ones
        // whose lease runs: no more than the servers hold claimed.
        let at = now();
        let mut oldest: Vec<(WebhookId, Option<DateTime<Utc>>)> = self
            .read(async move |connection| {
                sqlx::query_as(
                    "SELECT w.id, (SELECT d.next_attempt_at FROM webhook_deliveries d
                         WHERE d.webhook_id = w.id AND d.state = 'pending' AND d.next_attempt_at IS NOT NULL
                           AND (d.leased_until IS NULL OR d.leased_until <= $1)
                         ORDER BY d.next_attempt_at LIMIT 1) FROM webhooks w WHERE w.active",
                )
                .bind(at)
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
            select.push(" AND (d.leased_until IS NULL OR d.leased_until <= ").push_bind(at).push(")");
            select
                .push(" ORDER BY d.next_attempt_at, d.id LIMIT ")
                .push_bind(i64::from(room))
                .push(DB::SKIP_LOCKED)
                .push(") ORDER BY d.next_attempt_at, d.id");
            due.extend(select.build_query_as::<DueDelivery>().fetch_all(&mut *tx).await?);
        }
        if due.is_empty() {
            return Ok(due);
        }
        // Claimed until the lease ends: a server that dies mid-attempt leaves the delivery due
        // again then. The ids are listed, so the update reads them by primary key; it changes no
        // indexed column, so on PostgreSQL it is a HOT update (migration 0024).
        let mut claim = QueryBuilder::<DB>::new("UPDATE webhook_deliveries SET leased_until = ");
        claim.push_bind(lease_until).push(" WHERE id ");
        DB::push_one_of(&mut claim, &due.iter().map(|delivery| delivery.id).collect::<Vec<_>>());
        claim.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(due)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn release_deliveries(&self, deliveries: &[DeliveryId]) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        // Due again at once: their due time has come, only the lease held them.
        let mut release = QueryBuilder::<DB>::new("UPDATE webhook_deliveries SET leased_until = NULL");
        release.push(" WHERE state = 'pending' AND id ");
        DB::push_one_of(&mut release, deliveries);
        release.build().execute(&mut *tx).await?;
        tx.commit().await?;
        self.announce_deliveries();
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn events_in_context(&self, events: &[i64]) -> Result<Vec<(Ticket, TicketEvent, Option<Comment>)>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ids = events.to_vec();
        let (events, tickets, comments) = self
            .read(async move |connection| {
                let mut sql = QueryBuilder::<DB>::new(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM ticket_events WHERE id "
                ));
                DB::push_one_of(&mut sql, &ids);
                let events: Vec<TicketEvent> = sql.build_query_as().fetch_all(&mut *connection).await?;
                if events.is_empty() {
                    return Ok((events, Vec::new(), Vec::new()));
                }
                let mut sql =
                    QueryBuilder::<DB>::new(concat!("SELECT ", ticket_columns!(), " FROM tickets WHERE id "));
                DB::push_one_of(&mut sql, &events.iter().map(|event| event.ticket_id).collect::<Vec<_>>());
                let tickets: Vec<Ticket> = sql.build_query_as().fetch_all(&mut *connection).await?;
                let commented: Vec<i64> = events.iter().filter_map(|event| event.comment_id).collect();
                let comments: Vec<Comment> = if commented.is_empty() {
                    Vec::new()
                } else {
                    let mut sql = QueryBuilder::<DB>::new(concat!(
                        "SELECT ",
                        comment_columns!(),
                        " FROM comments WHERE id "
                    ));
                    DB::push_one_of(&mut sql, &commented);
                    sql.build_query_as().fetch_all(&mut *connection).await?
                };
                Ok((events, tickets, comments))
            })
            .await?;
        Ok(events
            .into_iter()
            .filter_map(|event| {
                let ticket = tickets.iter().find(|ticket| ticket.id == event.ticket_id)?.clone();
                let comment = event.comment_id.and_then(|id| comments.iter().find(|c| c.id == id).cloned());
                Some((ticket, event, comment))
            })
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn record_attempts(&self, attempts: &[(DueDelivery, AttemptOutcome)]) -> Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        let now = now();
        let mut tx = self.begin_write().await?;
        // A record lost to a database crash leaves the delivery claimed until its lease ends,
        // then attempted again: at least once, one attempt at a time and in order all hold, so
        // its commit need not wait for the disk.
        if let Some(relax) = DB::COMMIT_WITHOUT_FLUSH {
            sqlx::query(relax).execute(&mut *tx).await?;
        }
        let done: Vec<&DueDelivery> = attempts
            .iter()
            .filter(|(_, outcome)| !matches!(outcome.next, NextStep::RetryAt(_)))
            .map(|(delivery, _)| delivery)
            .collect();
        if !done.is_empty() {
            // The ticket's writes queue deliveries with its row locked: locked here too, a
            // delivery queued meanwhile is either seen below or sees this one done. In id order,
            // so two servers recording at once cannot each wait on the other.
            let mut tickets: Vec<TicketId> = done.iter().map(|delivery| delivery.ticket_id).collect();
            tickets.sort_unstable();
            tickets.dedup();
            let mut lock = QueryBuilder::<DB>::new("SELECT id FROM tickets WHERE id ");
            DB::push_one_of(&mut lock, &tickets);
            lock.push(" ORDER BY id").push(DB::LOCK_ROW);
            lock.build().execute(&mut *tx).await?;
        }
        // Every attempt in one statement (a text for each number of them: planned on each use,
        // not kept, where they would push out the API's statements). The body is kept only for
        // a retry, which must send the same bytes; a delivery that is done needs it no more.
        let mut record = QueryBuilder::<DB>::new(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, body = v.column2, last_status = v.column3,
             last_error = v.column4, state = v.column5, next_attempt_at = v.column6, delivered_at = v.column7,
             leased_until = NULL
             FROM (",
        );
        record.push_values(attempts, |mut row, (delivery, outcome)| {
            let (state, next_attempt_at, delivered_at, body) = match outcome.next {
                NextStep::Delivered => (DeliveryState::Delivered, None, Some(now), None),
                NextStep::RetryAt(at) => (DeliveryState::Pending, Some(at), None, Some(outcome.body.clone())),
                NextStep::GiveUp => (DeliveryState::Failed, None, None, None),
            };
            row.push_bind(delivery.id)
                .push_bind(body)
                .push_bind(outcome.status.map(i32::from))
                .push_bind(outcome.error.clone())
                .push_bind(state.as_str())
                .push_bind(next_attempt_at)
                .push_bind(delivered_at);
        });
        record.push(") AS v WHERE webhook_deliveries.id = v.column1");
        record.build().persistent(false).execute(&mut *tx).await?;
        if !done.is_empty() {
            // Each ticket's next delivery to the webhook, if any, is due now: the first pending
            // one after the delivery just done (they go in id order). Looked for from that id up,
            // not from the ticket's first: on PostgreSQL the queue index keeps an entry for every
            // delivery of the ticket that was ever pending until vacuum removes it, and walking
            // them was most of what recording cost (bench/README.md, "Fewer index entries a delivery").
            let mut release = QueryBuilder::<DB>::new("UPDATE webhook_deliveries SET next_attempt_at = ");
            release.push_bind(now).push(
                " WHERE id IN (SELECT (SELECT n.id FROM webhook_deliveries n
                   WHERE n.webhook_id = v.column1 AND n.ticket_id = v.column2 AND n.id > v.column3
                     AND n.state = 'pending' ORDER BY n.id LIMIT 1) FROM (",
            );
            release.push_values(&done, |mut row, delivery| {
                row.push_bind(delivery.webhook_id).push_bind(delivery.ticket_id).push_bind(delivery.id);
            });
            release.push(") AS v)");
            release.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
