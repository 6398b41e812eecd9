//! The splice over in-memory pipes: frames pass unchanged, the proxy's Close frames land at
//! frame boundaries, and each cause ends the session as documented.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use super::*;

fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

const KEY: [u8; 4] = [1, 2, 3, 4];

/// Reads one whole frame: (opcode, unmasked payload, was masked).
async fn read_frame(r: &mut DuplexStream) -> (u8, Vec<u8>, bool) {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await.expect("a frame header");
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => u64::from(r.read_u16().await.unwrap()),
        127 => r.read_u64().await.unwrap(),
        n => u64::from(n),
    };
    let mut key = [0u8; 4];
    if masked {
        r.read_exact(&mut key).await.unwrap();
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await.unwrap();
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    (head[0] & 0x0f, payload, masked)
}

/// Reads a Close frame: its code and reason, and whether it was masked.
async fn read_close(r: &mut DuplexStream) -> (u16, String, bool) {
    let (opcode, payload, masked) = read_frame(r).await;
    assert_eq!(opcode, 0x8, "a Close frame, got {payload:?}");
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    (
        code,
        String::from_utf8(payload[2..].to_vec()).unwrap(),
        masked,
    )
}

/// Both ends got the proxy's Close with `code` and `reason`: masked towards the upstream only.
async fn closed_both_ways(p: &mut Pipes, code: u16, reason: &str) {
    assert_eq!(
        read_close(&mut p.upstream).await,
        (code, reason.to_string(), true)
    );
    assert_eq!(
        read_close(&mut p.client).await,
        (code, reason.to_string(), false)
    );
}

async fn at_eof(r: &mut DuplexStream) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut rest))
        .await
        .is_ok_and(|read| read.is_ok() && rest.is_empty())
}

struct Pipes {
    /// The client application's end.
    client: DuplexStream,
    /// The upstream application's end.
    upstream: DuplexStream,
    control: Arc<SessionControl>,
    done: JoinHandle<(io::Result<SpliceEnd>, SpliceReport)>,
}

fn limits(idle: Duration, max_message: u64, end_at: Option<(Instant, CloseCause)>) -> Limits {
    Limits {
        idle,
        upstream_send: Duration::from_secs(30),
        client_send: Duration::from_secs(30),
        max_message,
        end_at,
    }
}

fn spliced(limits: Limits, early_from_client: Vec<u8>) -> Pipes {
    let (client, mut client_side) = tokio::io::duplex(1 << 20);
    let (mut upstream_side, upstream) = tokio::io::duplex(1 << 20);
    let control = Arc::new(SessionControl::default());
    let mut splice = Splice::new(limits, control.clone(), SessionHandles::detached());
    let done = tokio::spawn(async move {
        splice.early(&early_from_client, &[]);
        let end = splice.run(&mut client_side, &mut upstream_side).await;
        (end, splice.finish())
    });
    Pipes {
        client,
        upstream,
        control,
        done,
    }
}

#[tokio::test]
async fn frames_and_even_malformed_bytes_pass_unchanged_and_messages_are_counted() {
    let mut p = spliced(limits(Duration::from_secs(60), 0, None), Vec::new());
    let mut sent = frame(false, 0x1, b"hel", Some(KEY));
    sent.extend(frame(true, 0x0, b"lo", Some(KEY)));
    sent.extend(frame(true, 0x9, b"ping", Some(KEY)));
    sent.extend(frame(true, 0x2, &[7; 300], Some(KEY)));
    // Split at odd places: the tracker sees partial headers.
    for part in sent.chunks(3) {
        p.client.write_all(part).await.unwrap();
    }
    let mut got = vec![0u8; sent.len()];
    p.upstream.read_exact(&mut got).await.unwrap();
    assert_eq!(got, sent);
    // Reserved opcodes and an unmasked client frame: not the proxy's business.
    let odd = [0xf3, 0x01, 0xaa, 0x4b, 0x7f];
    p.upstream.write_all(&odd).await.unwrap();
    let mut back = [0u8; 5];
    p.client.read_exact(&mut back).await.unwrap();
    assert_eq!(back, odd);
    drop(p.client);
    assert!(at_eof(&mut p.upstream).await);
    let (end, report) = p.done.await.unwrap();
    assert_eq!(end.unwrap(), SpliceEnd::Closed);
    assert_eq!(
        report.client_to_upstream_messages, 2,
        "two whole data messages"
    );
    assert_eq!(report.client_to_upstream_bytes, sent.len() as u64);
    assert_eq!(report.upstream_to_client_bytes, 5);
}

#[tokio::test]
async fn a_close_request_waits_for_the_frame_in_flight_then_closes_both_ways() {
    let whole = frame(true, 0x2, &[9; 100], Some(KEY));
    // Half the frame already came with the handshake.
    let mut p = spliced(
        limits(Duration::from_secs(60), 0, None),
        whole[..50].to_vec(),
    );
    let mut got = vec![0u8; 50];
    p.upstream.read_exact(&mut got).await.unwrap();
    assert!(p.control.close(CloseCause::Revoked));
    // The client learns at once (its direction is between frames) ...
    assert_eq!(
        read_close(&mut p.client).await,
        (1008, "credential revoked".into(), false)
    );
    // ... the upstream once the frame in flight is whole; what follows it is not sent.
    let mut rest = whole[50..].to_vec();
    rest.extend(frame(true, 0x1, b"after", Some(KEY)));
    p.client.write_all(&rest).await.unwrap();
    let mut tail = vec![0u8; whole.len() - 50];
    p.upstream.read_exact(&mut tail).await.unwrap();
    assert_eq!([got, tail].concat(), whole);
    assert_eq!(
        read_close(&mut p.upstream).await,
        (1008, "credential revoked".into(), true),
        "masked towards the server"
    );
    // Both answer: the session ends without waiting out the grace.
    p.client
        .write_all(&frame(true, 0x8, &1008u16.to_be_bytes(), Some(KEY)))
        .await
        .unwrap();
    p.upstream
        .write_all(&frame(true, 0x8, &1008u16.to_be_bytes(), None))
        .await
        .unwrap();
    let (end, report) = tokio::time::timeout(CLOSE_GRACE / 2, p.done)
        .await
        .expect("ends when both answered")
        .unwrap();
    assert_eq!(end.unwrap(), SpliceEnd::Proxy(CloseCause::Revoked));
    assert_eq!(
        report.client_to_upstream_messages, 1,
        "the one frame that went, counted once"
    );
    assert!(at_eof(&mut p.upstream).await, "nothing after the Close");
    assert!(at_eof(&mut p.client).await);
}

#[tokio::test]
async fn a_message_over_the_limit_is_refused_at_the_header_that_passes_it() {
    let mut p = spliced(limits(Duration::from_secs(60), 1000, None), Vec::new());
    let fits = frame(true, 0x2, &[1; 1000], Some(KEY));
    p.client.write_all(&fits).await.unwrap();
    let mut got = vec![0u8; fits.len()];
    p.upstream.read_exact(&mut got).await.unwrap();
    // Fragments: 600 + 600 passes the limit at the continuation's header.
    let first = frame(false, 0x2, &[2; 600], Some(KEY));
    let mut sent = first.clone();
    sent.extend(frame(true, 0x0, &[3; 600], Some(KEY)));
    p.client.write_all(&sent).await.unwrap();
    let mut got = vec![0u8; first.len()];
    p.upstream.read_exact(&mut got).await.unwrap();
    assert_eq!(got, first, "the fragment within the limit passed");
    closed_both_ways(&mut p, 1009, "message too big").await;
    drop(p.client);
    let (end, _) = p.done.await.unwrap();
    assert_eq!(end.unwrap(), SpliceEnd::Proxy(CloseCause::MessageTooBig));
}

#[tokio::test]
async fn a_limit_also_holds_for_what_the_upstream_sends() {
    let mut p = spliced(limits(Duration::from_secs(60), 10, None), Vec::new());
    p.upstream
        .write_all(&frame(true, 0x1, b"eleven byte", None))
        .await
        .unwrap();
    assert_eq!(
        read_close(&mut p.client).await,
        (1009, "message too big".into(), false),
        "the over-long frame never reaches the client"
    );
    assert_eq!(
        read_close(&mut p.upstream).await,
        (1009, "message too big".into(), true)
    );
}

#[tokio::test(start_paused = true)]
async fn idle_sessions_get_1001_and_end_after_the_grace_without_an_answer() {
    let started = Instant::now();
    let mut p = spliced(limits(Duration::from_secs(5), 0, None), Vec::new());
    assert_eq!(
        read_close(&mut p.client).await,
        (1001, "idle timeout".into(), false)
    );
    assert_eq!(
        read_close(&mut p.upstream).await,
        (1001, "idle timeout".into(), true)
    );
    let (end, _) = p.done.await.unwrap();
    assert_eq!(end.unwrap(), SpliceEnd::Proxy(CloseCause::Idle));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(5) + CLOSE_GRACE && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_end_deadline_closes_with_its_cause_even_while_busy() {
    let started = Instant::now();
    let end_at = Some((started + Duration::from_secs(3), CloseCause::TokenExpired));
    let mut p = spliced(limits(Duration::from_secs(60), 0, end_at), Vec::new());
    // Traffic every half second does not postpone it.
    let tick = frame(true, 0x1, b"tick", Some(KEY));
    for _ in 0..5 {
        p.client.write_all(&tick).await.unwrap();
        let mut got = vec![0u8; tick.len()];
        p.upstream.read_exact(&mut got).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        read_close(&mut p.client).await,
        (1008, "token expired".into(), false)
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(4),
        "at its deadline, not at the idle one: {took:?}"
    );
    assert!(!p.control.close(CloseCause::Revoked), "the cause is taken");
}

#[tokio::test]
async fn after_a_refused_header_the_rest_of_its_frame_is_skipped_and_the_answer_seen() {
    let mut p = spliced(limits(Duration::from_secs(60), 10, None), Vec::new());
    let big = frame(true, 0x2, &[0x88; 5000], Some(KEY));
    for part in big.chunks(1000) {
        p.client.write_all(part).await.unwrap();
    }
    assert_eq!(read_close(&mut p.client).await.0, 1009);
    assert_eq!(read_close(&mut p.upstream).await.0, 1009);
    p.upstream
        .write_all(&frame(true, 0x8, &1009u16.to_be_bytes(), None))
        .await
        .unwrap();
    // The payload (bytes that look like Close headers) is not taken for the client's answer...
    assert!(
        tokio::time::timeout(CLOSE_GRACE / 4, &mut p.done)
            .await
            .is_err(),
        "still waiting for the client's Close"
    );
    // ... its real Close after it is.
    p.client
        .write_all(&frame(true, 0x8, &1009u16.to_be_bytes(), Some(KEY)))
        .await
        .unwrap();
    let (end, report) = tokio::time::timeout(CLOSE_GRACE / 2, p.done)
        .await
        .expect("ends once both answered")
        .unwrap();
    assert_eq!(end.unwrap(), SpliceEnd::Proxy(CloseCause::MessageTooBig));
    assert_eq!(report.client_to_upstream_bytes, 0, "nothing of it went on");
}

#[tokio::test]
async fn a_message_over_the_limit_right_behind_the_handshake_sends_nothing_of_it() {
    let big = frame(true, 0x2, &[0x41; 100_000], Some(KEY));
    let mut p = spliced(
        limits(Duration::from_secs(60), 1000, None),
        big[..600].to_vec(),
    );
    p.client.write_all(&big[600..]).await.unwrap();
    // The first thing the upstream sees is the Close: no payload bytes taken for frames.
    closed_both_ways(&mut p, 1009, "message too big").await;
    drop(p.client);
    let (end, report) = p.done.await.unwrap();
    assert_eq!(end.unwrap(), SpliceEnd::Proxy(CloseCause::MessageTooBig));
    assert_eq!(report.client_to_upstream_bytes, 0);
}

#[tokio::test(start_paused = true)]
async fn a_header_over_the_limit_begun_before_a_close_stops_that_direction() {
    let mut p = spliced(limits(Duration::from_secs(60), 1000, None), Vec::new());
    // One byte of a header, then the close request, then the rest announcing 2^40 bytes.
    p.client.write_all(&[0x82]).await.unwrap();
    let mut first = [0u8; 1];
    p.upstream.read_exact(&mut first).await.unwrap();
    assert!(p.control.close(CloseCause::Revoked));
    assert_eq!(read_close(&mut p.client).await.0, 1008);
    let mut rest = vec![0x80 | 127];
    rest.extend_from_slice(&(1u64 << 40).to_be_bytes());
    rest.extend_from_slice(&KEY);
    rest.extend_from_slice(&[0x41; 4096]);
    p.client.write_all(&rest).await.unwrap();
    let (end, _) = p.done.await.unwrap();
    assert_eq!(end.unwrap(), SpliceEnd::Proxy(CloseCause::Revoked));
    // Nothing after the first byte: no payload, and no Close in the middle of a header.
    assert!(at_eof(&mut p.upstream).await);
}

/// The proxy closes; the upstream answers and hangs up at once (as servers do) while the client
/// is still sending: the client's side stays open, its frames read and dropped, until it has
/// answered the Close. Ending at the upstream's hang-up closed the client's socket with its
/// frames unread, which resets the connection: the client could lose the Close (the chaos soak
/// saw a send fail with a broken pipe on a draining dataplane).
#[tokio::test]
async fn the_client_side_waits_for_the_clients_answer_after_the_upstream_hangs_up() {
    let mut p = spliced(limits(Duration::from_secs(60), 0, None), Vec::new());
    assert!(p.control.close(CloseCause::Draining));
    closed_both_ways(&mut p, 1001, "going away").await;
    p.upstream
        .write_all(&frame(true, 0x8, &1001u16.to_be_bytes(), None))
        .await
        .unwrap();
    drop(p.upstream);
    // The client, mid-burst, sends two more messages before it reads the Close.
    for _ in 0..2 {
        p.client
            .write_all(&frame(true, 0x1, b"late", Some(KEY)))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !p.done.is_finished(),
        "still waiting for the client's answer"
    );
    p.client
        .write_all(&frame(true, 0x8, &1001u16.to_be_bytes(), Some(KEY)))
        .await
        .unwrap();
    let (end, _) = tokio::time::timeout(CLOSE_GRACE / 2, p.done)
        .await
        .expect("ends once the client answered")
        .unwrap();
    assert_eq!(end.unwrap(), SpliceEnd::Proxy(CloseCause::Draining));
    assert!(at_eof(&mut p.client).await);
}
