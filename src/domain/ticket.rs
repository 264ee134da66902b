use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::user::UserId;

pub type TicketId = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    Open,
    InProgress,
    Resolved,
    Closed,
}

impl TicketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Open => "open",
            TicketStatus::InProgress => "in_progress",
            TicketStatus::Resolved => "resolved",
            TicketStatus::Closed => "closed",
        }
    }

    /// The wording people read, as the embed endpoint shows it.
    pub fn label(self) -> &'static str {
        match self {
            TicketStatus::Open => "Open",
            TicketStatus::InProgress => "In Progress",
            TicketStatus::Resolved => "Resolved",
            TicketStatus::Closed => "Closed",
        }
    }
}

impl TryFrom<String> for TicketStatus {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "open" => Ok(TicketStatus::Open),
            "in_progress" => Ok(TicketStatus::InProgress),
            "resolved" => Ok(TicketStatus::Resolved),
            "closed" => Ok(TicketStatus::Closed),
            other => Err(format!("unknown ticket status {other:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({
    "id": 42,
    "subject": "App crashes on start",
    "description": "Since the last update the app closes right after the splash screen.",
    "status": "in_progress",
    "created_by": 1,
    "assigned_to": 2,
    "embed_token": "9f40cb91-6a0e-4b7e-9d3c-2f1e5a7b8c90",
    "created_at": "2026-07-23T12:00:00Z",
    "updated_at": "2026-07-23T12:30:00Z"
}))]
pub struct Ticket {
    pub id: TicketId,
    pub subject: String,
    pub description: String,
    #[sqlx(try_from = "String")]
    pub status: TicketStatus,
    /// The customer who submitted it.
    pub created_by: UserId,
    /// The agent working on it, if any.
    pub assigned_to: Option<UserId>,
    /// Capability for the public embed endpoint; whoever holds it sees subject and status.
    pub embed_token: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A ticket subject: 1 to 200 characters once surrounding white space is trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(String);

impl Subject {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, String> {
        reject_nul("subject", raw)?;
        let trimmed = raw.trim();
        match trimmed.chars().count() {
            0 => Err("subject must not be empty".into()),
            n if n > Self::MAX_CHARS => {
                Err(format!("subject must be at most {} characters (got {n})", Self::MAX_CHARS))
            }
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

    pub fn parse(raw: String) -> Result<Self, String> {
        reject_nul("description", &raw)?;
        let n = raw.chars().count();
        if n > Self::MAX_CHARS {
            return Err(format!("description must be at most {} characters (got {n})", Self::MAX_CHARS));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// NUL is no text anyone types, and Postgres cannot store it in a text column.
fn reject_nul(field: &str, raw: &str) -> Result<(), String> {
    if raw.contains('\0') { Err(format!("{field} must not contain NUL characters")) } else { Ok(()) }
}

#[derive(Debug, Clone)]
pub struct NewTicket {
    pub subject: Subject,
    pub description: Description,
    pub created_by: UserId,
}

/// What one write changes on a ticket; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketChange {
    pub status: Option<TicketStatus>,
    /// The agent to assign; the store checks in the same transaction that this is an agent.
    pub assign_to: Option<UserId>,
}

/// Which tickets a listing covers; derived from the caller by [`super::access::listing_scope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketScope {
    All,
    AssignedTo(UserId),
    CreatedBy(UserId),
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn nul_characters_are_rejected() {
        assert!(Subject::parse("a\0b").is_err());
        assert!(Description::parse("a\0b".into()).is_err());
    }

    #[test]
    fn status_round_trips_and_has_human_labels() {
        for status in
            [TicketStatus::Open, TicketStatus::InProgress, TicketStatus::Resolved, TicketStatus::Closed]
        {
            assert_eq!(TicketStatus::try_from(status.as_str().to_owned()), Ok(status));
        }
        assert_eq!(TicketStatus::InProgress.label(), "In Progress");
        assert!(TicketStatus::try_from("pending".to_owned()).is_err());
    }
}
