use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::attachment::Attachments;
use super::refusal::Refusal;
use super::reject_nul;
use super::ticket::TicketId;
use super::user::{Role, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({"id": 7, "ticket_id": 42, "author_id": 2, "body": "Could you send the crash log?",
    "internal": false, "created_at": "2026-07-23T12:10:00Z",
    "attachments": [{"id": 4, "filename": "crash.log", "content_type": "text/plain; charset=utf-8", "size": 5120}]}))]
pub struct Comment {
    pub id: i64,
    pub ticket_id: TicketId,
    pub author_id: UserId,
    pub body: String,
    /// An internal note: agents and admins only.
    pub internal: bool,
    pub created_at: DateTime<Utc>,
    /// Files sent with it; on an internal note, staff only like the note.
    #[sqlx(try_from = "String")]
    #[serde(default)]
    pub attachments: Attachments,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewComment {
    pub author_id: UserId,
    /// Whether the author is the customer or staff (what service clocks go by).
    pub author_role: Role,
    pub body: CommentBody,
    pub internal: bool,
    /// Hashes of the upload tokens of the files sent with it.
    pub attachments: Vec<String>,
}

/// 1 to 10,000 characters, not blank, no NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentBody(String);

impl CommentBody {
    pub const MAX_CHARS: usize = 10_000;

    pub fn parse(raw: String) -> Result<Self, Refusal> {
        reject_nul("body", &raw)?;
        if raw.trim().is_empty() {
            return Err(Refusal::invalid("body must not be empty"));
        }
        let n = raw.chars().count();
        if n > Self::MAX_CHARS {
            return Err(Refusal::Invalid(format!(
                "body must be at most {} characters (got {n})",
                Self::MAX_CHARS
            )));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_bodies_must_say_something() {
        assert!(CommentBody::parse("Thanks!".into()).is_ok());
        assert!(CommentBody::parse("  \n ".into()).is_err());
        assert!(CommentBody::parse("a\0".into()).is_err());
        assert!(CommentBody::parse("x".repeat(10_000)).is_ok());
        assert!(CommentBody::parse("x".repeat(10_001)).is_err());
    }
}
