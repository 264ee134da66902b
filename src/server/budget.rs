//! A budget of things clients hold open (connections, live streams): so many in all, and so many
//! per client, so that one client cannot take what the others need.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::ClientKey;

/// How many may be open in all and per client; [`Budget::take`] hands out shares.
pub struct Budget {
    total: usize,
    per_client: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<ClientKey, usize>,
}

/// Why a share was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// As many as `total` are open.
    Full,
    /// This client holds as many as `per_client`.
    ClientFull,
}

impl Budget {
    pub fn new(total: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self { total, per_client, open: Mutex::default() })
    }

    /// A share for `client`, held until dropped; `None` for a client not capped on its own (a
    /// trusted proxy speaks for many).
    pub fn take(self: &Arc<Self>, client: Option<ClientKey>) -> Result<Share, Refusal> {
        let mut open = self.lock();
        if open.total >= self.total {
            return Err(Refusal::Full);
        }
        if let Some(client) = client {
            let held = open.by_client.entry(client).or_default();
            if *held >= self.per_client {
                return Err(Refusal::ClientFull);
            }
            *held += 1;
        }
        open.total += 1;
        Ok(Share { budget: self.clone(), client })
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // The counts stay consistent whatever panicked while holding the lock.
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One open connection or stream, counted until dropped.
pub struct Share {
    budget: Arc<Budget>,
    client: Option<ClientKey>,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut open = self.budget.lock();
        open.total -= 1;
        if let Some(client) = self.client
            && let Some(held) = open.by_client.get_mut(&client)
        {
            *held -= 1;
            if *held == 0 {
                open.by_client.remove(&client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_capped_in_all_and_per_client_and_come_back_when_dropped() {
        let budget = Budget::new(3, 2);
        let a = ClientKey::of("203.0.113.1".parse().unwrap());
        let b = ClientKey::of("203.0.113.2".parse().unwrap());
        let a1 = budget.take(Some(a)).unwrap();
        let _a2 = budget.take(Some(a)).unwrap();
        assert_eq!(budget.take(Some(a)).err(), Some(Refusal::ClientFull));
        let _b1 = budget.take(Some(b)).unwrap();
        assert_eq!(budget.take(Some(b)).err(), Some(Refusal::Full), "three are open in all");
        assert_eq!(budget.take(None).err(), Some(Refusal::Full));
        drop(a1);
        assert_eq!(budget.lock().total, 2);
        let _uncapped = budget.take(None).unwrap();
        assert_eq!(budget.take(Some(a)).err(), Some(Refusal::Full));
        assert!(budget.lock().by_client.values().all(|&held| held > 0), "no zero counts are kept");
    }
}
