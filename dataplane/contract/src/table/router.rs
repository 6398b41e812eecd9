//! Route lookup indexed by host and path (docs/behaviour.md §6).
//!
//! Hosts: exact map, then wildcard suffixes from longest to shortest, then host-less rules.
//! Paths within a host group: exact map, then prefixes from longest to shortest; only the
//! distinct prefix lengths present are probed, so cost grows with path length and the number of
//! distinct prefix lengths, not with the number of routes.

use std::collections::HashMap;

/// One path pattern of one route, as the index holds it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub route: u32,
    pub priority: i64,
    pub pattern_len: usize,
}

#[derive(Debug, Default)]
pub struct PathIndex {
    exact: HashMap<Box<[u8]>, Vec<Entry>>,
    prefixes: HashMap<Box<[u8]>, Vec<Entry>>,
    /// Distinct prefix lengths, longest first.
    prefix_lens: Vec<usize>,
}

impl PathIndex {
    fn insert(&mut self, pattern: &str, entry: Entry) {
        match pattern.strip_suffix('*') {
            Some(prefix) => self
                .prefixes
                .entry(prefix.as_bytes().into())
                .or_default()
                .push(entry),
            None => self
                .exact
                .entry(pattern.as_bytes().into())
                .or_default()
                .push(entry),
        }
    }

    fn finish(&mut self) {
        // Same path or prefix: higher priority, then longer original pattern, then table order.
        let order = |a: &Entry, b: &Entry| {
            b.priority
                .cmp(&a.priority)
                .then(b.pattern_len.cmp(&a.pattern_len))
                .then(a.route.cmp(&b.route))
        };
        for list in self.exact.values_mut().chain(self.prefixes.values_mut()) {
            list.sort_by(order);
            list.dedup_by_key(|e| e.route);
        }
        let mut lens: Vec<usize> = self.prefixes.keys().map(|k| k.len()).collect();
        lens.sort_unstable_by(|a, b| b.cmp(a));
        lens.dedup();
        self.prefix_lens = lens;
    }

    /// Candidates in match order.
    fn candidates<'a>(&'a self, path: &'a [u8]) -> impl Iterator<Item = &'a Entry> + 'a {
        let exact = self.exact.get(path).into_iter().flatten();
        let prefixed = self
            .prefix_lens
            .iter()
            .filter(move |len| **len <= path.len())
            .filter_map(move |len| self.prefixes.get(&path[..*len]))
            .flatten();
        exact.chain(prefixed)
    }
}

#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: HashMap<String, PathIndex>,
    /// Keyed by the suffix after `*.`.
    wildcard_hosts: HashMap<String, PathIndex>,
    any_host: PathIndex,
}

impl Router {
    /// `routes` yields, per route index, its hosts and paths (already validated).
    pub fn build<'a>(routes: impl Iterator<Item = (u32, i64, &'a [String], &'a [String])>) -> Self {
        let mut router = Router::default();
        for (route, priority, hosts, paths) in routes {
            let mut wanted: Vec<(bool, &str)> = hosts
                .iter()
                .map(|h| match h.strip_prefix("*.") {
                    Some(suffix) => (true, suffix),
                    None => (false, h.as_str()),
                })
                .collect();
            wanted.sort_unstable();
            wanted.dedup();
            let insert_all = |group: &mut PathIndex| {
                for pattern in paths {
                    let entry = Entry {
                        route,
                        priority,
                        pattern_len: pattern.len(),
                    };
                    group.insert(pattern, entry);
                }
            };
            if wanted.is_empty() {
                insert_all(&mut router.any_host);
            }
            for (wildcard, host) in wanted {
                let map = if wildcard {
                    &mut router.wildcard_hosts
                } else {
                    &mut router.exact_hosts
                };
                insert_all(map.entry(host.to_string()).or_default());
            }
        }
        router.any_host.finish();
        for g in router
            .exact_hosts
            .values_mut()
            .chain(router.wildcard_hosts.values_mut())
        {
            g.finish();
        }
        router
    }

    /// Candidates in match order; the caller takes the first whose conditions hold.
    pub fn candidates<'a>(
        &'a self,
        host: Option<&'a str>,
        path: &'a [u8],
    ) -> impl Iterator<Item = u32> + 'a {
        let exact = host.and_then(|h| self.exact_hosts.get(h));
        let wildcards = host
            .into_iter()
            .flat_map(|h| h.match_indices('.').map(move |(i, _)| &h[i + 1..]))
            .filter_map(move |suffix| self.wildcard_hosts.get(suffix));
        exact
            .into_iter()
            .chain(wildcards)
            .chain(std::iter::once(&self.any_host))
            .flat_map(move |group| group.candidates(path))
            .map(|e| e.route)
    }
}
