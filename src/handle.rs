//! The completion latch of a container and the handle hosts wait on.

use crate::outcome::Outcome;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `wait` looks for an outcome before it blocks.
const WAIT_SPIN: Duration = Duration::from_micros(50);

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
}

impl WaitHandle {
    pub(crate) fn new(completion: Arc<Completion>) -> Self {
        WaitHandle { completion }
    }

    /// Blocks until the container ended and returns how.
    pub fn wait(&self) -> Outcome {
        if let Some(outcome) = self.spin_briefly() {
            return outcome;
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

    /// Looks for the outcome for a few microseconds, yielding the CPU, before a
    /// waiter blocks: a short guest then costs no thread wake-up.
    fn spin_briefly(&self) -> Option<Outcome> {
        let give_up = Instant::now() + WAIT_SPIN;
        loop {
            if self.completion.is_set() {
                return self.completion.probe();
            }
            if Instant::now() >= give_up {
                return None;
            }
            std::thread::yield_now();
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
