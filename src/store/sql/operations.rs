use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Column, Dialect, SqlStore};
use crate::domain::{TicketId, TicketStatus};
use crate::store::{Change, Operations, PoolStats, TicketWatch};
use crate::store::{Result, StoreError};

#[async_trait]
impl<DB: Dialect> Operations for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    i64: Column<DB>,
    Uuid: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn ready(&self) -> Result<()> {
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "readiness check failed");
                StoreError::Unavailable("the database is unreachable".into())
            })?;
        let known = DB::migrator().migrations.len();
        if usize::try_from(applied).unwrap_or(0) < known {
            return Err(StoreError::Unavailable(format!("{applied} of {known} migrations are applied")));
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn ticket_counts(&self) -> Result<Vec<(TicketStatus, i64)>> {
        let rows: Vec<(String, i64)> = self
            .read(async move |connection| {
                sqlx::query_as("SELECT status, count(*) FROM tickets GROUP BY status")
                    .fetch_all(connection)
                    .await
            })
            .await?;
        rows.into_iter()
            .map(|(status, count)| Ok((TicketStatus::try_from(status).map_err(StoreError::Internal)?, count)))
            .collect()
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    async fn watch(&self, ticket: TicketId) -> Result<TicketWatch> {
        let (watch, recorded) = self.watches.follow(ticket);
        if let Some(record) = DB::RECORD_WATCH {
            // The first stream of the ticket on this server records it; the others wait for that.
            recorded
                .get_or_try_init(async || {
                    sqlx::query(record)
                        .bind(ticket)
                        .bind(Utc::now() + crate::store::watches::LIFETIME)
                        .execute(&self.pool)
                        .await
                        .map(|_| ())
                })
                .await?;
        }
        Ok(watch)
    }
}
