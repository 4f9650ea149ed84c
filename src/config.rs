//! Runtime-wide settings: where images live, how many workers, default limits.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of a [`WasmRuntime`](crate::WasmRuntime); every field has a default.
///
/// There are no epoch settings: this runtime preempts guests with fuel.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let config = wasmpool::WasmConfig {
///     workers: 2,
///     max_execution_time: Duration::from_secs(30),
///     ..Default::default()
/// };
/// assert_eq!(config.fuel_slice, 100_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmConfig {
    /// The image cache: `{cache_dir}/{image}.wasm`; created if missing. Named volumes live in `volumes/` under it.
    pub cache_dir: PathBuf,
    /// How many worker threads run guests; at least 1.
    pub workers: usize,
    /// How many started containers may wait for a worker; a start beyond is refused.
    pub queue_limit: usize,
    /// The default wall-clock deadline of a run; a spec's `wasm.max_execution_time` overrides it.
    pub max_execution_time: Duration,
    /// The default fuel budget of a run; `None` is unlimited.
    pub max_fuel: Option<u64>,
    /// Fuel a guest burns between two checks for stop and deadline.
    pub fuel_slice: u64,
    /// Bytes of log lines kept per container; the oldest lines are dropped past it.
    pub log_limit_bytes: usize,
    /// How many compiled artifacts no container uses stay cached for the next create.
    pub artifact_cache_size: usize,
    /// How long `remove_container` waits for a running guest to stop.
    pub stop_timeout: Duration,
    /// Pre-allocate instance slots (memories, tables, fiber stacks) for every
    /// worker; artifacts that do not fit a slot fall back to on-demand allocation.
    pub pooling: bool,
    /// Keep compiled artifacts in `{cache_dir}/compiled` so a new runtime skips compiling them.
    pub compiled_cache: bool,
}

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            cache_dir: default_cache_dir(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue_limit: 10_000,
            max_execution_time: Duration::from_secs(3600),
            max_fuel: None,
            fuel_slice: 100_000,
            log_limit_bytes: 1 << 20,
            artifact_cache_size: 64,
            stop_timeout: Duration::from_secs(10),
            pooling: true,
            compiled_cache: true,
        }
    }
}

/// `$WASMPOOL_CACHE_DIR`, else `$XDG_CACHE_HOME/wasmpool`, else `~/.cache/wasmpool`,
/// else `wasmpool` in the temporary directory.
fn default_cache_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("WASMPOOL_CACHE_DIR") {
        return dir.into();
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("wasmpool");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home).join(".cache").join("wasmpool");
    }
    std::env::temp_dir().join("wasmpool")
}
