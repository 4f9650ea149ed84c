//! Runtime-wide settings: where images live, how many workers, default limits.

use super::error::{Error, Result};
use std::collections::HashMap;
use std::fmt;
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
    ///
    /// Compiled native code is kept in `{cache_dir}/compiled` (mode 0700, files
    /// 0600) and loaded only when the folder and the file belong to the current
    /// user and no one else may write them; otherwise it is ignored.
    pub cache_dir: PathBuf,
    /// How many worker threads run guests: 1 to 1,024.
    pub workers: usize,
    /// How many started containers may be live at once — waiting for a worker,
    /// running, or parked on a host event; a start beyond is refused with `QueueFull`.
    pub queue_limit: usize,
    /// The default wall-clock deadline of a run; a spec's `wasm.max_execution_time` overrides it.
    pub max_execution_time: Duration,
    /// The default fuel budget of a run; `None` is unlimited.
    pub max_fuel: Option<u64>,
    /// Fuel a guest burns between two checks for stop and deadline; an
    /// HTTP request's instance burns ten times this (at every yield a served
    /// Python or JS guest's own code cost more a request: measured in
    /// docs/performance.md).
    pub fuel_slice: u64,
    /// Bytes of log lines kept per container; the oldest lines are dropped past it.
    pub log_limit_bytes: usize,
    /// How many compiled artifacts no container uses stay cached for the next create.
    pub artifact_cache_size: usize,
    /// How long `remove_container` waits for a running guest to stop.
    pub stop_timeout: Duration,
    /// Pre-allocate instance slots (memories, tables, fiber stacks) for the live
    /// guests, up to 256 stores; artifacts that do not fit a slot, and guests
    /// beyond the pool, fall back to on-demand allocation.
    pub pooling: bool,
    /// The most bytes of compiled artifacts kept in `{cache_dir}/compiled`: when
    /// a new artifact would pass it, the least recently used ones are removed
    /// (with their records) until it fits. Runtimes sharing the folder keep
    /// working: an artifact already loaded stays mapped, and one removed is
    /// compiled again when next needed.
    pub compiled_cache_limit: u64,
    /// Keep compiled artifacts in `{cache_dir}/compiled` so a new runtime skips compiling them.
    ///
    /// Compiled artifacts are native code: they are loaded only from a folder
    /// and files that belong to the current user and that no one else may write;
    /// anything else is ignored (with one warning) and artifacts compile in memory.
    pub compiled_cache: bool,
    /// The most open resources one guest may hold at once (descriptors, sockets,
    /// streams, pollables…); past it the guest gets `EMFILE` or its interface's
    /// error, or traps where the interface has no such error.
    pub max_open_resources: usize,
    /// Credentials per registry host (`ghcr.io`, `localhost:5000`); a registry not
    /// listed uses docker's `config.json` (`$DOCKER_CONFIG`, else `~/.docker`), else none.
    pub registry_auth: HashMap<String, RegistryAuth>,
    /// Registries (`host` or `host:port`) spoken to over plain HTTP; loopback
    /// registries always are, every other one only over TLS.
    pub insecure_registries: Vec<String>,
    /// The largest WebAssembly artifact a pull downloads, in bytes.
    pub max_artifact_size: u64,
    /// How long a pull waits to connect to a registry.
    pub registry_connect_timeout: Duration,
    /// How long a pull waits for the registry's next bytes.
    pub registry_read_timeout: Duration,
    /// How long one pull may take in all.
    pub registry_pull_timeout: Duration,
    /// The address services bind when their endpoint names none: `127.0.0.1`
    /// (set `0.0.0.0` to publish on every interface).
    pub http_host: std::net::IpAddr,
    /// The most connections one service holds open; past it new ones are closed at once.
    pub http_max_connections: usize,
    /// The most requests one service handles at once.
    pub http_max_in_flight: usize,
    /// The most requests waiting for an in-flight place; past it, or after
    /// `http_queue_timeout`, a request is answered `503` with `Retry-After`.
    pub http_max_queued: usize,
    /// How long a request waits for an in-flight place.
    pub http_queue_timeout: Duration,
    /// The deadline of each request's handler; a spec's `wasm.request_timeout` overrides it.
    pub http_request_timeout: Duration,
    /// How many requests one instance of a service handles in all before it
    /// is dropped. `None` takes 128 for a `wasi:http/handler@0.3` service
    /// and 1 — a fresh instance per request — for a
    /// `wasi:http/incoming-handler@0.2` one (as `wasmtime serve` does). Set
    /// above 1 for a 0.2 service, it is the operator's word that the handler
    /// keeps nothing between requests that one client must not see of
    /// another's. An instance that traps, runs out of fuel or memory, or
    /// misses a request's deadline is never reused.
    pub http_max_instance_reuse_count: Option<usize>,
    /// How many requests one instance of a `wasi:http/handler@0.3` service
    /// handles at once; `None` takes 16. A 0.2 handler takes one at a time.
    pub http_max_instance_concurrent_reuse_count: Option<usize>,
    /// How long an idle instance is kept for the next request before it is dropped.
    pub http_idle_instance_timeout: Duration,
    /// How long a connection may go without a request in hand — before its
    /// first bytes, while it sends a request head, idle between keep-alive
    /// requests, an HTTP/2 connection with no stream open — before it is
    /// closed; also HTTP/2's PING interval and timeout.
    pub http_header_timeout: Duration,
    /// How long writing an answer may make no progress (a client that does not
    /// read) before the connection is closed.
    pub http_write_timeout: Duration,
    /// The most header fields a request may have (`431` past it).
    pub http_max_headers: usize,
    /// The most bytes a request's head may have (`431` past it); at least 8 KiB.
    pub http_max_header_bytes: usize,
    /// The largest request body a handler is given (`413` past it).
    pub http_max_request_body: u64,
    /// The largest response body a handler may send; past it the response is cut off.
    pub http_max_response_body: u64,
    /// The memory (linear memories and tables) all request instances of one
    /// service may hold together; a request whose instance would pass it is
    /// answered `503` with `Retry-After`.
    pub http_service_memory: u64,
    /// The memory limit of each request instance of a service whose spec sets
    /// none (`wasm.max_memory` overrides it).
    pub http_instance_memory: u64,
    /// Where guests' `wasi:keyvalue` buckets live: in memory (the default),
    /// in a folder on disk, or on a Redis server several hosts share.
    pub keyvalue: KeyValueStore,
    /// The longest key (and bucket name) a guest may use, in bytes.
    pub keyvalue_max_key_bytes: usize,
    /// The largest value a guest may store, in bytes; a larger one is refused
    /// before it is copied out of the guest.
    pub keyvalue_max_value_bytes: usize,
    /// The most keys one bucket may hold (every store).
    pub keyvalue_max_keys: u64,
    /// The most bytes (bucket names, keys, values and 64 bytes an entry) the
    /// buckets of one service may hold together, in the memory and folder stores.
    pub keyvalue_max_service_bytes: u64,
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
            compiled_cache_limit: 2 << 30,
            max_open_resources: 1024,
            registry_auth: HashMap::new(),
            insecure_registries: Vec::new(),
            max_artifact_size: 512 << 20,
            registry_connect_timeout: Duration::from_secs(10),
            registry_read_timeout: Duration::from_secs(30),
            registry_pull_timeout: Duration::from_secs(600),
            http_host: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            http_max_connections: 1024,
            http_max_in_flight: 128,
            http_max_queued: 256,
            http_queue_timeout: Duration::from_secs(1),
            http_request_timeout: Duration::from_secs(30),
            http_max_instance_reuse_count: None,
            http_max_instance_concurrent_reuse_count: None,
            http_idle_instance_timeout: Duration::from_secs(1),
            http_header_timeout: Duration::from_secs(10),
            http_write_timeout: Duration::from_secs(10),
            http_max_headers: 100,
            http_max_header_bytes: 64 * 1024,
            http_max_request_body: 16 << 20,
            http_max_response_body: 64 << 20,
            http_service_memory: 2 << 30,
            http_instance_memory: 256 << 20,
            keyvalue: KeyValueStore::Memory,
            keyvalue_max_key_bytes: 1024,
            keyvalue_max_value_bytes: 1 << 20,
            keyvalue_max_keys: 100_000,
            keyvalue_max_service_bytes: 64 << 20,
        }
    }
}

/// The longest timeout a setting may have (`Instant::now() + Duration::MAX` panics).
const MAX_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Most worker threads a runtime may have.
pub(crate) const MAX_WORKERS: usize = 1024;

impl WasmConfig {
    /// Refuses settings the runtime cannot honour, naming the field and value.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |field: &'static str, value: String, reason: &str| {
            Err(Error::InvalidSpec {
                field,
                value,
                reason: reason.to_string(),
            })
        };
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return invalid(
                "workers",
                self.workers.to_string(),
                &format!("expected 1 to {MAX_WORKERS} worker threads"),
            );
        }
        if self.queue_limit == 0 {
            return invalid(
                "queue_limit",
                "0".into(),
                "at least one container must be able to run",
            );
        }
        if self.fuel_slice == 0 {
            return invalid(
                "fuel_slice",
                "0".into(),
                "a slice must run at least one unit of fuel",
            );
        }
        if self.http_max_connections == 0 {
            return invalid(
                "http_max_connections",
                "0".into(),
                "a service needs at least one connection",
            );
        }
        if self.http_max_in_flight == 0 {
            return invalid(
                "http_max_in_flight",
                "0".into(),
                "a service needs at least one request in flight",
            );
        }
        for (field, value) in [
            (
                "http_max_instance_reuse_count",
                self.http_max_instance_reuse_count,
            ),
            (
                "http_max_instance_concurrent_reuse_count",
                self.http_max_instance_concurrent_reuse_count,
            ),
        ] {
            if value == Some(0) {
                return invalid(
                    field,
                    "0".into(),
                    "an instance handles at least one request",
                );
            }
        }
        if self.http_max_header_bytes < 8192 {
            return invalid(
                "http_max_header_bytes",
                self.http_max_header_bytes.to_string(),
                "at least 8192 bytes (the HTTP parser's smallest buffer)",
            );
        }
        // The connection timers are added to `Instant::now()` (by hyper and
        // h2 too): one that overflows it would panic every connection. The
        // other timeouts may be unbounded (`Duration::MAX`).
        for (field, value) in [
            ("http_header_timeout", self.http_header_timeout),
            ("http_write_timeout", self.http_write_timeout),
            (
                "http_idle_instance_timeout",
                self.http_idle_instance_timeout,
            ),
        ] {
            if value > MAX_TIMEOUT {
                return invalid(field, format!("{value:?}"), "at most 100 years");
            }
        }
        for (field, value) in [
            ("http_header_timeout", self.http_header_timeout),
            ("http_write_timeout", self.http_write_timeout),
        ] {
            if value.is_zero() {
                return invalid(
                    field,
                    "0s".into(),
                    "zero would close every connection at once",
                );
            }
        }
        if self.keyvalue_max_key_bytes == 0 || self.keyvalue_max_keys == 0 {
            return invalid(
                "keyvalue_max_key_bytes / keyvalue_max_keys",
                format!(
                    "{} / {}",
                    self.keyvalue_max_key_bytes, self.keyvalue_max_keys
                ),
                "a bucket must be able to hold one key",
            );
        }
        if let KeyValueStore::Redis(url) = &self.keyvalue {
            if !url.starts_with("redis://") {
                return invalid("keyvalue", url.clone(), "expected redis://HOST:PORT[/DB]");
            }
        }
        if self.max_open_resources < 16 {
            return invalid(
                "max_open_resources",
                self.max_open_resources.to_string(),
                "a guest needs at least 16 (its stdio and preopens are resources too)",
            );
        }
        Ok(())
    }
}

/// `$WASMPOOL_CACHE_DIR`, else `$XDG_CACHE_HOME/wasmpool`, else `~/.cache/wasmpool`,
/// else `wasmpool-{uid}` in the temporary directory (where the compiled cache's
/// ownership check keeps other users' files out).
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
    let mut dir = std::env::temp_dir();
    dir.push(format!("wasmpool-{}", current_user()));
    dir
}

/// Where `wasi:keyvalue` buckets live ([`WasmConfig::keyvalue`]).
///
/// A bucket belongs to one service: every replica of a service (every
/// [`ContainerId`](crate::ContainerId) with its `service` name) and every
/// request instance of it opens the same bucket by name; another service
/// never sees it.
///
/// # Examples
/// ```
/// use wasmpool::KeyValueStore;
/// assert_eq!("memory".parse::<KeyValueStore>().unwrap(), KeyValueStore::Memory);
/// assert_eq!(
///     "redis://127.0.0.1:6379/2".parse::<KeyValueStore>().unwrap(),
///     KeyValueStore::Redis("redis://127.0.0.1:6379/2".into())
/// );
/// assert_eq!(
///     "/var/lib/kv".parse::<KeyValueStore>().unwrap(),
///     KeyValueStore::Folder("/var/lib/kv".into())
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyValueStore {
    /// In this process's memory: shared by the runtime's containers, gone with the process.
    #[default]
    Memory,
    /// A database file (`keyvalue.redb`) in this folder, kept across restarts:
    /// a write the guest was told succeeded survives the process being killed.
    Folder(PathBuf),
    /// A Redis server, `redis://HOST:PORT[/DB]`: several runtimes on several
    /// machines serve one service on one state.
    Redis(String),
}

impl std::str::FromStr for KeyValueStore {
    type Err = Error;

    /// `memory`, `redis://…`, or else a folder path.
    fn from_str(text: &str) -> Result<Self> {
        match text {
            "" => Err(Error::InvalidSpec {
                field: "keyvalue",
                value: String::new(),
                reason: "expected memory, a folder path or redis://HOST:PORT[/DB]".into(),
            }),
            "memory" => Ok(KeyValueStore::Memory),
            _ if text.starts_with("redis://") => Ok(KeyValueStore::Redis(text.into())),
            _ => Ok(KeyValueStore::Folder(text.into())),
        }
    }
}

/// Credentials for one registry, as `WasmConfig::registry_auth` maps them by host.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum RegistryAuth {
    /// No credentials (a bearer token is still fetched anonymously if the registry asks).
    #[default]
    Anonymous,
    /// HTTP basic credentials, also used to obtain a bearer token when the registry asks.
    Basic {
        /// The user name.
        username: String,
        /// The password or access token.
        password: String,
    },
    /// A bearer token sent as is.
    Bearer(String),
    /// An OAuth 2 refresh token (docker's `identitytoken`, left by `docker
    /// login` at registries such as Azure's): exchanged at the registry's
    /// token realm (`grant_type=refresh_token`) for the access token sent.
    IdentityToken(String),
}

impl fmt::Debug for RegistryAuth {
    /// Names the kind of credentials, never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::Anonymous => f.write_str("Anonymous"),
            RegistryAuth::Basic { username, .. } => write!(f, "Basic({username:?}, ***)"),
            RegistryAuth::Bearer(_) => f.write_str("Bearer(***)"),
            RegistryAuth::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

/// The effective user id: whose files the caches trust.
#[allow(unsafe_code)]
pub(crate) fn current_user() -> u32 {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
