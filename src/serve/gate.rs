//! The in-flight gate of one service: at most `http_max_in_flight` requests
//! run at once; up to `http_max_queued` more wait, each up to
//! `http_queue_timeout`, for a place; anyone else is refused at once. Never an
//! unbounded queue.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A place in flight; given back when dropped (as the request's instance ends).
pub(crate) type Place = OwnedSemaphorePermit;

pub(crate) struct Gate {
    places: Arc<Semaphore>,
    size: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
    wait: Duration,
    closed: AtomicBool,
}

impl Gate {
    pub(crate) fn new(in_flight: usize, max_waiting: usize, wait: Duration) -> Self {
        // `all_back` takes every place at once, counted in a u32.
        let size = in_flight.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        Gate {
            places: Arc::new(Semaphore::new(size)),
            size,
            waiting: AtomicUsize::new(0),
            max_waiting,
            wait,
            closed: AtomicBool::new(false),
        }
    }

    /// A place in flight, at once or after a bounded wait; `None`: refuse the request.
    pub(crate) async fn enter(&self) -> Option<Place> {
        let place = match self.places.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                let place =
                    tokio::time::timeout(self.wait, self.places.clone().acquire_owned()).await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                place.ok()?.ok()?
            }
        };
        // A place given after the gate closed is given back at once.
        (!self.closed.load(Ordering::Acquire)).then_some(place)
    }

    /// Closes the gate: waiters and later requests are refused.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Waits until every place was given back: no request instance runs. The
    /// semaphore is fair, so waiters queued before this see the gate closed first.
    pub(crate) async fn all_back(&self) {
        let _all = self.places.acquire_many(self.size as u32).await;
    }
}
