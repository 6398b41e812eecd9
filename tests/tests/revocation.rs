//! Established WebSockets of a revoked credential are closed when the dataplane applies the
//! table that revokes it (docs/behaviour.md §11); others are untouched; the flag turns it off.

use std::time::Duration;

use portcullis_tests::*;

fn table(echo: std::net::SocketAddr, generation: u64, jack_key: Option<&str>) -> RouteTable {
    let mut t = seed_table(echo);
    t.generation = generation;
    t.consumers = vec![key_consumer("demo_kim", "kims-key")];
    if let Some(k) = jack_key {
        t.consumers.push(key_consumer("demo_jack", k));
    }
    t
}

async fn open(gw: &Gateway, key: &str) -> Ws {
    open_ws(gw, key).await
}

fn reload(gw: &Gateway, table: &RouteTable) {
    tokio::task::block_in_place(|| gw.reload(table));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_or_deleted_credentials_close_their_websockets_only() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(&table(echo.addr, 1, Some("this_is_the_key")), &[]);
    let mut jack = open(&gw, "this_is_the_key").await;
    let mut kim = open(&gw, "kims-key").await;
    assert!(echoes(&mut jack, "a").await && echoes(&mut kim, "b").await);

    // Jack's key rotates: his session closes, Kim's goes on.
    reload(&gw, &table(echo.addr, 2, Some("rotated")));
    assert!(
        closed_within(&mut jack, Duration::from_secs(5)).await,
        "jack's session must close"
    );
    assert!(echoes(&mut kim, "still here").await);
    let gw_ref = &gw;
    tokio::task::block_in_place(|| {
        wait_for(
            "the revocation to be counted",
            Duration::from_secs(5),
            || {
                let m = gw_ref.metrics();
                let revoked = [("reason", "revoked"), ("code", "1008")];
                (metric_sum(&m, "portcullis_websockets_closed_total", &revoked) == Some(1.0)
                    && metric_sum(&m, "portcullis_websockets_active", &[]) == Some(1.0))
                .then_some(())
            },
        )
    });

    // A table that changes nothing about Jack's new key leaves his new session alone...
    let mut jack = open(&gw, "rotated").await;
    let mut same = table(echo.addr, 3, Some("rotated"));
    std::sync::Arc::make_mut(&mut same.routes[0]).priority = 5;
    reload(&gw, &same);
    assert!(echoes(&mut jack, "unchanged").await);
    // ...and deleting him closes it.
    reload(&gw, &table(echo.addr, 4, None));
    assert!(
        closed_within(&mut jack, Duration::from_secs(5)).await,
        "deleted consumer's session must close"
    );
    assert!(echoes(&mut kim, "and still").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_revocation_off_sessions_run_on_as_in_apisix() {
    let echo = Echo::start(&[]);
    let gw = Gateway::start(
        &table(echo.addr, 1, Some("this_is_the_key")),
        &["--close-revoked-websockets", "false"],
    );
    let mut jack = open(&gw, "this_is_the_key").await;
    reload(&gw, &table(echo.addr, 2, None));
    assert!(!closed_within(&mut jack, Duration::from_millis(500)).await);
    assert!(echoes(&mut jack, "APISIX keeps me").await);
    // New handshakes see the revocation all the same.
    let r = raw_request(
        gw.http,
        &handshake("ws.example.com", "/raw", &[("apikey", "this_is_the_key")]),
    );
    assert_eq!(r.status(), 401);
}
