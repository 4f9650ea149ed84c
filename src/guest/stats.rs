//! Live resource accounting of one container: memory, fuel, CPU and wall time.

use crate::scheduler::{CpuMark, SliceStart};
use crate::settings::ContainerStats;
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
    /// The slice being polled now: its poller's clock and where it began.
    slice: Option<SliceStart>,
    /// CPU time of the slices polled so far, from instantiation on.
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

    /// Called by a poller before it polls the guest: CPU time counts from
    /// `mark`, the poller's clock at the end of its previous slice (a thread
    /// blocked between slices consumes no CPU; see `SliceStart::end` for when
    /// the clock is read).
    pub(crate) fn slice_begin(&self, mark: Option<CpuMark>) {
        self.clock.lock().slice = mark.map(CpuMark::begin);
    }

    /// Called by the poller after the poll: the slice's CPU time is the guest's
    /// once the run began (a first compile is not), until it ended. Returns
    /// the reading that begins the poller's next slice.
    pub(crate) fn slice_end(&self) -> Option<CpuMark> {
        let mut clock = self.clock.lock();
        let (used, next) = clock.slice.take()?.end();
        if clock.started.is_some() && clock.ended.is_none() {
            clock.cpu_total += used;
        }
        Some(next)
    }

    /// Called inside the first slice as instantiation begins: wall and CPU time
    /// start here; after a compile, CPU time restarts from now.
    pub(crate) fn begin(&self, compiled_just_now: bool) {
        let mut clock = self.clock.lock();
        clock.started = Some(Instant::now());
        if let (true, Some(slice)) = (compiled_just_now, &mut clock.slice) {
            slice.restart();
        }
    }

    /// Called as the run ends: the figures freeze.
    pub(crate) fn end(&self) {
        let mut clock = self.clock.lock();
        if let Some(slice) = clock.slice.take() {
            if clock.started.is_some() && clock.ended.is_none() {
                clock.cpu_total += slice.end().0;
            }
        }
        if clock.started.is_some() && clock.ended.is_none() {
            clock.ended = Some(Instant::now());
        }
    }

    /// When the run ended, if it did.
    pub(crate) fn ended_at(&self) -> Option<Instant> {
        self.clock.lock().ended
    }

    /// Forgets the memory of a store that was dropped before a retry (the peak stays).
    pub(crate) fn forget_memory(&self) {
        self.memory_now.store(0, Ordering::Relaxed);
    }

    /// Records memory growth from `current` to `desired` bytes.
    pub(crate) fn grew(&self, current: usize, desired: usize) {
        let added = desired.saturating_sub(current) as u64;
        let now = self.memory_now.fetch_add(added, Ordering::Relaxed) + added;
        self.memory_peak.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, log_lines_dropped: u64) -> ContainerStats {
        let clock = self.clock.lock();
        // Read under the lock: the worker cannot end this slice meanwhile.
        let cpu = match (&clock.slice, clock.started, clock.ended) {
            (Some(slice), Some(_), None) => clock.cpu_total + slice.so_far(),
            _ => clock.cpu_total,
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
            http: None,
        }
    }
}

/// The `outcome` label values of `wasmpool_guest_outcomes_total`, by [`outcome_index`].
pub(crate) const OUTCOMES: [&str; 8] = [
    "exited",
    "trapped",
    "out_of_fuel",
    "memory_limit",
    "deadline",
    "stopped",
    "failed",
    "panicked",
];

fn outcome_index(outcome: &crate::settings::Outcome) -> usize {
    use crate::settings::Outcome;
    match outcome {
        Outcome::Exited(_) => 0,
        Outcome::Trapped(_) => 1,
        Outcome::OutOfFuel { .. } => 2,
        Outcome::MemoryLimit { .. } => 3,
        Outcome::DeadlineExceeded(_) => 4,
        Outcome::Stopped => 5,
        Outcome::Failed(_) => 6,
        Outcome::Panicked(_) => 7,
    }
}

/// A runtime's guest runs: how many started, and how each ended.
#[derive(Default)]
pub(crate) struct GuestCounters {
    pub(crate) starts: std::sync::atomic::AtomicU64,
    pub(crate) outcomes: [std::sync::atomic::AtomicU64; 8],
}

impl GuestCounters {
    pub(crate) fn ended(&self, outcome: &crate::settings::Outcome) {
        self.outcomes[outcome_index(outcome)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
