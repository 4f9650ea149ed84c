//! A task: one started container's future, and how a wake-up puts it back on the run queue.
//!
//! This is the `Runnable` of async-task, kept small: the run queue holds
//! `Arc<Task>`s, a worker polls the future for one fuel slice, and waking the
//! task pushes it to the back of the queue unless it is already there.

use crate::instance::Instance;
use crate::outcome::Outcome;
use crate::pool::RunQueue;
use crate::timers::TimerKey;
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::Wake;

/// The whole run of one container: compile, instantiate, call, classify.
pub(crate) type GuestFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One started container as the scheduler sees it.
pub(crate) struct Task {
    pub(crate) instance: Arc<Instance>,
    /// `None` once the run ended; only the worker polling the task locks it.
    pub(crate) future: Mutex<Option<GuestFuture>>,
    /// Whether the task sits in the run queue (or is about to): a wake-up then adds nothing.
    scheduled: AtomicBool,
    queue: Weak<RunQueue>,
    /// The deadline wake-up, armed the first time the task parks.
    pub(crate) timer: Mutex<Option<TimerKey>>,
}

impl Task {
    pub(crate) fn new(instance: Arc<Instance>, future: GuestFuture, queue: &Arc<RunQueue>) -> Self {
        Task {
            instance,
            future: Mutex::new(Some(future)),
            scheduled: AtomicBool::new(false),
            queue: Arc::downgrade(queue),
            timer: Mutex::new(None),
        }
    }

    /// Puts the task at the back of the run queue unless it is queued already.
    pub(crate) fn schedule(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            if let Some(queue) = self.queue.upgrade() {
                queue.push_task(self.clone());
            }
        }
    }

    /// Called by the worker before a poll: a wake-up from now on queues the task again.
    pub(crate) fn unschedule(&self) {
        self.scheduled.store(false, Ordering::Release);
    }

    /// Whether a wake-up arrived since [`unschedule`](Self::unschedule).
    pub(crate) fn is_scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Acquire)
    }

    /// Drops the future (cancelling the guest where it stands) and ends the
    /// container as stopped, unless it already ended.
    pub(crate) fn abandon(&self) {
        let future = self.future.lock().take();
        drop(future);
        self.instance.finish(Outcome::Stopped);
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
