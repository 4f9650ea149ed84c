//! A task: one job's future, and how a wake-up puts it back on the run queue.
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

use super::cpu_clock::CpuMark;
use super::queue::RunQueue;
use super::timers::{TimerKey, Timers};
use crate::settings::Outcome;
use parking_lot::Mutex;
use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

/// The future a task polls: one whole run, ending with its outcome.
pub(crate) type JobFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// What a task runs for, as the scheduler sees it: the small hook a task calls
/// around its polls. The scheduler knows nothing else of what it runs.
pub(crate) trait Job: Send + Sync + 'static {
    /// A name for log lines.
    fn name(&self) -> String;
    /// Whether the job ended already (stopped or removed): it is not polled again.
    fn has_ended(&self) -> bool;
    /// Whether the first poll is short (nothing to compile first): only then is
    /// a start deferred to its waiter, or run by a waiting thread.
    fn is_ready(&self) -> bool;
    /// A poller begins a slice; its CPU time counts from `mark`.
    fn slice_begin(&self, mark: Option<CpuMark>);
    /// The slice ended; the reading that begins the poller's next slice.
    fn slice_end(&self) -> Option<CpuMark>;
    /// The job used up a whole slice of `fuel`.
    fn yielded(&self, fuel: u64);
    /// When a parked job must be woken to end at its deadline, if it has one.
    fn deadline(&self) -> Option<Instant>;
    /// Ends the job with `outcome` (the first end wins) and tells its waiters.
    fn finish(&self, outcome: Outcome);
    /// The task is done with the job: it holds no task from now on.
    fn detach(&self);
}

/// A poll is owed: the task is in the run queue, or its poller will queue it.
const SCHEDULED: u8 = 1;
/// A poller holds the task.
const RUNNING: u8 = 2;
/// Started, owed its first poll, and in the deferred list rather than the run queue.
const DEFERRED: u8 = 4;

/// One started job as the scheduler sees it.
pub(crate) struct Task {
    job: Arc<dyn Job>,
    /// `None` once the run ended; only the poller holding `RUNNING` locks it.
    future: Mutex<Option<JobFuture>>,
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
        job: Arc<dyn Job>,
        future: JobFuture,
        queue: &Arc<RunQueue>,
        timers: &Arc<Timers>,
        fuel_slice: u64,
    ) -> Self {
        Task {
            job,
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
            Some(queue) if self.is_ready() => queue,
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
    ///
    /// Never unwinds: a panic in the job's future is its outcome, and a panic
    /// around the poll (the job's hooks, dropping the finished future) ends
    /// the job too, so every waiter hears of it — whichever thread polled,
    /// a worker or a waiter running its own job.
    pub(crate) fn run_slice(self: &Arc<Self>, mark: &mut Option<CpuMark>) -> Slice {
        match panic::catch_unwind(AssertUnwindSafe(|| self.poll_once(mark))) {
            Ok(slice) => slice,
            Err(payload) => {
                self.fail(Outcome::Panicked(format!(
                    "the scheduler failed around the run: {}",
                    panic_message(payload.as_ref())
                )));
                Slice::Ended
            }
        }
    }

    fn poll_once(self: &Arc<Self>, mark: &mut Option<CpuMark>) -> Slice {
        if !self.claim() {
            return Slice::Parked;
        }
        let job = &*self.job;
        let mut slot = self.future.lock();
        let polled = match slot.as_mut() {
            // Stopped or removed while it waited for a poller: it never runs.
            Some(_) if job.has_ended() => None,
            Some(future) => {
                let waker = Waker::from(self.clone());
                let mut cx = Context::from_waker(&waker);
                job.slice_begin(*mark);
                let polled = panic::catch_unwind(AssertUnwindSafe(|| {
                    wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| {
                        future.as_mut().poll(&mut cx)
                    })
                }));
                *mark = job.slice_end().or(*mark);
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
            log::debug!("{} ended: {outcome}", job.name());
            job.finish(outcome);
        }
        job.detach();
        // Ended for good: later wake-ups find RUNNING and queue nothing.
        Slice::Ended
    }

    /// Lets go of a task whose poll returned `Pending`.
    fn release(self: &Arc<Self>) -> Slice {
        let previous = self.state.fetch_and(!RUNNING, Ordering::AcqRel);
        if previous & SCHEDULED != 0 {
            // Woken during the poll: the guest used up a fuel slice.
            self.job.yielded(self.fuel_slice);
            return Slice::Yielded;
        }
        // A parked guest is not polled: its deadline must wake it.
        if let Some(deadline) = self.job.deadline() {
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

    /// Whether the first poll is short (see [`Job::is_ready`]).
    pub(crate) fn is_ready(&self) -> bool {
        self.job.is_ready()
    }

    /// Ends the job with `outcome`, unless it already ended, and drops the
    /// future (cancelling the run where it stands) — at once if no poller
    /// holds it, else as that poller's poll returns (a long compile, a host
    /// call that blocks): the job's end never waits for a poll.
    pub(crate) fn fail(&self, outcome: Outcome) {
        self.state.fetch_or(RUNNING, Ordering::AcqRel);
        if let Some(mut slot) = self.future.try_lock() {
            drop(slot.take());
        }
        self.job.finish(outcome);
        self.job.detach();
    }
}

impl Drop for Task {
    /// A task whose last reference goes before its run ended was parked, and
    /// host code dropped its waker without waking it: it can never be polled
    /// again. It ends as stopped, so its waiters do not wait forever.
    fn drop(&mut self) {
        if self.future.get_mut().take().is_some() && !self.job.has_ended() {
            log::warn!(
                "{} lost its wake-up while parked: ending it as stopped",
                self.job.name()
            );
            self.job.finish(Outcome::Stopped);
            self.job.detach();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::queue::Message;
    use crate::scheduler::{Completion, WaitHandle};
    use std::sync::atomic::AtomicBool;

    /// A job that only records its end, and can make its hook panic once.
    struct Probe {
        completion: Arc<Completion>,
        panic_after_poll: AtomicBool,
    }

    impl Job for Probe {
        fn name(&self) -> String {
            "probe".into()
        }
        fn has_ended(&self) -> bool {
            self.completion.is_set()
        }
        fn is_ready(&self) -> bool {
            true
        }
        fn slice_begin(&self, _: Option<CpuMark>) {}
        fn slice_end(&self) -> Option<CpuMark> {
            if self.panic_after_poll.swap(false, Ordering::AcqRel) {
                panic!("a hook failed after the poll");
            }
            None
        }
        fn yielded(&self, _: u64) {}
        fn deadline(&self) -> Option<std::time::Instant> {
            None
        }
        fn finish(&self, outcome: Outcome) {
            self.completion.set(outcome);
        }
        fn detach(&self) {}
    }

    fn task_of(
        future: JobFuture,
        panic_after_poll: bool,
    ) -> (Arc<Task>, Arc<Completion>, Arc<RunQueue>, Arc<Timers>) {
        let completion = Arc::new(Completion::default());
        let job = Arc::new(Probe {
            completion: completion.clone(),
            panic_after_poll: AtomicBool::new(panic_after_poll),
        });
        let queue = RunQueue::new();
        let (timers, thread) = Timers::start().unwrap();
        timers.shutdown();
        thread.join().unwrap();
        let task = Arc::new(Task::new(job, future, &queue, &timers, 1_000));
        (task, completion, queue, timers)
    }

    #[test]
    fn a_panic_around_a_waiters_poll_ends_the_job_for_every_waiter() {
        let (task, completion, queue, _timers) =
            task_of(Box::pin(async { Outcome::Exited(0) }), true);
        task.schedule();
        let waiter = WaitHandle::with_task(completion.clone(), &task);
        let twin = WaitHandle::new(completion);
        // The waiter runs the job itself; the hook's panic must not reach it.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| waiter.wait()))
            .expect("a panic around the poll unwound into the waiter");
        assert!(
            matches!(&outcome, Outcome::Panicked(m) if m.contains("a hook failed after the poll")),
            "{outcome:?}"
        );
        assert_eq!(twin.try_wait(), Some(outcome));
        // Ended for good: the queued message polls nothing.
        for queued in queue.drain_tasks() {
            assert!(matches!(queued.run_slice(&mut None), Slice::Parked));
        }
    }

    #[test]
    fn a_parked_task_whose_waker_is_dropped_ends_as_stopped() {
        // Parks without keeping its waker, as host code that drops it unwoken.
        let future = std::future::poll_fn(|_cx| Poll::<Outcome>::Pending);
        let (task, completion, queue, _timers) = task_of(Box::pin(future), false);
        task.schedule();
        let queued = queue.drain_tasks();
        assert_eq!(queued.len(), 1);
        assert!(matches!(task.run_slice(&mut None), Slice::Parked));
        drop(queued);
        let waiter = WaitHandle::new(completion);
        assert_eq!(waiter.try_wait(), None, "parked, not ended");
        drop(task);
        assert_eq!(waiter.try_wait(), Some(Outcome::Stopped));
    }

    #[test]
    fn a_yielding_task_keeps_its_worker_until_a_started_or_woken_one_waits() {
        fn yielding() -> JobFuture {
            Box::pin(std::future::poll_fn(|cx| {
                cx.waker().wake_by_ref();
                Poll::<Outcome>::Pending
            }))
        }
        let (task, _completion, queue, timers) = task_of(yielding(), false);
        task.schedule();
        assert_eq!(queue.drain_tasks().len(), 1, "taken as a worker takes it");
        assert!(matches!(task.run_slice(&mut None), Slice::Yielded));
        // Nothing else runnable: handed back to its worker, not queued.
        let back = queue.requeue(task.clone()).expect("handed back");
        assert!(Arc::ptr_eq(&back, &task));
        assert_eq!(queue.load().0, 0);
        // The poll it is owed was kept: it runs again.
        assert!(matches!(task.run_slice(&mut None), Slice::Yielded));
        // Another task is runnable: it goes behind that one.
        let other = Arc::new(Task::new(
            Arc::new(Probe {
                completion: Arc::new(Completion::default()),
                panic_after_poll: AtomicBool::new(false),
            }),
            yielding(),
            &queue,
            &timers,
            1_000,
        ));
        assert!(!queue.has_fresh(), "a held task is not a fresh one");
        other.schedule();
        // Just woken: the holder lets go at the end of its slice, not its quantum.
        assert!(queue.has_fresh());
        assert!(
            queue.requeue(task.clone()).is_none(),
            "queued behind the other"
        );
        assert!(matches!(queue.next_message(), Message::Run(t) if Arc::ptr_eq(&t, &other)));
        // Only a task that used up its quantum waits now: no preemption for it.
        assert!(!queue.has_fresh());
        assert!(matches!(queue.next_message(), Message::Resume(t) if Arc::ptr_eq(&t, &task)));
        assert_eq!(queue.load().0, 0);
    }
}
