use std::sync::{Arc, Mutex, PoisonError, mpsc};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Verified instead of a real hash when the username is unknown, so that "no such user" costs the
/// same argon2 work as "wrong password" and timing does not reveal which usernames exist.
/// Its parameters must equal `Argon2::default()`'s (a unit test checks); its password is random.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$YPbG8l/iCo3kcVj/w+0aeg$2pIUOxBhNAMvf0es0NUvqvFAw3L3JZFA8tRyK0LSyrA";

/// Argon2id with OWASP's parameters (m=19 MiB, t=2, p=1), run on threads of its own, as many as
/// one fewer than the cores (at least one), so a login flood leaves a core to every other request;
/// and at a lower scheduling priority than the threads serving requests, so on a busy machine it
/// also takes only the CPU they leave (requests beside a flood keep their latency). Beyond those,
/// at most `max_queued` hashes wait their turn; any more are refused at once with
/// [`Error::Overloaded`] (503, `Retry-After`): a flood cannot build a queue so long that real
/// logins time out behind it.
#[derive(Clone)]
pub struct Passwords {
    /// One per hash allowed to run now.
    running: Arc<Semaphore>,
    /// One per hash running or waiting to.
    admitted: Arc<Semaphore>,
    metrics: HashingMetrics,
    /// The hashing threads' work; they end when the last clone of this is dropped.
    hashers: mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

/// How much lower than the request threads' the hashing threads' priority is (`nice` 10: about a
/// tenth of the CPU a default thread gets when both want it). Measured beside a saturating read
/// load (bench/README.md): 10 kept the reads' p99 at 1.2-1.3x, 5 at 1.5-1.9x for few more logins.
const HASHING_NICENESS: i32 = 10;

/// Starts `count` threads running the jobs sent to the returned sender, at [`HASHING_NICENESS`].
fn start_hashers(count: usize) -> mpsc::Sender<Job> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    for n in 0..count {
        let queue = queue.clone();
        let spawned = std::thread::Builder::new().name(format!("argon2-{n}")).spawn(move || {
            lower_this_threads_priority();
            loop {
                let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                match job {
                    // A panicking job drops its answer (the caller gets an error), not the thread.
                    Ok(job) => drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))),
                    Err(_) => return, // every sender is gone
                }
            }
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "could not start a password hashing thread");
        }
    }
    jobs
}

#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    const PRIO_PROCESS: std::ffi::c_int = 0;
    unsafe extern "C" {
        fn setpriority(
            which: std::ffi::c_int,
            who: std::ffi::c_uint,
            prio: std::ffi::c_int,
        ) -> std::ffi::c_int;
    }
    // SAFETY: setpriority only reads its arguments; on Linux `who = 0` is the calling thread.
    if unsafe { setpriority(PRIO_PROCESS, 0, HASHING_NICENESS) } != 0 {
        tracing::warn!("could not lower the password hashing thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}

/// Live figures of the hashing queue, registered in `/metrics`.
#[derive(Clone, Default)]
pub struct HashingMetrics {
    pub running: Gauge,
    pub queued: Gauge,
    pub max_running: Gauge,
    pub max_queued: Gauge,
    /// Hashes refused because the queue was full.
    pub shed: Counter,
    /// Hashes computed (verifications included).
    pub computed: Counter,
}

/// Keeps a gauge raised while it lives, however the work it counts ends (finished, failed, or the
/// request dropped while waiting).
struct Raised(Gauge);

impl Raised {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Passwords {
    pub fn new(max_running: usize, max_queued: usize) -> Self {
        let max_running = max_running.max(1);
        let metrics = HashingMetrics::default();
        metrics.max_running.set(i64::try_from(max_running).unwrap_or(i64::MAX));
        metrics.max_queued.set(i64::try_from(max_queued).unwrap_or(i64::MAX));
        Self {
            running: Arc::new(Semaphore::new(max_running)),
            admitted: Arc::new(Semaphore::new(max_running + max_queued)),
            metrics,
            hashers: start_hashers(max_running),
        }
    }

    pub fn for_this_machine(max_queued: usize) -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |cores| usize::from(cores) - 1), max_queued)
    }

    pub fn metrics(&self) -> &HashingMetrics {
        &self.metrics
    }

    /// A PHC string (`$argon2id$v=19$...`) with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| Error::Internal(format!("hashing a password failed: {e}")))
        })
        .await
    }

    /// Whether `password` matches `stored`; with no stored hash, does the same work and says no.
    pub async fn verify(&self, password: &str, stored: Option<String>) -> Result<bool> {
        let password = password.to_owned();
        let is_known = stored.is_some();
        self.run(move || {
            let phc = stored.as_deref().unwrap_or(DUMMY_HASH);
            let hash = PasswordHash::new(phc)
                .map_err(|e| Error::Internal(format!("stored password hash is malformed: {e}")))?;
            let matches = Argon2::default().verify_password(password.as_bytes(), &hash).is_ok();
            Ok(is_known && matches)
        })
        .await
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let Ok(admitted) = self.admitted.clone().try_acquire_owned() else {
            self.metrics.shed.inc();
            return Err(Error::Overloaded { retry_after: 1 });
        };
        let queued = Raised::new(&self.metrics.queued);
        let shut = |_| Error::Internal("password hashing is shut down".into());
        let permit = self.running.clone().acquire_owned().await.map_err(shut)?;
        drop(queued);
        let running = Raised::new(&self.metrics.running);
        // The permits go with the work: if the request is dropped meanwhile, the hash still
        // counts against the limits until it really ends.
        let computed = self.metrics.computed.clone();
        let (done, outcome) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            let held = (admitted, permit, running);
            computed.inc();
            let outcome = work();
            // Given back before the answer, so whoever reads it finds them free.
            drop(held);
            let _ = done.send(outcome);
        });
        let stopped = || Error::Internal("password hashing has stopped".into());
        self.hashers.send(job).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_costs_the_same_as_a_real_one() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let real_hash = Argon2::default().hash_password(b"whatever").unwrap().to_string();
        let real = PasswordHash::new(&real_hash).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.params, real.params);
        assert_eq!(real.algorithm.as_str(), "argon2id");
    }

    #[tokio::test]
    async fn hashes_are_salted_argon2id_and_verify() {
        let passwords = Passwords::new(2, 0);
        let first = passwords.hash("correct horse").await.unwrap();
        let second = passwords.hash("correct horse").await.unwrap();
        assert!(first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{first}");
        assert_ne!(first, second, "each hash has its own salt");
        assert!(passwords.verify("correct horse", Some(first.clone())).await.unwrap());
        assert!(!passwords.verify("wrong horse", Some(first)).await.unwrap());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_below_the_request_threads_priority() {
        // Field 19 of /proc/thread-self/stat is the thread's nice value.
        let nice = || {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
            Ok(fields[16].parse::<i32>().unwrap())
        };
        let passwords = Passwords::new(1, 0);
        let request_thread = nice().unwrap();
        let hashing_thread = passwords.run(nice).await.unwrap();
        assert_eq!(hashing_thread, (request_thread + HASHING_NICENESS).min(19));
        let panicked = passwords.run(|| -> Result<()> { panic!("a broken hash") }).await;
        assert!(panicked.is_err());
        let after = passwords.verify("still hashing", None).await;
        assert!(after.is_ok(), "the thread lives on: {after:?}");
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        assert!(!Passwords::new(1, 0).verify("anything", None).await.unwrap());
    }

    #[tokio::test]
    async fn beyond_the_queue_hashing_is_refused_at_once() {
        let passwords = Passwords::new(1, 1);
        let attempts: Vec<_> = (0..6)
            .map(|_| {
                let passwords = passwords.clone();
                tokio::spawn(async move { passwords.verify("guess", None).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for attempt in attempts {
            outcomes.push(attempt.await.unwrap());
        }
        let refused =
            outcomes.iter().filter(|o| matches!(o, Err(Error::Overloaded { retry_after: 1 }))).count();
        let checked = outcomes.iter().filter(|o| matches!(o, Ok(false))).count();
        // One runs, one waits; the other four are refused without waiting.
        assert_eq!((checked, refused), (2, 4), "{outcomes:?}");
        assert_eq!(passwords.metrics().shed.get(), 4);
        assert_eq!((passwords.metrics().queued.get(), passwords.metrics().running.get()), (0, 0));
        // Once the queue drains, hashing is admitted again.
        assert!(passwords.verify("guess", None).await.is_ok());
    }
}
