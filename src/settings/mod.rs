//! What callers say and hear: the runtime's settings, a container's spec, its
//! id, state and stats, how it ended, and the error type. Every other
//! subsystem reads these; they import nothing of the crate's.

pub(crate) mod cache;
pub(crate) mod config;
pub(crate) mod container;
pub(crate) mod error;
pub(crate) mod outcome;
pub(crate) mod spec;

pub use cache::{CachedImage, DiskUsage, PruneReport};
pub use config::{KeyValueStore, RegistryAuth, WasmConfig};
pub use container::{ContainerId, ContainerState, ContainerStats, HttpStats};
pub use error::{Error, Result};
pub use outcome::Outcome;
pub use spec::{
    parse_duration, parse_size, CommandSpec, EndpointSpec, ImageSpec, LogLevel, LogStream,
    OutputSink, Protocol, PullPolicy, ServiceSpec, StdinSpec, StorageSpec, WasmSpec,
};

pub(crate) use config::current_user;
