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
    /// For a service: its requests. CPU, fuel and memory above are then the
    /// sums over its request instances (memory: those live now; peak: the largest one).
    pub http: Option<HttpStats>,
}

/// What a service did with its requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpStats {
    /// Requests a handler answered (any status).
    pub served: u64,
    /// Requests being handled now.
    pub in_flight: u64,
    /// Instances made to handle requests: one a request, unless instances
    /// are reused (`WasmConfig::http_max_instance_reuse_count`).
    pub instances: u64,
    /// Requests refused with `503` because the in-flight limit and its queue were full.
    pub refused: u64,
    /// Answers by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`, the service's own
    /// answers (`500` for a trap, `504` at the deadline, `413`, `503`) included.
    pub by_class: [u64; 5],
    /// Connections open now.
    pub connections: u64,
    /// Time from a request's arrival to its response head: median, 90th and 99th percentile.
    pub latency_p50: Duration,
    /// See `latency_p50`.
    pub latency_p90: Duration,
    /// See `latency_p50`.
    pub latency_p99: Duration,
}
