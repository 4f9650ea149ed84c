//! Bounded bodies: a request body a handler reads is cut at
//! `http_max_request_body`, a response body it sends at
//! `http_max_response_body`; both stream, neither is ever buffered whole.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use std::io::{self, Read};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// A request body as the handler reads it: past its limit it ends with
/// wasi:http's `HTTP-request-body-size` error (see [`request_body`]).
pub(crate) type RequestBody = Bounded<wasmtime_wasi_http::Error>;

/// `body`, bounded at `limit` bytes; `exceeded` is set when it passes them.
pub(crate) fn request_body<B>(body: B, limit: u64, exceeded: Arc<AtomicBool>) -> RequestBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let inner = body
        .map_err(|e| {
            let e: Box<dyn std::error::Error + Send + Sync> = e.into();
            match e.downcast::<hyper::Error>() {
                Ok(e) => wasmtime_wasi_http::Error::Hyper(*e),
                Err(e) => wasmtime_wasi_http::Error::InternalError(Some(e.to_string())),
            }
        })
        .boxed_unsync();
    let mut read = 0u64;
    Bounded {
        inner,
        check: Box::new(move |len| {
            read += len as u64;
            (read > limit).then(|| {
                exceeded.store(true, Ordering::Release);
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit))
            })
        }),
    }
}

/// A response body: from a handler, streamed as it writes (and cut off past
/// `http_max_response_body`), or a short text of the service's own.
///
/// It is an [`http_body::Body`] for servers, and [`Read`] for a blocking host:
/// `read` blocks until the handler wrote more, or the body ended.
pub struct ResponseBody {
    inner: UnsyncBoxBody<Bytes, io::Error>,
    /// Data read from a frame but not yet handed to a `read` caller.
    pending: Bytes,
    /// Held while the body is (a connection's request is busy until its answer is sent).
    hold: Option<Box<dyn Send>>,
}

/// Set when a request's instance ended other than by returning (stopped, past
/// its deadline, trapped, out of fuel) — before its store, and so the handler's
/// body, is dropped. wasmtime-wasi-http ends a dropped body as if it were
/// finished; a body that ends with this set ends in an error instead, so a
/// client never takes a cut-off response for a whole one (HTTP/1.1: the
/// connection is reset without the last chunk; HTTP/2: `RST_STREAM`).
#[derive(Clone, Default)]
pub(crate) struct CutOff(Arc<AtomicBool>);

impl CutOff {
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Nobody else holds it: its body was written whole or dropped (or
    /// never made), so setting it could change nothing.
    pub(crate) fn is_moot(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

/// Sets its [`CutOff`] when dropped unless the run returned: armed around a
/// handler's run, so that every way out but a normal return (a stop, a
/// deadline, a trap, the task dropped with the runtime) marks its body.
pub(crate) struct CutOffGuard(Option<CutOff>);

impl CutOffGuard {
    pub(crate) fn arm(cut: &CutOff) -> Self {
        CutOffGuard(Some(cut.clone()))
    }

    /// The handler returned normally: its body ends as it ends.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CutOffGuard {
    fn drop(&mut self) {
        if let Some(cut) = self.0.take() {
            cut.set();
        }
    }
}

impl ResponseBody {
    /// The handler's body, bounded at `limit` bytes; it ends in an error when
    /// `cut` says the instance did not end normally.
    pub(crate) fn streamed<B>(body: B, limit: u64, cut: CutOff) -> Self
    where
        B: Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
    {
        let mut sent = 0u64;
        let inner = CutOffBody {
            inner: body
                .map_err(|e| io::Error::other(e.to_string()))
                .boxed_unsync(),
            cut,
        }
        .boxed_unsync();
        let bounded = Bounded {
            inner,
            check: Box::new(move |len| {
                sent += len as u64;
                (sent > limit).then(|| {
                    log::warn!(
                        "a response body passed {limit} bytes (http_max_response_body): cut off"
                    );
                    io::Error::other(format!(
                        "the response body passed {limit} bytes (http_max_response_body): cut off"
                    ))
                })
            }),
        };
        ResponseBody {
            inner: bounded.boxed_unsync(),
            pending: Bytes::new(),
            hold: None,
        }
    }

    /// A short body of the service's own.
    pub(crate) fn text(text: impl Into<Bytes>) -> Self {
        ResponseBody {
            inner: Full::new(text.into())
                .map_err(|never| match never {})
                .boxed_unsync(),
            pending: Bytes::new(),
            hold: None,
        }
    }

    /// The body, holding `guard` until it is dropped.
    pub(crate) fn holding(mut self, guard: impl Send + 'static) -> Self {
        self.hold = Some(Box::new(guard));
        self
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if !self.pending.is_empty() {
            let data = std::mem::take(&mut self.pending);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Read for ResponseBody {
    /// Blocks until the handler wrote more (or the body ended: `Ok(0)`).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            match block_on_frame(&mut self.inner) {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending = data;
                    }
                }
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

/// Waits on this thread for the next frame: parks until a waker unparks it.
fn block_on_frame(
    body: &mut UnsyncBoxBody<Bytes, io::Error>,
) -> Option<Result<Frame<Bytes>, io::Error>> {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(&mut cx) {
            return frame;
        }
        std::thread::park();
    }
}

/// A handler's body whose end is an error when its instance was cut off.
struct CutOffBody {
    inner: UnsyncBoxBody<Bytes, io::Error>,
    cut: CutOff,
}

impl Body for CutOffBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) if self.cut.is_set() => Poll::Ready(Some(Err(io::Error::other(
                "the handler ended before it finished its response body: cut off",
            )))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Its end must be polled, to be told a cut-off one.
        false
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body whose data frames pass `check` (given each frame's length), which
/// may end it with an error: how both directions are bounded as they stream.
pub(crate) struct Bounded<E> {
    inner: UnsyncBoxBody<Bytes, E>,
    check: Box<dyn FnMut(usize) -> Option<E> + Send>,
}

impl<E> Body for Bounded<E> {
    type Data = Bytes;
    type Error = E;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(len) = frame.data_ref().map(Bytes::len) {
            if let Some(error) = (self.check)(len) {
                return Poll::Ready(Some(Err(error)));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
