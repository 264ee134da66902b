//! Types and rules of the helpdesk, free of HTTP and SQL: roles, tickets, their lifecycle and
//! history, who may do what.

pub mod access;
pub mod comment;
pub mod event;
pub mod ticket;
pub mod user;

pub use comment::{Comment, CommentBody, NewComment};
pub use event::{EventKind, NewEvent, TicketEvent};
pub use ticket::{
    ChangedFields, Description, NewTicket, Priority, Subject, Ticket, TicketChange, TicketId, TicketScope,
    TicketStatus,
};
pub use user::{NewUser, Role, User, UserCredentials, UserId};

/// NUL is no text anyone types, and Postgres cannot store it in a text column.
fn reject_nul(field: &str, raw: &str) -> Result<(), String> {
    if raw.contains('\0') { Err(format!("{field} must not contain NUL characters")) } else { Ok(()) }
}
