//! Jobs a server runs on a timer beside the requests (the upload sweeper, the SLA evaluator).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `job` every `every` (the first at once; a late run delays the next rather than bunching
/// them) until `shutdown`; a run under way finishes first.
pub fn every<F, Fut>(every: Duration, shutdown: CancellationToken, mut job: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            job().await;
        }
    })
}
