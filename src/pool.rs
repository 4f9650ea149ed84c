//! The fixed pool of worker threads, the run queue they share, and admission.
//!
//! Every worker is a small scheduler: it takes the next runnable task from the
//! one shared run queue, polls it for one fuel slice (or until it waits on a
//! host event), and takes the next. A guest that waits is parked off every
//! worker until its waker queues it again; CPU-bound guests take turns, one
//! slice each, in queue order. A worker blocks only when no task is runnable.

use crate::cpu_clock::ThreadClock;
use crate::outcome::Outcome;
use crate::task::Task;
use crate::timers::Timers;
use crate::Shared;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::{Condvar, Mutex};
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
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

    /// Waits until no container is live, or `deadline`; whether none is.
    pub(crate) fn wait_idle(&self, deadline: Instant) -> bool {
        let mut live = self.live.lock();
        while *live > 0 {
            if self.idle.wait_until(&mut live, deadline).timed_out() {
                return *live == 0;
            }
        }
        true
    }
}

/// Starts worker number `index` on `queue`; it exits at a `Shutdown` message.
pub(crate) fn spawn_worker(
    shared: &Arc<Shared>,
    queue: &Arc<RunQueue>,
    timers: &Arc<Timers>,
    index: usize,
) -> std::io::Result<JoinHandle<()>> {
    let worker = Worker {
        shared: shared.clone(),
        queue: queue.clone(),
        timers: timers.clone(),
    };
    thread::Builder::new()
        .name(format!("wasmpool-worker-{index}"))
        .spawn(move || worker.run())
}

struct Worker {
    shared: Arc<Shared>,
    queue: Arc<RunQueue>,
    timers: Arc<Timers>,
}

impl Worker {
    fn run(self) {
        let clock = ThreadClock::current();
        while let Some(task) = self.next_task() {
            // `poll_once` catches a guest's panics itself; this keeps the worker
            // serving even if our own bookkeeping around it panicked.
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| self.poll_once(&task, clock)));
            if outcome.is_err() {
                task.future.lock().take();
                task.instance.finish(Outcome::Panicked(
                    "the worker failed while running the container".into(),
                ));
            }
        }
    }

    /// The next runnable task; `None` at shutdown.
    fn next_task(&self) -> Option<Arc<Task>> {
        let receiver = &self.queue.receiver;
        let message = match receiver.try_recv() {
            Ok(message) => message,
            Err(TryRecvError::Empty) => spin_then_block(receiver)?,
            Err(TryRecvError::Disconnected) => return None,
        };
        match message {
            Message::Run(task) => Some(task),
            Message::Shutdown => None,
        }
    }

    /// Polls `task` once: one fuel slice, or until the guest waits on a host event.
    fn poll_once(&self, task: &Arc<Task>, clock: Option<ThreadClock>) {
        task.unschedule();
        let instance = &task.instance;
        let mut slot = task.future.lock();
        let Some(future) = slot.as_mut() else {
            return; // ended already; a late wake-up queued it
        };
        if instance.has_ended() {
            // Stopped or removed while it waited for a worker.
            slot.take();
            return;
        }
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        instance.stats.slice_begin(clock);
        let polled = panic::catch_unwind(AssertUnwindSafe(|| {
            wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| future.as_mut().poll(&mut cx))
        }));
        instance.stats.slice_end();
        let outcome = match polled {
            Ok(Poll::Pending) => {
                drop(slot);
                if task.is_scheduled() {
                    // Woken during the poll: the guest used up a fuel slice.
                    let slice = self.shared.config.fuel_slice;
                    instance.stats.fuel.fetch_add(slice, Ordering::Relaxed);
                } else {
                    self.arm_deadline(task);
                }
                return;
            }
            Ok(Poll::Ready(outcome)) => outcome,
            Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
        };
        // The store and everything the guest held go before waiters hear of the end.
        slot.take();
        drop(slot);
        if let Some(key) = task.timer.lock().take() {
            self.timers.cancel(key);
        }
        log::debug!("container '{}' ended: {outcome}", instance.id);
        instance.control.detach();
        instance.finish(outcome);
    }

    /// A parked guest is not polled: its deadline must wake it.
    fn arm_deadline(&self, task: &Arc<Task>) {
        let Some(deadline) = task.instance.control.deadline() else {
            return;
        };
        let mut timer = task.timer.lock();
        if timer.is_none() {
            *timer = Some(self.timers.arm(deadline, task));
        }
    }
}

/// How many times an idle worker looks at the queue before it blocks.
const IDLE_SPINS: u32 = 4_000;

/// Looks for a message for a few microseconds without giving the CPU away,
/// then blocks: back-to-back starts then cost no thread wake-up, and on a busy
/// host a worker never hands its core to a competitor just to look again.
fn spin_then_block(receiver: &Receiver<Message>) -> Option<Message> {
    for _ in 0..IDLE_SPINS {
        std::hint::spin_loop();
        match receiver.try_recv() {
            Ok(message) => return Some(message),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
    }
    receiver.recv().ok()
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}
