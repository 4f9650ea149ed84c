//! # wasmpool
//!
//! A synchronous, embedded WebAssembly workload runtime. It runs untrusted WASI
//! programs — WASI Preview 1 core modules, WASI 0.2 and 0.3 command components,
//! and WASI 0.2 and 0.3 HTTP services — the way a container agent runs
//! containers: create, start, stop, remove, state, wait, logs and stats, on a
//! fixed pool of worker threads, with a blocking API and no async runtime in
//! your code.
//!
//! It is blocking by design: hosts that are not async (services, CLIs, job
//! runners, test harnesses) call it from any thread, and a call returns when
//! its work is done. `wait_container` and [`WaitHandle`] block on a condition
//! variable, never by polling.
//!
//! ```
//! use wasmpool::{ContainerId, Runtime, ServiceSpec, WasmConfig, WasmRuntime};
//!
//! let dir = tempfile::tempdir()?;
//! let runtime = WasmRuntime::new(WasmConfig { cache_dir: dir.path().into(), ..Default::default() })?;
//! let hello = wat::parse_str(r#"
//!     (module
//!         (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
//!         (memory (export "memory") 1)
//!         (data (i32.const 16) "hello\n")
//!         (func (export "_start")
//!             (i32.store (i32.const 0) (i32.const 16))
//!             (i32.store (i32.const 4) (i32.const 6))
//!             (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
//! "#)?;
//! let id = ContainerId::new("hello", 1);
//! runtime.create_container_from_bytes(&id, &ServiceSpec::default(), hello)?;
//! runtime.start_container(&id)?;
//! assert_eq!(runtime.wait_container(&id)?, 0);
//! assert_eq!(runtime.get_logs(&id)?[0].message, "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## About threads
//! [`WasmRuntime`] is `Send + Sync`: share it behind an `Arc` and call it from
//! any number of threads. Guests are fuel-metered and yield every
//! [`WasmConfig::fuel_slice`] units of fuel; each worker polls one guest for
//! slices up to a 1 ms quantum, then the next runnable one (a guest just started or
//! woken goes first at the end of a slice), so many guests share few workers and
//! a stop or a deadline ends even a guest that never calls the host. A guest
//! waiting in a host call (a sleep, stdin, a socket) holds no worker until its
//! host event, a stop or its deadline. [`WasmConfig::queue_limit`] bounds how
//! many started guests are live at once. A thread blocked in
//! [`WaitHandle::wait`] runs its own guest while it is runnable. No registry
//! lock is held while guest code runs, and a panic while running one guest
//! fails that guest only.
//!
//! ## Services
//! A container whose spec has an HTTP endpoint ([`EndpointSpec`]) and whose
//! component exports `wasi:http/incoming-handler@0.2.x` or
//! `wasi:http/handler@0.3.x` is served by `start_container` behind a real
//! listener, a fresh instance per request, each request a task on the same
//! scheduler; [`WasmRuntime::handle_request`] serves a request from a host's
//! own listener. Every bound is in [`WasmConfig`]'s `http_*` fields.
//!
//! ## Registries
//! [`Runtime::pull_image`] and [`Runtime::pull_image_with_policy`] (and
//! `create_container` with a spec's [`PullPolicy`]) fetch WebAssembly OCI
//! artifacts — one `application/wasm` layer — into the image cache, blocking;
//! [`WasmRuntime::pull`] also says what it did. Credentials come from
//! [`WasmConfig::registry_auth`] or docker's `config.json`.
#![deny(missing_docs)]
#![deny(unsafe_code)]
// Built without its server, the parts only services use (request output,
// memory budgets shared by a service's instances) are left unused.
#![cfg_attr(not(feature = "serve"), allow(dead_code, unused_imports))]

mod artifacts;
mod guest;
mod inspect;
mod keyvalue;
mod metrics;
mod registry;
mod runtime;
mod scheduler;
#[cfg(feature = "serve")]
mod serve;
mod settings;

pub use artifacts::{
    detect_wasm_version_from_binary, http_handler_export, pre_initialize, pre_initialize_cached,
    WasiVersion, DEFAULT_INIT_FUNC,
};
pub use guest::{LogEntry, LogFollower, LOG_LINE_OVERHEAD, MAX_LINE_BYTES};
pub use inspect::{inspect, Inspection};
pub use metrics::{ContainerMetrics, HttpMetrics, Metrics, METRICS_CONTENT_TYPE};
pub use registry::PulledImage;
pub use runtime::{Runtime, WasmRuntime};
pub use scheduler::WaitHandle;
#[cfg(feature = "serve")]
pub use serve::ResponseBody;
pub use settings::{
    parse_duration, parse_size, CachedImage, CommandSpec, ContainerId, ContainerState,
    ContainerStats, DiskUsage, EndpointSpec, Error, HttpStats, ImageSpec, KeyValueStore, LogLevel,
    LogStream, Outcome, OutputSink, Protocol, PruneReport, PullPolicy, RegistryAuth, Result,
    ServiceSpec, StdinSpec, StorageSpec, WasmConfig, WasmSpec,
};

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<WasmRuntime>();
    is::<WaitHandle>();
    is::<Box<dyn Runtime>>();
    is::<Error>();
}

/// The README's Rust code blocks, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
