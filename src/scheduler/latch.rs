//! The completion latch of a job and the handle hosts wait on.

use super::cpu_clock::CpuMark;
use super::task::{Slice, Task};
use crate::settings::Outcome;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How many times `wait` looks for the outcome (a CPU spin hint each, never
/// yielding the CPU) before it blocks. Measured with `wasmpool bench`, one
/// caller: idle 25k/s without it, 45–61k/s with it; with two busy competitor
/// processes 20k/s without, 27–31k/s with; no change with four callers.
const WAIT_SPINS: u32 = 2_000;

/// Starts empty and is set once with an outcome; waiters block until it is set.
#[derive(Default)]
pub(crate) struct Completion {
    outcome: Mutex<Option<Outcome>>,
    done: Condvar,
    is_set: AtomicBool,
}

impl Completion {
    /// Sets the outcome if none was set yet and wakes every waiter; the first set wins.
    pub(crate) fn set(&self, outcome: Outcome) -> bool {
        let mut slot = self.outcome.lock();
        if slot.is_some() {
            return false;
        }
        *slot = Some(outcome);
        self.is_set.store(true, Ordering::Release);
        drop(slot);
        self.done.notify_all();
        true
    }

    pub(crate) fn is_set(&self) -> bool {
        self.is_set.load(Ordering::Acquire)
    }

    pub(crate) fn probe(&self) -> Option<Outcome> {
        self.outcome.lock().clone()
    }
}

/// A handle on a container's end: every clone sees the same [`Outcome`].
///
/// Its methods follow crossbeam's blocking grammar: [`wait`](Self::wait),
/// [`wait_timeout`](Self::wait_timeout), [`wait_deadline`](Self::wait_deadline)
/// and the non-blocking [`try_wait`](Self::try_wait). The handle stays valid
/// after the container is removed; a removed container that was still running
/// ends as [`Outcome::Stopped`].
///
/// # Examples
/// ```
/// use wasmpool::{ContainerId, ServiceSpec, WasmConfig, WasmRuntime};
/// let dir = tempfile::tempdir().unwrap();
/// let runtime = WasmRuntime::new(WasmConfig { cache_dir: dir.path().into(), ..Default::default() }).unwrap();
/// let wasm = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
/// let id = ContainerId::new("doc", 1);
/// runtime.create_container_from_bytes(&id, &ServiceSpec::default(), wasm).unwrap();
/// let handle = runtime.start(&id).unwrap();
/// let twin = handle.clone();
/// assert_eq!(handle.wait().exit_code(), 0);
/// assert_eq!(twin.try_wait(), Some(wasmpool::Outcome::Exited(0)));
/// ```
#[derive(Clone)]
pub struct WaitHandle {
    completion: Arc<Completion>,
    /// The container's task, which `wait` polls itself while it is runnable.
    task: Option<Weak<Task>>,
}

impl WaitHandle {
    pub(crate) fn new(completion: Arc<Completion>) -> Self {
        WaitHandle {
            completion,
            task: None,
        }
    }

    pub(crate) fn with_task(completion: Arc<Completion>, task: &Arc<Task>) -> Self {
        WaitHandle {
            completion,
            task: Some(Arc::downgrade(task)),
        }
    }

    /// Blocks until the container ended and returns how.
    ///
    /// While the guest is runnable and no worker has it, the waiting thread
    /// runs it itself, one fuel slice at a time (as rayon's `join` does work
    /// while it waits): a start-then-wait then costs no thread hand-off.
    pub fn wait(&self) -> Outcome {
        if let Some(task) = self.task.as_ref().and_then(Weak::upgrade) {
            self.help(&task);
        }
        // A worker may have claimed the guest first: look a little while before blocking.
        for _ in 0..WAIT_SPINS {
            if self.completion.is_set() {
                break;
            }
            std::hint::spin_loop();
        }
        let mut slot = self.completion.outcome.lock();
        loop {
            if let Some(outcome) = slot.as_ref() {
                return outcome.clone();
            }
            self.completion.done.wait(&mut slot);
        }
    }

    /// Blocks until the container ended or `timeout` passed; `None` on timeout.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Outcome> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.wait_deadline(deadline),
            None => Some(self.wait()),
        }
    }

    /// Blocks until the container ended or `deadline` passed; `None` on timeout.
    pub fn wait_deadline(&self, deadline: Instant) -> Option<Outcome> {
        // This waiter does not run the guest (a slice could outlast the
        // deadline): a start left for a waiter goes to a worker now.
        if let Some(task) = self.task.as_ref().and_then(Weak::upgrade) {
            task.expedite();
        }
        let mut slot = self.completion.outcome.lock();
        loop {
            if let Some(outcome) = slot.as_ref() {
                return Some(outcome.clone());
            }
            if self
                .completion
                .done
                .wait_until(&mut slot, deadline)
                .timed_out()
            {
                return slot.clone();
            }
        }
    }

    /// Polls the container's own task on this thread while it is runnable.
    /// Only once its first poll is short (compiled, or small cached code to
    /// load): a stop during a long compile must reach this waiter at once,
    /// not after the compile.
    fn help(&self, task: &Arc<Task>) {
        if !(task.is_runnable() && task.is_ready()) {
            return;
        }
        let mut mark = CpuMark::now();
        while !self.completion.is_set() && task.is_runnable() && task.is_ready() {
            match task.run_slice(&mut mark) {
                Slice::Yielded if self.completion.is_set() => task.requeue(),
                Slice::Yielded => continue,
                Slice::Ended | Slice::Parked => {}
            }
            break;
        }
    }

    /// Returns the outcome if the container already ended, without blocking.
    pub fn try_wait(&self) -> Option<Outcome> {
        self.completion.probe()
    }
}

impl std::fmt::Debug for WaitHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitHandle")
            .field("outcome", &self.try_wait())
            .finish()
    }
}
