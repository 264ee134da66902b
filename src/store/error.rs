//! What can go wrong in the store, in its own terms: `error.rs` decides what each means to a
//! client, in one place.

use crate::domain::Refusal;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A rule refused the write, judged in its transaction on the row as it was; nothing was
    /// written.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The row to change is not there (`"ticket not found"`).
    #[error("{0}")]
    NotFound(&'static str),
    /// A value that must be unique is taken (`"that username is taken"`).
    #[error("{0}")]
    Taken(&'static str),
    /// The `Idempotency-Key` was used before, for a different request.
    #[error("this Idempotency-Key was already used for a different request; use a new key for a new request")]
    KeyReused,
    /// The database cannot serve now (unreachable, migrations missing); the detail is safe to show.
    #[error("{0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A fault of ours: the store cannot be opened (the URL, the folder, the migrations), what is
    /// stored does not read back, or a caller asked for something the store cannot do.
    #[error("{0}")]
    Internal(String),
}
