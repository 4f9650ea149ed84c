//! A worker thread's life: take the next runnable task, poll it for one slice, again.

use super::cpu_clock::CpuMark;
use super::queue::{Message, RunQueue};
use super::task::Slice;
use crossbeam_channel::Sender;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Starts worker number `index` on `queue`; it exits at a `Shutdown` message,
/// dropping `exited` as it goes (so the pool can wait for its workers with a
/// deadline: a receiver sees every sender gone once all of them left).
pub(crate) fn spawn_worker(
    queue: &Arc<RunQueue>,
    index: usize,
    exited: Sender<()>,
) -> std::io::Result<JoinHandle<()>> {
    let queue = queue.clone();
    thread::Builder::new()
        .name(format!("wasmpool-worker-{index}"))
        .spawn(move || {
            let _exited = exited;
            work(&queue)
        })
}

/// A worker's life: poll the next runnable task for one slice, again and
/// again. `run_slice` never unwinds: a panic ends that task, not the worker.
fn work(queue: &RunQueue) {
    let mut mark = CpuMark::now();
    while let Message::Run(task) = queue.next_message() {
        if let Slice::Yielded = task.run_slice(&mut mark) {
            task.requeue();
        }
    }
}
