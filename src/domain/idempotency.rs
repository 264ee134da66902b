//! Idempotent retries: a client that sends `Idempotency-Key` can repeat a create after a timeout
//! or a dropped connection and get the first answer back instead of a second ticket or comment.
//! The write keeps what it created beside the key, in its own transaction (see `store::Write`).

use chrono::TimeDelta;

use super::UserId;
use super::refusal::Refusal;

/// How long a key is remembered.
pub const KEY_LIFETIME: TimeDelta = TimeDelta::hours(24);
pub const MAX_KEY_LENGTH: usize = 255;

/// One caller's key for one request: keys are per user, so nobody can read another's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub user_id: UserId,
    pub key: String,
    /// A hash of the operation and its parsed body: the same key with another request is refused.
    pub fingerprint: String,
}

impl IdempotencyKey {
    /// `operation` names the route (with its path parameters); `request` is the parsed body.
    pub fn new(
        user_id: UserId,
        key: &str,
        operation: &str,
        request: &impl serde::Serialize,
    ) -> Result<Self, Refusal> {
        if key.is_empty() || key.len() > MAX_KEY_LENGTH || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Refusal::Malformed(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (a UUID is a good choice)"
            )));
        }
        let body = serde_json::to_vec(request)
            .map_err(|e| Refusal::Malformed(format!("the request cannot be fingerprinted: {e}")))?;
        let fingerprint = super::sha256_hex(&[operation.as_bytes(), &body]);
        Ok(Self { user_id, key: key.to_owned(), fingerprint })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_request_same_fingerprint_other_body_or_route_another() {
        let key =
            |operation, body: serde_json::Value| IdempotencyKey::new(1, "k-1", operation, &body).unwrap();
        let first = key("POST /tickets/", serde_json::json!({"subject": "a"}));
        assert_eq!(first, key("POST /tickets/", serde_json::json!({"subject": "a"})));
        assert_ne!(first.fingerprint, key("POST /tickets/", serde_json::json!({"subject": "b"})).fingerprint);
        assert_ne!(
            first.fingerprint,
            key("POST /tickets/1/comments", serde_json::json!({"subject": "a"})).fingerprint
        );
    }

    #[test]
    fn keys_must_be_short_visible_ascii() {
        let body = serde_json::json!({});
        for bad in ["", "with space", "tab\t", "é", &"k".repeat(256)] {
            assert!(IdempotencyKey::new(1, bad, "op", &body).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::new(1, &"k".repeat(255), "op", &body).is_ok());
        assert!(IdempotencyKey::new(1, "8e0f6e0a-4d5b-4f1e-9c1a-2b7e7f1d9a10", "op", &body).is_ok());
    }
}
