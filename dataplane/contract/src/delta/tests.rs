use proptest::prelude::*;

use super::*;

fn route(id: &str, path: &str) -> Arc<Route> {
    Arc::new(Route {
        id: id.into(),
        paths: vec![path.into()],
        ..Route::default()
    })
}

fn consumer(name: &str, key: &str) -> Consumer {
    serde_json::from_value(serde_json::json!({
        "username": name,
        "credential": {"type": "key-auth", "key_sha256": key}
    }))
    .expect("a consumer")
}

fn table(generation: u64, routes: Vec<Arc<Route>>, consumers: Vec<Consumer>) -> RouteTable {
    RouteTable {
        generation,
        routes,
        consumers,
        ..RouteTable::default()
    }
    .with_hash()
}

fn round_trip(base: &RouteTable, next: &RouteTable) -> Option<TableDelta> {
    let delta = TableDelta::between(base, next)?;
    // Through the wire form, as the dataplane gets it.
    let text = serde_json::to_string(&delta).unwrap();
    let decoded: TableDelta = serde_json::from_str(&text).unwrap();
    assert_eq!(decoded, delta);
    assert_eq!(decoded.clone().apply(base).as_ref(), Ok(next));
    Some(delta)
}

#[test]
fn a_key_rotation_sends_one_consumer_and_no_route() {
    let routes: Vec<Arc<Route>> = (0..1000)
        .map(|i| route(&format!("demo/r/{i}"), &format!("/r{i}")))
        .collect();
    let base = table(
        1,
        routes.clone(),
        vec![consumer("demo_jack", "old"), consumer("demo_jill", "k")],
    );
    let next = table(
        2,
        routes,
        vec![consumer("demo_jack", "new"), consumer("demo_jill", "k")],
    );
    let delta = round_trip(&base, &next).unwrap();
    assert!(delta.routes.is_empty());
    assert_eq!(
        delta.consumers,
        vec![Splice {
            at: 0,
            remove: 1,
            insert: vec![consumer("demo_jack", "new")]
        }]
    );
    assert_eq!((&delta.tls, &delta.global), (&None, &None));
    let text = serde_json::to_string(&delta).unwrap();
    assert!(text.len() < 400, "{} bytes: {text}", text.len());
}

#[test]
fn scattered_changes_are_separate_splices() {
    let ids = ["a", "b", "c", "d", "e", "f"];
    let base = table(1, ids.iter().map(|i| route(i, "/x")).collect(), vec![]);
    // b changed, d removed, g inserted after e, f unchanged.
    let next = table(
        2,
        vec![
            route("a", "/x"),
            route("b", "/changed"),
            route("c", "/x"),
            route("e", "/x"),
            route("g", "/new"),
            route("f", "/x"),
        ],
        vec![],
    );
    let delta = round_trip(&base, &next).unwrap();
    assert_eq!(
        delta.routes,
        vec![
            Splice {
                at: 1,
                remove: 1,
                insert: vec![route("b", "/changed")]
            },
            Splice {
                at: 3,
                remove: 1,
                insert: vec![]
            },
            Splice {
                at: 5,
                remove: 0,
                insert: vec![route("g", "/new")]
            },
        ]
    );
}

#[test]
fn moved_items_give_no_delta() {
    let base = table(1, vec![route("a", "/a"), route("b", "/b")], vec![]);
    let next = table(2, vec![route("b", "/b"), route("a", "/a")], vec![]);
    assert_eq!(TableDelta::between(&base, &next), None);
}

#[test]
fn a_delta_for_another_table_is_refused() {
    let base = table(1, vec![route("a", "/a")], vec![]);
    let next = table(2, vec![route("a", "/b")], vec![]);
    let delta = TableDelta::between(&base, &next).unwrap();
    let mut other = base.clone();
    other.generation = 7;
    assert!(matches!(
        delta.clone().apply(&other),
        Err(DeltaError::OtherBase { wanted: 1, .. })
    ));
    let mut other = base.clone();
    other.hash = "0".repeat(64);
    assert!(matches!(
        delta.apply(&other),
        Err(DeltaError::OtherBase { .. })
    ));
}

#[test]
fn hostile_positions_are_errors_not_panics() {
    let base = table(1, vec![route("a", "/a"), route("b", "/b")], vec![]);
    let id = TableId {
        generation: 1,
        hash: base.hash.clone(),
    };
    let bad: &[&[(u64, u64)]] = &[
        &[(3, 0)],            // past the end
        &[(0, 3)],            // removes past the end
        &[(1, u64::MAX)],     // overflowing end
        &[(u64::MAX, 1)],     // overflowing start
        &[(1, 0), (0, 1)],    // descending
        &[(0, 2), (1, 0)],    // overlapping
        &[(u64::MAX - 1, 2)], // wraps to a small end
    ];
    for splices in bad {
        let delta = TableDelta {
            base: id.clone(),
            generation: 2,
            hash: "h".into(),
            routes: splices
                .iter()
                .map(|&(at, remove)| Splice {
                    at,
                    remove,
                    insert: vec![route("z", "/z")],
                })
                .collect(),
            consumers: vec![],
            tls: None,
            global: None,
        };
        assert!(
            matches!(delta.apply(&base), Err(DeltaError::Splice { .. })),
            "{splices:?}"
        );
    }
    // Without a hash the result could not be checked.
    let mut unchecked = TableDelta::between(&base, &base).unwrap();
    unchecked.hash.clear();
    assert_eq!(unchecked.apply(&base), Err(DeltaError::NoHash));
    // The wire form rejects what it does not know.
    for text in [
        r#"{"base":{"generation":1,"hash":"h"},"generation":2,"hash":"h","routes":[{"at":-1}]}"#,
        r#"{"base":{"generation":1,"hash":"h"},"generation":2,"hash":"h","extra":1}"#,
        r#"{"base":{"generation":1,"hash":"h"},"generation":2,"hash":"h","routes":[{"at":0,"move":1}]}"#,
    ] {
        assert!(serde_json::from_str::<TableDelta>(text).is_err(), "{text}");
    }
}

fn routes_from(spec: &[(u8, u8)]) -> Vec<Arc<Route>> {
    // Keys unique within a list, as in a table: the first of each id wins.
    let mut seen = HashSet::new();
    spec.iter()
        .filter(|(id, _)| seen.insert(*id))
        .map(|(id, path)| route(&format!("r{id}"), &format!("/{path}")))
        .collect()
}

proptest! {
    /// Any two tables: the delta, when there is one, rebuilds the second from the first.
    #[test]
    fn a_delta_rebuilds_the_next_table(
        old in proptest::collection::vec((0u8..12, 0u8..3), 0..12),
        new in proptest::collection::vec((0u8..12, 0u8..3), 0..12),
        keys in proptest::collection::vec((0u8..4, 0u8..3), 0..4),
    ) {
        let consumers = |k: &[(u8, u8)]| -> Vec<Consumer> {
            let mut seen = HashSet::new();
            k.iter().filter(|(n, _)| seen.insert(*n)).map(|(n, key)| consumer(&format!("c{n}"), &format!("k{key}"))).collect()
        };
        let base = table(1, routes_from(&old), consumers(&keys));
        let next = table(2, routes_from(&new), consumers(&keys[keys.len() / 2..]));
        if let Some(delta) = round_trip(&base, &next) {
            // Nothing is sent for what did not change.
            let sent: usize = delta.routes.iter().map(|s| s.insert.len()).sum();
            let changed = next.routes.iter().filter(|r| !base.routes.contains(r)).count();
            prop_assert_eq!(sent, changed);
        }
    }

    /// Tables whose common keys keep their order always have a delta.
    #[test]
    fn edits_without_moves_always_have_a_delta(
        old in proptest::collection::vec((0u8..40, 0u8..3), 0..30),
        keep in proptest::collection::vec(any::<bool>(), 30),
        edits in proptest::collection::vec((any::<bool>(), 40u8..80, 0u8..3), 0..30),
    ) {
        let base = table(1, routes_from(&old), vec![]);
        let mut next = Vec::new();
        for (i, r) in base.routes.iter().enumerate() {
            if keep[i % keep.len()] {
                let mut r = r.clone();
                if let Some((true, _, p)) = edits.get(i) {
                    Arc::make_mut(&mut r).paths = vec![format!("/edited{p}")];
                }
                next.push(r);
            }
            if let Some((_, id, p)) = edits.get(i) {
                next.push(route(&format!("n{id}"), &format!("/{p}")));
            }
        }
        let mut seen = HashSet::new();
        next.retain(|r| seen.insert(r.id.clone()));
        let next = table(2, next, vec![]);
        prop_assert!(round_trip(&base, &next).is_some());
    }
}
