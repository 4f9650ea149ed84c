//! The error type of the public API: misuse and bad input, never a guest's outcome.

use super::container::ContainerId;
use std::fmt;
use std::path::PathBuf;

/// What went wrong when the host asked the runtime to do something.
///
/// A guest that traps, exits non-zero or is stopped is not an error: that is an
/// [`Outcome`](crate::Outcome). Errors are for unknown ids, wrong states, bad
/// specs and unreadable artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No container with this id exists.
    NotFound(ContainerId),
    /// A container with this id already exists.
    AlreadyExists(ContainerId),
    /// The container is in a state that does not allow the operation.
    WrongState {
        /// The container.
        id: ContainerId,
        /// The operation that was refused, such as `"start"`.
        operation: &'static str,
        /// The state it was in, such as `"running"`.
        state: String,
    },
    /// The operation is not supported by this runtime, such as `exec`.
    Unsupported {
        /// The operation, such as `"exec"`.
        operation: &'static str,
        /// Why, as a sentence: "exec is not supported for WASM workloads: …".
        reason: String,
    },
    /// The image could not be read from the cache directory.
    UnreadableArtifact {
        /// The file that was read.
        path: PathBuf,
        /// Why reading it failed.
        reason: String,
    },
    /// The image could not be pulled from its registry (or, with `PullPolicy::Never`, is not cached).
    Pull {
        /// The image reference, as given.
        image: String,
        /// Why, in one line: "not found (404): …", "unauthorized (401): …",
        /// "digest mismatch: …", "too large: …", "cannot connect to …".
        reason: String,
    },
    /// The image name cannot name a file inside the cache directory.
    InvalidImageName(String),
    /// A field of the spec has a value the runtime cannot use.
    InvalidSpec {
        /// The field, such as `"wasm.max_memory"`.
        field: &'static str,
        /// The offending value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// `queue_limit` started containers are live (queued, running or parked): no more may start now.
    QueueFull {
        /// The container that was refused.
        id: ContainerId,
        /// The configured bound.
        limit: usize,
    },
    /// The guest could not be started: invalid artifact, missing entry point,
    /// failed instantiation.
    Failed {
        /// The container.
        id: ContainerId,
        /// What went wrong.
        reason: String,
    },
    /// A blocking call gave up before the container ended.
    Timeout {
        /// The container.
        id: ContainerId,
        /// The operation that timed out, such as `"stop"`.
        operation: &'static str,
    },
    /// A service could not listen on its endpoint (the address is in use, not
    /// this host's, or not allowed).
    Listen {
        /// The container.
        id: ContainerId,
        /// The address it was to listen on.
        address: std::net::SocketAddr,
        /// Why, as the operating system said it.
        reason: String,
    },
    /// The runtime is shutting down and takes no new work.
    ShuttingDown,
    /// Setting up the runtime failed (engine, cache directory, worker threads).
    Setup(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound(id) => write!(f, "container '{id}' not found"),
            Error::AlreadyExists(id) => write!(f, "container '{id}' already exists"),
            Error::WrongState {
                id,
                operation,
                state,
            } => write!(f, "cannot {operation} container '{id}': it is {state}"),
            Error::Unsupported { reason, .. } => f.write_str(reason),
            Error::UnreadableArtifact { path, reason } => {
                write!(f, "cannot read image '{}': {reason}", path.display())
            }
            Error::Pull { image, reason } => write!(f, "cannot pull image '{image}': {reason}"),
            Error::InvalidImageName(name) => write!(f, "invalid image name {name:?}"),
            Error::InvalidSpec {
                field,
                value,
                reason,
            } => write!(f, "invalid {field} '{value}': {reason}"),
            Error::QueueFull { id, limit } => write!(
                f,
                "cannot start container '{id}': {limit} started containers are live (queue_limit)"
            ),
            Error::Failed { id, reason } => write!(f, "container '{id}' failed: {reason}"),
            Error::Timeout { id, operation } => {
                write!(f, "timed out waiting to {operation} container '{id}'")
            }
            Error::Listen {
                id,
                address,
                reason,
            } => write!(f, "container '{id}' cannot listen on {address}: {reason}"),
            Error::ShuttingDown => write!(f, "the runtime is shutting down"),
            Error::Setup(reason) => write!(f, "cannot set up the runtime: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    pub(crate) fn unsupported(operation: &'static str, why: &str) -> Self {
        Error::Unsupported {
            operation,
            reason: format!("{operation} is not supported for WASM workloads: {why}"),
        }
    }
}

/// The result type of the public API.
pub type Result<T, E = Error> = std::result::Result<T, E>;
