//! The SQL both backends share. Postgres and SQLite accept the same statements here (`$n`
//! parameters, `RETURNING`, `ON CONFLICT`); they differ only in how a write transaction locks
//! the row it reads. One macro writes the `Store` impl for each, rather than two copies that
//! drift apart: sqlx's generic bounds over two databases would be much harder to read.

macro_rules! ticket_columns {
    () => {
        "id, subject, description, status, priority, created_by, assigned_to, embed_token, created_at, updated_at"
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

macro_rules! user_columns {
    () => {
        "id, username, role, active, token_version"
    };
}

/// `begin_write`: the statement that opens every write transaction (on SQLite it must take the
/// write lock up front, or a writer racing another can fail at once with "database is locked");
/// `lock_row`: the suffix that locks the row a read-modify-write reads. The invoking module also defines
/// `push_text_search(&mut QueryBuilder, text)`, which pushes a subquery selecting the ids of the
/// tickets matching `text`: full-text search is where the two databases really differ; and a
/// `static MIGRATOR` with its migrations.
macro_rules! impl_store {
    ($store:ty, $db:ty, begin_write: $begin_write:literal, lock_row: $lock_row:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn ready(&self) -> $crate::error::Result<()> {
                let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|error| {
                        tracing::warn!(%error, "readiness check failed");
                        $crate::error::Error::Unavailable("the database is unreachable".into())
                    })?;
                let known = MIGRATOR.migrations.len();
                if usize::try_from(applied).unwrap_or(0) < known {
                    return Err($crate::error::Error::Unavailable(format!(
                        "{applied} of {known} migrations are applied"
                    )));
                }
                Ok(())
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            fn pool_stats(&self) -> $crate::store::PoolStats {
                $crate::store::PoolStats {
                    size: self.pool.size(),
                    idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
                    max: self.pool.options().get_max_connections(),
                }
            }

            async fn ticket_counts(&self) -> $crate::error::Result<Vec<($crate::domain::TicketStatus, i64)>> {
                let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, count(*) FROM tickets GROUP BY status")
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter()
                    .map(|(status, count)| Ok(($crate::domain::TicketStatus::try_from(status).map_err($crate::error::Error::Internal)?, count)))
                    .collect()
            }

            async fn user_credentials(
                &self,
                username: &str,
            ) -> $crate::error::Result<Option<$crate::domain::UserCredentials>> {
                // No stored name holds NUL (Postgres cannot even compare one), so none matches.
                if username.contains('\0') {
                    return Ok(None);
                }
                // Usernames are unique regardless of case (ASCII only: nothing else is allowed in
                // one), and found the same way, through the unique index on lower(username).
                let credentials = sqlx::query_as(concat!(
                    "SELECT ", $crate::store::sql::user_columns!(), ", password_hash FROM users WHERE lower(username) = $1"
                ))
                .bind(username.to_ascii_lowercase())
                .fetch_optional(&self.pool)
                .await?;
                Ok(credentials)
            }

            async fn user(&self, id: $crate::domain::UserId) -> $crate::error::Result<Option<$crate::domain::User>> {
                let user = sqlx::query_as(concat!("SELECT ", $crate::store::sql::user_columns!(), " FROM users WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(user)
            }

            async fn users(
                &self,
                filter: &$crate::store::UserFilter,
                after: Option<$crate::domain::UserId>,
                limit: u32,
            ) -> $crate::error::Result<Vec<$crate::domain::User>> {
                let users = sqlx::query_as(concat!(
                    "SELECT ", $crate::store::sql::user_columns!(), " FROM users
                     WHERE ($1 IS NULL OR role = $1) AND ($2 IS NULL OR active = $2) AND ($3 IS NULL OR id > $3)
                     ORDER BY id LIMIT $4"
                ))
                .bind(filter.role.map($crate::domain::Role::as_str))
                .bind(filter.active)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(users)
            }

            async fn create_user(&self, user: &$crate::domain::NewUser) -> $crate::error::Result<$crate::domain::User> {
                sqlx::query_as(concat!(
                    "INSERT INTO users (username, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING ",
                    $crate::store::sql::user_columns!()
                ))
                .bind(&user.username)
                .bind(&user.password_hash)
                .bind(user.role.as_str())
                .bind($crate::store::now())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| $crate::store::conflict_if_unique(e, "that username is taken"))
            }

            async fn update_user(
                &self,
                id: $crate::domain::UserId,
                change: &$crate::domain::UserChange,
            ) -> $crate::error::Result<$crate::domain::User> {
                let mut tx = self.pool.begin_with($begin_write).await?;
                // Deactivation retires every token issued before it, access tokens through
                // token_version and refresh tokens below: reactivating revives none of them.
                let deactivating = change.active == Some(false);
                let user: $crate::domain::User = sqlx::query_as(concat!(
                    "UPDATE users SET role = COALESCE($2, role), active = COALESCE($3, active),
                     token_version = token_version + $4 WHERE id = $1 RETURNING ",
                    $crate::store::sql::user_columns!()
                ))
                .bind(id)
                .bind(change.role.map($crate::domain::Role::as_str))
                .bind(change.active)
                .bind(i32::from(deactivating))
                .fetch_optional(&mut *tx)
                .await?
                .ok_or($crate::error::Error::NotFound("user not found"))?;
                if deactivating {
                    sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
                        .bind(id)
                        .bind($crate::store::now())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(user)
            }

            async fn set_password(
                &self,
                id: $crate::domain::UserId,
                password_hash: &str,
                proved: &[$crate::domain::ThrottleKey],
            ) -> $crate::error::Result<()> {
                let mut tx = self.pool.begin_with($begin_write).await?;
                let updated = sqlx::query(
                    "UPDATE users SET password_hash = $2, token_version = token_version + 1 WHERE id = $1",
                )
                .bind(id)
                .bind(password_hash)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() == 0 {
                    return Err($crate::error::Error::NotFound("user not found"));
                }
                password_proved(&mut tx, proved, $crate::store::now()).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_ticket(
                &self,
                ticket: &$crate::domain::NewTicket,
                once: Option<&$crate::store::Idempotent<'_, $crate::domain::Ticket>>,
            ) -> $crate::error::Result<$crate::domain::Ticket> {
                let now = $crate::store::now();
                let mut tx = self.pool.begin_with($begin_write).await?;
                if let Some(once) = once {
                    claim_idempotency_key(&mut tx, once.key, now).await?;
                }
                let created: $crate::domain::Ticket = sqlx::query_as(concat!(
                    "INSERT INTO tickets (subject, description, status, priority, created_by, embed_token, created_at, updated_at)
                     VALUES ($1, $2, 'open', $3, $4, $5, $6, $6) RETURNING ",
                    $crate::store::sql::ticket_columns!()
                ))
                .bind(ticket.subject.as_str())
                .bind(ticket.description.as_str())
                .bind(ticket.priority.as_str())
                .bind(ticket.created_by)
                .bind(uuid::Uuid::new_v4())
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let event = $crate::domain::NewEvent {
                    kind: $crate::domain::EventKind::Created,
                    from: None,
                    to: Some(created.status.as_str().to_owned()),
                    internal: false,
                };
                record_event(&mut tx, created.id, ticket.created_by, &event, None, now).await?;
                commit_with_response(tx, once, &created).await?;
                Ok(created)
            }

            async fn comments(
                &self,
                ticket: $crate::domain::TicketId,
                include_internal: bool,
            ) -> $crate::error::Result<Vec<$crate::domain::Comment>> {
                let comments = sqlx::query_as(concat!(
                    "SELECT ", $crate::store::sql::comment_columns!(),
                    " FROM comments WHERE ticket_id = $1 AND ($2 OR NOT internal) ORDER BY id"
                ))
                .bind(ticket)
                .bind(include_internal)
                .fetch_all(&self.pool)
                .await?;
                Ok(comments)
            }

            async fn events(
                &self,
                ticket: $crate::domain::TicketId,
                include_internal: bool,
            ) -> $crate::error::Result<Vec<$crate::domain::TicketEvent>> {
                let events = sqlx::query_as(concat!(
                    "SELECT ", $crate::store::sql::event_columns!(),
                    " FROM ticket_events WHERE ticket_id = $1 AND ($2 OR NOT internal) ORDER BY id"
                ))
                .bind(ticket)
                .bind(include_internal)
                .fetch_all(&self.pool)
                .await?;
                Ok(events)
            }

            async fn ticket(
                &self,
                id: $crate::domain::TicketId,
            ) -> $crate::error::Result<Option<$crate::domain::Ticket>> {
                let ticket = sqlx::query_as(concat!("SELECT ", $crate::store::sql::ticket_columns!(), " FROM tickets WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(ticket)
            }

            async fn user_and_ticket(
                &self,
                user: $crate::domain::UserId,
                ticket: $crate::domain::TicketId,
            ) -> $crate::error::Result<(Option<$crate::domain::User>, Option<$crate::domain::Ticket>)> {
                let row: Option<$crate::store::UserAndTicketRow> = sqlx::query_as(
                    "SELECT u.id, u.username, u.role, u.active, u.token_version,
                            t.id AS t_id, t.subject AS t_subject, t.description AS t_description,
                            t.status AS t_status, t.priority AS t_priority, t.created_by AS t_created_by,
                            t.assigned_to AS t_assigned_to, t.embed_token AS t_embed_token,
                            t.created_at AS t_created_at, t.updated_at AS t_updated_at
                     FROM users u LEFT JOIN tickets t ON t.id = $2 WHERE u.id = $1",
                )
                .bind(user)
                .bind(ticket)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(row) => row.split().map(|(user, ticket)| (Some(user), ticket)),
                    None => Ok((None, None)),
                }
            }

            async fn ticket_by_embed_token(
                &self,
                token: uuid::Uuid,
            ) -> $crate::error::Result<Option<$crate::domain::Ticket>> {
                let ticket =
                    sqlx::query_as(concat!("SELECT ", $crate::store::sql::ticket_columns!(), " FROM tickets WHERE embed_token = $1"))
                        .bind(token)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(ticket)
            }

            async fn tickets(
                &self,
                query: &$crate::store::TicketQuery,
            ) -> $crate::error::Result<Vec<$crate::domain::Ticket>> {
                use $crate::domain::TicketScope;
                use $crate::store::SortKey;

                let mut sql = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ", $crate::store::sql::ticket_columns!(), " FROM tickets WHERE 1 = 1"
                ));
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
                if let Some(text) = &query.text {
                    push_text_search(&mut sql, text);
                }
                // Keyset pagination: rows strictly after the cursor's row, in the sort order.
                let (before, order) = if query.sort.descending { ("<", "DESC") } else { (">", "ASC") };
                if let Some(after) = &query.after {
                    match (query.sort.key, after.updated_at) {
                        (SortKey::Updated, Some(at)) => {
                            sql.push(format_args!(" AND (updated_at {before} ")).push_bind(at);
                            sql.push(" OR (updated_at = ").push_bind(at);
                            sql.push(format_args!(" AND id {before} ")).push_bind(after.id).push("))");
                        }
                        _ => {
                            sql.push(format_args!(" AND id {before} ")).push_bind(after.id);
                        }
                    }
                }
                match query.sort.key {
                    SortKey::Created => sql.push(format_args!(" ORDER BY id {order}")),
                    SortKey::Updated => sql.push(format_args!(" ORDER BY updated_at {order}, id {order}")),
                };
                sql.push(" LIMIT ").push_bind(i64::from(query.limit));
                Ok(sql.build_query_as().fetch_all(&self.pool).await?)
            }

            async fn update_ticket(
                &self,
                id: $crate::domain::TicketId,
                actor: $crate::domain::UserId,
                edit: &$crate::store::TicketEdit<'_>,
                once: Option<&$crate::store::Idempotent<'_, $crate::store::ChangeOutcome>>,
            ) -> $crate::error::Result<$crate::store::ChangeOutcome> {
                let now = $crate::store::now();
                let mut tx = self.pool.begin_with($begin_write).await?;
                if let Some(once) = once {
                    claim_idempotency_key(&mut tx, once.key, now).await?;
                }
                let current: $crate::domain::Ticket = sqlx::query_as(concat!(
                    "SELECT ", $crate::store::sql::ticket_columns!(), " FROM tickets WHERE id = $1", $lock_row
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or($crate::error::Error::NotFound("ticket not found"))?;

                let change = edit(&current)?;
                if let Some(agent_id) = change.new_assignee(&current) {
                    let agent: Option<(String, bool)> = sqlx::query_as("SELECT role, active FROM users WHERE id = $1")
                        .bind(agent_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let agent = agent
                        .map(|(role, active)| $crate::domain::Role::try_from(role).map(|role| (role, active)))
                        .transpose()
                        .map_err($crate::error::Error::Internal)?;
                    $crate::store::ensure_assignable(agent_id, agent)?;
                }
                let events = $crate::domain::event::events_for(&current, &change);
                if events.is_empty() {
                    let outcome = $crate::store::ChangeOutcome { ticket: current, comment: None };
                    commit_with_response(tx, once, &outcome).await?;
                    return Ok(outcome);
                }

                let after = change.apply_to(&current);
                // `updated_at` (and with it the ETag and the embed's `last_updated`) is what
                // customers and the embed see move: a change only staff can see leaves it.
                let updated_at = if events.iter().all(|event| event.internal) { current.updated_at } else { now };
                let embed_token = if change.rotate_embed_token { uuid::Uuid::new_v4() } else { current.embed_token };
                let ticket = sqlx::query_as(concat!(
                    "UPDATE tickets SET status = $2, priority = $3, assigned_to = $4, embed_token = $5, updated_at = $6
                     WHERE id = $1 RETURNING ",
                    $crate::store::sql::ticket_columns!()
                ))
                .bind(id)
                .bind(after.status.as_str())
                .bind(after.priority.as_str())
                .bind(after.assigned_to)
                .bind(embed_token)
                .bind(updated_at)
                .fetch_one(&mut *tx)
                .await?;

                let comment: Option<$crate::domain::Comment> = match &change.comment {
                    Some(comment) => Some(
                        sqlx::query_as(concat!(
                            "INSERT INTO comments (ticket_id, author_id, body, internal, created_at)
                             VALUES ($1, $2, $3, $4, $5) RETURNING ",
                            $crate::store::sql::comment_columns!()
                        ))
                        .bind(id)
                        .bind(comment.author_id)
                        .bind(comment.body.as_str())
                        .bind(comment.internal)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?,
                    ),
                    None => None,
                };
                for event in &events {
                    let comment_id = comment.as_ref().filter(|_| event.kind == $crate::domain::EventKind::CommentAdded).map(|c| c.id);
                    record_event(&mut tx, id, actor, event, comment_id, now).await?;
                }
                let outcome = $crate::store::ChangeOutcome { ticket, comment };
                commit_with_response(tx, once, &outcome).await?;
                Ok(outcome)
            }

            async fn admit_login(&self, keys: &[$crate::domain::ThrottleKey]) -> $crate::error::Result<()> {
                let now = $crate::store::now();
                let mut tx = self.pool.begin_with($begin_write).await?;
                sqlx::query("DELETE FROM login_throttle WHERE last_attempt < $1")
                    .bind(now - $crate::domain::throttle::WINDOW)
                    .execute(&mut *tx)
                    .await?;
                let known_source = match $crate::domain::throttle::source_key(keys) {
                    Some(source) => sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM known_login_sources WHERE key = $1 AND last_success >= $2)",
                    )
                    .bind(source)
                    .bind(now - $crate::domain::throttle::KNOWN_SOURCE_LIFETIME)
                    .fetch_one(&mut *tx)
                    .await?,
                    None => false,
                };
                let mut counted = Vec::with_capacity(keys.len());
                for key in $crate::domain::throttle::counted(keys, known_source) {
                    sqlx::query(
                        "INSERT INTO login_throttle (key, failures, last_attempt) VALUES ($1, 0, $2) ON CONFLICT (key) DO NOTHING",
                    )
                    .bind(&key.key)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let (failures, last_attempt, locked_until): (i32, chrono::DateTime<chrono::Utc>, Option<chrono::DateTime<chrono::Utc>>) =
                        sqlx::query_as(concat!(
                            "SELECT failures, last_attempt, locked_until FROM login_throttle WHERE key = $1", $lock_row
                        ))
                        .bind(&key.key)
                        .fetch_one(&mut *tx)
                        .await?;
                    let counter = $crate::domain::throttle::Counter {
                        failures: u32::try_from(failures).unwrap_or(0),
                        last_attempt,
                        locked_until,
                    };
                    match key.rule.admit(Some(counter), now) {
                        Ok(next) => counted.push((key, next)),
                        // Dropping the transaction rolls back: a refused attempt counts nothing.
                        Err(until) => {
                            return Err($crate::error::Error::Throttled {
                                retry_after: $crate::domain::throttle::seconds_until(until, now),
                            });
                        }
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
                Ok(())
            }

            async fn start_session(
                &self,
                keys: &[$crate::domain::ThrottleKey],
                token: &$crate::domain::NewRefreshToken,
            ) -> $crate::error::Result<()> {
                let now = $crate::store::now();
                let mut tx = self.pool.begin_with($begin_write).await?;
                password_proved(&mut tx, keys, now).await?;
                sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
                insert_refresh_token(&mut tx, token, now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn rotate_refresh_token(
                &self,
                presented: &str,
                next_hash: &str,
                expires_at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::Result<$crate::domain::User> {
                use $crate::domain::RefreshVerdict;
                let now = $crate::store::now();
                let mut tx = self.pool.begin_with($begin_write).await?;
                let stored: Option<$crate::domain::StoredRefreshToken> = sqlx::query_as(concat!(
                    "SELECT family, user_id, token_version, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
                    $lock_row
                ))
                .bind(presented)
                .fetch_optional(&mut *tx)
                .await?;
                let stored = stored.ok_or($crate::store::REFRESH_REFUSED)?;
                let user: Option<$crate::domain::User> =
                    sqlx::query_as(concat!("SELECT ", $crate::store::sql::user_columns!(), " FROM users WHERE id = $1"))
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
                        let next = $crate::domain::NewRefreshToken {
                            token_hash: next_hash.to_owned(),
                            family: stored.family,
                            user_id: user.id,
                            token_version: user.token_version,
                            expires_at,
                        };
                        insert_refresh_token(&mut tx, &next, now).await?;
                        tx.commit().await?;
                        Ok(user)
                    }
                    (RefreshVerdict::RevokeFamily, _) => {
                        revoke_family(&mut tx, stored.family, now).await?;
                        tx.commit().await?;
                        tracing::warn!(user_id = stored.user_id, "a used refresh token was presented again: its family is revoked");
                        Err($crate::store::REFRESH_REFUSED)
                    }
                    _ => Err($crate::store::REFRESH_REFUSED),
                }
            }

            async fn revoke_refresh_family(&self, presented: &str) -> $crate::error::Result<()> {
                let now = $crate::store::now();
                let mut tx = self.pool.begin_with($begin_write).await?;
                let family: Option<uuid::Uuid> =
                    sqlx::query_scalar("SELECT family FROM refresh_tokens WHERE token_hash = $1")
                        .bind(presented)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(family) = family {
                    revoke_family(&mut tx, family, now).await?;
                }
                tx.commit().await?;
                Ok(())
            }
        }

        /// After a correct password: applies each throttle key's `on_success`, and remembers the
        /// account-and-address pair as a known source.
        async fn password_proved(
            tx: &mut sqlx::Transaction<'static, $db>,
            keys: &[$crate::domain::ThrottleKey],
            now: chrono::DateTime<chrono::Utc>,
        ) -> $crate::error::Result<()> {
            use $crate::domain::throttle::OnSuccess;
            for key in keys {
                let statement = match key.rule.on_success {
                    OnSuccess::Forget => "DELETE FROM login_throttle WHERE key = $1",
                    OnSuccess::TakeBack => "UPDATE login_throttle SET failures = failures - 1 WHERE key = $1 AND failures > 0",
                };
                sqlx::query(statement).bind(&key.key).execute(&mut **tx).await?;
            }
            if let Some(source) = $crate::domain::throttle::source_key(keys) {
                // Expired sources are pruned here, on success, not on every attempt.
                sqlx::query("DELETE FROM known_login_sources WHERE last_success < $1")
                    .bind(now - $crate::domain::throttle::KNOWN_SOURCE_LIFETIME)
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
            tx: &mut sqlx::Transaction<'static, $db>,
            token: &$crate::domain::NewRefreshToken,
            now: chrono::DateTime<chrono::Utc>,
        ) -> $crate::error::Result<()> {
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
            tx: &mut sqlx::Transaction<'static, $db>,
            family: uuid::Uuid,
            now: chrono::DateTime<chrono::Utc>,
        ) -> $crate::error::Result<()> {
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family = $1 AND revoked_at IS NULL")
                .bind(family)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        /// Claims `key` for this transaction's write, or answers the request that used it first:
        /// its stored response if the request is the same, a `Validation` error if not. On
        /// Postgres a concurrent claim of the same key waits on the unique index until this
        /// transaction ends, then finds the stored response; SQLite runs one writer at a time.
        async fn claim_idempotency_key(
            tx: &mut sqlx::Transaction<'static, $db>,
            key: &$crate::domain::IdempotencyKey,
            now: chrono::DateTime<chrono::Utc>,
        ) -> $crate::error::Result<()> {
            sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND created_at < $2")
                .bind(key.user_id)
                .bind(now - $crate::domain::idempotency::KEY_LIFETIME)
                .execute(&mut **tx)
                .await?;
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body, created_at)
                 VALUES ($1, $2, $3, 0, '', $4) ON CONFLICT (user_id, key) DO NOTHING",
            )
            .bind(key.user_id)
            .bind(&key.key)
            .bind(&key.fingerprint)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            if claimed.rows_affected() == 1 {
                return Ok(());
            }
            let (fingerprint, status, location, body): (String, i16, Option<String>, String) = sqlx::query_as(
                "SELECT fingerprint, status, location, body FROM idempotency_keys WHERE user_id = $1 AND key = $2",
            )
            .bind(key.user_id)
            .bind(&key.key)
            .fetch_one(&mut **tx)
            .await?;
            if fingerprint != key.fingerprint {
                return Err($crate::error::Error::Validation(
                    "this Idempotency-Key was already used for a different request; use a new key for a new request".into(),
                ));
            }
            Err($crate::error::Error::Replayed($crate::domain::StoredResponse { status, location, body }))
        }

        /// Stores the response to a keyed write beside the write, then commits both.
        async fn commit_with_response<T>(
            mut tx: sqlx::Transaction<'static, $db>,
            once: Option<&$crate::store::Idempotent<'_, T>>,
            outcome: &T,
        ) -> $crate::error::Result<()> {
            if let Some(once) = once {
                let response = (once.respond)(outcome)?;
                sqlx::query("UPDATE idempotency_keys SET status = $3, location = $4, body = $5 WHERE user_id = $1 AND key = $2")
                    .bind(once.key.user_id)
                    .bind(&once.key.key)
                    .bind(response.status)
                    .bind(response.location)
                    .bind(response.body)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }

        async fn record_event(
            tx: &mut sqlx::Transaction<'static, $db>,
            ticket: $crate::domain::TicketId,
            actor: $crate::domain::UserId,
            event: &$crate::domain::NewEvent,
            comment_id: Option<i64>,
            at: chrono::DateTime<chrono::Utc>,
        ) -> $crate::error::Result<()> {
            sqlx::query(
                "INSERT INTO ticket_events (ticket_id, actor_id, kind, from_value, to_value, comment_id, internal, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(ticket)
            .bind(actor)
            .bind(event.kind.as_str())
            .bind(event.from.as_deref())
            .bind(event.to.as_deref())
            .bind(comment_id)
            .bind(event.internal)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
    };
}

pub(super) use {comment_columns, event_columns, impl_store, ticket_columns, user_columns};
