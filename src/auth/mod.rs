//! Authentication: password hashing, JWT access tokens, and the [`CurrentUser`] extractor that
//! every protected handler takes.

mod extractor;
pub mod hs256;
mod jwt;
mod password;
mod refresh;

pub use extractor::{CurrentUser, VerifiedToken};
pub use jwt::{AccessToken, Claims, JwtKeys};
pub use password::{HashingMetrics, Passwords};
pub use refresh::{RefreshSecret, hash_refresh_token};
