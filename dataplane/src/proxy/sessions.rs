//! Every open WebSocket, so that the proxy can end it with a Close frame of its own: when a
//! table revokes the consumer it authenticated as (docs/behaviour.md §11,
//! `--close-revoked-websockets`), and when the dataplane drains (docs/websocket-sessions.md).
//! A session costs its registry entry (16 bytes) and one small shared [`SessionControl`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use futures_util::task::AtomicWaker;

use crate::table::CompiledTable;

/// Why the proxy ends a session itself: the Close frame it sends both ways says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum CloseCause {
    /// The consumer is gone from the table or its credential changed.
    Revoked = 1,
    /// The jwt's `exp` (plus the consumer's grace) passed.
    TokenExpired,
    /// The dataplane is shutting down.
    Draining,
    /// A data message larger than the route's `websocket-max-message-bytes`.
    MessageTooBig,
    /// The route's `websocket-max-lifetime` passed.
    MaxLifetime,
    /// No byte either way for the upstream read timeout.
    Idle,
}

impl CloseCause {
    const ALL: [CloseCause; 6] = [
        CloseCause::Revoked,
        CloseCause::TokenExpired,
        CloseCause::Draining,
        CloseCause::MessageTooBig,
        CloseCause::MaxLifetime,
        CloseCause::Idle,
    ];

    /// The Close frame's status code (RFC 6455 section 7.4.1).
    pub fn code(self) -> u16 {
        match self {
            CloseCause::Revoked | CloseCause::TokenExpired => 1008,
            CloseCause::Draining | CloseCause::MaxLifetime | CloseCause::Idle => 1001,
            CloseCause::MessageTooBig => 1009,
        }
    }

    /// [`Self::code`] as a label value.
    pub fn code_str(self) -> &'static str {
        match self.code() {
            1008 => "1008",
            1009 => "1009",
            _ => "1001",
        }
    }

    /// The Close frame's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCause::Revoked => "credential revoked",
            CloseCause::TokenExpired => "token expired",
            CloseCause::Draining => "going away",
            CloseCause::MessageTooBig => "message too big",
            CloseCause::MaxLifetime => "session lifetime reached",
            CloseCause::Idle => "idle timeout",
        }
    }

    /// The metric label and log value.
    pub fn label(self) -> &'static str {
        match self {
            CloseCause::Revoked => "revoked",
            CloseCause::TokenExpired => "token_expired",
            CloseCause::Draining => "draining",
            CloseCause::MessageTooBig => "message_too_big",
            CloseCause::MaxLifetime => "max_lifetime",
            CloseCause::Idle => "idle_timeout",
        }
    }

    fn from_u8(n: u8) -> Option<CloseCause> {
        CloseCause::ALL.into_iter().find(|c| *c as u8 == n)
    }
}

/// What the registry and a session's splice share: a request to close, and the splice's waker.
#[derive(Default)]
pub struct SessionControl {
    /// The consumer's revocation key at handshake; `None`: no consumer to revoke.
    revocation_key: Option<u64>,
    /// 0, or the first [`CloseCause`] asked for.
    cause: AtomicU8,
    waker: AtomicWaker,
}

impl SessionControl {
    /// Asks the session to close for `cause`; the first request wins. Whether this one did.
    pub fn close(&self, cause: CloseCause) -> bool {
        let won = self
            .cause
            .compare_exchange(0, cause as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            self.waker.wake();
        }
        won
    }

    /// The close asked for, if any; registers `waker` to be woken by the next request.
    pub fn poll_requested(&self, waker: &Waker) -> Option<CloseCause> {
        if let Some(cause) = CloseCause::from_u8(self.cause.load(Ordering::Acquire)) {
            return Some(cause);
        }
        self.waker.register(waker);
        // A request between the load and the registration woke nobody: look again.
        CloseCause::from_u8(self.cause.load(Ordering::Acquire))
    }
}

/// Sharded so the worker threads rarely meet on a lock.
const SHARDS: usize = 16;

#[derive(Default)]
pub struct Sessions {
    next_id: AtomicU64,
    draining: AtomicBool,
    shards: [Mutex<HashMap<u64, Arc<SessionControl>>>; SHARDS],
}

/// A registered session; dropping it forgets the registration.
pub struct SessionTicket {
    sessions: Arc<Sessions>,
    id: u64,
    pub control: Arc<SessionControl>,
}

impl Drop for SessionTicket {
    fn drop(&mut self) {
        self.sessions.shard(self.id).remove(&self.id);
    }
}

impl Sessions {
    fn shard(&self, id: u64) -> MutexGuard<'_, HashMap<u64, Arc<SessionControl>>> {
        self.shards[(id as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Registers a session about to start. While draining, it is asked to close at once.
    pub fn register(self: &Arc<Self>, revocation_key: Option<u64>) -> SessionTicket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let control = Arc::new(SessionControl {
            revocation_key,
            ..SessionControl::default()
        });
        self.shard(id).insert(id, control.clone());
        // After the insertion: a drain that began before it may have missed this session.
        if self.draining.load(Ordering::Acquire) {
            control.close(CloseCause::Draining);
        }
        SessionTicket {
            sessions: self.clone(),
            id,
            control,
        }
    }

    /// Asks every session whose consumer is not in `table` with the same credential to close.
    /// Returns how many were newly asked.
    pub fn revoke(&self, table: &CompiledTable) -> usize {
        let mut closed = 0;
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for control in shard.values() {
                if let Some(key) = control.revocation_key
                    && !table.consumers.has_revocation_key(key)
                    && control.close(CloseCause::Revoked)
                {
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Asks every session to close with 1001, spread evenly over `period` so that clients do
    /// not all reconnect at once; sessions registered meanwhile are asked at once. Returns
    /// when every session was asked.
    pub async fn drain(&self, period: Duration) {
        self.draining.store(true, Ordering::Release);
        let all: Vec<Arc<SessionControl>> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        let start = tokio::time::Instant::now();
        let n = all.len() as u32;
        for (i, control) in all.iter().enumerate() {
            // The i-th of n at i/n of the period: the last one well before the period ends.
            let at = start + period.mul_f64(f64::from(i as u32) / f64::from(n.max(1)));
            tokio::time::sleep_until(at).await;
            control.close(CloseCause::Draining);
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct CountWakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn the_first_close_request_wins_and_wakes_the_registered_waker_once() {
        let control = SessionControl::default();
        let count = Arc::new(CountWakes::default());
        let waker = Waker::from(count.clone());
        assert_eq!(control.poll_requested(&waker), None);
        assert!(control.close(CloseCause::TokenExpired));
        assert!(!control.close(CloseCause::Revoked), "a later request loses");
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert_eq!(
            control.poll_requested(&waker),
            Some(CloseCause::TokenExpired)
        );
    }

    #[test]
    fn close_causes_round_trip_and_carry_rfc_6455_codes() {
        for cause in CloseCause::ALL {
            assert_eq!(CloseCause::from_u8(cause as u8), Some(cause));
            assert!(cause.reason().len() <= 123, "fits a Close frame");
        }
        assert_eq!(CloseCause::from_u8(0), None);
        assert_eq!(CloseCause::Revoked.code(), 1008);
        assert_eq!(CloseCause::MessageTooBig.code(), 1009);
        assert_eq!(CloseCause::Draining.code(), 1001);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_spreads_the_requests_over_the_period_and_catches_late_sessions() {
        let sessions = Arc::new(Sessions::default());
        let tickets: Vec<_> = (0..4).map(|_| sessions.register(None)).collect();
        let start = tokio::time::Instant::now();
        let drain = {
            let sessions = sessions.clone();
            tokio::spawn(async move { sessions.drain(Duration::from_secs(8)).await })
        };
        tokio::task::yield_now().await;
        let asked = |t: &[SessionTicket]| {
            t.iter()
                .filter(|t| t.control.cause.load(Ordering::Acquire) != 0)
                .count()
        };
        assert_eq!(asked(&tickets), 1, "the first at once");
        tokio::time::sleep_until(start + Duration::from_millis(4100)).await;
        assert_eq!(asked(&tickets), 3, "the third at half the period");
        let late = sessions.register(None);
        assert_eq!(
            late.control.cause.load(Ordering::Acquire),
            CloseCause::Draining as u8,
            "a session starting during the drain is asked at once"
        );
        drain.await.unwrap();
        assert_eq!(asked(&tickets), 4);
        assert!(start.elapsed() < Duration::from_secs(8));
        drop(tickets);
        drop(late);
        assert!(sessions.is_empty(), "tickets forget their sessions");
    }
}
