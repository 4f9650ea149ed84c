//! A container's stdout and stderr into containerd's FIFOs.
//!
//! The guest's writes go into a queue bounded to 1 MiB as it makes them (the
//! worker never waits on a FIFO); a thread of the container's writes them out.
//! What does not fit is dropped, counted, and said on stderr once there is room.
//! The FIFOs are written without blocking: once the container ended, what is
//! still queued gets [`FLUSH_LIMIT`] to reach a reader, so a reader that does
//! not read cannot keep a task from ending (or a `kill` from taking effect).

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmpool::{LogStream, OutputSink};

/// How many bytes of a container's output may wait for its FIFO.
const QUEUE_BYTES: usize = 1 << 20;
/// How many writes may wait (small writes cost their allocation, not bytes).
const QUEUE_CHUNKS: usize = 4096;
/// How long the last of a container's output may wait for a reader.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(10);

enum Message {
    Write(LogStream, Vec<u8>),
    /// The guest ended: write a last line on stderr, then stop.
    End(Option<String>),
}

/// The container's end of its stdio.
pub struct Output {
    sender: Sender<Message>,
    forwarder: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
}

impl Output {
    /// Opens the FIFOs (an empty path is no stream) and starts forwarding.
    pub fn open(id: &str, stdout: &str, stderr: &str) -> std::io::Result<(Output, OutputSink)> {
        let stdout = open_fifo(stdout)?;
        let stderr = open_fifo(stderr)?;
        let (sender, receiver) = crossbeam_channel::bounded(QUEUE_CHUNKS);
        let counts = Arc::new(Counts::default());
        let forwarder = std::thread::Builder::new()
            .name(format!("stdio-{id}"))
            .stack_size(64 << 10)
            .spawn({
                let counts = counts.clone();
                move || forward(receiver, stdout, stderr, &counts)
            })?;
        let sink_sender = sender.clone();
        let counts_kept = counts.clone();
        let sink = OutputSink::new(move |stream, bytes| {
            let queued = counts.queued.fetch_add(bytes.len(), Ordering::AcqRel);
            let message = Message::Write(stream, bytes.to_vec());
            let sent = queued + bytes.len() <= QUEUE_BYTES
                && match sink_sender.try_send(message) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
                };
            if !sent {
                counts.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
                counts
                    .dropped
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
        });
        Ok((
            Output {
                sender,
                forwarder: Some(forwarder),
                counts: counts_kept,
            },
            sink,
        ))
    }

    /// Writes what is queued, then `note` on stderr, and closes the FIFOs;
    /// returns when they are closed (so `ctr` has every byte before the exit).
    pub fn finish(&mut self, note: Option<String>) {
        let _ = self.counts.flush_by.set(Instant::now() + FLUSH_LIMIT);
        let _ = self.sender.send(Message::End(note));
        if let Some(forwarder) = self.forwarder.take() {
            let _ = forwarder.join();
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // A container deleted before it ran: close the FIFOs all the same.
        self.finish(None);
    }
}

fn open_fifo(path: &str) -> std::io::Result<Option<File>> {
    if path.is_empty() {
        return Ok(None);
    }
    // containerd has the reading end open already, so this opens at once;
    // writes do not block either (see `write_all_by`).
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(Path::new(path))
        .map(Some)
}

/// Writes all of `bytes` to a non-blocking FIFO, waiting for room as long as
/// the container runs, and past `flush_by` (set once it ended) not at all:
/// false when the rest was dropped.
fn write_all_by(file: &mut File, mut bytes: &[u8], flush_by: &OnceLock<Instant>) -> bool {
    use std::os::fd::AsRawFd;
    while !bytes.is_empty() {
        match file.write(bytes) {
            Ok(0) => return false,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let wait = match flush_by.get() {
                    Some(by) => match by.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => left.min(Duration::from_millis(100)),
                        _ => return false,
                    },
                    // Looked at again every 100 ms: the container may end meanwhile.
                    None => Duration::from_millis(100),
                };
                let mut poll = libc::pollfd {
                    fd: file.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut poll, 1, wait.as_millis() as libc::c_int) };
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A reader gone (EPIPE) loses the output, not the guest.
            Err(_) => return false,
        }
    }
    true
}

/// Bytes waiting in the queue, bytes dropped because it was full, and when
/// the last of it must be written by (set as the container ends).
#[derive(Default)]
struct Counts {
    queued: AtomicUsize,
    dropped: AtomicU64,
    flush_by: OnceLock<Instant>,
}

fn forward(
    receiver: Receiver<Message>,
    mut stdout: Option<File>,
    mut stderr: Option<File>,
    counts: &Counts,
) {
    let mut said = 0;
    for message in receiver {
        let lost = counts.dropped.load(Ordering::Relaxed);
        if lost > said {
            if let Some(err) = stderr.as_mut() {
                let line = format!("[wasmpool] {} bytes of output dropped: the container wrote faster than containerd read\n", lost - said);
                write_all_by(err, line.as_bytes(), &counts.flush_by);
            }
            said = lost;
        }
        match message {
            Message::Write(stream, bytes) => {
                counts.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
                let file = match stream {
                    LogStream::Stdout => stdout.as_mut(),
                    _ => stderr.as_mut(),
                };
                if let Some(file) = file {
                    write_all_by(file, &bytes, &counts.flush_by);
                }
            }
            Message::End(note) => {
                if let (Some(note), Some(err)) = (note, stderr.as_mut()) {
                    write_all_by(err, format!("{note}\n").as_bytes(), &counts.flush_by);
                }
                break;
            }
        }
    }
}
