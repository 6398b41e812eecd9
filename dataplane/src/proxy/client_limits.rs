//! Caps on connections, in total and per client address, and on the request rate of one
//! address (docs/reliability.md, "Limits under attack"): what keeps one client, or a flood of
//! sockets that send nothing, from taking every file descriptor of a dataplane.
//!
//! The total is one atomic counter. Per-address state exists only when a per-address cap is
//! set: sharded maps whose entries live while the address has connections open (and, with a
//! request rate, until its bucket has refilled), so their size is bounded by the open
//! connections and the recent arrival rate, never by the addresses ever seen.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

/// The caps, as the flags give them; zero means "no cap".
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClientLimits {
    /// Client connections open at once in this process, TLS handshakes included.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub per_client_connections: u32,
    /// Requests (and WebSocket handshakes) per second from one client address.
    pub per_client_rate: f64,
    /// Requests one address may send at once before the rate applies (at least 1).
    pub per_client_burst: u32,
}

impl ClientLimits {
    fn per_client(&self) -> bool {
        self.per_client_connections > 0 || self.per_client_rate > 0.0
    }
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The process holds `--max-connections` already.
    Total,
    /// The address holds `--per-client-max-connections` already.
    Client,
}

impl Refusal {
    /// The `reason` label of `portcullis_connections_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Total => "connection_limit",
            Refusal::Client => "client_connection_limit",
        }
    }

    /// What a plain-HTTP client is told before the connection closes (nothing is read first,
    /// so the answer is fixed bytes).
    pub fn response(self) -> &'static [u8] {
        match self {
            Refusal::Total => {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections\n"
            }
            Refusal::Client => {
                b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 39\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections from this address\n"
            }
        }
    }
}

/// The address limits count by: an IPv4 address, or the /64 of an IPv6 one (one host
/// usually holds a whole /64, so counting single IPv6 addresses would cap nothing).
fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

/// A token bucket: `burst` tokens, refilled at `rate` a second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.at = now;
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, rate: f64, burst: u32, now: Instant) -> Result<(), Duration> {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - self.tokens) / rate).min(3600.0),
            ))
        }
    }

    fn is_full(&self, rate: f64, burst: u32, now: Instant) -> bool {
        let mut probe = *self;
        probe.refill(rate, burst, now);
        probe.tokens >= f64::from(burst)
    }
}

struct ClientState {
    connections: u32,
    bucket: Bucket,
}

#[derive(Default)]
struct Shard {
    clients: HashMap<IpAddr, ClientState>,
    /// Claims since the last sweep of entries nothing needs any more.
    claims: u32,
}

const SHARDS: usize = 32;
/// Claims between two sweeps of a shard.
const SWEEP_EVERY: u32 = 256;

/// The shared counters of one process (every worker uses the same).
pub struct Limiter {
    limits: ClientLimits,
    /// Open connections: `portcullis_client_connections_active` is the count the total cap
    /// checks, so the two cannot disagree.
    open: Gauge,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Limiter {
    pub fn new(mut limits: ClientLimits, open: Gauge) -> Arc<Limiter> {
        limits.per_client_burst = limits.per_client_burst.max(1);
        if !(limits.per_client_rate.is_finite() && limits.per_client_rate > 0.0) {
            limits.per_client_rate = 0.0;
        }
        let shards = if limits.per_client() { SHARDS } else { 0 };
        Arc::new(Limiter {
            limits,
            open,
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        })
    }

    pub fn limits(&self) -> &ClientLimits {
        &self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> i64 {
        self.open.get()
    }

    /// Counts a newly accepted connection against the total, or refuses it.
    pub fn admit(self: &Arc<Self>) -> Result<ConnectionPermit, Refusal> {
        let before = self.open.inc();
        if self.limits.max_connections > 0
            && usize::try_from(before).is_ok_and(|before| before >= self.limits.max_connections)
        {
            self.open.dec();
            return Err(Refusal::Total);
        }
        Ok(ConnectionPermit {
            limiter: self.clone(),
            client: None,
        })
    }

    fn shard(&self, key: &IpAddr) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        // A panic elsewhere while holding the lock leaves counts that are still usable.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one request from the address's rate, or says when to retry. Always admits
    /// (and costs one branch) when no rate is set.
    pub fn take_request(&self, addr: IpAddr) -> Result<(), Duration> {
        if self.limits.per_client_rate == 0.0 {
            return Ok(());
        }
        self.take_request_at(addr, Instant::now())
    }

    fn take_request_at(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let ClientLimits {
            per_client_rate: rate,
            per_client_burst: burst,
            ..
        } = self.limits;
        if rate == 0.0 {
            return Ok(());
        }
        let key = client_key(addr);
        let mut shard = self.shard(&key);
        shard
            .clients
            .entry(key)
            .or_insert_with(|| ClientState {
                connections: 0,
                bucket: Bucket::full(burst, now),
            })
            .bucket
            .take(rate, burst, now)
    }

    fn claim(&self, key: IpAddr, now: Instant) -> Result<(), Refusal> {
        let limits = self.limits;
        let mut shard = self.shard(&key);
        shard.claims += 1;
        if shard.claims >= SWEEP_EVERY {
            shard.claims = 0;
            shard.clients.retain(|_, state| {
                state.connections > 0
                    || !state
                        .bucket
                        .is_full(limits.per_client_rate, limits.per_client_burst, now)
            });
        }
        let state = shard.clients.entry(key).or_insert_with(|| ClientState {
            connections: 0,
            bucket: Bucket::full(limits.per_client_burst, now),
        });
        if limits.per_client_connections > 0 && state.connections >= limits.per_client_connections {
            return Err(Refusal::Client);
        }
        state.connections += 1;
        Ok(())
    }

    fn release(&self, key: IpAddr, now: Instant) {
        let limits = self.limits;
        let mut shard = self.shard(&key);
        if let Entry::Occupied(mut entry) = shard.clients.entry(key) {
            let state = entry.get_mut();
            state.connections = state.connections.saturating_sub(1);
            let rate_remembers = limits.per_client_rate > 0.0
                && !state
                    .bucket
                    .is_full(limits.per_client_rate, limits.per_client_burst, now);
            if state.connections == 0 && !rate_remembers {
                entry.remove();
            }
        }
    }

    /// Addresses with state kept (for tests and the leak check).
    pub fn tracked_clients(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clients
                    .len()
            })
            .sum()
    }
}

/// One admitted connection: it counts until dropped, however the connection ends.
pub struct ConnectionPermit {
    limiter: Arc<Limiter>,
    client: Option<IpAddr>,
}

impl ConnectionPermit {
    /// Counts the connection against its client address (known after a PROXY protocol
    /// header), or refuses it. Does nothing when no per-address cap is set.
    pub fn claim_client(&mut self, addr: IpAddr, now: Instant) -> Result<(), Refusal> {
        if !self.limiter.limits.per_client() || self.client.is_some() {
            return Ok(());
        }
        let key = client_key(addr);
        self.limiter.claim(key, now)?;
        self.client = Some(key);
        Ok(())
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(key) = self.client {
            self.limiter.release(key, Instant::now());
        }
        self.limiter.open.dec();
    }
}

/// Tells a refused plain-HTTP client why, without waiting: what it already sent is read and
/// discarded (so that closing does not reset the connection before the answer is read), the
/// answer is written if the socket takes it at once, and the connection closes. A TLS client
/// gets a bare close: answering in TLS would cost the handshake the cap is there to spare.
pub fn refuse(tcp: tokio::net::TcpStream, tls: bool, refusal: Refusal) {
    if !tls {
        let mut discard = [0u8; 4096];
        let _ = tcp.try_read(&mut discard);
        let _ = tcp.try_write(refusal.response());
    }
    drop(tcp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limits() -> ClientLimits {
        ClientLimits::default()
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn the_total_cap_counts_open_connections_and_frees_on_drop() {
        let limiter = Limiter::new(
            ClientLimits {
                max_connections: 2,
                ..limits()
            },
            Gauge::default(),
        );
        let a = limiter.admit().unwrap();
        let b = limiter.admit().unwrap();
        assert_eq!(limiter.admit().err(), Some(Refusal::Total));
        assert_eq!(limiter.open(), 2, "a refusal does not count");
        drop(a);
        let _c = limiter.admit().unwrap();
        drop(b);
        assert_eq!(limiter.open(), 1);
    }

    #[test]
    fn no_caps_admit_everything_and_keep_no_per_address_state() {
        let limiter = Limiter::new(limits(), Gauge::default());
        let now = Instant::now();
        let mut permits: Vec<_> = (0..1000).map(|_| limiter.admit().unwrap()).collect();
        for p in &mut permits {
            p.claim_client(v4(1), now).unwrap();
            limiter.take_request_at(v4(1), now).unwrap();
        }
        assert_eq!(limiter.tracked_clients(), 0);
        drop(permits);
        assert_eq!(limiter.open(), 0);
    }

    #[test]
    fn the_per_address_cap_counts_each_address_apart_and_forgets_closed_ones() {
        let limiter = Limiter::new(
            ClientLimits {
                per_client_connections: 2,
                ..limits()
            },
            Gauge::default(),
        );
        let now = Instant::now();
        let claim = |addr| {
            let mut p = limiter.admit().unwrap();
            p.claim_client(addr, now).map(|()| p)
        };
        let a1 = claim(v4(1)).unwrap();
        let a2 = claim(v4(1)).unwrap();
        assert_eq!(claim(v4(1)).err(), Some(Refusal::Client));
        let b1 = claim(v4(2)).unwrap();
        drop(a1);
        let a3 = claim(v4(1)).unwrap();
        assert_eq!(limiter.open(), 3, "refused connections do not stay counted");
        drop((a2, a3, b1));
        assert_eq!(limiter.tracked_clients(), 0);
        assert_eq!(limiter.open(), 0);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), v4(7));
        assert_eq!(client_key(v4(7)), v4(7));
    }

    #[test]
    fn the_request_rate_allows_a_burst_then_refills_at_the_rate() {
        let limiter = Limiter::new(
            ClientLimits {
                per_client_rate: 2.0,
                per_client_burst: 3,
                ..limits()
            },
            Gauge::default(),
        );
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.take_request_at(v4(1), t0).unwrap();
        }
        let wait = limiter.take_request_at(v4(1), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another address has its own bucket.
        limiter.take_request_at(v4(2), t0).unwrap();
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        limiter.take_request_at(v4(1), t1).unwrap();
        assert!(limiter.take_request_at(v4(1), t1).is_err());
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            limiter.take_request_at(v4(1), t2).unwrap();
        }
        assert!(limiter.take_request_at(v4(1), t2).is_err());
    }

    #[test]
    fn rate_state_outlives_the_connection_only_until_the_bucket_refills() {
        let limiter = Limiter::new(
            ClientLimits {
                per_client_rate: 10.0,
                per_client_burst: 1,
                ..limits()
            },
            Gauge::default(),
        );
        let t0 = Instant::now();
        let mut permit = limiter.admit().unwrap();
        permit.claim_client(v4(1), t0).unwrap();
        limiter.take_request_at(v4(1), t0).unwrap();
        drop(permit);
        // Just closed, the empty bucket is remembered: reconnecting does not reset it.
        assert_eq!(limiter.tracked_clients(), 1);
        assert!(limiter.take_request_at(v4(1), t0).is_err());
        // Entries that refilled are swept as other addresses come.
        let later = t0 + Duration::from_secs(1);
        let mut permits = Vec::new();
        // Enough claims that every shard sweeps at least once.
        for i in 0..(SWEEP_EVERY * SHARDS as u32 * 4) {
            let mut p = limiter.admit().unwrap();
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            p.claim_client(addr, later).unwrap();
            permits.push(p);
        }
        drop(permits);
        assert_eq!(limiter.tracked_clients(), 0);
    }

    #[test]
    fn rates_that_make_no_sense_mean_no_rate() {
        for rate in [f64::NAN, f64::INFINITY, -1.0, 0.0] {
            let limiter = Limiter::new(
                ClientLimits {
                    per_client_rate: rate,
                    ..limits()
                },
                Gauge::default(),
            );
            for _ in 0..100 {
                limiter.take_request_at(v4(1), Instant::now()).unwrap();
            }
        }
    }

    #[test]
    fn refusals_are_complete_http_responses() {
        for refusal in [Refusal::Total, Refusal::Client] {
            let raw = std::str::from_utf8(refusal.response()).unwrap();
            let (head, body) = raw.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{raw}"
            );
            assert!(head.contains("connection: close"));
        }
    }
}
