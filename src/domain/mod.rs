//! Types and rules of the helpdesk, free of HTTP and SQL: roles, tickets, their lifecycle and
//! history, who may do what.

/// The text a database column and the JSON API hold for each variant of a plain enum, in one
/// table: `as_str`, `TryFrom<String>` and `ALL` come from it. Keep it equal to the enum's serde
/// spelling (each module's tests check).
macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                match value.as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(concat!("unknown ", stringify!($name), " {:?}"), other)),
                }
            }
        }
    };
}

/// Checks a `text_enum!` table against serde: both must spell every variant alike.
#[cfg(test)]
fn assert_text_matches_serde<T: serde::Serialize + Copy + std::fmt::Debug + TryFrom<String>>(
    all: &[T],
    as_str: fn(T) -> &'static str,
) where
    <T as TryFrom<String>>::Error: std::fmt::Debug,
{
    for &variant in all {
        assert_eq!(serde_json::to_value(variant).unwrap(), as_str(variant), "{variant:?}");
        assert!(T::try_from(as_str(variant).to_owned()).is_ok());
    }
    assert!(T::try_from("no such value".to_owned()).is_err());
}

/// SHA-256 of `parts` joined by NUL bytes (so `["ab", "c"]` and `["a", "bc"]` differ), in hex:
/// how refresh tokens, throttle keys and idempotent requests are stored without their contents.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            hash.update([0]);
        }
        hash.update(part);
    }
    hash.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

pub mod access;
pub mod actions;
pub mod attachment;
pub mod calendar;
pub mod comment;
pub mod event;
pub mod idempotency;
mod number;
pub mod refusal;
pub mod service_level;
pub mod session;
pub mod sla_clock;
pub mod throttle;
pub mod ticket;
pub mod user;
pub mod webhook;

pub use attachment::{Attachment, AttachmentId, AttachmentRef, Attachments};
pub use comment::{Comment, CommentBody, NewComment};
pub use event::{EventKind, NewEvent, TicketEvent};
pub use idempotency::IdempotencyKey;
pub use number::WholeNumber;
pub use refusal::{Refusal, allow};
pub use session::{Caller, NewRefreshToken, RefreshVerdict, StoredRefreshToken};
pub use throttle::ThrottleKey;
pub use ticket::{
    Description, NewTicket, Priority, PublicTicket, Subject, Ticket, TicketChange, TicketId, TicketScope,
    TicketStatus,
};
pub use user::{NewPassword, NewUser, Role, User, UserChange, UserCredentials, UserId, Username};
pub use webhook::{
    AttemptOutcome, Delivery, DeliveryId, DeliveryState, DueDelivery, EventType, EventTypes, InFlight,
    NewWebhook, NextStep, RetrySchedule, Webhook, WebhookChange, WebhookId, WebhookSecret, WebhookUrl,
};

/// NUL is no text anyone types, and Postgres cannot store it in a text column.
fn reject_nul(field: &str, raw: &str) -> Result<(), Refusal> {
    if raw.contains('\0') {
        Err(Refusal::Invalid(format!("{field} must not contain NUL characters")))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::sha256_hex;

    #[test]
    fn sha256_hex_is_standard_sha256_and_keeps_parts_apart() {
        assert_eq!(sha256_hex(&[b"abc"]), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_ne!(sha256_hex(&[b"ab", b"c"]), sha256_hex(&[b"a", b"bc"]));
        assert_ne!(sha256_hex(&[b"ab", b"c"]), sha256_hex(&[b"abc"]));
    }
}
