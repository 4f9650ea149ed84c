//! A container's stdout and stderr into containerd's FIFOs.
//!
//! The guest's writes go into a bounded queue as it makes them (the worker
//! never waits on a FIFO); a thread of the container's writes them out. What
//! does not fit is dropped, counted, and said on stderr once there is room.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use wasmpool::{LogStream, OutputSink};

/// How many chunks of output wait for a FIFO at most (a guest's write is one
/// chunk of at most the guest's own buffer; 1,024 of them bound a container).
const QUEUE_CHUNKS: usize = 1024;
/// The largest chunk queued as it is; a larger write is cut to this.
const CHUNK_BYTES: usize = 64 << 10;

enum Message {
    Write(LogStream, Vec<u8>),
    /// The guest ended: write a last line on stderr, then stop.
    End(Option<String>),
}

/// The container's end of its stdio.
pub struct Output {
    sender: Sender<Message>,
    forwarder: Option<JoinHandle<()>>,
}

impl Output {
    /// Opens the FIFOs (an empty path is no stream) and starts forwarding.
    pub fn open(id: &str, stdout: &str, stderr: &str) -> std::io::Result<(Output, OutputSink)> {
        let stdout = open_fifo(stdout)?;
        let stderr = open_fifo(stderr)?;
        let (sender, receiver) = crossbeam_channel::bounded(QUEUE_CHUNKS);
        let dropped = Arc::new(AtomicU64::new(0));
        let forwarder = std::thread::Builder::new()
            .name(format!("stdio-{id}"))
            .stack_size(64 << 10)
            .spawn({
                let dropped = dropped.clone();
                move || forward(receiver, stdout, stderr, &dropped)
            })?;
        let sink_sender = sender.clone();
        let sink = OutputSink::new(move |stream, bytes| {
            let bytes = &bytes[..bytes.len().min(CHUNK_BYTES)];
            match sink_sender.try_send(Message::Write(stream, bytes.to_vec())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    dropped.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        });
        Ok((
            Output {
                sender,
                forwarder: Some(forwarder),
            },
            sink,
        ))
    }

    /// Writes what is queued, then `note` on stderr, and closes the FIFOs;
    /// returns when they are closed (so `ctr` has every byte before the exit).
    pub fn finish(&mut self, note: Option<String>) {
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
    // containerd has the reading end open already, so this does not block.
    OpenOptions::new()
        .write(true)
        .open(Path::new(path))
        .map(Some)
}

fn forward(
    receiver: Receiver<Message>,
    mut stdout: Option<File>,
    mut stderr: Option<File>,
    dropped: &AtomicU64,
) {
    let mut said = 0;
    for message in receiver {
        let lost = dropped.load(Ordering::Relaxed);
        if lost > said {
            if let Some(err) = stderr.as_mut() {
                let _ = writeln!(err, "[wasmpool] {} bytes of output dropped: the container wrote faster than containerd read", lost - said);
            }
            said = lost;
        }
        match message {
            Message::Write(stream, bytes) => {
                let file = match stream {
                    LogStream::Stdout => stdout.as_mut(),
                    _ => stderr.as_mut(),
                };
                if let Some(file) = file {
                    // A reader gone (EPIPE) loses the output, not the guest.
                    let _ = file.write_all(&bytes);
                }
            }
            Message::End(note) => {
                if let (Some(note), Some(err)) = (note, stderr.as_mut()) {
                    let _ = writeln!(err, "{note}");
                }
                break;
            }
        }
    }
    drop(stdout.take());
    drop(stderr.take());
}
