//! A worker thread's life: take the next runnable task, poll it for one slice, again.
//!
//! A task that used up its fuel slice keeps its worker for up to [`QUANTUM`]
//! of wall time while the only other runnable tasks are ones that used up
//! theirs too (and, with none runnable, for as long as it runs). A task just
//! started or woken does not wait for the quantum: it goes first at the end
//! of the slice, so a short guest or a woken service waits one slice behind
//! a spinner, not a quantum (Linux's wake-up preemption, in short). A slice
//! is short (100k fuel, some 30–50 µs) so that a stop, a deadline or a
//! request's end is seen soon; a switch between spinning guests every slice
//! cost each one a cold cache and TLB — a busy Python service ran its guest
//! code 1.8x slower than `wasmtime serve` for it. Each slice still checks the
//! guest's stop and deadline; only the hand-over to the next guest waits.
//! (An HTTP request's instance yields every ten slices: see `serve::server`.)

use super::cpu_clock::CpuMark;
use super::queue::{Message, RunQueue};
use super::task::{Slice, Task};
use crossbeam_channel::Sender;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a guest that keeps using up its slices holds its worker while
/// others are runnable: the scheduling latency one busy neighbour adds.
pub(crate) const QUANTUM: Duration = Duration::from_millis(1);

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
    let mut next: Option<(Arc<Task>, Instant)> = None;
    loop {
        let (task, since) = match next.take() {
            Some(held) => held,
            None => match queue.next_message() {
                Message::Run(task) | Message::Resume(task) => (task, Instant::now()),
                Message::Shutdown => return,
            },
        };
        if let Slice::Yielded = task.run_slice(&mut mark) {
            let now = Instant::now();
            let held = now.duration_since(since);
            next = if held < QUANTUM && !queue.has_fresh() {
                Some((task, since))
            } else {
                queue.requeue(task).map(|task| (task, now))
            };
        }
    }
}
