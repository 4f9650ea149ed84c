//! The CPU-time clock of a poller thread, readable from any thread, and one reading of it.
#![allow(unsafe_code)]

use std::time::{Duration, Instant};

/// A thread's CPU clock (`pthread_getcpuclockid`); valid while the thread lives,
/// and worker threads live as long as the runtime.
#[derive(Clone, Copy)]
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

/// Slices shorter than this are charged their wall-clock time instead of a
/// reading of the thread's CPU clock, which is a system call (about 0.3 µs
/// here, two per start-then-wait of a trivial guest): a thread that ran so
/// short a slice without blocking was on a CPU for almost all of it, and the
/// next long slice's reading corrects what was charged in between.
const SHORT_SLICE: Duration = Duration::from_micros(20);

/// A poller thread's CPU clock and what it read (or estimated) at the end of
/// its last slice: where the next slice's CPU time starts.
#[derive(Clone, Copy)]
pub(crate) struct CpuMark {
    clock: ThreadClock,
    /// The clock's value at the end of the last slice; `None` before the
    /// thread's first long slice.
    cpu: Option<Duration>,
}

impl CpuMark {
    /// The calling thread's clock, not read yet.
    pub(crate) fn now() -> Option<Self> {
        ThreadClock::current().map(|clock| CpuMark { clock, cpu: None })
    }

    /// A slice begins now.
    pub(crate) fn begin(self) -> SliceStart {
        SliceStart {
            clock: self.clock,
            cpu: self.cpu,
            wall: Instant::now(),
        }
    }
}

/// A slice being polled: its poller's clock, and where the slice began.
#[derive(Clone, Copy)]
pub(crate) struct SliceStart {
    clock: ThreadClock,
    cpu: Option<Duration>,
    wall: Instant,
}

impl SliceStart {
    /// The slice's CPU time, and the mark that begins the poller's next slice.
    pub(crate) fn end(self) -> (Duration, CpuMark) {
        let elapsed = self.wall.elapsed();
        if elapsed < SHORT_SLICE {
            let cpu = self.cpu.map(|cpu| cpu + elapsed);
            return (elapsed, CpuMark { cpu, ..self.mark() });
        }
        let now = self.clock.read();
        let used = match self.cpu {
            Some(cpu) => now.saturating_sub(cpu).min(elapsed),
            None => elapsed,
        };
        (
            used,
            CpuMark {
                cpu: Some(now),
                ..self.mark()
            },
        )
    }

    /// The slice's CPU time so far (from any thread).
    pub(crate) fn so_far(&self) -> Duration {
        let elapsed = self.wall.elapsed();
        match self.cpu {
            Some(cpu) => self.clock.read().saturating_sub(cpu).min(elapsed),
            None => elapsed,
        }
    }

    /// The slice starts again now (after a compile, which is not the guest's).
    pub(crate) fn restart(&mut self) {
        self.wall = Instant::now();
        self.cpu = Some(self.clock.read());
    }

    fn mark(&self) -> CpuMark {
        CpuMark {
            clock: self.clock,
            cpu: self.cpu,
        }
    }
}
