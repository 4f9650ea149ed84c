//! The run queue every worker takes from, and the deferred list of fresh starts.
//!
//! Waking a sleeping worker costs the starting thread 3–20 µs on these
//! machines (a futex and an inter-processor
//! interrupt), more than a trivial guest's whole run. So while one idle worker
//! *watches* — from when it runs out of work until [`WATCH_QUIET`] passes with
//! no start — a start of a compiled guest goes to a deferred list instead of
//! the run queue. Its waiter claims it from there; what no one claimed, the
//! watcher queues at its next look. It looks every [`WATCH_TICK`] while it
//! finds starts no one claimed, and less often (doubling up to
//! [`WATCH_TICK_MAX`]) while waiters claim every start themselves, so a host
//! running start-then-wait in a loop is not charged 10,000 wake-ups a second.
//! When no worker watches (all busy, or the pool idle for long), a start
//! queues the task and wakes a worker as before.
//!
//! The queue itself is a deque under a mutex with a condition variable, as
//! rayon's sleep module keeps its sleepers: an idle worker parks at once.
//! (A channel's receive spins and yields before it parks — at every look of
//! the watcher, on the core the waiting host thread needs: 4.4 `sched_yield`
//! calls per start-then-wait, measured.)

use super::task::Task;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How often the watching worker looks at the deferred list while it finds
/// starts no one claimed.
const WATCH_TICK: Duration = Duration::from_micros(100);

/// The longest the watcher goes between looks: the longest a started guest
/// no one waits on stays deferred while workers are idle.
const WATCH_TICK_MAX: Duration = Duration::from_millis(1);

/// How long the watcher keeps watching with no start deferred, before it
/// sleeps until a wake-up like any idle worker (then starts wake it again).
const WATCH_QUIET: Duration = Duration::from_millis(5);

/// The set of instructions a worker knows how to process.
pub(crate) enum Message {
    /// Poll this task once: it was started or woken.
    Run(Arc<Task>),
    /// Poll this task once more: it used up its quantum (see [`RunQueue::requeue`]).
    Resume(Arc<Task>),
    /// Exit the worker loop.
    Shutdown,
}

/// The queue of runnable tasks every worker takes from.
pub(crate) struct RunQueue {
    state: Mutex<State>,
    /// Signalled when a message arrives and a worker sleeps.
    ready: Condvar,
    /// Fresh starts left for their waiters; some may have been claimed since.
    deferred: Mutex<Vec<Arc<Task>>>,
    /// Whether an idle worker watches `deferred`.
    watching: AtomicBool,
    /// `Run` messages queued: tasks started or woken, waiting for a worker.
    fresh: AtomicUsize,
}

struct State {
    messages: VecDeque<Message>,
    /// Workers waiting on `ready`.
    sleeping: usize,
}

impl RunQueue {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(RunQueue {
            state: Mutex::new(State {
                messages: VecDeque::new(),
                sleeping: 0,
            }),
            ready: Condvar::new(),
            deferred: Mutex::new(Vec::new()),
            watching: AtomicBool::new(false),
            fresh: AtomicUsize::new(0),
        })
    }

    /// Tasks waiting for a worker, and workers waiting for a task.
    pub(crate) fn load(&self) -> (usize, usize) {
        let state = self.state.lock();
        let queued = state
            .messages
            .iter()
            .filter(|m| matches!(m, Message::Run(_) | Message::Resume(_)))
            .count();
        (queued + self.deferred.lock().len(), state.sleeping)
    }

    /// Leaves a fresh task (marked deferred) for the watcher; false if no worker watches.
    pub(crate) fn defer(&self, task: &Arc<Task>) -> bool {
        if !self.watching.load(Ordering::SeqCst) {
            return false;
        }
        self.deferred.lock().push(task.clone());
        // The watcher clears the flag before its last look, and that look
        // takes the list's lock: if it looked before our push, we see the flag clear.
        if !self.watching.load(Ordering::SeqCst) {
            task.expedite();
        }
        true
    }

    /// Queues every deferred task no one claimed yet.
    fn release_deferred(&self) -> Released {
        let deferred = std::mem::take(&mut *self.deferred.lock());
        if deferred.is_empty() {
            return Released::None;
        }
        let mut queued = false;
        for task in deferred {
            queued |= task.expedite();
        }
        if queued {
            Released::Queued
        } else {
            Released::AllClaimed
        }
    }

    /// The next message for an idle worker, watching the deferred list
    /// meanwhile if no other worker does.
    pub(super) fn next_message(&self) -> Message {
        let mut state = self.state.lock();
        if let Some(message) = self.pop(&mut state) {
            return message;
        }
        if self
            .watching
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return self.sleep(state);
        }
        let watch = Watch(self);
        let mut tick = WATCH_TICK;
        let mut quiet = Duration::ZERO;
        loop {
            state.sleeping += 1;
            let timed_out = self.ready.wait_for(&mut state, tick).timed_out();
            state.sleeping -= 1;
            if let Some(message) = self.pop(&mut state) {
                // Unlocked before the watch ends: its last look may queue.
                drop(state);
                drop(watch);
                return message;
            }
            if !timed_out {
                continue;
            }
            // `expedite` queues: not under the queue's lock.
            drop(state);
            match self.release_deferred() {
                Released::Queued => (tick, quiet) = (WATCH_TICK, Duration::ZERO),
                Released::AllClaimed => {
                    (tick, quiet) = ((tick * 2).min(WATCH_TICK_MAX), Duration::ZERO)
                }
                Released::None if quiet >= WATCH_QUIET => break,
                Released::None => quiet += tick,
            }
            state = self.state.lock();
        }
        drop(watch);
        self.sleep(self.state.lock())
    }

    /// Waits for the next message without watching.
    fn sleep(&self, mut state: MutexGuard<'_, State>) -> Message {
        loop {
            if let Some(message) = self.pop(&mut state) {
                return message;
            }
            state.sleeping += 1;
            self.ready.wait(&mut state);
            state.sleeping -= 1;
        }
    }

    /// Takes the next message, counting a fresh task out.
    fn pop(&self, state: &mut State) -> Option<Message> {
        let message = state.messages.pop_front()?;
        if let Message::Run(_) = message {
            self.fresh.fetch_sub(1, Ordering::Relaxed);
        }
        Some(message)
    }

    /// Whether a task started or woken waits for a worker: a worker holding
    /// a guest through its quantum lets it go to the queue at once then.
    pub(crate) fn has_fresh(&self) -> bool {
        self.fresh.load(Ordering::Relaxed) > 0
    }

    fn push(&self, message: Message) {
        let mut state = self.state.lock();
        if let Message::Run(_) = message {
            self.fresh.fetch_add(1, Ordering::Relaxed);
        }
        state.messages.push_back(message);
        if state.sleeping > 0 {
            self.ready.notify_one();
        }
    }

    /// Queues a task that used up its slice behind the runnable ones, waking
    /// a sleeping worker if one is; with none runnable it is handed back to
    /// its worker to poll again at once.
    pub(crate) fn requeue(&self, task: Arc<Task>) -> Option<Arc<Task>> {
        let mut state = self.state.lock();
        if state.messages.is_empty() {
            return Some(task);
        }
        state.messages.push_back(Message::Resume(task));
        if state.sleeping > 0 {
            self.ready.notify_one();
        }
        None
    }

    pub(crate) fn push_task(&self, task: Arc<Task>) {
        self.push(Message::Run(task));
    }

    pub(crate) fn push_shutdown(&self) {
        self.push(Message::Shutdown);
    }

    /// Tasks still queued or deferred once the workers are gone.
    pub(crate) fn drain_tasks(&self) -> Vec<Arc<Task>> {
        let mut tasks = std::mem::take(&mut *self.deferred.lock());
        let messages = std::mem::take(&mut self.state.lock().messages);
        self.fresh.store(0, Ordering::Relaxed);
        tasks.extend(messages.into_iter().filter_map(|message| match message {
            Message::Run(task) | Message::Resume(task) => Some(task),
            Message::Shutdown => None,
        }));
        tasks
    }
}

/// One worker's watch of the deferred list; it ends however the worker
/// leaves it, so no start is left deferred behind a watcher that is gone.
struct Watch<'a>(&'a RunQueue);

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.0.watching.store(false, Ordering::SeqCst);
        // After the flag: a start deferred from now on queues itself (see `defer`).
        // Not while unwinding: a second panic would abort the host.
        if !thread::panicking() {
            self.0.release_deferred();
        }
    }
}

/// What the watcher found in the deferred list.
enum Released {
    /// Nothing: no start since the last look.
    None,
    /// Only starts their waiters had claimed.
    AllClaimed,
    /// At least one start no one claimed, now queued.
    Queued,
}
