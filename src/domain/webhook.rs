//! Webhooks: which history events an integration hears about, which addresses a delivery may
//! go to, how each delivery is signed (the Standard Webhooks scheme) and when a failed one is
//! tried again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::event::{EventKind, TicketEvent};
use super::reject_nul;
use super::ticket::TicketId;

pub type WebhookId = i64;
pub type DeliveryId = i64;

/// What a delivery is about: one type per kind of history event, internal notes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum EventType {
    #[serde(rename = "ticket.created")]
    TicketCreated,
    #[serde(rename = "ticket.assigned")]
    TicketAssigned,
    #[serde(rename = "ticket.unassigned")]
    TicketUnassigned,
    #[serde(rename = "ticket.status_changed")]
    TicketStatusChanged,
    #[serde(rename = "ticket.priority_changed")]
    TicketPriorityChanged,
    /// A public reply.
    #[serde(rename = "ticket.comment_added")]
    TicketCommentAdded,
    /// Staff-only; only webhooks that name it hear of internal notes.
    #[serde(rename = "ticket.internal_note_added")]
    TicketInternalNoteAdded,
    #[serde(rename = "ticket.embed_token_rotated")]
    TicketEmbedTokenRotated,
}

text_enum!(EventType {
    TicketCreated => "ticket.created",
    TicketAssigned => "ticket.assigned",
    TicketUnassigned => "ticket.unassigned",
    TicketStatusChanged => "ticket.status_changed",
    TicketPriorityChanged => "ticket.priority_changed",
    TicketCommentAdded => "ticket.comment_added",
    TicketInternalNoteAdded => "ticket.internal_note_added",
    TicketEmbedTokenRotated => "ticket.embed_token_rotated",
});

impl EventType {
    /// The type a history event is delivered as. The database's fan-out trigger (migration 0009)
    /// maps kinds the same way: `ticket.` + the kind, internal comments as internal notes.
    pub fn of(event: &TicketEvent) -> Self {
        match event.kind {
            EventKind::Created => EventType::TicketCreated,
            EventKind::Assigned => EventType::TicketAssigned,
            EventKind::Unassigned => EventType::TicketUnassigned,
            EventKind::StatusChanged => EventType::TicketStatusChanged,
            EventKind::PriorityChanged => EventType::TicketPriorityChanged,
            EventKind::CommentAdded if event.internal => EventType::TicketInternalNoteAdded,
            EventKind::CommentAdded => EventType::TicketCommentAdded,
            EventKind::EmbedTokenRotated => EventType::TicketEmbedTokenRotated,
        }
    }
}

/// The event types a webhook subscribes to: at least one, each once, in a fixed order. Stored
/// as one text column, `,a,b,`, which the fan-out trigger searches for `,type,`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Vec<EventType>)]
pub struct EventTypes(Vec<EventType>);

impl EventTypes {
    pub fn new(mut types: Vec<EventType>) -> Result<Self, String> {
        if types.is_empty() {
            return Err("events must name at least one event type".into());
        }
        types.sort();
        types.dedup();
        Ok(Self(types))
    }

    pub fn contains(&self, event_type: EventType) -> bool {
        self.0.contains(&event_type)
    }

    /// The stored form: `,ticket.created,ticket.assigned,`.
    pub fn to_column(&self) -> String {
        let mut column = String::from(",");
        for event_type in &self.0 {
            column.push_str(event_type.as_str());
            column.push(',');
        }
        column
    }
}

impl TryFrom<String> for EventTypes {
    type Error = String;

    fn try_from(column: String) -> Result<Self, String> {
        let types = column
            .split(',')
            .filter(|name| !name.is_empty())
            .map(|name| EventType::try_from(name.to_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(types)
    }
}

/// A webhook as admins see it: never with its secret, which is shown once, when it is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({"id": 1, "url": "https://hooks.example.com/ticketdesk",
    "events": ["ticket.created", "ticket.status_changed"], "active": true,
    "created_at": "2026-07-23T12:30:00Z", "updated_at": "2026-07-23T12:30:00Z"}))]
pub struct Webhook {
    pub id: WebhookId,
    pub url: String,
    #[sqlx(try_from = "String")]
    pub events: EventTypes,
    /// An inactive webhook gets nothing; its pending deliveries wait until it is active again.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A webhook about to be stored.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: WebhookUrl,
    pub events: EventTypes,
    pub secret: WebhookSecret,
}

/// What a `PATCH` changes; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct WebhookChange {
    pub url: Option<WebhookUrl>,
    pub events: Option<EventTypes>,
    pub active: Option<bool>,
}

/// An absolute `http` or `https` URL with a host and no credentials, at most 2,048 characters.
/// Where it points is checked apart (see [`is_public_address`]): that needs DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    pub const MAX_CHARS: usize = 2048;

    pub fn parse(raw: &str) -> Result<Self, String> {
        reject_nul("url", raw)?;
        let too_long = || format!("url must be at most {} characters", Self::MAX_CHARS);
        if raw.len() > Self::MAX_CHARS {
            return Err(too_long());
        }
        let url = url::Url::parse(raw.trim()).map_err(|e| format!("url is not an absolute URL: {e}"))?;
        // Stored as parsed, which can be longer (a `/` added, characters percent-encoded).
        if url.as_str().len() > Self::MAX_CHARS {
            return Err(too_long());
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("url must be http or https (got {})", url.scheme()));
        }
        if url.host().is_none() {
            return Err("url must name a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("url must not carry credentials; authenticate deliveries by their signature".into());
        }
        Ok(Self(url))
    }

    pub fn as_url(&self) -> &url::Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// `whsec_` and the base64 of 32 random bytes; the bytes are the HMAC key.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    const PREFIX: &'static str = "whsec_";

    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
        Self(format!("{}{}", Self::PREFIX, STANDARD.encode(bytes)))
    }

    /// A stored secret; `None` if it is not one this server made.
    pub fn from_stored(secret: String) -> Option<Self> {
        let key = secret.strip_prefix(Self::PREFIX)?;
        STANDARD.decode(key).ok()?;
        Some(Self(secret))
    }

    /// The secret as the client receives it, once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn key(&self) -> Vec<u8> {
        let encoded = self.0.strip_prefix(Self::PREFIX).unwrap_or_default();
        STANDARD.decode(encoded).unwrap_or_default()
    }

    /// The `webhook-signature` header of a delivery: `v1,` and the base64 HMAC-SHA256 of
    /// `{id}.{timestamp}.{body}` under the secret's bytes.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&self.key()).expect("HMAC takes a key of any length");
        mac.update(format!("{message_id}.{timestamp}.").as_bytes());
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not yet delivered; tried again at `next_attempt_at`.
    Pending,
    Delivered,
    /// Every retry failed; nothing more is tried.
    Failed,
}

text_enum!(DeliveryState { Pending => "pending", Delivered => "delivered", Failed => "failed" });

/// One event on its way to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({"id": 7, "message_id": "msg_7", "event_id": 3, "ticket_id": 42,
    "type": "ticket.status_changed", "state": "pending", "attempts": 2, "last_status": 503,
    "last_error": "the receiver answered 503", "next_attempt_at": "2026-07-23T12:32:30Z",
    "delivered_at": null, "created_at": "2026-07-23T12:30:00Z"}))]
pub struct Delivery {
    pub id: DeliveryId,
    /// The `webhook-id` header of every attempt of this delivery.
    #[sqlx(skip)]
    pub message_id: String,
    pub event_id: i64,
    pub ticket_id: TicketId,
    #[serde(rename = "type")]
    #[sqlx(rename = "event_type", try_from = "String")]
    pub event_type: EventType,
    #[sqlx(try_from = "String")]
    pub state: DeliveryState,
    pub attempts: i32,
    /// The HTTP status of the last attempt, if the receiver answered.
    pub last_status: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The `webhook-id` of a delivery: the same for every attempt, so receivers can drop repeats.
pub fn message_id(delivery: DeliveryId) -> String {
    format!("msg_{delivery}")
}

/// A delivery due now, claimed by one server until `lease` ends, with what sending it needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub ticket_id: TicketId,
    pub event_id: i64,
    pub attempts: i32,
    /// The body of the first attempt; every retry sends it again unchanged.
    pub body: Option<String>,
    pub url: String,
    pub secret: String,
}

/// How one attempt went, and what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub body: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub next: NextStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}

/// The waits between attempts: after the n-th failure, the n-th wait; after the last, none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    pub const DEFAULT: &'static str = "5,30,120,600,1800,3600,7200,14400,28800,43200";

    /// Comma-separated seconds, e.g. `5,30,120`; empty means no retries.
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|wait| !wait.is_empty())
            .map(|wait| {
                wait.parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| format!("{wait:?} is not a whole number of seconds"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// What follows the failure of attempt number `attempt` (1 for the first).
    pub fn after_failure(&self, attempt: i32, now: DateTime<Utc>) -> NextStep {
        let wait = usize::try_from(attempt - 1).ok().and_then(|index| self.0.get(index));
        match wait.and_then(|wait| chrono::Duration::from_std(*wait).ok()) {
            Some(wait) => NextStep::RetryAt(now + wait),
            None => NextStep::GiveUp,
        }
    }
}

/// Whether a delivery may go to `address`: not loopback, private, link-local (which holds the
/// cloud metadata service, 169.254.169.254), shared, multicast, reserved or unspecified, in
/// IPv4 or IPv6, nor an IPv6 address wrapping such an IPv4 one.
pub fn is_public_address(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(address: Ipv4Addr) -> bool {
    let [a, b, c, _] = address.octets();
    !(address.is_unspecified()
        || address.is_loopback()
        || address.is_private()
        || address.is_link_local()
        || address.is_multicast()
        || address.is_broadcast()
        || address.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(address: Ipv6Addr) -> bool {
    if let Some(v4) = address.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = address.segments();
    // NAT64 (64:ff9b::/96) and IPv4-compatible (::/96) addresses reach the IPv4 address inside.
    if (segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6] == [0; 4]) || segments[..6] == [0; 6] {
        let [.., high, low] = segments;
        let embedded = Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
        return !address.is_unspecified() && !address.is_loopback() && is_public_v4(embedded);
    }
    !(address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local, e.g. fd00:ec2::254 (metadata)
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_text_matches_the_api() {
        crate::domain::assert_text_matches_serde(EventType::ALL, EventType::as_str);
        crate::domain::assert_text_matches_serde(DeliveryState::ALL, DeliveryState::as_str);
    }

    #[test]
    fn each_history_event_has_its_type_and_internal_notes_their_own() {
        let event = |kind, internal| TicketEvent {
            id: 1,
            ticket_id: 1,
            actor_id: 1,
            kind,
            from: None,
            to: None,
            comment_id: None,
            internal,
            created_at: Utc::now(),
        };
        for &kind in EventKind::ALL {
            // The trigger's rule: `ticket.` and the kind, for everything but internal notes.
            assert_eq!(EventType::of(&event(kind, false)).as_str(), format!("ticket.{}", kind.as_str()));
        }
        assert_eq!(EventType::of(&event(EventKind::CommentAdded, true)), EventType::TicketInternalNoteAdded);
    }

    #[test]
    fn event_types_are_stored_sorted_once_and_read_back() {
        let types = EventTypes::new(vec![
            EventType::TicketStatusChanged,
            EventType::TicketCreated,
            EventType::TicketStatusChanged,
        ])
        .unwrap();
        assert_eq!(types.to_column(), ",ticket.created,ticket.status_changed,");
        assert_eq!(EventTypes::try_from(types.to_column()).unwrap(), types);
        assert!(EventTypes::new(vec![]).is_err());
        assert!(EventTypes::try_from(",ticket.exploded,".to_owned()).is_err());
    }

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert!(WebhookUrl::parse("https://hooks.example.com/in?x=1").is_ok());
        assert!(WebhookUrl::parse("http://203.0.113.9:8080/").is_ok());
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com",
            "not a url",
            "/relative/path",
            "https://user:pass@example.com/",
            "http://a\0b.example.com/",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(WebhookUrl::parse(&format!("https://example.com/{}", "a".repeat(2048))).is_err());
        // 2,048 as written, 2,049 once the path's `/` is added.
        let host = format!("{}.com", "a".repeat(2048 - "https://.com".len()));
        assert!(WebhookUrl::parse(&format!("https://{host}")).is_err());
    }

    #[test]
    fn addresses_inside_and_around_the_host_are_refused() {
        for inside in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::7f00:1",
        ] {
            assert!(!is_public_address(inside.parse().unwrap()), "{inside}");
        }
        for outside in
            ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
        {
            assert!(is_public_address(outside.parse().unwrap()), "{outside}");
        }
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The Standard Webhooks specification's own example.
        let secret = WebhookSecret::from_stored("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()).unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let fresh = WebhookSecret::generate();
        assert!(fresh.expose().starts_with("whsec_"));
        assert_eq!(fresh.key().len(), 32);
        assert_ne!(fresh, WebhookSecret::generate());
        assert!(!format!("{fresh:?}").contains(fresh.expose()));
    }

    #[test]
    fn retries_follow_the_schedule_then_give_up() {
        let schedule = RetrySchedule::parse(RetrySchedule::DEFAULT).unwrap();
        let now = Utc::now();
        assert_eq!(schedule.after_failure(1, now), NextStep::RetryAt(now + chrono::Duration::seconds(5)));
        assert_eq!(schedule.after_failure(10, now), NextStep::RetryAt(now + chrono::Duration::hours(12)));
        assert_eq!(schedule.after_failure(11, now), NextStep::GiveUp);
        assert_eq!(RetrySchedule::parse("").unwrap().after_failure(1, now), NextStep::GiveUp);
        assert!(RetrySchedule::parse("5,soon").is_err());
    }
}
