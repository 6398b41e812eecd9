//! Established WebSockets by the consumer they authenticated as, so that applying a table in
//! which that consumer is gone or its credential changed can close them (docs/behaviour.md §11,
//! `--close-revoked-websockets`). An entry is 16 bytes: an idle WebSocket must stay cheap.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::AbortHandle;

use crate::table::CompiledTable;

/// Sharded so the worker threads rarely meet on a lock.
const SHARDS: usize = 16;

#[derive(Default)]
pub struct Sessions {
    next_id: AtomicU64,
    /// Session id → (consumer's revocation key at handshake, the session's task).
    shards: [Mutex<HashMap<u64, (u64, AbortHandle)>>; SHARDS],
}

impl Sessions {
    /// A fresh id for a session about to start.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, (u64, AbortHandle)>> {
        self.shards[(id as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records a running session. If it already ended, nothing is kept.
    pub fn register(&self, id: u64, revocation_key: u64, abort: AbortHandle) {
        let mut shard = self.shard(id);
        if !abort.is_finished() {
            shard.insert(id, (revocation_key, abort));
        }
    }

    /// Ends a registered session now.
    pub fn abort(&self, id: u64) {
        if let Some((_, abort)) = self.shard(id).remove(&id) {
            abort.abort();
        }
    }

    /// Forgets a session that ended.
    pub fn remove(&self, id: u64) {
        self.shard(id).remove(&id);
    }

    /// Closes every session whose consumer is not in `table` with the same credential.
    /// Returns how many were closed.
    pub fn revoke(&self, table: &CompiledTable) -> usize {
        let mut closed = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, (key, abort)| {
                let keep = table.consumers.has_revocation_key(*key);
                if !keep {
                    abort.abort();
                    closed += 1;
                }
                keep
            });
        }
        closed
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
