//! The scheduler: a fixed pool of worker threads polling futures one fuel
//! slice at a time. It knows nothing of WebAssembly: a [`Job`] is the small
//! hook a task calls around its polls (tokio's and async-task's schedulers
//! know a future and a schedule function in the same way).
//!
//! - [`task`]: one job's future, its `SCHEDULED`/`RUNNING`/`DEFERRED` bits,
//!   and how a wake-up puts it back on the run queue;
//! - [`queue`]: the run queue every worker takes from, and the deferred list
//!   of fresh starts a waiter runs itself;
//! - [`worker`]: a worker thread's loop;
//! - [`latch`]: the completion latch and the [`WaitHandle`] hosts block on
//!   (a waiting thread polls its own job while it is runnable);
//! - [`timers`]: deadline wake-ups for parked tasks;
//! - [`admission`]: how many jobs may be live at once;
//! - [`cpu_clock`]: the per-thread CPU clock slices are measured by.
//!
//! Every worker takes the next runnable task from the one shared run queue,
//! polls it for one fuel slice (or until it waits on a host event), and takes
//! the next. A job that waits is parked off every worker until its waker
//! queues it again; CPU-bound jobs take turns, one slice each, in queue order.
//! A worker blocks only when no task is runnable.

pub(crate) mod admission;
pub(crate) mod cpu_clock;
pub(crate) mod latch;
pub(crate) mod queue;
pub(crate) mod task;
pub(crate) mod timers;
pub(crate) mod worker;

pub use latch::WaitHandle;

pub(crate) use admission::Admission;
pub(crate) use cpu_clock::{CpuMark, SliceStart};
pub(crate) use latch::Completion;
pub(crate) use queue::RunQueue;
pub(crate) use task::{Job, Task};
pub(crate) use timers::Timers;
pub(crate) use worker::spawn_worker;
