//! Sending one delivery: its body, the signed request, and where requests may go (only public
//! addresses unless private networks are allowed, checked at registration and as each request
//! resolves its host).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Serialize;

use crate::config::WebhookSettings;
use crate::domain::webhook::{is_public_address, message_id};
use crate::domain::{
    AttemptOutcome, Comment, DueDelivery, EventType, NextStep, Refusal, Ticket, TicketEvent, WebhookSecret,
    WebhookUrl,
};
use crate::metrics::WebhookAttempts;

/// How long resolving a webhook's host at registration may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a delivery's body holds.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    event_type: EventType,
    timestamp: DateTime<Utc>,
    data: PayloadData<'a>,
}

#[derive(Serialize)]
struct PayloadData<'a> {
    /// The ticket, its `embed_token` only for webhooks that ask for it.
    ticket: serde_json::Value,
    event: &'a TicketEvent,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a Comment>,
}

/// The body of a delivery's first attempt, from its event in context.
pub(super) fn body(
    delivery: &DueDelivery,
    (ticket, event, comment): &(Ticket, TicketEvent, Option<Comment>),
) -> Result<String, String> {
    let mut ticket = serde_json::to_value(ticket).map_err(|e| format!("a payload's ticket: {e}"))?;
    if !delivery.include_embed_token
        && let Some(fields) = ticket.as_object_mut()
    {
        fields.remove("embed_token");
    }
    let payload = Payload {
        event_type: EventType::of(event.kind, event.internal),
        timestamp: event.created_at,
        data: PayloadData { ticket, event, comment: comment.as_ref() },
    };
    serde_json::to_string(&payload).map_err(|e| format!("a payload: {e}"))
}

/// Sends signed requests: no redirects, no proxies, a timeout per attempt, and (unless private
/// networks are allowed) only to public addresses, checked as they are resolved for the request
/// itself, so a name cannot resolve one way when checked and another when used.
pub(super) struct Sender {
    client: reqwest::Client,
    pub(super) timeout: Duration,
    retry: crate::domain::RetrySchedule,
    allow_private_networks: bool,
    pub(super) attempts: WebhookAttempts,
}

impl Sender {
    pub(super) fn new(settings: &WebhookSettings, attempts: WebhookAttempts) -> Arc<Self> {
        let mut client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("ticketdesk-webhooks/", env!("CARGO_PKG_VERSION")));
        if !settings.allow_private_networks {
            client = client.dns_resolver(Arc::new(PublicAddressesOnly));
        }
        Arc::new(Self {
            client: client.build().expect("the TLS backend initializes"),
            timeout: settings.timeout,
            retry: settings.retry.clone(),
            allow_private_networks: settings.allow_private_networks,
            attempts,
        })
    }

    pub(super) async fn send(&self, delivery: &DueDelivery, body: String) -> AttemptOutcome {
        let (status, error) = match self.post(delivery, &body).await {
            Ok(status) if (200..300).contains(&status) => (Some(status), None),
            Ok(status) => (Some(status), Some(format!("the receiver answered {status}"))),
            Err(error) => (None, Some(error)),
        };
        let attempt = delivery.attempts + 1;
        let next =
            if error.is_none() { NextStep::Delivered } else { self.retry.after_failure(attempt, Utc::now()) };
        AttemptOutcome { body, status, error, next }
    }

    /// The receiver's status code, or why there is none.
    async fn post(&self, delivery: &DueDelivery, body: &str) -> Result<u16, String> {
        let url = WebhookUrl::parse(&delivery.url).map_err(|refusal| refusal.to_string())?;
        if !self.allow_private_networks {
            // Names are checked as they resolve; addresses written in the URL are checked here.
            if let Some(address) = literal_address(&url).filter(|address| !is_public_address(*address)) {
                return Err(format!("refused: {address} is not a public address"));
            }
        }
        let secret = WebhookSecret::from_stored(delivery.secret.clone())
            .ok_or("the webhook's stored secret is not one this server made")?;
        let id = message_id(delivery.id);
        let timestamp = Utc::now().timestamp();
        let response = self
            .client
            .post(url.as_url().clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", secret.sign(&id, timestamp, body))
            .body(body.to_owned())
            .send()
            .await
            .map_err(|error| describe(&error))?;
        Ok(response.status().as_u16())
    }
}

/// A failed request, in words for the deliveries listing: the whole chain of causes (reqwest's
/// own message is "error sending request"), without the URL.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() { "timed out" } else { "failed" };
    let mut text = format!("the request {kind}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The address a URL names directly, if it names one rather than a host name.
fn literal_address(url: &WebhookUrl) -> Option<IpAddr> {
    match url.as_url().host()? {
        url::Host::Ipv4(address) => Some(IpAddr::V4(address)),
        url::Host::Ipv6(address) => Some(IpAddr::V6(address)),
        url::Host::Domain(_) => None,
    }
}

/// Resolves names as usual, then keeps the public addresses only; a name with none fails.
struct PublicAddressesOnly;

impl Resolve for PublicAddressesOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                resolved.into_iter().filter(|address| is_public_address(address.ip())).collect();
            if public.is_empty() {
                return Err(format!("refused: {} resolves to no public address", name.as_str()).into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Why a registration is refused when its URL's host is not public. One answer whether the host
/// does not resolve or resolves inside, naming no address: otherwise registering URLs would be a
/// way to ask what internal names exist and what they resolve to.
pub const NOT_PUBLIC: &str = "url must resolve to public internet addresses only: webhooks are never \
                              sent to loopback, private, link-local or other special-purpose addresses";

/// The check at registration: unless private networks are allowed, the URL's host must resolve,
/// and only to public addresses. (Delivery checks again: DNS answers change.)
pub async fn check_destination(url: &WebhookUrl, allow_private_networks: bool) -> Result<(), Refusal> {
    if allow_private_networks {
        return Ok(());
    }
    let addresses: Vec<IpAddr> = match (literal_address(url), url.as_url().host_str()) {
        (Some(address), _) => vec![address],
        (None, Some(host)) => {
            let port = url.as_url().port_or_known_default().unwrap_or(443);
            let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await;
            match lookup {
                Ok(Ok(found)) => found.map(|address| address.ip()).collect(),
                Ok(Err(_)) | Err(_) => Vec::new(),
            }
        }
        (None, None) => return Err(Refusal::invalid("url must name a host")),
    };
    if addresses.is_empty() || !addresses.iter().all(|address| is_public_address(*address)) {
        return Err(Refusal::invalid(NOT_PUBLIC));
    }
    Ok(())
}
