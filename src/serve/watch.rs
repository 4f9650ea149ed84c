//! Every phase of a connection is timed, so that no client holds one of a
//! service's connection slots by doing nothing:
//!
//! - **quiet**: while none of its requests is being handled or answered —
//!   before the first bytes (hyper-util's protocol detection has no timer of
//!   its own), during a request head sent slowly, after an HTTP/2 preface
//!   alone, idle between keep-alive requests, an HTTP/2 connection that only
//!   answers PINGs — it is closed `http_header_timeout` after it became quiet;
//! - **writing**: an answer the client does not read (its socket buffer full)
//!   closes the connection after `http_write_timeout` without progress;
//! - while a request is handled, its handler's deadline bounds it, and
//!   HTTP/2 PINGs (hyper's keep-alive) find a peer that went away.
//!
//! A closed connection frees its slot; a request still in flight on it is
//! cancelled (its handler stopped) as when its client goes away.

use futures_util::future::select;
use parking_lot::Mutex;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// What one connection is doing, as its watchdog reads it.
pub(crate) struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    /// Requests whose answer has not been written whole.
    busy: usize,
    /// When `busy` last became 0 (or the connection was accepted).
    quiet_since: Instant,
    /// Since when a write has waited on the client.
    blocked_since: Option<Instant>,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(State {
                busy: 0,
                quiet_since: Instant::now(),
                blocked_since: None,
            }),
            changed: Notify::new(),
        })
    }

    /// Waits until a phase of the connection expired: then it is to be closed.
    pub(crate) async fn expired(&self, quiet: Duration, write: Duration) {
        loop {
            let changed = self.changed.notified();
            let deadline = {
                let state = self.state.lock();
                let quiet = (state.busy == 0).then(|| state.quiet_since + quiet);
                let write = state.blocked_since.map(|since| since + write);
                quiet.into_iter().chain(write).min()
            };
            match deadline {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => {
                    let sleep = pin!(tokio::time::sleep_until(deadline.into()));
                    let _ = select(sleep, pin!(changed)).await;
                }
                None => changed.await,
            }
        }
    }

    fn write_blocked(&self) {
        let mut state = self.state.lock();
        if state.blocked_since.is_none() {
            state.blocked_since = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        let mut state = self.state.lock();
        state.blocked_since = None;
    }
}

/// A request of the connection being handled or answered: the connection is
/// not quiet while one is held (a request's guard lives until its response
/// body was written whole, or dropped).
pub(crate) struct Busy(Arc<Activity>);

impl Busy {
    pub(crate) fn new(activity: &Arc<Activity>) -> Busy {
        activity.state.lock().busy += 1;
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.busy -= 1;
        if state.busy == 0 {
            state.quiet_since = Instant::now();
            drop(state);
            self.0.changed.notify_one();
        }
    }
}

/// A connection's socket that tells its [`Activity`] when writes wait on the
/// client and when they progress.
pub(crate) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }

    fn progress<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &poll {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(_) => self.activity.wrote(),
        }
        poll
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(poll)
    }
}
