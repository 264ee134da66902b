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

use super::event::EventKind;
use super::refusal::Refusal;
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
    /// A file deleted from the ticket or a public reply.
    #[serde(rename = "ticket.attachment_deleted")]
    TicketAttachmentDeleted,
    /// A file deleted from an internal note; staff-only like the note.
    #[serde(rename = "ticket.internal_attachment_deleted")]
    TicketInternalAttachmentDeleted,
    /// A service target is about to be missed (staff-only data, like every SLA event).
    #[serde(rename = "ticket.sla_warning")]
    TicketSlaWarning,
    /// A service target was missed.
    #[serde(rename = "ticket.sla_breached")]
    TicketSlaBreached,
    /// A service target was met in time.
    #[serde(rename = "ticket.sla_achieved")]
    TicketSlaAchieved,
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
    TicketAttachmentDeleted => "ticket.attachment_deleted",
    TicketInternalAttachmentDeleted => "ticket.internal_attachment_deleted",
    TicketSlaWarning => "ticket.sla_warning",
    TicketSlaBreached => "ticket.sla_breached",
    TicketSlaAchieved => "ticket.sla_achieved",
});

impl EventType {
    /// The type a history event of `kind` is delivered as; the only place this is decided: the
    /// store writes it with the event, and the database's fan-out trigger reads it there
    /// (migration 0012).
    pub fn of(kind: EventKind, internal: bool) -> Self {
        match kind {
            EventKind::Created => EventType::TicketCreated,
            EventKind::Assigned => EventType::TicketAssigned,
            EventKind::Unassigned => EventType::TicketUnassigned,
            EventKind::StatusChanged => EventType::TicketStatusChanged,
            EventKind::PriorityChanged => EventType::TicketPriorityChanged,
            EventKind::CommentAdded if internal => EventType::TicketInternalNoteAdded,
            EventKind::CommentAdded => EventType::TicketCommentAdded,
            EventKind::EmbedTokenRotated => EventType::TicketEmbedTokenRotated,
            EventKind::AttachmentDeleted if internal => EventType::TicketInternalAttachmentDeleted,
            EventKind::AttachmentDeleted => EventType::TicketAttachmentDeleted,
            EventKind::SlaWarning => EventType::TicketSlaWarning,
            EventKind::SlaBreached => EventType::TicketSlaBreached,
            EventKind::SlaAchieved => EventType::TicketSlaAchieved,
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
    pub fn new(mut types: Vec<EventType>) -> Result<Self, Refusal> {
        if types.is_empty() {
            return Err(Refusal::invalid("events must name at least one event type"));
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
        Self::new(types).map_err(|refusal| refusal.to_string())
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
    /// Whether payloads carry the ticket's `embed_token` (left out unless asked for).
    pub include_embed_token: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A webhook about to be stored.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: WebhookUrl,
    pub events: EventTypes,
    pub secret: WebhookSecret,
    pub include_embed_token: bool,
}

/// What a `PATCH` changes; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct WebhookChange {
    pub url: Option<WebhookUrl>,
    pub events: Option<EventTypes>,
    pub active: Option<bool>,
    pub include_embed_token: Option<bool>,
}

/// An absolute `http` or `https` URL with a host and no credentials, at most 2,048 characters.
/// Where it points is checked apart (see [`is_public_address`]): that needs DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    pub const MAX_CHARS: usize = 2048;

    pub fn parse(raw: &str) -> Result<Self, Refusal> {
        reject_nul("url", raw)?;
        let too_long = || Refusal::Invalid(format!("url must be at most {} characters", Self::MAX_CHARS));
        if raw.len() > Self::MAX_CHARS {
            return Err(too_long());
        }
        let url = url::Url::parse(raw.trim())
            .map_err(|e| Refusal::Invalid(format!("url is not an absolute URL: {e}")))?;
        // Stored as parsed, which can be longer (a `/` added, characters percent-encoded).
        if url.as_str().len() > Self::MAX_CHARS {
            return Err(too_long());
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Invalid(format!("url must be http or https (got {})", url.scheme())));
        }
        if url.host().is_none() {
            return Err(Refusal::invalid("url must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::invalid(
                "url must not carry credentials; authenticate deliveries by their signature",
            ));
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
    pub include_embed_token: bool,
}

/// Attempts this server has in flight, per webhook, against the per-webhook cap: one stalled
/// receiver can hold no more than its share of the delivery slots.
#[derive(Debug)]
pub struct InFlight {
    per_webhook: u32,
    by_webhook: std::collections::HashMap<WebhookId, u32>,
}

impl InFlight {
    pub fn new(per_webhook: u32) -> Self {
        Self { per_webhook, by_webhook: std::collections::HashMap::new() }
    }

    pub fn started(&mut self, webhook: WebhookId) {
        *self.by_webhook.entry(webhook).or_default() += 1;
    }

    pub fn finished(&mut self, webhook: WebhookId) {
        if let Some(count) = self.by_webhook.get_mut(&webhook) {
            *count -= 1;
            if *count == 0 {
                self.by_webhook.remove(&webhook);
            }
        }
    }

    /// Whether another of the webhook's attempts fits in its share.
    pub fn has_room(&self, webhook: WebhookId) -> bool {
        self.by_webhook.get(&webhook).copied().unwrap_or(0) < self.per_webhook
    }

    /// How many deliveries to claim of each webhook in `waiting` (those with deliveries due,
    /// the longest waiting first): what its share leaves room for, at most `limit` in all.
    /// Webhooks with no room are left out.
    pub fn shares(&self, waiting: impl IntoIterator<Item = WebhookId>, limit: u32) -> Vec<(WebhookId, u32)> {
        let mut left = limit;
        let mut shares = Vec::new();
        for webhook in waiting {
            let busy = self.by_webhook.get(&webhook).copied().unwrap_or(0);
            let room = self.per_webhook.saturating_sub(busy).min(left);
            if room > 0 {
                shares.push((webhook, room));
                left -= room;
            }
        }
        shares
    }
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

/// Whether a delivery may go to `address`: only to addresses the internet routes, judged by
/// IANA's special-purpose address registries (IPv4 and IPv6): never loopback, private, shared,
/// link-local (which holds the cloud metadata service, 169.254.169.254), documentation,
/// benchmarking, multicast or reserved ranges, and never an IPv6 address that carries or reaches
/// a non-public IPv4 one (mapped, NAT64, 6to4, Teredo).
pub fn is_public_address(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

/// IPv4 ranges that are not globally reachable (RFC 6890 and its registry), with multicast and
/// the reserved 240.0.0.0/4, which holds the broadcast address.
const NON_GLOBAL_V4: [(Ipv4Addr, u32); 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network"
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared address space (carrier NAT)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local, cloud metadata
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast (deprecated)
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, broadcast
];

/// Special-purpose ranges inside global unicast (2000::/3); everything outside it (loopback,
/// unspecified, IPv4-compatible, discard-only 100::/64, local-use NAT64 64:ff9b:1::/48, unique
/// local, link-local, multicast, ...) is refused already.
const NON_GLOBAL_V6: [(Ipv6Addr, u32); 5] = [
    // IETF protocol assignments, whole: Teredo (2001::/32, reaches IPv4 through a relay),
    // benchmarking (2001:2::/48), ORCHID and the few anycast services no webhook lives on.
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16),     // 6to4: reaches the IPv4 address inside
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),     // documentation
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16),     // segment routing (SRv6) SIDs
];

fn is_public_v4(address: Ipv4Addr) -> bool {
    let bits = address.to_bits();
    !NON_GLOBAL_V4.iter().any(|&(network, length)| {
        let mask = u32::MAX << (32 - length);
        bits & mask == network.to_bits()
    })
}

fn is_public_v6(address: Ipv6Addr) -> bool {
    // Addresses that carry an IPv4 address reach that one: IPv4-mapped (::ffff:0:0/96) and the
    // well-known NAT64 prefix (64:ff9b::/96).
    if let Some(v4) = address.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let bits = address.to_bits();
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return is_public_v4(Ipv4Addr::from_bits(bits as u32));
    }
    let global_unicast = bits >> 125 == 0b001;
    global_unicast
        && !NON_GLOBAL_V6.iter().any(|&(network, length)| {
            let mask = u128::MAX << (128 - length);
            bits & mask == network.to_bits()
        })
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
        for &kind in EventKind::ALL {
            // `ticket.` and the kind, for everything but internal notes.
            assert_eq!(EventType::of(kind, false).as_str(), format!("ticket.{}", kind.as_str()));
        }
        assert_eq!(EventType::of(EventKind::CommentAdded, true), EventType::TicketInternalNoteAdded);
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
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.1",
            "203.0.113.1",
            "255.255.255.255",
            "240.0.0.1",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::7f00:1",
            "::808:808", // IPv4-compatible (deprecated): refused whatever it carries
            // The ranges the security review named:
            "64:ff9b:1::a9fe:a9fe", // local-use NAT64
            "64:ff9b:1::808:808",
            "::ffff:0:7f00:1", // IPv4-translated
            "::ffff:0:808:808",
            "2002:7f00:1::1", // 6to4 around 127.0.0.1
            "2002:808:808::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "100::1",                               // discard-only
            "2001:2::1",                            // benchmarking
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
        ] {
            assert!(!is_public_address(inside.parse().unwrap()), "{inside}");
        }
        for outside in [
            "93.184.216.34",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "198.20.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public_address(outside.parse().unwrap()), "{outside}");
        }
    }

    #[test]
    fn a_webhook_gets_no_more_than_its_share_of_attempts() {
        let mut in_flight = InFlight::new(2);
        in_flight.started(1);
        // Webhook 1 has one in flight: room for one more; 2 and 3 for two each; the limit is 4.
        assert_eq!(in_flight.shares([1, 2, 3], 4), [(1, 1), (2, 2), (3, 1)]);
        in_flight.started(1);
        assert_eq!(in_flight.shares([1, 2], 4), [(2, 2)], "webhook 1 is full");
        assert_eq!(in_flight.shares([2, 1, 3], 1), [(2, 1)], "the longest waiting first");
        in_flight.finished(1);
        in_flight.finished(1);
        assert_eq!(in_flight.shares([1], 4), [(1, 2)]);
        assert!(in_flight.by_webhook.is_empty());
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
