//! WebSocket frame boundaries in a spliced byte stream (RFC 6455 section 5.2), found from the
//! frame headers alone: payloads are never unmasked, copied or buffered, and at most one partial
//! header (14 bytes) is kept between reads. The splice uses it to know where a frame ends, so
//! the proxy can put a Close frame of its own there, and to see a message announced larger than
//! a limit before its payload arrives.
//!
//! The proxy is not the WebSocket server: framing the endpoints would refuse (reserved opcodes
//! or bits, a client frame without a mask, an over-long length) is tracked as written and passed
//! on; only a configured limit refuses anything.

/// The longest frame header: 2 bytes, an 8-byte extended length and a 4-byte masking key.
const MAX_HEADER: usize = 14;

/// Where one direction of a WebSocket stands.
#[derive(Clone, Debug, Default)]
pub struct FrameTracker {
    /// The partial header read so far (`have` bytes of it).
    header: [u8; MAX_HEADER],
    have: u8,
    /// Payload bytes of the current frame still to pass; 0 with `have == 0`: at a boundary.
    remaining: u64,
    /// Payload bytes of the data message in progress (its fragments so far).
    message: u64,
    /// A data message is in progress (a first fragment without FIN was seen).
    fragmented: bool,
    /// Whole data messages seen (a frame with FIN of opcode 1 or 2, or a final continuation).
    messages: u64,
    /// The largest data message allowed, in payload bytes; 0: no limit.
    max_message: u64,
}

/// A frame header, as the tracker read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub len: u64,
}

impl FrameHead {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Past the configured message size: the frame header that announced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooBig {
    /// Offset in the bytes fed where the refused frame's header began (a boundary: what came
    /// before it may pass); `None` when it began in an earlier read (part of it is already out).
    pub boundary: Option<usize>,
    /// The message's size with this frame, in payload bytes (saturating).
    pub size: u64,
}

/// What one `feed` saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// The last offset `i` in `0..=len` with the stream at a frame boundary after `bytes[..i]`
    /// (`Some(0)`: it was at one before these bytes); `None`: inside one frame throughout.
    pub last_boundary: Option<usize>,
    /// Data messages completed by these bytes.
    pub messages: u64,
}

impl FrameTracker {
    /// A tracker refusing data messages of more than `max_message` payload bytes (0: none).
    pub fn new(max_message: u64) -> FrameTracker {
        FrameTracker {
            max_message,
            ..FrameTracker::default()
        }
    }

    /// Whether the stream is between two frames.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Whether part of a frame header has been read (and the rest has not).
    pub fn in_header(&self) -> bool {
        self.have > 0
    }

    /// Data messages seen so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Follows `bytes` (the next bytes of this direction, in order).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Fed, TooBig> {
        let mut last = None;
        let mut messages = 0;
        self.feed_with(bytes, |at, head| {
            last = Some(at);
            if let Some(head) = head
                && head.fin
                && !head.is_control()
            {
                messages += 1;
            }
        })?;
        Ok(Fed {
            last_boundary: last,
            messages,
        })
    }

    /// As [`Self::feed`], calling `boundary(offset, head)` at every frame boundary in order:
    /// `head` is the frame that ends there (`None` for the boundary at offset 0).
    pub fn feed_with(
        &mut self,
        bytes: &[u8],
        mut boundary: impl FnMut(usize, Option<FrameHead>),
    ) -> Result<(), TooBig> {
        let mut at = 0usize;
        // Where the header being read began in these bytes (`None`: in an earlier read).
        let mut began = None;
        if self.at_boundary() {
            boundary(0, None);
        }
        while at < bytes.len() {
            if self.remaining > 0 {
                // Inside a payload: skip what of it these bytes hold.
                let left = bytes.len() - at;
                let skip = usize::try_from(self.remaining).map_or(left, |r| r.min(left));
                at += skip;
                self.remaining -= skip as u64;
                if self.remaining == 0 {
                    // `header` still holds the frame's header: the next one is read only now.
                    boundary(at, Some(self.parse()));
                }
                continue;
            }
            if self.have == 0 {
                began = Some(at);
            }
            // The header, up to the length its bytes so far give (2, then the full length
            // once the second byte is in).
            let have = usize::from(self.have);
            let take = (self.header_len() - have).min(bytes.len() - at);
            self.header[have..have + take].copy_from_slice(&bytes[at..at + take]);
            self.have += take as u8;
            at += take;
            if usize::from(self.have) < self.header_len() {
                continue;
            }
            let head = self.parse();
            self.account(&head).map_err(|size| TooBig {
                boundary: began,
                size,
            })?;
            self.have = 0;
            self.remaining = head.len;
            if head.len == 0 {
                boundary(at, Some(head));
            }
        }
        Ok(())
    }

    /// The header's whole length, from what of it is there (2 until the second byte is).
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    fn parse(&self) -> FrameHead {
        let h = &self.header;
        let len = match h[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        };
        FrameHead {
            fin: h[0] & 0x80 != 0,
            opcode: h[0] & 0x0f,
            masked: h[1] & 0x80 != 0,
            len,
        }
    }

    /// Counts a data frame into its message; the message's size when it passes the limit.
    fn account(&mut self, head: &FrameHead) -> Result<(), u64> {
        if head.is_control() {
            // A control frame holds at most 125 bytes (RFC 6455 section 5.5); with a limit on,
            // a longer one (or a reserved control opcode announcing gigabytes) is refused.
            if self.max_message > 0 && head.len > 125 {
                return Err(head.len);
            }
            return Ok(());
        }
        // Any data frame while a message is in progress adds to it: a continuation as RFC 6455
        // says, and a new message started inside one (a violation) counts with it, so a run of
        // frames without FIN cannot restart the count.
        let size = if self.fragmented {
            self.message.saturating_add(head.len)
        } else {
            head.len
        };
        if self.max_message > 0 && size > self.max_message {
            return Err(size);
        }
        self.message = size;
        self.fragmented = !head.fin;
        if head.fin {
            self.messages += 1;
            self.message = 0;
        }
        Ok(())
    }
}

/// A Close frame (RFC 6455 section 5.5.1) with `code` and `reason` (cut to the 123 bytes a
/// control frame has room for, at a character boundary), masked with `mask` when it goes to a
/// server (the proxy is then the client).
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.push(0x88); // FIN, opcode 8
    match mask {
        None => {
            frame.push(payload.len() as u8);
            frame.extend_from_slice(&payload);
        }
        Some(key) => {
            frame.push(0x80 | payload.len() as u8);
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
    }
    frame
}

#[cfg(test)]
mod tests;
