//! The CPU-time clock of a poller thread, readable from any thread, and one reading of it.
#![allow(unsafe_code)]

use std::time::Duration;

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

/// A thread's CPU clock and one reading of it: where the next slice's CPU time starts.
#[derive(Clone, Copy)]
pub(crate) struct CpuMark {
    pub(crate) clock: ThreadClock,
    pub(crate) reading: Duration,
}

impl CpuMark {
    /// The calling thread's clock, read now.
    pub(crate) fn now() -> Option<Self> {
        ThreadClock::current().map(|clock| CpuMark {
            clock,
            reading: clock.read(),
        })
    }
}
