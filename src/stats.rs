//! Live resource accounting of one container: memory, fuel, CPU and wall time.

use crate::container::ContainerStats;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters the worker and the memory limiter update while a guest runs.
pub(crate) struct StatsCell {
    pub(crate) memory_now: AtomicU64,
    pub(crate) memory_peak: AtomicU64,
    pub(crate) fuel: AtomicU64,
    pub(crate) memory_limit: u64,
    clock: Mutex<Clock>,
}

#[derive(Default)]
struct Clock {
    started: Option<Instant>,
    ended: Option<Instant>,
    /// The running worker's CPU clock and its reading when the run began.
    cpu: Option<(cpu_clock::ThreadClock, Duration)>,
    cpu_total: Duration,
}

impl StatsCell {
    pub(crate) fn new(memory_limit: Option<u64>) -> Self {
        StatsCell {
            memory_now: AtomicU64::new(0),
            memory_peak: AtomicU64::new(0),
            fuel: AtomicU64::new(0),
            memory_limit: memory_limit.unwrap_or(u64::MAX),
            clock: Mutex::new(Clock::default()),
        }
    }

    /// Called on the worker thread as the run begins.
    pub(crate) fn begin(&self) {
        let thread_clock = cpu_clock::ThreadClock::current();
        let now = thread_clock.as_ref().map(cpu_clock::ThreadClock::read);
        let mut clock = self.clock.lock();
        clock.started = Some(Instant::now());
        clock.cpu = thread_clock.zip(now);
    }

    /// Called on the worker thread as the run ends: the figures freeze.
    pub(crate) fn end(&self) {
        let mut clock = self.clock.lock();
        if let Some((thread_clock, start)) = clock.cpu.take() {
            clock.cpu_total = thread_clock.read().saturating_sub(start);
        }
        if clock.started.is_some() {
            clock.ended = Some(Instant::now());
        }
    }

    /// Records memory growth from `current` to `desired` bytes.
    pub(crate) fn grew(&self, current: usize, desired: usize) {
        let added = desired.saturating_sub(current) as u64;
        let now = self.memory_now.fetch_add(added, Ordering::Relaxed) + added;
        self.memory_peak.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, log_lines_dropped: u64) -> ContainerStats {
        let clock = self.clock.lock();
        let cpu = match &clock.cpu {
            // Read under the lock: the worker cannot end this run and start
            // another on the same thread meanwhile.
            Some((thread_clock, start)) => thread_clock.read().saturating_sub(*start),
            None => clock.cpu_total,
        };
        let wall_time = match (clock.started, clock.ended) {
            (Some(start), Some(end)) => end - start,
            (Some(start), None) => start.elapsed(),
            _ => Duration::ZERO,
        };
        ContainerStats {
            cpu_usage_usec: cpu.as_micros() as u64,
            memory_bytes: self.memory_now.load(Ordering::Relaxed),
            memory_peak_bytes: self.memory_peak.load(Ordering::Relaxed),
            memory_limit: self.memory_limit,
            fuel_consumed: self.fuel.load(Ordering::Relaxed),
            wall_time,
            log_lines_dropped,
        }
    }
}

#[allow(unsafe_code)]
mod cpu_clock {
    //! The CPU-time clock of a worker thread, readable from any thread.
    use std::time::Duration;

    /// A thread's CPU clock (`pthread_getcpuclockid`); valid while the thread lives,
    /// and worker threads live as long as the runtime.
    pub(crate) struct ThreadClock(libc::clockid_t);

    impl ThreadClock {
        /// The clock of the calling thread, if the platform has one.
        pub(crate) fn current() -> Option<Self> {
            let mut id: libc::clockid_t = 0;
            // SAFETY: `pthread_self` is always a valid thread of this process and
            // `id` is a valid place to write the clock id to.
            let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
            (rc == 0).then_some(ThreadClock(id))
        }

        /// CPU time the thread consumed so far.
        pub(crate) fn read(&self) -> Duration {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid timespec to write to; an invalid clock id
            // only makes the call fail, which reads as zero.
            let rc = unsafe { libc::clock_gettime(self.0, &mut ts) };
            if rc != 0 {
                return Duration::ZERO;
            }
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        }
    }
}
