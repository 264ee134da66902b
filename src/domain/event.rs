//! A ticket's history: one event per change, written in the same transaction as the change.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::ticket::{Ticket, TicketChange, TicketId};
use super::user::UserId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Assigned,
    Unassigned,
    StatusChanged,
    PriorityChanged,
    CommentAdded,
    EmbedTokenRotated,
    /// An admin deleted a file; `from` is its id and name.
    AttachmentDeleted,
    /// A service target is about to be missed (its policy's `warn_before_minutes`); `from` is
    /// the policy, `to` the metric. Staff only, like every SLA event, and without an actor.
    SlaWarning,
    /// A service target was missed.
    SlaBreached,
    /// A service target was met in time.
    SlaAchieved,
}

text_enum!(EventKind {
    Created => "created",
    Assigned => "assigned",
    Unassigned => "unassigned",
    StatusChanged => "status_changed",
    PriorityChanged => "priority_changed",
    CommentAdded => "comment_added",
    EmbedTokenRotated => "embed_token_rotated",
    AttachmentDeleted => "attachment_deleted",
    SlaWarning => "sla_warning",
    SlaBreached => "sla_breached",
    SlaAchieved => "sla_achieved",
});

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({"id": 3, "ticket_id": 42, "actor_id": 2, "kind": "status_changed",
    "from": "open", "to": "in_progress", "comment_id": null, "internal": false,
    "created_at": "2026-07-23T12:30:00Z"}))]
pub struct TicketEvent {
    pub id: i64,
    pub ticket_id: TicketId,
    /// Who made the change; null for what the server records itself (SLA events).
    pub actor_id: Option<UserId>,
    #[sqlx(try_from = "String")]
    pub kind: EventKind,
    /// The value before: a status, a priority or an agent's id. Null where it does not apply.
    #[sqlx(rename = "from_value")]
    pub from: Option<String>,
    /// The value after.
    #[sqlx(rename = "to_value")]
    pub to: Option<String>,
    /// The comment a `comment_added` event is about.
    pub comment_id: Option<i64>,
    /// About an internal note; never shown to customers.
    pub internal: bool,
    pub created_at: DateTime<Utc>,
}

/// An event about to be written; the store adds ids, actor, time and the comment's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub from: Option<String>,
    pub to: Option<String>,
    pub internal: bool,
}

impl NewEvent {
    fn new(kind: EventKind, from: Option<String>, to: Option<String>) -> Self {
        Self { kind, from, to, internal: false }
    }
}

/// What `change` does to `ticket`, as history. Parts that change nothing record nothing.
pub(super) fn events_for(ticket: &Ticket, change: &TicketChange) -> Vec<NewEvent> {
    let mut events = Vec::new();
    if let Some(assigned_to) = change.assignee.filter(|agent| *agent != ticket.assigned_to) {
        let from = ticket.assigned_to.map(|id| id.to_string());
        events.push(match assigned_to {
            Some(agent) => NewEvent::new(EventKind::Assigned, from, Some(agent.to_string())),
            None => NewEvent::new(EventKind::Unassigned, from, None),
        });
    }
    if let Some(status) = change.status.filter(|status| *status != ticket.status) {
        events.push(NewEvent::new(
            EventKind::StatusChanged,
            Some(ticket.status.as_str().into()),
            Some(status.as_str().into()),
        ));
    }
    if let Some(priority) = change.priority.filter(|priority| *priority != ticket.priority) {
        events.push(NewEvent::new(
            EventKind::PriorityChanged,
            Some(ticket.priority.as_str().into()),
            Some(priority.as_str().into()),
        ));
    }
    if let Some(comment) = &change.comment {
        events.push(NewEvent {
            internal: comment.internal,
            ..NewEvent::new(EventKind::CommentAdded, None, None)
        });
    }
    if change.rotate_embed_token {
        events.push(NewEvent::new(EventKind::EmbedTokenRotated, None, None));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CommentBody, NewComment, Priority, TicketStatus};

    fn ticket() -> Ticket {
        Ticket::sample(1, Some(2))
    }

    #[test]
    fn a_change_that_changes_nothing_records_nothing() {
        let same = TicketChange {
            status: Some(TicketStatus::Open),
            priority: Some(Priority::Normal),
            assignee: Some(Some(2)),
            ..TicketChange::default()
        };
        assert!(events_for(&ticket(), &same).is_empty());
    }

    #[test]
    fn each_changed_part_records_its_before_and_after() {
        let change = TicketChange {
            status: Some(TicketStatus::InProgress),
            priority: Some(Priority::Urgent),
            assignee: Some(None),
            rotate_embed_token: true,
            ..TicketChange::default()
        };
        let kinds: Vec<_> =
            events_for(&ticket(), &change).into_iter().map(|e| (e.kind, e.from, e.to)).collect();
        assert_eq!(
            kinds,
            [
                (EventKind::Unassigned, Some("2".into()), None),
                (EventKind::StatusChanged, Some("open".into()), Some("in_progress".into())),
                (EventKind::PriorityChanged, Some("normal".into()), Some("urgent".into())),
                (EventKind::EmbedTokenRotated, None, None),
            ]
        );
    }

    #[test]
    fn an_internal_note_records_an_internal_event() {
        let note = NewComment {
            author_id: 2,
            author_role: crate::domain::Role::Agent,
            body: CommentBody::parse("psst".into()).unwrap(),
            internal: true,
            attachments: Vec::new(),
        };
        let events = events_for(&ticket(), &TicketChange { comment: Some(note), ..TicketChange::default() });
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::CommentAdded);
        assert!(events[0].internal);
    }

    #[test]
    fn event_kind_text_matches_the_api() {
        crate::domain::assert_text_matches_serde(EventKind::ALL, EventKind::as_str);
    }
}
