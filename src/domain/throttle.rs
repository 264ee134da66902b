//! Login throttling: how many failed logins each key may have before it is locked, and for how
//! long. The counters live in the database, so every replica sees the same ones.
//!
//! Three keys count each attempt. The account-and-address pair is locked soonest and longest:
//! that stops one source guessing one password. The account alone is locked later and only
//! briefly, so a guesser spread over many addresses is slowed while the real user, who logs in
//! from an address with no failures, waits at most [`ACCOUNT`]'s `max_lock`. The address alone
//! catches one source spraying many accounts.
//!
//! Locks are also a weapon: a few addresses could keep a known account locked for everyone by one
//! guess each time the account's lock expires. So an account-and-address pair that has logged in
//! successfully within [`KNOWN_SOURCE_LIFETIME`] is a known source, judged by its own counter only
//! (the rules with `counts_known_sources`): the real user, from where they usually log in, is not
//! locked out by guesses made elsewhere. From a new address they still wait out the account's lock.

use chrono::{DateTime, TimeDelta, Utc};

/// Failures older than this are forgotten.
pub const WINDOW: TimeDelta = TimeDelta::minutes(15);

/// How long a successful login keeps its account-and-address pair a known source.
pub const KNOWN_SOURCE_LIFETIME: TimeDelta = TimeDelta::days(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    pub name: &'static str,
    /// Attempts admitted before the first lock.
    pub threshold: u32,
    /// The first lock; each further failure doubles it, up to `max_lock`.
    pub first_lock: TimeDelta,
    pub max_lock: TimeDelta,
    /// What a successful login does to this key's counter.
    pub on_success: OnSuccess,
    /// Whether it also counts attempts from a known source (see the module's notes).
    pub counts_known_sources: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSuccess {
    /// The counter is cleared: the person knows the password.
    Forget,
    /// Only this attempt is taken back: one account's success says nothing about the others
    /// tried from the same address.
    TakeBack,
}

pub const ACCOUNT_FROM_ADDRESS: ThrottleRule = ThrottleRule {
    name: "account+address",
    threshold: 5,
    first_lock: TimeDelta::seconds(1),
    max_lock: TimeDelta::minutes(15),
    on_success: OnSuccess::Forget,
    counts_known_sources: true,
};

pub const ACCOUNT: ThrottleRule = ThrottleRule {
    name: "account",
    threshold: 20,
    first_lock: TimeDelta::seconds(1),
    max_lock: TimeDelta::seconds(30),
    on_success: OnSuccess::Forget,
    counts_known_sources: false,
};

pub const ADDRESS: ThrottleRule = ThrottleRule {
    name: "address",
    threshold: 50,
    first_lock: TimeDelta::seconds(1),
    max_lock: TimeDelta::minutes(15),
    on_success: OnSuccess::TakeBack,
    counts_known_sources: false,
};

/// A key's counter as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// Attempts not yet known to have succeeded, within [`WINDOW`].
    pub failures: u32,
    pub last_attempt: DateTime<Utc>,
    pub locked_until: Option<DateTime<Utc>>,
}

/// An attempt refused because a key it counts against is locked: it may come back in
/// `retry_after` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    pub retry_after: u64,
}

/// One login attempt's throttled key: which rule, and the key's stored name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleKey {
    pub rule: ThrottleRule,
    pub key: String,
}

/// The keys a login attempt counts against, in the order they are locked in the database (the
/// same order for every attempt, so two transactions never wait on each other in a cycle).
/// Stored as hashes: the table holds no usernames or addresses.
pub fn keys_for(username: &str, address: &str) -> Vec<ThrottleKey> {
    // Usernames are matched regardless of case, so `Alice` and `ALICE` are one account here too.
    let username = username.to_ascii_lowercase();
    let (username, address) = (username.as_bytes(), address.as_bytes());
    vec![key(ACCOUNT_FROM_ADDRESS, &[username, address]), key(ACCOUNT, &[username]), key(ADDRESS, &[address])]
}

/// The key a sign-up counts against: the address's, shared with logins, so that sign-ups (whose
/// answers tell whether a name is taken) confirm names no faster than failed logins could.
pub fn sign_up_keys(address: &str) -> Vec<ThrottleKey> {
    vec![key(ADDRESS, &[address.as_bytes()])]
}

fn key(rule: ThrottleRule, parts: &[&[u8]]) -> ThrottleKey {
    // 128 bits of the hash are plenty to tell keys apart.
    ThrottleKey { rule, key: format!("{}:{}", rule.name, &super::sha256_hex(parts)[..32]) }
}

/// The key naming an attempt's account-and-address pair, under which a successful login is
/// remembered as a known source; none for attempts that name no account.
pub fn source_key(keys: &[ThrottleKey]) -> Option<&str> {
    keys.iter().find(|key| key.rule == ACCOUNT_FROM_ADDRESS).map(|key| key.key.as_str())
}

/// The keys an attempt is counted against: all of them, or, from a known source, only those that
/// count known sources.
pub fn counted(keys: &[ThrottleKey], known_source: bool) -> impl Iterator<Item = &ThrottleKey> {
    keys.iter().filter(move |key| !known_source || key.rule.counts_known_sources)
}

impl ThrottleRule {
    /// Counts one more attempt against `counter`, or refuses it until the time returned while the
    /// key is locked (a refused attempt is not counted: it did not try a password).
    pub fn admit(&self, counter: Option<Counter>, now: DateTime<Utc>) -> Result<Counter, DateTime<Utc>> {
        let counter = counter.filter(|c| now - c.last_attempt < WINDOW);
        if let Some(until) = counter.and_then(|c| c.locked_until).filter(|until| *until > now) {
            return Err(until);
        }
        let failures = counter.map_or(0, |c| c.failures).saturating_add(1);
        let locked_until = (failures >= self.threshold).then(|| now + self.lock_after(failures));
        Ok(Counter { failures, last_attempt: now, locked_until })
    }

    fn lock_after(&self, failures: u32) -> TimeDelta {
        let doublings = (failures - self.threshold).min(20);
        (self.first_lock * (1 << doublings)).min(self.max_lock)
    }
}

/// Whole seconds until `until`, rounded up, at least 1: the `Retry-After` of a refused attempt.
pub fn seconds_until(until: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let millis = u64::try_from((until - now).num_milliseconds()).unwrap_or(0);
    millis.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn attempts_up_to_the_threshold_are_admitted_then_locks_double_up_to_the_cap() {
        let mut counter = None;
        for attempt in 1..ACCOUNT_FROM_ADDRESS.threshold {
            let next = ACCOUNT_FROM_ADDRESS.admit(counter, at(0)).unwrap();
            assert_eq!((next.failures, next.locked_until), (attempt, None));
            counter = Some(next);
        }
        // The fifth is admitted and locks the key for a second; during it, nothing is admitted.
        let fifth = ACCOUNT_FROM_ADDRESS.admit(counter, at(0)).unwrap();
        assert_eq!(fifth.locked_until, Some(at(1)));
        assert_eq!(ACCOUNT_FROM_ADDRESS.admit(Some(fifth), at(0)), Err(at(1)));
        let sixth = ACCOUNT_FROM_ADDRESS.admit(Some(fifth), at(1)).unwrap();
        assert_eq!(sixth.locked_until, Some(at(3)), "two seconds");
        let seventh = ACCOUNT_FROM_ADDRESS.admit(Some(sixth), at(3)).unwrap();
        assert_eq!(seventh.locked_until, Some(at(7)), "four seconds");
        let much_later = Counter { failures: 40, ..seventh };
        let capped = ACCOUNT_FROM_ADDRESS.admit(Some(much_later), at(8)).unwrap();
        assert_eq!(capped.locked_until, Some(at(8) + ACCOUNT_FROM_ADDRESS.max_lock));
    }

    #[test]
    fn an_account_is_never_locked_for_longer_than_its_cap_whatever_the_failures() {
        let counter = Counter { failures: u32::MAX - 1, last_attempt: at(0), locked_until: None };
        let next = ACCOUNT.admit(Some(counter), at(1)).unwrap();
        assert_eq!(next.locked_until, Some(at(1) + TimeDelta::seconds(30)));
        assert_eq!(next.failures, u32::MAX, "saturates instead of overflowing");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(seconds_until(at(0) + TimeDelta::milliseconds(1200), at(0)), 2);
        assert_eq!(seconds_until(at(5), at(0)), 5);
        assert_eq!(seconds_until(at(0), at(0)), 1, "never 0: the client must wait a moment");
    }

    #[test]
    fn old_failures_are_forgotten_after_the_window() {
        let counter = Counter { failures: 30, last_attempt: at(0), locked_until: Some(at(900)) };
        let later = at(0) + WINDOW;
        assert_eq!(ACCOUNT_FROM_ADDRESS.admit(Some(counter), later).unwrap().failures, 1);
    }

    #[test]
    fn a_known_source_is_judged_by_its_own_counter_only() {
        let keys = keys_for("alice", "203.0.113.9");
        assert_eq!(counted(&keys, false).count(), 3);
        let known: Vec<_> = counted(&keys, true).map(|key| key.rule).collect();
        assert_eq!(known, [ACCOUNT_FROM_ADDRESS]);
        assert_eq!(source_key(&keys), Some(keys[0].key.as_str()));
    }

    #[test]
    fn keys_name_their_rule_and_hide_the_username_and_address() {
        let keys = keys_for("alice", "203.0.113.9");
        let names: Vec<&str> = keys.iter().map(|k| k.rule.name).collect();
        assert_eq!(names, ["account+address", "account", "address"]);
        assert!(keys.iter().all(|k| !k.key.contains("alice") && !k.key.contains("203.0")));
        assert_eq!(keys[1], keys_for("alice", "198.51.100.1")[1], "the account key ignores the address");
        assert_ne!(keys[0], keys_for("alice", "198.51.100.1")[0]);
        assert_eq!(keys, keys_for("ALIce", "203.0.113.9"), "one account whatever the case");
        assert_eq!(sign_up_keys("203.0.113.9"), [keys[2].clone()], "sign-ups share the address's budget");
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(keys_for("ab", "c")[0], keys_for("a", "bc")[0]);
    }
}
