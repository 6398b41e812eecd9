//! Rules that another rule always answers first. The dataplane orders rules with the same host
//! and path pattern by priority, then by table order (namespace, ApisixRoute name, rule index).
//! So among rules with equal host, path pattern and priority, an earlier rule whose other
//! conditions (methods, remote addresses, exprs) are no narrower takes every request of a later
//! one: the later rule is dead for that host and path. When the earlier rule has weaker or no
//! authentication, or lives in another namespace, a client's credential reaches an upstream its
//! owner did not choose — so both objects hear of it.

use std::collections::{BTreeSet, HashMap};

use portcullis_contract::table::Route;

/// Route `shadowed` is never matched for `host`/`path`: route `by` takes those requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shadowing {
    pub shadowed: usize,
    pub by: usize,
    /// Lower-case host, or empty for a rule with no host.
    pub host: String,
    pub path: String,
}

/// Every shadowed rule, once per (shadowed, by) pair with the first host and path found.
/// `routes` is in table order.
pub fn find(routes: &[std::sync::Arc<Route>]) -> Vec<Shadowing> {
    let mut groups: HashMap<(&str, &str, i64), Vec<usize>> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        let hosts: Vec<&str> = if route.hosts.is_empty() {
            vec![""]
        } else {
            route.hosts.iter().map(String::as_str).collect()
        };
        for host in hosts {
            for path in &route.paths {
                let members = groups.entry((host, path, route.priority)).or_default();
                // A rule naming the same host and path twice is one member.
                if members.last() != Some(&i) {
                    members.push(i);
                }
            }
        }
    }
    // Only groups of two or more can shadow; they are taken in key order, so the host and
    // path named for a pair are always the same.
    let mut groups: Vec<_> = groups.into_iter().filter(|(_, m)| m.len() > 1).collect();
    groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for ((host, path, _), members) in groups {
        for (at, &later) in members.iter().enumerate() {
            let Some(&earlier) = members[..at]
                .iter()
                .find(|&&e| covers(&routes[e], &routes[later]))
            else {
                continue;
            };
            if seen.insert((later, earlier)) {
                out.push(Shadowing {
                    shadowed: later,
                    by: earlier,
                    host: host.to_string(),
                    path: path.to_string(),
                });
            }
        }
    }
    out.sort_by_key(|s| (s.shadowed, s.by));
    out
}

/// Whether every request `b` matches (for a shared host and path) is matched by `a` too.
fn covers(a: &Route, b: &Route) -> bool {
    let methods = a.methods.is_empty()
        || (!b.methods.is_empty() && b.methods.iter().all(|m| a.methods.contains(m)));
    let addrs = a.remote_addrs.is_empty() || a.remote_addrs == b.remote_addrs;
    let exprs = a.exprs.is_empty() || a.exprs == b.exprs;
    methods && addrs && exprs
}

/// Whether a rule asks for any credential.
pub fn authenticates(route: &Route) -> bool {
    let p = &route.plugins;
    p.key_auth.is_some() || p.basic_auth.is_some() || p.jwt_auth.is_some()
}

/// `host/path`, or `path` for a rule without hosts.
pub fn place(s: &Shadowing) -> String {
    if s.host.is_empty() {
        format!("path {:?} (any host)", s.path)
    } else {
        format!("host {:?} path {:?}", s.host, s.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, hosts: &[&str], paths: &[&str]) -> Route {
        Route {
            id: id.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            ..Route::default()
        }
    }

    #[test]
    fn equal_host_path_and_priority_shadow_the_later_rule() {
        let routes = vec![
            rule("a/open/0", &["ws.example.com"], &["/raw", "/x"]),
            rule("b/secure/0", &["ws.example.com", "other"], &["/raw"]),
        ];
        let routes: Vec<_> = routes.into_iter().map(std::sync::Arc::new).collect();
        assert_eq!(
            find(&routes),
            vec![Shadowing {
                shadowed: 1,
                by: 0,
                host: "ws.example.com".into(),
                path: "/raw".into()
            }]
        );
    }

    #[test]
    fn priority_distinct_matches_or_narrower_conditions_do_not_shadow() {
        let base = rule("a/r/0", &["h"], &["/raw*"]);
        let cases: Vec<(Route, Route, bool)> = vec![
            // A higher priority on the later rule: it wins.
            (
                base.clone(),
                Route {
                    priority: 1,
                    ..rule("b/r/0", &["h"], &["/raw*"])
                },
                false,
            ),
            (base.clone(), rule("b/r/0", &["h"], &["/raw"]), false),
            (base.clone(), rule("b/r/0", &["other"], &["/raw*"]), false),
            (base.clone(), rule("b/r/0", &[], &["/raw*"]), false),
            // The earlier rule only takes GET: a POST rule behind it lives.
            (
                Route {
                    methods: vec!["GET".into()],
                    ..base.clone()
                },
                Route {
                    methods: vec!["POST".into()],
                    ..rule("b/r/0", &["h"], &["/raw*"])
                },
                false,
            ),
            // ... but a GET-only rule behind an any-method rule is dead.
            (
                base.clone(),
                Route {
                    methods: vec!["GET".into()],
                    ..rule("b/r/0", &["h"], &["/raw*"])
                },
                true,
            ),
            (
                Route {
                    remote_addrs: vec!["10.0.0.0/8".into()],
                    ..base.clone()
                },
                rule("b/r/0", &["h"], &["/raw*"]),
                false,
            ),
            (base.clone(), rule("b/r/0", &["h"], &["/raw*"]), true),
            (
                rule("a/r/0", &[], &["/raw*"]),
                rule("b/r/0", &[], &["/raw*"]),
                true,
            ),
        ];
        for (i, (a, b, shadowed)) in cases.into_iter().enumerate() {
            let pair = [a, b].map(std::sync::Arc::new);
            assert_eq!(!find(&pair).is_empty(), shadowed, "case {i}");
        }
    }
}
