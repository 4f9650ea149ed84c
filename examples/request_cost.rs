//! What one request of a big wasi:http 0.2 service costs — a fresh instance,
//! the handler's call, the store's tear-down — in raw wasmtime, next to what
//! the same request costs end to end in `wasmpool serve` and `wasmtime serve`.
//!
//! - **Raw wasmtime**, in this process: a pooling engine as `wasmtime serve`
//!   makes one, without fuel and with plain fuel (what `wasmtime serve -W
//!   fuel=N` does; every wasmpool store is fuel-metered); per request,
//!   `ProxyPre::instantiate_async`, `call_handle` with the response body read
//!   to its end, and the `Store`'s drop, each timed (medians of N).
//! - **The servers**, one keep-alive connection, one request after another:
//!   the median latency, and the server's CPU time per request (its
//!   `utime + stime` across the run, from `/proc`, divided by N).
//!
//! ```sh
//! cargo build --release
//! WASMTIME=/path/to/wasmtime cargo run --release --example request_cost -- service.wasm
//! ```
//!
//! `N` sets the requests per row (default 300); without `WASMTIME` the
//! `wasmtime serve` row is left out. The component is compiled once per
//! engine into `target/request-cost/` and loaded from there afterwards.

use http_body_util::{BodyExt, Empty};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

#[allow(dead_code)]
#[path = "../tests/common/service.rs"]
mod service;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let wasm = std::env::args()
        .nth(1)
        .ok_or("usage: request_cost SERVICE.wasm (a wasi:http 0.2 component)")?;
    let n: usize = std::env::var("N").map_or(Ok(300), |v| v.parse())?;
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/request-cost");
    std::fs::create_dir_all(&work)?;
    println!(
        "{wasm}: {} KiB, {n} requests a row\n",
        std::fs::metadata(&wasm)?.len() >> 10
    );

    println!("| raw wasmtime 48, in process | instantiate | handle | tear down | sum |");
    println!("|---|---|---|---|---|");
    for fuel in [false, true] {
        let [instantiate, handle, drop, sum] = raw(&wasm, &work, fuel, n)?;
        let name = if fuel { "plain fuel" } else { "no fuel" };
        println!(
            "| {name} | {} | {} | {} | {} |",
            us(instantiate),
            us(handle),
            us(drop),
            us(sum)
        );
    }

    println!("\n| server, one connection | latency p50 | CPU per request |");
    println!("|---|---|---|");
    let wasmpool = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/wasmpool");
    let cache = work.join("wasmpool-cache");
    let mut rows = vec![("wasmpool serve", wasmpool.to_string(), vec!["serve"])];
    if let Ok(wasmtime) = std::env::var("WASMTIME") {
        rows.push(("wasmtime serve", wasmtime, vec!["serve", "-Scli"]));
    }
    for (name, program, mut args) in rows {
        args.extend(["--addr", "127.0.0.1:0", wasm.as_str()]);
        let (p50, cpu) = served(&program, &args, &cache, n)?;
        println!("| {name} | {} | {} |", us(p50), us(cpu));
    }
    Ok(())
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// An engine as `wasmtime serve` 48 makes one: the pooling allocator with its
/// default slots, async support; fuel when asked.
fn engine(fuel: bool) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.consume_fuel(fuel);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(
        PoolingAllocationConfig::default(),
    ));
    Engine::new(&config)
}

/// The component compiled for `engine`, from `work` when compiled before.
fn component(engine: &Engine, wasm: &str, work: &Path, fuel: bool) -> Result<Component, Error> {
    let name = Path::new(wasm)
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy();
    let compiled: PathBuf = work.join(format!(
        "{name}-{}.cwasm",
        if fuel { "fuel" } else { "plain" }
    ));
    if !compiled.exists() {
        std::fs::write(
            &compiled,
            engine.precompile_component(&std::fs::read(wasm)?)?,
        )?;
    }
    // SAFETY: written just above (or by an earlier run) by this engine's
    // configuration from `precompile_component`, in a folder of ours.
    Ok(unsafe { Component::deserialize_file(engine, &compiled)? })
}

/// Medians of instantiate, handle, tear down, and their sum per request.
fn raw(wasm: &str, work: &Path, fuel: bool, n: usize) -> Result<[Duration; 4], Error> {
    let engine = engine(fuel)?;
    let component = component(&engine, wasm, work, fuel)?;
    let mut linker = Linker::<State>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut phases: [Vec<Duration>; 4] = Default::default();
    runtime.block_on(async {
        for i in 0..n + n / 10 {
            let begin = Instant::now();
            let mut store = Store::new(
                &engine,
                State {
                    wasi: WasiCtx::builder().build(),
                    http: WasiHttpCtx::new(),
                    table: ResourceTable::new(),
                },
            );
            if fuel {
                store.set_fuel(u64::MAX)?;
            }
            let proxy = pre.instantiate_async(&mut store).await?;
            let instantiated = Instant::now();
            let request = http::Request::builder().uri("http://localhost/").body(
                Empty::<bytes::Bytes>::new()
                    .map_err(|never| -> wasmtime_wasi_http::Error { match never {} }),
            )?;
            let request = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, request)?;
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let out = store.data_mut().http().new_response_outparam(sender)?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await?;
            let response = receiver.await??;
            let body = response.into_body().collect().await?.to_bytes();
            assert!(!body.is_empty(), "the service answered with no body");
            let handled = Instant::now();
            drop(store);
            let dropped = Instant::now();
            // The first tenth warms the pool's slots and the caches: not counted.
            if i >= n / 10 {
                let durations = [
                    instantiated - begin,
                    handled - instantiated,
                    dropped - handled,
                    dropped - begin,
                ];
                for (phase, d) in phases.iter_mut().zip(durations) {
                    phase.push(d);
                }
            }
        }
        Ok::<_, Error>(())
    })?;
    Ok(phases.map(|mut v| {
        v.sort();
        v[v.len() / 2]
    }))
}

/// The median latency and the CPU time per request of the server `program
/// args`, over `n` requests one after another on one connection.
fn served(
    program: &str,
    args: &[&str],
    cache: &Path,
    n: usize,
) -> Result<(Duration, Duration), Error> {
    let (mut child, address) = service::start_server(program, args, cache)?;
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    for _ in 0..n / 10 {
        request(&mut stream, address)?;
    }
    let cpu_before = cpu_time(child.id())?;
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let begin = Instant::now();
        request(&mut stream, address)?;
        latencies.push(begin.elapsed());
    }
    let cpu = cpu_time(child.id())?.saturating_sub(cpu_before);
    child.kill()?;
    child.wait()?;
    latencies.sort();
    Ok((latencies[n / 2], cpu / n as u32))
}

/// One `GET /` on a keep-alive connection, read to the end of its body.
fn request(stream: &mut TcpStream, address: SocketAddr) -> Result<(), Error> {
    write!(stream, "GET / HTTP/1.1\r\nHost: {address}\r\n\r\n")?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let read = stream.read(&mut buf)?;
        if read == 0 {
            return Err("the server closed the connection".into());
        }
        raw.extend_from_slice(&buf[..read]);
        if let Some(status) = complete(&raw)? {
            if status != 200 {
                return Err(format!("status {status}").into());
            }
            return Ok(());
        }
    }
}

/// The status once `raw` holds a whole response (by its length or its last chunk).
fn complete(raw: &[u8]) -> Result<Option<u16>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(raw)? else {
        return Ok(None);
    };
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let body = &raw[head..];
    let done = if let Some(length) = header("content-length") {
        body.len() >= length.parse::<usize>()?
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        body.ends_with(b"0\r\n\r\n")
    } else {
        return Err("a response framed by neither length nor chunks".into());
    };
    Ok(done.then_some(response.code.unwrap_or(0)))
}

/// `utime + stime` of process `pid` so far.
fn cpu_time(pid: u32) -> Result<Duration, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').ok_or("no command")? + 2..]
        .split(' ')
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / per_second))
}
