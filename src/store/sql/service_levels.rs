use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Transaction, Type};

use super::{Column, Dialect, SqlStore};
use crate::domain::Refusal;
use crate::domain::service_level::{Calendar, CalendarId, NewCalendar, NewSlaPolicy, SlaPolicy, SlaPolicyId};
use crate::store::{Result, ServiceLevels, StoreError, now, taken_if_unique};

const NO_CALENDAR: StoreError = StoreError::NotFound("calendar not found");
const NO_POLICY: StoreError = StoreError::NotFound("SLA policy not found");

#[async_trait]
impl<DB: Dialect> ServiceLevels for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    DateTime<Utc>: Column<DB>,
    Option<i64>: Column<DB>,
    Option<i32>: Column<DB>,
{
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn create_calendar(&self, calendar: &NewCalendar) -> Result<Calendar> {
        sqlx::query_as(concat!(
            "INSERT INTO calendars (name, time_zone, hours, holidays, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING ",
            calendar_columns!()
        ))
        .bind(&calendar.name)
        .bind(&calendar.time_zone)
        .bind(calendar.hours.to_column())
        .bind(calendar.holidays.to_column())
        .bind(now())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| taken_if_unique(e, "a calendar with that name exists"))
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn calendars(&self) -> Result<Vec<Calendar>> {
        self.read(async move |connection| {
            sqlx::query_as(concat!("SELECT ", calendar_columns!(), " FROM calendars ORDER BY id"))
                .fetch_all(connection)
                .await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn calendar(&self, id: CalendarId) -> Result<Option<Calendar>> {
        self.read(async move |connection| {
            sqlx::query_as(concat!("SELECT ", calendar_columns!(), " FROM calendars WHERE id = $1"))
                .bind(id)
                .fetch_optional(connection)
                .await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn replace_calendar(&self, id: CalendarId, calendar: &NewCalendar) -> Result<Calendar> {
        sqlx::query_as(concat!(
            "UPDATE calendars SET name = $2, time_zone = $3, hours = $4, holidays = $5, updated_at = $6
             WHERE id = $1 RETURNING ",
            calendar_columns!()
        ))
        .bind(id)
        .bind(&calendar.name)
        .bind(&calendar.time_zone)
        .bind(calendar.hours.to_column())
        .bind(calendar.holidays.to_column())
        .bind(now())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| taken_if_unique(e, "a calendar with that name exists"))?
        .ok_or(NO_CALENDAR)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn delete_calendar(&self, id: CalendarId) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let user: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sla_policies WHERE calendar_id = $1 ORDER BY position LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(policy) = user {
            return Err(in_use(&policy));
        }
        let deleted: Option<CalendarId> =
            sqlx::query_scalar("DELETE FROM calendars WHERE id = $1 RETURNING id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|error| match &error {
                    // A policy took it up meanwhile (PostgreSQL: its insert held the calendar's row).
                    sqlx::Error::Database(db) if db.is_foreign_key_violation() => in_use("another"),
                    _ => StoreError::Database(error),
                })?;
        deleted.ok_or(NO_CALENDAR)?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn create_sla_policy(&self, policy: &NewSlaPolicy) -> Result<SlaPolicy> {
        let mut tx = self.begin_write().await?;
        check_policy(&mut tx, None, policy).await?;
        let created = sqlx::query_as(concat!(
            "INSERT INTO sla_policies (name, position, conditions, targets, warn_before_minutes,
             calendar_id, pause_statuses, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING ",
            sla_policy_columns!()
        ))
        .bind(&policy.name)
        .bind(policy.position)
        .bind(policy.conditions.to_column())
        .bind(policy.targets.to_column())
        .bind(policy.warn_before_minutes)
        .bind(policy.calendar_id)
        .bind(policy.pause_statuses.to_column())
        .bind(now())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| taken_if_unique(e, "a policy with that name or position exists"))?;
        tx.commit().await?;
        Ok(created)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn sla_policies(&self) -> Result<Vec<SlaPolicy>> {
        self.read(async move |connection| {
            sqlx::query_as(concat!("SELECT ", sla_policy_columns!(), " FROM sla_policies ORDER BY position"))
                .fetch_all(connection)
                .await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn sla_policy(&self, id: SlaPolicyId) -> Result<Option<SlaPolicy>> {
        self.read(async move |connection| {
            sqlx::query_as(concat!("SELECT ", sla_policy_columns!(), " FROM sla_policies WHERE id = $1"))
                .bind(id)
                .fetch_optional(connection)
                .await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn replace_sla_policy(&self, id: SlaPolicyId, policy: &NewSlaPolicy) -> Result<SlaPolicy> {
        let mut tx = self.begin_write().await?;
        check_policy(&mut tx, Some(id), policy).await?;
        let replaced = sqlx::query_as(concat!(
            "UPDATE sla_policies SET name = $2, position = $3, conditions = $4, targets = $5,
             warn_before_minutes = $6, calendar_id = $7, pause_statuses = $8, updated_at = $9
             WHERE id = $1 RETURNING ",
            sla_policy_columns!()
        ))
        .bind(id)
        .bind(&policy.name)
        .bind(policy.position)
        .bind(policy.conditions.to_column())
        .bind(policy.targets.to_column())
        .bind(policy.warn_before_minutes)
        .bind(policy.calendar_id)
        .bind(policy.pause_statuses.to_column())
        .bind(now())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| taken_if_unique(e, "a policy with that name or position exists"))?
        .ok_or(NO_POLICY)?;
        tx.commit().await?;
        Ok(replaced)
    }

    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn delete_sla_policy(&self, id: SlaPolicyId) -> Result<()> {
        let deleted: Option<SlaPolicyId> =
            sqlx::query_scalar("DELETE FROM sla_policies WHERE id = $1 RETURNING id")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        deleted.map(|_| ()).ok_or(NO_POLICY)
    }
}

fn in_use(policy: &str) -> StoreError {
    Refusal::Conflict(format!("the calendar is used by the {policy:?} policy; change or delete that first"))
        .into()
}

/// Refuses a policy (the one `id` names, or a new one) whose name or position another has, or
/// whose calendar does not exist; the calendar's row stays locked until the write commits, so it
/// cannot go meanwhile.
async fn check_policy<DB: Dialect>(
    tx: &mut Transaction<'static, DB>,
    id: Option<SlaPolicyId>,
    policy: &NewSlaPolicy,
) -> Result<()>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
{
    let other: Option<(String, i32)> = sqlx::query_as(
        "SELECT name, position FROM sla_policies WHERE (name = $1 OR position = $2) AND id <> $3 LIMIT 1",
    )
    .bind(policy.name.as_str())
    .bind(policy.position)
    .bind(id.unwrap_or(0))
    .fetch_optional(&mut **tx)
    .await?;
    match other {
        Some((name, _)) if name == policy.name => {
            return Err(Refusal::Conflict(format!("a policy named {name:?} exists")).into());
        }
        Some((name, position)) => {
            return Err(Refusal::Conflict(format!("position {position} is the {name:?} policy's")).into());
        }
        None => {}
    }
    if let Some(calendar) = policy.calendar_id {
        let found: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM calendars WHERE id = $1{}",
            DB::LOCK_ROW
        )))
        .bind(calendar)
        .fetch_optional(&mut **tx)
        .await?;
        if found.is_none() {
            return Err(Refusal::Invalid(format!("calendar_id {calendar}: no such calendar")).into());
        }
    }
    Ok(())
}
