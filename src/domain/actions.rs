//! Each write on a ticket as the rules decide it: every check, in the order it is made, and the
//! change that follows. The store runs these inside the write's transaction on the locked row
//! (`Tickets::update_ticket`), so they judge the ticket as it is written; the handlers parse the
//! request, pass it in, and check beforehand only what does not depend on the ticket
//! (`may_*`), so a caller refused by role learns nothing about which tickets exist.
//!
//! The order is the same for every write: a ticket the caller cannot see is refused like a missing
//! one (404), then what the caller's role allows on it (403), then whether their copy is current
//! (`If-Match`, 412), then what the ticket's state allows (409).

use super::access;
use super::comment::NewComment;
use super::refusal::{Refusal, allow};
use super::ticket::{Priority, Ticket, TicketChange, TicketStatus};
use super::user::{User, UserId};

/// How a ticket the caller may not see is refused: exactly like one that does not exist.
pub const NOT_FOUND: Refusal = Refusal::Hidden("ticket not found");

/// Whether the caller's precondition holds: `If-Match` names the ticket's current version, or
/// there is none. Judged by the API, which knows how versions are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    Holds,
    Fails,
}

impl Precondition {
    fn check(self) -> Result<(), Refusal> {
        match self {
            Precondition::Holds => Ok(()),
            Precondition::Fails => {
                Err(Refusal::Outdated("the ticket changed since the ETag in If-Match; reload it and retry"))
            }
        }
    }
}

/// A ticket the caller may not see is refused like a missing one.
pub fn visible(user: &User, ticket: &Ticket) -> Result<(), Refusal> {
    if access::can_view(user, ticket) { Ok(()) } else { Err(NOT_FOUND) }
}

pub fn may_create(user: &User) -> Result<(), Refusal> {
    allow(access::can_create_ticket(user), "only customers submit tickets")
}

/// What working a ticket asks for: a new status, a new priority, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    status: Option<TicketStatus>,
    priority: Option<Priority>,
}

impl Work {
    pub fn new(status: Option<TicketStatus>, priority: Option<Priority>) -> Result<Self, Refusal> {
        if status.is_none() && priority.is_none() {
            return Err(Refusal::invalid("nothing to change: give status and/or priority"));
        }
        Ok(Self { status, priority })
    }
}

/// Working a ticket (its status, its priority) is for its agent or an admin; the lifecycle
/// decides which moves are allowed. Setting a field to its current value changes nothing.
pub fn work(
    user: &User,
    ticket: &Ticket,
    precondition: Precondition,
    work: Work,
) -> Result<TicketChange, Refusal> {
    visible(user, ticket)?;
    allow(access::can_work(user, ticket), "only the assigned agent or an admin works a ticket")?;
    precondition.check()?;
    if let Some(to) = work.status.filter(|to| *to != ticket.status) {
        ticket.status.check_transition(to, user.role)?;
    }
    Ok(TicketChange { status: work.status, priority: work.priority, ..TicketChange::default() })
}

pub fn may_assign(user: &User) -> Result<(), Refusal> {
    allow(access::can_assign(user), "only admins assign tickets")
}

/// Assigning (`Some(agent)`) or unassigning (`None`) is for admins. Whether the agent can take it
/// (an existing, active agent) the store checks in the same transaction with
/// [`access::check_assignable`], as it reads their row.
pub fn assign(
    user: &User,
    ticket: &Ticket,
    precondition: Precondition,
    agent: Option<UserId>,
) -> Result<TicketChange, Refusal> {
    may_assign(user)?;
    visible(user, ticket)?;
    precondition.check()?;
    Ok(TicketChange { assignee: Some(agent), ..TicketChange::default() })
}

/// Internal notes are for staff.
pub fn may_comment(user: &User, internal: bool) -> Result<(), Refusal> {
    allow(!internal || access::can_see_internal_notes(user), "customers cannot write internal notes")
}

/// Whoever sees a ticket takes part in its conversation; a customer's reply on a resolved ticket
/// reopens it, and a closed ticket takes no replies.
pub fn comment(user: &User, ticket: &Ticket, comment: NewComment) -> Result<TicketChange, Refusal> {
    may_comment(user, comment.internal)?;
    visible(user, ticket)?;
    allow(access::can_comment(user, ticket), "you cannot comment on this ticket")?;
    let status = ticket.status.after_reply(user.role)?;
    Ok(TicketChange { status, comment: Some(comment), ..TicketChange::default() })
}

/// A new embed token (the old link stops working) is for the ticket's customer or an admin.
pub fn rotate_embed_token(user: &User, ticket: &Ticket) -> Result<TicketChange, Refusal> {
    visible(user, ticket)?;
    allow(
        access::can_rotate_embed_token(user, ticket),
        "only the ticket's customer or an admin can do this",
    )?;
    Ok(TicketChange { rotate_embed_token: true, ..TicketChange::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CommentBody, Role};

    fn user(id: i64, role: Role) -> User {
        User { id, username: format!("user{id}"), role, active: true, token_version: 0 }
    }

    /// Alice (1) submitted it, Bob (2) works it; Dave (4) is another agent, Eve (5) another
    /// customer, Carol (3) an admin.
    fn ticket(status: TicketStatus) -> Ticket {
        Ticket { status, ..Ticket::sample(1, Some(2)) }
    }

    const ALICE: (i64, Role) = (1, Role::Customer);
    const BOB: (i64, Role) = (2, Role::Agent);
    const CAROL: (i64, Role) = (3, Role::Admin);
    const DAVE: (i64, Role) = (4, Role::Agent);
    const EVE: (i64, Role) = (5, Role::Customer);

    fn as_user((id, role): (i64, Role)) -> User {
        user(id, role)
    }

    fn note(author: i64, internal: bool) -> NewComment {
        NewComment {
            author_id: author,
            author_role: Role::Agent,
            body: CommentBody::parse("hello".into()).unwrap(),
            internal,
            attachments: Vec::new(),
        }
    }

    fn kind(result: Result<TicketChange, Refusal>) -> &'static str {
        match result {
            Ok(_) => "ok",
            Err(Refusal::Hidden(_)) => "hidden",
            Err(Refusal::Forbidden(_)) => "forbidden",
            Err(Refusal::Outdated(_)) => "outdated",
            Err(Refusal::Conflict(_)) => "conflict",
            Err(Refusal::Invalid(_)) => "invalid",
            Err(Refusal::Malformed(_)) => "malformed",
            Err(Refusal::TooMany(_)) => "too many",
        }
    }

    #[test]
    fn working_a_ticket_checks_sight_then_role_then_version_then_lifecycle() {
        use Precondition::{Fails, Holds};
        let open = ticket(TicketStatus::Open);
        let resolve = Work::new(Some(TicketStatus::Resolved), None).unwrap();
        let start = Work::new(Some(TicketStatus::InProgress), None).unwrap();
        for (who, precondition, asked, expected) in [
            (EVE, Fails, resolve, "hidden"),
            (DAVE, Fails, resolve, "hidden"),
            (ALICE, Fails, resolve, "forbidden"),
            (BOB, Fails, resolve, "outdated"),
            (BOB, Holds, resolve, "conflict"),
            (BOB, Holds, start, "ok"),
            (CAROL, Holds, start, "ok"),
        ] {
            assert_eq!(
                kind(work(&as_user(who), &open, precondition, asked)),
                expected,
                "{who:?} {precondition:?}"
            );
        }
        let same = Work::new(Some(TicketStatus::Open), Some(Priority::High)).unwrap();
        let change = work(&as_user(BOB), &open, Holds, same).unwrap();
        assert_eq!((change.status, change.priority), (Some(TicketStatus::Open), Some(Priority::High)));
    }

    #[test]
    fn working_a_ticket_asks_for_something() {
        assert!(matches!(Work::new(None, None), Err(Refusal::Invalid(_))));
        assert!(Work::new(None, Some(Priority::Low)).is_ok());
    }

    #[test]
    fn only_admins_assign_and_only_with_a_current_copy() {
        let open = ticket(TicketStatus::Open);
        for who in [ALICE, BOB, DAVE] {
            assert_eq!(
                kind(assign(&as_user(who), &open, Precondition::Holds, Some(4))),
                "forbidden",
                "{who:?}"
            );
        }
        assert_eq!(kind(assign(&as_user(CAROL), &open, Precondition::Fails, Some(4))), "outdated");
        let change = assign(&as_user(CAROL), &open, Precondition::Holds, None).unwrap();
        assert_eq!(change.assignee, Some(None));
    }

    #[test]
    fn the_conversation_is_for_those_who_see_the_ticket_and_notes_for_staff() {
        let open = ticket(TicketStatus::Open);
        assert_eq!(kind(comment(&as_user(EVE), &open, note(5, false))), "hidden");
        assert_eq!(kind(comment(&as_user(DAVE), &open, note(4, true))), "hidden");
        assert_eq!(kind(comment(&as_user(ALICE), &open, note(1, true))), "forbidden");
        for (who, internal) in [(ALICE, false), (BOB, true), (BOB, false), (CAROL, true)] {
            assert_eq!(kind(comment(&as_user(who), &open, note(who.0, internal))), "ok", "{who:?}");
        }
    }

    #[test]
    fn a_customer_reply_reopens_a_resolved_ticket_and_a_closed_one_takes_none() {
        let resolved = ticket(TicketStatus::Resolved);
        let reply = comment(&as_user(ALICE), &resolved, note(1, false)).unwrap();
        assert_eq!(reply.status, Some(TicketStatus::Open));
        let agent_reply = comment(&as_user(BOB), &resolved, note(2, false)).unwrap();
        assert_eq!(agent_reply.status, None);
        for who in [ALICE, BOB, CAROL] {
            assert_eq!(
                kind(comment(&as_user(who), &ticket(TicketStatus::Closed), note(who.0, false))),
                "conflict"
            );
        }
    }

    #[test]
    fn embed_tokens_are_rotated_by_the_customer_or_an_admin() {
        let open = ticket(TicketStatus::Open);
        assert_eq!(kind(rotate_embed_token(&as_user(EVE), &open)), "hidden");
        assert_eq!(kind(rotate_embed_token(&as_user(BOB), &open)), "forbidden");
        for who in [ALICE, CAROL] {
            assert!(rotate_embed_token(&as_user(who), &open).unwrap().rotate_embed_token, "{who:?}");
        }
    }
}
