use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, QueryBuilder, Transaction, Type};
use uuid::Uuid;

use super::{Column, Dialect, SqlStore};
use crate::domain::calendar::Schedule;
use crate::domain::service_level::{
    Calendar, CalendarId, Metric, NewCalendar, NewSlaPolicy, SlaPolicy, SlaPolicyId,
};
use crate::domain::sla_clock::{
    self, ClockNews, ClockStatus, RecordedNews, Reply, Schedules, SlaClock, SlaColumn,
};
use crate::domain::{EventKind, NewEvent, Refusal, Ticket, TicketId};
use crate::store::{Result, ServiceLevels, StoreError, now, taken_if_unique};

macro_rules! clock_columns {
    () => {
        "ticket_id, metric, cycle, policy_id, policy_name, target_minutes, warn_before_minutes, calendar_id,
         pause_statuses, used_seconds, running_since, due_at, warn_at, warned, breached_at, completed_at, achieved, next_check_at"
    };
}

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
    bool: Column<DB>,
    Uuid: Column<DB>,
    Option<String>: Column<DB>,
    Option<DateTime<Utc>>: Column<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"))]
    async fn check_clocks(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<RecordedNews>> {
        const DUE: &str =
            "SELECT ticket_id FROM sla_clocks WHERE next_check_at <= $1 ORDER BY next_check_at LIMIT $2";
        // Most ticks find nothing due: they look on a read connection, and take the write lock
        // (SQLite's one writer) only when there is something to write.
        let anything_due = self
            .read(async move |connection| {
                sqlx::query_scalar::<_, TicketId>(DUE).bind(now).bind(1i64).fetch_optional(connection).await
            })
            .await?
            .is_some();
        if !anything_due {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let mut due: Vec<TicketId> =
            sqlx::query_scalar(DUE).bind(now).bind(i64::from(limit)).fetch_all(&mut *tx).await?;
        due.sort_unstable();
        due.dedup();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        // The tickets' rows first, as every ticket write takes them: those another server, or a
        // write, holds are passed over until the next tick. Then their clocks, all at once.
        let mut sql =
            QueryBuilder::<DB>::new(concat!("SELECT ", ticket_columns!(), " FROM tickets d WHERE id "));
        DB::push_one_of(&mut sql, &due);
        sql.push(DB::SKIP_LOCKED);
        let tickets: Vec<Ticket> = sql.build_query_as().fetch_all(&mut *tx).await?;
        if tickets.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = QueryBuilder::<DB>::new(concat!(
            "SELECT ",
            clock_columns!(),
            " FROM sla_clocks WHERE ticket_id "
        ));
        DB::push_one_of(&mut sql, &tickets.iter().map(|ticket| ticket.id).collect::<Vec<_>>());
        sql.push(" ORDER BY ticket_id, metric");
        let all_clocks: Vec<SlaClock> = sql.build_query_as().fetch_all(&mut *tx).await?;
        let mut recorded = Vec::new();
        for mut ticket in tickets {
            let loaded: Vec<SlaClock> =
                all_clocks.iter().filter(|c| c.ticket_id == ticket.id).cloned().collect();
            let mut clocks = loaded.clone();
            let mut news = Vec::new();
            for clock in &mut clocks {
                news.extend(clock.check(now).into_iter().map(|item| (clock.metric, clock.cycle, item)));
            }
            recorded.extend(Self::save_clocks(&mut tx, &mut ticket, &loaded, &clocks, &news, now).await?);
        }
        tx.commit().await?;
        if !recorded.is_empty() {
            self.announce_deliveries();
        }
        Ok(recorded)
    }

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
        ));
        let created = bind_policy(created, policy)
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
        .bind(id);
        let replaced = bind_policy(replaced, policy)
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

/// Binds `policy`'s columns, then the time of the write, in the order both policy writes name
/// them.
fn bind_policy<'q, DB: Dialect, O>(
    query: sqlx::query::QueryAs<'q, DB, O, DB::Arguments>,
    policy: &'q NewSlaPolicy,
) -> sqlx::query::QueryAs<'q, DB, O, DB::Arguments>
where
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    String: Column<DB>,
    i32: Column<DB>,
    DateTime<Utc>: Column<DB>,
    Option<i64>: Column<DB>,
    Option<i32>: Column<DB>,
{
    query
        .bind(policy.name.as_str())
        .bind(policy.position)
        .bind(policy.conditions.to_column())
        .bind(policy.targets.to_column())
        .bind(policy.warn_before_minutes)
        .bind(policy.calendar_id)
        .bind(policy.pause_statuses.to_column())
        .bind(now())
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

/// The calendars a write's clocks count in, read once per write; a calendar deleted meanwhile
/// counts around the clock.
struct LoadedSchedules(HashMap<CalendarId, Schedule>);

impl Schedules for LoadedSchedules {
    fn schedule(&self, calendar: Option<CalendarId>) -> Schedule {
        calendar.and_then(|id| self.0.get(&id).cloned()).unwrap_or(Schedule::AroundTheClock)
    }
}

/// The service clocks' steps inside a ticket write's transaction.
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
    /// Moves the ticket's clocks for a write (`before` is the ticket as it was, `None` for a new
    /// one; `after` as written, whose `sla` this keeps up to date), and records their news.
    /// Writes that cannot touch a clock (an assignment, a note) cost nothing.
    pub(super) async fn move_clocks(
        tx: &mut Transaction<'static, DB>,
        before: Option<&Ticket>,
        after: &mut Ticket,
        reply: Option<Reply>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let priority_changed = before.is_none_or(|before| before.priority != after.priority);
        let status_changed = before.is_some_and(|before| before.status != after.status);
        if !priority_changed && !status_changed && reply.is_none() {
            return Ok(());
        }
        // A ticket has clocks exactly when its `sla` summary is set (`save_clocks` keeps the two
        // together in each transaction), so most writes, to tickets no policy covers, skip the read.
        let loaded = match before {
            Some(before) if !before.sla.is_none() => Self::clocks_of(tx, after.id).await?,
            _ => Vec::new(),
        };
        let may_start = priority_changed || reply == Some(Reply::ByCustomer);
        if loaded.is_empty() && !may_start {
            return Ok(());
        }
        let policies: Vec<SlaPolicy> = if may_start {
            sqlx::query_as(concat!("SELECT ", sla_policy_columns!(), " FROM sla_policies ORDER BY position"))
                .fetch_all(&mut **tx)
                .await?
        } else {
            Vec::new()
        };
        if loaded.is_empty() && policies.is_empty() {
            return Ok(());
        }
        let mut calendars: Vec<CalendarId> = loaded
            .iter()
            .map(|clock| clock.calendar_id)
            .chain(policies.iter().map(|policy| policy.calendar_id))
            .flatten()
            .collect();
        calendars.sort_unstable();
        calendars.dedup();
        let mut schedules = HashMap::new();
        for id in calendars {
            let calendar: Option<Calendar> =
                sqlx::query_as(concat!("SELECT ", calendar_columns!(), " FROM calendars WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?;
            if let Some(calendar) = calendar {
                schedules.insert(id, calendar.schedule());
            }
        }
        let mut clocks = loaded.clone();
        let news =
            sla_clock::react(&mut clocks, before, after, reply, &policies, &LoadedSchedules(schedules), now);
        Self::save_clocks(tx, after, &loaded, &clocks, &news, now).await?;
        Ok(())
    }

    async fn clocks_of(tx: &mut Transaction<'static, DB>, ticket: TicketId) -> Result<Vec<SlaClock>> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            clock_columns!(),
            " FROM sla_clocks WHERE ticket_id = $1 ORDER BY metric"
        ))
        .bind(ticket)
        .fetch_all(&mut **tx)
        .await?)
    }

    /// Writes what changed of `clocks` (read as `loaded`), the ticket's summary of them, and
    /// their `news` as staff-only history without an actor; returns the news as recorded.
    async fn save_clocks(
        tx: &mut Transaction<'static, DB>,
        ticket: &mut Ticket,
        loaded: &[SlaClock],
        clocks: &[SlaClock],
        news: &[(Metric, i32, ClockNews)],
        now: DateTime<Utc>,
    ) -> Result<Vec<RecordedNews>> {
        // Only what changed: a breach rewrites one clock, a reply one or two.
        for clock in clocks {
            if loaded.iter().find(|old| old.metric == clock.metric) != Some(clock) {
                Self::upsert_clock(tx, clock).await?;
            }
        }
        for gone in loaded.iter().filter(|old| clocks.iter().all(|clock| clock.metric != old.metric)) {
            sqlx::query("DELETE FROM sla_clocks WHERE ticket_id = $1 AND metric = $2")
                .bind(ticket.id)
                .bind(gone.metric.as_str())
                .execute(&mut **tx)
                .await?;
        }
        let summary = SlaColumn::of(clocks);
        if summary != ticket.sla {
            sqlx::query("UPDATE tickets SET sla = $2, sla_status = $3, sla_due_at = $4 WHERE id = $1")
                .bind(ticket.id)
                .bind(summary.to_column())
                .bind(summary.status().map(ClockStatus::as_str))
                .bind(summary.next_due())
                .execute(&mut **tx)
                .await?;
            ticket.sla = summary;
        }
        let mut recorded = Vec::with_capacity(news.len());
        for &(metric, _, item) in news {
            let policy =
                clocks.iter().find(|clock| clock.metric == metric).map(|clock| clock.policy_name.clone());
            let kind = match item {
                ClockNews::Warning => EventKind::SlaWarning,
                ClockNews::Breached => EventKind::SlaBreached,
                ClockNews::Achieved => EventKind::SlaAchieved,
            };
            let event =
                NewEvent { kind, from: policy.clone(), to: Some(metric.as_str().to_owned()), internal: true };
            Self::record_event(tx, ticket.id, None, &event, None, now).await?;
            recorded.push(RecordedNews {
                ticket_id: ticket.id,
                policy: policy.unwrap_or_default(),
                metric,
                news: item,
            });
        }
        Ok(recorded)
    }

    async fn upsert_clock(tx: &mut Transaction<'static, DB>, clock: &SlaClock) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO sla_clocks (",
            clock_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
             ON CONFLICT (ticket_id, metric) DO UPDATE SET cycle = excluded.cycle, policy_id = excluded.policy_id,
             policy_name = excluded.policy_name, target_minutes = excluded.target_minutes,
             warn_before_minutes = excluded.warn_before_minutes, calendar_id = excluded.calendar_id,
             pause_statuses = excluded.pause_statuses, used_seconds = excluded.used_seconds,
             running_since = excluded.running_since, due_at = excluded.due_at, warn_at = excluded.warn_at,
             warned = excluded.warned, breached_at = excluded.breached_at, completed_at = excluded.completed_at,
             achieved = excluded.achieved, next_check_at = excluded.next_check_at"
        ))
        .bind(clock.ticket_id)
        .bind(clock.metric.as_str())
        .bind(clock.cycle)
        .bind(clock.policy_id)
        .bind(clock.policy_name.as_str())
        .bind(clock.target_minutes)
        .bind(clock.warn_before_minutes)
        .bind(clock.calendar_id)
        .bind(clock.pause_statuses.to_column())
        .bind(clock.used_seconds)
        .bind(clock.running_since)
        .bind(clock.due_at)
        .bind(clock.warn_at)
        .bind(clock.warned)
        .bind(clock.breached_at)
        .bind(clock.completed_at)
        .bind(clock.achieved)
        .bind(clock.next_check_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
