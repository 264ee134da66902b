//! Connections for reads, beside sqlx's pool (which the writes use). The pool pings every
//! connection it takes back, before anyone else may use it: one more database round trip per
//! query, on every request. A read that succeeded leaves its connection ready for the next
//! statement, so these go back as they are, and a read costs exactly one round trip.
//!
//! Nothing pings them before use either, so one the database dropped since (a restart) fails on
//! its next use; `SqlStore::read` then forgets the idle ones and reads again on a new connection.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sqlx::{ConnectOptions, Connection, Database};
use tokio::sync::{Semaphore, SemaphorePermit};

type Options<DB> = <<DB as Database>::Connection as Connection>::Options;

pub(super) struct ReadConnections<DB: Database> {
    idle: Mutex<Vec<DB::Connection>>,
    /// One per connection that may be open at once.
    slots: Semaphore,
    max: u32,
    open: AtomicU32,
    options: Options<DB>,
    acquire_timeout: Duration,
}

impl<DB: Database> ReadConnections<DB> {
    pub fn new(max: u32, options: Options<DB>, acquire_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(max as usize),
            max,
            open: AtomicU32::new(0),
            options,
            acquire_timeout,
        }
    }

    /// An idle connection, or a new one if none is idle. Waits at most the acquire timeout for a
    /// free slot, then fails as the pool would (`PoolTimedOut`, a 503).
    pub async fn get(&self) -> sqlx::Result<ReadConnection<'_, DB>> {
        let slot = match self.slots.try_acquire() {
            Ok(slot) => slot,
            Err(_) => tokio::time::timeout(self.acquire_timeout, self.slots.acquire())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
                .map_err(|_| sqlx::Error::PoolClosed)?,
        };
        let idle = self.idle_list().pop();
        let connection = match idle {
            Some(connection) => connection,
            None => {
                let connecting = self.options.connect();
                let connection = tokio::time::timeout(self.acquire_timeout, connecting)
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??;
                self.open.fetch_add(1, Ordering::Relaxed);
                connection
            }
        };
        Ok(ReadConnection { connection: Some(connection), set: self, keep: false, _slot: slot })
    }

    /// Closes the idle connections: after one turned out dead, they are all likely to be.
    pub fn forget_idle(&self) {
        let forgotten = std::mem::take(&mut *self.idle_list());
        self.open.fetch_sub(u32::try_from(forgotten.len()).unwrap_or(0), Ordering::Relaxed);
    }

    /// Closes the idle connections gracefully and refuses new reads.
    pub async fn close(&self) {
        self.slots.close();
        let idle = std::mem::take(&mut *self.idle_list());
        for connection in idle {
            let _ = connection.close().await;
        }
    }

    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn idle(&self) -> u32 {
        u32::try_from(self.idle_list().len()).unwrap_or(u32::MAX)
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// The idle list, held for a moment and never across an await; a panic elsewhere while it was
    /// held left nothing half-done in it, so a poisoned lock is taken as it is.
    fn idle_list(&self) -> MutexGuard<'_, Vec<DB::Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection checked out for one read. It goes back idle only if the read succeeded
/// ([`keep`](Self::keep)); after a failure, or a read cancelled half way, it is closed.
pub(super) struct ReadConnection<'a, DB: Database> {
    connection: Option<DB::Connection>,
    set: &'a ReadConnections<DB>,
    keep: bool,
    _slot: SemaphorePermit<'a>,
}

impl<DB: Database> ReadConnection<'_, DB> {
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl<DB: Database> Deref for ReadConnection<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        self.connection.as_ref().expect("present until dropped")
    }
}

impl<DB: Database> DerefMut for ReadConnection<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.connection.as_mut().expect("present until dropped")
    }
}

impl<DB: Database> Drop for ReadConnection<'_, DB> {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else { return };
        if self.keep {
            self.set.idle_list().push(connection);
        } else {
            self.set.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
