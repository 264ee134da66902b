//! Which tickets this server's live embed streams follow, so that a change wakes only the streams
//! of its own ticket: one entry per watched ticket, however many streams it has, found by id. A
//! write costs one map lookup whatever the number of streams open on other tickets, and a stream
//! holds a counted reference to its ticket's entry and a version number, nothing per change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::TimeDelta;
use tokio::sync::{OnceCell, watch};

use crate::domain::TicketId;

/// How long a recorded watch lasts in the database unless renewed: the server that recorded it
/// renews its watches every [`RENEW_EVERY`], so a stopped server's lapse within this. (A watch
/// that lasts beyond its streams costs only announcements nobody hears.)
pub const LIFETIME: TimeDelta = TimeDelta::seconds(120);
pub const RENEW_EVERY: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Watches {
    tickets: Mutex<HashMap<TicketId, Entry>>,
}

struct Entry {
    /// Sent to on each change; every stream of the ticket holds a receiver.
    changed: watch::Sender<()>,
    streams: usize,
    /// Set once the database knows some server watches the ticket (PostgreSQL's `embed_watches`
    /// row), so the streams that open while the first records it wait for it too.
    recorded: Arc<OnceCell<()>>,
}

impl Watches {
    /// Starts following `ticket`; `recorded` says whether the database knows of it yet.
    pub fn follow(self: &Arc<Self>, ticket: TicketId) -> (TicketWatch, Arc<OnceCell<()>>) {
        let mut tickets = self.lock();
        let entry = tickets.entry(ticket).or_insert_with(|| Entry {
            changed: watch::Sender::new(()),
            streams: 0,
            recorded: Arc::default(),
        });
        entry.streams += 1;
        let watch = TicketWatch { ticket, changes: entry.changed.subscribe(), watches: self.clone() };
        (watch, entry.recorded.clone())
    }

    /// Wakes the streams following `ticket`, if any.
    pub fn changed(&self, ticket: TicketId) {
        if let Some(entry) = self.lock().get(&ticket) {
            entry.changed.send_replace(());
        }
    }

    /// Wakes every stream: changes may have gone unannounced (the database connection was lost).
    pub fn all_changed(&self) {
        for entry in self.lock().values() {
            entry.changed.send_replace(());
        }
    }

    /// The tickets followed now whose watch the database was told of.
    pub fn recorded(&self) -> Vec<TicketId> {
        self.lock().iter().filter(|(_, entry)| entry.recorded.initialized()).map(|(&id, _)| id).collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TicketId, Entry>> {
        // The map is consistent after every statement; a panic elsewhere cannot leave it half-changed.
        self.tickets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One stream's hold on its ticket's changes; the ticket is no longer followed once the last is
/// dropped.
pub struct TicketWatch {
    ticket: TicketId,
    changes: watch::Receiver<()>,
    watches: Arc<Watches>,
}

impl TicketWatch {
    /// Waits until the ticket may have changed since the last call (or since this watch began).
    pub async fn changed(&mut self) {
        // The sender lives in the map as long as this watch does, so this cannot fail.
        let _ = self.changes.changed().await;
    }
}

impl Drop for TicketWatch {
    fn drop(&mut self) {
        let mut tickets = self.watches.lock();
        if let Some(entry) = tickets.get_mut(&self.ticket) {
            entry.streams -= 1;
            if entry.streams == 0 {
                tickets.remove(&self.ticket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn woken(watch: &mut TicketWatch) -> bool {
        tokio::time::timeout(Duration::from_millis(0), watch.changed()).await.is_ok()
    }

    #[tokio::test]
    async fn a_change_wakes_the_streams_of_its_ticket_only() {
        let watches = Arc::new(Watches::default());
        let (mut first, _) = watches.follow(1);
        let (mut second, _) = watches.follow(1);
        let (mut other, _) = watches.follow(2);
        watches.changed(1);
        assert!(woken(&mut first).await && woken(&mut second).await);
        assert!(!woken(&mut other).await, "ticket 2 did not change");
        assert!(!woken(&mut first).await, "one change wakes once");
        watches.changed(3); // nobody follows it
        watches.all_changed();
        assert!(woken(&mut first).await && woken(&mut other).await);
    }

    #[tokio::test]
    async fn a_change_while_the_stream_was_busy_is_not_lost() {
        let watches = Arc::new(Watches::default());
        let (mut watch, _) = watches.follow(7);
        watches.changed(7);
        watches.changed(7);
        assert!(woken(&mut watch).await, "changes before the wait count");
        assert!(!woken(&mut watch).await, "two changes while away wake once");
    }

    #[tokio::test]
    async fn a_ticket_is_followed_until_its_last_stream_ends() {
        let watches = Arc::new(Watches::default());
        let (first, recorded) = watches.follow(1);
        let (second, _) = watches.follow(1);
        recorded.set(()).unwrap();
        assert_eq!(watches.recorded(), vec![1]);
        drop(first);
        assert_eq!(watches.recorded(), vec![1], "one stream still follows it");
        drop(second);
        assert!(watches.recorded().is_empty());
        let (_again, recorded) = watches.follow(1);
        assert!(!recorded.initialized(), "a ticket followed anew is recorded anew");
    }
}
