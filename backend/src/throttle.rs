//! Login throttling. Every attempt is counted before its password is checked (so a burst sent in
//! parallel is counted as it arrives, not after argon2 has answered it) and forgiven when it succeeds.
//! After a few free attempts each further one doubles the wait before the next, up to a cap; waits are
//! answered with 429 and `Retry-After`, never with a lockout. Counts leak away at a steady rate, so a
//! busy shared address (a campus NAT) is never held back by its users' occasional typos, while a
//! guesser gets only the leak rate. Three tables:
//!
//! - username and address together: one attacker guessing one account;
//! - address alone, with more free attempts (a campus NAT shares one): one attacker spraying accounts;
//! - username alone, with a short cap: many addresses guessing one account. It does not hold back an
//!   address the user has recently signed in from, so an attacker cannot keep the user out.
//!
//! Addresses are grouped as an attacker gets them: IPv4 per address, IPv6 per /64.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Records idle this long are dropped first when a table is full.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// An address the user signed in from stays trusted for the username this long.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Entries kept at most per table; the stale ones go when full, then the oldest half.
const MAX_ENTRIES: usize = 100_000;

/// How one table counts.
#[derive(Clone, Copy)]
struct Policy {
    /// Attempts allowed before any wait.
    free: u32,
    /// Longest wait.
    cap: Duration,
    /// One counted attempt leaks away per this much time.
    leak: Duration,
}

#[derive(Clone, Copy)]
struct Record {
    attempts: u32,
    /// When the count last leaked (or started).
    leaked_at: Instant,
    /// The last attempt, for dropping idle records.
    last: Instant,
    blocked_until: Instant,
}

impl Record {
    fn leak(&mut self, every: Duration, now: Instant) {
        let leaked = (now.duration_since(self.leaked_at).as_nanos() / every.as_nanos().max(1)) as u32;
        if leaked > 0 {
            self.attempts = self.attempts.saturating_sub(leaked);
            self.leaked_at = if self.attempts == 0 { now } else { self.leaked_at + every * leaked };
        }
    }
}

struct Table<K> {
    policy: Policy,
    records: HashMap<K, Record>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(policy: Policy) -> Self {
        Self { policy, records: HashMap::new() }
    }

    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let r = self.records.get(key)?;
        (r.blocked_until > now).then(|| r.blocked_until - now)
    }

    fn count(&mut self, key: &K, now: Instant) {
        make_room(&mut self.records, now, |r| r.last, FORGET_AFTER);
        let r = self.records.entry(key.clone()).or_insert(Record {
            attempts: 0,
            leaked_at: now,
            last: now,
            blocked_until: now,
        });
        r.leak(self.policy.leak, now);
        r.attempts += 1;
        r.last = now;
        if r.attempts > self.policy.free {
            let exponent = (r.attempts - self.policy.free - 1).min(16);
            r.blocked_until = now + Duration::from_secs(1u64 << exponent).min(self.policy.cap);
        }
    }

    /// Takes back one counted attempt, and any wait it caused.
    fn forgive(&mut self, key: &K, now: Instant) {
        if let Some(r) = self.records.get_mut(key) {
            r.attempts = r.attempts.saturating_sub(1);
            if r.attempts <= self.policy.free {
                r.blocked_until = now;
            }
        }
    }
}

/// Keeps a map under [`MAX_ENTRIES`]: drops entries idle for `stale`, then the older half.
fn make_room<K: Hash + Eq, V>(map: &mut HashMap<K, V>, now: Instant, last: impl Fn(&V) -> Instant, stale: Duration) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    map.retain(|_, v| now.duration_since(last(v)) < stale);
    if map.len() >= MAX_ENTRIES / 2 {
        let mut ages: Vec<Instant> = map.values().map(&last).collect();
        let (_, median, _) = ages.select_nth_unstable(map.len() / 2);
        let median = *median;
        map.retain(|_, v| last(v) > median);
    }
}

/// The part of an address one attacker controls: IPv4 addresses one by one, IPv6 by /64.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
        v4 => v4,
    }
}

/// Who an attempt tries to be: a user at the login API, or a client authenticating with its secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A normalised username (empty for any name no account can have).
    User(String),
    /// A client id.
    Client(String),
}

struct Tables {
    pairs: Table<(Subject, IpAddr)>,
    addresses: Table<IpAddr>,
    users: Table<Subject>,
    /// (subject, address) → last successful sign-in from there.
    known: HashMap<(Subject, IpAddr), Instant>,
}

/// Counts sign-in attempts by username and client address, and says how long the next must wait.
pub struct LoginThrottle {
    tables: Mutex<Tables>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(Duration::from_secs(15 * 60), Duration::from_secs(60))
    }
}

impl LoginThrottle {
    /// `cap` bounds the wait of an address (alone or with a username); `user_cap` the wait that a
    /// username alone imposes on unfamiliar addresses (short: anyone can cause it).
    pub fn new(cap: Duration, user_cap: Duration) -> Self {
        Self {
            tables: Mutex::new(Tables {
                pairs: Table::new(Policy { free: 3, cap, leak: Duration::from_secs(300) }),
                addresses: Table::new(Policy { free: 20, cap, leak: Duration::from_secs(15) }),
                users: Table::new(Policy { free: 10, cap: user_cap, leak: Duration::from_secs(60) }),
                known: HashMap::new(),
            }),
        }
    }

    /// Counts an attempt to sign in as `subject` from `address`, or says how long it must wait first.
    /// A counted attempt stays counted unless [`LoginThrottle::succeeded`] forgives it.
    pub fn attempt(&self, subject: &Subject, address: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let address = address_key(address);
        let pair = (subject.clone(), address);
        let mut t = self.tables.lock().expect("not poisoned");
        let known = t.known.get(&pair).is_some_and(|at| now.duration_since(*at) < KNOWN_FOR);
        let user_wait = if known { None } else { t.users.wait(&pair.0, now) };
        let wait = [t.pairs.wait(&pair, now), t.addresses.wait(&address, now), user_wait].into_iter().flatten().max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        t.pairs.count(&pair, now);
        t.addresses.count(&address, now);
        t.users.count(&pair.0, now);
        Ok(())
    }

    /// A counted attempt succeeded: the username's failures are cleared, the address's attempt is
    /// taken back, and the address becomes one the user is known to sign in from.
    pub fn succeeded(&self, subject: &Subject, address: IpAddr) {
        let now = Instant::now();
        let address = address_key(address);
        let pair = (subject.clone(), address);
        let mut t = self.tables.lock().expect("not poisoned");
        t.pairs.records.remove(&pair);
        t.users.records.remove(subject);
        t.addresses.forgive(&address, now);
        make_room(&mut t.known, now, |at| *at, KNOWN_FOR);
        t.known.insert(pair, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn user(name: &str) -> Subject {
        Subject::User(name.to_owned())
    }

    fn fail(t: &LoginThrottle, name: &str, address: &str, times: u32) {
        for i in 0..times {
            assert!(t.attempt(&user(name), ip(address)).is_ok(), "attempt {i} of {times} for {name} from {address}");
        }
    }

    #[test]
    fn one_address_guessing_one_user_backs_off_exponentially_up_to_the_cap() {
        let t = LoginThrottle::new(Duration::from_secs(8), Duration::from_secs(4));
        fail(&t, "u", "192.0.2.1", 4);
        let first = t.attempt(&user("u"), ip("192.0.2.1")).unwrap_err();
        assert!(first <= Duration::from_secs(1) && first > Duration::from_millis(900), "{first:?}");
        assert!(t.attempt(&user("other"), ip("192.0.2.2")).is_ok(), "others are unaffected");
        assert!(t.attempt(&Subject::Client("u".into()), ip("192.0.2.3")).is_ok(), "a client is not a user");
    }

    #[test]
    fn a_parallel_burst_is_counted_before_any_password_is_checked() {
        // Nothing has been answered yet, so nothing has failed; the fifth attempt still waits.
        let t = LoginThrottle::default();
        fail(&t, "u", "192.0.2.1", 4);
        assert!(t.attempt(&user("u"), ip("192.0.2.1")).is_err());
    }

    #[test]
    fn success_forgives_so_a_shared_address_is_not_held_back_by_its_users_signing_in() {
        let t = LoginThrottle::default();
        for n in 0..100 {
            let name = format!("student{n}");
            assert!(t.attempt(&Subject::User(name.clone()), ip("198.51.100.7")).is_ok(), "sign-in {n}");
            t.succeeded(&Subject::User(name.clone()), ip("198.51.100.7"));
        }
    }

    #[test]
    fn spraying_many_users_from_one_address_is_held_back() {
        let t = LoginThrottle::default();
        for n in 0..21 {
            assert!(t.attempt(&user(&format!("user{n}")), ip("203.0.113.9")).is_ok(), "attempt {n}");
        }
        assert!(t.attempt(&user("user99"), ip("203.0.113.9")).is_err());
    }

    #[test]
    fn many_addresses_guessing_one_user_do_not_lock_the_user_out_where_they_signed_in_before() {
        let t = LoginThrottle::default();
        t.attempt(&user("ada"), ip("192.0.2.10")).unwrap();
        t.succeeded(&user("ada"), ip("192.0.2.10"));
        for n in 0..11 {
            t.attempt(&user("ada"), ip(&format!("203.0.113.{n}"))).unwrap();
        }
        assert!(t.attempt(&user("ada"), ip("203.0.113.200")).is_err(), "unfamiliar addresses wait");
        assert!(t.attempt(&user("ada"), ip("192.0.2.10")).is_ok(), "the user's own address does not");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = LoginThrottle::default();
        fail(&t, "u", "2001:db8:1:2::1", 2);
        fail(&t, "u", "2001:db8:1:2::ffff", 2);
        assert!(t.attempt(&user("u"), ip("2001:db8:1:2:abcd::9")).is_err(), "one /64 is one attacker");
        assert!(t.attempt(&user("u"), ip("2001:db8:1:3::1")).is_ok());
        fail(&t, "v", "::ffff:192.0.2.50", 2);
        fail(&t, "v", "192.0.2.50", 2);
        assert!(t.attempt(&user("v"), ip("192.0.2.50")).is_err());
    }

    #[test]
    fn counts_leak_away_so_occasional_typos_never_add_up() {
        let mut table = Table::new(Policy { free: 2, cap: Duration::from_secs(60), leak: Duration::from_secs(10) });
        let start = Instant::now();
        // One attempt every 10 s, for ever: each leaks away before the next.
        for n in 0..100u32 {
            let now = start + Duration::from_secs(10 * u64::from(n));
            assert_eq!(table.wait(&"k", now), None, "attempt {n}");
            table.count(&"k", now);
        }
        // Three at once are one too many; 10 s later one has leaked and the next goes through.
        let now = start + Duration::from_secs(2000);
        for _ in 0..3 {
            table.count(&"k", now);
        }
        assert!(table.wait(&"k", now).is_some());
        table.records.get_mut(&"k").unwrap().blocked_until = now; // the wait itself has passed
        table.count(&"k", now + Duration::from_secs(21));
        assert_eq!(table.records[&"k"].attempts, 2, "three, two leaked, one added");
    }
}
