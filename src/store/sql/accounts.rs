use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Transaction, Type};
use uuid::Uuid;

use super::{Column, Dialect, SqlStore};
use crate::domain::throttle::{self, Counter, Locked, OnSuccess};
use crate::domain::{
    Caller, NewRefreshToken, NewUser, RefreshVerdict, Role, StoredRefreshToken, ThrottleKey, User,
    UserChange, UserCredentials, UserId,
};
use crate::store::{Accounts, UserFilter, now, taken_if_unique};
use crate::store::{Result, StoreError};

#[async_trait]
impl<DB: Dialect> Accounts for SqlStore<DB>
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
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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
        .map_err(|e| taken_if_unique(e, "that username is taken"))
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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
        .ok_or(StoreError::NotFound("user not found"))?;
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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
            return Err(StoreError::NotFound("user not found"));
        }
        Self::password_proved(&mut tx, proved, now()).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn start_session(&self, keys: &[ThrottleKey], token: &NewRefreshToken) -> Result<()> {
        let now = now();
        let mut tx = self.begin_write().await?;
        Self::password_proved(&mut tx, keys, now).await?;
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
        Self::insert_refresh_token(&mut tx, token, now).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
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
}

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    Uuid: Column<DB>,
    DateTime<Utc>: Column<DB>,
{
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
}
