//! Serving speed against `wasmtime serve`: the same WAT-built handler
//! (`200 hello` on `/hello`, a spin on `/spin`), fuel on in both, driven by
//! `wrk -t2 -c64 -d10s --latency` on loopback, idle and while 8 requests spin;
//! and the resident memory 1,000 idle keep-alive connections add.
//!
//! Needs `wrk` (`apt-get install -y wrk`) and a wasmtime 48 CLI
//! (`cargo install wasmtime-cli --version 48.0.8`), named by `WASMTIME`
//! (default `wasmtime` on the PATH). Build first: `cargo build --release`.
//! Run with `cargo run --release --example serve_bench`.

#[allow(dead_code)]
#[path = "../tests/common/service.rs"]
mod service;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Fuel per request in both servers: enough for `/hello` many times over;
/// a `/spin` runs until it is spent (wasmtime) or its deadline (wasmpool).
const FUEL: u64 = 2_000_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `WASMPOOL_WRITE_SERVICE=FILE` only writes the handler component, to try by hand.
    if let Some(file) = std::env::var_os("WASMPOOL_WRITE_SERVICE") {
        std::fs::write(file, service::misbehaving_handler())?;
        return Ok(());
    }
    // `WASMPOOL_WRITE_COUNTER=FILE`: the keyvalue handler (a get and an increment a request).
    if let Some(file) = std::env::var_os("WASMPOOL_WRITE_COUNTER") {
        std::fs::write(file, service::keyvalue_counter(true))?;
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let component = dir.path().join("service.wasm");
    std::fs::write(&component, service::misbehaving_handler())?;
    let wasmpool = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/wasmpool");
    let wasmtime = std::env::var("WASMTIME").unwrap_or_else(|_| "wasmtime".into());
    let path = component.to_str().unwrap();
    let fuel = FUEL.to_string();
    let wasmtime_fuel = format!("fuel={fuel}");

    println!("| server | load | req/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    let mut results = Vec::new();
    let servers = [
        (
            "wasmtime serve",
            wasmtime.as_str(),
            vec!["serve", "-W", &wasmtime_fuel, "--addr", "127.0.0.1:0", path],
        ),
        (
            "wasmpool serve",
            wasmpool,
            vec![
                "serve",
                "--fuel",
                &fuel,
                "--timeout",
                "2s",
                "--addr",
                "127.0.0.1:0",
                path,
            ],
        ),
    ];
    // WASMTIME=none measures wasmpool alone.
    let skip = usize::from(wasmtime == "none");
    for (name, program, args) in servers.into_iter().skip(skip) {
        let (mut server, address) = service::start_server(program, &args, dir.path())?;
        let idle = wrk(address)?;
        println!(
            "| {name} | idle | {:.0} | {} | {} |",
            idle.0, idle.1, idle.2
        );
        let spinning = Arc::new(AtomicBool::new(true));
        let spinners: Vec<_> = (0..8)
            .map(|_| {
                let spinning = spinning.clone();
                std::thread::spawn(move || {
                    while spinning.load(Ordering::Relaxed) {
                        let _ = service::get(address, "/spin");
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let loaded = wrk(address)?;
        println!(
            "| {name} | 8 spinning | {:.0} | {} | {} |",
            loaded.0, loaded.1, loaded.2
        );
        spinning.store(false, Ordering::Relaxed);
        // Each spinner ends with its request in flight, before the server goes.
        for spinner in spinners {
            let _ = spinner.join();
        }
        let idle_memory = idle_connections(&server, address)?;
        println!(
            "| {name} | 1,000 idle keep-alive connections | +{:.1} MiB resident | | |",
            idle_memory
        );
        let _ = server.kill();
        let _ = server.wait();
        results.push((name, idle.0, loaded.0));
    }
    keyvalue_rows(wasmpool, dir.path())?;
    let [(_, wasmtime_idle, wasmtime_loaded), (_, ours_idle, ours_loaded)] = results[..] else {
        return Ok(());
    };
    println!();
    println!(
        "wasmpool / wasmtime serve: idle {:.2}x, with 8 spinning {:.2}x; wasmpool keeps {:.0} % of its idle throughput while 8 spin (wasmtime {:.0} %)",
        ours_idle / wasmtime_idle,
        ours_loaded / wasmtime_loaded,
        100.0 * ours_loaded / ours_idle,
        100.0 * wasmtime_loaded / wasmtime_idle
    );
    Ok(())
}

/// A handler that does one wasi:keyvalue `get` and one `increment` per
/// request, against the plain `200 hello`, on the memory and folder stores
/// (and on Redis when `REDIS_URL` names one): requests/s and the share kept.
fn keyvalue_rows(wasmpool: &str, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let plain = dir.join("plain.wasm");
    std::fs::write(&plain, service::hello_handler())?;
    let counter = dir.join("counter.wasm");
    std::fs::write(&counter, service::keyvalue_counter(true))?;
    let folder = dir.join("kv");
    let folder = folder.to_str().unwrap();
    let mut stores = vec![
        ("plain handler", None, plain.to_str().unwrap()),
        (
            "get + increment, memory",
            Some("memory"),
            counter.to_str().unwrap(),
        ),
        (
            "get + increment, folder",
            Some(folder),
            counter.to_str().unwrap(),
        ),
    ];
    let redis = std::env::var("REDIS_URL").ok();
    if let Some(url) = &redis {
        stores.push((
            "get + increment, Redis",
            Some(url.as_str()),
            counter.to_str().unwrap(),
        ));
    }
    println!();
    println!("| wasmpool serve | req/s | p50 | p99 | of the plain handler |");
    println!("|---|---|---|---|---|");
    let mut plain_rate = 0.0;
    for (name, store, path) in stores {
        let mut args = vec!["serve", "--addr", "127.0.0.1:0"];
        if let Some(store) = store {
            args.extend(["--keyvalue", store]);
        }
        args.push(path);
        let (mut server, address) = service::start_server(wasmpool, &args, dir)?;
        let (rate, p50, p99) = wrk(address)?;
        let _ = server.kill();
        let _ = server.wait();
        if store.is_none() {
            plain_rate = rate;
        }
        println!(
            "| {name} | {rate:.0} | {p50} | {p99} | {:.0} % |",
            100.0 * rate / plain_rate
        );
    }
    Ok(())
}

/// `wrk -t2 -c64 -d10s --latency`: requests per second, p50 and p99.
fn wrk(address: SocketAddr) -> Result<(f64, String, String), Box<dyn std::error::Error>> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c64",
            "-d10s",
            "--latency",
            &format!("http://{address}/hello"),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let rate = find("Requests/sec:").parse().unwrap_or(0.0);
    Ok((rate, find("50%"), find("99%")))
}

/// Resident memory the server adds holding 1,000 idle keep-alive connections.
fn idle_connections(
    server: &Child,
    address: SocketAddr,
) -> Result<f64, Box<dyn std::error::Error>> {
    let before = resident(server.id())?;
    let mut held = Vec::new();
    for _ in 0..1000 {
        let mut stream = TcpStream::connect(address)?;
        stream.write_all(format!("GET /hello HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())?;
        held.push(stream);
    }
    for stream in &mut held {
        let mut head = [0u8; 12];
        std::io::Read::read_exact(stream, &mut head)?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = resident(server.id())?;
    drop(held);
    Ok((after.saturating_sub(before)) as f64 / (1024.0 * 1024.0))
}

fn resident(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or("no VmRSS")?;
    Ok(kib * 1024)
}
