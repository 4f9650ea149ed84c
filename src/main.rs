//! `wasmpool`: run, benchmark and inspect WASI workloads from the command line.

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmpool::{
    ContainerId, EndpointSpec, ImageSpec, LogStream, Outcome, OutputSink, PullPolicy, ServiceSpec,
    StdinSpec, StorageSpec, WasmConfig, WasmRuntime, WasmSpec,
};

/// Exit code when wasmpool itself fails (a missing file, a bad option value).
const EXIT_WASMPOOL_ERROR: u8 = 125;
/// Exit code after Ctrl-C stopped the guest, as a shell reports SIGINT.
const EXIT_INTERRUPTED: u8 = 130;
/// Most instances one `bench` runs.
const MAX_BENCH_INSTANCES: usize = 100_000_000;
/// Most caller threads of `bench`.
const MAX_BENCH_CALLERS: usize = 1024;

/// Run WASI programs (Preview 1 modules, WASI 0.2 and 0.3 command components,
/// or WAT text) and serve wasi:http components, the way a container runtime
/// runs containers: bounded, observable, stoppable.
#[derive(Parser)]
#[command(name = "wasmpool", version)]
#[command(
    after_help = "Exit codes of `run`: the guest's own code; 124 deadline (--timeout); \
126 cannot run (invalid module, no entry point); 130 stopped by Ctrl-C or SIGTERM; 134 trap; \
137 memory limit (with --trap-on-grow-failure); 152 out of fuel; 125 wasmpool error; \
2 usage error. Options after FILE are the guest's. Images and compiled code are cached in \
--cache-dir: $WASMPOOL_CACHE_DIR, else $XDG_CACHE_HOME/wasmpool, else ~/.cache/wasmpool."
)]
struct Cli {
    /// Log what wasmpool does; twice (-vv) adds wasmtime's and cranelift's own logs
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    /// The most bytes of compiled code kept in the cache (such as 512Mi or 2G); the least recently used go first
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size_arg)]
    compiled_cache_limit: Option<u64>,
    /// No progress bar or compile notes, even on a terminal
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Where images and compiled code are cached (default: $WASMPOOL_CACHE_DIR,
    /// else $XDG_CACHE_HOME/wasmpool, else ~/.cache/wasmpool)
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run one workload, streaming its output, and exit with its exit code
    Run(RunArgs),
    /// Serve a wasi:http component (exporting wasi:http/incoming-handler@0.2 or
    /// wasi:http/handler@0.3) over HTTP, a fresh instance per request, until
    /// Ctrl-C or SIGTERM (both drain requests in flight first). Figures (requests
    /// by status, latency, CPU, memory) are the library's `get_container_stats`;
    /// `-v` logs each failed request
    #[cfg(feature = "serve")]
    Serve(ServeArgs),
    /// Run many instances of a workload through the pool and report throughput and latency
    Bench(BenchArgs),
    /// Pre-initialise a module or component: run its init export once and
    /// write a snapshot that starts where it left off (wasmtime's Wizer), so
    /// start-up work is paid at build time, not by every instance
    Wizer(WizerArgs),
    /// Say what a file is, what it imports and exports, and why it would not run
    Inspect {
        /// A .wasm module or component, or a .wat file
        file: PathBuf,
    },
    /// Pull a WebAssembly artifact from an OCI registry into the image cache: the
    /// reference is resolved every time, and downloaded only if its digest changed
    Pull {
        /// The reference, such as ghcr.io/org/app:1.0 or localhost:5000/app@sha256:…
        image: String,
        /// Accepted for compatibility: a pull always resolves the reference
        #[arg(long, hide = true)]
        always: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// List the cached images: reference, digest, size, when pulled
    Images,
    /// Remove images from the image cache (their compiled code goes at the next prune)
    Rmi {
        /// References (as `images` lists them)
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove what no one needs: compiled code of no cached image, stale records
    /// and leftovers; with --all, every image and compiled artifact
    Prune {
        /// Also remove every cached image and all compiled code
        #[arg(long, short)]
        all: bool,
        /// Only say what would be removed
        #[arg(long)]
        dry_run: bool,
    },
    /// Show how much the image cache and the compiled cache hold
    Df,
}

#[derive(Args)]
struct RegistryArgs {
    /// A registry (HOST or HOST:PORT) to speak plain HTTP to; loopback registries always are (repeatable)
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure: Vec<String>,
}

impl RegistryArgs {
    /// The runtime settings for pulls: the default cache folder, these insecure registries.
    fn config(&self) -> WasmConfig {
        WasmConfig {
            insecure_registries: self.insecure.clone(),
            ..Default::default()
        }
    }
}

/// What `run` was given.
enum Workload {
    /// WAT text, already made binary.
    Text(Vec<u8>),
    /// A binary module or component file, read by the runtime.
    Binary,
    /// An image reference, pulled into the cache as `--pull` says.
    Image,
}

/// When `run REF` pulls.
#[derive(Clone, Copy, ValueEnum)]
enum PullWhen {
    /// Resolve the reference every time; download when its digest changed
    Always,
    /// Pull only when the image is not in the cache
    Missing,
    /// Use the cache only
    Never,
}

#[derive(Args)]
struct RunArgs {
    /// FILE (a .wasm module or component, or a .wat file) or an image reference
    /// (pulled into the cache), then the guest's arguments: everything after it
    /// is the guest's, wasmpool's options go before it
    #[arg(
        value_name = "FILE|REF [ARGS]...",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
    /// Call this exported function instead of the default entry point; its i32 result is the exit code
    #[arg(long, value_name = "NAME")]
    invoke: Option<String>,
    /// Define imports nobody provides as functions that trap when called
    #[arg(long)]
    trap_unknown_imports: bool,
    /// The most open files, sockets and other resources the guest may hold
    #[arg(long, value_name = "N")]
    max_open_resources: Option<usize>,
    /// Set NAME=VAL in the guest's environment, or pass the host's NAME (repeatable)
    #[arg(short, long = "env", value_name = "NAME[=VAL]")]
    env: Vec<String>,
    /// Mount a host directory, at GUEST or at the same path (repeatable)
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,
    /// Mount a host directory read-only (repeatable)
    #[arg(long = "ro-dir", value_name = "HOST[::GUEST]")]
    ro_dirs: Vec<String>,
    /// Fuel budget: the guest ends (152) once it has consumed this much
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Linear memory limit, such as 64Mi or 1G
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
    /// Wall-clock limit, such as 500ms, 5s or 2m; the guest ends (124) past it
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Let the guest open network sockets (WASIp2 and later)
    #[arg(long)]
    network: bool,
    /// A memory.grow past --max-memory traps (exit 137) instead of returning -1 to the guest
    #[arg(long)]
    trap_on_grow_failure: bool,
    /// wasmtime's WASI options, mapped onto ours: inherit-network (also
    /// network, tcp, udp, allow-ip-name-lookup) = --network; inherit-env = every
    /// host variable; cli, http, preview2, p3, common: always on (repeatable,
    /// or comma-separated)
    #[arg(short = 'S', value_name = "OPT[=VAL]", value_parser = wasi_option)]
    wasi_options: Vec<String>,
    /// wasmtime's wasm options, mapped onto ours: fuel=N (--fuel),
    /// max-memory-size=BYTES (--max-memory), timeout=DUR (--timeout),
    /// unknown-imports-trap (--trap-unknown-imports), trap-on-grow-failure
    /// (repeatable, or comma-separated)
    #[arg(short = 'W', value_name = "OPT=VAL", value_parser = wasm_option)]
    wasm_options: Vec<String>,
    /// When to pull an image reference: always, missing (default) or never
    #[arg(long, value_enum, value_name = "WHEN", default_value = "missing")]
    pull: PullWhen,
    /// A value the guest reads through wasi:config/store (repeatable)
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = config_value)]
    config: Vec<(String, String)>,
    /// Where wasi:keyvalue buckets live: memory (default), a folder path, or redis://HOST:PORT[/DB]
    #[arg(long, value_name = "STORE")]
    keyvalue: Option<wasmpool::KeyValueStore>,
    /// The longest key a guest may store, in bytes (default 1024)
    #[arg(long, value_name = "BYTES")]
    keyvalue_max_key: Option<usize>,
    /// The largest value a guest may store, such as 1Mi (the default)
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    keyvalue_max_value: Option<u64>,
    /// The most keys one bucket may hold (default 100000)
    #[arg(long, value_name = "N")]
    keyvalue_max_keys: Option<u64>,
    /// The most bytes a service's buckets may hold, memory and folder stores (default 64Mi)
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    keyvalue_max_bytes: Option<u64>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[cfg(feature = "serve")]
#[derive(Args)]
struct ServeArgs {
    /// The address to listen on: every interface, as `wasmtime serve` does (a
    /// service the library starts binds 127.0.0.1 unless its endpoint says otherwise)
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:8080")]
    addr: std::net::SocketAddr,
    /// The most requests handled at once; past it (and a short wait) requests get 503
    #[arg(long, value_name = "N")]
    max_in_flight: Option<usize>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics, on a listener of their own (off by default)
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Requests one instance handles in all before it is dropped: default 128
    /// for a wasi:http/handler@0.3 component, 1 (a fresh instance per request)
    /// for a 0.2 one; above 1 for a 0.2 component says its handler is safe to reuse
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_instance_reuse_count: Option<u64>,
    /// Requests one wasi:http/handler@0.3 instance handles at once (default 16)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_instance_concurrent_reuse_count: Option<u64>,
    /// How long an idle instance is kept for the next request (default 1s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_instance_timeout: Option<Duration>,
    /// Pre-initialise the component first, as `wasmpool wizer` does, running
    /// the export FUNC (default wizer-initialize); the snapshot is kept in the
    /// cache folder and made again only when the file changes
    #[arg(long, value_name = "FUNC", num_args = 0..=1, require_equals = true,
          default_missing_value = wasmpool::DEFAULT_INIT_FUNC)]
    pre_init: Option<String>,
    /// Options as for `run`; --timeout is each request's deadline (default 30s)
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct WizerArgs {
    /// The .wasm module or component (or .wat file) to pre-initialise
    input: PathBuf,
    /// Where to write the snapshot
    output: PathBuf,
    /// The export to run: a function of no parameters and no results
    #[arg(long, value_name = "NAME", default_value = wasmpool::DEFAULT_INIT_FUNC)]
    init_func: String,
    /// The most fuel the init function may burn (default: unbounded)
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
}

#[derive(Args)]
struct BenchArgs {
    /// A .wasm module or component, or a .wat file
    file: PathBuf,
    /// How many instances to run
    #[arg(short = 'n', long, default_value_t = 10_000)]
    instances: usize,
    /// Worker threads in the pool (default: one per core)
    #[arg(short, long)]
    workers: Option<usize>,
    /// Threads that create, start and wait on instances
    #[arg(long, default_value_t = 4)]
    callers: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        // A failed pull's error already quotes the TLS verifier's reason.
        0 => "warn,rustls_platform_verifier=off",
        1 => "warn,wasmpool=debug,rustls_platform_verifier=off",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter)).init();
    QUIET.store(cli.quiet, Ordering::Relaxed);
    if let Some(dir) = &cli.cache_dir {
        // Read by every runtime's default settings below; set while this is
        // the only thread.
        std::env::set_var("WASMPOOL_CACHE_DIR", dir);
    }
    let result = match cli.command {
        Command::Run(args) => run(args, cli.compiled_cache_limit),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve(args, cli.compiled_cache_limit),
        Command::Bench(args) => bench(args),
        Command::Wizer(args) => wizer(&args),
        Command::Inspect { file } => inspect(&file),
        Command::Pull {
            image, registry, ..
        } => pull(&image, &registry, cli.compiled_cache_limit),
        Command::Images => images(cli.compiled_cache_limit),
        Command::Rmi { images } => rmi(&images, cli.compiled_cache_limit),
        Command::Prune { all, dry_run } => prune(all, dry_run, cli.compiled_cache_limit),
        Command::Df => df(cli.compiled_cache_limit),
    };
    result.unwrap_or_else(|error| {
        eprintln!("wasmpool: {error:#}");
        ExitCode::from(EXIT_WASMPOOL_ERROR)
    })
}

/// Whether `file` holds WAT text (a `.wat` name, or text starting with `(`).
fn is_text(file: &Path) -> Result<bool> {
    use std::io::Read;
    if file.extension().is_some_and(|e| e == "wat") {
        return Ok(true);
    }
    let mut first = [0u8; 1];
    let mut opened =
        std::fs::File::open(file).with_context(|| format!("cannot read '{}'", file.display()))?;
    let read = opened
        .read(&mut first)
        .with_context(|| format!("cannot read '{}'", file.display()))?;
    Ok(read == 1 && first[0] == b'(')
}

/// Reads a workload; `.wat` files (and WAT text in any file) become binary.
fn load(file: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read '{}'", file.display()))?;
    if file.extension().is_some_and(|e| e == "wat") || bytes.first().is_some_and(|b| *b == b'(') {
        return wat::parse_bytes(&bytes)
            .map(|b| b.into_owned())
            .with_context(|| format!("invalid WAT in '{}'", file.display()));
    }
    Ok(bytes)
}

/// Durations as the library reads them everywhere: `500ms`, `5s`, `1m30s`, a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    wasmpool::parse_duration(text).map_err(|e| e.to_string())
}

/// `y`, `yes`, `true`, `1` (or nothing: the option alone) and their opposites.
fn flag_value(option: &str, value: Option<&str>) -> Result<bool> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("y" | "yes" | "true" | "1") => Ok(true),
        Some("n" | "no" | "false" | "0") => Ok(false),
        Some(other) => bail!("invalid value '{other}' for {option}: expected y or n"),
    }
}

/// The WASI options of wasmtime that `-S` takes here.
const WASI_OPTIONS: &str = "inherit-network, network, tcp, udp, allow-ip-name-lookup, \
inherit-env, cli, http, preview2, p3, common";
/// The wasm options of wasmtime that `-W` takes here.
const WASM_OPTIONS: &str =
    "fuel, max-memory-size, timeout, unknown-imports-trap, trap-on-grow-failure";

/// Checks the names in one `-S` value (a usage error, exit 2, names what is taken).
fn config_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err("expected KEY=VALUE".into()),
    }
}

fn wasi_option(text: &str) -> Result<String, String> {
    known_options(text, WASI_OPTIONS, "-S")
}

/// Checks the names in one `-W` value.
fn wasm_option(text: &str) -> Result<String, String> {
    known_options(text, WASM_OPTIONS, "-W")
}

fn known_options(text: &str, known: &str, flag: &str) -> Result<String, String> {
    for option in text.split(',').filter(|o| !o.is_empty()) {
        let name = option.split('=').next().unwrap_or(option);
        if !known.split(", ").any(|k| k == name) {
            return Err(format!(
                "{flag} {name} is not supported by wasmpool; the {flag} options it takes: {known}"
            ));
        }
    }
    Ok(text.to_string())
}

/// Maps wasmtime's `-S` and `-W` options onto ours, as `wasmtime run` and
/// `wasmtime serve` users type them; an option we do not have is an error
/// that names the ones we do.
fn apply_wasmtime_options(args: &mut RunArgs) -> Result<()> {
    let split = |options: &[String]| -> Vec<(String, Option<String>)> {
        options
            .iter()
            .flat_map(|list| list.split(','))
            .filter(|option| !option.is_empty())
            .map(|option| match option.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (option.to_string(), None),
            })
            .collect()
    };
    for (name, value) in split(&args.wasi_options) {
        let option = format!("-S {name}");
        match name.as_str() {
            "inherit-network" | "network" | "tcp" | "udp" | "allow-ip-name-lookup" => {
                args.network |= flag_value(&option, value.as_deref())?;
            }
            "inherit-env" => {
                if flag_value(&option, value.as_deref())? {
                    args.env
                        .extend(std::env::vars().map(|(k, v)| format!("{k}={v}")));
                }
            }
            "cli" | "http" | "preview2" | "p3" | "common" => {
                if !flag_value(&option, value.as_deref())? {
                    bail!("{option}=n: wasmpool always provides {name}; it cannot be turned off");
                }
            }
            other => bail!(
                "-S {other} is not supported by wasmpool; the -S options it takes: {WASI_OPTIONS}"
            ),
        }
    }
    for (name, value) in split(&args.wasm_options) {
        let option = format!("-W {name}");
        let needed = || {
            value
                .clone()
                .with_context(|| format!("{option} needs a value: {option}=…"))
        };
        match name.as_str() {
            "fuel" => {
                let text = needed()?;
                args.fuel = Some(
                    text.parse()
                        .with_context(|| format!("invalid {option}={text}: expected a number"))?,
                );
            }
            "max-memory-size" => args.max_memory = Some(needed()?),
            "timeout" => {
                let text = needed()?;
                args.timeout = Some(parse_duration(&text).map_err(anyhow::Error::msg)?);
            }
            "unknown-imports-trap" => {
                args.trap_unknown_imports |= flag_value(&option, value.as_deref())?;
            }
            "trap-on-grow-failure" => {
                args.trap_on_grow_failure |= flag_value(&option, value.as_deref())?;
            }
            other => bail!(
                "-W {other} is not supported by wasmpool; the -W options it takes: {WASM_OPTIONS}"
            ),
        }
    }
    Ok(())
}

/// Warns when an argument given to the guest (after FILE) is one of
/// wasmpool's own long options: `serve app.wasm --addr …` gives `--addr` to
/// the guest, not to wasmpool.
fn warn_of_misplaced_options(subcommand: &str, guest_args: &[String]) {
    use clap::CommandFactory;
    let cli = Cli::command();
    let Some(command) = cli.find_subcommand(subcommand) else {
        return;
    };
    let ours: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_long().map(str::to_string))
        .collect();
    for arg in guest_args {
        let Some(name) = arg.strip_prefix("--") else {
            continue;
        };
        let name = name.split('=').next().unwrap_or(name);
        if ours.iter().any(|o| o == name) {
            eprintln!(
                "wasmpool: warning: `{arg}` comes after the file, so it is the guest's argument, \
                 not wasmpool's; put wasmpool's options before the file"
            );
        }
    }
}

fn mounts(specs: &[String], readonly: bool) -> Result<Vec<StorageSpec>> {
    specs
        .iter()
        .map(|spec| {
            let (host, guest) = match spec.split_once("::") {
                Some((host, guest)) => (host, guest.to_string()),
                None => (spec.as_str(), spec.clone()),
            };
            if !Path::new(host).is_dir() {
                bail!("cannot mount '{host}': not a directory");
            }
            Ok(StorageSpec::Bind {
                source: host.into(),
                target: guest,
                readonly,
            })
        })
        .collect()
}

fn environment(vars: &[String]) -> Result<HashMap<String, String>> {
    vars.iter()
        .map(|var| match var.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
            Some(_) => bail!("invalid --env '{var}': expected NAME=VAL or NAME"),
            None => std::env::var(var)
                .map(|value| (var.clone(), value))
                .with_context(|| format!("invalid --env '{var}': the host has no such variable")),
        })
        .collect()
}

fn guest_name(file: &Path) -> String {
    file.file_name()
        .map_or_else(|| "guest".into(), |n| n.to_string_lossy().into_owned())
}

/// Whether `run`'s first word names a registry image rather than a file: it is
/// not a file, not a path, not a `.wasm`/`.wat` name, and has a registry or tag part.
fn is_reference(word: &str) -> bool {
    let path = Path::new(word);
    !path.exists()
        && !word.starts_with(['/', '.'])
        && !path.extension().is_some_and(|e| e == "wasm" || e == "wat")
        && word.contains(['/', ':', '@'])
}

/// A runtime on the default caches, for the cache commands: one worker.
fn cache_runtime(config: WasmConfig, limit: Option<u64>) -> Result<WasmRuntime> {
    let defaults = WasmConfig::default();
    Ok(WasmRuntime::new(WasmConfig {
        workers: 1,
        compiled_cache_limit: limit.unwrap_or(defaults.compiled_cache_limit),
        ..config
    })?)
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    wasmpool::parse_size(text)
        .map_err(|_| format!("invalid size '{text}': expected such as 512Mi, 2G or 1048576"))
}

/// Whether to show progress: on a terminal, unless `-q`.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Pulls `image` with a progress bar of the bytes downloaded (on a terminal
/// and without `-q`; silent in pipes).
fn pull_showing(
    runtime: &WasmRuntime,
    image: &str,
    policy: PullPolicy,
) -> wasmpool::Result<wasmpool::PulledImage> {
    if QUIET.load(Ordering::Relaxed) || !std::io::stderr().is_terminal() {
        return runtime.pull(image, policy);
    }
    let bar = indicatif::ProgressBar::hidden();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("pulling {image}"));
    let shown = bar.clone();
    let pulled = runtime.pull_with_progress(image, policy, move |done, total| {
        if shown.is_hidden() {
            shown.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        shown.set_length(total);
        shown.set_position(done);
    });
    bar.finish_and_clear();
    pulled
}

/// `docker pull`'s meaning: the reference is resolved every time.
fn pull(image: &str, registry: &RegistryArgs, limit: Option<u64>) -> Result<ExitCode> {
    let runtime = cache_runtime(registry.config(), limit)?;
    let pulled = pull_showing(&runtime, image, PullPolicy::Always)?;
    let digest = pulled.digest.as_deref().unwrap_or("digest unknown");
    if pulled.downloaded {
        println!("pulled {image} ({digest}) into {}", pulled.path.display());
    } else {
        println!(
            "{image} is up to date ({digest}) in {}",
            pulled.path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The container `run` and `serve` make of their arguments: a file (WAT text
/// is compiled here, a binary is read by the runtime) or an image reference.
fn create(
    mut args: RunArgs,
    endpoints: Vec<EndpointSpec>,
    mut config: WasmConfig,
    pre_init: Option<&str>,
) -> Result<(Arc<WasmRuntime>, ContainerId)> {
    if let Some(store) = args.keyvalue.take() {
        config.keyvalue = store;
    }
    config.keyvalue_max_key_bytes = args
        .keyvalue_max_key
        .unwrap_or(config.keyvalue_max_key_bytes);
    if let Some(size) = args.keyvalue_max_value {
        config.keyvalue_max_value_bytes = usize::try_from(size).unwrap_or(usize::MAX);
    }
    config.keyvalue_max_keys = args.keyvalue_max_keys.unwrap_or(config.keyvalue_max_keys);
    config.keyvalue_max_service_bytes = args
        .keyvalue_max_bytes
        .unwrap_or(config.keyvalue_max_service_bytes);
    let serving = !endpoints.is_empty();
    apply_wasmtime_options(&mut args)?;
    let mut command = args.command.into_iter();
    let target = command.next().unwrap_or_default();
    // `wasmpool run FILE -- ARGS` (the older form) still works: that `--` is ours.
    let mut guest_args: Vec<String> = command.collect();
    if guest_args.first().is_some_and(|a| a == "--") {
        guest_args.remove(0);
    } else {
        warn_of_misplaced_options(if serving { "serve" } else { "run" }, &guest_args);
    }
    let file = PathBuf::from(&target);
    let mut workload = if is_reference(&target) {
        Workload::Image
    } else if is_text(&file)? {
        Workload::Text(load(&file)?)
    } else {
        // A binary is read through the runtime: unchanged, it is not read again.
        Workload::Binary
    };
    if let Some(init_func) = pre_init {
        let bytes = match workload {
            Workload::Image => bail!("--pre-init takes a file, not an image reference"),
            Workload::Text(bytes) => bytes,
            Workload::Binary => load(&file)?,
        };
        let started = std::time::Instant::now();
        let (snapshot, made) = wasmpool::pre_initialize_cached(
            &config.cache_dir.join("preinit"),
            &bytes,
            init_func,
            args.fuel,
        )
        .with_context(|| format!("cannot pre-initialise '{}'", file.display()))?;
        if made && !QUIET.load(Ordering::Relaxed) {
            eprintln!(
                "{} pre-initialised by `{init_func}` in {:.1?}",
                file.display(),
                started.elapsed()
            );
        }
        workload = Workload::Text(snapshot);
    }
    let image = match workload {
        Workload::Image => ImageSpec::new(target.clone()),
        _ => ImageSpec::new(guest_name(&file)),
    };
    let mut storage = mounts(&args.dirs, false)?;
    storage.extend(mounts(&args.ro_dirs, true)?);
    let spec = ServiceSpec {
        image,
        env: environment(&args.env)?,
        config: args.config.iter().cloned().collect(),
        command: wasmpool::CommandSpec {
            args: Some(guest_args),
            ..Default::default()
        },
        storage,
        wasm: Some(WasmSpec {
            max_fuel: args.fuel,
            max_memory: args.max_memory,
            // A service runs until stopped; `--timeout` is each request's deadline.
            max_execution_time: Some(if serving {
                Duration::MAX
            } else {
                args.timeout.unwrap_or(Duration::MAX)
            }),
            request_timeout: args.timeout.filter(|_| serving),
            trap_on_grow_failure: args.trap_on_grow_failure,
            max_open_resources: args.max_open_resources,
            invoke: args.invoke,
            trap_unknown_imports: args.trap_unknown_imports,
        }),
        stdin: if serving || std::io::stdin().is_terminal() {
            StdinSpec::Empty
        } else {
            StdinSpec::Inherit
        },
        output: Some(OutputSink::new(|stream, bytes| {
            // A closed terminal must not fail the guest: output is best effort.
            let _ = match stream {
                LogStream::Stderr => std::io::stderr().lock().write_all(bytes),
                _ => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(bytes).and_then(|()| out.flush())
                }
            };
        })),
        network: args.network,
        endpoints,
    };
    let runtime = Arc::new(WasmRuntime::new(WasmConfig {
        insecure_registries: args.registry.insecure.clone(),
        ..config
    })?);
    let id = ContainerId::new(guest_name(&file), 1);
    match &workload {
        Workload::Text(wasm) => runtime.create_container_from_bytes(&id, &spec, wasm)?,
        Workload::Binary => runtime.create_container_from_file(&id, &spec, &file)?,
        Workload::Image => {
            let policy = match args.pull {
                PullWhen::Always => PullPolicy::Always,
                PullWhen::Missing => PullPolicy::IfNotPresent,
                PullWhen::Never => PullPolicy::Never,
            };
            pull_showing(&runtime, &target, policy)?;
            wasmpool::Runtime::create_container(&*runtime, &id, &spec)?;
        }
    }
    Ok((runtime, id))
}

fn wizer(args: &WizerArgs) -> Result<ExitCode> {
    let input = load(&args.input)?;
    let started = std::time::Instant::now();
    let snapshot = wasmpool::pre_initialize(&input, &args.init_func, args.fuel)
        .with_context(|| format!("cannot pre-initialise '{}'", args.input.display()))?;
    std::fs::write(&args.output, &snapshot)
        .with_context(|| format!("cannot write '{}'", args.output.display()))?;
    eprintln!(
        "{} pre-initialised by `{}` in {:.1?}: {} ({})",
        args.input.display(),
        args.init_func,
        started.elapsed(),
        args.output.display(),
        human(snapshot.len() as u64)
    );
    Ok(ExitCode::SUCCESS)
}

fn images(limit: Option<u64>) -> Result<ExitCode> {
    let runtime = cache_runtime(WasmConfig::default(), limit)?;
    println!(
        "{:<48} {:<20} {:>10}  PULLED",
        "REFERENCE", "DIGEST", "SIZE"
    );
    for image in runtime.images() {
        let digest = image.digest.as_deref().map_or("-".to_string(), |d| {
            d.split_once(':').map_or(d.to_string(), |(a, hex)| {
                format!("{a}:{}", &hex[..hex.len().min(12)])
            })
        });
        println!(
            "{:<48} {:<20} {:>10}  {}",
            image.reference,
            digest,
            human(image.size),
            ago(image.modified)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn rmi(references: &[String], limit: Option<u64>) -> Result<ExitCode> {
    let runtime = cache_runtime(WasmConfig::default(), limit)?;
    let mut missing = false;
    for reference in references {
        if runtime.remove_image(reference)? {
            println!("removed {reference}");
        } else {
            eprintln!("wasmpool: no such image: {reference}");
            missing = true;
        }
    }
    Ok(if missing {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn prune(all: bool, dry_run: bool, limit: Option<u64>) -> Result<ExitCode> {
    let runtime = cache_runtime(WasmConfig::default(), limit)?;
    let report = runtime.prune(all, dry_run);
    let verb = if dry_run { "would remove" } else { "removed" };
    for path in &report.removed {
        println!("{verb} {}", path.display());
    }
    println!(
        "{} {} files, {}",
        if dry_run { "would free" } else { "freed" },
        report.removed.len(),
        human(report.freed_bytes)
    );
    Ok(ExitCode::SUCCESS)
}

fn df(limit: Option<u64>) -> Result<ExitCode> {
    let runtime = cache_runtime(WasmConfig::default(), limit)?;
    let usage = runtime.disk_usage();
    println!(
        "{:<10} {:>6} {:>12} {:>12}",
        "TYPE", "COUNT", "SIZE", "LIMIT"
    );
    println!(
        "{:<10} {:>6} {:>12} {:>12}",
        "images",
        usage.images,
        human(usage.image_bytes),
        "-"
    );
    println!(
        "{:<10} {:>6} {:>12} {:>12}",
        "compiled",
        usage.compiled,
        human(usage.compiled_bytes),
        human(usage.compiled_limit)
    );
    Ok(ExitCode::SUCCESS)
}

/// Bytes as people read them: 12.3 MiB.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How long ago `when` was: 5 minutes ago.
fn ago(when: std::time::SystemTime) -> String {
    let seconds = when.elapsed().map_or(0, |d| d.as_secs());
    let (count, unit) = match seconds {
        0..=59 => (seconds, "second"),
        60..=3599 => (seconds / 60, "minute"),
        3600..=86399 => (seconds / 3600, "hour"),
        _ => (seconds / 86400, "day"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural} ago")
}

fn run(args: RunArgs, limit: Option<u64>) -> Result<ExitCode> {
    let defaults = WasmConfig::default();
    let file = args.command.first().cloned();
    let (runtime, id) = create(
        args,
        Vec::new(),
        WasmConfig {
            workers: 1,
            log_limit_bytes: 64 * 1024,
            compiled_cache_limit: limit.unwrap_or(defaults.compiled_cache_limit),
            ..defaults
        },
        None,
    )?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let (runtime, id, interrupted) = (runtime.clone(), id.clone(), interrupted.clone());
        ctrlc::set_handler(move || {
            interrupted.store(true, Ordering::SeqCst);
            let _ = wasmpool::Runtime::stop_container(&*runtime, &id, Duration::from_secs(5));
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    compile_showing(&runtime, &id, file.as_deref());
    // Ctrl-C while it compiled stopped the container before its start.
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("wasmpool: interrupted");
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    let handle = runtime.start(&id)?;
    let outcome = handle.wait();
    log::debug!("guest ended: {outcome}");
    if interrupted.load(Ordering::SeqCst) && outcome == Outcome::Stopped {
        eprintln!("wasmpool: interrupted");
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    if !matches!(outcome, Outcome::Exited(_)) {
        eprintln!("wasmpool: {outcome}");
    }
    // A shell sees the low byte of the status: `exit(-1)` is 255, `exit(256)` is 0.
    Ok(ExitCode::from(outcome.exit_code() as u8))
}

/// How long a compile may take before the CLI says it is compiling.
const COMPILE_NOTE_AFTER: Duration = Duration::from_millis(300);

/// Compiles the container's image of `file` before its start, on a
/// terminal: a compile that takes a while (not a load from the compiled
/// cache) is said as it starts, `compiling FILE (SIZE)…`, and how long it
/// took. Quiet runs and pipes leave the compile to the start; a failure is
/// the start's to report.
fn compile_showing(runtime: &WasmRuntime, id: &ContainerId, file: Option<&str>) {
    let Some(file) = file else { return };
    if QUIET.load(Ordering::Relaxed) || !std::io::stderr().is_terminal() {
        return;
    }
    let size = std::fs::metadata(file).map_or(0, |m| m.len());
    std::thread::scope(|scope| {
        let (done, compiled) = crossbeam_channel::bounded(1);
        scope.spawn(move || {
            let _ = done.send(runtime.compile(id));
        });
        if compiled.recv_timeout(COMPILE_NOTE_AFTER).is_ok() {
            return;
        }
        let _ = writeln!(
            std::io::stderr(),
            "compiling {file} ({})… (once: the compiled code is cached)",
            human(size)
        );
        if let Ok(Ok(took)) = compiled.recv() {
            let _ = writeln!(std::io::stderr(), "{file} compiled in {took:.1?}");
        }
    });
}

#[cfg(feature = "serve")]
fn serve(args: ServeArgs, limit: Option<u64>) -> Result<ExitCode> {
    let endpoint = EndpointSpec {
        host: Some(args.addr.ip()),
        ..EndpointSpec::http(args.addr.port())
    };
    let defaults = WasmConfig::default();
    let file = args.run.command.first().cloned();
    let (runtime, id) = create(
        args.run,
        vec![endpoint],
        WasmConfig {
            log_limit_bytes: 64 * 1024,
            http_max_in_flight: args.max_in_flight.unwrap_or(defaults.http_max_in_flight),
            http_max_instance_reuse_count: args.max_instance_reuse_count.map(|n| n as usize),
            http_max_instance_concurrent_reuse_count: args
                .max_instance_concurrent_reuse_count
                .map(|n| n as usize),
            http_idle_instance_timeout: args
                .idle_instance_timeout
                .unwrap_or(defaults.http_idle_instance_timeout),
            compiled_cache_limit: limit.unwrap_or(defaults.compiled_cache_limit),
            ..defaults
        },
        args.pre_init.as_deref(),
    )?;
    compile_showing(&runtime, &id, file.as_deref());
    let handle = runtime.start(&id)?;
    let address = runtime.service_address(&id)?;
    if let Some(addr) = args.metrics_addr {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        eprintln!("Metrics on http://{}/metrics", listener.local_addr()?);
        let runtime = runtime.clone();
        std::thread::Builder::new()
            .name("wasmpool-metrics".into())
            .spawn(move || serve_metrics(&listener, &runtime))?;
    }
    // The stop handler is in place before the URL is said: whoever acts on
    // the URL (a service manager, a test) may send SIGTERM at once.
    {
        let (runtime, id) = (runtime.clone(), id.clone());
        ctrlc::set_handler(move || {
            // Not `eprintln!`: a closed stderr must not panic this thread
            // before it stops the service.
            let _ = writeln!(
                std::io::stderr(),
                "wasmpool: stopping: finishing requests in flight"
            );
            let timeout = runtime.config().stop_timeout;
            let _ = wasmpool::Runtime::stop_container(&*runtime, &id, timeout);
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    eprintln!("Serving HTTP on http://{address}/");
    let outcome = handle.wait();
    if outcome != Outcome::Stopped {
        eprintln!("wasmpool: {outcome}");
        return Ok(ExitCode::from(outcome.exit_code() as u8));
    }
    Ok(ExitCode::SUCCESS)
}

/// Most metrics connections served at once; more are closed on arrival.
#[cfg(feature = "serve")]
const METRICS_CONNECTIONS: usize = 16;
/// How long a metrics client has to send its request head, and to read the answer.
#[cfg(feature = "serve")]
const METRICS_CLIENT_TIME: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listener`: each connection on a thread of its
/// own, at most [`METRICS_CONNECTIONS`] at once, each given
/// [`METRICS_CLIENT_TIME`] and 8 KiB for its head — so a slow or idle client
/// holds one place for a bounded time, and a scrape beside it is answered.
#[cfg(feature = "serve")]
fn serve_metrics(listener: &std::net::TcpListener, runtime: &Arc<WasmRuntime>) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if open.fetch_add(1, Ordering::AcqRel) >= METRICS_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            drop(stream);
            continue;
        }
        let (place, runtime) = (open.clone(), runtime.clone());
        let spawned = std::thread::Builder::new()
            .name("wasmpool-metrics-conn".into())
            .spawn(move || {
                answer_metrics(stream, &runtime);
                place.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Reads one request head (bounded in time and bytes) and answers it.
#[cfg(feature = "serve")]
fn answer_metrics(mut stream: std::net::TcpStream, runtime: &WasmRuntime) {
    use std::io::Read;
    let deadline = Instant::now() + METRICS_CLIENT_TIME;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if head.len() > 8192 {
            return;
        }
    }
    let wanted = head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?");
    let (status, kind, body) = if wanted {
        (
            "200 OK",
            wasmpool::METRICS_CONTENT_TYPE,
            runtime.metrics().encode(),
        )
    } else {
        (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n".to_string(),
        )
    };
    let _ = stream.set_write_timeout(Some(METRICS_CLIENT_TIME));
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn bench(args: BenchArgs) -> Result<ExitCode> {
    if !(1..=MAX_BENCH_INSTANCES).contains(&args.instances) {
        bail!(
            "invalid --instances '{}': expected 1 to {MAX_BENCH_INSTANCES}",
            args.instances
        );
    }
    if !(1..=MAX_BENCH_CALLERS).contains(&args.callers) {
        bail!(
            "invalid --callers '{}': expected 1 to {MAX_BENCH_CALLERS}",
            args.callers
        );
    }
    let wasm = Arc::new(load(&args.file)?);
    // A private folder: no other user can plant compiled code where this run loads it.
    let dir = tempfile::Builder::new()
        .prefix("wasmpool-bench-")
        .tempdir()
        .context("cannot create a temporary cache directory")?;
    let mut config = WasmConfig {
        cache_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    let workers = config.workers;
    let runtime = Arc::new(WasmRuntime::new(config)?);
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let (finished_tx, finished) = crossbeam_channel::unbounded::<()>();
    let started = Instant::now();
    let callers: Vec<_> = (0..args.callers)
        .map(|caller| {
            let (runtime, wasm, next, failures, finished_tx) = (
                runtime.clone(),
                wasm.clone(),
                next.clone(),
                failures.clone(),
                finished_tx.clone(),
            );
            let total = args.instances;
            std::thread::spawn(move || -> Result<Vec<Duration>> {
                let mut latencies = Vec::new();
                let spec = ServiceSpec::default();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        return Ok(latencies);
                    }
                    let id = ContainerId::new(format!("bench-{caller}"), index as u32);
                    let begin = Instant::now();
                    runtime.create_container_from_bytes(&id, &spec, wasm.as_slice())?;
                    let outcome = runtime.start(&id)?.wait();
                    wasmpool::Runtime::remove_container(&*runtime, &id)?;
                    latencies.push(begin.elapsed());
                    if outcome != Outcome::Exited(0) {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = finished_tx.send(());
                }
            })
        })
        .collect();
    drop(finished_tx);
    // One message per finished instance; the channel closes when every caller returned.
    let progress = std::io::stderr().is_terminal();
    let step = (args.instances / 100).max(1);
    for done in 1.. {
        if finished.recv().is_err() {
            break;
        }
        if progress && (done % step == 0 || done == args.instances) {
            let width = 40 * done / args.instances;
            eprint!(
                "\r[{}{}] {done}/{}",
                "#".repeat(width),
                " ".repeat(40 - width),
                args.instances
            );
        }
    }
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(
            caller
                .join()
                .map_err(|_| anyhow::anyhow!("a caller thread panicked"))??,
        );
    }
    let elapsed = started.elapsed();
    if progress {
        eprintln!();
    }
    drop(dir);
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "{} instances of '{}' on {workers} workers from {} callers in {elapsed:.2?}",
        latencies.len(),
        args.file.display(),
        args.callers
    );
    println!(
        "throughput: {:.0} instances/s",
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency (create → exit → remove): p50 {:.1?}  p90 {:.1?}  p99 {:.1?}  max {:.1?}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        println!("{failed} instances did not exit with code 0");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(file: &Path) -> Result<ExitCode> {
    let bytes = load(file)?;
    let report = wasmpool::inspect(&bytes);
    println!("{}: {}", file.display(), report.kind);
    if let Some(entry) = &report.entry {
        println!("entry: {entry}");
    }
    println!("imports ({}):", report.imports.len());
    for import in &report.imports {
        println!("  {import}");
    }
    println!("exports ({}):", report.exports.len());
    for export in &report.exports {
        println!("  {export}");
    }
    match report.problem {
        None => {
            println!("runs: yes");
            Ok(ExitCode::SUCCESS)
        }
        Some(problem) => {
            println!("runs: no: {problem}");
            Ok(ExitCode::from(1))
        }
    }
}
