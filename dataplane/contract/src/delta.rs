//! A route table as the edits that turn the previous one into it (sync protocol v2,
//! `docs/sync.md`): a key rotation in a 10,000-route table sends one consumer, not 4 MiB.
//!
//! [`TableDelta::between`] is what the controller sends; [`TableDelta::apply`] is what the
//! dataplane does with it. Whatever a delta says, `apply` either returns a table or an error:
//! positions are checked, never trusted in arithmetic, and the result's hash is checked when it
//! is compiled, as a whole table's is.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{Consumer, GlobalRules, Route, RouteTable, TlsServer};

/// The table of `generation` and `hash`, given as edits of the table `base`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDelta {
    pub base: TableId,
    pub generation: u64,
    pub hash: String,
    /// Edits of the base's routes; none when they are unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Splice<Arc<Route>>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Splice<Consumer>>,
    /// The whole list of certificates when it changed (it is short).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Vec<TlsServer>>,
    /// The global rules when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalRules>,
}

/// Which table a delta applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableId {
    pub generation: u64,
    pub hash: String,
}

/// Replace `remove` items of the base list from position `at` (a position in the base list,
/// not in the list being built) by `insert`. A delta's splices are in ascending order and do
/// not overlap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Splice<T> {
    pub at: u64,
    #[serde(default)]
    pub remove: u64,
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub insert: Vec<T>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    #[error(
        "the delta edits generation {wanted} ({wanted_hash}), this dataplane serves {serving}; it asks for the whole table"
    )]
    OtherBase {
        wanted: u64,
        wanted_hash: String,
        serving: String,
    },
    #[error("malformed delta: no hash; a delta's result is checked against its hash")]
    NoHash,
    #[error(
        "malformed delta: {list} splice at {at} (removing {remove}) does not fit a list of {len} after position {from}"
    )]
    Splice {
        list: &'static str,
        at: u64,
        remove: u64,
        len: usize,
        from: usize,
    },
}

/// Something kept in a list a delta edits, with the key that names it in that list.
trait Keyed: Clone + PartialEq {
    fn key(&self) -> &str;
}

impl Keyed for Arc<Route> {
    fn key(&self) -> &str {
        &self.id
    }
}

impl Keyed for Consumer {
    fn key(&self) -> &str {
        &self.username
    }
}

impl TableDelta {
    /// The edits from `base` to `next`, or `None` when they would not be smaller than the
    /// table (items moved rather than added, changed or removed: the caller sends the table).
    pub fn between(base: &RouteTable, next: &RouteTable) -> Option<TableDelta> {
        Some(TableDelta {
            base: TableId {
                generation: base.generation,
                hash: base.hash.clone(),
            },
            generation: next.generation,
            hash: next.hash.clone(),
            routes: splices(&base.routes, &next.routes)?,
            consumers: splices(&base.consumers, &next.consumers)?,
            tls: (base.tls != next.tls).then(|| next.tls.clone()),
            global: (base.global != next.global).then(|| next.global.clone()),
        })
    }

    /// The table this delta describes, built from `base` (which must be the table it names).
    /// The result's hash is the delta's claim: [`crate::table::CompiledTable`] checks it.
    pub fn apply(self, base: &RouteTable) -> Result<RouteTable, DeltaError> {
        // An empty hash would be filled in on load instead of checked.
        if self.hash.is_empty() {
            return Err(DeltaError::NoHash);
        }
        if base.generation != self.base.generation || base.hash != self.base.hash {
            return Err(DeltaError::OtherBase {
                wanted: self.base.generation,
                wanted_hash: self.base.hash,
                serving: format!("generation {} ({})", base.generation, base.hash),
            });
        }
        Ok(RouteTable {
            generation: self.generation,
            hash: self.hash,
            routes: splice("routes", &base.routes, self.routes)?,
            consumers: splice("consumers", &base.consumers, self.consumers)?,
            tls: self.tls.unwrap_or_else(|| base.tls.clone()),
            global: self.global.unwrap_or_else(|| base.global.clone()),
        })
    }
}

/// Edits turning `old` into `new`, walking both in order: equal items are kept (shared routes
/// compare by address first), an item whose
/// key is in both but whose content differs is replaced, one only in `old` is removed, one only
/// in `new` is inserted. Anything else (a key that moved) gives `None`. Every edit emitted is
/// exact, so the result is right whatever the keys; they only guide the walk.
fn splices<T: Keyed>(old: &[T], new: &[T]) -> Option<Vec<Splice<T>>> {
    let old_keys: HashSet<&str> = old.iter().map(Keyed::key).collect();
    let new_keys: HashSet<&str> = new.iter().map(Keyed::key).collect();
    let mut out: Vec<Splice<T>> = Vec::new();
    let mut open: Option<Splice<T>> = None;
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let same_key = i < old.len() && j < new.len() && old[i].key() == new[j].key();
        if same_key && old[i] == new[j] {
            out.extend(open.take());
            i += 1;
            j += 1;
            continue;
        }
        let splice = open.get_or_insert_with(|| Splice {
            at: i as u64,
            remove: 0,
            insert: Vec::new(),
        });
        if same_key {
            splice.remove += 1;
            splice.insert.push(new[j].clone());
            i += 1;
            j += 1;
        } else if i < old.len() && !new_keys.contains(old[i].key()) {
            splice.remove += 1;
            i += 1;
        } else if j < new.len() && !old_keys.contains(new[j].key()) {
            splice.insert.push(new[j].clone());
            j += 1;
        } else {
            return None;
        }
    }
    out.extend(open);
    Some(out)
}

/// `base` with `splices` applied. Positions are checked against the base, in order, without
/// overflow: a hostile delta is an error, never a panic or a huge allocation.
fn splice<T: Clone>(
    list: &'static str,
    base: &[T],
    splices: Vec<Splice<T>>,
) -> Result<Vec<T>, DeltaError> {
    if splices.is_empty() {
        return Ok(base.to_vec());
    }
    let inserted: usize = splices.iter().map(|s| s.insert.len()).sum();
    let mut out = Vec::with_capacity(base.len().saturating_add(inserted));
    let mut from = 0usize;
    for s in splices {
        let fits = usize::try_from(s.at)
            .ok()
            .filter(|&at| at >= from)
            .and_then(|at| {
                let end = at.checked_add(usize::try_from(s.remove).ok()?)?;
                (end <= base.len()).then_some((at, end))
            });
        let Some((at, end)) = fits else {
            return Err(DeltaError::Splice {
                list,
                at: s.at,
                remove: s.remove,
                len: base.len(),
                from,
            });
        };
        out.extend_from_slice(&base[from..at]);
        out.extend(s.insert);
        from = end;
    }
    out.extend_from_slice(&base[from..]);
    Ok(out)
}

#[cfg(test)]
mod tests;
