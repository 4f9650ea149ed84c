//! A task: one started container's future, and how a wake-up puts it back on the run queue.
//!
//! This is the `Runnable` of async-task, kept small: the run queue holds
//! `Arc<Task>`s, and a poller — a worker, or a thread waiting for this very
//! container — claims the task, polls it for one fuel slice, and releases it.
//! Two bits make that safe: `SCHEDULED` (a poll is owed) and `RUNNING` (a
//! poller holds the task). A wake-up while it runs is not lost: the poller
//! sees `SCHEDULED` when it releases the task and queues it again.
//!
//! A third bit, `DEFERRED`, marks a fresh start left for its waiter: it sits
//! in the run queue's deferred list instead of waking a worker, and whoever
//! comes first takes it — the waiter (claiming it), the watching worker, or
//! any wake-up (queuing it).

use crate::instance::Instance;
use crate::outcome::Outcome;
use crate::pool::RunQueue;
use crate::stats::CpuMark;
use crate::timers::{TimerKey, Timers};
use parking_lot::Mutex;
use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};

/// The whole run of one container: compile, instantiate, call, classify.
pub(crate) type GuestFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A poll is owed: the task is in the run queue, or its poller will queue it.
const SCHEDULED: u8 = 1;
/// A poller holds the task.
const RUNNING: u8 = 2;
/// Started, owed its first poll, and in the deferred list rather than the run queue.
const DEFERRED: u8 = 4;

/// One started container as the scheduler sees it.
pub(crate) struct Task {
    pub(crate) instance: Arc<Instance>,
    /// `None` once the run ended; only the poller holding `RUNNING` locks it.
    future: Mutex<Option<GuestFuture>>,
    state: AtomicU8,
    queue: Weak<RunQueue>,
    timers: Arc<Timers>,
    /// Fuel of one slice, counted into the live stats at each slice's end.
    fuel_slice: u64,
    /// The deadline wake-up, armed the first time the task parks.
    timer: Mutex<Option<TimerKey>>,
}

/// How one poll of a task ended.
pub(crate) enum Slice {
    /// The run ended (or had ended): waiters have the outcome.
    Ended,
    /// The guest used up its slice and is runnable again.
    Yielded,
    /// The guest waits on a host event (or another poller holds the task).
    Parked,
}

impl Task {
    pub(crate) fn new(
        instance: Arc<Instance>,
        future: GuestFuture,
        queue: &Arc<RunQueue>,
        timers: &Arc<Timers>,
        fuel_slice: u64,
    ) -> Self {
        Task {
            instance,
            future: Mutex::new(Some(future)),
            state: AtomicU8::new(0),
            queue: Arc::downgrade(queue),
            timers: timers.clone(),
            fuel_slice,
            timer: Mutex::new(None),
        }
    }

    /// Owes the task a poll: queues it unless it is queued already or a
    /// poller holds it (that poller queues it again as it lets go).
    pub(crate) fn schedule(self: &Arc<Self>) {
        let previous = self.state.fetch_or(SCHEDULED, Ordering::AcqRel);
        if previous & DEFERRED != 0 {
            self.expedite();
        } else if previous & (SCHEDULED | RUNNING) == 0 {
            self.push();
        }
    }

    /// Owes a fresh task its first poll without waking a worker when a worker
    /// watches the deferred list: a waiter about to run the task itself then
    /// costs no wake-up, and otherwise the watcher queues it within a tick.
    /// A task that must compile first always goes to the run queue.
    pub(crate) fn schedule_start(self: &Arc<Self>) {
        let queue = match self.queue.upgrade() {
            Some(queue) if self.is_compiled() => queue,
            _ => return self.schedule(),
        };
        self.state.fetch_or(SCHEDULED | DEFERRED, Ordering::AcqRel);
        if !queue.defer(self) {
            self.expedite();
        }
    }

    /// Moves a deferred task to the run queue, unless someone took it first; whether it did.
    pub(crate) fn expedite(self: &Arc<Self>) -> bool {
        let previous = self.state.fetch_and(!DEFERRED, Ordering::AcqRel);
        // Claiming clears DEFERRED: still set, no one polls the task or holds a queue place for it.
        if previous & DEFERRED == 0 {
            return false;
        }
        self.push();
        true
    }

    fn push(self: &Arc<Self>) {
        if let Some(queue) = self.queue.upgrade() {
            queue.push_task(self.clone());
        }
    }

    /// Whether a poll is owed and no poller holds the task.
    pub(crate) fn is_runnable(&self) -> bool {
        self.state.load(Ordering::Acquire) & (SCHEDULED | RUNNING) == SCHEDULED
    }

    /// Takes the task for one poll if a poll is owed and no one holds it
    /// (taking it out of the deferred list's hands too).
    fn claim(&self) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        while state & (SCHEDULED | RUNNING) == SCHEDULED {
            match self.state.compare_exchange_weak(
                state,
                RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
        false
    }

    /// Claims the task and polls it once on this thread. `Parked` when it
    /// could not be claimed: another poller has it, or no poll is owed.
    /// `mark` is this thread's CPU clock reading, moved on to the slice's end.
    pub(crate) fn run_slice(self: &Arc<Self>, mark: &mut Option<CpuMark>) -> Slice {
        if !self.claim() {
            return Slice::Parked;
        }
        let instance = &self.instance;
        let mut slot = self.future.lock();
        let polled = match slot.as_mut() {
            // Stopped or removed while it waited for a poller: it never runs.
            Some(_) if instance.has_ended() => None,
            Some(future) => {
                let waker = Waker::from(self.clone());
                let mut cx = Context::from_waker(&waker);
                instance.stats.slice_begin(*mark);
                let polled = panic::catch_unwind(AssertUnwindSafe(|| {
                    wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| {
                        future.as_mut().poll(&mut cx)
                    })
                }));
                *mark = instance.stats.slice_end().or(*mark);
                Some(polled)
            }
            None => None,
        };
        let outcome = match polled {
            Some(Ok(Poll::Pending)) => {
                drop(slot);
                return self.release();
            }
            Some(Ok(Poll::Ready(outcome))) => Some(outcome),
            Some(Err(payload)) => Some(Outcome::Panicked(panic_message(payload.as_ref()))),
            None => None,
        };
        // The store and everything the guest held go before waiters hear of the end.
        slot.take();
        drop(slot);
        if let Some(key) = self.timer.lock().take() {
            self.timers.cancel(key);
        }
        if let Some(outcome) = outcome {
            log::debug!("container '{}' ended: {outcome}", instance.id);
            instance.finish(outcome);
        }
        instance.control.detach();
        // Ended for good: later wake-ups find RUNNING and queue nothing.
        Slice::Ended
    }

    /// Lets go of a task whose poll returned `Pending`.
    fn release(self: &Arc<Self>) -> Slice {
        let previous = self.state.fetch_and(!RUNNING, Ordering::AcqRel);
        if previous & SCHEDULED != 0 {
            // Woken during the poll: the guest used up a fuel slice.
            self.instance
                .stats
                .fuel
                .fetch_add(self.fuel_slice, Ordering::Relaxed);
            return Slice::Yielded;
        }
        // A parked guest is not polled: its deadline must wake it.
        if let Some(deadline) = self.instance.control.deadline() {
            let mut timer = self.timer.lock();
            if timer.is_none() {
                *timer = Some(self.timers.arm(deadline, self));
            }
        }
        Slice::Parked
    }

    /// Queues a task that yielded, for the next poller in line.
    pub(crate) fn requeue(self: &Arc<Self>) {
        self.push();
    }

    /// Whether the first poll can run without compiling (the artifact is ready).
    pub(crate) fn is_compiled(&self) -> bool {
        self.instance.artifact.is_compiled()
    }

    /// Drops the future (cancelling the guest where it stands) and ends the
    /// container with `outcome`, unless it already ended. Only once no poller runs.
    pub(crate) fn fail(&self, outcome: Outcome) {
        self.state.fetch_or(RUNNING, Ordering::AcqRel);
        let future = self.future.lock().take();
        drop(future);
        self.instance.finish(outcome);
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.schedule();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.schedule();
    }
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
