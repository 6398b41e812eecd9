use std::collections::HashMap;

use super::*;
use crate::fixtures::TestRequest;

struct N {
    name: String,
    weight: u32,
    state: Arc<NodeState>,
}

impl Weighted for N {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn state(&self) -> &NodeState {
        &self.state
    }
    fn ring_name(&self) -> String {
        self.name.clone()
    }
}

fn nodes(registry: &NodeRegistry, spec: &[(&str, u32)]) -> Vec<N> {
    spec.iter()
        .map(|(name, weight)| N {
            name: name.to_string(),
            weight: *weight,
            state: registry.state(&NodeKey {
                backend: "demo/echo:ws".into(),
                host: (*name).into(),
                port: 80,
            }),
        })
        .collect()
}

fn cumulative(nodes: &[N]) -> Vec<u64> {
    let mut sum = 0;
    nodes
        .iter()
        .map(|n| {
            sum += u64::from(n.weight);
            sum
        })
        .collect()
}

fn first(b: &CompiledBalancer, ns: &[N], turn: u64, key: Option<u64>) -> usize {
    order(b, ns, &cumulative(ns), turn, key, usize::MAX)[0]
}

#[test]
fn round_robin_follows_node_weights_and_skips_zero() {
    let r = NodeRegistry::default();
    let ns = nodes(&r, &[("a", 2), ("b", 1), ("off", 0)]);
    let b = CompiledBalancer::compile(&Balancer::Roundrobin, &ns).unwrap();
    let mut counts = [0; 3];
    for turn in 0..300 {
        counts[first(&b, &ns, turn, None)] += 1;
    }
    assert_eq!(counts, [200, 100, 0]);
    // The order after the first: the other eligible nodes once, never the weightless one.
    assert_eq!(order(&b, &ns, &cumulative(&ns), 0, None, 10), [0, 1]);
    assert_eq!(order(&b, &ns, &cumulative(&ns), 0, None, 1), [0]);
}

#[test]
fn chash_keeps_keys_on_their_node_and_moves_only_the_removed_nodes_keys() {
    let r = NodeRegistry::default();
    let names: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:8080")).collect();
    let spec: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let balancer = Balancer::Chash {
        hash_on: HashOn::Header,
        key: "x-user".into(),
    };
    let ten = nodes(&r, &spec);
    let b10 = CompiledBalancer::compile(&balancer, &ten).unwrap();
    let nine = nodes(&r, &spec[1..]);
    let b9 = CompiledBalancer::compile(&balancer, &nine).unwrap();
    let keys = 10_000u64;
    let mut moved = 0;
    let mut per_node = HashMap::new();
    for k in 0..keys {
        let key = stable_hash(format!("user-{k}").as_bytes());
        let before = &ten[first(&b10, &ten, k, Some(key))].name;
        let after = &nine[first(&b9, &nine, k, Some(key))].name;
        *per_node.entry(before.clone()).or_insert(0u64) += 1;
        // The same key, another turn: the same node.
        assert_eq!(&ten[first(&b10, &ten, k + 7, Some(key))].name, before);
        if before != after {
            moved += 1;
            assert_eq!(before, &names[0], "only the removed node's keys move");
        }
    }
    // One node of ten removed: its tenth of the keys moves, nothing else.
    let share = moved as f64 / keys as f64;
    assert!((0.06..=0.14).contains(&share), "moved {share}");
    assert_eq!(moved, per_node[&names[0]]);
    // Each node holds a fair share (160 points per node).
    for (node, n) in &per_node {
        assert!((600..=1400).contains(n), "{node}: {n} of {keys}");
    }
}

#[test]
fn chash_keys_come_from_the_request_as_apisix_reads_them() {
    let request = TestRequest::get("/p/a?user=u1&x=2")
        .version(http::Version::HTTP_11)
        .header("host", "ws.example.com")
        .header("x-user", "alice")
        .header("cookie", "sid=s1; other=o")
        .peer("10.1.2.3");
    let view = request.view();
    let hash = |on: HashOn, key: &str, consumer: Option<&str>| {
        KeySource::compile(on, key).unwrap().hash(&view, consumer)
    };
    let h = |s: &str| stable_hash(s.as_bytes());
    assert_eq!(hash(HashOn::Header, "X-User", None), h("alice"));
    assert_eq!(hash(HashOn::Cookie, "sid", None), h("s1"));
    assert_eq!(hash(HashOn::Vars, "arg_user", None), h("u1"));
    assert_eq!(hash(HashOn::Vars, "http_x_user", None), h("alice"));
    assert_eq!(hash(HashOn::Vars, "uri", None), h("/p/a"));
    assert_eq!(
        hash(HashOn::Vars, "request_uri", None),
        h("/p/a?user=u1&x=2")
    );
    assert_eq!(hash(HashOn::Vars, "host", None), h("ws.example.com"));
    assert_eq!(
        hash(HashOn::Consumer, "", Some("demo_jack")),
        h("demo_jack")
    );
    assert_eq!(
        hash(HashOn::VarsCombinations, "$http_x_user$arg_x", None),
        h("alice2")
    );
    assert_eq!(
        hash(HashOn::VarsCombinations, "$remote_addr:$http_x_user", None),
        h("10.1.2.3:alice")
    );
    // Absent key: the client's address, as APISIX falls back.
    assert_eq!(hash(HashOn::Header, "x-missing", None), h("10.1.2.3"));
    assert_eq!(hash(HashOn::Consumer, "", None), h("10.1.2.3"));
    for (on, key, problem) in [
        (HashOn::Header, "", "key: required"),
        (
            HashOn::Vars,
            "server_port",
            "variable \"server_port\" is not supported",
        ),
        (HashOn::Header, "bad header", "not a valid header name"),
        (HashOn::VarsCombinations, "plain", "names no variable"),
        (HashOn::VarsCombinations, "$$", "without a variable name"),
    ] {
        let e = KeySource::compile(on, key).unwrap_err();
        assert!(e.contains(problem), "{on:?} {key:?}: {e}");
    }
}

#[test]
fn least_conn_spreads_open_connections_and_keeps_counts_across_swaps() {
    let r = NodeRegistry::default();
    let spec = [("a", 1), ("b", 1), ("c", 1)];
    let ns = nodes(&r, &spec);
    let b = CompiledBalancer::compile(&Balancer::LeastConn, &ns).unwrap();
    let mut held = Vec::new();
    for turn in 0..30 {
        let i = first(&b, &ns, turn, None);
        held.push(ns[i].state.track());
    }
    let open: Vec<u32> = ns.iter().map(|n| n.state.open()).collect();
    assert_eq!(open, [10, 10, 10]);
    // A new table with the same nodes (and one more): the counts carry over, so the new node
    // takes the next ten, not one in four.
    let swapped = nodes(&r, &[("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
    assert!(Arc::ptr_eq(&swapped[0].state, &ns[0].state));
    drop(ns);
    let b = CompiledBalancer::compile(&Balancer::LeastConn, &swapped).unwrap();
    for turn in 0..10 {
        let i = first(&b, &swapped, turn, None);
        assert_eq!(swapped[i].name, "d", "turn {turn}");
        held.push(swapped[i].state.track());
    }
    // Connections that end are counted off (the last ten went to d).
    held.truncate(30);
    let open: Vec<u32> = swapped.iter().map(|n| n.state.open()).collect();
    assert_eq!(open, [10, 10, 10, 0]);
    held.clear();
    assert!(swapped.iter().all(|n| n.state.open() == 0));
    // Weights: twice the weight, twice the connections.
    let r = NodeRegistry::default();
    let ns = nodes(&r, &[("big", 2), ("small", 1)]);
    let b = CompiledBalancer::compile(&Balancer::LeastConn, &ns).unwrap();
    let mut held = Vec::new();
    for turn in 0..30 {
        held.push(ns[first(&b, &ns, turn, None)].state.track());
    }
    assert_eq!((ns[0].state.open(), ns[1].state.open()), (20, 10));
}

#[test]
fn a_node_that_leaves_every_table_starts_afresh() {
    let r = NodeRegistry::default();
    let key = NodeKey {
        backend: "b".into(),
        host: "h".into(),
        port: 1,
    };
    let state = r.state(&key);
    let _guard = state.track();
    assert_eq!(r.state(&key).open(), 1);
    drop(_guard);
    drop(state);
    assert_eq!(r.state(&key).open(), 0);
}

#[test]
fn ewma_prefers_the_node_that_connects_faster() {
    let r = NodeRegistry::default();
    let ns = nodes(&r, &[("slow", 1), ("fast", 1)]);
    ns[0].state.record_latency(50_000);
    ns[1].state.record_latency(500);
    let b = CompiledBalancer::compile(&Balancer::Ewma, &ns).unwrap();
    let fast = (0..200).filter(|&t| first(&b, &ns, t, None) == 1).count();
    // Two random candidates: the slow one wins only when it is drawn twice (~1/4).
    assert!(fast >= 120, "fast chosen {fast} of 200");
    // The average moves toward new samples.
    let s = NodeState::default();
    s.record_latency_at(1000, 0);
    assert_eq!(s.ewma_us(), 1000.0);
    // One half-life later, the new sample weighs half.
    s.record_latency_at(3000, 10_000_000);
    assert!((s.ewma_us() - 2000.0).abs() < 1e-6, "{}", s.ewma_us());
    // A burst at the same instant barely moves it.
    s.record_latency_at(100_000, 10_000_000);
    assert!((s.ewma_us() - 2000.0).abs() < 1e-6, "{}", s.ewma_us());
}

#[test]
fn health_follows_consecutive_outcomes_and_unhealthy_nodes_take_no_connections() {
    let t = Thresholds {
        successes: 2,
        http_failures: 3,
        tcp_failures: 2,
        timeouts: 2,
    };
    let s = NodeState::default();
    assert_eq!(s.report(Outcome::TcpFailure, &t), None);
    // A success in between starts the count again.
    assert_eq!(s.report(Outcome::Success, &t), None);
    assert_eq!(s.report(Outcome::TcpFailure, &t), None);
    assert_eq!(s.report(Outcome::TcpFailure, &t), Some(false));
    assert!(!s.is_healthy());
    assert_eq!(s.report(Outcome::Success, &t), None);
    assert_eq!(s.report(Outcome::HttpFailure, &t), None);
    assert_eq!(s.report(Outcome::Success, &t), None);
    assert_eq!(s.report(Outcome::Success, &t), Some(true));
    // Kinds count separately; a threshold of 0 never trips.
    let never = Thresholds {
        http_failures: 0,
        ..t
    };
    for _ in 0..10 {
        assert_eq!(s.report(Outcome::HttpFailure, &never), None);
    }
    assert_eq!(s.report(Outcome::Timeout, &t), None);
    assert_eq!(s.report(Outcome::Timeout, &t), Some(false));

    let r = NodeRegistry::default();
    let ns = nodes(&r, &[("a", 1), ("b", 1), ("c", 1)]);
    for _ in 0..2 {
        ns[1].state.report(Outcome::TcpFailure, &t);
    }
    for balancer in [Balancer::Roundrobin, Balancer::LeastConn, Balancer::Ewma] {
        let b = CompiledBalancer::compile(&balancer, &ns).unwrap();
        for turn in 0..30 {
            let o = order(&b, &ns, &cumulative(&ns), turn, None, 10);
            assert!(!o.contains(&1), "{balancer:?} turn {turn}: {o:?}");
            assert_eq!(o.len(), 2);
        }
    }
    let chash = Balancer::Chash {
        hash_on: HashOn::Header,
        key: "x".into(),
    };
    let b = CompiledBalancer::compile(&chash, &ns).unwrap();
    for k in 0..100u64 {
        assert_ne!(first(&b, &ns, 0, Some(stable_hash(&k.to_le_bytes()))), 1);
    }
    // Every node unhealthy: all are tried rather than none.
    for n in &ns {
        for _ in 0..2 {
            n.state.report(Outcome::TcpFailure, &t);
        }
    }
    let b = CompiledBalancer::compile(&Balancer::Roundrobin, &ns).unwrap();
    assert_eq!(order(&b, &ns, &cumulative(&ns), 0, None, 10).len(), 3);
}
