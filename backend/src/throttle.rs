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
//!   address the user has signed in from since the last restart, so an attacker cannot keep them out.
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

/// An address the user signed in from stays trusted for the username this long (or until a restart).
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
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
        match outcome {
            Outcome::Failed => {
                r.leak(self.policy.leak, now);
                r.failures += 1;
                if r.failures >= self.policy.free {
                    let exponent = (r.failures - self.policy.free).min(16);
                    r.blocked_until = now + Duration::from_secs(1u64 << exponent).min(self.policy.cap);
                }
            }
            Outcome::Cleared => {
                r.failures = 0;
                r.blocked_until = now;
            }
            Outcome::Unjudged => {}
        }
        if r.is_idle(now) {
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

#[derive(Clone, Copy)]
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

impl State {
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

    fn end(&mut self, keys: &Keys, succeeded: bool, now: Instant) {
        let (own, shared) =
            if succeeded { (Outcome::Cleared, Outcome::Unjudged) } else { (Outcome::Failed, Outcome::Failed) };
        let pair = (keys.name.clone(), keys.address);
        self.pairs.end(&pair, own, now);
        self.addresses.end(&keys.address, shared, now);
        if let (true, Some(names)) = (keys.by_name, self.names.as_mut()) {
            names.end(&keys.name, own, now);
        }
        if succeeded && self.names.is_some() {
            if self.known.len() >= MAX_ENTRIES {
                self.known.retain(|_, at| now.duration_since(*at) < KNOWN_FOR);
            }
            if self.known.len() < MAX_ENTRIES {
                self.known.insert(pair, now);
            }
        }
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
    /// Its name in metrics: `login` or `client`.
    name: &'static str,
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

    fn new(name: &'static str, pairs: Policy, addresses: Policy, names: Option<Policy>) -> Self {
        Self {
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
        let ticket = {
            let mut s = self.lock();
            keys.by_name = s.names.is_some()
                && s.known.get(&(keys.name.clone(), address)).is_none_or(|at| now.duration_since(*at) >= KNOWN_FOR);
            match s.verdict(&keys, now) {
                Verdict::Refuse(wait) => return Err(Refusal::Failures(wait)),
                Verdict::Admit if !s.waiting.ahead(&keys, u64::MAX) => {
                    s.admit(&keys, now);
                    return Ok(Attempt { throttle: self.clone(), keys, ended: false });
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
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            {
                let now = Instant::now();
                let mut s = self.lock();
                match s.verdict(&keys, now) {
                    Verdict::Refuse(wait) => return Err(Refusal::Failures(wait)),
                    Verdict::Admit if !s.waiting.ahead(&keys, ticket) => {
                        s.waiting.leave(ticket, &keys);
                        self.report_waiting(s.waiting.len);
                        s.admit(&keys, now);
                        drop(s);
                        queued.ticket = None;
                        // Those behind it may be waiting for other keys that are free.
                        self.ended.notify_waiters();
                        return Ok(Attempt { throttle: self.clone(), keys, ended: false });
                    }
                    _ if now >= deadline => return Err(Refusal::Busy(Duration::from_secs(5))),
                    _ => {}
                }
            }
            let _ = tokio::time::timeout(RECHECK.min(deadline.saturating_duration_since(Instant::now())), ended).await;
        }
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
    ended: bool,
}

impl Attempt {
    /// The secret was right: the name's failures are forgiven, and the address becomes one the name is
    /// known to sign in from. The address's own count is left as it was.
    pub fn succeeded(mut self) {
        self.end(true);
    }

    /// The secret was wrong (or the name unknown): one failure counted under every key.
    pub fn failed(mut self) {
        self.end(false);
    }

    fn end(&mut self, succeeded: bool) {
        if !self.ended {
            self.ended = true;
            self.throttle.lock().end(&self.keys, succeeded, Instant::now());
            self.throttle.ended.notify_waiters();
        }
    }
}

impl Drop for Attempt {
    /// An attempt that ends without an answer counts as a failure: a guesser closing the connection
    /// while the password is checked must not escape the count.
    fn drop(&mut self) {
        self.end(false);
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
                .failed();
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
        t.attempt("u", ip("192.0.2.1")).await.unwrap().failed();
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
                    attempt.failed();
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
                attempt.succeeded();
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
                a.succeeded();
            }));
            tokio::task::yield_now().await;
            while t.waiting() < n + 1 {
                tokio::task::yield_now().await;
            }
        }
        for a in held {
            a.succeeded();
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
            t.attempt(&format!("user{n}"), ip("203.0.113.9")).await.unwrap().failed();
        }
        assert!(matches!(t.attempt("user99", ip("203.0.113.9")).await, Err(Refusal::Failures(_))));
    }

    #[tokio::test]
    async fn many_addresses_guessing_one_user_do_not_lock_the_user_out_where_they_signed_in_before() {
        let t = logins();
        t.attempt("ada", ip("192.0.2.10")).await.unwrap().succeeded();
        for n in 0..10 {
            t.attempt("ada", ip(&format!("203.0.113.{n}"))).await.unwrap().failed();
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
                    a.failed();
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
