//! Throttling of password and client-secret checks. Only failures count: an attempt is admitted while
//! the failures already counted plus the attempts still being checked stay within a key's free budget,
//! so a burst of wrong guesses sent in parallel gets no more checks than that budget, while a burst of
//! correct sign-ins (a class behind one campus NAT) waits its turn, in arrival order, instead of being
//! refused. Past the free budget each failure doubles the wait before the next attempt (1 s, 2 s, …, up
//! to a cap), answered with 429 and `Retry-After`, never with a lockout. Failures leak away at a steady
//! rate, so occasional typos never add up while a guesser gets only the leak rate.
//!
//! Sign-ins ([`Throttle::logins`]) are counted in three tables:
//! - username and address together: one attacker guessing one account;
//! - address alone, with more free attempts (a campus NAT shares one): one attacker spraying accounts;
//! - username alone, with a short cap: many addresses guessing one account. It does not hold back an
//!   address the user has signed in from in the last 30 days, so an attacker cannot keep them out.
//!
//! With a store ([`Throttle::shared`]) the counts and the known addresses live there: every process
//! sharing the store (replicas behind a load balancer) sees the same ones, and they survive restarts.
//! Each attempt reads its keys' counts when it arrives and again when its turn comes, and writes its
//! outcome back atomically before it is answered. Attempts in flight and the queue stay per process.
//!
//! Client secrets ([`Throttle::client_secrets`]) have their own throttle, counted per client and
//! address and per address, never per client alone: nobody can make the Hub's own `/token` calls wait by
//! sending wrong secrets for it from elsewhere, nor block the Hub's address through the login API.
//!
//! Addresses are grouped as an attacker gets them: IPv4 per address, IPv6 per /64.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::store::{Store, ThrottleCount};

/// An address the user signed in from stays trusted for the username this long.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// A sign-in from a known address is stored again only once it is this old: a daily user's address
/// stays known, and most sign-ins write nothing for it.
const RECORD_AGAIN_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Records kept at most per table; when full, the least-blocked go first.
const MAX_ENTRIES: usize = 100_000;
/// Longest an attempt waits for the attempts ahead of it before it is told to come back later.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(20);
/// Attempts waiting at most from one address, and in all.
const MAX_WAITING_PER_ADDRESS: usize = 512;
const MAX_WAITING: usize = 4096;
/// Waiters look again this often even when nothing ends (failures leak away with time).
const RECHECK: Duration = Duration::from_secs(1);

/// How one table counts.
#[derive(Clone, Copy, Debug)]
struct Policy {
    /// Failures allowed before any wait; also the most attempts checked at once.
    free: u32,
    /// Longest wait.
    cap: Duration,
    /// One counted failure leaks away per this much time.
    leak: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Record {
    failures: u32,
    /// Attempts admitted and not yet answered.
    in_flight: u32,
    /// When the count last leaked (or started).
    leaked_at: Instant,
    blocked_until: Instant,
}

impl Record {
    fn new(now: Instant) -> Self {
        Self { failures: 0, in_flight: 0, leaked_at: now, blocked_until: now }
    }

    fn leak(&mut self, every: Duration, now: Instant) {
        let leaked = (now.saturating_duration_since(self.leaked_at).as_nanos() / every.as_nanos().max(1)) as u32;
        if leaked > 0 {
            self.failures = self.failures.saturating_sub(leaked);
            self.leaked_at = if self.failures == 0 { now } else { self.leaked_at + every * leaked };
        }
    }

    /// Holds nothing worth keeping: the same as no record at all.
    fn is_idle(&self, now: Instant) -> bool {
        self.failures == 0 && self.in_flight == 0 && self.blocked_until <= now
    }

    /// Counts an attempt's outcome: a failure (with back-off past the free budget), a success that
    /// clears the count, or nothing.
    fn settle(&mut self, policy: Policy, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Failed => {
                self.leak(policy.leak, now);
                self.failures += 1;
                if self.failures >= policy.free {
                    let exponent = (self.failures - policy.free).min(16);
                    self.blocked_until = now + Duration::from_secs(1u64 << exponent).min(policy.cap);
                }
            }
            Outcome::Cleared => {
                self.failures = 0;
                self.blocked_until = now;
            }
            Outcome::Unjudged => {}
        }
    }

    /// Takes the stored count (the one every process sees) in place of this one's, keeping what is in
    /// flight here.
    fn absorb(&mut self, stored: Option<&ThrottleCount>, clock: &Clock) {
        let (failures, leaked_at, blocked_until) = match stored {
            Some(c) => (
                c.failures.clamp(0, u32::MAX as i64) as u32,
                clock.instant(c.leaked_at),
                clock.instant(c.blocked_until),
            ),
            None => (0, clock.now, clock.now),
        };
        self.failures = failures;
        self.leaked_at = leaked_at;
        self.blocked_until = blocked_until;
    }

    fn to_count(self, clock: &Clock) -> ThrottleCount {
        ThrottleCount {
            failures: self.failures.into(),
            leaked_at: clock.millis(self.leaked_at),
            blocked_until: clock.millis(self.blocked_until),
        }
    }
}

/// One moment seen on both clocks: the monotonic one the throttle counts with, and the wall clock
/// (Unix milliseconds) the store's counts are kept in.
struct Clock {
    now: Instant,
    now_ms: i64,
}

impl Clock {
    fn now() -> Self {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self { now: Instant::now(), now_ms: since_epoch.as_millis() as i64 }
    }

    fn millis(&self, at: Instant) -> i64 {
        match at.checked_duration_since(self.now) {
            Some(ahead) => self.now_ms + ahead.as_millis() as i64,
            None => self.now_ms - self.now.duration_since(at).as_millis() as i64,
        }
    }

    fn instant(&self, millis: i64) -> Instant {
        let offset = Duration::from_millis(millis.abs_diff(self.now_ms));
        if millis >= self.now_ms {
            self.now + offset
        } else {
            self.now.checked_sub(offset).unwrap_or(self.now)
        }
    }
}

/// What a table says of one more attempt.
enum Verdict {
    Admit,
    /// Attempts ahead of it must end first.
    Wait,
    /// Too many failures: come back after this long.
    Refuse(Duration),
}

struct Table<K> {
    policy: Policy,
    records: HashMap<K, Record>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(policy: Policy) -> Self {
        Self { policy, records: HashMap::new() }
    }

    fn verdict(&mut self, key: &K, now: Instant) -> Verdict {
        let Some(r) = self.records.get_mut(key) else {
            return Verdict::Admit;
        };
        r.leak(self.policy.leak, now);
        if r.blocked_until > now {
            return Verdict::Refuse(r.blocked_until - now);
        }
        // Within the budget, as many at once as failures could still be afforded; past it, one at a time.
        let room =
            if r.failures < self.policy.free { r.failures + r.in_flight < self.policy.free } else { r.in_flight == 0 };
        if room {
            Verdict::Admit
        } else {
            Verdict::Wait
        }
    }

    fn admit(&mut self, key: &K, now: Instant) {
        self.make_room(now);
        self.records.entry(key.clone()).or_insert_with(|| Record::new(now)).in_flight += 1;
    }

    /// Ends an admitted attempt: a failure is counted, a success clears (`clear`) or leaves the count.
    fn end(&mut self, key: &K, outcome: Outcome, now: Instant) {
        let Some(r) = self.records.get_mut(key) else { return };
        r.in_flight = r.in_flight.saturating_sub(1);
        r.settle(self.policy, outcome, now);
        if r.is_idle(now) {
            self.records.remove(key);
        }
    }

    /// Replaces the local count under `key` by the stored one.
    fn absorb(&mut self, key: &K, stored: Option<&ThrottleCount>, clock: &Clock) {
        if stored.is_none() && !self.records.contains_key(key) {
            return;
        }
        self.make_room(clock.now);
        let r = self.records.entry(key.clone()).or_insert_with(|| Record::new(clock.now));
        r.absorb(stored, clock);
        if r.is_idle(clock.now) {
            self.records.remove(key);
        }
    }

    /// Keeps the table under [`MAX_ENTRIES`]: drops records that hold nothing, then the least-blocked
    /// half, so that flooding the table with fresh keys cannot reset the counts of a blocked one.
    fn make_room(&mut self, now: Instant) {
        if self.records.len() < MAX_ENTRIES {
            return;
        }
        let policy = self.policy;
        self.records.retain(|_, r| {
            r.leak(policy.leak, now);
            !r.is_idle(now)
        });
        if self.records.len() < MAX_ENTRIES / 2 {
            return;
        }
        // A record not blocked ranks by its failures alone, whenever it was made.
        let rank = |r: &Record| (r.blocked_until.max(now), r.failures);
        let mut ranks: Vec<(Instant, u32)> = self.records.values().filter(|r| r.in_flight == 0).map(rank).collect();
        if ranks.is_empty() {
            return;
        }
        let middle = ranks.len() / 2;
        let (_, median, _) = ranks.select_nth_unstable(middle);
        let median = *median;
        self.records.retain(|_, r| r.in_flight > 0 || rank(r) > median);
    }
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Failed,
    /// Succeeded: the key's failures are forgiven.
    Cleared,
    /// Succeeded, for a key shared by others (an address): nothing counted.
    Unjudged,
}

/// The part of an address one attacker controls: IPv4 addresses one by one, IPv6 by /64.
pub fn network(address: IpAddr) -> IpAddr {
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

/// The keys one attempt is counted under.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Keys {
    name: String,
    address: IpAddr,
    /// Whether the name-alone table holds it back (not from an address the name signed in from).
    by_name: bool,
}

/// Attempts waiting for their turn, oldest first: one queue per address, and one per name for those
/// the name table holds back. An attempt goes only when nothing earlier waits in any of its queues.
#[derive(Default)]
struct Queue {
    by_address: HashMap<IpAddr, VecDeque<u64>>,
    by_name: HashMap<String, VecDeque<u64>>,
    len: usize,
}

impl Queue {
    fn join(&mut self, ticket: u64, keys: &Keys) {
        self.by_address.entry(keys.address).or_default().push_back(ticket);
        if keys.by_name {
            self.by_name.entry(keys.name.clone()).or_default().push_back(ticket);
        }
        self.len += 1;
    }

    fn leave(&mut self, ticket: u64, keys: &Keys) {
        fn remove<K: Hash + Eq>(queues: &mut HashMap<K, VecDeque<u64>>, key: &K, ticket: u64) -> bool {
            let Some(queue) = queues.get_mut(key) else { return false };
            let found = queue.iter().position(|t| *t == ticket).map(|i| queue.remove(i)).is_some();
            if queue.is_empty() {
                queues.remove(key);
            }
            found
        }
        if remove(&mut self.by_address, &keys.address, ticket) {
            self.len -= 1;
        }
        if keys.by_name {
            remove(&mut self.by_name, &keys.name, ticket);
        }
    }

    /// Whether anything that arrived before `ticket` waits in one of these keys' queues.
    fn ahead(&self, keys: &Keys, ticket: u64) -> bool {
        let earlier = |front: Option<&u64>| front.is_some_and(|t| *t < ticket);
        earlier(self.by_address.get(&keys.address).and_then(VecDeque::front))
            || (keys.by_name && earlier(self.by_name.get(&keys.name).and_then(VecDeque::front)))
    }

    fn from(&self, address: &IpAddr) -> usize {
        self.by_address.get(address).map_or(0, VecDeque::len)
    }
}

struct State {
    pairs: Table<(String, IpAddr)>,
    addresses: Table<IpAddr>,
    /// Absent for client secrets: never counted per client alone.
    names: Option<Table<String>>,
    /// (name, address) → last successful sign-in from there.
    known: HashMap<(String, IpAddr), Instant>,
    waiting: Queue,
    next_ticket: u64,
}

/// The store's counts for one attempt's keys (pair, address, name; `None`: not read), and when the
/// name last signed in from the address (Unix seconds).
struct Stored {
    counts: [Option<Option<ThrottleCount>>; 3],
    last_sign_in: Option<i64>,
    clock: Clock,
}

impl Stored {
    /// Whether the name signed in from the address within `within`.
    fn signed_in_within(&self, within: Duration) -> bool {
        self.last_sign_in.is_some_and(|at| self.clock.now_ms / 1000 - at < within.as_secs() as i64)
    }
}

impl State {
    fn is_known(&self, keys: &Keys, now: Instant) -> bool {
        self.known.get(&(keys.name.clone(), keys.address)).is_some_and(|at| now.duration_since(*at) < KNOWN_FOR)
    }

    /// The attempt's own keys (pair, name) that hold a count a success must clear.
    fn forgivable(&self, keys: &Keys, now: Instant) -> [bool; 2] {
        let counted = |r: Option<&Record>| r.is_some_and(|r| r.failures > 0 || r.blocked_until > now);
        let pair = counted(self.pairs.records.get(&(keys.name.clone(), keys.address)));
        let name = keys.by_name && counted(self.names.as_ref().and_then(|names| names.records.get(&keys.name)));
        [pair, name]
    }

    fn absorb(&mut self, keys: &Keys, stored: &Stored) {
        let [pair, address, name] = &stored.counts;
        if let Some(pair) = pair {
            self.pairs.absorb(&(keys.name.clone(), keys.address), pair.as_ref(), &stored.clock);
        }
        if let Some(address) = address {
            self.addresses.absorb(&keys.address, address.as_ref(), &stored.clock);
        }
        if let (Some(name), Some(names)) = (name, self.names.as_mut()) {
            names.absorb(&keys.name, name.as_ref(), &stored.clock);
        }
    }

    fn verdict(&mut self, keys: &Keys, now: Instant) -> Verdict {
        let pair = (keys.name.clone(), keys.address);
        let mut verdicts = vec![self.pairs.verdict(&pair, now), self.addresses.verdict(&keys.address, now)];
        if let (true, Some(names)) = (keys.by_name, self.names.as_mut()) {
            verdicts.push(names.verdict(&keys.name, now));
        }
        let refusal = verdicts.iter().filter_map(|v| if let Verdict::Refuse(d) = v { Some(*d) } else { None }).max();
        match refusal {
            Some(wait) => Verdict::Refuse(wait),
            None if verdicts.iter().any(|v| matches!(v, Verdict::Wait)) => Verdict::Wait,
            None => Verdict::Admit,
        }
    }

    fn admit(&mut self, keys: &Keys, now: Instant) {
        self.pairs.admit(&(keys.name.clone(), keys.address), now);
        self.addresses.admit(&keys.address, now);
        if let (true, Some(names)) = (keys.by_name, self.names.as_mut()) {
            names.admit(&keys.name, now);
        }
    }

    /// Ends an attempt: succeeded, failed, or (`None`) abandoned unjudged.
    fn end(&mut self, keys: &Keys, succeeded: Option<bool>, now: Instant) {
        let (own, shared) = outcomes(succeeded);
        let pair = (keys.name.clone(), keys.address);
        self.pairs.end(&pair, own, now);
        self.addresses.end(&keys.address, shared, now);
        if let (true, Some(names)) = (keys.by_name, self.names.as_mut()) {
            names.end(&keys.name, own, now);
        }
        if succeeded == Some(true) && self.names.is_some() {
            if self.known.len() >= MAX_ENTRIES {
                self.known.retain(|_, at| now.duration_since(*at) < KNOWN_FOR);
            }
            if self.known.len() < MAX_ENTRIES {
                self.known.insert(pair, now);
            }
        }
    }
}

/// What an attempt's end counts: under its own keys (pair, name), and under its address, which others
/// share.
fn outcomes(succeeded: Option<bool>) -> (Outcome, Outcome) {
    match succeeded {
        Some(true) => (Outcome::Cleared, Outcome::Unjudged),
        Some(false) => (Outcome::Failed, Outcome::Failed),
        None => (Outcome::Unjudged, Outcome::Unjudged),
    }
}

/// Why an attempt was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failed attempts: the next may come after this long.
    Failures(Duration),
    /// Too many attempts at once from one address (none of them judged yet): come back after this long.
    Busy(Duration),
}

/// Counts failed attempts by name and address, and admits, queues or refuses each new one.
pub struct Throttle {
    state: Mutex<State>,
    /// Woken whenever an attempt ends, so that the queue moves.
    ended: Notify,
    max_wait: Duration,
    /// Its name in metrics and in the store: `login` or `client`.
    name: &'static str,
    /// The policies of the pair, address and name tables, for counting in the store.
    policies: (Policy, Policy, Option<Policy>),
    /// Where the counts are shared, if anywhere.
    store: Option<Arc<dyn Store>>,
}

impl Throttle {
    /// The throttle of password sign-ins. `cap` bounds the wait of an address (alone or with a
    /// username); `name_cap` the wait that a username alone imposes on unfamiliar addresses (short:
    /// anyone can cause it).
    pub fn logins(cap: Duration, name_cap: Duration) -> Self {
        Self::new(
            "login",
            Policy { free: 3, cap, leak: Duration::from_secs(300) },
            Policy { free: 20, cap, leak: Duration::from_secs(15) },
            Some(Policy { free: 10, cap: name_cap, leak: Duration::from_secs(60) }),
        )
    }

    /// The throttle of client secrets: per client and address, and per address; never per client alone.
    pub fn client_secrets() -> Self {
        let cap = Duration::from_secs(15 * 60);
        Self::new(
            "client",
            Policy { free: 5, cap, leak: Duration::from_secs(60) },
            Policy { free: 20, cap, leak: Duration::from_secs(15) },
            None,
        )
    }

    /// Keeps the counts and known addresses in `store`, shared with every process using it.
    pub fn shared(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    fn new(name: &'static str, pairs: Policy, addresses: Policy, names: Option<Policy>) -> Self {
        Self {
            policies: (pairs, addresses, names),
            store: None,
            state: Mutex::new(State {
                pairs: Table::new(pairs),
                addresses: Table::new(addresses),
                names: names.map(Table::new),
                known: HashMap::new(),
                waiting: Queue::default(),
                next_ticket: 0,
            }),
            ended: Notify::new(),
            max_wait: MAX_QUEUE_WAIT,
            name,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    /// Asks to check a secret for `name` (a normalised username, or a client id) from `address`.
    /// Waits while attempts ahead of it are being checked; the returned [`Attempt`] must be ended
    /// with [`Attempt::succeeded`] or [`Attempt::failed`] (dropping it counts as a failure).
    pub async fn attempt(self: &Arc<Self>, name: &str, address: IpAddr) -> Result<Attempt, Refusal> {
        let address = network(address);
        let now = Instant::now();
        let deadline = now + self.max_wait;
        let mut keys = Keys { name: name.to_owned(), address, by_name: true };
        let stored = self.fetch(&keys).await;
        // A sign-in from here stored recently need not be stored again when this one succeeds.
        let recorded = stored.as_ref().is_some_and(|s| s.signed_in_within(RECORD_AGAIN_AFTER));
        let ticket = {
            // The time is read under the lock: counts absorbed by others stand at their read's time,
            // and one taken before it would see them in its future (a block that has not ended).
            let mut s = self.lock();
            let now = Instant::now();
            let known = s.is_known(&keys, now) || stored.as_ref().is_some_and(|s| s.signed_in_within(KNOWN_FOR));
            keys.by_name = s.names.is_some() && !known;
            if let Some(stored) = &stored {
                s.absorb(&keys, stored);
            }
            match s.verdict(&keys, now) {
                Verdict::Refuse(wait) => return Err(Refusal::Failures(wait)),
                Verdict::Admit if !s.waiting.ahead(&keys, u64::MAX) => {
                    s.admit(&keys, now);
                    return Ok(Attempt { throttle: self.clone(), keys, recorded, outcome: None, ended: false });
                }
                _ => {}
            }
            if s.waiting.len >= MAX_WAITING || s.waiting.from(&address) >= MAX_WAITING_PER_ADDRESS {
                return Err(Refusal::Busy(Duration::from_secs(5)));
            }
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            s.waiting.join(ticket, &keys);
            self.report_waiting(s.waiting.len);
            ticket
        };
        // Leaves the queue however this future ends (answered, timed out, or dropped with its request).
        let mut queued = Queued { throttle: self, ticket: Some(ticket), keys: keys.clone() };
        // Whether the store's counts were read since the attempt last waited.
        let mut fresh = true;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let refetch = {
                let mut s = self.lock();
                let now = Instant::now();
                match s.verdict(&keys, now) {
                    Verdict::Refuse(wait) => return Err(Refusal::Failures(wait)),
                    // Its turn here: what other processes counted meanwhile decides.
                    Verdict::Admit if !s.waiting.ahead(&keys, ticket) && !fresh && self.store.is_some() => true,
                    Verdict::Admit if !s.waiting.ahead(&keys, ticket) => {
                        s.waiting.leave(ticket, &keys);
                        self.report_waiting(s.waiting.len);
                        s.admit(&keys, now);
                        drop(s);
                        queued.ticket = None;
                        // Those behind it may be waiting for other keys that are free.
                        self.ended.notify_waiters();
                        return Ok(Attempt { throttle: self.clone(), keys, recorded, outcome: None, ended: false });
                    }
                    _ if now >= deadline => return Err(Refusal::Busy(Duration::from_secs(5))),
                    _ => false,
                }
            };
            if refetch {
                if let Some(stored) = self.fetch(&keys).await {
                    self.lock().absorb(&keys, &stored);
                }
                fresh = true;
                continue;
            }
            fresh = false;
            let _ = tokio::time::timeout(RECHECK.min(deadline.saturating_duration_since(Instant::now())), ended).await;
        }
    }

    /// The store's keys of an attempt: pair, address, name, and the known-address record.
    fn store_keys(&self, keys: &Keys) -> ([String; 3], String) {
        let (throttle, address, name) = (self.name, keys.address, &keys.name);
        // Addresses hold no spaces, so a name (whatever was typed) can only ever be the last part.
        let counted = [
            format!("{throttle} pair {address} {name}"),
            format!("{throttle} address {address}"),
            format!("{throttle} name {name}"),
        ];
        (counted, format!("{throttle} known {address} {name}"))
    }

    /// The store's counts for an attempt's keys; `None` without a store, or when it fails (the local
    /// counts then decide, and the attempt's password check will meet the same failing store).
    async fn fetch(&self, keys: &Keys) -> Option<Stored> {
        let store = self.store.as_ref()?;
        let clock = Clock::now();
        let (counted, known_key) = self.store_keys(keys);
        let read = async {
            let found = store.throttle_counts(&counted).await?;
            let last_sign_in = match self.policies.2 {
                Some(_) => store.last_sign_in(&known_key).await?,
                None => None,
            };
            Ok::<_, crate::store::StoreError>((found, last_sign_in))
        };
        match read.await {
            Ok((found, last_sign_in)) => {
                let counts = counted.map(|key| Some(found.iter().find(|(k, _)| *k == key).map(|(_, c)| *c)));
                Some(Stored { counts, last_sign_in, clock })
            }
            Err(e) => {
                tracing::warn!(error = %e, throttle = self.name, "reading the shared throttle counts failed");
                None
            }
        }
    }

    /// Counts a failed attempt in the store, atomically with what other processes count meanwhile;
    /// returns the counts as stored then (`None` without a store, or when it fails).
    async fn persist_failure(&self, keys: &Keys) -> Option<Stored> {
        let store = self.store.as_ref()?;
        let clock = Clock::now();
        let ([pair, address, name], _) = self.store_keys(keys);
        let (pairs, addresses, names) = self.policies;
        let mut counted = vec![(pair, pairs), (address, addresses)];
        if let (true, Some(names)) = (keys.by_name, names) {
            counted.push((name, names));
        }
        let list: Vec<String> = counted.iter().map(|(key, _)| key.clone()).collect();
        let written = Mutex::new([None; 3]);
        let update = |i: usize, old: Option<ThrottleCount>| {
            let mut record = Record::new(clock.now);
            record.absorb(old.as_ref(), &clock);
            record.settle(counted[i].1, Outcome::Failed, clock.now);
            let new = (!record.is_idle(clock.now)).then(|| record.to_count(&clock));
            written.lock().expect("not poisoned")[i] = Some(new);
            new
        };
        if let Err(e) = store.update_throttle_counts(&list, &update, clock.now_ms / 1000).await {
            tracing::warn!(error = %e, throttle = self.name, "counting a failed attempt in the store failed");
            return None;
        }
        let counts = written.into_inner().expect("not poisoned");
        Some(Stored { counts, last_sign_in: None, clock })
    }

    /// Stores a success: the counts under the attempt's own keys that hold one are cleared, and the
    /// sign-in's address recorded unless it was recently. The address's count, shared with others
    /// behind it, is neither read nor written, so that simultaneous sign-ins do not queue on it.
    /// Returns the counts as stored then (`None` without a store, or when it fails).
    async fn persist_success(&self, keys: &Keys, forgivable: [bool; 2], recorded: bool) -> Option<Stored> {
        let store = self.store.as_ref()?;
        let clock = Clock::now();
        let ([pair, _, name], known_key) = self.store_keys(keys);
        let cleared: Vec<String> =
            [pair, name].into_iter().zip(forgivable).filter_map(|(k, f)| f.then_some(k)).collect();
        let sign_in = (self.policies.2.is_some() && !recorded).then_some(known_key.as_str());
        if !cleared.is_empty() || sign_in.is_some() {
            if let Err(e) = store.forgive_throttle_counts(&cleared, sign_in, clock.now_ms / 1000).await {
                tracing::warn!(error = %e, throttle = self.name, "storing a successful attempt failed");
                return None;
            }
        }
        let [pair, name] = forgivable.map(|f| f.then_some(None));
        Some(Stored { counts: [pair, None, name], last_sign_in: Some(clock.now_ms / 1000), clock })
    }

    /// Attempts queued now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len
    }

    fn report_waiting(&self, waiting: usize) {
        metrics::gauge!("postern_throttle_waiting", "throttle" => self.name).set(waiting as f64);
    }
}

/// Takes a waiter out of the queue when its future ends without being admitted.
struct Queued<'a> {
    throttle: &'a Throttle,
    /// `None` once admitted (it left the queue then).
    ticket: Option<u64>,
    keys: Keys,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            let mut s = self.throttle.lock();
            s.waiting.leave(ticket, &self.keys);
            self.throttle.report_waiting(s.waiting.len);
            drop(s);
            self.throttle.ended.notify_waiters();
        }
    }
}

/// An admitted attempt, counted as in flight until it ends.
pub struct Attempt {
    throttle: Arc<Throttle>,
    keys: Keys,
    /// Whether the store holds a sign-in by this name from this address recent enough.
    recorded: bool,
    /// The outcome being written to the store, once known.
    outcome: Option<bool>,
    ended: bool,
}

impl Attempt {
    /// The secret was right: the name's failures are forgiven, and the address becomes one the name is
    /// known to sign in from. The address's own count is left as it was.
    pub async fn succeeded(self) {
        self.finish(true).await;
    }

    /// The secret was wrong (or the name unknown): one failure counted under every key.
    pub async fn failed(self) {
        self.finish(false).await;
    }

    /// The secret could not be checked (the store failed before it): nothing is counted, as nothing
    /// was learnt.
    pub fn abandoned(mut self) {
        if !self.ended {
            self.ended = true;
            self.throttle.lock().end(&self.keys, None, Instant::now());
            self.throttle.ended.notify_waiters();
        }
    }

    /// Counts the outcome in the store first, then here, taking the store's counts as they now stand.
    async fn finish(mut self, succeeded: bool) {
        self.outcome = Some(succeeded);
        let stored = if succeeded {
            let forgivable = self.throttle.lock().forgivable(&self.keys, Instant::now());
            self.throttle.persist_success(&self.keys, forgivable, self.recorded).await
        } else {
            self.throttle.persist_failure(&self.keys).await
        };
        self.end(succeeded, stored.as_ref());
    }

    fn end(&mut self, succeeded: bool, stored: Option<&Stored>) {
        if !self.ended {
            self.ended = true;
            let mut state = self.throttle.lock();
            state.end(&self.keys, Some(succeeded), Instant::now());
            if let Some(stored) = stored {
                state.absorb(&self.keys, stored);
            }
            drop(state);
            self.throttle.ended.notify_waiters();
        }
    }
}

impl Drop for Attempt {
    /// An attempt that ends without an answer counts as a failure: a guesser closing the connection
    /// while the password is checked must not escape the count. One dropped while its outcome is being
    /// stored keeps that outcome.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.end(self.outcome.unwrap_or(false), None);
        if self.outcome.is_none() && self.throttle.store.is_some() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (throttle, keys) = (self.throttle.clone(), self.keys.clone());
                runtime.spawn(async move { throttle.persist_failure(&keys).await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn logins() -> Arc<Throttle> {
        Arc::new(Throttle::logins(Duration::from_secs(15 * 60), Duration::from_secs(60)))
    }

    async fn fail(t: &Arc<Throttle>, name: &str, address: &str, times: u32) {
        for i in 0..times {
            t.attempt(name, ip(address))
                .await
                .unwrap_or_else(|e| panic!("attempt {i} of {times} for {name} from {address}: {e:?}"))
                .failed()
                .await;
        }
    }

    #[tokio::test]
    async fn one_address_guessing_one_user_backs_off_exponentially_up_to_the_cap() {
        let t = Arc::new(Throttle::logins(Duration::from_secs(8), Duration::from_secs(4)));
        fail(&t, "u", "192.0.2.1", 3).await;
        let Err(Refusal::Failures(first)) = t.attempt("u", ip("192.0.2.1")).await else { panic!("not refused") };
        assert!(first <= Duration::from_secs(1) && first > Duration::from_millis(900), "{first:?}");
        assert!(t.attempt("other", ip("192.0.2.2")).await.is_ok(), "others are unaffected");
        // The wait has passed; the next failure doubles it.
        t.lock().pairs.records.get_mut(&("u".into(), ip("192.0.2.1"))).unwrap().blocked_until = Instant::now();
        t.attempt("u", ip("192.0.2.1")).await.unwrap().failed().await;
        let Err(Refusal::Failures(second)) = t.attempt("u", ip("192.0.2.1")).await else { panic!() };
        assert!(second > Duration::from_millis(1900), "doubled: {second:?}");
    }

    #[tokio::test]
    async fn a_parallel_burst_of_wrong_guesses_gets_only_the_free_budget_checked() {
        let t = logins();
        // Ten guesses at once: three are admitted; the others queue, then meet the back-off.
        let pending: Vec<_> = (0..10)
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move {
                    let attempt = t.attempt("u", ip("192.0.2.1")).await?;
                    tokio::time::sleep(Duration::from_millis(10)).await; // the password check
                    attempt.failed().await;
                    Ok(())
                })
            })
            .collect();
        let mut checked = 0;
        for p in pending {
            match p.await.unwrap() {
                Ok(()) => checked += 1,
                Err(Refusal::Failures(_)) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(checked, 3, "no more checks than the free budget");
    }

    #[tokio::test]
    async fn correct_sign_ins_arriving_together_from_one_address_all_get_through() {
        let t = logins();
        let mut tasks = Vec::new();
        for n in 0..60 {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                let attempt = t.attempt(&format!("student{n}"), ip("198.51.100.7")).await?;
                tokio::time::sleep(Duration::from_millis(20)).await; // the password check
                attempt.succeeded().await;
                Ok::<_, Refusal>(())
            }));
        }
        for (n, task) in tasks.into_iter().enumerate() {
            task.await.unwrap().unwrap_or_else(|e| panic!("student{n}: {e:?}"));
        }
        assert_eq!(t.waiting(), 0);
    }

    #[tokio::test]
    async fn waiters_are_admitted_in_arrival_order() {
        let t = logins();
        // Twenty in flight from one address fill its budget; the next ones queue.
        let held: Vec<_> = futures_join((0..20).map(|n| t.attempt_owned(format!("s{n}"), "203.0.113.5"))).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for n in 0..5 {
            let (late, order) = (t.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let a = late.attempt(&format!("late{n}"), ip("203.0.113.5")).await.unwrap();
                order.lock().unwrap().push(n);
                a.succeeded().await;
            }));
            tokio::task::yield_now().await;
            while t.waiting() < n + 1 {
                tokio::task::yield_now().await;
            }
        }
        for a in held {
            a.succeeded().await;
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    impl Throttle {
        async fn attempt_owned(self: &Arc<Self>, name: String, address: &str) -> Attempt {
            self.attempt(&name, ip(address)).await.unwrap()
        }
    }

    async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
        let mut out = Vec::new();
        for f in futures {
            out.push(f.await);
        }
        out
    }

    #[tokio::test]
    async fn a_queue_that_does_not_move_ends_with_busy_not_failed() {
        let mut t = Throttle::logins(Duration::from_secs(60), Duration::from_secs(60));
        t.max_wait = Duration::from_millis(50);
        let t = Arc::new(t);
        let _held: Vec<_> = futures_join((0..20).map(|n| t.attempt_owned(format!("s{n}"), "203.0.113.6"))).await;
        assert!(matches!(t.attempt("late", ip("203.0.113.6")).await, Err(Refusal::Busy(_))));
        assert_eq!(t.waiting(), 0, "the waiter left the queue");
    }

    #[tokio::test]
    async fn an_attempt_abandoned_mid_check_counts_as_a_failure() {
        // A guesser closing the connection while its password is checked (the request dropped).
        let t = logins();
        for _ in 0..3 {
            drop(t.attempt("u", ip("192.0.2.1")).await.unwrap());
        }
        assert!(matches!(t.attempt("u", ip("192.0.2.1")).await, Err(Refusal::Failures(_))));
    }

    #[tokio::test]
    async fn spraying_many_users_from_one_address_is_held_back() {
        let t = logins();
        for n in 0..20 {
            t.attempt(&format!("user{n}"), ip("203.0.113.9")).await.unwrap().failed().await;
        }
        assert!(matches!(t.attempt("user99", ip("203.0.113.9")).await, Err(Refusal::Failures(_))));
    }

    #[tokio::test]
    async fn many_addresses_guessing_one_user_do_not_lock_the_user_out_where_they_signed_in_before() {
        let t = logins();
        t.attempt("ada", ip("192.0.2.10")).await.unwrap().succeeded().await;
        for n in 0..10 {
            t.attempt("ada", ip(&format!("203.0.113.{n}"))).await.unwrap().failed().await;
        }
        assert!(t.attempt("ada", ip("203.0.113.200")).await.is_err(), "unfamiliar addresses wait");
        assert!(t.attempt("ada", ip("192.0.2.10")).await.is_ok(), "the user's own address does not");
    }

    #[tokio::test]
    async fn client_secrets_are_never_throttled_per_client_alone() {
        let t = Arc::new(Throttle::client_secrets());
        for n in 0..12u8 {
            for _ in 0..5 {
                if let Ok(a) = t.attempt("jupyterhub", ip(&format!("203.0.113.{n}"))).await {
                    a.failed().await;
                }
            }
        }
        assert!(t.attempt("jupyterhub", ip("203.0.113.0")).await.is_err(), "the guessing address waits");
        assert!(t.attempt("jupyterhub", ip("192.0.2.80")).await.is_ok(), "the Hub's address does not");
    }

    #[tokio::test]
    async fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = logins();
        fail(&t, "u", "2001:db8:1:2::1", 2).await;
        fail(&t, "u", "2001:db8:1:2::ffff", 1).await;
        assert!(t.attempt("u", ip("2001:db8:1:2:abcd::9")).await.is_err(), "one /64 is one attacker");
        assert!(t.attempt("u", ip("2001:db8:1:3::1")).await.is_ok());
        fail(&t, "v", "::ffff:192.0.2.50", 2).await;
        fail(&t, "v", "192.0.2.50", 1).await;
        assert!(t.attempt("v", ip("192.0.2.50")).await.is_err());
    }

    #[test]
    fn counts_leak_away_so_occasional_typos_never_add_up() {
        let mut table = Table::new(Policy { free: 2, cap: Duration::from_secs(60), leak: Duration::from_secs(10) });
        let start = Instant::now();
        // One failure every 10 s, for ever: each leaks away before the next.
        for n in 0..100u32 {
            let now = start + Duration::from_secs(10 * u64::from(n));
            assert!(matches!(table.verdict(&"k", now), Verdict::Admit), "attempt {n}");
            table.admit(&"k", now);
            table.end(&"k", Outcome::Failed, now);
        }
        let now = start + Duration::from_secs(2000);
        for _ in 0..2 {
            table.admit(&"k", now);
            table.end(&"k", Outcome::Failed, now);
        }
        assert!(matches!(table.verdict(&"k", now), Verdict::Refuse(_)));
        assert!(matches!(table.verdict(&"k", now + Duration::from_secs(11)), Verdict::Admit), "one leaked");
    }

    #[test]
    fn a_full_table_evicts_the_least_blocked_first() {
        let mut table = Table::new(Policy { free: 1, cap: Duration::from_secs(600), leak: Duration::from_secs(600) });
        let now = Instant::now();
        // The victim's record is well blocked; a flood of fresh keys with one failure each follows.
        for _ in 0..5 {
            table.admit(&0u32, now);
            table.end(&0u32, Outcome::Failed, now);
        }
        for k in 1..=MAX_ENTRIES as u32 + 10 {
            table.admit(&k, now);
            table.end(&k, Outcome::Failed, now);
        }
        assert!(table.records.len() <= MAX_ENTRIES);
        assert!(matches!(table.verdict(&0, now), Verdict::Refuse(_)), "the victim's count survives");
    }
}
