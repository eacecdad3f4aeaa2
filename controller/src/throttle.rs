//! Owns the slowing down of failed logins: how many failures a user name may still see
//! from one client address, how many that address may see in all, how long it must wait
//! once it has none left, and how many of its verifications may be in flight at once.
//!
//! Keyed by address and user name, never by user name alone: nobody can lock a user out
//! by sending wrong passwords in that user's name from elsewhere, and a flood for one
//! name from behind a shared NAT leaves the other users at that address alone. An
//! address has a ceiling ten times the budget of one name, so that cycling through
//! names still bounds the work an address may cause. An IPv6 client counts by its /64,
//! since a single host usually holds a whole /64 and can send from any address in it.
//!
//! Each budget is a token bucket in GCRA form: one instant per key says how far into
//! the future its failures have pushed it. Every decision takes the current instant as
//! an argument, so the rules are tested without waiting.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// How many failed logins a user name may see from one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures in a row before a name is slowed down at an address: enough for a person
    /// mistyping, or a script with a stale password, to see why before being refused.
    pub burst: u32,
    /// Then one more failure per interval; zero turns the throttle off.
    pub interval: Duration,
}

impl LoginLimits {
    pub const DEFAULT_BURST: u32 = 10;
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3);

    /// What one address may fail in all, whatever the names: ten times a name's budget,
    /// in burst and in pace.
    fn ceiling(self) -> LoginLimits {
        LoginLimits {
            burst: self.burst.saturating_mul(ADDRESS_CEILING),
            interval: self.interval / ADDRESS_CEILING,
        }
    }

    /// How long `due` may be ahead of `now` before a failure is refused, or how long
    /// until it may be.
    fn check(self, due: Instant, now: Instant) -> Result<(), Duration> {
        let allowance = self.interval.saturating_mul(self.burst.saturating_sub(1));
        let ahead = due.saturating_duration_since(now);
        if ahead <= allowance {
            Ok(())
        } else {
            Err(ahead - allowance)
        }
    }

    /// `due` pushed one interval further by a failure at `now`.
    fn charge(self, due: Instant, now: Instant) -> Instant {
        let from = due.max(now);
        from.checked_add(self.interval).unwrap_or(from)
    }
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            burst: LoginLimits::DEFAULT_BURST,
            interval: LoginLimits::DEFAULT_INTERVAL,
        }
    }
}

/// An address's failures in all may be this many times one name's.
pub const ADDRESS_CEILING: u32 = 10;

/// Verifications of one address that may run or wait for the shared gate at once, so
/// that one address opening many connections cannot queue its argon2 runs ahead of
/// everyone else's: a newcomer waits for at most this many runs of each busy address.
/// Its further logins wait their turn without costing anything, and usually find the
/// credentials verified by then.
pub const IN_FLIGHT_PER_ADDRESS: usize = 2;

/// Addresses, and names at addresses, tracked at most; one beyond them is not
/// throttled (the shared gate still bounds what its logins cost, and a name beyond
/// them still counts against its address), rather than refused for someone else's doing.
pub const MAX_ADDRESSES: usize = 65_536;

/// A name counts by its first bytes: longer ones are no user's, and a flood of long
/// names must not make the table large.
const NAME_KEY_BYTES: usize = 64;

/// A full table is swept for idle keys at most this often, so that a client cycling
/// through new addresses or names cannot make every login pay for a sweep.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long an address that failed a login stays a suspect: as long as credentials
/// that verified are remembered, long enough to outlast a slow, wide flood's pace.
pub const SUSPECT_FOR: Duration = Duration::from_secs(300);

/// The part of a client's address that is throttled as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => ClientKey(IpAddr::V6(Ipv6Addr::from(
                    u128::from(v6) & !((1u128 << 64) - 1),
                ))),
            },
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Which budget refused a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The name's, at this address.
    Name(Duration),
    /// The address's ceiling, for every name.
    Address(Duration),
}

impl Exhausted {
    pub fn wait(self) -> Duration {
        match self {
            Exhausted::Name(wait) | Exhausted::Address(wait) => wait,
        }
    }
}

struct Entry {
    /// The instant this address's failures have pushed it to, against the ceiling.
    due: Instant,
    /// The last failure, which makes the address a suspect for SUSPECT_FOR.
    failed_at: Option<Instant>,
    in_flight: Arc<Semaphore>,
}

impl Entry {
    fn idle(&self, now: Instant) -> bool {
        self.due <= now && Arc::strong_count(&self.in_flight) == 1
    }
}

/// Failed logins per address and per name at an address. Not synchronised: its owner
/// holds it under a lock that no call keeps across an await.
pub struct Throttle {
    limits: LoginLimits,
    capacity: usize,
    addresses: HashMap<ClientKey, Entry>,
    /// When each name's failures at an address have pushed it to.
    names: HashMap<(ClientKey, Box<str>), Instant>,
    swept: Option<Instant>,
}

impl Throttle {
    pub fn new(limits: LoginLimits) -> Throttle {
        Throttle::with_capacity(limits, MAX_ADDRESSES)
    }

    fn with_capacity(limits: LoginLimits, capacity: usize) -> Throttle {
        Throttle {
            limits,
            capacity,
            addresses: HashMap::new(),
            names: HashMap::new(),
            swept: None,
        }
    }

    /// Whether `name` may have a login verified from `key` at `now`; when not, which
    /// budget is spent and how long until it may.
    /// When both are spent, the longer wait is the one told, so that a client that
    /// waits as told is not refused again by the other.
    pub fn check(&self, key: ClientKey, name: &str, now: Instant) -> Result<(), Exhausted> {
        let address = self
            .addresses
            .get(&key)
            .and_then(|entry| self.limits.ceiling().check(entry.due, now).err());
        let name = self
            .names
            .get(&(key, name_key(name)))
            .and_then(|due| self.limits.check(*due, now).err());
        match (address, name) {
            (None, None) => Ok(()),
            (Some(a), Some(n)) if a > n => Err(Exhausted::Address(a)),
            (_, Some(n)) => Err(Exhausted::Name(n)),
            (Some(a), None) => Err(Exhausted::Address(a)),
        }
    }

    /// Whether `key` failed a login within SUSPECT_FOR of `now`: its logins then take
    /// the suspects' lane, so that many addresses each failing too slowly to be
    /// throttled cannot fill the queue ahead of addresses that never failed.
    pub fn suspect(&self, key: ClientKey, now: Instant) -> bool {
        self.addresses
            .get(&key)
            .and_then(|e| e.failed_at)
            .is_some_and(|at| now.saturating_duration_since(at) < SUSPECT_FOR)
    }

    /// Records a failed login of `name` from `key` at `now`.
    pub fn failed(&mut self, key: ClientKey, name: &str, now: Instant) {
        let (limits, ceiling) = (self.limits, self.limits.ceiling());
        if let Some(entry) = self.entry(key, now) {
            entry.failed_at = Some(now);
            entry.due = ceiling.charge(entry.due, now);
        }
        let name = (key, name_key(name));
        if !self.names.contains_key(&name)
            && self.names.len() >= self.capacity
            && (!self.sweep(now) || self.names.len() >= self.capacity)
        {
            return;
        }
        let due = self.names.entry(name).or_insert(now);
        *due = limits.charge(*due, now);
    }

    /// The slots for `key`'s verifications in flight, shared by all its logins; `None`
    /// when the table is full of busy addresses and `key` is not in it.
    pub fn slots(&mut self, key: ClientKey, now: Instant) -> Option<Arc<Semaphore>> {
        self.entry(key, now).map(|e| e.in_flight.clone())
    }

    fn entry(&mut self, key: ClientKey, now: Instant) -> Option<&mut Entry> {
        if !self.addresses.contains_key(&key)
            && self.addresses.len() >= self.capacity
            && (!self.sweep(now) || self.addresses.len() >= self.capacity)
        {
            return None;
        }
        Some(self.addresses.entry(key).or_insert_with(|| Entry {
            due: now,
            failed_at: None,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT_PER_ADDRESS)),
        }))
    }

    /// Drops the keys whose failures are paid for; false when a sweep ran too lately.
    fn sweep(&mut self, now: Instant) -> bool {
        if self
            .swept
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY)
        {
            return false;
        }
        self.swept = Some(now);
        self.addresses.retain(|_, e| !e.idle(now));
        self.names.retain(|_, due| *due > now);
        true
    }
}

fn name_key(name: &str) -> Box<str> {
    let mut end = name.len().min(NAME_KEY_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].into()
}

/// `Retry-After` in whole seconds: rounded up, and at least 1, so that a client that
/// waits as told is not refused again.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    fn limits(burst: u32, secs: u64) -> LoginLimits {
        LoginLimits {
            burst,
            interval: Duration::from_secs(secs),
        }
    }

    fn name(wait: Duration) -> Result<(), Exhausted> {
        Err(Exhausted::Name(wait))
    }

    #[test]
    fn a_burst_of_failures_then_one_per_interval() {
        let mut t = Throttle::new(limits(10, 3));
        let a = key("127.0.0.1");
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(t.check(a, "u", t0), Ok(()));
            t.failed(a, "u", t0);
        }
        assert_eq!(t.check(a, "u", t0), name(Duration::from_secs(3)));
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(t.check(a, "u", later), name(Duration::from_millis(1500)));
        let refilled = t0 + Duration::from_secs(3);
        assert_eq!(t.check(a, "u", refilled), Ok(()));
        t.failed(a, "u", refilled);
        assert_eq!(t.check(a, "u", refilled), name(Duration::from_secs(3)));
        // A long quiet spell refills the whole burst, and no more than it.
        let rested = refilled + Duration::from_secs(3600);
        for _ in 0..10 {
            assert_eq!(t.check(a, "u", rested), Ok(()));
            t.failed(a, "u", rested);
        }
        assert!(t.check(a, "u", rested).is_err());
    }

    #[test]
    fn failures_in_flight_beyond_the_burst_lengthen_the_wait() {
        let mut t = Throttle::new(limits(2, 3));
        let a = key("10.0.0.1");
        let t0 = Instant::now();
        for _ in 0..4 {
            t.failed(a, "u", t0);
        }
        assert_eq!(t.check(a, "u", t0), name(Duration::from_secs(9)));
    }

    #[test]
    fn a_flood_for_one_name_leaves_the_other_names_at_that_address_alone() {
        let mut t = Throttle::new(limits(10, 3));
        let nat = key("192.0.2.7");
        let t0 = Instant::now();
        // Ten wrong passwords a second for "admin" for 20 s, refused ones not counted.
        for tick in 0..200 {
            let now = t0 + Duration::from_millis(100 * tick);
            if t.check(nat, "admin", now).is_ok() {
                t.failed(nat, "admin", now);
            }
            assert_eq!(t.check(nat, "operator", now), Ok(()), "at {tick}");
        }
        assert!(matches!(
            t.check(nat, "admin", t0 + Duration::from_secs(20)),
            Err(Exhausted::Name(_))
        ));
    }

    #[test]
    fn cycling_names_meets_the_address_ceiling() {
        let mut t = Throttle::new(limits(10, 3));
        let a = key("10.0.0.1");
        let t0 = Instant::now();
        let mut failed = 0;
        for n in 0..1000 {
            let name = format!("user{n}");
            if t.check(a, &name, t0).is_err() {
                break;
            }
            t.failed(a, &name, t0);
            failed += 1;
        }
        assert_eq!(failed, 100, "ten times a name's burst");
        assert_eq!(
            t.check(a, "someone", t0),
            Err(Exhausted::Address(Duration::from_millis(300)))
        );
        assert_eq!(
            t.check(key("10.0.0.2"), "someone", t0),
            Ok(()),
            "another address is not concerned"
        );
        // A name spent at a spent address is told the longer of the two waits.
        for _ in 0..10 {
            t.failed(a, "user0", t0);
        }
        assert_eq!(
            t.check(a, "user0", t0),
            Err(Exhausted::Name(Duration::from_secs(6)))
        );
    }

    #[test]
    fn addresses_are_throttled_apart_and_ipv6_by_its_64() {
        let mut t = Throttle::new(limits(1, 3));
        let t0 = Instant::now();
        t.failed(key("127.0.0.1"), "u", t0);
        assert!(t.check(key("127.0.0.1"), "u", t0).is_err());
        assert_eq!(t.check(key("127.0.0.2"), "u", t0), Ok(()));

        t.failed(key("2001:db8:1:2::1"), "u", t0);
        assert!(t.check(key("2001:db8:1:2:ffff::9"), "u", t0).is_err());
        assert_eq!(t.check(key("2001:db8:1:3::1"), "u", t0), Ok(()));
        // An IPv4 client on a dual-stack socket is the same client as over IPv4.
        assert!(t.check(key("::ffff:127.0.0.1"), "u", t0).is_err());
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("::ffff:10.1.2.3").to_string(), "10.1.2.3");
    }

    #[test]
    fn long_names_count_by_their_first_bytes() {
        let mut t = Throttle::new(limits(1, 3));
        let t0 = Instant::now();
        let long = "é".repeat(100);
        t.failed(key("10.0.0.1"), &long, t0);
        let other = format!("{}x", "é".repeat(40));
        assert!(
            t.check(key("10.0.0.1"), &other, t0).is_err(),
            "the same first 64 bytes"
        );
        assert!(t.names.keys().all(|(_, n)| n.len() <= NAME_KEY_BYTES));
    }

    #[test]
    fn an_address_that_failed_is_a_suspect_for_a_while() {
        let now = Instant::now();
        let mut t = Throttle::new(limits(10, 3));
        assert!(!t.suspect(key("10.0.0.1"), now));
        t.slots(key("10.0.0.1"), now);
        assert!(
            !t.suspect(key("10.0.0.1"), now),
            "a login in flight is no failure"
        );
        t.failed(key("10.0.0.1"), "u", now);
        t.failed(key("10.0.0.1"), "u", now);
        assert!(t.suspect(key("10.0.0.1"), now));
        assert!(
            t.suspect(key("10.0.0.1"), now + Duration::from_secs(6)),
            "long after it could fail again"
        );
        assert!(!t.suspect(key("10.0.0.1"), now + SUSPECT_FOR));
        assert!(!t.suspect(key("10.0.0.2"), now));
    }

    #[test]
    fn a_zero_interval_never_throttles() {
        let mut t = Throttle::new(limits(1, 0));
        let a = key("127.0.0.1");
        let t0 = Instant::now();
        for _ in 0..100 {
            t.failed(a, "u", t0);
        }
        assert_eq!(t.check(a, "u", t0), Ok(()));
    }

    #[test]
    fn a_full_table_drops_idle_keys_and_never_refuses_a_new_one() {
        let mut t = Throttle::with_capacity(limits(1, 3), 2);
        let t0 = Instant::now();
        t.failed(key("10.0.0.1"), "u", t0);
        t.failed(key("10.0.0.2"), "u", t0);
        // Both still owe: the third address is let through untracked.
        t.failed(key("10.0.0.3"), "u", t0);
        assert_eq!((t.addresses.len(), t.names.len()), (2, 2));
        assert_eq!(t.check(key("10.0.0.3"), "u", t0), Ok(()));
        assert!(t.slots(key("10.0.0.3"), t0).is_none());
        // Once their debts are paid they make room (after the sweep pause).
        let later = t0 + Duration::from_secs(3);
        t.failed(key("10.0.0.3"), "u", later);
        assert_eq!((t.addresses.len(), t.names.len()), (1, 1));
        assert!(t.check(key("10.0.0.3"), "u", later).is_err());
        assert_eq!(t.check(key("10.0.0.1"), "u", later), Ok(()));
    }

    #[test]
    fn an_address_with_logins_in_flight_is_kept() {
        let mut t = Throttle::with_capacity(limits(1, 3), 1);
        let t0 = Instant::now();
        let slots = t.slots(key("10.0.0.1"), t0).expect("tracked");
        assert!(t.slots(key("10.0.0.2"), t0).is_none());
        assert!(Arc::ptr_eq(
            &slots,
            &t.slots(key("10.0.0.1"), t0).expect("same slots")
        ));
        drop(slots);
        let later = t0 + SWEEP_EVERY;
        assert!(t.slots(key("10.0.0.2"), later).is_some());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::from_millis(3001)), 4);
    }
}
