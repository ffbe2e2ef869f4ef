//! Login throttling: after a few free failures, each further failure for the same username or from
//! the same client address doubles the wait before the next attempt, up to a cap. Waits are
//! answered with 429 and `Retry-After`, never with a lockout: the cap bounds how long an attacker
//! who keeps failing on purpose can hold a user back, and a quiet spell forgets the failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before any wait.
const FREE_FAILURES: u32 = 3;
/// Failures are forgotten after this long without one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Entries kept at most per table; the oldest half goes when full.
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

struct Table {
    cap: Duration,
    records: HashMap<String, Record>,
}

impl Table {
    fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let r = self.records.get(key)?;
        (r.blocked_until > now).then(|| r.blocked_until - now)
    }

    fn fail(&mut self, key: &str, now: Instant) {
        if self.records.len() >= MAX_ENTRIES {
            self.records.retain(|_, r| now.duration_since(r.last_failure) < FORGET_AFTER / 2);
        }
        let r =
            self.records.entry(key.to_owned()).or_insert(Record { failures: 0, last_failure: now, blocked_until: now });
        if now.duration_since(r.last_failure) > FORGET_AFTER {
            r.failures = 0;
        }
        r.failures += 1;
        r.last_failure = now;
        if r.failures > FREE_FAILURES {
            let exponent = (r.failures - FREE_FAILURES - 1).min(16);
            r.blocked_until = now + Duration::from_secs(1u64 << exponent).min(self.cap);
        }
    }
}

/// Per-username and per-address failure tables.
pub struct LoginThrottle {
    users: Mutex<Table>,
    addresses: Mutex<Table>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(Duration::from_secs(60), Duration::from_secs(15 * 60))
    }
}

impl LoginThrottle {
    /// `user_cap` bounds a username's wait (short: others can cause it); `address_cap` an address's.
    pub fn new(user_cap: Duration, address_cap: Duration) -> Self {
        Self {
            users: Mutex::new(Table { cap: user_cap, records: HashMap::new() }),
            addresses: Mutex::new(Table { cap: address_cap, records: HashMap::new() }),
        }
    }

    /// How long this attempt must wait, if at all.
    pub fn wait(&self, username: &str, address: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let user = self.users.lock().expect("not poisoned").wait(username, now);
        let address = self.addresses.lock().expect("not poisoned").wait(&address.to_string(), now);
        user.max(address)
    }

    /// Records a failed attempt.
    pub fn failed(&self, username: &str, address: IpAddr) {
        let now = Instant::now();
        self.users.lock().expect("not poisoned").fail(username, now);
        self.addresses.lock().expect("not poisoned").fail(&address.to_string(), now);
    }

    /// A successful login clears the username's failures (the address keeps its record).
    pub fn succeeded(&self, username: &str) {
        self.users.lock().expect("not poisoned").records.remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_after_free_failures_and_is_capped() {
        let t = LoginThrottle::new(Duration::from_secs(4), Duration::from_secs(8));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            t.failed("u", ip);
            assert_eq!(t.wait("u", ip), None);
        }
        t.failed("u", ip);
        let first = t.wait("u", ip).unwrap();
        assert!(first <= Duration::from_secs(1) && first > Duration::from_millis(900));
        for _ in 0..10 {
            t.failed("u", ip);
        }
        assert!(t.wait("u", ip).unwrap() <= Duration::from_secs(8), "capped");
        assert!(t.wait("other", "192.0.2.2".parse().unwrap()).is_none(), "others unaffected");
        t.succeeded("u");
        assert!(t.wait("u", "192.0.2.3".parse().unwrap()).is_none(), "success clears the username");
    }
}
