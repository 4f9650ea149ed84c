//! A container's output: a bounded line buffer that guests write into and hosts read or follow.

use crate::settings::{LogStream, OutputSink};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

/// Longest line kept whole; a longer run of bytes without a newline is split here.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// What a kept line costs against `log_limit_bytes` beyond its text: its
/// entry, twice over for the slack of the queue that holds it. An empty line is not free.
pub const LOG_LINE_OVERHEAD: usize = 2 * std::mem::size_of::<LogEntry>();

/// One line the guest wrote, with when and where it wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When the line was completed.
    pub timestamp: SystemTime,
    /// Which stream it came from.
    pub stream: LogStream,
    /// The line, without its newline; invalid UTF-8 is replaced.
    pub message: String,
    /// For a service: the number of the request whose handler wrote the line
    /// (or, on [`LogStream::Runtime`] lines, that the line is about).
    pub request: Option<u64>,
    /// For a line logged through `wasi:logging` (on [`LogStream::Stderr`]),
    /// its level; the message is then `context: message`.
    pub level: Option<crate::settings::LogLevel>,
}

/// The lines of one container, bounded in bytes, dropping the oldest first.
///
/// Each line counts its text plus [`LOG_LINE_OVERHEAD`], so the buffer holds at
/// most `limit_bytes` (or its newest line, if that alone costs more) plus two
/// unfinished lines, whatever the guest writes.
pub(crate) struct LogBuffer {
    state: Mutex<LogState>,
    grew: Condvar,
    limit_bytes: usize,
}

#[derive(Default)]
struct LogState {
    lines: VecDeque<LogEntry>,
    bytes: usize,
    /// Sequence number of `lines[0]`; every line ever kept has one.
    first_seq: u64,
    dropped: u64,
    /// Bytes of the dropped lines' text.
    dropped_bytes: u64,
    partial: [Vec<u8>; 2],
    closed: bool,
}

impl LogBuffer {
    pub(crate) fn new(limit_bytes: usize) -> Self {
        LogBuffer {
            state: Mutex::new(LogState::default()),
            grew: Condvar::new(),
            limit_bytes,
        }
    }

    /// Appends what the guest wrote; complete lines become entries at once.
    pub(crate) fn write(&self, stream: LogStream, bytes: &[u8]) {
        let slot = stream_slot(stream);
        let mut state = self.state.lock();
        let mut partial = std::mem::take(&mut state.partial[slot]);
        let mut added = false;
        split_lines(&mut partial, bytes, |line| {
            self.push(&mut state, stream, None, line);
            added = true;
        });
        state.partial[slot] = partial;
        drop(state);
        if added {
            self.grew.notify_all();
        }
    }

    /// Appends complete lines one request's handler wrote (its unfinished
    /// line stays in `partial`, which belongs to that request).
    pub(crate) fn write_request(
        &self,
        request: u64,
        stream: LogStream,
        partial: &mut Vec<u8>,
        bytes: &[u8],
    ) {
        let mut lines = Vec::new();
        split_lines(partial, bytes, |line| lines.push(line.to_vec()));
        self.push_lines(Some(request), stream, lines);
    }

    /// Appends whole lines about (or written by) one request, or the container.
    pub(crate) fn push_lines(&self, request: Option<u64>, stream: LogStream, lines: Vec<Vec<u8>>) {
        if lines.is_empty() {
            return;
        }
        let mut state = self.state.lock();
        for line in &lines {
            self.push(&mut state, stream, request, line);
        }
        drop(state);
        self.grew.notify_all();
    }

    fn push(&self, state: &mut LogState, stream: LogStream, request: Option<u64>, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let message = String::from_utf8_lossy(line).into_owned();
        state.bytes += line_cost(&message);
        state.lines.push_back(LogEntry {
            timestamp: SystemTime::now(),
            stream,
            message,
            request,
            level: None,
        });
        while state.bytes > self.limit_bytes && state.lines.len() > 1 {
            let Some(old) = state.lines.pop_front() else {
                break;
            };
            state.bytes -= line_cost(&old.message);
            state.first_seq += 1;
            state.dropped += 1;
            state.dropped_bytes += old.message.len() as u64;
        }
    }

    /// Appends one line a guest logged through `wasi:logging`.
    pub(crate) fn push_logged(
        &self,
        request: Option<u64>,
        level: crate::settings::LogLevel,
        message: String,
    ) {
        let mut state = self.state.lock();
        self.push(&mut state, LogStream::Stderr, request, message.as_bytes());
        if let Some(entry) = state.lines.back_mut() {
            entry.level = Some(level);
        }
        drop(state);
        self.grew.notify_all();
    }

    /// Ends the log: unfinished lines become entries and followers see the end.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        for (slot, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            if !state.partial[slot].is_empty() {
                let line = std::mem::take(&mut state.partial[slot]);
                self.push(&mut state, stream, None, &line);
            }
        }
        state.closed = true;
        drop(state);
        self.grew.notify_all();
    }

    /// The last `tail` lines (all when `tail` is 0), led by a note if lines were dropped.
    pub(crate) fn tail(&self, tail: usize) -> Vec<LogEntry> {
        let state = self.state.lock();
        let skip = if tail == 0 {
            0
        } else {
            state.lines.len().saturating_sub(tail)
        };
        let mut out = Vec::with_capacity(state.lines.len() - skip + 1);
        if state.dropped > 0 {
            out.push(dropped_note(state.dropped, self.limit_bytes));
        }
        out.extend(state.lines.iter().skip(skip).cloned());
        out
    }

    /// Bytes of text of the lines dropped so far.
    pub(crate) fn dropped_bytes(&self) -> u64 {
        self.state.lock().dropped_bytes
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.state.lock().dropped
    }
}

/// Splits `bytes` into lines after what `partial` holds, calling `line` for
/// each complete one (a run of [`MAX_LINE_BYTES`] without a newline counts as
/// one); the unfinished rest stays in `partial`.
fn split_lines(partial: &mut Vec<u8>, mut bytes: &[u8], mut line: impl FnMut(&[u8])) {
    while !bytes.is_empty() {
        let room = MAX_LINE_BYTES - partial.len();
        let take = bytes.len().min(room);
        let (chunk, rest) = bytes.split_at(take);
        match chunk.iter().position(|&b| b == b'\n') {
            Some(newline) => {
                partial.extend_from_slice(&chunk[..newline]);
                bytes = &bytes[newline + 1..];
            }
            None => {
                partial.extend_from_slice(chunk);
                bytes = rest;
                if partial.len() < MAX_LINE_BYTES {
                    continue;
                }
            }
        }
        line(partial);
        partial.clear();
    }
}

fn line_cost(message: &str) -> usize {
    message.len() + LOG_LINE_OVERHEAD
}

fn stream_slot(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr | LogStream::Runtime => 1,
    }
}

fn dropped_note(count: u64, limit_bytes: usize) -> LogEntry {
    LogEntry {
        level: None,
        timestamp: SystemTime::now(),
        stream: LogStream::Runtime,
        message: format!(
            "wasmpool: {count} earlier log lines were dropped (the log keeps {limit_bytes} bytes)"
        ),
        request: None,
    }
}

/// Follows a container's log: yields each line as it is written, and ends when
/// the container has ended and every line was yielded.
///
/// Lines dropped before they were read are reported by one
/// [`LogStream::Runtime`] entry in their place.
pub struct LogFollower {
    buffer: Arc<LogBuffer>,
    next_seq: u64,
}

impl LogFollower {
    pub(crate) fn new(buffer: Arc<LogBuffer>) -> Self {
        LogFollower {
            buffer,
            next_seq: 0,
        }
    }
}

impl Iterator for LogFollower {
    type Item = LogEntry;

    fn next(&mut self) -> Option<LogEntry> {
        let mut state = self.buffer.state.lock();
        loop {
            if self.next_seq < state.first_seq {
                let missed = state.first_seq - self.next_seq;
                self.next_seq = state.first_seq;
                return Some(dropped_note(missed, self.buffer.limit_bytes));
            }
            let index = (self.next_seq - state.first_seq) as usize;
            if let Some(entry) = state.lines.get(index) {
                self.next_seq += 1;
                return Some(entry.clone());
            }
            if state.closed {
                return None;
            }
            self.buffer.grew.wait(&mut state);
        }
    }
}

/// One of the guest's output streams: writes go to the log buffer and the sink.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    pub(crate) buffer: Arc<LogBuffer>,
    pub(crate) stream: LogStream,
    pub(crate) sink: Option<OutputSink>,
    /// For a request's handler: its number and its own unfinished line, so
    /// lines of concurrent requests never mix.
    pub(crate) request: Option<(CurrentRequest, Arc<Mutex<Vec<u8>>>)>,
}

/// The number of the request a handler's output belongs to. A fresh instance
/// serves one request; a reused one is switched to each request it takes, so
/// its lines go to the request it handles (when it handles several at once,
/// to the one it took last).
#[derive(Clone, Default)]
pub(crate) struct CurrentRequest(Arc<std::sync::atomic::AtomicU64>);

impl CurrentRequest {
    pub(crate) fn new(request: u64) -> Self {
        CurrentRequest(Arc::new(request.into()))
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, request: u64) {
        self.0.store(request, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What one request's handler has written and not yet ended with a newline,
/// per stream; shared by its two [`GuestOutput`]s.
#[derive(Clone, Default)]
pub(crate) struct RequestOutput {
    pub(crate) request: CurrentRequest,
    partial: [Arc<Mutex<Vec<u8>>>; 2],
}

impl RequestOutput {
    pub(crate) fn new(request: u64) -> Self {
        RequestOutput {
            request: CurrentRequest::new(request),
            partial: Default::default(),
        }
    }

    /// Moves the output to `request` (a reused instance took it): what the
    /// last one left unfinished becomes its lines first.
    pub(crate) fn switch_to(&self, request: u64, buffer: &LogBuffer) {
        if self.request.get() != request {
            self.flush(buffer);
            self.request.set(request);
        }
    }

    /// The output stream `stream` of this request, into `buffer`.
    pub(crate) fn stream(
        &self,
        buffer: &Arc<LogBuffer>,
        stream: LogStream,
        sink: Option<OutputSink>,
    ) -> GuestOutput {
        GuestOutput {
            buffer: buffer.clone(),
            stream,
            sink,
            request: Some((
                self.request.clone(),
                self.partial[stream_slot(stream)].clone(),
            )),
        }
    }

    /// Ends the request's output: unfinished lines become entries.
    pub(crate) fn flush(&self, buffer: &LogBuffer) {
        for (slot, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            let line = std::mem::take(&mut *self.partial[slot].lock());
            if !line.is_empty() {
                buffer.push_lines(Some(self.request.get()), stream, vec![line]);
            }
        }
    }
}

impl GuestOutput {
    fn write(&self, bytes: &[u8]) {
        if let Some(sink) = &self.sink {
            (sink.0)(self.stream, bytes);
        }
        match &self.request {
            Some((request, partial)) => {
                let mut partial = partial.lock();
                self.buffer
                    .write_request(request.get(), self.stream, &mut partial, bytes);
            }
            None => self.buffer.write(self.stream, bytes),
        }
    }
}

mod wasi_stream {
    //! The WASI side of [`GuestOutput`]: a stream that is always ready and never fails.
    //!
    //! wasmtime-wasi's `StdoutStream` names tokio's `AsyncWrite` trait in its
    //! signature, so this is the one place our code names it; no tokio runtime is
    //! started or entered here, every write completes at once.
    use super::GuestOutput;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::AsyncWrite;
    use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
    use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

    /// How much one write may carry; the guest loops for more.
    const WRITE_BUDGET: usize = 64 * 1024;

    impl IsTerminal for GuestOutput {
        fn is_terminal(&self) -> bool {
            false
        }
    }

    impl StdoutStream for GuestOutput {
        fn p2_stream(&self) -> Box<dyn OutputStream> {
            Box::new(self.clone())
        }

        fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
            Box::new(self.clone())
        }
    }

    impl OutputStream for GuestOutput {
        fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
            GuestOutput::write(self, &bytes);
            Ok(())
        }

        fn flush(&mut self) -> StreamResult<()> {
            Ok(())
        }

        fn check_write(&mut self) -> StreamResult<usize> {
            Ok(WRITE_BUDGET)
        }
    }

    #[wasmtime_wasi::async_trait]
    impl Pollable for GuestOutput {
        async fn ready(&mut self) {}
    }

    impl AsyncWrite for GuestOutput {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            GuestOutput::write(&self, buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}
