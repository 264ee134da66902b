use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::attachment::Attachments;
use super::comment::NewComment;
use super::event::{NewEvent, events_for};
use super::refusal::Refusal;
use super::reject_nul;
use super::sla_clock::{SlaColumn, TicketSla};
use super::user::{Role, UserId};

pub type TicketId = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    Open,
    InProgress,
    /// Waiting on the customer: service clocks pause; the customer's reply ends it.
    Pending,
    Resolved,
    Closed,
}

text_enum!(TicketStatus {
    Open => "open",
    InProgress => "in_progress",
    Pending => "pending",
    Resolved => "resolved",
    Closed => "closed",
});

impl TicketStatus {
    /// The wording people read, as the embed endpoint shows it.
    pub fn label(self) -> &'static str {
        match self {
            TicketStatus::Open => "Open",
            TicketStatus::InProgress => "In Progress",
            TicketStatus::Pending => "Waiting for your reply",
            TicketStatus::Resolved => "Resolved",
            TicketStatus::Closed => "Closed",
        }
    }
}

impl TicketStatus {
    /// The lifecycle, in one place: open -> in_progress -> resolved -> closed, with resolved -> open
    /// (reopen) and in_progress -> open (put back); in_progress -> pending while waiting on the
    /// customer, and back (or on to resolved); admins may also close from any state. Closed is
    /// final.
    pub fn next_states(self, role: Role) -> Vec<TicketStatus> {
        use TicketStatus::*;
        let mut next = match self {
            Open => vec![InProgress],
            InProgress => vec![Resolved, Open, Pending],
            Pending => vec![InProgress, Resolved],
            Resolved => vec![Closed, Open],
            Closed => vec![],
        };
        if role == Role::Admin && self != Closed && !next.contains(&Closed) {
            next.push(Closed);
        }
        next
    }

    /// A reply on a resolved ticket from its customer means "not fixed": it reopens; on a pending
    /// one it is what the team waited for: back in progress. Nobody replies on a closed ticket.
    pub fn after_reply(self, author: Role) -> Result<Option<TicketStatus>, Refusal> {
        match (self, author) {
            (TicketStatus::Closed, _) => {
                Err(Refusal::Conflict("the ticket is closed; open a new one".into()))
            }
            (TicketStatus::Resolved, Role::Customer) => Ok(Some(TicketStatus::Open)),
            (TicketStatus::Pending, Role::Customer) => Ok(Some(TicketStatus::InProgress)),
            _ => Ok(None),
        }
    }

    /// Whether service clocks stop for good here (they resume only if the ticket is reopened).
    pub fn stops_clocks(self) -> bool {
        matches!(self, TicketStatus::Resolved | TicketStatus::Closed)
    }

    /// Checks a move to `to`; on refusal, says which states are allowed instead.
    pub fn check_transition(self, to: TicketStatus, role: Role) -> Result<(), Refusal> {
        let allowed = self.next_states(role);
        if allowed.contains(&to) {
            return Ok(());
        }
        let allowed = match allowed.as_slice() {
            [] => "none: a closed ticket is final".to_owned(),
            states => states.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
        };
        Err(Refusal::Conflict(format!(
            "a ticket cannot go from {} to {}; allowed next states: {allowed}",
            self.as_str(),
            to.as_str()
        )))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

text_enum!(Priority { Low => "low", Normal => "normal", High => "high", Urgent => "urgent" });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({
    "id": 42,
    "subject": "App crashes on start",
    "description": "Since the last update the app closes right after the splash screen.",
    "status": "in_progress",
    "priority": "high",
    "created_by": 1,
    "assigned_to": 2,
    "embed_token": "9f40cb91-6a0e-4b7e-9d3c-2f1e5a7b8c90",
    "created_at": "2026-07-23T12:00:00Z",
    "updated_at": "2026-07-23T12:30:00Z",
    "attachments": [{"id": 3, "filename": "screenshot.png", "content_type": "image/png", "size": 48213}]
}))]
pub struct Ticket {
    pub id: TicketId,
    pub subject: String,
    pub description: String,
    #[sqlx(try_from = "String")]
    pub status: TicketStatus,
    #[sqlx(try_from = "String")]
    pub priority: Priority,
    /// The customer who submitted it.
    pub created_by: UserId,
    /// The agent working on it, if any.
    pub assigned_to: Option<UserId>,
    /// Capability for the public embed endpoint; whoever holds it sees subject and status.
    pub embed_token: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Files sent with the ticket (those sent with comments are listed on the comments).
    #[sqlx(try_from = "String")]
    #[serde(default)]
    pub attachments: Attachments,
    /// Its service targets, for staff only (absent for customers, and where no policy applies).
    #[sqlx(try_from = "Option<String>")]
    #[serde(default, skip_serializing_if = "SlaColumn::is_none")]
    #[schema(value_type = Option<TicketSla>)]
    pub sla: SlaColumn,
}

impl Ticket {
    /// The ticket as `viewer` may see it: customers never see service targets.
    pub fn as_seen_by(mut self, viewer: &super::User) -> Ticket {
        if !super::access::can_see_service_levels(viewer) {
            self.sla = SlaColumn::default();
        }
        self
    }
}

/// What the public embed shows of a ticket, and all it reads: never its people or its text.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PublicTicket {
    /// Not shown: which ticket's changes a live embed stream follows.
    pub id: TicketId,
    pub subject: String,
    #[sqlx(try_from = "String")]
    pub status: TicketStatus,
    pub updated_at: DateTime<Utc>,
    pub embed_token: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(String);

impl Subject {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, Refusal> {
        reject_nul("subject", raw)?;
        let trimmed = raw.trim();
        match trimmed.chars().count() {
            0 => Err(Refusal::invalid("subject must not be empty")),
            n if n > Self::MAX_CHARS => Err(Refusal::Invalid(format!(
                "subject must be at most {} characters (got {n})",
                Self::MAX_CHARS
            ))),
            _ => Ok(Self(trimmed.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A ticket description: up to 10,000 characters, kept exactly as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 10_000;

    pub fn parse(raw: String) -> Result<Self, Refusal> {
        reject_nul("description", &raw)?;
        let n = raw.chars().count();
        if n > Self::MAX_CHARS {
            return Err(Refusal::Invalid(format!(
                "description must be at most {} characters (got {n})",
                Self::MAX_CHARS
            )));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone)]
pub struct NewTicket {
    pub subject: Subject,
    pub description: Description,
    pub priority: Priority,
    pub created_by: UserId,
    /// Hashes of the upload tokens of the files sent with it.
    pub attachments: Vec<String>,
}

/// What one write changes on a ticket; `None` (or `false`) leaves a part as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketChange {
    pub status: Option<TicketStatus>,
    pub priority: Option<Priority>,
    /// `Some(Some(agent))` assigns, `Some(None)` unassigns. The store checks, in the same
    /// transaction, that the agent is an active agent.
    pub assignee: Option<Option<UserId>>,
    pub comment: Option<NewComment>,
    pub rotate_embed_token: bool,
}

/// A ticket's fields after a change, as the store writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFields {
    pub status: TicketStatus,
    pub priority: Priority,
    pub assigned_to: Option<UserId>,
    pub embed_token: Uuid,
    pub updated_at: DateTime<Utc>,
}

/// What one change writes: the ticket's fields after it, and its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeToWrite {
    pub fields: ChangedFields,
    pub events: Vec<NewEvent>,
}

impl TicketChange {
    /// What this change writes to `ticket` at `now`; `None` when it changes nothing, which is
    /// written as nothing.
    pub fn write_to(&self, ticket: &Ticket, now: DateTime<Utc>) -> Option<ChangeToWrite> {
        let events = events_for(ticket, self);
        if events.is_empty() {
            return None;
        }
        // `updated_at` (and with it the ETag and the embed's `last_updated`) is what customers
        // and the embed see move: a change only staff can see leaves it.
        let updated_at = if events.iter().all(|event| event.internal) { ticket.updated_at } else { now };
        let fields = ChangedFields {
            status: self.status.unwrap_or(ticket.status),
            priority: self.priority.unwrap_or(ticket.priority),
            assigned_to: self.assignee.unwrap_or(ticket.assigned_to),
            embed_token: if self.rotate_embed_token { Uuid::new_v4() } else { ticket.embed_token },
            updated_at,
        };
        Some(ChangeToWrite { fields, events })
    }

    /// The agent this change newly assigns, whom the store must check.
    pub fn new_assignee(&self, ticket: &Ticket) -> Option<UserId> {
        self.assignee.flatten().filter(|agent| ticket.assigned_to != Some(*agent))
    }
}

/// Which tickets a listing covers; derived from the caller by [`super::access::listing_scope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketScope {
    All,
    AssignedTo(UserId),
    CreatedBy(UserId),
}

#[cfg(test)]
impl Ticket {
    /// A ticket for unit tests: open, normal priority, by `created_by`, assigned to `assigned_to`.
    pub fn sample(created_by: UserId, assigned_to: Option<UserId>) -> Ticket {
        let now = chrono::Utc::now();
        Ticket {
            id: 1,
            subject: "s".into(),
            description: String::new(),
            status: TicketStatus::Open,
            priority: Priority::Normal,
            created_by,
            assigned_to,
            embed_token: Uuid::new_v4(),
            created_at: now,
            updated_at: now,
            attachments: Attachments::default(),
            sla: SlaColumn::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CommentBody;

    #[test]
    fn subject_is_trimmed() {
        assert_eq!(Subject::parse("  App crash \n").unwrap().as_str(), "App crash");
    }

    #[test]
    fn blank_subject_is_rejected() {
        assert!(Subject::parse("").is_err());
        assert!(Subject::parse(" \t\n ").is_err());
    }

    #[test]
    fn subject_limit_counts_characters_not_bytes() {
        assert!(Subject::parse(&"é".repeat(200)).is_ok());
        assert!(Subject::parse(&"é".repeat(201)).is_err());
        // Surrounding white space does not count against the limit.
        assert!(Subject::parse(&format!("  {}  ", "a".repeat(200))).is_ok());
    }

    #[test]
    fn description_limit_is_ten_thousand_characters() {
        assert!(Description::parse("ü".repeat(10_000)).is_ok());
        assert!(Description::parse("ü".repeat(10_001)).is_err());
        assert!(Description::parse(String::new()).is_ok());
    }

    #[test]
    fn lifecycle_moves_forward_and_back_as_documented() {
        use TicketStatus::*;
        for (from, to) in [
            (Open, InProgress),
            (InProgress, Resolved),
            (Resolved, Closed),
            (Resolved, Open),
            (InProgress, Open),
            (InProgress, Pending),
            (Pending, InProgress),
            (Pending, Resolved),
        ] {
            assert!(from.check_transition(to, Role::Agent).is_ok(), "{from:?} -> {to:?}");
        }
        for (from, to) in [
            (Open, Resolved),
            (Open, Closed),
            (InProgress, Closed),
            (Resolved, InProgress),
            (Open, Pending),
            (Pending, Open),
            (Resolved, Pending),
            (Pending, Closed),
        ] {
            assert!(from.check_transition(to, Role::Agent).is_err(), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn admins_may_close_from_any_state_but_closed_is_final() {
        use TicketStatus::*;
        for from in [Open, InProgress, Pending, Resolved] {
            assert!(from.check_transition(Closed, Role::Admin).is_ok(), "{from:?}");
        }
        for to in [Open, InProgress, Pending, Resolved, Closed] {
            assert!(Closed.check_transition(to, Role::Admin).is_err(), "closed -> {to:?}");
        }
    }

    #[test]
    fn refused_transition_names_the_allowed_states() {
        let refusal = |from: TicketStatus, to, role| match from.check_transition(to, role) {
            Err(Refusal::Conflict(detail)) => detail,
            other => panic!("{from:?} -> {to:?}: {other:?}"),
        };
        let detail = refusal(TicketStatus::Open, TicketStatus::Resolved, Role::Agent);
        assert!(detail.ends_with("allowed next states: in_progress"), "{detail}");
        let detail = refusal(TicketStatus::Closed, TicketStatus::Open, Role::Admin);
        assert!(detail.contains("closed ticket is final"), "{detail}");
    }

    #[test]
    fn a_customer_reply_reopens_a_resolved_ticket_and_closed_takes_no_replies() {
        use TicketStatus::*;
        assert_eq!(Resolved.after_reply(Role::Customer), Ok(Some(Open)));
        assert_eq!(Resolved.after_reply(Role::Agent), Ok(None));
        assert_eq!(InProgress.after_reply(Role::Customer), Ok(None));
        assert_eq!(Pending.after_reply(Role::Customer), Ok(Some(InProgress)));
        assert_eq!(Pending.after_reply(Role::Agent), Ok(None));
        for role in [Role::Customer, Role::Agent, Role::Admin] {
            assert!(matches!(Closed.after_reply(role), Err(Refusal::Conflict(_))));
        }
    }

    #[test]
    fn a_change_moves_updated_at_unless_only_staff_can_see_it() {
        let ticket = Ticket::sample(1, Some(2));
        let now = ticket.updated_at + chrono::TimeDelta::minutes(5);
        let comment = |internal| TicketChange {
            comment: Some(NewComment {
                author_id: 2,
                author_role: Role::Agent,
                body: CommentBody::parse("hi".into()).unwrap(),
                internal,
                attachments: Vec::new(),
            }),
            ..TicketChange::default()
        };
        let written = |change: &TicketChange| change.write_to(&ticket, now).expect("a change");
        assert_eq!(written(&comment(false)).fields.updated_at, now);
        assert_eq!(written(&comment(true)).fields.updated_at, ticket.updated_at);
        let priority = TicketChange { priority: Some(Priority::Urgent), ..TicketChange::default() };
        let fields = written(&priority).fields;
        assert_eq!(
            (fields.priority, fields.updated_at, fields.embed_token),
            (Priority::Urgent, now, ticket.embed_token)
        );
    }

    #[test]
    fn a_rotation_mints_a_new_embed_token_and_a_change_of_nothing_writes_nothing() {
        let ticket = Ticket::sample(1, Some(2));
        let rotate = TicketChange { rotate_embed_token: true, ..TicketChange::default() };
        let fields = rotate.write_to(&ticket, ticket.updated_at).expect("a change").fields;
        assert_ne!(fields.embed_token, ticket.embed_token);
        let same =
            TicketChange { status: Some(ticket.status), assignee: Some(Some(2)), ..TicketChange::default() };
        assert_eq!(same.write_to(&ticket, ticket.updated_at), None);
    }

    #[test]
    fn priority_text_matches_the_api_and_defaults_to_normal() {
        crate::domain::assert_text_matches_serde(Priority::ALL, Priority::as_str);
        assert_eq!(Priority::default(), Priority::Normal);
    }

    #[test]
    fn nul_characters_are_rejected() {
        assert!(Subject::parse("a\0b").is_err());
        assert!(Description::parse("a\0b".into()).is_err());
    }

    #[test]
    fn status_text_matches_the_api_and_has_human_labels() {
        crate::domain::assert_text_matches_serde(TicketStatus::ALL, TicketStatus::as_str);
        assert_eq!(TicketStatus::InProgress.label(), "In Progress");
    }
}
