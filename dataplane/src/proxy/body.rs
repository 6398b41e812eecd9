//! The response body type: a fixed body of our own or the upstream's streamed body. It tells
//! the connection when the response is complete, so the header timer can start for the next
//! request on a kept-alive connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::client_io::ConnPhase;

pub struct ResponseBody {
    inner: Inner,
    on_end: Option<Arc<ConnPhase>>,
}

enum Inner {
    /// Our own body, sent as one frame.
    Full(Option<Bytes>),
    Upstream(Incoming),
}

impl ResponseBody {
    pub fn full(bytes: Bytes) -> Self {
        ResponseBody {
            inner: Inner::Full(Some(bytes)),
            on_end: None,
        }
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    pub fn upstream(body: Incoming) -> Self {
        ResponseBody {
            inner: Inner::Upstream(body),
            on_end: None,
        }
    }

    /// Our own body's bytes (`None` for an upstream body).
    pub fn own_bytes(&self) -> Option<&[u8]> {
        match &self.inner {
            Inner::Full(b) => Some(b.as_deref().unwrap_or_default()),
            Inner::Upstream(_) => None,
        }
    }

    /// Marks the connection as waiting for its next request head once this body is done.
    pub fn notify_end(mut self, phase: Arc<ConnPhase>) -> Self {
        self.on_end = Some(phase);
        self
    }

    fn finished(&mut self) {
        if let Some(phase) = self.on_end.take() {
            phase.await_next_head();
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finished();
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = match &mut self.inner {
            Inner::Full(full) => Poll::Ready(
                full.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
        };
        if let Poll::Ready(None) = polled {
            self.finished();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(full) => full.as_ref().is_none_or(|b| b.is_empty()),
            Inner::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(full) => SizeHint::with_exact(full.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Upstream(body) => body.size_hint(),
        }
    }
}
