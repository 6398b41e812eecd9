//! Parameters the fuzzer chooses, taken from the front of the input.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The input with a cursor: parameter bytes first, the rest is the data.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    /// One byte, 0 when the input is used up.
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    /// Two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// Up to `max` cut offsets (the count is a parameter too), each anywhere in the data left
    /// after them.
    pub fn cuts(&mut self, max: usize) -> Vec<usize> {
        let n = usize::from(self.byte()) % (max + 1);
        let raw: Vec<u16> = (0..n).map(|_| self.u16()).collect();
        let len = self.0.len();
        let mut cuts: Vec<usize> = raw.iter().map(|c| usize::from(*c) % (len + 1)).collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// `bytes` cut at the (sorted) offsets, empty pieces left out.
pub fn pieces<'b>(bytes: &'b [u8], cuts: &[usize]) -> Vec<&'b [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for &cut in cuts.iter().chain([bytes.len()].iter()) {
        let cut = cut.min(bytes.len());
        if cut > from {
            out.push(&bytes[from..cut]);
            from = cut;
        }
    }
    out
}

/// A peer that hands out its bytes one piece per read (as a socket delivers segments) and then
/// closes; what is written to it is dropped.
pub struct Scripted(pub VecDeque<Vec<u8>>);

impl Scripted {
    pub fn new(pieces: &[&[u8]]) -> Scripted {
        Scripted(pieces.iter().map(|p| p.to_vec()).collect())
    }

    /// What was not read.
    pub fn unread(&self) -> Vec<u8> {
        self.0.iter().flatten().copied().collect()
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut piece) = self.0.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                piece.drain(..n);
                self.0.push_front(piece);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
