use proptest::prelude::*;

use super::*;

/// One frame: header (with a mask when `mask`), then `len` payload bytes (their value is
/// irrelevant to the tracker, and a masked payload is not unmasked).
fn encode(fin: bool, opcode: u8, mask: Option<[u8; 4]>, len: u64, out: &mut Vec<u8>) {
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out.extend(std::iter::repeat_n(0xa5u8, len as usize));
}

fn frame_strategy() -> impl Strategy<Value = (bool, u8, Option<[u8; 4]>, u64)> {
    (
        any::<bool>(),
        prop_oneof![
            Just(0u8),
            Just(1),
            Just(2),
            Just(8),
            Just(9),
            Just(10),
            0u8..16
        ],
        proptest::option::of(any::<[u8; 4]>()),
        prop_oneof![
            Just(0u64),
            1u64..126,
            Just(125),
            Just(126),
            Just(127),
            Just(0xffff),
            Just(0x10000),
            126u64..3000,
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The boundaries found equal the true ones, however the stream is split into reads.
    #[test]
    fn boundaries_are_found_for_every_split(
        frames in proptest::collection::vec(frame_strategy(), 0..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut stream = Vec::new();
        let mut truth = vec![0usize];
        let mut messages = 0u64;
        for &(fin, opcode, mask, len) in &frames {
            encode(fin, opcode, mask, len, &mut stream);
            truth.push(stream.len());
            if opcode & 0x8 == 0 && fin {
                messages += 1;
            }
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        points.dedup();
        let mut tracker = FrameTracker::new(0);
        let mut found = Vec::new();
        let mut counted = 0;
        tracker.feed_with(&[], |at, _| found.push(at)).unwrap();
        for pair in points.windows(2) {
            let (from, to) = (pair[0], pair[1]);
            tracker.feed_with(&stream[from..to], |at, _| found.push(from + at)).unwrap();
        }
        found.dedup();
        prop_assert_eq!(&found, &truth);
        prop_assert!(tracker.at_boundary());
        // The summary form agrees: messages counted, the last boundary of each read.
        let mut tracker = FrameTracker::new(0);
        for pair in points.windows(2) {
            let (from, to) = (pair[0], pair[1]);
            let fed = tracker.feed(&stream[from..to]).unwrap();
            counted += fed.messages;
            let last = truth.iter().rev().find(|&&t| t >= from && t <= to).map(|t| t - from);
            prop_assert_eq!(fed.last_boundary, last);
        }
        prop_assert_eq!(counted, messages);
        prop_assert_eq!(tracker.messages(), messages);
    }

    /// Any bytes at all: no panic, and a length near u64::MAX never overflows.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), limit in 0u64..300) {
        let mut tracker = FrameTracker::new(limit);
        for chunk in bytes.chunks(7) {
            if tracker.feed(chunk).is_err() {
                break;
            }
        }
    }
}

#[test]
fn a_message_past_the_limit_is_refused_at_its_header_counting_fragments() {
    let mut stream = Vec::new();
    encode(false, 1, Some([1, 2, 3, 4]), 60, &mut stream); // first fragment
    encode(true, 9, Some([1, 2, 3, 4]), 4, &mut stream); // a ping in between
    let second = stream.len();
    encode(true, 0, Some([1, 2, 3, 4]), 50, &mut stream); // final fragment: 110 > 100
    let mut tracker = FrameTracker::new(100);
    assert_eq!(
        tracker.feed(&stream),
        Err(TooBig {
            boundary: Some(second),
            size: 110
        })
    );
    // Within the limit the same message passes; a header split across reads still counts, and
    // the refusal then has no boundary in this read (part of the header is already out).
    let mut tracker = FrameTracker::new(110);
    assert_eq!(tracker.feed(&stream).unwrap().messages, 1);
    let mut big = Vec::new();
    encode(true, 2, None, 1 << 20, &mut big);
    let mut tracker = FrameTracker::new(1000);
    assert!(tracker.feed(&big[..1]).is_ok());
    assert_eq!(
        tracker.feed(&big[1..10]),
        Err(TooBig {
            boundary: None,
            size: 1 << 20
        })
    );
    // With a limit, a control frame over 125 bytes (or a reserved control opcode announcing a
    // terabyte) is refused, and data frames without FIN cannot restart the count.
    // The header alone: 0xB (reserved control), 127, then 2^40 as 8 bytes.
    let mut huge_control = vec![0x8B, 127];
    huge_control.extend_from_slice(&(1u64 << 40).to_be_bytes());
    assert_eq!(
        FrameTracker::new(1000)
            .feed(&huge_control[..10])
            .map(|_| ()),
        Err(TooBig {
            boundary: Some(0),
            size: 1 << 40
        })
    );
    let mut restarts = Vec::new();
    for _ in 0..3 {
        encode(false, 1, None, 60, &mut restarts);
    }
    let refused = FrameTracker::new(100).feed(&restarts).unwrap_err();
    assert_eq!(refused.size, 120);
    // Without a limit nothing is refused: the proxy is not the WebSocket server.
    assert!(FrameTracker::new(0).feed(&huge_control[..10]).is_ok());
    // An announced length of 2^64 - 1 is tracked without overflow.
    let mut tracker = FrameTracker::new(0);
    let huge = [
        0x82, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3,
    ];
    assert_eq!(tracker.feed(&huge).unwrap().last_boundary, Some(0));
    assert!(!tracker.at_boundary());
}

#[test]
fn close_frames_are_encoded_as_rfc_6455_says() {
    assert_eq!(
        close_frame(1008, "credential revoked", None),
        [&[0x88, 20, 0x03, 0xf0][..], b"credential revoked"].concat()
    );
    // Masked toward a server: the payload XORed with the key.
    let masked = close_frame(1001, "going away", Some([0xff, 0, 0xff, 0]));
    assert_eq!(&masked[..6], &[0x88, 0x80 | 12, 0xff, 0, 0xff, 0]);
    let unmasked: Vec<u8> = masked[6..]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ [0xff, 0, 0xff, 0][i % 4])
        .collect();
    assert_eq!(unmasked, [&[0x03, 0xe9][..], b"going away"].concat());
    // A reason is cut to 123 bytes at a character boundary (control frames hold 125).
    let long = "é".repeat(100);
    let frame = close_frame(1000, &long, None);
    assert_eq!(frame[1], 2 + 122);
    assert!(std::str::from_utf8(&frame[4..]).is_ok());
    // The tracker sees it as one frame.
    let mut tracker = FrameTracker::new(0);
    let fed = tracker.feed(&frame).unwrap();
    assert_eq!((fed.last_boundary, fed.messages), (Some(frame.len()), 0));
}
