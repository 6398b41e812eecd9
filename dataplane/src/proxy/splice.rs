//! Copies bytes both ways between an upgraded client and its upstream, following the WebSocket
//! frame headers so that the proxy can end a session with a Close frame of its own.
//!
//! An idle WebSocket must cost a few hundred bytes, so nothing is buffered while no data is in
//! flight: each read lands in a stack buffer that lives only during one `poll`, and is written
//! straight on. Only bytes the other side cannot take yet are moved to the heap, and that
//! buffer is freed as soon as they are written. Frames are followed from their headers alone
//! (`FrameTracker`: no unmasking, no copy, at most a partial header kept).
//!
//! Ending a session (docs/websocket-sessions.md): each direction keeps forwarding up to its next
//! frame boundary, then sends the Close frame (unmasked to the client, masked to the upstream)
//! and forwards nothing more; the session ends once both ends answered or closed, or after
//! [`CLOSE_GRACE`].

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use portcullis_contract::frames::{FrameTracker, TooBig, close_frame};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::sessions::{CloseCause, SessionControl};
use crate::metrics::SessionHandles;

/// Read chunk size; the buffer is on the stack of `poll`, never kept.
const CHUNK: usize = 16 * 1024;
/// Reads per direction per poll before yielding, so one busy socket cannot starve a worker.
const READS_PER_POLL: usize = 16;
/// How long a session the proxy closes may take to reach frame boundaries and answer the Close.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpliceEnd {
    /// Both sides closed (or one closed and the other finished).
    Closed,
    /// The proxy closed the session, for this cause.
    Proxy(CloseCause),
    /// A write made no progress for its timeout.
    WriteStalled,
}

pub struct Limits {
    pub idle: Duration,
    /// How long a write towards the upstream may stall.
    pub upstream_send: Duration,
    /// How long a write towards the client may stall.
    pub client_send: Duration,
    /// The largest data message either way, in payload bytes; 0: no limit.
    pub max_message: u64,
    /// When the session must end and why (lifetime, token expiry), if ever.
    pub end_at: Option<(Instant, CloseCause)>,
}

/// Counters one direction adds to when the session ends (or every `FLUSH_BYTES`).
pub struct DirectionCounters {
    pub bytes: Counter,
    pub messages: Counter,
}

struct Direction {
    /// Bytes read but not yet written; `None` when nothing is in flight.
    pending: Option<Box<Pending>>,
    read_closed: bool,
    frames: FrameTracker,
    /// The proxy's Close went (or is going) this way: nothing more is forwarded.
    close_sent: bool,
    /// A frame was cut short this way: no Close can follow, the connection just ends.
    cut: bool,
    /// After `close_sent`, the source sent a Close of its own (its answer) or closed.
    answered: bool,
    /// A frame header this way announced a message over the limit.
    too_big: bool,
    /// What was forwarded ends at a frame boundary, though more was read (and dropped): the
    /// Close may follow at once, while `frames` goes on following the source.
    stopped_at_boundary: bool,
    /// Bytes forwarded but not yet added to the shared counter, which is touched at most once
    /// per `FLUSH_BYTES` or when the connection ends, not on every read (it is contended).
    unflushed: u64,
    /// Bytes forwarded and added to the shared counter.
    flushed: u64,
    /// Whole data messages forwarded, and how many of them the shared counter has.
    messages: u64,
    messages_flushed: u64,
}

const FLUSH_BYTES: u64 = 64 * 1024;

struct Pending {
    data: Vec<u8>,
    written: usize,
    since: Instant,
}

impl Direction {
    fn new(max_message: u64) -> Self {
        Direction {
            pending: None,
            read_closed: false,
            frames: FrameTracker::new(max_message),
            close_sent: false,
            cut: false,
            answered: false,
            too_big: false,
            stopped_at_boundary: false,
            unflushed: 0,
            flushed: 0,
            messages: 0,
            messages_flushed: 0,
        }
    }

    fn flush_count(&mut self, counters: &DirectionCounters) {
        if self.unflushed > 0 {
            counters.bytes.inc_by(self.unflushed);
            self.flushed += self.unflushed;
            self.unflushed = 0;
        }
        if self.messages > self.messages_flushed {
            counters
                .messages
                .inc_by(self.messages - self.messages_flushed);
            self.messages_flushed = self.messages;
        }
    }

    fn done(&self) -> bool {
        self.read_closed && self.pending.is_none()
    }

    /// Closing: this way has sent its Close (or cannot) and its source answered or closed.
    fn settled(&self) -> bool {
        let sent = (self.close_sent && self.pending.is_none()) || self.cut;
        sent && (self.answered || self.read_closed)
    }

    /// Moves bytes from `src` to `dst` until one would block. Returns whether anything moved.
    /// With `close`, forwards up to the next frame boundary, then sends that Close frame
    /// (masked when `mask`) instead of anything more.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
        close: Option<CloseCause>,
        mask: bool,
        counters: &DirectionCounters,
    ) -> Poll<io::Result<bool>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut progressed = false;
        for _ in 0..READS_PER_POLL {
            if let Some(p) = self.pending.as_mut() {
                while p.written < p.data.len() {
                    match Pin::new(&mut *dst).poll_write(cx, &p.data[p.written..]) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        Poll::Ready(Ok(n)) => {
                            p.written += n;
                            progressed = true;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            return if progressed {
                                Poll::Ready(Ok(true))
                            } else {
                                Poll::Pending
                            };
                        }
                    }
                }
                self.pending = None;
            }
            if let Some(cause) = close
                && !self.close_sent
                && !self.cut
                && (self.frames.at_boundary() || self.stopped_at_boundary)
            {
                let key = mask.then(|| fastrand::u32(..).to_ne_bytes());
                self.pending = Some(Box::new(Pending {
                    data: close_frame(cause.code(), cause.reason(), key),
                    written: 0,
                    since: Instant::now(),
                }));
                self.close_sent = true;
                continue;
            }
            if self.read_closed || (self.too_big && close.is_none()) {
                // A refused message: nothing more is read until the splice closes.
                // No half-close: the connection ends once the other side's bytes are out, and
                // closing the sockets sends the FINs (a shutdown first would be one more syscall).
                return Poll::Ready(Ok(progressed));
            }
            // Uninitialised: zeroing 16 KiB on every wake-up would cost more than the copy.
            let mut chunk = [MaybeUninit::<u8>::uninit(); CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut *src).poll_read(cx, &mut buf) {
                Poll::Pending => {
                    return if progressed {
                        Poll::Ready(Ok(true))
                    } else {
                        Poll::Pending
                    };
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let filled = buf.filled();
            let n = filled.len();
            if n == 0 {
                self.read_closed = true;
                continue;
            }
            progressed = true;
            if self.close_sent || self.cut {
                // Only the source's answer is awaited now; nothing more goes on.
                self.watch_for_close(filled);
                continue;
            }
            let end = match close {
                Some(_) => self.cut_at_boundary(filled),
                None => self.follow(filled),
            };
            self.unflushed += end as u64;
            if self.unflushed >= FLUSH_BYTES {
                self.flush_count(counters);
            }
            let mut off = 0;
            while off < end {
                match Pin::new(&mut *dst).poll_write(cx, &filled[off..end]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(w)) => off += w,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // The peer is slow: keep only the unwritten rest, on the heap.
                        self.pending = Some(Box::new(Pending {
                            data: filled[off..end].to_vec(),
                            written: 0,
                            since: Instant::now(),
                        }));
                        return Poll::Ready(Ok(true));
                    }
                }
            }
            if self.too_big {
                // The session must close: the splice comes back with the cause.
                return Poll::Ready(Ok(true));
            }
        }
        // Budget used up: come back after others had their turn.
        cx.waker().wake_by_ref();
        Poll::Ready(Ok(progressed))
    }

    /// Takes what the source sent right behind its handshake (already read) as the first
    /// bytes to forward: written by `poll_copy` under the same deadlines and close requests as
    /// any other.
    fn take_early(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let end = self.follow(bytes);
        self.unflushed += end as u64;
        if end > 0 {
            self.pending = Some(Box::new(Pending {
                data: bytes[..end].to_vec(),
                written: 0,
                since: Instant::now(),
            }));
        }
    }

    /// Follows the frames of bytes about to be forwarded; how many of them may go.
    fn follow(&mut self, bytes: &[u8]) -> usize {
        let before = self.frames.messages();
        let fed = self.frames.feed(bytes);
        // Messages that ended before a refused header were forwarded too.
        self.messages += self.frames.messages() - before;
        match fed {
            Ok(_) => bytes.len(),
            Err(TooBig { boundary, .. }) => {
                self.too_big = true;
                match boundary {
                    // What came before the refused frame's header goes; the Close follows it.
                    Some(at) => {
                        self.stop_at(bytes, at);
                        at
                    }
                    // Part of its header already went: no Close can be put after it.
                    None => {
                        self.cut = true;
                        0
                    }
                }
            }
        }
    }

    /// Closing and inside a frame: how many of `bytes` finish it (all of them if it goes on);
    /// the rest is dropped, and the tracker stands at the boundary for the Close.
    fn cut_at_boundary(&mut self, bytes: &[u8]) -> usize {
        let mut first = None;
        // A frame whose header completes here is counted when that header is read.
        let in_header = self.frames.in_header();
        let before = self.frames.messages();
        let fed = self.frames.feed_with(bytes, |at, head| {
            first.get_or_insert((at, head));
        });
        match (first, fed) {
            // A limit error can only come after the first boundary: what follows is dropped.
            (Some((at, head)), _) => {
                if in_header && head.is_some_and(|h| h.fin && !h.is_control()) {
                    self.messages += 1;
                }
                self.stop_at(bytes, at);
                at
            }
            // The frame in flight goes on past these bytes.
            (None, Ok(())) => {
                self.messages += self.frames.messages() - before;
                bytes.len()
            }
            // Its header, begun before the close, announces more than the limit: part of that
            // header is out, so no Close can follow; nothing more goes this way.
            (None, Err(_)) => {
                self.too_big = true;
                self.cut = true;
                0
            }
        }
    }

    /// Forwarding stops at the boundary `at` of `bytes` (the tracker had followed them all,
    /// or failed at a header there): it follows the source again from that boundary, without
    /// a limit, to see the source's answer to the Close.
    fn stop_at(&mut self, bytes: &[u8], at: usize) {
        self.frames = FrameTracker::new(0);
        self.watch_for_close(&bytes[at..]);
        self.stopped_at_boundary = true;
    }

    /// After the proxy's Close: notes the source's own Close frame, its answer.
    fn watch_for_close(&mut self, bytes: &[u8]) {
        let mut answered = false;
        let _ = self.frames.feed_with(bytes, |_, head| {
            answered |= head.is_some_and(|h| h.opcode == 0x8);
        });
        self.answered |= answered;
    }
}

/// One session's copy state; [`Splice::run`] copies until the connection ends.
pub struct Splice {
    to_upstream: Direction,
    to_client: Direction,
    limits: Kept,
    control: Arc<SessionControl>,
    /// Where the bytes and messages are counted.
    counters: Arc<SessionHandles>,
    /// The proxy is closing the session: why, and when it ends without waiting more.
    closing: Option<(CloseCause, Instant)>,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
}

/// The [`Limits`] a session keeps, in little room (an idle WebSocket must be cheap): the
/// timeouts in milliseconds (at most 49 days; longer ones are cut to that).
struct Kept {
    idle_ms: u32,
    upstream_send_ms: u32,
    client_send_ms: u32,
    end_at: Option<(Instant, CloseCause)>,
}

impl Kept {
    fn of(limits: &Limits) -> Kept {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Kept {
            idle_ms: ms(limits.idle),
            upstream_send_ms: ms(limits.upstream_send),
            client_send_ms: ms(limits.client_send),
            end_at: limits.end_at,
        }
    }
}

fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

/// What passed in a session, each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpliceReport {
    pub client_to_upstream_bytes: u64,
    pub upstream_to_client_bytes: u64,
    pub client_to_upstream_messages: u64,
    pub upstream_to_client_messages: u64,
}

/// What the timer stands for when it fires.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// Start closing for this cause.
    Close(CloseCause),
    /// End now.
    End(SpliceEnd),
}

impl Splice {
    pub fn new(
        limits: Limits,
        control: Arc<SessionControl>,
        counters: Arc<SessionHandles>,
    ) -> Self {
        let now = Instant::now();
        let mut splice = Splice {
            to_upstream: Direction::new(limits.max_message),
            to_client: Direction::new(limits.max_message),
            timer: Box::pin(tokio::time::sleep_until(now)),
            limits: Kept::of(&limits),
            control,
            counters,
            closing: None,
            last_activity: now,
        };
        // The earliest deadline: the idle one, or the session's end when that comes first.
        let (first, _) = splice.next_deadline();
        splice.timer.as_mut().reset(first);
        splice
    }

    /// Takes what each side sent right behind the handshake, to pass on first in
    /// [`Splice::run`].
    pub fn early(&mut self, from_client: &[u8], from_upstream: &[u8]) {
        self.to_upstream.take_early(from_client);
        self.to_client.take_early(from_upstream);
    }

    /// Copies until the connection ends; resolves with why.
    pub fn run<'a, C, U>(&'a mut self, client: &'a mut C, upstream: &'a mut U) -> Run<'a, C, U>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        Run {
            splice: self,
            client,
            upstream,
        }
    }

    /// Adds what is left to the shared counters; the session's totals.
    pub fn finish(&mut self) -> SpliceReport {
        self.flush_counts();
        SpliceReport {
            client_to_upstream_bytes: self.to_upstream.flushed,
            upstream_to_client_bytes: self.to_client.flushed,
            client_to_upstream_messages: self.to_upstream.messages,
            upstream_to_client_messages: self.to_client.messages,
        }
    }

    fn flush_counts(&mut self) {
        self.to_upstream.flush_count(&self.counters.to_upstream);
        self.to_client.flush_count(&self.counters.to_client);
    }

    /// The earliest moment something must happen, and what.
    fn next_deadline(&self) -> (Instant, Due) {
        if let Some((cause, until)) = self.closing {
            return (until, Due::End(SpliceEnd::Proxy(cause)));
        }
        let mut deadline = (
            self.last_activity + millis(self.limits.idle_ms),
            Due::Close(CloseCause::Idle),
        );
        if let Some((at, cause)) = self.limits.end_at {
            deadline = deadline.min((at, Due::Close(cause)));
        }
        if let Some(p) = &self.to_upstream.pending {
            deadline = deadline.min((
                p.since + millis(self.limits.upstream_send_ms),
                Due::End(SpliceEnd::WriteStalled),
            ));
        }
        if let Some(p) = &self.to_client.pending {
            deadline = deadline.min((
                p.since + millis(self.limits.client_send_ms),
                Due::End(SpliceEnd::WriteStalled),
            ));
        }
        deadline
    }

    fn start_closing(&mut self, cause: CloseCause) {
        if self.closing.is_none() {
            // Also marks the shared control, so that a later request changes nothing.
            self.control.close(cause);
            let until = Instant::now() + CLOSE_GRACE;
            self.closing = Some((cause, until));
            self.timer.as_mut().reset(until);
        }
    }

    /// Copies both ways once; `Some` when the connection ended.
    fn poll_directions<C, U>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut C,
        upstream: &mut U,
    ) -> Option<io::Result<SpliceEnd>>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let cause = self.closing.map(|(c, _)| c);
        let up = self.to_upstream.poll_copy(
            cx,
            &mut *client,
            &mut *upstream,
            cause,
            true,
            &self.counters.to_upstream,
        );
        let down = self.to_client.poll_copy(
            cx,
            &mut *upstream,
            &mut *client,
            cause,
            false,
            &self.counters.to_client,
        );
        let mut active = false;
        for side in [up, down] {
            match side {
                Poll::Ready(Err(e)) => {
                    return Some(match self.closing {
                        // The proxy was closing anyway: that is why it ended.
                        Some((cause, _)) => Ok(SpliceEnd::Proxy(cause)),
                        None => Err(e),
                    });
                }
                Poll::Ready(Ok(true)) => active = true,
                _ => {}
            }
        }
        if active {
            // Timestamp only on progress; the timer is re-armed lazily when it fires.
            self.last_activity = Instant::now();
        }
        if let Some((cause, _)) = self.closing
            && self.to_upstream.settled()
            && self.to_client.settled()
        {
            return Some(Ok(SpliceEnd::Proxy(cause)));
        }
        // One side closed and the other has nothing in flight: WebSockets do not half-close,
        // so end both (docs/behaviour.md §9: closing one closes both). But once the proxy has
        // sent its Close, an upstream that answers and hangs up does not end the client's side
        // before the client has answered (or the grace is out): closing a socket with the
        // client's last frames unread would reset it, and the client could lose the Close.
        if (self.to_upstream.done() && self.to_client.pending.is_none())
            || (self.to_client.done()
                && self.to_upstream.pending.is_none()
                && (self.closing.is_none() || self.to_upstream.settled()))
        {
            return Some(Ok(match self.closing {
                Some((cause, _)) => SpliceEnd::Proxy(cause),
                None => SpliceEnd::Closed,
            }));
        }
        None
    }

    fn poll_run<C, U>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut C,
        upstream: &mut U,
    ) -> Poll<io::Result<SpliceEnd>>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        if self.closing.is_none()
            && let Some(cause) = self.control.poll_requested(cx.waker())
        {
            self.start_closing(cause);
        }
        // A message refused in the bytes behind the handshake: closing before anything is read.
        if self.closing.is_none() && (self.to_upstream.too_big || self.to_client.too_big) {
            self.start_closing(CloseCause::MessageTooBig);
        }
        // A few rounds at most: a message too big or a timer starts the close, which takes one
        // more pass over both directions to send the Close frames.
        for _ in 0..4 {
            if let Some(end) = self.poll_directions(cx, client, upstream) {
                return Poll::Ready(end);
            }
            if self.closing.is_none() && (self.to_upstream.too_big || self.to_client.too_big) {
                self.start_closing(CloseCause::MessageTooBig);
                continue;
            }
            if self.to_upstream.pending.is_some() || self.to_client.pending.is_some() {
                // A stalled write may end the connection before the idle deadline.
                let (deadline, _) = self.next_deadline();
                if deadline < self.timer.deadline() {
                    self.timer.as_mut().reset(deadline);
                }
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let (deadline, due) = self.next_deadline();
            if deadline > Instant::now() {
                // Fired early for a deadline that moved (activity since): wait for the new one.
                self.timer.as_mut().reset(deadline);
                if self.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            match due {
                Due::End(end) => return Poll::Ready(Ok(end)),
                Due::Close(cause) => self.start_closing(cause),
            }
        }
        // Still turning after the rounds: come back at once rather than sleep without a waker.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The future of [`Splice::run`].
pub struct Run<'a, C, U> {
    splice: &'a mut Splice,
    client: &'a mut C,
    upstream: &'a mut U,
}

impl<C, U> Future for Run<'_, C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    type Output = io::Result<SpliceEnd>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.splice.poll_run(cx, this.client, this.upstream)
    }
}

impl Drop for Splice {
    fn drop(&mut self) {
        self.flush_counts();
    }
}

#[cfg(test)]
mod tests;
