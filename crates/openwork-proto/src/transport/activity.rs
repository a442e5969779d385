//! When a connection last moved bytes each way, and since when a frame has
//! been half-read: what the session's deadlines look at. A transport wraps
//! its byte streams in `Tracked`; the codec marks frame boundaries.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// No frame is being read.
const NONE: u64 = u64::MAX;

/// One connection's last movements, in milliseconds since it opened.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    last_read: AtomicU64,
    last_write: AtomicU64,
    frame_since: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            last_read: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
            frame_since: AtomicU64::new(NONE),
        })
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn since(&self, at: u64) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(at))
    }

    /// Bytes arrived.
    pub fn read(&self) {
        self.last_read.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Bytes left.
    pub fn wrote(&self) {
        self.last_write.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A frame's first byte arrived.
    pub fn begin_frame(&self) {
        self.frame_since.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The frame was read whole (or given up).
    pub fn end_frame(&self) {
        self.frame_since.store(NONE, Ordering::Relaxed);
    }

    /// How long the connection has been open.
    pub fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    /// How long since bytes last arrived (since it opened, if none have).
    pub fn since_read(&self) -> Duration {
        self.since(self.last_read.load(Ordering::Relaxed))
    }

    /// How long since bytes last left (since it opened, if none have).
    pub fn since_write(&self) -> Duration {
        self.since(self.last_write.load(Ordering::Relaxed))
    }

    /// How long the frame being read has taken so far; `None` between frames.
    pub fn frame_elapsed(&self) -> Option<Duration> {
        match self.frame_since.load(Ordering::Relaxed) {
            NONE => None,
            at => Some(self.since(at)),
        }
    }
}

/// A byte stream that records its movements in an `Activity`.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }

    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    pub fn set_activity(&mut self, activity: Arc<Activity>) {
        self.activity = activity;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
