//! Types and rules of the helpdesk, free of HTTP and SQL: roles, tickets, who may do what.

pub mod access;
pub mod ticket;
pub mod user;

pub use ticket::{
    Description, NewTicket, Subject, Ticket, TicketChange, TicketId, TicketScope, TicketStatus,
};
pub use user::{NewUser, Role, User, UserCredentials, UserId};
