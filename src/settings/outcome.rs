//! How a container ended: one value that every waiter receives.

use super::container::ContainerState;
use std::fmt;
use std::time::Duration;

/// How a container ended.
///
/// | end | `Outcome` | `ContainerState` | `wait_container` |
/// |---|---|---|---|
/// | `_start` returns, `proc_exit(n)`, component `run` returns ok / err | `Exited(n)` | `Exited { code: n }` | `Ok(n)` (ok = 0, err = 1) |
/// | trap: unreachable, out-of-bounds, stack overflow, … | `Trapped(msg)` | `Failed { reason: msg }` | `Ok(134)`, like SIGABRT |
/// | fuel budget spent | `OutOfFuel { budget }` | `Failed { reason: "out of fuel …" }` | `Ok(152)`, like SIGXCPU |
/// | memory grow past the limit with `trap_on_grow_failure` | `MemoryLimit { limit }` | `Failed { reason: "memory limit …" }` | `Ok(137)`, like an OOM kill |
/// | wall-clock deadline | `DeadlineExceeded(d)` | `Failed { reason: "deadline exceeded …" }` | `Ok(124)`, like `timeout(1)` |
/// | `stop_container`, `remove_container`, runtime dropped | `Stopped` | `Failed { reason: "stopped" }` | `Ok(137)`, like SIGKILL |
/// | invalid artifact, missing entry point, failed instantiation (an initial memory above the limit) | `Failed(reason)` | `Failed { reason }` | `Err(Error::Failed)`; code 126 |
/// | a panic in the host while running it | `Panicked(msg)` | `Failed { reason: "panicked: …" }` | `Err(Error::Failed)`; code 125 |
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The guest ended by itself with this exit code.
    Exited(i32),
    /// The guest trapped; the message names the trap.
    Trapped(String),
    /// The guest spent its whole fuel budget.
    OutOfFuel {
        /// The budget it was given.
        budget: u64,
    },
    /// The guest grew its memory past the limit and the spec asked for a trap.
    MemoryLimit {
        /// The limit in bytes.
        limit: u64,
    },
    /// The guest ran past its wall-clock deadline and was ended.
    DeadlineExceeded(Duration),
    /// The guest was stopped by the host (or never ran because it was stopped first).
    Stopped,
    /// The guest could not be run: the reason says why.
    Failed(String),
    /// The host panicked while running the guest; the pool survived.
    Panicked(String),
}

impl Outcome {
    /// The exit code a shell would see, following container conventions.
    ///
    /// # Examples
    /// ```
    /// use wasmpool::Outcome;
    /// assert_eq!(Outcome::Exited(3).exit_code(), 3);
    /// assert_eq!(Outcome::Stopped.exit_code(), 137);
    /// ```
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(code) => *code,
            Outcome::Trapped(_) => 134,
            Outcome::OutOfFuel { .. } => 152,
            Outcome::MemoryLimit { .. } | Outcome::Stopped => 137,
            Outcome::DeadlineExceeded(_) => 124,
            Outcome::Failed(_) => 126,
            Outcome::Panicked(_) => 125,
        }
    }

    /// Whether the guest ran at all: false for `Failed` and `Panicked`.
    pub fn ran(&self) -> bool {
        !matches!(self, Outcome::Failed(_) | Outcome::Panicked(_))
    }

    /// The state `container_state` reports for a container that ended this way.
    pub fn state(&self) -> ContainerState {
        match self {
            Outcome::Exited(code) => ContainerState::Exited { code: *code },
            other => ContainerState::Failed {
                reason: other.to_string(),
            },
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Exited(code) => write!(f, "exited with code {code}"),
            Outcome::Trapped(message) => f.write_str(message),
            Outcome::OutOfFuel { budget } => write!(f, "out of fuel (budget {budget})"),
            Outcome::MemoryLimit { limit } => {
                write!(f, "memory limit of {limit} bytes exceeded")
            }
            Outcome::DeadlineExceeded(limit) => write!(f, "deadline exceeded after {limit:?}"),
            Outcome::Stopped => f.write_str("stopped"),
            Outcome::Failed(reason) => f.write_str(reason),
            Outcome::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}
