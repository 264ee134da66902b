use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Column, Dialect, SqlStore};
use crate::domain::{
    Attachment, AttachmentId, Attachments as FileList, EventKind, NewEvent, Refusal, UserId,
};
use crate::store::{Attachments, Result, StoreError, now};

#[async_trait]
impl<DB: Dialect> Attachments for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    i64: Column<DB>,
    bool: Column<DB>,
    uuid::Uuid: Column<DB>,
    DateTime<Utc>: Column<DB>,
    Option<i64>: Column<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn begin_upload(
        &self,
        uploader: UserId,
        key: &str,
        filename: &str,
        expires_at: DateTime<Utc>,
        pending_cap: u64,
    ) -> Result<AttachmentId> {
        let mut tx = self.begin_write().await?;
        // One user's uploads starting together count one after the other.
        let _: Option<UserId> = sqlx::query_scalar(Self::locking("SELECT id FROM users WHERE id = $1"))
            .bind(uploader)
            .fetch_optional(&mut *tx)
            .await?;
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM attachments
             WHERE uploader_id = $1 AND ticket_id IS NULL AND expires_at IS NOT NULL AND deleted_at IS NULL",
        )
        .bind(uploader)
        .fetch_one(&mut *tx)
        .await?;
        if u64::try_from(pending).unwrap_or(0) >= pending_cap {
            return Err(StoreError::Refused(Refusal::TooMany(
                "you hold as many unused uploads as one user may; send them with a ticket or comment, or let them expire",
            )));
        }
        let id = sqlx::query_scalar(
            "INSERT INTO attachments (uploader_id, storage_key, filename, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(uploader)
        .bind(key)
        .bind(filename)
        .bind(expires_at)
        .bind(now())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn finish_upload(
        &self,
        id: AttachmentId,
        content_type: &str,
        size: u64,
        sha256: &str,
        token_hash: &str,
    ) -> Result<Attachment> {
        let mut tx = self.begin_write().await?;
        let size = i64::try_from(size).map_err(|_| StoreError::Internal("a file larger than i64".into()))?;
        let attachment = sqlx::query_as(concat!(
            "UPDATE attachments SET content_type = $2, size = $3, sha256 = $4, token_hash = $5
             WHERE id = $1 AND ticket_id IS NULL AND token_hash IS NULL AND expires_at > $6 RETURNING ",
            attachment_columns!()
        ))
        .bind(id)
        .bind(content_type)
        .bind(size)
        .bind(sha256)
        .bind(token_hash)
        .bind(now())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("the upload expired before its bytes were stored"))?;
        tx.commit().await?;
        Ok(attachment)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn attachment(&self, id: AttachmentId) -> Result<Option<Attachment>> {
        let attachment = self
            .read(async move |connection| {
                sqlx::query_as(concat!(
                    "SELECT ",
                    attachment_columns!(),
                    " FROM attachments WHERE id = $1 AND deleted_at IS NULL AND (ticket_id IS NOT NULL OR token_hash IS NOT NULL)"
                ))
                .bind(id)
                .fetch_optional(connection)
                .await
            })
            .await?;
        Ok(attachment)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn delete_attachment(&self, id: AttachmentId, actor: UserId) -> Result<Attachment> {
        let now = now();
        let mut tx = self.begin_write().await?;
        let select = concat!(
            "SELECT ",
            attachment_columns!(),
            " FROM attachments WHERE id = $1 AND deleted_at IS NULL AND ticket_id IS NOT NULL"
        );
        let attachment: Attachment = sqlx::query_as(Self::locking(select))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("attachment not found"))?;
        let ticket = attachment.ticket_id.ok_or(StoreError::NotFound("attachment not found"))?;
        // Detached and expired at once: the sweeper removes its bytes and then the row, should the
        // caller not get to remove the bytes itself.
        sqlx::query(
            "UPDATE attachments SET deleted_at = $2, deleted_by = $3, ticket_id = NULL, comment_id = NULL,
                 token_hash = NULL, expires_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        // The list it is shown in: the comment's, or the ticket's own.
        let (table, row) = match attachment.comment_id {
            Some(comment) => ("comments", comment),
            None => ("tickets", ticket),
        };
        let select =
            sqlx::AssertSqlSafe(format!("SELECT attachments FROM {table} WHERE id = $1{}", DB::LOCK_ROW));
        let listed: String = sqlx::query_scalar(select).bind(row).fetch_one(&mut *tx).await?;
        let mut files = FileList::try_from(listed).map_err(StoreError::Internal)?;
        files.0.retain(|file| file.id != id);
        let update = sqlx::AssertSqlSafe(format!("UPDATE {table} SET attachments = $2 WHERE id = $1"));
        sqlx::query(update).bind(row).bind(files.to_column()).execute(&mut *tx).await?;
        let event = NewEvent {
            kind: EventKind::AttachmentDeleted,
            from: Some(format!("{id} {}", attachment.filename)),
            to: None,
            internal: attachment.internal,
        };
        Self::record_event(&mut tx, ticket, Some(actor), &event, None, now).await?;
        tx.commit().await?;
        self.announce_change_to(ticket);
        Ok(attachment)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn expired_uploads(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(AttachmentId, String)>> {
        let mut tx = self.begin_write().await?;
        // Claimed rows lose their token (nothing can reference them any more) and move their
        // expiry to the lease's end, so another sweeper takes them only if this one dies.
        let claimed = sqlx::query_as(
            "UPDATE attachments SET token_hash = NULL, expires_at = $2
             WHERE id IN (SELECT id FROM attachments WHERE ticket_id IS NULL AND expires_at < $1
                          ORDER BY expires_at LIMIT $3)
               AND ticket_id IS NULL AND expires_at < $1
             RETURNING id, storage_key",
        )
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(claimed)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn forget_uploads(&self, ids: &[AttachmentId]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for id in ids {
            sqlx::query("DELETE FROM attachments WHERE id = $1 AND ticket_id IS NULL")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
