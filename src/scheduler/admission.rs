//! Admission: how many started containers may be live (queued, running or parked) at once.

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::Instant;

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
