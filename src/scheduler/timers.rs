//! Deadline wake-ups for parked guests: one thread that wakes a task when its deadline passes.
//!
//! A guest that spins is checked against its deadline at every fuel slice; a
//! guest parked on a host event (a sleep, stdin, a socket) is not polled, so
//! its deadline is armed here the first time it parks.

use super::task::Task;
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

/// Names one armed deadline, to cancel it.
pub(crate) type TimerKey = (Instant, u64);

/// The armed deadlines, earliest first, and the thread that fires them.
pub(crate) struct Timers {
    state: Mutex<TimerState>,
    changed: Condvar,
}

#[derive(Default)]
struct TimerState {
    armed: BTreeMap<TimerKey, Weak<Task>>,
    next_id: u64,
    shutdown: bool,
}

impl Timers {
    /// Starts the timer thread.
    pub(crate) fn start() -> std::io::Result<(Arc<Self>, JoinHandle<()>)> {
        let timers = Arc::new(Timers {
            state: Mutex::new(TimerState::default()),
            changed: Condvar::new(),
        });
        let thread = {
            let timers = timers.clone();
            std::thread::Builder::new()
                .name("wasmpool-timers".into())
                .spawn(move || timers.fire_until_shutdown())?
        };
        Ok((timers, thread))
    }

    /// Wakes `task` at `at`, unless cancelled first.
    pub(crate) fn arm(&self, at: Instant, task: &Arc<Task>) -> TimerKey {
        let mut state = self.state.lock();
        let key = (at, state.next_id);
        state.next_id += 1;
        let earliest = state.armed.keys().next().is_none_or(|first| key < *first);
        state.armed.insert(key, Arc::downgrade(task));
        drop(state);
        if earliest {
            self.changed.notify_one();
        }
        key
    }

    pub(crate) fn cancel(&self, key: TimerKey) {
        self.state.lock().armed.remove(&key);
    }

    pub(crate) fn shutdown(&self) {
        self.state.lock().shutdown = true;
        self.changed.notify_one();
    }

    fn fire_until_shutdown(&self) {
        let mut state = self.state.lock();
        loop {
            if state.shutdown {
                return;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(entry) = state.armed.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            if !due.is_empty() {
                // Waking queues the task: not under our lock.
                drop(state);
                for task in due.iter().filter_map(Weak::upgrade) {
                    task.schedule();
                }
                state = self.state.lock();
                continue;
            }
            match state.armed.keys().next() {
                Some(&(at, _)) => {
                    self.changed.wait_until(&mut state, at);
                }
                None => self.changed.wait(&mut state),
            }
        }
    }
}
