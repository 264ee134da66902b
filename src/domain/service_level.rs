//! Service levels: business calendars (when the team works) and SLA policies (what it promises,
//! for which tickets, counted in which calendar's time, paused in which statuses).

use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::calendar::{BusinessCalendar, Schedule, WeeklyHours};
use super::{Priority, Refusal, TicketStatus, WholeNumber};

pub type CalendarId = i64;
pub type SlaPolicyId = i64;

/// A value kept as JSON text in one column (the same on both databases).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonColumn<T>(pub T);

impl<T: DeserializeOwned> TryFrom<String> for JsonColumn<T> {
    type Error = String;

    fn try_from(column: String) -> Result<Self, String> {
        serde_json::from_str(&column)
            .map(JsonColumn)
            .map_err(|e| format!("a JSON column does not read back: {e}"))
    }
}

impl<T: Serialize> JsonColumn<T> {
    pub fn to_column(&self) -> String {
        serde_json::to_string(&self.0).expect("plain records serialize")
    }
}

const MAX_NAME_CHARS: usize = 200;
const MAX_HOLIDAYS: usize = 1000;

fn check_name(name: &str) -> Result<String, Refusal> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.contains(char::is_control) {
        return Err(Refusal::Invalid(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters, without control characters"
        )));
    }
    Ok(name.to_owned())
}

/// A business calendar as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({"id": 1, "name": "Berlin office", "time_zone": "Europe/Berlin",
    "hours": {"monday": [{"start": "09:00", "end": "17:00"}], "tuesday": [{"start": "09:00", "end": "17:00"}],
        "wednesday": [{"start": "09:00", "end": "17:00"}], "thursday": [{"start": "09:00", "end": "17:00"}],
        "friday": [{"start": "09:00", "end": "13:00"}, {"start": "14:00", "end": "17:00"}]},
    "holidays": ["2026-12-24", "2026-12-25", "2026-12-26"],
    "created_at": "2026-07-23T12:00:00Z", "updated_at": "2026-07-23T12:00:00Z"}))]
pub struct Calendar {
    pub id: CalendarId,
    pub name: String,
    /// IANA time zone the hours and holidays are in.
    pub time_zone: String,
    #[sqlx(try_from = "String")]
    #[schema(value_type = WeeklyHours)]
    pub hours: JsonColumn<WeeklyHours>,
    /// Local dates without business hours.
    #[sqlx(try_from = "String")]
    #[schema(value_type = Vec<NaiveDate>)]
    pub holidays: JsonColumn<Vec<NaiveDate>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Calendar {
    /// Its business time (it was checked when it was stored).
    pub fn schedule(&self) -> Schedule {
        match BusinessCalendar::new(&self.time_zone, &self.hours.0, &self.holidays.0) {
            Ok(calendar) => Schedule::Calendar(calendar),
            Err(refusal) => unreachable!("a stored calendar was checked when written: {refusal:?}"),
        }
    }
}

/// A calendar as a client sends it (`POST /calendars`, `PUT /calendars/{id}`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Berlin office", "time_zone": "Europe/Berlin",
    "hours": {"monday": [{"start": "09:00", "end": "17:00"}], "tuesday": [{"start": "09:00", "end": "17:00"}],
        "wednesday": [{"start": "09:00", "end": "17:00"}], "thursday": [{"start": "09:00", "end": "17:00"}],
        "friday": [{"start": "09:00", "end": "17:00"}]},
    "holidays": ["2026-12-24", "2026-12-25"]}))]
pub struct CalendarInput {
    pub name: String,
    /// An IANA time zone, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// Business hours per weekday; a range whose end is not after its start runs past midnight.
    #[serde(default)]
    pub hours: WeeklyHours,
    /// Local dates without business hours.
    #[serde(default)]
    pub holidays: Vec<NaiveDate>,
}

/// A calendar checked and ready to store.
#[derive(Debug, Clone)]
pub struct NewCalendar {
    pub name: String,
    pub time_zone: String,
    pub hours: JsonColumn<WeeklyHours>,
    pub holidays: JsonColumn<Vec<NaiveDate>>,
}

impl CalendarInput {
    pub fn check(self) -> Result<NewCalendar, Refusal> {
        let name = check_name(&self.name)?;
        if self.holidays.len() > MAX_HOLIDAYS {
            return Err(Refusal::Invalid(format!("holidays: at most {MAX_HOLIDAYS} dates")));
        }
        BusinessCalendar::new(&self.time_zone, &self.hours, &self.holidays)?;
        let mut holidays = self.holidays;
        holidays.sort();
        holidays.dedup();
        Ok(NewCalendar {
            name,
            time_zone: self.time_zone,
            hours: JsonColumn(self.hours),
            holidays: JsonColumn(holidays),
        })
    }
}

/// What a service target measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// From the ticket's creation to the first public reply by staff.
    FirstResponse,
    /// From each customer reply to the next public reply by staff.
    NextResponse,
    /// From the ticket's creation until it is resolved (a reopen resumes it).
    Resolution,
}

text_enum!(Metric {
    FirstResponse => "first_response",
    NextResponse => "next_response",
    Resolution => "resolution",
});

/// One promise of a policy: `metric` within `minutes` of business time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub metric: Metric,
    /// Business minutes, 1 to 525600 (a year).
    pub minutes: u32,
}

/// A target as a client sends it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetInput {
    pub metric: Metric,
    /// Business minutes, 1 to 525600 (a year).
    #[schema(value_type = u32, minimum = 1, maximum = 525600)]
    pub minutes: WholeNumber,
}

/// Which tickets a policy covers; an empty list matches every value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConditions {
    #[serde(default)]
    pub priorities: Vec<Priority>,
}

impl PolicyConditions {
    pub fn matches(&self, priority: Priority) -> bool {
        self.priorities.is_empty() || self.priorities.contains(&priority)
    }
}

/// An SLA policy as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({"id": 1, "name": "Urgent", "position": 1,
    "conditions": {"priorities": ["urgent"]},
    "targets": [{"metric": "first_response", "minutes": 60}, {"metric": "next_response", "minutes": 120},
        {"metric": "resolution", "minutes": 480}],
    "warn_before_minutes": 15, "calendar_id": 1, "pause_statuses": ["pending"],
    "created_at": "2026-07-23T12:00:00Z", "updated_at": "2026-07-23T12:00:00Z"}))]
pub struct SlaPolicy {
    pub id: SlaPolicyId,
    pub name: String,
    /// Policies are tried in ascending position; the first whose conditions match applies.
    pub position: i32,
    #[sqlx(try_from = "String")]
    #[schema(value_type = PolicyConditions)]
    pub conditions: JsonColumn<PolicyConditions>,
    #[sqlx(try_from = "String")]
    #[schema(value_type = Vec<Target>)]
    pub targets: JsonColumn<Vec<Target>>,
    /// A warning goes out this long (business minutes) before a target is due; null: none.
    pub warn_before_minutes: Option<i32>,
    /// Whose business time the targets count; null: around the clock.
    pub calendar_id: Option<CalendarId>,
    /// While a ticket is in one of these statuses, its clocks stand still.
    #[sqlx(try_from = "String")]
    #[schema(value_type = Vec<TicketStatus>)]
    pub pause_statuses: JsonColumn<Vec<TicketStatus>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A policy as a client sends it (`POST /sla-policies`, `PUT /sla-policies/{id}`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Urgent", "position": 1, "conditions": {"priorities": ["urgent"]},
    "targets": [{"metric": "first_response", "minutes": 60}, {"metric": "resolution", "minutes": 480}],
    "warn_before_minutes": 15, "calendar_id": 1, "pause_statuses": ["pending"]}))]
pub struct SlaPolicyInput {
    pub name: String,
    /// 1 to 10000, unique among policies.
    #[schema(value_type = i32, minimum = 1, maximum = 10000)]
    pub position: WholeNumber,
    #[serde(default)]
    pub conditions: PolicyConditions,
    /// At most one per metric; at least one.
    #[schema(min_items = 1, max_items = 3)]
    pub targets: Vec<TargetInput>,
    /// A warning goes out this many business minutes before a target is due (less than the
    /// longest target); none if left out.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 525600)]
    pub warn_before_minutes: Option<WholeNumber>,
    /// Whose business hours count (see `/calendars`); around the clock if left out.
    #[serde(default)]
    #[schema(value_type = Option<CalendarId>)]
    pub calendar_id: Option<WholeNumber>,
    /// Statuses in which the clocks pause; `resolved` and `closed` stop them anyway.
    #[serde(default = "default_pause_statuses")]
    pub pause_statuses: Vec<TicketStatus>,
}

fn default_pause_statuses() -> Vec<TicketStatus> {
    vec![TicketStatus::Pending]
}

/// A policy checked and ready to store.
#[derive(Debug, Clone)]
pub struct NewSlaPolicy {
    pub name: String,
    pub position: i32,
    pub conditions: JsonColumn<PolicyConditions>,
    pub targets: JsonColumn<Vec<Target>>,
    pub warn_before_minutes: Option<i32>,
    pub calendar_id: Option<CalendarId>,
    pub pause_statuses: JsonColumn<Vec<TicketStatus>>,
}

const MAX_TARGET_MINUTES: u32 = 365 * 24 * 60;
const MAX_POSITION: i32 = 10_000;

impl SlaPolicyInput {
    pub fn check(self) -> Result<NewSlaPolicy, Refusal> {
        let name = check_name(&self.name)?;
        let position = i32::try_from(self.position.0)
            .ok()
            .filter(|position| (1..=MAX_POSITION).contains(position))
            .ok_or_else(|| Refusal::Invalid(format!("position must be from 1 to {MAX_POSITION}")))?;
        if self.targets.is_empty() {
            return Err(Refusal::Invalid("targets: at least one is needed".into()));
        }
        let mut targets = Vec::with_capacity(self.targets.len());
        for target in self.targets {
            let minutes = u32::try_from(target.minutes.0)
                .ok()
                .filter(|minutes| (1..=MAX_TARGET_MINUTES).contains(minutes))
                .ok_or_else(|| {
                    Refusal::Invalid(format!(
                        "targets: {} must be from 1 to {MAX_TARGET_MINUTES} minutes",
                        target.metric.as_str()
                    ))
                })?;
            targets.push(Target { metric: target.metric, minutes });
        }
        targets.sort_by_key(|target| target.metric);
        if targets.windows(2).any(|pair| pair[0].metric == pair[1].metric) {
            return Err(Refusal::Invalid("targets: one per metric".into()));
        }
        let longest = i64::from(targets.iter().map(|t| t.minutes).max().unwrap_or(0));
        let warn_before_minutes = match self.warn_before_minutes {
            Some(WholeNumber(warn)) if warn < 1 || warn >= longest => {
                return Err(Refusal::Invalid(
                    "warn_before_minutes must be at least 1 and less than the longest target".into(),
                ));
            }
            warn => warn.map(|WholeNumber(minutes)| minutes as i32),
        };
        let mut pause_statuses = self.pause_statuses;
        pause_statuses.retain(|status| !status.stops_clocks());
        pause_statuses.sort_by_key(|status| status.as_str());
        pause_statuses.dedup();
        Ok(NewSlaPolicy {
            name,
            position,
            conditions: JsonColumn(self.conditions),
            targets: JsonColumn(targets),
            warn_before_minutes,
            calendar_id: self.calendar_id.map(|WholeNumber(id)| id),
            pause_statuses: JsonColumn(pause_statuses),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_text_matches_serde() {
        crate::domain::assert_text_matches_serde(Metric::ALL, Metric::as_str);
    }

    fn policy(targets: &[(Metric, i64)], warn: Option<i64>) -> SlaPolicyInput {
        SlaPolicyInput {
            name: "Urgent".into(),
            position: WholeNumber(1),
            conditions: PolicyConditions::default(),
            targets: targets
                .iter()
                .map(|&(metric, minutes)| TargetInput { metric, minutes: WholeNumber(minutes) })
                .collect(),
            warn_before_minutes: warn.map(WholeNumber),
            calendar_id: None,
            pause_statuses: default_pause_statuses(),
        }
    }

    #[test]
    fn policies_are_checked() {
        use Metric::*;
        let refused = |input: SlaPolicyInput| match input.check() {
            Err(Refusal::Invalid(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(refused(policy(&[], None)).contains("at least one"));
        assert!(refused(policy(&[(Resolution, 60), (Resolution, 90)], None)).contains("one per metric"));
        assert!(refused(policy(&[(FirstResponse, 0)], None)).contains("first_response"));
        assert!(refused(policy(&[(FirstResponse, 60)], Some(60))).contains("warn_before_minutes"));
        for position in [0, 1 << 40] {
            let input =
                SlaPolicyInput { position: WholeNumber(position), ..policy(&[(Resolution, 60)], None) };
            assert!(refused(input).contains("position"), "{position}");
        }
        assert!(refused(policy(&[(FirstResponse, 1 << 40)], None)).contains("first_response"));
        assert!(refused(policy(&[(FirstResponse, 60)], Some(-5))).contains("warn_before_minutes"));
        assert!(
            refused(SlaPolicyInput { name: " ".into(), ..policy(&[(Resolution, 60)], None) })
                .contains("name")
        );

        let checked = SlaPolicyInput {
            pause_statuses: vec![TicketStatus::Pending, TicketStatus::Resolved, TicketStatus::Pending],
            ..policy(&[(Resolution, 480), (FirstResponse, 60)], Some(30))
        }
        .check()
        .unwrap();
        assert_eq!(
            checked.targets.0.iter().map(|t| t.metric).collect::<Vec<_>>(),
            [FirstResponse, Resolution]
        );
        assert_eq!(checked.pause_statuses.0, [TicketStatus::Pending], "resolved stops clocks anyway");
    }

    #[test]
    fn conditions_match_priorities() {
        let any = PolicyConditions::default();
        let urgent = PolicyConditions { priorities: vec![Priority::Urgent] };
        assert!(any.matches(Priority::Low) && urgent.matches(Priority::Urgent));
        assert!(!urgent.matches(Priority::High));
    }
}
