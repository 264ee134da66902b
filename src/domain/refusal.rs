//! Why the helpdesk's rules refuse a request, as a type. Each kind is one HTTP status, chosen in
//! `error.rs` (`From<Refusal>`) and nowhere else, so the rules never speak HTTP and their callers
//! never pick a status.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The input cannot be read as what it claims to be (a malformed header): 400.
    #[error("{0}")]
    Malformed(String),
    /// The input reads but breaks a rule (a blank subject, a common password, an agent who
    /// cannot be assigned): 422.
    #[error("{0}")]
    Invalid(String),
    /// The caller's role may not do this: 403.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Not there for this caller, answered exactly like a missing one, so ids reveal nothing: 404.
    #[error("{0}")]
    Hidden(&'static str),
    /// The caller's copy is out of date (`If-Match`): 412.
    #[error("{0}")]
    Outdated(&'static str),
    /// The request conflicts with the current state (a move the lifecycle forbids, a reply on a
    /// closed ticket, an admin demoting themselves): 409.
    #[error("{0}")]
    Conflict(String),
    /// The caller holds as many of something as one may (unused uploads): 429.
    #[error("{0}")]
    TooMany(&'static str),
}

impl Refusal {
    pub fn invalid(detail: impl Into<String>) -> Self {
        Refusal::Invalid(detail.into())
    }
}

/// A role guard: `allow(access::can_assign(&user), "only admins assign tickets")?`.
pub fn allow(permitted: bool, denial: &'static str) -> Result<(), Refusal> {
    if permitted { Ok(()) } else { Err(Refusal::Forbidden(denial)) }
}
