//! Copies bytes both ways between an upgraded client and its upstream.
//!
//! An idle WebSocket must cost a few hundred bytes, so nothing is buffered while no data is in
//! flight: each read lands in a stack buffer that lives only during one `poll`, and is written
//! straight on. Only bytes the other side cannot take yet are moved to the heap, and that
//! buffer is freed as soon as they are written.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Read chunk size; the buffer is on the stack of `poll`, never kept.
const CHUNK: usize = 16 * 1024;
/// Reads per direction per poll before yielding, so one busy socket cannot starve a worker.
const READS_PER_POLL: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpliceEnd {
    /// Both sides closed (or one closed and the other finished).
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// A write made no progress for its timeout.
    WriteStalled,
}

pub struct Limits {
    pub idle: Duration,
    /// How long a write towards the upstream may stall.
    pub upstream_send: Duration,
    /// How long a write towards the client may stall.
    pub client_send: Duration,
}

struct Direction {
    /// Bytes read but not yet written; `None` when nothing is in flight.
    pending: Option<Box<Pending>>,
    read_closed: bool,
    bytes: Counter,
    /// Bytes not yet added to `bytes`: the shared counter is touched at most once per
    /// `FLUSH_BYTES` or when the connection ends, not on every read (it is contended).
    unflushed: u64,
}

const FLUSH_BYTES: u64 = 64 * 1024;

struct Pending {
    data: Vec<u8>,
    written: usize,
    since: Instant,
}

impl Direction {
    fn new(bytes: Counter) -> Self {
        Direction {
            pending: None,
            read_closed: false,
            bytes,
            unflushed: 0,
        }
    }

    fn flush_count(&mut self) {
        if self.unflushed > 0 {
            self.bytes.inc_by(self.unflushed);
            self.unflushed = 0;
        }
    }

    fn done(&self) -> bool {
        self.read_closed && self.pending.is_none()
    }

    /// Moves bytes from `src` to `dst` until one would block. Returns whether anything moved.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut R,
        dst: &mut W,
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
            if self.read_closed {
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
            self.unflushed += n as u64;
            if self.unflushed >= FLUSH_BYTES {
                self.flush_count();
            }
            let mut off = 0;
            while off < n {
                match Pin::new(&mut *dst).poll_write(cx, &filled[off..n]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(w)) => off += w,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // The peer is slow: keep only the unwritten rest, on the heap.
                        self.pending = Some(Box::new(Pending {
                            data: filled[off..n].to_vec(),
                            written: 0,
                            since: Instant::now(),
                        }));
                        return Poll::Ready(Ok(true));
                    }
                }
            }
        }
        // Budget used up: come back after others had their turn.
        cx.waker().wake_by_ref();
        Poll::Ready(Ok(progressed))
    }
}

/// The copy future. Resolves when the connection ends, with why.
pub struct Splice<C, U> {
    client: C,
    upstream: U,
    to_upstream: Direction,
    to_client: Direction,
    limits: Limits,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<C, U> Splice<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    pub fn new(
        client: C,
        upstream: U,
        limits: Limits,
        to_upstream_bytes: Counter,
        to_client_bytes: Counter,
    ) -> Self {
        let now = Instant::now();
        Splice {
            client,
            upstream,
            to_upstream: Direction::new(to_upstream_bytes),
            to_client: Direction::new(to_client_bytes),
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle)),
            limits,
            last_activity: now,
        }
    }

    /// The earliest moment something must have happened: idle end, or a stalled write's end.
    fn next_deadline(&self) -> (Instant, SpliceEnd) {
        let mut deadline = (self.last_activity + self.limits.idle, SpliceEnd::Idle);
        if let Some(p) = &self.to_upstream.pending {
            deadline = deadline.min((p.since + self.limits.upstream_send, SpliceEnd::WriteStalled));
        }
        if let Some(p) = &self.to_client.pending {
            deadline = deadline.min((p.since + self.limits.client_send, SpliceEnd::WriteStalled));
        }
        deadline
    }
}

impl<C, U> Future for Splice<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    type Output = io::Result<SpliceEnd>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut active = false;
        let up = this
            .to_upstream
            .poll_copy(cx, &mut this.client, &mut this.upstream);
        let down = this
            .to_client
            .poll_copy(cx, &mut this.upstream, &mut this.client);
        for side in [up, down] {
            match side {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(true)) => active = true,
                _ => {}
            }
        }
        // One side closed and the other has nothing in flight: WebSockets do not half-close,
        // so end both (docs/behaviour.md §9: closing one closes both).
        if (this.to_upstream.done() && this.to_client.pending.is_none())
            || (this.to_client.done() && this.to_upstream.pending.is_none())
        {
            return Poll::Ready(Ok(SpliceEnd::Closed));
        }
        if active {
            // Timestamp only on progress; the timer is re-armed lazily when it fires.
            this.last_activity = Instant::now();
        }
        if this.to_upstream.pending.is_some() || this.to_client.pending.is_some() {
            // A stalled write may end the connection before the idle deadline.
            let (deadline, _) = this.next_deadline();
            if deadline < this.timer.deadline() {
                this.timer.as_mut().reset(deadline);
            }
        }
        loop {
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let (deadline, why) = this.next_deadline();
            if deadline <= Instant::now() {
                return Poll::Ready(Ok(why));
            }
            this.timer.as_mut().reset(deadline);
        }
    }
}

impl<C, U> Drop for Splice<C, U> {
    fn drop(&mut self) {
        self.to_upstream.flush_count();
        self.to_client.flush_count();
    }
}
