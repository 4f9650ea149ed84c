//! What a container should run: the parts of a service spec that mean something for WASM.

use super::error::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Describes one workload: its image, environment, command, mounts and limits.
///
/// Build one with struct-update syntax:
///
/// ```
/// use wasmpool::{ImageSpec, ServiceSpec};
/// let spec = ServiceSpec {
///     image: ImageSpec::new("localhost/hello:latest"),
///     ..Default::default()
/// };
/// assert!(spec.env.is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServiceSpec {
    /// Which image to run.
    pub image: ImageSpec,
    /// The guest's environment, exactly: the host's is never passed through.
    pub env: HashMap<String, String>,
    /// Entry point, arguments and working directory.
    pub command: CommandSpec,
    /// Host directories and named volumes the guest may open.
    pub storage: Vec<StorageSpec>,
    /// Limits and WASM-only settings.
    pub wasm: Option<WasmSpec>,
    /// What the guest reads on stdin.
    pub stdin: StdinSpec,
    /// A callback that sees every write the guest makes, as it makes it.
    pub output: Option<OutputSink>,
    /// Whether the guest may open network sockets (WASIp2 only); off by default.
    pub network: bool,
    /// The values a component reads through `wasi:config/store` (both the
    /// `0.2.0-rc.1` and Spin's `0.2.0-draft-2024-09-27` interfaces); `env`
    /// stays the environment. Empty by default.
    pub config: HashMap<String, String>,
    /// Where a service listens: a container whose component exports
    /// `wasi:http/incoming-handler` and that has an HTTP endpoint is served
    /// there by `start_container`, a fresh instance per request.
    pub endpoints: Vec<EndpointSpec>,
}

/// A port a service listens on.
///
/// ```
/// use wasmpool::{EndpointSpec, ServiceSpec};
/// let spec = ServiceSpec { endpoints: vec![EndpointSpec::http(8080)], ..Default::default() };
/// assert_eq!(spec.endpoints[0].port, 8080);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// A name for the endpoint, such as `"http"`.
    pub name: String,
    /// What is spoken on it; only HTTP is served.
    pub protocol: Protocol,
    /// The port; 0 picks a free one (see `WasmRuntime::service_address`).
    pub port: u16,
    /// The address to bind; `None` takes `WasmConfig::http_host`.
    pub host: Option<std::net::IpAddr>,
}

impl EndpointSpec {
    /// An HTTP endpoint on `port` of the runtime's `http_host`.
    pub fn http(port: u16) -> Self {
        EndpointSpec {
            name: "http".into(),
            protocol: Protocol::Http,
            port,
            host: None,
        }
    }
}

/// The protocol of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP/1.1 (and HTTP/2 with prior knowledge), served to a `wasi:http` handler.
    Http,
    /// Raw TCP: not served (a guest that listens itself uses WASIp2 sockets).
    Tcp,
}

/// Names the image: a file `{cache_dir}/{name with '/', ':', '@' as '_'}.wasm`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// The image reference, such as `localhost/hello:latest`.
    pub name: String,
    /// When to fetch the image from its registry (`Never`, the default, reads the cache only).
    pub pull_policy: PullPolicy,
}

impl ImageSpec {
    /// Names an image in the local cache.
    pub fn new(name: impl Into<String>) -> Self {
        ImageSpec {
            name: name.into(),
            pull_policy: PullPolicy::Never,
        }
    }
}

/// When to fetch an image from a registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Never: the image must be in the cache directory.
    #[default]
    Never,
    /// Only when the image is not in the cache.
    IfNotPresent,
    /// Every time: the reference is resolved again, and downloaded when its digest changed.
    Always,
}

/// The guest's command line and working directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandSpec {
    /// Words that come after `argv[0]` and before `args`.
    pub entrypoint: Option<Vec<String>>,
    /// The arguments.
    pub args: Option<Vec<String>>,
    /// The guest's initial working directory (a guest path).
    pub workdir: Option<String>,
}

/// A directory the guest may open, mounted at a guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSpec {
    /// A host directory.
    Bind {
        /// The host directory.
        source: PathBuf,
        /// Where the guest sees it, such as `/data`.
        target: String,
        /// Refuse every write through this mount.
        readonly: bool,
    },
    /// A directory the runtime keeps under `{cache_dir}/volumes/{name}`.
    Named {
        /// The volume's name: letters, digits, `-`, `_` and `.`.
        name: String,
        /// Where the guest sees it.
        target: String,
        /// Refuse every write through this mount.
        readonly: bool,
    },
}

/// Limits of one container; a `None` takes the runtime's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WasmSpec {
    /// The most fuel the guest may consume; it ends as out of fuel past it.
    pub max_fuel: Option<u64>,
    /// The most linear memory, such as `"64Mi"`, `"1G"` or `"65536"`.
    pub max_memory: Option<String>,
    /// Trap when a `memory.grow` is refused, instead of returning -1 to the guest.
    pub trap_on_grow_failure: bool,
    /// A wall-clock deadline for the run, from instantiation (compiling is not counted).
    pub max_execution_time: Option<Duration>,
    /// For a service: the deadline of each request's handler, from its
    /// instantiation; `None` takes `WasmConfig::http_request_timeout`.
    pub request_timeout: Option<Duration>,
    /// The most open resources the guest may hold at once — descriptors, sockets,
    /// streams, pollables; `None` takes the runtime's `max_open_resources`.
    pub max_open_resources: Option<usize>,
    /// A core module's export to call instead of its default entry point, as
    /// `wasmtime run --invoke`: no arguments, its `i32` result (if any) is the exit code.
    pub invoke: Option<String>,
    /// Define every import nobody provides as a function that traps when called
    /// (`wasmtime run -W unknown-imports-trap`), so an artifact that only names
    /// an interface still runs.
    pub trap_unknown_imports: bool,
}

/// What the guest reads on stdin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StdinSpec {
    /// End of file at once.
    #[default]
    Empty,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// The host process's stdin (for command-line tools).
    Inherit,
}

/// Which output stream a write or a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
    /// A note from the runtime itself, such as how many lines it dropped.
    Runtime,
}

/// The level of a line a guest logged through `wasi:logging`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// `trace`
    Trace,
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
    /// `critical`
    Critical,
}

impl fmt::Display for LogLevel {
    /// `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`, `CRITICAL`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
            LogLevel::Critical => "CRITICAL",
        })
    }
}

/// A callback that sees every chunk the guest writes, as it writes it.
///
/// It runs on the worker thread inside the guest's write, so it should be quick.
/// A panic in it fails that container with a reason; the pool survives.
#[derive(Clone)]
pub struct OutputSink(pub Arc<SinkFn>);

/// The callback type of an [`OutputSink`].
pub type SinkFn = dyn Fn(LogStream, &[u8]) + Send + Sync;

impl OutputSink {
    /// Wraps a callback.
    pub fn new(f: impl Fn(LogStream, &[u8]) + Send + Sync + 'static) -> Self {
        OutputSink(Arc::new(f))
    }
}

impl fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OutputSink(..)")
    }
}

/// Parses a byte size: a number with an optional suffix `K`, `M`, `G` (powers of
/// 1000) or `Ki`, `Mi`, `Gi` (powers of 1024), with an optional trailing `B`.
///
/// # Examples
/// ```
/// assert_eq!(wasmpool::parse_size("64Mi").unwrap(), 64 << 20);
/// assert_eq!(wasmpool::parse_size("2k").unwrap(), 2000);
/// assert!(wasmpool::parse_size("lots").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64> {
    let invalid = |reason: &str| Error::InvalidSpec {
        field: "memory size",
        value: text.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| invalid("expected a number such as 64Mi"))?;
    let suffix = suffix.trim().to_ascii_lowercase();
    let suffix = suffix.strip_suffix('b').unwrap_or(&suffix);
    let scale: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        _ => return Err(invalid("unknown unit; use K, M, G, Ki, Mi or Gi")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| invalid("too large"))
}

/// Parses a duration the one way every part of wasmpool reads one (the CLI's
/// `--timeout`, `-W timeout=`, the shim's `io.wasmpool.deadline`): numbers
/// with units, several in a row as `humantime` writes them (`1h30m`, `2m 5s`),
/// units `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`, `d` (and their long forms
/// `sec`, `min`, `hour`, `day`…); a bare number is seconds, and may have a
/// fraction (`1.5`, `0.25s`).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// assert_eq!(wasmpool::parse_duration("1m30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(wasmpool::parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert_eq!(wasmpool::parse_duration("5").unwrap(), Duration::from_secs(5));
/// assert!(wasmpool::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration> {
    let invalid = |reason: String| Error::InvalidSpec {
        field: "duration",
        value: text.to_string(),
        reason,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid(
            "expected a duration such as 5s, 500ms or 1m30s".into(),
        ));
    }
    let mut rest = trimmed;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let value: f64 = number
            .parse()
            .map_err(|_| invalid("expected a number and a unit, such as 5s or 1m30s".into()))?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let seconds_per = match unit {
            // A bare number is seconds (alone, or as the last part).
            "" if after.trim().is_empty() => 1.0,
            "ns" | "nsec" => 1e-9,
            "us" | "µs" | "usec" => 1e-6,
            "ms" | "msec" => 1e-3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            other => {
                return Err(invalid(format!(
                    "unknown unit '{other}' (use ns, us, ms, s, m, h or d)"
                )))
            }
        };
        let part = Duration::try_from_secs_f64(value * seconds_per)
            .map_err(|_| invalid("out of range".into()))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| invalid("out of range".into()))?;
        rest = after.trim_start();
    }
    Ok(total)
}
