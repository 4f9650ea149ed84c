//! The fixed pool of worker threads, the run queue they share, and admission.
//!
//! Every worker is a small scheduler: it takes the next runnable task from the
//! one shared run queue, polls it for one fuel slice (or until it waits on a
//! host event), and takes the next. A guest that waits is parked off every
//! worker until its waker queues it again; CPU-bound guests take turns, one
//! slice each, in queue order. A worker blocks only when no task is runnable.
//! A thread blocked in [`WaitHandle::wait`](crate::WaitHandle::wait) on a
//! runnable guest polls that guest itself meanwhile, so a start-then-wait
//! costs no thread hand-off.

use crate::outcome::Outcome;
use crate::stats::CpuMark;
use crate::task::{Slice, Task};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// The set of instructions a worker knows how to process.
pub(crate) enum Message {
    /// Poll this task once.
    Run(Arc<Task>),
    /// Exit the worker loop.
    Shutdown,
}

/// The queue of runnable tasks every worker takes from.
pub(crate) struct RunQueue {
    sender: Sender<Message>,
    receiver: Receiver<Message>,
}

impl RunQueue {
    pub(crate) fn new() -> Arc<Self> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        Arc::new(RunQueue { sender, receiver })
    }

    pub(crate) fn push_task(&self, task: Arc<Task>) {
        // The receiver lives as long as the queue: sending cannot fail.
        let _ = self.sender.send(Message::Run(task));
    }

    pub(crate) fn push_shutdown(&self) {
        let _ = self.sender.send(Message::Shutdown);
    }

    /// Tasks still queued once the workers are gone.
    pub(crate) fn drain_tasks(&self) -> Vec<Arc<Task>> {
        self.receiver
            .try_iter()
            .filter_map(|message| match message {
                Message::Run(task) => Some(task),
                Message::Shutdown => None,
            })
            .collect()
    }
}

/// Bounds how many started containers may be live (queued, running or parked) at once.
pub(crate) struct Admission {
    live: Mutex<usize>,
    idle: Condvar,
    limit: usize,
}

impl Admission {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Admission {
            live: Mutex::new(0),
            idle: Condvar::new(),
            limit,
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes a place, or says there is none.
    pub(crate) fn try_admit(&self) -> bool {
        let mut live = self.live.lock();
        if *live >= self.limit {
            return false;
        }
        *live += 1;
        true
    }

    /// Gives a place back; called once per admitted container, as it ends.
    pub(crate) fn release(&self) {
        let mut live = self.live.lock();
        *live -= 1;
        if *live == 0 {
            self.idle.notify_all();
        }
    }

    /// Waits until no container is live, or `deadline` (`None`: no limit); whether none is.
    pub(crate) fn wait_idle(&self, deadline: Option<Instant>) -> bool {
        let mut live = self.live.lock();
        while *live > 0 {
            match deadline {
                Some(deadline) => {
                    if self.idle.wait_until(&mut live, deadline).timed_out() {
                        return *live == 0;
                    }
                }
                None => self.idle.wait(&mut live),
            }
        }
        true
    }
}

/// Starts worker number `index` on `queue`; it exits at a `Shutdown` message.
pub(crate) fn spawn_worker(queue: &Arc<RunQueue>, index: usize) -> std::io::Result<JoinHandle<()>> {
    let queue = queue.clone();
    thread::Builder::new()
        .name(format!("wasmpool-worker-{index}"))
        .spawn(move || work(&queue))
}

/// A worker's life: poll the next runnable task for one slice, again and again.
fn work(queue: &RunQueue) {
    let mut mark = CpuMark::now();
    while let Ok(Message::Run(task)) = queue.receiver.recv() {
        // `run_slice` catches a guest's panics itself; this keeps the worker
        // serving even if our own bookkeeping around it panicked.
        match panic::catch_unwind(AssertUnwindSafe(|| task.run_slice(&mut mark))) {
            Ok(Slice::Yielded) => task.requeue(),
            Ok(Slice::Ended | Slice::Parked) => {}
            Err(_) => task.fail(Outcome::Panicked(
                "the worker failed while running the container".into(),
            )),
        }
    }
}
