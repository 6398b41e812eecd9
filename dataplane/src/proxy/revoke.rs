//! Established WebSockets by the consumer they authenticated as, so that applying a table in
//! which that consumer is gone or its credential changed can close them (COMPATIBILITY.md §8,
//! `--close-revoked-websockets`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::AbortHandle;

use crate::auth::SecretDigest;
use crate::table::CompiledTable;

/// Who a session authenticated as: the consumer and a digest of its credential then.
#[derive(Clone, Debug)]
pub struct Identity {
    pub username: Arc<str>,
    pub fingerprint: Option<SecretDigest>,
}

struct Session {
    identity: Identity,
    abort: AbortHandle,
}

/// Sharded so the worker threads rarely meet on a lock.
const SHARDS: usize = 16;

#[derive(Default)]
pub struct Sessions {
    next_id: AtomicU64,
    shards: [Mutex<HashMap<u64, Session>>; SHARDS],
}

impl Sessions {
    /// A fresh id for a session about to start.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Session>> {
        self.shards[(id as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records a running session. If it already ended, nothing is kept.
    pub fn register(&self, id: u64, identity: Identity, abort: AbortHandle) {
        let mut shard = self.shard(id);
        if !abort.is_finished() {
            shard.insert(id, Session { identity, abort });
        }
    }

    /// Forgets a session that ended by itself.
    pub fn remove(&self, id: u64) {
        self.shard(id).remove(&id);
    }

    /// Closes every session whose consumer is not in `table`, or whose credential changed.
    /// Returns how many were closed.
    pub fn revoke(&self, table: &CompiledTable) -> usize {
        let mut closed = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, session| {
                let current = table
                    .consumers
                    .id_of(&session.identity.username)
                    .map(|c| table.consumers.list[c].credential_fingerprint);
                let still_valid = current.is_some_and(|fp| fp == session.identity.fingerprint);
                if !still_valid {
                    session.abort.abort();
                    closed += 1;
                }
                still_valid
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
