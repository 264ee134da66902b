//! The SLA evaluator: every second, each server records the warnings and breaches that have come
//! due (`Store::check_clocks` reads only the clocks due, and each once across servers), so news
//! goes out within about a second of its time, and after a restart at the first tick.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::SlaBreaches;
use crate::store::Store;

/// How often the evaluator looks; the bound is 5 s from the due time.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Clocks one transaction takes on; more due are taken by the next round at once.
const BATCH: u32 = 200;

/// Checks until nothing more is due now; returns how many events were recorded.
pub async fn check_due(
    store: &dyn Store,
    breaches: &SlaBreaches,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::store::Result<usize> {
    let mut total = 0;
    loop {
        let recorded = store.check_clocks(now, BATCH).await?;
        for news in &recorded {
            breaches.count(news);
        }
        total += recorded.len();
        if recorded.len() < BATCH as usize {
            return Ok(total);
        }
    }
}

/// Runs the evaluator every `every` until `shutdown`.
pub fn start(
    store: Arc<dyn Store>,
    breaches: SlaBreaches,
    every: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    crate::background::every(every, shutdown, move || {
        let (store, breaches) = (store.clone(), breaches.clone());
        async move {
            match check_due(store.as_ref(), &breaches, chrono::Utc::now()).await {
                Ok(0) => {}
                Ok(recorded) => tracing::debug!(recorded, "recorded service target news"),
                Err(error) => tracing::warn!(%error, "checking service clocks failed; the next tick retries"),
            }
        }
    })
}
