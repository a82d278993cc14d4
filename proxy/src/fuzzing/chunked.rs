//! A reader that hands its bytes out in small chunks (sizes chosen by the fuzzer), then either
//! ends (EOF) or goes silent forever, and a paused-clock runtime to drive async parsers with it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Yields `data` in chunks of 1 to 4 bytes (two bits of `pattern` per chunk, cycling).
pub struct Chunked<'a> {
    data: &'a [u8],
    pattern: u8,
    n: u32,
    /// After the data: EOF (true) or a silence that never ends (false).
    eof: bool,
}

impl<'a> Chunked<'a> {
    pub fn new(data: &'a [u8], pattern: u8, eof: bool) -> Self {
        Self { data, pattern, n: 0, eof }
    }

    /// All at once (as much as each read asks for).
    pub fn whole(data: &'a [u8], eof: bool) -> Self {
        Self { data, pattern: 0, n: u32::MAX, eof }
    }
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.data.is_empty() {
            // Silence: nothing will wake this task; the paused clock moves on to its timers.
            return if self.eof { Poll::Ready(Ok(())) } else { Poll::Pending };
        }
        let size = if self.n == u32::MAX {
            self.data.len()
        } else {
            let shift = (self.n % 4) * 2;
            self.n += 1;
            usize::from((self.pattern >> shift) & 3) + 1
        };
        let take = size.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..take]);
        self.data = &self.data[take..];
        Poll::Ready(Ok(()))
    }
}

/// Runs `fut` to completion on this thread's current-thread runtime, whose clock is paused (a
/// silent reader then meets its timeout at once, and deterministically).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime");
    }
    RT.with(|rt| rt.block_on(fut))
}
