//! Names and observable facts of a container: its id, its state and its stats.

use std::fmt;
use std::time::Duration;

/// Names one container: a service and the replica number within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId {
    /// The service the container belongs to.
    pub service: String,
    /// The replica number within the service.
    pub replica: u32,
}

impl ContainerId {
    /// Names replica `replica` of `service`; it displays as `{service}-rep-{replica}`,
    /// as the reference container agent prints it.
    ///
    /// # Examples
    /// ```
    /// let id = wasmpool::ContainerId::new("web", 2);
    /// assert_eq!(id.to_string(), "web-rep-2");
    /// ```
    pub fn new(service: impl Into<String>, replica: u32) -> Self {
        ContainerId {
            service: service.into(),
            replica,
        }
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-rep-{}", self.service, self.replica)
    }
}

/// Where a container is in its life, as `docker ps` would say it.
///
/// `Exited` is for a guest that ended by itself (returned from its entry point
/// or called `proc_exit`); every other end is `Failed` with a reason that says
/// what happened. See [`Outcome`](crate::Outcome) for the full table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, or started and waiting in the queue for a worker.
    Pending,
    /// A worker is running the guest.
    Running,
    /// The guest ended by itself with this exit code.
    Exited {
        /// The guest's exit code.
        code: i32,
    },
    /// The guest did not run, or was ended by a trap, a limit or a stop.
    Failed {
        /// What happened, such as `"stopped"` or `"trap: wasm \`unreachable\` instruction executed"`.
        reason: String,
    },
}

/// Resource use of one container, live while it runs and frozen after it ends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerStats {
    /// CPU time the worker thread spent on this container (instantiation and run, not compiling), in µs.
    pub cpu_usage_usec: u64,
    /// Bytes of linear memory the guest has now (at its end, once it ended).
    pub memory_bytes: u64,
    /// The most bytes of linear memory the guest had at once.
    pub memory_peak_bytes: u64,
    /// The memory limit in bytes, `u64::MAX` when there is none.
    pub memory_limit: u64,
    /// Fuel the guest consumed. While it runs this counts whole fuel slices; it is exact once it ended.
    pub fuel_consumed: u64,
    /// Wall-clock time from instantiation to the end (compiling not included).
    pub wall_time: Duration,
    /// Log lines dropped because the container's log buffer was full.
    pub log_lines_dropped: u64,
}
