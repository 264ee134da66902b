//! Business time: the hours a support team works, in its own time zone, less its holidays. Service
//! targets count only this time ("first reply within 4 business hours").
//!
//! A week holds ranges of local time per weekday (several a day). A range whose end is not after
//! its start runs past midnight into the next day, and belongs to the day it starts on: a holiday
//! removes the ranges that start on it, their part after midnight included. Local times are turned
//! into instants with the zone's rules for that date, so a range across a DST change is as long as
//! the clocks on the wall say (09:00 to 17:00 is 8 hours on both change days; 00:00 to 24:00 is 23
//! or 25). A range boundary that falls in the hour a spring change skips starts or ends when the
//! clocks resume; one in the hour an autumn change repeats is its first occurrence.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Refusal;

const MINUTES_PER_DAY: u32 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;
const MAX_RANGES_PER_DAY: usize = 12;
/// How far ahead a due time is looked for: a calendar with an hour a month still gets targets of
/// many hours, and one with no hours at all is known to have none, not searched forever.
const HORIZON_DAYS: u64 = 10 * 366;

/// One range of business hours in a day, as the API reads and writes it: `"HH:MM"` local times,
/// `end` `"24:00"` for midnight; an `end` not after `start` runs past midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"start": "09:00", "end": "17:30"}))]
pub struct HoursRange {
    pub start: String,
    pub end: String,
}

/// The week's business hours, per weekday; a day left out has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeeklyHours {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monday: Vec<HoursRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tuesday: Vec<HoursRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wednesday: Vec<HoursRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thursday: Vec<HoursRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub friday: Vec<HoursRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saturday: Vec<HoursRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sunday: Vec<HoursRange>,
}

impl WeeklyHours {
    /// Monday first, as `Weekday::num_days_from_monday` counts.
    fn days(&self) -> [(&'static str, &[HoursRange]); 7] {
        [
            ("monday", &self.monday),
            ("tuesday", &self.tuesday),
            ("wednesday", &self.wednesday),
            ("thursday", &self.thursday),
            ("friday", &self.friday),
            ("saturday", &self.saturday),
            ("sunday", &self.sunday),
        ]
    }
}

/// A range as minutes from its day's local midnight: `end` past 1440 runs into the next day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// A team's working time, checked: ranges that parse and do not overlap, a known time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessCalendar {
    zone: Tz,
    /// Monday first.
    week: [Vec<Span>; 7],
    holidays: BTreeSet<NaiveDate>,
}

impl BusinessCalendar {
    /// Checks what a client sent: every range well-formed, none overlapping another (across
    /// midnight and from Sunday into Monday too), and `time_zone` an IANA name.
    pub fn new(time_zone: &str, hours: &WeeklyHours, holidays: &[NaiveDate]) -> Result<Self, Refusal> {
        let zone: Tz = time_zone.parse().map_err(|_| {
            Refusal::Invalid(format!("time_zone {time_zone:?} is not an IANA time zone (e.g. Europe/Berlin)"))
        })?;
        let mut week: [Vec<Span>; 7] = Default::default();
        for (day, (name, ranges)) in hours.days().into_iter().enumerate() {
            if ranges.len() > MAX_RANGES_PER_DAY {
                return Err(Refusal::Invalid(format!(
                    "hours.{name}: at most {MAX_RANGES_PER_DAY} ranges a day"
                )));
            }
            for range in ranges {
                let start = minutes(&range.start, false).ok_or_else(|| bad_time(name, &range.start))?;
                let end = minutes(&range.end, true).ok_or_else(|| bad_time(name, &range.end))?;
                let end = if end > start { end } else { end + MINUTES_PER_DAY };
                week[day].push(Span { start, end });
            }
            week[day].sort_by_key(|span| span.start);
        }
        check_no_overlap(&week)?;
        Ok(Self { zone, week, holidays: holidays.iter().copied().collect() })
    }

    /// Business time in `[from, to)`.
    pub fn business_time_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> TimeDelta {
        if to <= from {
            return TimeDelta::zero();
        }
        let mut total = TimeDelta::zero();
        // A range that started the day before may still be running at `from`.
        let mut date = self.local_date(from) - Days::new(1);
        while date <= self.local_date(to) {
            for (start, end) in self.open_on(date) {
                let (start, end) = (start.max(from), end.min(to));
                if end > start {
                    total += end - start;
                }
            }
            date = date + Days::new(1);
        }
        total
    }

    /// The instant when `amount` of business time has passed since `from`; `None` if the
    /// calendar holds that much in no foreseeable time (no hours at all, say).
    pub fn add_business_time(&self, from: DateTime<Utc>, amount: TimeDelta) -> Option<DateTime<Utc>> {
        let mut left = amount.max(TimeDelta::zero());
        let first = self.local_date(from) - Days::new(1);
        for offset in 0..HORIZON_DAYS {
            for (start, end) in self.open_on(first + Days::new(offset)) {
                let start = start.max(from);
                if end <= start {
                    continue;
                }
                if left <= end - start {
                    return Some(start + left);
                }
                left -= end - start;
            }
        }
        None
    }

    fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.zone).date_naive()
    }

    /// The instants the ranges starting on local `date` run between, in order.
    fn open_on(&self, date: NaiveDate) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        let spans: &[Span] = if self.holidays.contains(&date) {
            &[]
        } else {
            &self.week[date.weekday().num_days_from_monday() as usize]
        };
        spans.iter().map(move |span| (self.instant(date, span.start), self.instant(date, span.end)))
    }

    /// The instant of local `date` plus `minutes` (past 1440 into the following days).
    fn instant(&self, date: NaiveDate, minutes: u32) -> DateTime<Utc> {
        let date = date + Days::new(u64::from(minutes / MINUTES_PER_DAY));
        let mut local =
            date.and_time(NaiveTime::MIN) + TimeDelta::minutes(i64::from(minutes % MINUTES_PER_DAY));
        // A local time a spring change skips: the first one after it that exists (at most the
        // length of a DST jump, a few hours in any zone).
        for _ in 0..=24 * 60 {
            if let Some(instant) = self.zone.from_local_datetime(&local).earliest() {
                return instant.with_timezone(&Utc);
            }
            local += TimeDelta::minutes(1);
        }
        unreachable!("no time zone skips a whole day of local time")
    }
}

/// `"HH:MM"` as minutes since midnight; `"24:00"` only where `end_of_day` allows it.
fn minutes(text: &str, end_of_day: bool) -> Option<u32> {
    let (hours, mins) = text.split_once(':')?;
    if hours.len() != 2 || mins.len() != 2 {
        return None;
    }
    let (hours, mins): (u32, u32) = (hours.parse().ok()?, mins.parse().ok()?);
    match (hours, mins) {
        (24, 0) if end_of_day => Some(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Some(hours * 60 + mins),
        _ => None,
    }
}

fn bad_time(day: &str, text: &str) -> Refusal {
    Refusal::Invalid(format!("hours.{day}: {text:?} is not a time of day as HH:MM (00:00 to 24:00)"))
}

/// No two ranges share a minute of the week, Sunday's running past midnight into Monday's included.
fn check_no_overlap(week: &[Vec<Span>; 7]) -> Result<(), Refusal> {
    let mut spans: Vec<(u32, u32)> = week
        .iter()
        .enumerate()
        .flat_map(|(day, spans)| {
            let base = day as u32 * MINUTES_PER_DAY;
            spans.iter().map(move |span| (base + span.start, base + span.end))
        })
        .collect();
    spans.sort();
    let wrapped = spans.last().map(|&(_, end)| end.saturating_sub(MINUTES_PER_WEEK)).unwrap_or(0);
    let overlaps = spans.windows(2).any(|pair| pair[1].0 < pair[0].1)
        || spans.first().is_some_and(|&(start, _)| start < wrapped);
    if overlaps {
        return Err(Refusal::Invalid("hours: two ranges overlap".into()));
    }
    Ok(())
}

/// Business time under a calendar, or around the clock without one.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    AroundTheClock,
    Calendar(BusinessCalendar),
}

impl Schedule {
    pub fn business_time_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> TimeDelta {
        match self {
            Schedule::AroundTheClock => (to - from).max(TimeDelta::zero()),
            Schedule::Calendar(calendar) => calendar.business_time_between(from, to),
        }
    }

    pub fn add_business_time(&self, from: DateTime<Utc>, amount: TimeDelta) -> Option<DateTime<Utc>> {
        match self {
            Schedule::AroundTheClock => Some(from + amount.max(TimeDelta::zero())),
            Schedule::Calendar(calendar) => calendar.add_business_time(from, amount),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: &str, end: &str) -> HoursRange {
        HoursRange { start: start.into(), end: end.into() }
    }

    /// Monday to Friday, 09:00 to 17:00.
    fn office(zone: &str, holidays: &[&str]) -> BusinessCalendar {
        let day = vec![range("09:00", "17:00")];
        let hours = WeeklyHours {
            monday: day.clone(),
            tuesday: day.clone(),
            wednesday: day.clone(),
            thursday: day.clone(),
            friday: day,
            ..WeeklyHours::default()
        };
        let holidays: Vec<NaiveDate> = holidays.iter().map(|d| d.parse().unwrap()).collect();
        BusinessCalendar::new(zone, &hours, &holidays).unwrap()
    }

    fn every_day(zone: &str, start: &str, end: &str) -> BusinessCalendar {
        let day = vec![range(start, end)];
        let hours = WeeklyHours {
            monday: day.clone(),
            tuesday: day.clone(),
            wednesday: day.clone(),
            thursday: day.clone(),
            friday: day.clone(),
            saturday: day.clone(),
            sunday: day,
        };
        BusinessCalendar::new(zone, &hours, &[]).unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn due_times_in_business_time() {
        let berlin = office("Europe/Berlin", &[]);
        let new_york = office("America/New_York", &[]);
        let christmas = office("Europe/Berlin", &["2026-12-24", "2026-12-25"]);
        let nights = every_day("Europe/Berlin", "22:00", "06:00");
        let around_the_clock = every_day("Europe/Berlin", "00:00", "24:00");
        let hours = TimeDelta::hours;
        #[rustfmt::skip]
        let cases: &[(&str, &BusinessCalendar, &str, TimeDelta, &str)] = &[
            ("within a day", &berlin, "2026-06-03T10:00:00+02:00", hours(4), "2026-06-03T14:00:00+02:00"),
            ("before opening starts at opening", &berlin, "2026-06-03T06:00:00+02:00", hours(1), "2026-06-03T10:00:00+02:00"),
            ("the rest of the day, then the next", &berlin, "2026-06-03T15:00:00+02:00", hours(4), "2026-06-04T11:00:00+02:00"),
            ("exactly to closing", &berlin, "2026-06-03T13:00:00+02:00", hours(4), "2026-06-03T17:00:00+02:00"),
            ("over a weekend", &berlin, "2026-06-05T16:00:00+02:00", hours(2), "2026-06-08T10:00:00+02:00"),
            ("asked on a Saturday", &berlin, "2026-06-06T12:00:00+02:00", hours(1), "2026-06-08T10:00:00+02:00"),
            ("a target longer than a week", &berlin, "2026-06-01T09:00:00+02:00", hours(60), "2026-06-10T13:00:00+02:00"),
            ("spring change in Berlin (Sun 29 Mar)", &berlin, "2026-03-27T16:00:00+01:00", hours(2), "2026-03-30T10:00:00+02:00"),
            ("autumn change in Berlin (Sun 25 Oct)", &berlin, "2026-10-23T16:00:00+02:00", hours(2), "2026-10-26T10:00:00+01:00"),
            ("spring change in New York (Sun 8 Mar)", &new_york, "2026-03-06T16:00:00-05:00", hours(2), "2026-03-09T10:00:00-04:00"),
            ("autumn change in New York (Sun 1 Nov)", &new_york, "2026-10-30T16:00:00-04:00", hours(2), "2026-11-02T10:00:00-05:00"),
            ("over two holidays", &christmas, "2026-12-23T16:00:00+01:00", hours(2), "2026-12-28T10:00:00+01:00"),
            ("a range over midnight", &nights, "2026-06-03T23:00:00+02:00", hours(5), "2026-06-04T04:00:00+02:00"),
            ("from one night to the next", &nights, "2026-06-04T05:00:00+02:00", hours(3), "2026-06-05T00:00:00+02:00"),
            ("a 24-hour day losing an hour in spring", &around_the_clock, "2026-03-29T00:00:00+01:00", hours(24), "2026-03-30T01:00:00+02:00"),
            ("a 24-hour day gaining an hour in autumn", &around_the_clock, "2026-10-25T00:00:00+02:00", hours(24), "2026-10-25T23:00:00+01:00"),
        ];
        for (name, calendar, from, amount, due) in cases {
            let (from, due) = (at(from), at(due));
            assert_eq!(calendar.add_business_time(from, *amount), Some(due), "{name}");
            assert_eq!(calendar.business_time_between(from, due), *amount, "{name}: the way back");
        }
    }

    #[test]
    fn business_time_between_instants() {
        let berlin = office("Europe/Berlin", &["2026-06-04"]);
        let hours = TimeDelta::hours;
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, TimeDelta)] = &[
            ("a whole working week with a holiday", "2026-06-01T00:00:00+02:00", "2026-06-08T00:00:00+02:00", hours(32)),
            ("a weekend", "2026-06-06T00:00:00+02:00", "2026-06-08T00:00:00+02:00", hours(0)),
            ("backwards is nothing", "2026-06-03T12:00:00+02:00", "2026-06-03T10:00:00+02:00", hours(0)),
            ("part of a day", "2026-06-03T16:30:00+02:00", "2026-06-03T20:00:00+02:00", TimeDelta::minutes(30)),
        ];
        for (name, from, to, expected) in cases {
            assert_eq!(berlin.business_time_between(at(from), at(to)), *expected, "{name}");
        }
    }

    #[test]
    fn a_range_in_the_skipped_hour_starts_when_the_clocks_resume() {
        // 02:30 does not exist in Berlin on 29 March 2026: the range starts at 03:00 CEST.
        let early = every_day("Europe/Berlin", "02:30", "04:00");
        let from = at("2026-03-29T00:00:00+01:00");
        assert_eq!(early.add_business_time(from, TimeDelta::zero()), Some(at("2026-03-29T03:00:00+02:00")));
        assert_eq!(early.business_time_between(from, at("2026-03-29T12:00:00+02:00")), TimeDelta::hours(1));
    }

    #[test]
    fn no_hours_means_never_due_and_around_the_clock_means_wall_time() {
        let closed = BusinessCalendar::new("UTC", &WeeklyHours::default(), &[]).unwrap();
        let from = at("2026-06-03T10:00:00Z");
        assert_eq!(closed.add_business_time(from, TimeDelta::minutes(1)), None);
        let always = Schedule::AroundTheClock;
        assert_eq!(always.add_business_time(from, TimeDelta::hours(30)), Some(at("2026-06-04T16:00:00Z")));
        assert_eq!(always.business_time_between(from, at("2026-06-04T16:00:00Z")), TimeDelta::hours(30));
    }

    #[test]
    fn bad_calendars_are_refused_with_the_reason() {
        let refused = |zone: &str, hours: WeeklyHours| match BusinessCalendar::new(zone, &hours, &[]) {
            Err(Refusal::Invalid(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(refused("Mars/Olympus", WeeklyHours::default()).contains("time_zone"));
        for bad in ["9:00", "25:00", "12:60", "noon", "24:01"] {
            let hours = WeeklyHours { monday: vec![range(bad, "17:00")], ..WeeklyHours::default() };
            assert!(refused("UTC", hours).contains("hours.monday"), "{bad}");
        }
        let too_many = WeeklyHours { monday: vec![range("09:00", "09:01"); 13], ..WeeklyHours::default() };
        assert!(refused("UTC", too_many).contains("at most 12"));
        let start_at_24 = WeeklyHours { monday: vec![range("24:00", "02:00")], ..WeeklyHours::default() };
        assert!(refused("UTC", start_at_24).contains("hours.monday"));
        let overlapping = WeeklyHours {
            monday: vec![range("09:00", "12:00"), range("11:00", "13:00")],
            ..WeeklyHours::default()
        };
        assert!(refused("UTC", overlapping).contains("overlap"));
        let into_the_next_day = WeeklyHours {
            monday: vec![range("22:00", "06:00")],
            tuesday: vec![range("05:00", "09:00")],
            ..WeeklyHours::default()
        };
        assert!(refused("UTC", into_the_next_day).contains("overlap"));
        let sunday_into_monday = WeeklyHours {
            sunday: vec![range("20:00", "02:00")],
            monday: vec![range("01:00", "09:00")],
            ..WeeklyHours::default()
        };
        assert!(refused("UTC", sunday_into_monday).contains("overlap"));
        let back_to_back = WeeklyHours {
            monday: vec![range("09:00", "12:00"), range("12:00", "13:00")],
            ..WeeklyHours::default()
        };
        assert!(BusinessCalendar::new("UTC", &back_to_back, &[]).is_ok());
    }
}
