//! The client side of a connection: plain TCP or TLS, wrapped so that a request head that takes
//! too long is answered 408 and an idle kept-alive connection is closed.
//!
//! hyper's own `header_read_timeout` closes the connection without a response, so the timer
//! lives here, in the I/O the server reads from. The request handler tells it when a request
//! is being served ([`ConnPhase`]); while waiting for a head, the first byte starts the header
//! timer, and no byte at all within the keep-alive timeout closes the connection silently.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;

use super::client_limits::ConnectionPermit;
use crate::metrics::Metrics;

/// A client connection: its transport, and its place under the connection caps, which it
/// holds for as long as the socket is open (through an upgrade into a WebSocket too).
pub struct ClientStream {
    transport: Transport,
    _permit: ConnectionPermit,
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClientStream {
    pub fn plain(tcp: TcpStream, permit: ConnectionPermit) -> ClientStream {
        ClientStream {
            transport: Transport::Plain(tcp),
            _permit: permit,
        }
    }

    pub fn tls(tls: TlsStream<TcpStream>, permit: ConnectionPermit) -> ClientStream {
        ClientStream {
            transport: Transport::Tls(Box::new(tls)),
            _permit: permit,
        }
    }

    /// Small WebSocket frames and pipelined responses must not wait for Nagle. Set only once a
    /// connection goes on past a single answer: a refused handshake does not need the syscall.
    pub fn set_nodelay(&self) {
        let tcp = match &self.transport {
            Transport::Plain(s) => s,
            Transport::Tls(s) => s.get_ref().0,
        };
        let _ = tcp.set_nodelay(true);
    }

    /// What the TLS handshake established (SNI, a verified client certificate and its
    /// subject), for the request decision; `None` on plain HTTP. Once per connection.
    pub fn conn_tls(&self) -> Option<ConnTls> {
        match &self.transport {
            Transport::Plain(_) => None,
            Transport::Tls(s) => {
                let connection = s.get_ref().1;
                // The config's verifier checked any certificate presented.
                let leaf = connection.peer_certificates().and_then(|c| c.first());
                Some(ConnTls {
                    sni: connection.server_name().map(str::to_owned),
                    client_verified: leaf.is_some(),
                    client_subject: leaf
                        .and_then(|der| portcullis_contract::client_cert::subject_dn(der)),
                })
            }
        }
    }
}

/// [`crate::decision::TlsFacts`] kept for the requests of a connection.
#[derive(Clone, Debug, Default)]
pub struct ConnTls {
    pub sni: Option<String>,
    pub client_verified: bool,
    pub client_subject: Option<String>,
}

impl ConnTls {
    pub fn facts(&self) -> crate::decision::TlsFacts<'_> {
        crate::decision::TlsFacts {
            sni: self.sni.as_deref(),
            client_verified: self.client_verified,
            client_subject: self.client_subject.as_deref(),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.get_mut().transport {
            Transport::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Transport::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }
}

const AWAITING_HEAD: u8 = 0;
const SERVING: u8 = 1;
const UPGRADED: u8 = 2;

/// Shared between a connection's I/O and its request handler.
#[derive(Debug, Default)]
pub struct ConnPhase {
    state: AtomicU8,
    /// Responses completed so far; a change tells the I/O that a new head is awaited.
    completed: AtomicU32,
    /// The first request was counted against the client's request rate before hyper got it.
    first_counted: AtomicBool,
}

impl ConnPhase {
    pub fn first_request_counted() -> ConnPhase {
        ConnPhase {
            first_counted: AtomicBool::new(true),
            ..ConnPhase::default()
        }
    }

    /// Whether this request still has to be counted against the client's request rate
    /// (every one but a first one already counted).
    pub fn count_request(&self) -> bool {
        !self.first_counted.swap(false, Ordering::Relaxed)
    }

    pub fn serving(&self) {
        self.state.store(SERVING, Ordering::Release);
    }
    pub fn await_next_head(&self) {
        // An upgraded connection never goes back to HTTP.
        if self
            .state
            .compare_exchange(SERVING, AWAITING_HEAD, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.completed.fetch_add(1, Ordering::AcqRel);
        }
    }
    pub fn upgraded(&self) {
        self.state.store(UPGRADED, Ordering::Release);
    }
    fn get(&self) -> (u8, u32) {
        (
            self.state.load(Ordering::Acquire),
            self.completed.load(Ordering::Acquire),
        )
    }
}

#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// From the first byte of a request head to its end.
    pub header_timeout: Duration,
    /// Idle time allowed between requests on a kept-alive connection.
    pub keepalive_timeout: Duration,
}

pub struct GuardedIo {
    inner: ClientStream,
    /// Bytes already read from the client (by the first-request fast path), served first.
    prefix: bytes::Bytes,
    phase: Arc<ConnPhase>,
    limits: HeadLimits,
    /// Armed only while waiting for a head; dropped while serving or upgraded.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Bytes of the current head have arrived (so a timeout is answered 408).
    head_started: bool,
    /// Responses completed as of the previous read, to notice a new wait for a head.
    seen_completed: u32,
    metrics: Metrics,
}

impl GuardedIo {
    /// `prefix`: bytes already read from the client. `answered`: a response was already
    /// written on this connection (so, without pending bytes, it is idle in keep-alive).
    pub fn new(
        inner: ClientStream,
        prefix: bytes::Bytes,
        answered: bool,
        phase: Arc<ConnPhase>,
        limits: HeadLimits,
        metrics: Metrics,
    ) -> Self {
        // A head must complete within the header timeout of its first byte (or of the accept);
        // an idle kept-alive connection gets the keep-alive timeout.
        let head_started = !prefix.is_empty();
        let first_wait = if answered && !head_started {
            limits.keepalive_timeout
        } else {
            limits.header_timeout
        };
        GuardedIo {
            inner,
            prefix,
            phase,
            limits,
            deadline: Some(Box::pin(tokio::time::sleep(first_wait))),
            head_started,
            seen_completed: 0,
            metrics,
        }
    }

    pub fn into_inner(self) -> ClientStream {
        self.inner
    }

    fn rearm(&mut self, after: Duration) {
        let at = Instant::now() + after;
        match &mut self.deadline {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Best effort: the socket's send buffer is empty at this point, so this rarely pends.
    fn send_408(&mut self, cx: &mut Context<'_>) {
        let bytes = super::responses::request_timeout_bytes();
        let mut inner = Pin::new(&mut self.inner);
        if let Poll::Ready(Ok(_)) = inner.as_mut().poll_write(cx, &bytes) {
            let _ = inner.as_mut().poll_flush(cx);
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let (phase, completed) = this.phase.get();
        if phase != AWAITING_HEAD {
            this.deadline = None;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if completed != this.seen_completed {
            // A response just completed: the keep-alive wait starts now.
            this.seen_completed = completed;
            this.head_started = false;
            this.rearm(this.limits.keepalive_timeout);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if !this.head_started {
                    this.head_started = true;
                    this.rearm(this.limits.header_timeout);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let Some(deadline) = this.deadline.as_mut() else {
                    return Poll::Pending;
                };
                if deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if this.head_started {
                    this.metrics.rejected_connection("header_timeout");
                    this.send_408(cx);
                } else {
                    this.metrics.rejected_connection("idle_timeout");
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head timeout",
                )))
            }
            other => other,
        }
    }
}

use std::future::Future;

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
