//! Who may see and do what: pure predicates over the caller, unit-tested here. Handlers guard
//! routes with them (`allow(access::can_manage_users(&user), "...")?`); `actions.rs` composes
//! them into the checks of each ticket write.

use super::attachment::Attachment;
use super::refusal::Refusal;
use super::ticket::{Ticket, TicketScope};
use super::user::{Role, User, UserChange, UserId};

/// A ticket outside this answers 404, exactly like a missing one, so ids reveal nothing.
#[must_use]
pub fn can_view(user: &User, ticket: &Ticket) -> bool {
    match user.role {
        Role::Admin => true,
        Role::Agent => ticket.assigned_to == Some(user.id),
        Role::Customer => ticket.created_by == user.id,
    }
}

/// Only the assigned agent, or an admin, works a ticket: its status and its priority.
#[must_use]
pub fn can_work(user: &User, ticket: &Ticket) -> bool {
    match user.role {
        Role::Admin => true,
        Role::Agent => ticket.assigned_to == Some(user.id),
        Role::Customer => false,
    }
}

#[must_use]
pub fn can_assign(user: &User) -> bool {
    user.role == Role::Admin
}

#[must_use]
pub fn can_create_ticket(user: &User) -> bool {
    user.role == Role::Customer
}

/// `GET /tickets/my`: the tickets a customer submitted.
#[must_use]
pub fn has_own_tickets(user: &User) -> bool {
    user.role == Role::Customer
}

/// Who submitted a ticket is a filter for admins, who see everyone's tickets.
#[must_use]
pub fn can_filter_by_creator(user: &User) -> bool {
    user.role == Role::Admin
}

#[must_use]
pub fn can_manage_users(user: &User) -> bool {
    user.role == Role::Admin
}

/// Webhooks see every ticket and internal notes: admins only.
#[must_use]
pub fn can_manage_webhooks(user: &User) -> bool {
    user.role == Role::Admin
}

/// Service targets are the team's business: staff see them, customers never.
#[must_use]
pub fn can_see_service_levels(user: &User) -> bool {
    user.role != Role::Customer
}

/// Calendars and SLA policies shape every ticket's service targets: admins only.
#[must_use]
pub fn can_manage_service_levels(user: &User) -> bool {
    user.role == Role::Admin
}

/// Everyone may look themselves up; admins may look up anyone.
#[must_use]
pub fn can_look_up_user(viewer: &User, id: UserId) -> bool {
    viewer.id == id || can_manage_users(viewer)
}

/// An admin may not take their own admin rights or account away: the last admin doing so would
/// leave nobody to manage users. The refusal is a conflict with the caller's own state.
pub fn check_user_change(actor: &User, target: UserId, change: &UserChange) -> Result<(), Refusal> {
    let demotes = change.role.is_some_and(|role| role != actor.role) || change.active == Some(false);
    if target == actor.id && demotes {
        Err(Refusal::Conflict("admins cannot demote or deactivate themselves".into()))
    } else {
        Ok(())
    }
}

/// Whoever sees a ticket takes part in its conversation: its customer, its agent, admins.
#[must_use]
pub fn can_comment(user: &User, ticket: &Ticket) -> bool {
    can_view(user, ticket)
}

/// Internal notes, and the events about them, are for staff only.
#[must_use]
pub fn can_see_internal_notes(user: &User) -> bool {
    user.role != Role::Customer
}

/// The ticket's own customer or an admin may invalidate its embed link.
#[must_use]
pub fn can_rotate_embed_token(user: &User, ticket: &Ticket) -> bool {
    match user.role {
        Role::Admin => true,
        Role::Customer => ticket.created_by == user.id,
        Role::Agent => false,
    }
}

/// A file is seen where its ticket is seen, and one on an internal note only by staff; an upload
/// nothing references yet only by its uploader. `ticket` is the ticket it belongs to, if any.
#[must_use]
pub fn can_see_attachment(user: &User, attachment: &Attachment, ticket: Option<&Ticket>) -> bool {
    match (attachment.ticket_id, ticket) {
        (None, _) => attachment.uploaded_by == user.id,
        (Some(_), Some(ticket)) => {
            can_view(user, ticket) && (!attachment.internal || can_see_internal_notes(user))
        }
        (Some(_), None) => false,
    }
}

/// Deleting a file (one uploaded by mistake) is for admins.
#[must_use]
pub fn can_delete_attachments(user: &User) -> bool {
    user.role == Role::Admin
}

/// Only agents take assignments.
#[must_use]
pub fn can_be_assigned(role: Role) -> bool {
    role == Role::Agent
}

/// Whether `agent_id`, whose role and active flag are `agent` (`None`: no such user), may be
/// assigned a ticket; the refusal says why.
pub fn check_assignable(agent_id: UserId, agent: Option<(Role, bool)>) -> Result<(), Refusal> {
    match agent {
        Some((role, _)) if !can_be_assigned(role) => Err(Refusal::Invalid(format!(
            "agent_id {agent_id} is a {}, not an agent; only agents can be assigned",
            role.as_str()
        ))),
        Some((_, false)) => {
            Err(Refusal::Invalid(format!("agent {agent_id} is deactivated and cannot be assigned")))
        }
        Some(_) => Ok(()),
        None => Err(Refusal::Invalid(format!("agent_id {agent_id} does not name an existing user"))),
    }
}

/// The tickets `GET /tickets/` shows the caller; `None` means the route is not for them.
#[must_use]
pub fn listing_scope(user: &User) -> Option<TicketScope> {
    match user.role {
        Role::Admin => Some(TicketScope::All),
        Role::Agent => Some(TicketScope::AssignedTo(user.id)),
        Role::Customer => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: i64, role: Role) -> User {
        User { id, username: format!("user{id}"), role, active: true, token_version: 0 }
    }

    fn ticket(created_by: i64, assigned_to: Option<i64>) -> Ticket {
        Ticket::sample(created_by, assigned_to)
    }

    #[test]
    fn customers_see_only_their_own_tickets() {
        let alice = user(1, Role::Customer);
        assert!(can_view(&alice, &ticket(1, None)));
        assert!(!can_view(&alice, &ticket(9, None)));
    }

    #[test]
    fn agents_see_and_work_only_tickets_assigned_to_them() {
        let bob = user(2, Role::Agent);
        assert!(can_view(&bob, &ticket(1, Some(2))));
        assert!(can_work(&bob, &ticket(1, Some(2))));
        assert!(!can_view(&bob, &ticket(1, Some(3))));
        assert!(!can_view(&bob, &ticket(1, None)));
        assert!(!can_work(&bob, &ticket(1, None)));
    }

    #[test]
    fn admins_see_and_work_everything_but_do_not_submit() {
        let carol = user(3, Role::Admin);
        assert!(can_view(&carol, &ticket(1, None)));
        assert!(can_work(&carol, &ticket(1, Some(2))));
        assert!(can_assign(&carol));
        assert!(!can_create_ticket(&carol));
    }

    #[test]
    fn only_staff_see_internal_notes() {
        assert!(!can_see_internal_notes(&user(1, Role::Customer)));
        assert!(can_see_internal_notes(&user(2, Role::Agent)));
        assert!(can_see_internal_notes(&user(3, Role::Admin)));
    }

    #[test]
    fn the_conversation_is_open_to_whoever_sees_the_ticket() {
        let ticket = ticket(1, Some(2));
        assert!(can_comment(&user(1, Role::Customer), &ticket));
        assert!(can_comment(&user(2, Role::Agent), &ticket));
        assert!(can_comment(&user(3, Role::Admin), &ticket));
        assert!(!can_comment(&user(9, Role::Customer), &ticket));
        assert!(!can_comment(&user(8, Role::Agent), &ticket));
    }

    #[test]
    fn embed_tokens_are_rotated_by_their_customer_or_an_admin() {
        let ticket = ticket(1, Some(2));
        assert!(can_rotate_embed_token(&user(1, Role::Customer), &ticket));
        assert!(can_rotate_embed_token(&user(3, Role::Admin), &ticket));
        assert!(!can_rotate_embed_token(&user(2, Role::Agent), &ticket));
        assert!(!can_rotate_embed_token(&user(9, Role::Customer), &ticket));
    }

    #[test]
    fn customers_cannot_change_status_even_of_their_own_ticket() {
        assert!(!can_work(&user(1, Role::Customer), &ticket(1, None)));
    }

    #[test]
    fn only_admins_assign_and_manage_users() {
        for role in [Role::Customer, Role::Agent] {
            assert!(!can_assign(&user(1, role)));
            assert!(!can_manage_users(&user(1, role)));
        }
        assert!(can_manage_users(&user(1, Role::Admin)));
    }

    #[test]
    fn only_agents_can_be_assigned() {
        assert!(can_be_assigned(Role::Agent));
        assert!(!can_be_assigned(Role::Customer));
        assert!(!can_be_assigned(Role::Admin));
    }

    #[test]
    fn only_customers_have_tickets_of_their_own_and_only_admins_filter_by_creator() {
        assert!(has_own_tickets(&user(1, Role::Customer)));
        for role in [Role::Agent, Role::Admin] {
            assert!(!has_own_tickets(&user(1, role)));
        }
        assert!(can_filter_by_creator(&user(1, Role::Admin)));
        for role in [Role::Customer, Role::Agent] {
            assert!(!can_filter_by_creator(&user(1, role)));
        }
    }

    #[test]
    fn users_look_up_themselves_and_admins_anyone() {
        for role in [Role::Customer, Role::Agent] {
            assert!(can_look_up_user(&user(1, role), 1));
            assert!(!can_look_up_user(&user(1, role), 2));
        }
        assert!(can_look_up_user(&user(3, Role::Admin), 1));
    }

    #[test]
    fn admins_cannot_demote_or_deactivate_themselves_but_may_others() {
        let carol = user(3, Role::Admin);
        let change = |role, active| UserChange { role, active };
        for refused in [
            change(Some(Role::Agent), None),
            change(None, Some(false)),
            change(Some(Role::Admin), Some(false)),
        ] {
            assert!(
                matches!(check_user_change(&carol, 3, &refused), Err(Refusal::Conflict(_))),
                "{refused:?}"
            );
            assert_eq!(check_user_change(&carol, 4, &refused), Ok(()), "{refused:?} to someone else");
        }
        for harmless in [change(Some(Role::Admin), None), change(None, Some(true))] {
            assert_eq!(check_user_change(&carol, 3, &harmless), Ok(()), "{harmless:?}");
        }
    }

    #[test]
    fn only_existing_active_agents_are_assignable() {
        assert_eq!(check_assignable(2, Some((Role::Agent, true))), Ok(()));
        let refusal = |agent| match check_assignable(2, agent) {
            Err(Refusal::Invalid(detail)) => detail,
            other => panic!("{agent:?}: {other:?}"),
        };
        assert!(refusal(Some((Role::Agent, false))).contains("deactivated"));
        assert!(refusal(Some((Role::Customer, true))).contains("is a customer, not an agent"));
        assert!(refusal(Some((Role::Admin, true))).contains("is a admin, not an agent"));
        assert!(refusal(None).contains("does not name an existing user"));
    }

    #[test]
    fn files_are_seen_where_their_ticket_is_and_internal_ones_by_staff_only() {
        let ticket = ticket(1, Some(2));
        let file = |ticket_id, internal| Attachment {
            id: 1,
            filename: "f".into(),
            content_type: "text/plain".into(),
            size: 1,
            sha256: String::new(),
            ticket_id,
            comment_id: None,
            internal,
            uploaded_by: 1,
            created_at: chrono::Utc::now(),
            storage_key: "k".into(),
        };
        let (alice, bob, carol) = (user(1, Role::Customer), user(2, Role::Agent), user(3, Role::Admin));
        let (eve, dave) = (user(5, Role::Customer), user(4, Role::Agent));
        for viewer in [&alice, &bob, &carol] {
            assert!(can_see_attachment(viewer, &file(Some(1), false), Some(&ticket)), "{viewer:?}");
        }
        for viewer in [&eve, &dave] {
            assert!(!can_see_attachment(viewer, &file(Some(1), false), Some(&ticket)), "{viewer:?}");
        }
        assert!(!can_see_attachment(&alice, &file(Some(1), true), Some(&ticket)), "an internal note's file");
        assert!(can_see_attachment(&bob, &file(Some(1), true), Some(&ticket)));
        assert!(can_see_attachment(&alice, &file(None, false), None), "her own pending upload");
        assert!(!can_see_attachment(&carol, &file(None, false), None), "nobody else's, admins included");
        assert!(!can_see_attachment(&carol, &file(Some(1), false), None), "a ticket that is gone");
    }

    #[test]
    fn listing_scope_follows_the_role() {
        assert_eq!(listing_scope(&user(3, Role::Admin)), Some(TicketScope::All));
        assert_eq!(listing_scope(&user(2, Role::Agent)), Some(TicketScope::AssignedTo(2)));
        assert_eq!(listing_scope(&user(1, Role::Customer)), None);
    }
}
