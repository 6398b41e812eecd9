//! A client's request body on its way upstream, watched so that its failures keep their
//! source: a framing error (bad chunk size) is the client's 400, a stall longer than the body
//! timeout is the client's 408 — not the upstream's 502/504 that hyper's client would report.
//! It also tells the upstream read deadline whether the body is still waiting for the client
//! (then the client's timer governs) or for the upstream to take it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// What the body is doing, shared with the exchange that sends it.
#[derive(Debug, Default)]
pub struct BodyProgress {
    state: AtomicU8,
    /// Frames handed upstream so far.
    frames: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyState {
    /// Not polled yet, or its last frame was handed upstream and not yet asked for again.
    Delivered,
    /// Waiting for the client's next bytes.
    AwaitingClient,
    Ended,
    /// The client's framing was invalid.
    Malformed,
    /// The client stalled longer than the body timeout.
    TimedOut,
}

impl BodyProgress {
    pub fn state(&self) -> BodyState {
        match self.state.load(Ordering::Acquire) {
            1 => BodyState::AwaitingClient,
            2 => BodyState::Ended,
            3 => BodyState::Malformed,
            4 => BodyState::TimedOut,
            _ => BodyState::Delivered,
        }
    }

    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Acquire)
    }

    fn set(&self, state: BodyState) {
        let v = match state {
            BodyState::Delivered => 0,
            BodyState::AwaitingClient => 1,
            BodyState::Ended => 2,
            BodyState::Malformed => 3,
            BodyState::TimedOut => 4,
        };
        self.state.store(v, Ordering::Release);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("client request body: {0}")]
    Framing(#[source] hyper::Error),
    #[error("client request body stalled for longer than {0:?}")]
    Timeout(Duration),
}

pub struct ClientBody {
    inner: Incoming,
    timeout: Duration,
    /// Armed while waiting for the client.
    timer: Option<Pin<Box<Sleep>>>,
    progress: Arc<BodyProgress>,
}

impl ClientBody {
    pub fn new(inner: Incoming, timeout: Duration) -> (Self, Arc<BodyProgress>) {
        let progress = Arc::new(BodyProgress::default());
        if inner.is_end_stream() {
            progress.set(BodyState::Ended);
        }
        let body = ClientBody {
            inner,
            timeout,
            timer: None,
            progress: progress.clone(),
        };
        (body, progress)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer = None;
                this.progress.frames.fetch_add(1, Ordering::AcqRel);
                this.progress.set(BodyState::Delivered);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.progress.set(BodyState::Malformed);
                Poll::Ready(Some(Err(ClientBodyError::Framing(error))))
            }
            Poll::Ready(None) => {
                this.progress.set(BodyState::Ended);
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.progress.set(BodyState::AwaitingClient);
                let timeout = this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.progress.set(BodyState::TimedOut);
                    return Poll::Ready(Some(Err(ClientBodyError::Timeout(timeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future;

/// When the upstream's answer is overdue. The read timeout counts from the moment the request
/// is sent; while the body is still waiting for the client, the client's body timeout governs
/// instead, and while the upstream keeps taking frames it is making progress.
pub struct ReadDeadline {
    timeout: Duration,
    frames_seen: u64,
}

impl ReadDeadline {
    pub fn new(timeout: Duration) -> Self {
        ReadDeadline {
            timeout,
            frames_seen: 0,
        }
    }

    /// Called when the timer fires: `Some(next)` to wait on (the upstream is not to blame yet),
    /// `None` when the upstream timed out.
    pub fn on_fire(&mut self, body: &BodyProgress, now: Instant) -> Option<Instant> {
        let frames = body.frames();
        let progressed = frames != self.frames_seen;
        self.frames_seen = frames;
        match body.state() {
            BodyState::AwaitingClient => Some(now + self.timeout),
            BodyState::Delivered if progressed => Some(now + self.timeout),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_deadline_waits_for_the_client_but_not_for_a_stuck_upstream() {
        let body = BodyProgress::default();
        let now = Instant::now();
        let mut d = ReadDeadline::new(Duration::from_secs(60));
        body.set(BodyState::AwaitingClient);
        assert!(
            d.on_fire(&body, now).is_some(),
            "the client's timer governs"
        );
        body.frames.store(3, Ordering::Release);
        body.set(BodyState::Delivered);
        assert!(d.on_fire(&body, now).is_some(), "the upstream took frames");
        assert!(
            d.on_fire(&body, now).is_none(),
            "a frame the upstream never took: its timeout"
        );
        body.set(BodyState::Ended);
        assert!(d.on_fire(&body, now).is_none());
    }
}
