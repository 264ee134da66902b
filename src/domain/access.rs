//! Who may see and do what. Pure functions over the caller, unit-tested here and called from
//! the handlers, so every rule lives in exactly one place.

use super::ticket::{Ticket, TicketScope};
use super::user::{Role, User};

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

#[must_use]
pub fn can_manage_users(user: &User) -> bool {
    user.role == Role::Admin
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

/// Only agents take assignments.
#[must_use]
pub fn can_be_assigned(role: Role) -> bool {
    role == Role::Agent
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
    fn listing_scope_follows_the_role() {
        assert_eq!(listing_scope(&user(3, Role::Admin)), Some(TicketScope::All));
        assert_eq!(listing_scope(&user(2, Role::Agent)), Some(TicketScope::AssignedTo(2)));
        assert_eq!(listing_scope(&user(1, Role::Customer)), None);
    }
}
