//! Service clocks: one per ticket and metric while a policy promises a target for it. A clock
//! counts business time while it runs, stands still while the ticket waits (a pause status),
//! and stops when the target is met. What a clock shows (active, paused, achieved, breached)
//! follows from its times, so no stored state can disagree with them.
//!
//! The clock keeps the target, calendar and pause statuses it started with: editing a policy or
//! calendar does not move due times already set. A priority change picks the policy again, and
//! the clock continues against the new target with the business time already used.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::calendar::Schedule;
use super::service_level::{CalendarId, JsonColumn, Metric, SlaPolicy, SlaPolicyId, Target};
use super::{Ticket, TicketId, TicketStatus};

/// A clock as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SlaClock {
    pub ticket_id: TicketId,
    #[sqlx(try_from = "String")]
    pub metric: Metric,
    /// Counts the targets of one metric on one ticket (each customer reply starts a new
    /// next-response target): events are once per (metric, cycle).
    pub cycle: i32,
    pub policy_id: Option<SlaPolicyId>,
    pub policy_name: String,
    pub target_minutes: i32,
    pub warn_before_minutes: Option<i32>,
    pub calendar_id: Option<CalendarId>,
    #[sqlx(try_from = "String")]
    pub pause_statuses: JsonColumn<Vec<TicketStatus>>,
    /// Business time used before `running_since`.
    pub used_seconds: i64,
    /// Since when it runs; `None` while paused or stopped.
    pub running_since: Option<DateTime<Utc>>,
    /// When the target will be missed, while it runs (`None` also where the calendar holds too
    /// little time ever to reach it).
    pub due_at: Option<DateTime<Utc>>,
    /// When the warning goes out, while it runs and has not gone out.
    pub warn_at: Option<DateTime<Utc>>,
    pub warned: bool,
    pub breached_at: Option<DateTime<Utc>>,
    /// When the target was met (or, after a breach, completed).
    pub completed_at: Option<DateTime<Utc>>,
    /// Whether its achievement was announced: a target met, reopened and met again is news once.
    pub achieved: bool,
    /// The earlier of `warn_at` and an unbreached `due_at`: what the evaluator looks for.
    pub next_check_at: Option<DateTime<Utc>>,
}

/// What a clock shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClockStatus {
    Active,
    Paused,
    Achieved,
    Breached,
}

text_enum!(ClockStatus { Active => "active", Paused => "paused", Achieved => "achieved", Breached => "breached" });

/// A ticket's service targets as staff see them, kept beside the ticket (its `sla` column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"policy": "Urgent", "targets": [
    {"metric": "first_response", "due_at": "2026-07-23T13:00:00Z", "status": "active", "breached_at": null},
    {"metric": "resolution", "due_at": null, "status": "paused", "breached_at": null}]}))]
pub struct TicketSla {
    /// The policy the targets come from.
    pub policy: String,
    pub targets: Vec<SlaTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SlaTarget {
    pub metric: Metric,
    /// When it will be missed, while its clock runs.
    pub due_at: Option<DateTime<Utc>>,
    pub status: ClockStatus,
    pub breached_at: Option<DateTime<Utc>>,
}

impl TicketSla {
    /// The ticket's state as listings filter it: breached if any target is, else active if any
    /// runs, else paused if any waits, else achieved.
    pub fn status(&self) -> ClockStatus {
        [ClockStatus::Breached, ClockStatus::Active, ClockStatus::Paused]
            .into_iter()
            .find(|status| self.targets.iter().any(|target| target.status == *status))
            .unwrap_or(ClockStatus::Achieved)
    }

    /// When its next target will be missed: the soonest due time of those still running in time.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.targets
            .iter()
            .filter(|target| target.status == ClockStatus::Active)
            .filter_map(|t| t.due_at)
            .min()
    }
}

/// The `sla` column: the summary, or null for a ticket no policy covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SlaColumn(pub Option<TicketSla>);

impl SlaColumn {
    /// The summary of `clocks` (the latest target of each metric).
    pub fn of(clocks: &[SlaClock]) -> Self {
        let Some(first) = clocks.first() else { return Self(None) };
        let mut targets: Vec<SlaTarget> = clocks
            .iter()
            .map(|clock| SlaTarget {
                metric: clock.metric,
                due_at: clock.due_at.filter(|_| clock.is_running()),
                status: clock.status(),
                breached_at: clock.breached_at,
            })
            .collect();
        targets.sort_by_key(|target| target.metric);
        Self(Some(TicketSla { policy: first.policy_name.clone(), targets }))
    }

    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// What the `sla_status` column holds.
    pub fn status(&self) -> Option<ClockStatus> {
        self.0.as_ref().map(TicketSla::status)
    }

    /// What the `sla_due_at` column holds.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.0.as_ref().and_then(TicketSla::next_due)
    }

    pub fn to_column(&self) -> Option<String> {
        self.0.as_ref().map(|sla| serde_json::to_string(sla).expect("plain records serialize"))
    }
}

impl TryFrom<Option<String>> for SlaColumn {
    type Error = String;

    fn try_from(column: Option<String>) -> Result<Self, String> {
        column
            .map(|text| {
                serde_json::from_str(&text).map_err(|e| format!("an sla column does not read back: {e}"))
            })
            .transpose()
            .map(SlaColumn)
    }
}

/// What a clock announces, as history and to webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockNews {
    Warning,
    Breached,
    Achieved,
}

/// One piece of news as recorded: which ticket's target of which policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedNews {
    pub ticket_id: TicketId,
    pub policy: String,
    pub metric: Metric,
    pub news: ClockNews,
}

impl SlaClock {
    /// A clock for `target` of `policy`, running from `now`.
    pub fn start(
        ticket_id: TicketId,
        target: Target,
        cycle: i32,
        policy: &SlaPolicy,
        schedule: &Schedule,
        now: DateTime<Utc>,
    ) -> Self {
        let mut clock = SlaClock {
            ticket_id,
            metric: target.metric,
            cycle,
            policy_id: Some(policy.id),
            policy_name: policy.name.clone(),
            target_minutes: target.minutes as i32,
            warn_before_minutes: policy.warn_before_minutes,
            calendar_id: policy.calendar_id,
            pause_statuses: policy.pause_statuses.clone(),
            used_seconds: 0,
            running_since: None,
            due_at: None,
            warn_at: None,
            warned: false,
            breached_at: None,
            completed_at: None,
            achieved: false,
            next_check_at: None,
        };
        clock.run_from(now, schedule);
        clock
    }

    pub fn status(&self) -> ClockStatus {
        match (self.breached_at, self.completed_at, self.running_since) {
            (Some(_), _, _) => ClockStatus::Breached,
            (None, Some(_), _) => ClockStatus::Achieved,
            (None, None, Some(_)) => ClockStatus::Active,
            (None, None, None) => ClockStatus::Paused,
        }
    }

    pub fn is_running(&self) -> bool {
        self.running_since.is_some()
    }

    pub fn is_completed(&self) -> bool {
        self.completed_at.is_some()
    }

    /// Whether it stands still in `status`.
    pub fn pauses_in(&self, status: TicketStatus) -> bool {
        self.pause_statuses.0.contains(&status)
    }

    fn target(&self) -> TimeDelta {
        TimeDelta::minutes(i64::from(self.target_minutes))
    }

    /// Business time used as of `now`.
    pub fn used(&self, now: DateTime<Utc>, schedule: &Schedule) -> TimeDelta {
        let running =
            self.running_since.map_or(TimeDelta::zero(), |since| schedule.business_time_between(since, now));
        TimeDelta::seconds(self.used_seconds) + running
    }

    /// Runs from `now`: due and warning times from what is left of the target.
    fn run_from(&mut self, now: DateTime<Utc>, schedule: &Schedule) {
        let left = self.target() - TimeDelta::seconds(self.used_seconds);
        self.running_since = Some(now);
        self.due_at = schedule.add_business_time(now, left.max(TimeDelta::zero()));
        self.warn_at = match self.warn_before_minutes {
            Some(warn) if !self.warned && self.breached_at.is_none() => {
                let until_warning = left - TimeDelta::minutes(i64::from(warn));
                schedule.add_business_time(now, until_warning.max(TimeDelta::zero()))
            }
            _ => None,
        };
        self.plan_next_check();
    }

    /// Stops counting as of `now`, keeping the time used.
    fn stand_still(&mut self, now: DateTime<Utc>, schedule: &Schedule) {
        self.used_seconds = self.used(now, schedule).num_seconds();
        self.running_since = None;
        self.due_at = None;
        self.warn_at = None;
        self.next_check_at = None;
    }

    fn plan_next_check(&mut self) {
        let due = self.due_at.filter(|_| self.breached_at.is_none());
        let warn = self.warn_at.filter(|_| !self.warned);
        self.next_check_at = match (due, warn) {
            (Some(due), Some(warn)) => Some(due.min(warn)),
            (due, warn) => due.or(warn),
        };
    }

    /// The ticket waits (a pause status): the clock stands still.
    pub fn pause(&mut self, now: DateTime<Utc>, schedule: &Schedule) {
        if self.is_running() {
            self.stand_still(now, schedule);
        }
    }

    /// The wait is over, or a completed target is taken up again (a reopen): it runs on.
    pub fn resume(&mut self, now: DateTime<Utc>, schedule: &Schedule) {
        if !self.is_running() {
            self.completed_at = None;
            self.run_from(now, schedule);
        }
    }

    /// The target is met at `now`: `Achieved` news the first time it is met in time.
    pub fn complete(&mut self, now: DateTime<Utc>, schedule: &Schedule) -> Option<ClockNews> {
        if self.is_completed() {
            return None;
        }
        self.stand_still(now, schedule);
        self.completed_at = Some(now);
        let news = (self.breached_at.is_none() && !self.achieved).then_some(ClockNews::Achieved);
        self.achieved |= news.is_some();
        news
    }

    /// The ticket now falls under `policy` (its priority changed): the target, calendar and pause
    /// statuses become the policy's, and the business time used so far (in the old calendar)
    /// counts against the new target.
    pub fn retarget(
        &mut self,
        policy: &SlaPolicy,
        target: Target,
        old: &Schedule,
        new: &Schedule,
        now: DateTime<Utc>,
    ) {
        let running = self.is_running();
        self.stand_still(now, old);
        self.policy_id = Some(policy.id);
        self.policy_name = policy.name.clone();
        self.target_minutes = target.minutes as i32;
        self.warn_before_minutes = policy.warn_before_minutes;
        self.calendar_id = policy.calendar_id;
        self.pause_statuses = policy.pause_statuses.clone();
        if running {
            self.run_from(now, new);
        }
    }

    /// What is due as of `now` (the evaluator): the warning, then the breach, each once.
    pub fn check(&mut self, now: DateTime<Utc>) -> Vec<ClockNews> {
        let mut news = Vec::new();
        if !self.is_running() {
            self.next_check_at = None;
            return news;
        }
        if !self.warned && self.warn_at.is_some_and(|at| at <= now) {
            self.warned = true;
            self.warn_at = None;
            news.push(ClockNews::Warning);
        }
        if self.breached_at.is_none()
            && let Some(due) = self.due_at.filter(|due| *due <= now)
        {
            self.breached_at = Some(due);
            self.warned = true;
            self.warn_at = None;
            news.push(ClockNews::Breached);
        }
        self.plan_next_check();
        news
    }
}

/// A public reply, as the clocks care about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    ByStaff,
    ByCustomer,
}

/// The business time of the calendars clocks and policies name.
pub trait Schedules {
    fn schedule(&self, calendar: Option<CalendarId>) -> Schedule;
}

/// What a ticket write does to its clocks, in its transaction: `before` is the ticket as it was
/// (`None` for a new one), `after` as it is now, `reply` the public reply it added, if any.
/// `policies` are all policies by position (needed when the ticket is new, its priority
/// changed or a customer replied). Changes `clocks` (removing those no target covers any more)
/// and returns the news, each with its clock's metric and cycle.
pub fn react(
    clocks: &mut Vec<SlaClock>,
    before: Option<&Ticket>,
    after: &Ticket,
    reply: Option<Reply>,
    policies: &[SlaPolicy],
    schedules: &impl Schedules,
    now: DateTime<Utc>,
) -> Vec<(Metric, i32, ClockNews)> {
    let mut news = Vec::new();
    let policy = policies.iter().find(|policy| policy.conditions.0.matches(after.priority));
    match before {
        None => {
            for target in policy.into_iter().flat_map(|p| p.targets.0.iter().map(move |t| (p, *t))) {
                let (policy, target) = target;
                if target.metric != Metric::NextResponse {
                    let schedule = schedules.schedule(policy.calendar_id);
                    clocks.push(SlaClock::start(after.id, target, 1, policy, &schedule, now));
                }
            }
        }
        Some(before) if before.priority != after.priority => {
            retarget_all(clocks, after, policy, schedules, now);
        }
        Some(_) => {}
    }
    if let Some(before) = before.filter(|before| before.status != after.status) {
        for clock in clocks.iter_mut() {
            let schedule = schedules.schedule(clock.calendar_id);
            if after.status.stops_clocks() {
                if let Some(item) = clock.complete(now, &schedule) {
                    news.push((clock.metric, clock.cycle, item));
                }
            } else if clock.pauses_in(after.status) {
                clock.pause(now, &schedule);
            } else if before.status.stops_clocks() {
                // Reopened: the resolution target is taken up again, with the time it used.
                if clock.metric == Metric::Resolution {
                    clock.resume(now, &schedule);
                }
            } else if !clock.is_completed() {
                clock.resume(now, &schedule);
            }
        }
    }
    match reply {
        Some(Reply::ByStaff) => {
            for clock in clocks.iter_mut().filter(|c| c.metric != Metric::Resolution) {
                let schedule = schedules.schedule(clock.calendar_id);
                if let Some(item) = clock.complete(now, &schedule) {
                    news.push((clock.metric, clock.cycle, item));
                }
            }
        }
        Some(Reply::ByCustomer) => {
            let first_answered = clocks.iter().all(|c| c.metric != Metric::FirstResponse || c.is_completed());
            let waiting = clocks.iter().any(|c| c.metric == Metric::NextResponse && !c.is_completed());
            let target = policy
                .and_then(|p| p.targets.0.iter().find(|t| t.metric == Metric::NextResponse).map(|t| (p, *t)));
            if let Some((policy, target)) = target.filter(|_| first_answered && !waiting) {
                let cycle =
                    clocks.iter().find(|c| c.metric == Metric::NextResponse).map_or(1, |c| c.cycle + 1);
                clocks.retain(|c| c.metric != Metric::NextResponse);
                let schedule = schedules.schedule(policy.calendar_id);
                let mut clock = SlaClock::start(after.id, target, cycle, policy, &schedule, now);
                if clock.pauses_in(after.status) {
                    clock.pause(now, &schedule);
                }
                clocks.push(clock);
            }
        }
        None => {}
    }
    news
}

/// The ticket's priority changed: its clocks follow the policy that matches now.
fn retarget_all(
    clocks: &mut Vec<SlaClock>,
    ticket: &Ticket,
    policy: Option<&SlaPolicy>,
    schedules: &impl Schedules,
    now: DateTime<Utc>,
) {
    let Some(policy) = policy else {
        clocks.retain(SlaClock::is_completed);
        return;
    };
    let target_for = |metric| policy.targets.0.iter().find(|t| t.metric == metric).copied();
    clocks.retain(|clock| clock.is_completed() || target_for(clock.metric).is_some());
    let new = schedules.schedule(policy.calendar_id);
    for clock in clocks.iter_mut().filter(|clock| !clock.is_completed()) {
        if let Some(target) = target_for(clock.metric) {
            let old = schedules.schedule(clock.calendar_id);
            clock.retarget(policy, target, &old, &new, now);
        }
    }
    // A resolution target the old policy lacked counts from the ticket's creation.
    let has_resolution = clocks.iter().any(|clock| clock.metric == Metric::Resolution);
    if let Some(target) =
        target_for(Metric::Resolution).filter(|_| !has_resolution && !ticket.status.stops_clocks())
    {
        let mut clock = SlaClock::start(ticket.id, target, 1, policy, &new, ticket.created_at);
        clock.used_seconds = new.business_time_between(ticket.created_at, now).num_seconds();
        clock.running_since = None;
        if !clock.pauses_in(ticket.status) {
            clock.run_from(now, &new);
        }
        clocks.push(clock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::calendar::{BusinessCalendar, HoursRange, WeeklyHours};
    use crate::domain::service_level::PolicyConditions;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn policy(warn: Option<i32>) -> SlaPolicy {
        SlaPolicy {
            id: 1,
            name: "Urgent".into(),
            position: 1,
            conditions: JsonColumn(PolicyConditions::default()),
            targets: JsonColumn(vec![]),
            warn_before_minutes: warn,
            calendar_id: None,
            pause_statuses: JsonColumn(vec![TicketStatus::Pending]),
            created_at: at("2026-06-01T00:00:00Z"),
            updated_at: at("2026-06-01T00:00:00Z"),
        }
    }

    fn office() -> Schedule {
        let day = vec![HoursRange { start: "09:00".into(), end: "17:00".into() }];
        let hours = WeeklyHours {
            monday: day.clone(),
            tuesday: day.clone(),
            wednesday: day.clone(),
            thursday: day.clone(),
            friday: day,
            ..WeeklyHours::default()
        };
        Schedule::Calendar(BusinessCalendar::new("UTC", &hours, &[]).unwrap())
    }

    fn target(minutes: u32) -> Target {
        Target { metric: Metric::FirstResponse, minutes }
    }

    #[test]
    fn a_clock_warns_then_breaches_once_each() {
        let schedule = Schedule::AroundTheClock;
        let mut clock =
            SlaClock::start(7, target(60), 1, &policy(Some(15)), &schedule, at("2026-06-03T10:00:00Z"));
        assert_eq!(clock.due_at, Some(at("2026-06-03T11:00:00Z")));
        assert_eq!(clock.next_check_at, Some(at("2026-06-03T10:45:00Z")), "the warning first");
        assert_eq!(clock.check(at("2026-06-03T10:44:59Z")), []);
        assert_eq!(clock.check(at("2026-06-03T10:45:00Z")), [ClockNews::Warning]);
        assert_eq!(clock.next_check_at, Some(at("2026-06-03T11:00:00Z")));
        assert_eq!(clock.check(at("2026-06-03T10:50:00Z")), [], "warned once");
        assert_eq!(clock.check(at("2026-06-03T11:00:03Z")), [ClockNews::Breached]);
        assert_eq!(
            (clock.status(), clock.breached_at),
            (ClockStatus::Breached, Some(at("2026-06-03T11:00:00Z")))
        );
        assert_eq!(clock.next_check_at, None);
        assert_eq!(clock.check(at("2026-06-03T12:00:00Z")), [], "breached once");
        assert_eq!(clock.complete(at("2026-06-03T12:00:00Z"), &schedule), None, "met late is no achievement");
        assert_eq!(clock.status(), ClockStatus::Breached);
    }

    #[test]
    fn a_late_check_reports_warning_and_breach_together() {
        let schedule = Schedule::AroundTheClock;
        let mut clock =
            SlaClock::start(7, target(60), 1, &policy(Some(15)), &schedule, at("2026-06-03T10:00:00Z"));
        assert_eq!(clock.check(at("2026-06-03T13:00:00Z")), [ClockNews::Warning, ClockNews::Breached]);
    }

    #[test]
    fn pausing_keeps_the_time_used_and_resuming_moves_the_due_time() {
        let schedule = office();
        // Wednesday 10:00, 4 business hours: due 14:00.
        let mut clock =
            SlaClock::start(7, target(240), 1, &policy(None), &schedule, at("2026-06-03T10:00:00Z"));
        assert_eq!(clock.due_at, Some(at("2026-06-03T14:00:00Z")));
        clock.pause(at("2026-06-03T11:30:00Z"), &schedule);
        assert_eq!(
            (clock.status(), clock.used_seconds, clock.next_check_at),
            (ClockStatus::Paused, 5400, None)
        );
        assert_eq!(clock.check(at("2026-06-03T15:00:00Z")), [], "a paused clock does not breach");
        // Resumed Thursday 16:00 with 2.5 h left: 1 h on Thursday, 1.5 h on Friday.
        clock.resume(at("2026-06-04T16:00:00Z"), &schedule);
        assert_eq!(clock.status(), ClockStatus::Active);
        assert_eq!(clock.due_at, Some(at("2026-06-05T10:30:00Z")));
        assert_eq!(clock.complete(at("2026-06-05T09:00:00Z"), &schedule), Some(ClockNews::Achieved));
        assert_eq!(clock.status(), ClockStatus::Achieved);
        assert_eq!(clock.used_seconds, (2 * 60 + 30) * 60, "1.5 h before the pause, 1 h after");
        assert_eq!(clock.complete(at("2026-06-05T09:30:00Z"), &schedule), None, "achieved once");
    }

    /// The README's worked example, step by step.
    #[test]
    fn the_readme_example() {
        let day = vec![HoursRange { start: "09:00".into(), end: "17:00".into() }];
        let hours = WeeklyHours {
            monday: day.clone(),
            tuesday: day.clone(),
            wednesday: day.clone(),
            thursday: day.clone(),
            friday: day,
            ..WeeklyHours::default()
        };
        let berlin = Schedule::Calendar(BusinessCalendar::new("Europe/Berlin", &hours, &[]).unwrap());
        let urgent = policy(Some(30));
        let created = at("2026-06-05T15:00:00+02:00");
        let mut first = SlaClock::start(7, target(240), 1, &urgent, &berlin, created);
        let resolution_target = Target { metric: Metric::Resolution, minutes: 960 };
        let mut resolution = SlaClock::start(7, resolution_target, 1, &urgent, &berlin, created);
        assert_eq!(first.due_at, Some(at("2026-06-08T11:00:00+02:00")));
        assert_eq!(first.warn_at, Some(at("2026-06-08T10:30:00+02:00")));
        assert_eq!(resolution.due_at, Some(at("2026-06-09T15:00:00+02:00")));
        for clock in [&mut first, &mut resolution] {
            clock.pause(at("2026-06-08T10:00:00+02:00"), &berlin);
            assert_eq!(clock.used_seconds, 3 * 3600);
            clock.resume(at("2026-06-09T14:00:00+02:00"), &berlin);
        }
        assert_eq!(first.due_at, Some(at("2026-06-09T15:00:00+02:00")));
        assert_eq!(first.warn_at, Some(at("2026-06-09T14:30:00+02:00")));
        assert_eq!(resolution.due_at, Some(at("2026-06-11T11:00:00+02:00")));
    }

    #[test]
    fn a_reopen_resumes_with_the_time_used() {
        let schedule = Schedule::AroundTheClock;
        let mut clock =
            SlaClock::start(7, target(120), 1, &policy(None), &schedule, at("2026-06-03T10:00:00Z"));
        assert_eq!(clock.complete(at("2026-06-03T11:00:00Z"), &schedule), Some(ClockNews::Achieved));
        clock.resume(at("2026-06-04T08:00:00Z"), &schedule);
        assert_eq!(clock.status(), ClockStatus::Active);
        assert_eq!(clock.due_at, Some(at("2026-06-04T09:00:00Z")), "one hour was used before");
        assert_eq!(clock.complete(at("2026-06-04T08:30:00Z"), &schedule), None, "the same target, met once");
        assert_eq!(clock.status(), ClockStatus::Achieved);
    }

    #[test]
    fn a_priority_change_counts_the_time_used_against_the_new_target() {
        let schedule = Schedule::AroundTheClock;
        let mut clock =
            SlaClock::start(7, target(480), 1, &policy(None), &schedule, at("2026-06-03T10:00:00Z"));
        let urgent = SlaPolicy { id: 2, name: "Urgent now".into(), ..policy(Some(10)) };
        clock.retarget(&urgent, target(60), &schedule, &schedule, at("2026-06-03T10:40:00Z"));
        assert_eq!((clock.policy_id, clock.target_minutes), (Some(2), 60));
        assert_eq!(clock.due_at, Some(at("2026-06-03T11:00:00Z")), "40 of 60 minutes used");
        assert_eq!(clock.next_check_at, Some(at("2026-06-03T10:50:00Z")));
        // Already past the new target: due at once, and the evaluator breaches it.
        let mut late =
            SlaClock::start(7, target(480), 1, &policy(None), &schedule, at("2026-06-03T10:00:00Z"));
        late.retarget(&urgent, target(60), &schedule, &schedule, at("2026-06-03T12:00:00Z"));
        assert_eq!(late.due_at, Some(at("2026-06-03T12:00:00Z")));
        assert_eq!(late.check(at("2026-06-03T12:00:01Z")), [ClockNews::Warning, ClockNews::Breached]);
    }
}
