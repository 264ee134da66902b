//! Webhook delivery: claims due deliveries from the store (servers on one database each claim
//! different ones), signs and sends each, and records how it went. The deliveries themselves
//! are written by the database, in the transaction of the change they tell of (migration 0009),
//! so nothing here can lose one: a server that stops mid-attempt leaves it to be claimed again.

mod sender;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Notify, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use sender::{NOT_PUBLIC, check_destination};

use self::sender::{Sender, body};
use crate::config::WebhookSettings;
use crate::domain::{AttemptOutcome, DeliveryId, DueDelivery, InFlight, WebhookId};
use crate::metrics::WebhookAttempts;
use crate::store::{Change, Store};

/// How often due deliveries are looked for without being told of new ones (retries come due,
/// other servers' work frees a ticket's next delivery).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The least time between two looks for due deliveries prompted by announcements of new ones.
const NOTICE_GAP: Duration = Duration::from_millis(10);
/// How long a claim lasts beyond the attempts it may wait for and its own (each within the
/// timeout): if this server is gone by then, another claims the delivery again.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// A webhook may hold this many rounds of its share of attempts claimed, the rest of them ready
/// here: one claim serves several attempts, and a fast receiver is not held to a claim (a write
/// transaction and its commit) per attempt.
const CLAIMED_ROUNDS: u32 = 4;
/// The most attempts recorded in one transaction. One task records them, whatever has ended
/// since its last transaction, so delivery holds at most two of the write connections the API's
/// writes use (with the claims), however many attempts are in flight, and pays one commit for
/// many attempts under load.
const RECORDED_AT_ONCE: usize = 512;

/// Starts delivering this database's webhooks from this server, until `shutdown`: then it claims
/// no more, gives back the claimed deliveries it has not started, and ends once the attempts in
/// flight are made and recorded (each within its timeout), so the store may be closed after it.
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
    let (outcomes, to_record) = mpsc::channel(max_concurrent.max(1));
    let recorded = Arc::new(Notify::new());
    let recorder = tokio::spawn(record(store.clone(), to_record, recorded.clone()));
    let mut worker = Worker::new(store, sender, max_concurrent, per_webhook, outcomes);
    let mut stopping = false;
    let mut looked = Instant::now();
    let mut next_look = looked;
    loop {
        if !stopping && Instant::now() >= next_look {
            worker.look().await;
            looked = Instant::now();
            next_look = looked + POLL_INTERVAL;
        }
        worker.start_ready();
        if stopping {
            // What waits unsent is given back at once, rather than when its lease runs out.
            worker.give_back_ready().await;
            if worker.in_flight.is_empty() {
                break;
            }
        }
        // Wait for a reason to look again: an attempt ended (its slot is free), attempts were
        // recorded (the tickets' next deliveries may be due), or new deliveries were announced
        // (by the thousand under load). Such a look follows the last one after NOTICE_GAP at
        // most; the poll finds retries come due and work other servers freed.
        let soon = looked + NOTICE_GAP;
        tokio::select! {
            Some(ended) = worker.in_flight.join_next(), if !worker.in_flight.is_empty() => {
                worker.ended(ended);
                next_look = next_look.min(soon);
            }
            () = recorded.notified() => next_look = next_look.min(soon),
            change = changes.recv(), if !stopping => match change {
                // New deliveries, or notices of them may have been lost.
                Ok(Change::Deliveries | Change::Missed) | Err(RecvError::Lagged(_)) => next_look = next_look.min(soon),
                Err(RecvError::Closed) => stopping = true,
            },
            () = tokio::time::sleep_until(next_look), if !stopping => {}
            () = shutdown.cancelled(), if !stopping => stopping = true,
        }
    }
    // The recorder ends once every outcome handed to it is recorded.
    drop(worker);
    let _ = recorder.await;
}

/// A claimed delivery with the body to send, waiting for a slot.
struct Ready {
    delivery: DueDelivery,
    body: String,
    lease_until: DateTime<Utc>,
}

/// One server's deliveries between their claim and their record.
struct Worker {
    store: Arc<dyn Store>,
    sender: Arc<Sender>,
    max_concurrent: usize,
    /// The attempts being made, each ending once its outcome is handed to the recorder.
    in_flight: JoinSet<WebhookId>,
    /// Attempts being made, per webhook, against its share.
    sending: InFlight,
    /// Deliveries claimed and not yet handed to the recorder (being made or ready), per webhook.
    held: InFlight,
    /// Claimed deliveries waiting for a slot, oldest claim first.
    ready: VecDeque<Ready>,
    /// The recorder's queue, which holds no more than the slots: an attempt waits there,
    /// holding its slot, while recording lags, so claiming stops too.
    outcomes: mpsc::Sender<(DueDelivery, AttemptOutcome)>,
    lease: chrono::Duration,
}

impl Worker {
    fn new(
        store: Arc<dyn Store>,
        sender: Arc<Sender>,
        max_concurrent: usize,
        per_webhook: u32,
        outcomes: mpsc::Sender<(DueDelivery, AttemptOutcome)>,
    ) -> Self {
        // The last of a webhook's claims starts once the rounds before it are done, each within
        // the timeout.
        let lease = sender.timeout * CLAIMED_ROUNDS + LEASE_MARGIN;
        Self {
            store,
            max_concurrent,
            in_flight: JoinSet::new(),
            sending: InFlight::new(per_webhook),
            held: InFlight::new(per_webhook.saturating_mul(CLAIMED_ROUNDS)),
            ready: VecDeque::new(),
            outcomes,
            lease: chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX),
            sender,
        }
    }

    /// Claims what the webhooks' shares leave room for, and readies their bodies.
    async fn look(&mut self) {
        let held = self.in_flight.len() + self.ready.len();
        let room = (self.max_concurrent * CLAIMED_ROUNDS as usize).saturating_sub(held);
        let Ok(room) = u32::try_from(room) else { return };
        if room == 0 {
            return;
        }
        let lease_until = Utc::now() + self.lease;
        match self.store.claim_deliveries(room, lease_until, &self.held).await {
            Ok(due) => {
                for (delivery, body) in with_bodies(self.store.as_ref(), due).await {
                    self.held.started(delivery.webhook_id);
                    self.ready.push_back(Ready { delivery, body, lease_until });
                }
            }
            Err(error) => tracing::warn!(%error, "could not claim webhook deliveries"),
        }
    }

    /// Starts the ready deliveries the slots and the webhooks' shares leave room for. One whose
    /// lease would end before its attempt could is dropped, left for its lease to run out.
    fn start_ready(&mut self) {
        let latest_start = Utc::now() + chrono::Duration::from_std(self.sender.timeout).unwrap_or_default();
        for ready in std::mem::take(&mut self.ready) {
            let webhook = ready.delivery.webhook_id;
            if ready.lease_until <= latest_start {
                self.held.finished(webhook);
            } else if self.in_flight.len() < self.max_concurrent && self.sending.has_room(webhook) {
                self.sending.started(webhook);
                self.in_flight.spawn(attempt(
                    self.sender.clone(),
                    ready.delivery,
                    ready.body,
                    self.outcomes.clone(),
                ));
            } else {
                self.ready.push_back(ready);
            }
        }
    }

    fn ended(&mut self, first: Result<WebhookId, tokio::task::JoinError>) {
        let mut ended = Some(first);
        while let Some(attempt) = ended {
            if let Ok(webhook) = attempt {
                self.sending.finished(webhook);
                self.held.finished(webhook);
            }
            // Every other attempt that has ended frees its slot too, before the next look.
            ended = self.in_flight.try_join_next();
        }
    }

    /// Gives the deliveries still waiting for a slot back to every server, due now.
    async fn give_back_ready(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        // Only claims that are surely still this server's: one given back after its lease
        // ended could be another server's claim by then.
        let safe = Utc::now() + LEASE_MARGIN;
        let ids: Vec<DeliveryId> = self
            .ready
            .drain(..)
            .filter(|ready| ready.lease_until > safe)
            .map(|ready| ready.delivery.id)
            .collect();
        if ids.is_empty() {
            return;
        }
        if let Err(error) = self.store.release_deliveries(&ids).await {
            tracing::warn!(%error, deliveries = ids.len(), "could not give back claimed webhook deliveries; their leases will end");
        }
    }
}

/// The claimed deliveries with the bodies to send: kept ones for retries, the rest built from
/// their events, read all at once. One whose event cannot be read is left claimed, to be
/// attempted again when its lease runs out.
async fn with_bodies(store: &dyn Store, due: Vec<DueDelivery>) -> Vec<(DueDelivery, String)> {
    let first_attempts: Vec<i64> =
        due.iter().filter(|delivery| delivery.body.is_none()).map(|delivery| delivery.event_id).collect();
    let events = match store.events_in_context(&first_attempts).await {
        Ok(events) => events,
        Err(error) => {
            tracing::warn!(%error, deliveries = due.len(), "could not read the events of webhook deliveries");
            Vec::new()
        }
    };
    let mut ready = Vec::with_capacity(due.len());
    for mut delivery in due {
        let body = match delivery.body.take() {
            Some(body) => Ok(body),
            None => match events.iter().find(|(_, event, _)| event.id == delivery.event_id) {
                Some(context) => body(&delivery, context),
                None => Err(format!("event {} is missing", delivery.event_id)),
            },
        };
        match body {
            Ok(body) => ready.push((delivery, body)),
            Err(error) => {
                tracing::warn!(delivery = delivery.id, %error, "could not build a webhook delivery")
            }
        }
    }
    ready
}

/// One attempt, handed to the recorder; returns its webhook, whose attempts in flight it no
/// longer counts among.
async fn attempt(
    sender: Arc<Sender>,
    delivery: DueDelivery,
    body: String,
    recorder: mpsc::Sender<(DueDelivery, AttemptOutcome)>,
) -> WebhookId {
    let webhook = delivery.webhook_id;
    let outcome = sender.send(&delivery, body).await;
    sender.attempts.count(&outcome.next);
    if recorder.send((delivery, outcome)).await.is_err() {
        tracing::warn!("the webhook recorder has stopped; the attempt will be made again");
    }
    webhook
}

/// Records the outcomes handed to it, as many as have come in since its last transaction in
/// each, until every sender is gone.
async fn record(
    store: Arc<dyn Store>,
    mut outcomes: mpsc::Receiver<(DueDelivery, AttemptOutcome)>,
    recorded: Arc<Notify>,
) {
    let mut batch = Vec::new();
    while outcomes.recv_many(&mut batch, RECORDED_AT_ONCE).await > 0 {
        if let Err(error) = store.record_attempts(&batch).await {
            tracing::warn!(%error, attempts = batch.len(), "could not record webhook attempts; they will be made again");
        }
        batch.clear();
        recorded.notify_one();
    }
}
