//! The WebSocket frame tracker (`portcullis_contract::frames`), fed the input in fuzzer-chosen
//! pieces, with a message limit the fuzzer picks.
//!
//! Property: the frame boundaries found (offset and header), the messages counted, a refusal
//! (where and how big) and the state at the end do not depend on the split.

use portcullis_contract::frames::{FrameHead, FrameTracker};

use crate::input::{Input, pieces};

#[derive(Debug, PartialEq, Eq)]
struct Seen {
    /// Every frame end: the offset in the whole stream and the frame's header.
    ends: Vec<(usize, FrameHead)>,
    /// Data messages counted over the feeds that succeeded.
    fed_messages: u64,
    /// A refusal: the message size and, when the refused header began in the same feed, its
    /// offset in the whole stream.
    too_big: Option<(u64, Option<usize>)>,
    /// At the end (or at the refusal): messages, at a boundary, inside a header.
    state: (u64, bool, bool),
}

pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let max_message = match input.byte() % 4 {
        0 => 0,
        1 => u64::from(input.byte()),
        2 => u64::from(input.u16()),
        _ => u64::MAX,
    };
    let cuts = input.cuts(8);
    let bytes = input.rest();
    let whole = track(&[bytes], max_message, false);
    let split = track(&pieces(bytes, &cuts), max_message, false);
    let with_feed = track(&pieces(bytes, &cuts), max_message, true);
    // A refusal's offset is only known when its header began in the same read, and the feed it
    // ends reports nothing else.
    let comparable = |s: &Seen| Seen {
        ends: s.ends.clone(),
        fed_messages: if s.too_big.is_some() {
            0
        } else {
            s.fed_messages
        },
        too_big: s.too_big.map(|(size, _)| (size, None)),
        state: s.state,
    };
    assert_eq!(
        comparable(&split),
        comparable(&whole),
        "frames found depend on the split"
    );
    if let (Some((_, Some(at))), Some((_, whole_at))) = (split.too_big, whole.too_big) {
        assert_eq!(Some(at), whole_at, "a refusal is placed elsewhere");
    }
    assert_eq!(
        (with_feed.fed_messages, with_feed.too_big, with_feed.state),
        (split.fed_messages, split.too_big, split.state),
        "feed and feed_with disagree"
    );
    if let Some((at, _)) = whole.ends.last() {
        assert!(*at <= bytes.len(), "a boundary past the bytes fed");
    }
}

fn track(pieces: &[&[u8]], max_message: u64, plain_feed: bool) -> Seen {
    let mut tracker = FrameTracker::new(max_message);
    let mut seen = Seen {
        ends: Vec::new(),
        fed_messages: 0,
        too_big: None,
        state: (0, true, false),
    };
    let mut base = 0usize;
    for piece in pieces {
        let result = if plain_feed {
            tracker.feed(piece).map(|fed| {
                seen.fed_messages += fed.messages;
                if let Some(last) = fed.last_boundary {
                    assert!(last <= piece.len(), "last boundary past the piece");
                }
            })
        } else {
            let mut messages = 0;
            let r = tracker.feed_with(piece, |at, head| {
                assert!(at <= piece.len(), "boundary past the piece");
                if let Some(head) = head {
                    if head.fin && !head.is_control() {
                        messages += 1;
                    }
                    seen.ends.push((base + at, head));
                }
            });
            if r.is_ok() {
                seen.fed_messages += messages;
            }
            r
        };
        if let Err(refused) = result {
            seen.too_big = Some((refused.size, refused.boundary.map(|b| base + b)));
            break;
        }
        base += piece.len();
    }
    seen.state = (
        tracker.messages(),
        tracker.at_boundary(),
        tracker.in_header(),
    );
    if seen.too_big.is_none() {
        // The tracker counts a message at its final frame's header, a feed at that frame's end.
        let counted = tracker.messages();
        if tracker.at_boundary() {
            assert_eq!(
                seen.fed_messages, counted,
                "messages per feed do not add up"
            );
        } else {
            assert!(
                counted
                    .checked_sub(seen.fed_messages)
                    .is_some_and(|ahead| ahead <= 1),
                "messages per feed do not add up: {} fed, {counted} counted",
                seen.fed_messages
            );
        }
    }
    seen
}
