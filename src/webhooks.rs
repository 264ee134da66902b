//! Webhook delivery: claims due deliveries from the store (servers on one database each claim
//! different ones), signs and sends each, and records how it went. The deliveries themselves
//! are written by the database, in the transaction of the change they tell of (migration 0009),
//! so nothing here can lose one: a server that stops mid-attempt leaves it to be claimed again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::WebhookSettings;
use crate::domain::webhook::{is_public_address, message_id};
use crate::domain::{
    AttemptOutcome, Comment, DueDelivery, EventType, InFlight, NextStep, Refusal, TicketEvent, WebhookId,
    WebhookSecret, WebhookUrl,
};
use crate::metrics::WebhookAttempts;
use crate::store::{Change, Store};

/// How often due deliveries are looked for without being told of new ones (retries come due,
/// other servers' work frees a ticket's next delivery).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The least time between two looks for due deliveries prompted by announcements of new ones.
const NOTICE_GAP: Duration = Duration::from_millis(10);
/// How long a claim lasts beyond the attempt's own timeout: if this server is gone by then,
/// another claims the delivery again.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// Attempts recorded at once. Recording takes a write connection from the pool the API's
/// writes use; with the claims (one at a time), delivery holds at most three of them, however
/// many attempts are in flight.
const RECORDING_AT_ONCE: usize = 2;
/// How long resolving a webhook's host at registration may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts delivering this database's webhooks from this server, until `shutdown`: then it claims
/// no more, and the task ends once the attempts in flight are made and recorded (each within its
/// timeout), so the store may be closed after it.
pub fn start(
    store: Arc<dyn Store>,
    settings: &WebhookSettings,
    attempts: WebhookAttempts,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let sender = Sender::new(settings, attempts);
    let per_webhook = u32::try_from(settings.max_concurrent_per_webhook).unwrap_or(u32::MAX);
    tokio::spawn(run(store, sender, settings.max_concurrent, per_webhook, shutdown))
}

async fn run(
    store: Arc<dyn Store>,
    sender: Arc<Sender>,
    max_concurrent: usize,
    per_webhook: u32,
    shutdown: CancellationToken,
) {
    let mut changes = store.changes();
    let mut in_flight = JoinSet::new();
    let mut per_webhook = InFlight::new(per_webhook);
    let lease = chrono::Duration::from_std(sender.timeout + LEASE_MARGIN).unwrap_or(chrono::Duration::MAX);
    while !shutdown.is_cancelled() {
        let free = u32::try_from(max_concurrent.saturating_sub(in_flight.len())).unwrap_or(u32::MAX);
        if free > 0 {
            match store.claim_deliveries(free, Utc::now() + lease, &per_webhook).await {
                Ok(due) => {
                    for delivery in due {
                        per_webhook.started(delivery.webhook_id);
                        in_flight.spawn(attempt(store.clone(), sender.clone(), delivery));
                    }
                }
                Err(error) => tracing::warn!(%error, "could not claim webhook deliveries"),
            }
        }
        // Wait for a reason to look again. While most slots are busy, a look would claim one or
        // two deliveries for a write transaction each: it waits until half are free (or the poll).
        // Writes announce new deliveries by the thousand under load: a look follows them at most
        // every NOTICE_GAP.
        let looked = tokio::time::Instant::now();
        let mut deadline = looked + POLL_INTERVAL;
        let worth_a_look =
            |busy: usize| max_concurrent - busy.min(max_concurrent) >= (max_concurrent / 2).max(1);
        loop {
            tokio::select! {
                // An attempt ended: a slot is free, and the ticket's next delivery may be due.
                Some(ended) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Ok(webhook) = ended {
                        per_webhook.finished(webhook);
                    }
                    if worth_a_look(in_flight.len()) {
                        break;
                    }
                }
                change = changes.recv() => match change {
                    // New deliveries, or notices of them may have been lost.
                    Ok(Change::Deliveries | Change::Missed) | Err(RecvError::Lagged(_)) => {
                        if worth_a_look(in_flight.len()) {
                            deadline = deadline.min(looked + NOTICE_GAP);
                        }
                    }
                    Err(RecvError::Closed) => return,
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = shutdown.cancelled() => break,
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// One attempt; returns its webhook, whose attempts in flight it no longer counts among.
async fn attempt(store: Arc<dyn Store>, sender: Arc<Sender>, delivery: DueDelivery) -> WebhookId {
    let outcome = match body(store.as_ref(), &delivery).await {
        Ok(body) => sender.send(&delivery, body).await,
        Err(error) => {
            // Left claimed: the lease runs out and the attempt is made again then.
            tracing::warn!(delivery = delivery.id, %error, "could not build a webhook delivery");
            return delivery.webhook_id;
        }
    };
    sender.attempts.count(&outcome.next);
    let _recording = sender.recording.acquire().await;
    if let Err(error) = store.record_attempt(&delivery, &outcome).await {
        tracing::warn!(delivery = delivery.id, %error, "could not record a webhook attempt; it will be made again");
    }
    delivery.webhook_id
}

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

/// The body of the delivery's first attempt, kept by the store; built now if this is the first.
async fn body(store: &dyn Store, delivery: &DueDelivery) -> crate::error::Result<String> {
    if let Some(body) = &delivery.body {
        return Ok(body.clone());
    }
    let (ticket, event, comment) = store
        .event_in_context(delivery.event_id)
        .await?
        .ok_or_else(|| crate::error::Error::Internal(format!("event {} is missing", delivery.event_id)))?;
    let mut ticket = serde_json::to_value(&ticket)
        .map_err(|e| crate::error::Error::Internal(format!("a payload's ticket: {e}")))?;
    if !delivery.include_embed_token
        && let Some(fields) = ticket.as_object_mut()
    {
        fields.remove("embed_token");
    }
    let payload = Payload {
        event_type: EventType::of(event.kind, event.internal),
        timestamp: event.created_at,
        data: PayloadData { ticket, event: &event, comment: comment.as_ref() },
    };
    serde_json::to_string(&payload).map_err(|e| crate::error::Error::Internal(format!("a payload: {e}")))
}

/// Sends signed requests: no redirects, no proxies, a timeout per attempt, and (unless private
/// networks are allowed) only to public addresses, checked as they are resolved for the request
/// itself, so a name cannot resolve one way when checked and another when used.
struct Sender {
    client: reqwest::Client,
    timeout: Duration,
    retry: crate::domain::RetrySchedule,
    allow_private_networks: bool,
    attempts: WebhookAttempts,
    recording: tokio::sync::Semaphore,
}

impl Sender {
    fn new(settings: &WebhookSettings, attempts: WebhookAttempts) -> Arc<Self> {
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
            recording: tokio::sync::Semaphore::new(RECORDING_AT_ONCE),
        })
    }

    async fn send(&self, delivery: &DueDelivery, body: String) -> AttemptOutcome {
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
