//! A guest's run: one container as a future the scheduler polls.
//!
//! - [`instance`]: a container's phase, stop control and shared cells, and
//!   the scheduler's [`Job`](crate::scheduler::Job) hook;
//! - [`plan`]: its spec resolved against the runtime's defaults;
//! - [`run`]: the future — compile, link, instantiate, call, classify the end;
//! - [`link`] and [`entry`]: what is prepared once per compiled artifact
//!   (WASI linking, the entry point to call);
//! - [`wasi`] and [`host`]: the store's WASI context, its memory limiter,
//!   descriptor cap and wasi:http policy;
//! - [`config`], [`keyvalue`] and [`logging`]: what components import
//!   beyond WASI (`wasi:config`, `wasi:keyvalue`, `wasi:logging`), a file
//!   an interface family;
//! - [`logs`] and [`stats`]: what hosts observe.

pub(crate) mod config;
pub(crate) mod entry;
pub(crate) mod host;
pub(crate) mod instance;
pub(crate) mod keyvalue;
pub(crate) mod link;
pub(crate) mod logging;
pub(crate) mod logs;
pub(crate) mod plan;
pub(crate) mod run;
pub(crate) mod stats;
pub(crate) mod tls;
pub(crate) mod wasi;

pub use logs::{LogEntry, LogFollower, LOG_LINE_OVERHEAD, MAX_LINE_BYTES};

pub(crate) use instance::{Instance, Phase};
pub(crate) use link::{Artifact, Linking, Prepared};
pub(crate) use plan::RunPlan;

use crate::artifacts::{DiskCache, Engines};
use crate::settings::WasmConfig;

/// What every run of a runtime shares: the engines, their linkers, the compiled cache.
pub(crate) struct Shared {
    pub(crate) engines: Engines,
    pub(crate) linking: Linking,
    pub(crate) disk: Option<DiskCache>,
    pub(crate) config: WasmConfig,
    /// Where guests' `wasi:keyvalue` buckets live.
    pub(crate) keyvalue: std::sync::Arc<dyn crate::keyvalue::Store>,
    /// Guest runs started and ended, for the metrics.
    pub(crate) counters: std::sync::Arc<stats::GuestCounters>,
}
